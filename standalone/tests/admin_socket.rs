//! Who may reach a standalone service's secrets: its data directory is made 0700 even if
//! it existed with a looser mode, a directory another user owns is refused, and the admin
//! socket serves only the service's user and root (peer credentials), counting refusals.
//!
//! Needs root (it runs a client as `nobody` and hands a directory to it).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use jumpstarter_e2e::free_port;

use crate::support;

use support::{BIN, ServeProcess};

/// Upper bound of the wait for a service to start.
const WAIT: Duration = Duration::from_secs(60);
/// An unprivileged user that exists on every Linux system.
const NOBODY: u32 = 65534;

fn serve_command(data_dir: &Path, http: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--no-quic", "--data-dir"])
        .arg(data_dir)
        .args(["--grpc-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--router-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-listen", http])
        .env_remove("JUMPSTARTER_NAMESPACE")
        .stdin(Stdio::null());
    cmd
}

fn admin_command(data_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("admin")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("JUMPSTARTER_NAMESPACE")
        .env_remove("JUMPSTARTER_KUBECONFIG")
        .env_remove("JUMPSTARTER_KUBERNETES")
        .stdin(Stdio::null());
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.output().expect("run jumpstarter")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn an_existing_data_directory_is_made_private_and_a_foreign_one_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    std::fs::create_dir(&data_dir).expect("data dir");
    chmod(&data_dir, 0o755);
    let http = format!("127.0.0.1:{}", free_port());
    let service = ServeProcess::spawn(
        serve_command(&data_dir, &http),
        &data_dir,
        tmp.path().join("serve.log"),
        WAIT,
    );
    assert_eq!(mode(&data_dir), 0o700, "{}", service.logs());
    drop(service);

    // Another user's directory: the service refuses to start and says why.
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).expect("foreign dir");
    chmod(&foreign, 0o700);
    std::os::unix::fs::chown(&foreign, Some(NOBODY), Some(NOBODY)).expect("chown");
    let refused = run(serve_command(
        &foreign,
        &format!("127.0.0.1:{}", free_port()),
    ));
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!("belongs to uid {NOBODY}")),
        "{stderr}"
    );
    assert!(
        std::fs::read_dir(&foreign).expect("list").next().is_none(),
        "nothing written into it"
    );
}

#[test]
fn the_admin_socket_serves_only_the_service_user_and_root() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let http = format!("127.0.0.1:{}", free_port());
    let service = ServeProcess::spawn(
        serve_command(&data_dir, &http),
        &data_dir,
        tmp.path().join("serve.log"),
        WAIT,
    );
    // Loosen every mode on the way, as a careless operator might: only the peer check is
    // left between another user and the admin API.
    chmod(tmp.path(), 0o711);
    chmod(&data_dir, 0o711);
    chmod(&data_dir.join("admin.sock"), 0o666);

    let mut as_nobody = admin_command(&data_dir, &["create", "client", "mallory"]);
    as_nobody.uid(NOBODY).gid(NOBODY);
    let refused = run(as_nobody);
    assert!(!refused.status.success(), "{}", service.logs());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!(
            "serves only uid 0 (the service's user) and root, not uid {NOBODY}"
        )),
        "{stderr}"
    );

    // Names are checked before the store is asked (the CLI checks them too; this is the
    // socket's own check).
    let invalid = Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(data_dir.join("admin.sock"))
        .arg("http://localhost/v1/clients/Alice")
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&invalid.stdout);
    assert!(body.contains("must be an object name"), "{body}");

    // The service's own user (root here) is served, and nothing was created.
    let clients = run(admin_command(&data_dir, &["list", "clients"]));
    assert!(clients.status.success(), "{}", service.logs());
    assert!(!String::from_utf8_lossy(&clients.stdout).contains("mallory"));

    let metrics = Command::new("curl")
        .args(["-sf", &format!("http://{http}/metrics")])
        .output()
        .expect("curl");
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains(
            "jumpstarter_admin_socket_refused_connections_total{reason=\"other_user\"} 1"
        ),
        "{metrics}"
    );
    // What Prometheus users expect of any server: process and build metrics, and this
    // process runs the reconcile loop (standalone: always the leader).
    for expected in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "jumpstarter_build_info{version=\"",
        "jumpstarter_controller_leader 1",
        "jumpstarter_controller_lease_scheduling_seconds_bucket{le=\"0.001\"}",
    ] {
        assert!(metrics.contains(expected), "{expected} missing:\n{metrics}");
    }
    assert!(
        service.logs().contains("admin socket connection refused"),
        "{}",
        service.logs()
    );
}
