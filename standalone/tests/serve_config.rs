//! `jumpstarter serve --config FILE`: the 0.9.0 configuration (the YAML of the upstream
//! ConfigMap's key `config`) read by the real binary, its effect seen through the gRPC API
//! and the credentials it issues, explicit flags winning over it, and a bad file refused
//! with the path of the offending key.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use jumpstarter_e2e::{ConfigCredentials, free_port, stdout_of};
use jumpstarter_proto::jumpstarter::client::v1::ListExportersRequest;
use jumpstarter_proto::jumpstarter::client::v1::client_service_client::ClientServiceClient;

use crate::support;

use support::{BIN, ServeProcess};

/// Upper bound of every wait; a start normally takes well under a second.
const WAIT: Duration = Duration::from_secs(60);

const CONFIG: &str = r#"
authentication:
  internal:
    prefix: "internal:"
    tokenLifetime: 2h
grpc:
  keepalive:
    minTime: 3s
    permitWithoutStream: true
hiddenLabels:
  keys: [serial]
deprecatedLabels:
  keys:
    pool: "use env instead"
"#;

fn serve_command(data_dir: &Path, config: &Path, extra: &[&str]) -> Command {
    let port = || format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--no-quic", "--data-dir"])
        .arg(data_dir)
        .args(["--grpc-listen", &port(), "--router-listen", &port()])
        .args(["--http-listen", &port()])
        .args(extra)
        // Through its environment variable, as a container would set it.
        .env("JUMPSTARTER_CONFIG", config)
        .env_remove("JUMPSTARTER_NAMESPACE")
        .env_remove("JUMPSTARTER_TOKEN_LIFETIME")
        .stdin(Stdio::null());
    cmd
}

fn admin(data_dir: &Path, args: &[&str]) -> String {
    let output = Command::new(BIN)
        .arg("admin")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("JUMPSTARTER_NAMESPACE")
        .env_remove("JUMPSTARTER_KUBECONFIG")
        .env_remove("JUMPSTARTER_KUBERNETES")
        .stdin(Stdio::null())
        .output()
        .expect("run jumpstarter admin");
    stdout_of("admin", &output)
}

/// `exp - iat` of a JWT, in seconds (its signature is checked by the service, not here).
fn lifetime_of(token: &str) -> i64 {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    let claims: serde_json::Value = serde_json::from_slice(&json).expect("JSON claims");
    claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat")
}

/// Starts a service, creates client `alice` and exporter `board-1`, and returns the
/// client's configuration.
fn start_and_create(data_dir: &Path, config: &Path, extra: &[&str]) -> (ServeProcess, String) {
    let log = data_dir.with_extension("log");
    let process = ServeProcess::spawn(serve_command(data_dir, config, extra), data_dir, log, WAIT);
    let client = admin(data_dir, &["create", "client", "alice"]);
    admin(
        data_dir,
        &[
            "create",
            "exporter",
            "board-1",
            "-l",
            "board=mock",
            "-l",
            "pool=staging",
            "-l",
            "serial=42",
        ],
    );
    (process, client)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_configuration_file_applies_and_flags_win_over_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("config.yaml");
    std::fs::write(&config, CONFIG).expect("write the configuration");

    let data_dir = tmp.path().join("from-file");
    let (process, client) = start_and_create(&data_dir, &config, &[]);
    let client: serde_norway::Value = serde_norway::from_str(&client).expect("ClientConfig");
    let credentials = ConfigCredentials::from_yaml(&client).expect("configuration");
    assert_eq!(
        lifetime_of(&credentials.token),
        2 * 3600,
        "tokenLifetime from the file"
    );
    let channel = credentials
        .tls_endpoint(&credentials.endpoint)
        .expect("TLS endpoint")
        .connect()
        .await
        .expect("connect over TLS");
    let listed = ClientServiceClient::new(channel)
        .list_exporters(credentials.request(
            "Client",
            ListExportersRequest {
                parent: format!("namespaces/{}", credentials.namespace),
                ..Default::default()
            },
        ))
        .await
        .expect("ListExporters")
        .into_inner();
    assert_eq!(listed.exporters.len(), 1);
    let exporter = &listed.exporters[0];
    let mut labels: Vec<_> = exporter.labels.keys().cloned().collect();
    labels.sort();
    assert_eq!(labels, ["board"], "hidden and deprecated keys are left out");
    assert_eq!(
        exporter.deprecated_labels.get("pool").map(String::as_str),
        Some("use env instead")
    );
    let logs = process.logs();
    assert!(logs.contains("configuration read"), "{logs}");
    assert!(
        logs.contains("not applied: grpc.keepalive.minTime"),
        "{logs}"
    );
    drop(process);

    // An explicit flag wins over the file.
    let data_dir = tmp.path().join("flag-wins");
    let (process, client) = start_and_create(&data_dir, &config, &["--token-lifetime", "3h"]);
    let client: serde_norway::Value = serde_norway::from_str(&client).expect("ClientConfig");
    let credentials = ConfigCredentials::from_yaml(&client).expect("configuration");
    assert_eq!(
        lifetime_of(&credentials.token),
        3 * 3600,
        "--token-lifetime"
    );
    drop(process);
}

/// Runs `command`, which must exit on its own within [`WAIT`] (it is killed otherwise),
/// and returns whether it succeeded and its stderr.
fn run_bounded(mut command: Command, stderr_file: &Path) -> (bool, String) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr_file).expect("stderr file"))
        .spawn()
        .expect("spawn serve");
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve did not exit within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(stderr_file).unwrap_or_default();
    (status.success(), stderr)
}

#[test]
fn a_bad_configuration_file_is_refused_with_the_path_of_the_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("config.yaml");
    std::fs::write(&config, "grpc:\n  keepalive:\n    minTim: 1s\n").expect("write");
    let data_dir = tmp.path().join("data");
    let (success, stderr) = run_bounded(
        serve_command(&data_dir, &config, &[]),
        &tmp.path().join("bad.err"),
    );
    assert!(!success);
    assert!(
        stderr.contains("config: grpc.keepalive: unknown field `minTim`, expected one of"),
        "{stderr}"
    );
    // Nothing was started or written: the data directory was not even created.
    assert!(!data_dir.join("state.redb").exists());

    let missing = tmp.path().join("missing.yaml");
    let (success, stderr) = run_bounded(
        serve_command(&data_dir, &missing, &[]),
        &tmp.path().join("missing.err"),
    );
    assert!(!success);
    assert!(
        stderr.contains(&format!(
            "read the configuration file {}",
            missing.display()
        )),
        "{stderr}"
    );
}
