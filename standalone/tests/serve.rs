//! The `jumpstarter` binary as a user runs it: `serve` on free loopback ports with a fresh
//! data directory, `admin` through its socket, the written configurations used for real
//! TLS gRPC calls, the data-file lock, restarts, and the errors a user sees.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use jumpstarter_e2e::{ConfigCredentials, free_port, stdout_of};
use jumpstarter_proto::jumpstarter::client::v1::ListExportersRequest;
use jumpstarter_proto::jumpstarter::client::v1::client_service_client::ClientServiceClient;
use tonic::transport::Channel;

use crate::support;

use support::{BIN, ServeProcess};

/// Upper bound of every wait; a start normally takes well under a second.
const WAIT: Duration = Duration::from_secs(60);

/// A running `jumpstarter serve` on free loopback ports; killed when dropped.
struct Service {
    process: ServeProcess,
    grpc: String,
    router: String,
    http: String,
}

impl Service {
    /// Starts the service on `data_dir` and waits until its admin socket answers.
    fn start(data_dir: &Path) -> Service {
        let (grpc, router, http) = (
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        );
        let n = std::fs::read_dir(data_dir.parent().expect("parent"))
            .map(|d| d.count())
            .unwrap_or(0);
        let log = data_dir.with_file_name(format!("serve-{n}.log"));
        let process = ServeProcess::spawn(
            serve_command(data_dir, &grpc, &router, &http),
            data_dir,
            log,
            WAIT,
        );
        Service {
            process,
            grpc,
            router,
            http,
        }
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) {
        let pid = i32::try_from(self.process.child.id()).expect("a PID fits in pid_t");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM to serve");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.process.child.try_wait().expect("try_wait") {
                assert!(
                    status.success(),
                    "serve exited with {status}:\n{}",
                    self.process.logs()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not stop:\n{}",
                self.process.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn serve_command(data_dir: &Path, grpc: &str, router: &str, http: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(["--grpc-listen", grpc, "--router-listen", router])
        .args(["--http-listen", http])
        .env_remove("JUMPSTARTER_NAMESPACE")
        .stdin(Stdio::null());
    cmd
}

/// `jumpstarter admin ARGS --data-dir DIR`.
fn admin(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("admin")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("JUMPSTARTER_NAMESPACE")
        .env_remove("JUMPSTARTER_KUBECONFIG")
        .env_remove("JUMPSTARTER_KUBERNETES")
        .stdin(Stdio::null())
        .output()
        .expect("run jumpstarter admin")
}

fn ok(output: Output) -> String {
    stdout_of("admin", &output)
}

fn yaml(text: &str) -> serde_norway::Value {
    serde_norway::from_str(text).expect("YAML")
}

fn s(value: &serde_norway::Value) -> String {
    value.as_str().map(str::to_owned).unwrap_or_default()
}

/// A TLS channel to `endpoint` trusting the configuration's CA, checking the endpoint's host.
async fn channel(config: &serde_norway::Value, endpoint: &str) -> Channel {
    ConfigCredentials::from_yaml(config)
        .expect("configuration")
        .tls_endpoint(endpoint)
        .expect("TLS endpoint")
        .connect()
        .await
        .expect("connect over TLS")
}

/// ClientService.ListExporters with the configuration's credentials, as 0.9.0 sends them.
async fn list_exporters(config: &serde_norway::Value) -> Result<Vec<String>, tonic::Status> {
    let credentials = ConfigCredentials::from_yaml(config).expect("configuration");
    let mut client = ClientServiceClient::new(channel(config, &credentials.endpoint).await);
    let request = credentials.request(
        "Client",
        ListExportersRequest {
            parent: format!("namespaces/{}", credentials.namespace),
            ..Default::default()
        },
    );
    let response = client.list_exporters(request).await?.into_inner();
    Ok(response
        .exporters
        .into_iter()
        .map(|e| {
            let mut labels: Vec<String> =
                e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            format!("{} {}", e.name, labels.join(","))
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_and_admin_work_together_and_survive_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let service = Service::start(&data_dir);
    let banner = std::fs::read_to_string(&service.process.log).unwrap_or_default();
    assert!(
        banner.contains(&format!("{}", data_dir.join("state.redb").display())),
        "{banner}"
    );
    assert!(
        banner.contains(&service.grpc) && banner.contains(&service.router),
        "{banner}"
    );
    assert!(
        banner.contains("jumpstarter admin create exporter"),
        "{banner}"
    );

    // The socket and the data file are the owner's only.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&data_dir.join("admin.sock")), 0o600);
    assert_eq!(mode(&data_dir.join("state.redb")), 0o600);

    // create client --out FILE: a 0600 file holding a 0.9.0 ClientConfig.
    let client_file = tmp.path().join("alice.yaml");
    let out = admin(
        &data_dir,
        &[
            "create",
            "client",
            "alice",
            "--out",
            client_file.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(
        ok(out),
        "client.jumpstarter.dev/alice created\n",
        "with --out only the created line goes to stdout"
    );
    assert_eq!(mode(&client_file), 0o600);
    let client = yaml(&std::fs::read_to_string(&client_file).expect("client config"));
    assert_eq!(s(&client["apiVersion"]), "jumpstarter.dev/v1alpha1");
    assert_eq!(s(&client["kind"]), "ClientConfig");
    assert_eq!(s(&client["metadata"]["namespace"]), "default");
    assert_eq!(s(&client["metadata"]["name"]), "alice");
    assert_eq!(s(&client["endpoint"]), service.grpc);
    assert_eq!(client["tls"]["insecure"].as_bool(), Some(false));
    assert_eq!(client["drivers"]["unsafe"].as_bool(), Some(true));
    assert_eq!(s(&client["token"]).split('.').count(), 3, "a JWT");

    // create exporter without --out: the ExporterConfig on stdout.
    let exporter = yaml(&ok(admin(
        &data_dir,
        &[
            "create",
            "exporter",
            "board-1",
            "-l",
            "board=mock",
            "--label",
            "site=lab",
        ],
    )));
    assert_eq!(s(&exporter["kind"]), "ExporterConfig");
    assert_eq!(s(&exporter["metadata"]["name"]), "board-1");
    assert_eq!(s(&exporter["endpoint"]), service.grpc);
    assert!(
        exporter["export"]
            .as_mapping()
            .expect("export map")
            .is_empty()
    );
    assert_eq!(exporter["tls"]["ca"], client["tls"]["ca"]);

    // The client configuration authenticates a real call, and the exporter is listed.
    let exporters = list_exporters(&client).await.expect("ListExporters");
    assert_eq!(
        exporters,
        vec!["namespaces/default/exporters/board-1 board=mock,site=lab".to_owned()]
    );
    // The router serves TLS with a certificate for its endpoint from the same CA.
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(channel(&client, &service.router).await);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("router health");
    // Probes and metrics.
    let probe = std::process::Command::new("curl")
        .args(["-sf", &format!("http://{}/readyz", service.http)])
        .output()
        .expect("curl");
    assert!(probe.status.success(), "readyz");

    // get / list in every format.
    let table = ok(admin(&data_dir, &["list", "exporters"]));
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("board-1 ")), "{table}");
    let one: serde_json::Value = serde_json::from_str(&ok(admin(
        &data_dir,
        &["get", "client", "alice", "-o", "json"],
    )))
    .expect("JSON");
    assert_eq!(one["metadata"]["name"], "alice");
    assert_eq!(one["status"]["credential"]["name"], "alice-client");
    let list = yaml(&ok(admin(&data_dir, &["get", "clients", "-o", "yaml"])));
    assert_eq!(list["items"].as_sequence().map(Vec::len), Some(1));
    assert!(ok(admin(&data_dir, &["get", "leases"])).is_empty());

    // Errors are clear and non-zero.
    let missing = admin(&data_dir, &["get", "client", "nobody"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("client default/nobody not found"));
    let twice = admin(&data_dir, &["create", "client", "alice"]);
    assert!(!twice.status.success());
    assert!(String::from_utf8_lossy(&twice.stderr).contains("already exists"));
    let other_ns = admin(&data_dir, &["list", "clients", "-n", "lab"]);
    assert!(!other_ns.status.success());
    assert!(String::from_utf8_lossy(&other_ns.stderr).contains("serves namespace \"default\""));

    // A second service on the same data directory is refused, naming the locked file.
    let second = serve_command(
        &data_dir,
        &format!("127.0.0.1:{}", free_port()),
        &format!("127.0.0.1:{}", free_port()),
        &format!("127.0.0.1:{}", free_port()),
    )
    .output()
    .expect("second serve");
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("locked"), "{stderr}");
    assert!(
        stderr.contains(&data_dir.join("state.redb").display().to_string()),
        "{stderr}"
    );
    // ... and the first one still answers.
    ok(admin(&data_dir, &["list", "clients"]));

    // Graceful stop, then restart on the same data: objects, keys and credentials remain.
    service.stop();
    assert!(
        !data_dir.join("admin.sock").exists(),
        "socket removed at stop"
    );
    let down = admin(&data_dir, &["list", "clients"]);
    assert!(!down.status.success());
    assert!(String::from_utf8_lossy(&down.stderr).contains("the service is not running"));

    let restarted = Service::start(&data_dir);
    let clients = ok(admin(&data_dir, &["list", "clients"]));
    assert!(
        clients.lines().any(|l| l.starts_with("alice ")),
        "{clients}"
    );
    // The old configuration still works against the restarted service (same CA and
    // token key), once its endpoint is the new port.
    let mut moved = client.clone();
    moved["endpoint"] = serde_norway::Value::String(restarted.grpc.clone());
    let exporters = list_exporters(&moved)
        .await
        .expect("ListExporters after restart");
    assert_eq!(
        exporters,
        vec!["namespaces/default/exporters/board-1 board=mock,site=lab".to_owned()]
    );

    // delete removes the object; its credential no longer authenticates.
    ok(admin(&data_dir, &["delete", "client", "alice"]));
    let clients = ok(admin(&data_dir, &["list", "clients"]));
    assert!(!clients.contains("alice"), "{clients}");
    let denied = list_exporters(&moved).await.expect_err("deleted client");
    assert!(
        matches!(
            denied.code(),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied | tonic::Code::NotFound
        ),
        "{denied:?}"
    );
    let gone = admin(&data_dir, &["delete", "client", "alice"]);
    assert!(!gone.status.success());
    restarted.stop();
}

#[test]
fn admin_without_a_running_service_says_how_to_start_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = admin(tmp.path(), &["list", "clients"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the service is not running"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "jumpstarter serve --data-dir {}",
            tmp.path().display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_corrupt_data_file_is_refused_and_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state.redb");
    std::fs::write(&state, vec![0x5a; 8192]).expect("write garbage");
    let out = serve_command(
        tmp.path(),
        &format!("127.0.0.1:{}", free_port()),
        &format!("127.0.0.1:{}", free_port()),
        &format!("127.0.0.1:{}", free_port()),
    )
    .output()
    .expect("serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&state.display().to_string()), "{stderr}");
    // The file is left as it was for the user to inspect.
    assert_eq!(std::fs::read(&state).expect("read"), vec![0x5a; 8192]);
}

#[test]
fn no_arguments_prints_help() {
    let out = Command::new(BIN).output().expect("run");
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Usage: jumpstarter <COMMAND>"), "{text}");
    assert!(text.contains("serve") && text.contains("admin"), "{text}");
}

/// `admin ARGS` must fail with exit code `code` and say `expected` on stderr.
fn fails_with(output: Output, code: i32, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(
        stderr.contains(expected),
        "{stderr:?} should say {expected:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_creates_leases_through_the_service() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let service = Service::start(&data_dir);
    ok(admin(&data_dir, &["create", "client", "alice"]));
    ok(admin(
        &data_dir,
        &["create", "exporter", "board-1", "-l", "board=mock"],
    ));

    // By selector, printed like `get -o json`: labels from the selector and the tags.
    let by_selector: serde_json::Value = serde_json::from_str(&ok(admin(
        &data_dir,
        &[
            "create",
            "lease",
            "--client",
            "alice",
            "-l",
            "board=mock",
            "--tag",
            "team=qa",
            "-o",
            "json",
        ],
    )))
    .expect("JSON");
    assert_eq!(by_selector["kind"], "Lease");
    assert_eq!(by_selector["spec"]["clientRef"]["name"], "alice");
    assert_eq!(by_selector["spec"]["duration"], "30m0s", "the default");
    assert_eq!(by_selector["metadata"]["labels"]["board"], "mock");
    assert_eq!(
        by_selector["metadata"]["labels"]["metadata.jumpstarter.dev/team"],
        "qa"
    );
    let generated = by_selector["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");

    // By exporter, with a name, -o table: the table like `get`.
    let table = ok(admin(
        &data_dir,
        &[
            "create",
            "lease",
            "--client",
            "alice",
            "--exporter",
            "board-1",
            "--duration",
            "2h",
            "--name",
            "pinned",
            "-o",
            "table",
        ],
    ));
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("pinned ") && l.contains("alice")),
        "{table}"
    );
    let pinned = yaml(&ok(admin(
        &data_dir,
        &["get", "lease", "pinned", "-o", "yaml"],
    )));
    assert_eq!(s(&pinned["spec"]["exporterRef"]["name"]), "board-1");
    assert_eq!(s(&pinned["spec"]["duration"]), "2h0m0s");

    let leases = ok(admin(&data_dir, &["list", "leases"]));
    for name in [generated.as_str(), "pinned"] {
        assert!(
            leases.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{leases}"
        );
    }

    // Usage mistakes: exit code 2, before anything is sent.
    let create = |extra: &[&str]| {
        let mut args = vec!["create", "lease", "--client", "alice"];
        args.extend_from_slice(extra);
        admin(&data_dir, &args)
    };
    fails_with(
        create(&[]),
        2,
        "--selector <SELECTOR>|--exporter <EXPORTER>",
    );
    fails_with(
        create(&["-l", "board=mock", "--exporter", "board-1"]),
        2,
        "cannot be used with",
    );
    fails_with(
        create(&["-l", "board=mock", "--duration", "soon"]),
        2,
        "invalid duration \"soon\"",
    );
    // Refused by the CreateLease checks: exit code 1.
    fails_with(
        admin(
            &data_dir,
            &["create", "lease", "--client", "nobody", "-l", "board=mock"],
        ),
        1,
        "client default/nobody not found",
    );
    fails_with(create(&["-l", "board in ("]), 1, "invalid lease:");
    let tags: Vec<String> = (0..11)
        .flat_map(|i| ["--tag".to_owned(), format!("k{i}=v")])
        .collect();
    let mut args = vec!["-l", "board=mock"];
    args.extend(tags.iter().map(String::as_str));
    fails_with(create(&args), 1, "too many tags: 11 (at most 10)");
    fails_with(
        create(&["--exporter", "board-1", "--name", "pinned"]),
        1,
        "lease default/pinned already exists",
    );

    // delete removes them.
    for name in [generated.as_str(), "pinned"] {
        ok(admin(&data_dir, &["delete", "lease", name]));
    }
    assert!(ok(admin(&data_dir, &["get", "leases"])).is_empty());
    service.stop();
}
