//! The real jumpstarter 0.9.0 exporter (`jmp run`) and client (`jmp shell … -- j …`), each
//! behind a `jumpstarter-edge`, against `jumpstarter serve`.
//!
//! The tools' configurations name the controller at 127.0.0.2:P, where only the
//! controller's QUIC listener (UDP) answers: nothing listens on TCP there, so every
//! controller call of both tools must travel over QUIC. The sessions must travel over the
//! QUIC router: its metrics count them, and the h2 router's count stays zero.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jumpstarter_e2e::{Lab, Mode, Proc, free_port, metric_sum};

const EDGE: &str = env!("CARGO_BIN_EXE_jumpstarter-edge");
const ONLINE_TIMEOUT: Duration = Duration::from_secs(90);
const SHELL_TIMEOUT: Duration = Duration::from_secs(180);

/// A copy of the tool configuration at `path` whose controller endpoint is `endpoint`.
fn with_endpoint(path: &Path, endpoint: &str) -> PathBuf {
    let mut config: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(path).expect("read config")).expect("yaml");
    config["endpoint"] = endpoint.into();
    let copy = path.with_extension("udp.yaml");
    std::fs::write(&copy, serde_norway::to_string(&config).expect("yaml")).expect("write config");
    copy
}

/// [`Lab::shell_behind_edge`], asserting success; its output.
async fn shell_behind_edge(lab: &Lab, client: &Path, target: &[&str], cmd: &[&str]) -> String {
    let out = lab
        .shell_behind_edge(Path::new(EDGE), client, target, cmd, SHELL_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.logs()));
    assert!(
        out.ok(),
        "jmp shell behind the edge failed: {out}\n{}",
        lab.logs()
    );
    out.stdout + &out.stderr
}

/// A router call to the edge of `edge_config` with a token the controller never issued:
/// refused, although it names the tool's namespace and is well formed.
async fn forged_router_token_is_refused(edge_config: &Path) {
    use base64::Engine;
    use jumpstarter_proto::jumpstarter::v1::router_service_client::RouterServiceClient;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

    let config: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(edge_config).expect("read")).expect("yaml");
    let b64 = base64::engine::general_purpose::STANDARD;
    let ca = b64
        .decode(config["tls"]["ca"].as_str().expect("tls.ca"))
        .expect("base64");
    let endpoint = config["endpoint"].as_str().expect("endpoint");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("127.0.0.1");
    let channel = Endpoint::from_shared(format!("https://{endpoint}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("the edge accepts TLS with the CA it wrote");
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let token = format!(
        "{}.{}.{}",
        url.encode(r#"{"alg":"ES256","typ":"JWT"}"#),
        url.encode(r#"{"sub":"forged","lease":"default/anything","exp":4102444800}"#),
        url.encode("not a signature")
    );
    let mut request = tonic::Request::new(tokio_stream::iter(Vec::new()));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    let refused = RouterServiceClient::new(channel)
        .stream(request)
        .await
        .expect_err("a forged token is refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
}

#[tokio::test]
async fn exporter_and_client_behind_edges_reach_the_service_only_over_quic() {
    let quic_port = free_port();
    let controller_udp = format!("127.0.0.2:{quic_port}");
    let mut lab = Lab::start_with(
        Mode::Standalone,
        "edge-quic",
        &["--controller-quic-listen", &controller_udp],
    )
    .await
    .expect("start the service");

    // The exporter behind its edge; the edge runs `jmp run` and exits with it.
    let exporter = lab
        .create_exporter_config("board-1", &["board=mock", "site=lab"])
        .await
        .expect("exporter config");
    let exporter = with_endpoint(&exporter, &controller_udp);
    let edge_config = lab.path("board-1.edge.yaml").to_string_lossy().into_owned();
    let jmp = jumpstarter_e2e::venv().join("bin/jmp");
    let mut command = lab.tool_command(
        EDGE,
        &[
            "exporter",
            "--config",
            &exporter.to_string_lossy(),
            "--write-config",
            &edge_config,
            "--",
            &jmp.to_string_lossy(),
            "run",
            "--exporter-config",
            &edge_config,
        ],
    );
    command.env("RUST_LOG", "info");
    let proc = Proc::spawn(
        "exporter edge board-1",
        command,
        lab.path("edge-board-1.log"),
    )
    .expect("spawn the exporter edge");
    lab.exporters.insert("board-1".to_owned(), proc);
    lab.wait_exporter_condition("board-1", "Online", "True", ONLINE_TIMEOUT)
        .await
        .expect("the exporter comes online through its edge");
    forged_router_token_is_refused(Path::new(&edge_config)).await;

    // The client behind its edge: a lease by selector, power on, the shell driver.
    let client = lab.create_client("c1").await.expect("client");
    let client = with_endpoint(&client, &controller_udp);
    let output = shell_behind_edge(
        &lab,
        &client,
        &["-l", "board=mock", "--duration", "10m"],
        &["j", "power", "on"],
    )
    .await;
    assert!(!output.contains("Traceback"), "{output}");
    let output = shell_behind_edge(
        &lab,
        &client,
        &["-l", "site=lab"],
        &["j", "sh", "hello", "edge"],
    )
    .await;
    assert!(output.contains("hello-from-exporter edge"), "{output}");

    // The sessions went through the QUIC router, none through the h2 router.
    let metrics = lab.metrics().expect("metrics");
    let paired = metric_sum(
        &metrics,
        "jumpstarter_router_quic_sessions_total",
        Some(r#"outcome="completed""#),
    );
    assert!(
        paired >= 2.0,
        "no session completed over QUIC (two streams per session):\n{metrics}"
    );
    let h2 = metric_sum(&metrics, "jumpstarter_router_streams_total", None);
    assert_eq!(h2, 0.0, "the h2 router carried streams:\n{metrics}");

    // Both one-shot leases were released through the client's edge.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leases = lab.leases().await.expect("leases");
        assert_eq!(leases.len(), 2, "one lease per shell");
        if leases
            .iter()
            .all(|l| l.status.as_ref().is_some_and(|s| s.ended))
        {
            break;
        }
        assert!(Instant::now() < deadline, "leases not ended: {leases:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // SIGTERM to the exporter's edge: `jmp run` stops gracefully (its Unregister goes
    // through the edge) and the edge exits with its status.
    let mut edge = lab.exporters.remove("board-1").expect("edge process");
    let status = edge.stop(Duration::from_secs(30)).await;
    let output = edge.output();
    assert!(
        status.is_some_and(|s| s.success()),
        "the edge did not exit cleanly ({status:?}):\n{output}"
    );
    lab.wait_exporter_condition("board-1", "Registered", "False", Duration::from_secs(30))
        .await
        .expect("unregistered through the edge");
}

#[test]
fn a_bad_config_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "apiVersion: jumpstarter.dev/v1alpha1\nkind: ClientConfig\nendpoint: a:1\n",
    )
    .expect("write");
    let out = std::process::Command::new(EDGE)
        .args(["exporter", "--config"])
        .arg(&path)
        .env_remove("JUMPSTARTER_EDGE_CONTROLLER_TRANSPORT")
        .output()
        .expect("run the edge");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("has kind ClientConfig; this edge needs kind ExporterConfig"),
        "{stderr}"
    );

    let missing = std::process::Command::new(EDGE)
        .args(["client", "--config"])
        .arg(dir.path().join("absent.yaml"))
        .output()
        .expect("run the edge");
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );

    for args in [
        &["--help"][..],
        &["exporter", "--help"],
        &["client", "--help"],
    ] {
        let help = std::process::Command::new(EDGE)
            .args(args)
            .output()
            .expect("run the edge");
        assert!(help.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&help.stdout).contains("Usage"));
    }
}
