//! The embedded store on a full disk: a real `jumpstarter serve` whose data directory is a
//! 4 MiB tmpfs. Once a filler file takes the free space, writes fail with a clear error
//! naming the cause, reads go on, the process stays up, nothing acknowledged is lost (also
//! across a restart), and writes succeed again once the filler is gone.
//!
//! Needs root (it mounts a tmpfs); the mount is removed when the test ends, even on failure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use jumpstarter_e2e::{ConfigCredentials, free_port};
use jumpstarter_proto::jumpstarter::client::v1 as client_pb;
use jumpstarter_proto::jumpstarter::client::v1::client_service_client::ClientServiceClient;
use tonic::transport::Channel;

use crate::support;

use support::{BIN, ServeProcess};

/// Upper bound of every wait.
const WAIT: Duration = Duration::from_secs(60);
/// Size of the data directory's file system: room for the store and a few hundred leases.
const TMPFS_SIZE: &str = "4m";
/// Most leases created while looking for the first refused write; a full disk refuses one
/// within a few (the store grows its file in steps of at most a few hundred KiB).
const MAX_WRITES: usize = 300;

/// A tmpfs mounted at a fresh directory; unmounted (lazily, so a process still holding a
/// file cannot keep it) when dropped.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fs");
        std::fs::create_dir(&path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755")])
            .arg("tmpfs")
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount tmpfs (this test needs root)");
        Tmpfs { path, _dir: dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the file system holding `path` with one file; returns it.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).expect("filler");
    let chunk = vec![0xa5_u8; 4096];
    // A 4 MiB file system holds at most 1024 pages.
    for _ in 0..2048 {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => return filler,
            Err(e) => panic!("fill: {e}"),
        }
    }
    panic!("the file system did not fill up");
}

struct Service {
    process: ServeProcess,
    grpc: String,
}

impl Service {
    fn start(data_dir: &Path, log: PathBuf) -> Service {
        let grpc = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--no-quic", "--data-dir"])
            .arg(data_dir)
            .args(["--grpc-listen", &grpc])
            .args(["--router-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
            .env_remove("JUMPSTARTER_NAMESPACE")
            .stdin(Stdio::null());
        Service {
            process: ServeProcess::spawn(cmd, data_dir, log, WAIT),
            grpc,
        }
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.process.child.try_wait().expect("try_wait") {
            panic!("serve exited with {status}:\n{}", self.process.logs());
        }
    }

    /// SIGTERM, then waits for the exit.
    fn stop(mut self) {
        let pid = i32::try_from(self.process.child.id()).expect("a PID fits in pid_t");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM to serve");
        let deadline = Instant::now() + WAIT;
        while self.process.child.try_wait().expect("try_wait").is_none() {
            assert!(Instant::now() < deadline, "serve did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

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

fn ok(what: &str, output: Output) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// The names of the stored leases, through the admin socket.
fn stored_leases(data_dir: &Path) -> Vec<String> {
    let listed: serde_json::Value = serde_json::from_str(&ok(
        "list leases",
        admin(data_dir, &["get", "leases", "-o", "json"]),
    ))
    .expect("JSON");
    let mut names: Vec<String> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|l| l["metadata"]["name"].as_str().expect("name").to_owned())
        .collect();
    names.sort();
    names
}

struct Api {
    client: ClientServiceClient<Channel>,
    credentials: ConfigCredentials,
}

impl Api {
    async fn connect(credentials: &ConfigCredentials, endpoint: &str) -> Api {
        let channel = credentials
            .tls_endpoint(endpoint)
            .expect("endpoint")
            .connect()
            .await
            .expect("connect over TLS");
        Api {
            client: ClientServiceClient::new(channel),
            credentials: credentials.clone(),
        }
    }

    /// ClientService.CreateLease of `name` (a one-hour lease on `board=mock`).
    async fn create_lease(&mut self, name: &str) -> Result<(), tonic::Status> {
        let request = client_pb::CreateLeaseRequest {
            parent: format!("namespaces/{}", self.credentials.namespace),
            lease_id: name.to_owned(),
            lease: Some(client_pb::Lease {
                selector: "board=mock".into(),
                duration: Some(prost_types::Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
                ..Default::default()
            }),
        };
        let request = self.credentials.request("Client", request);
        self.client.create_lease(request).await.map(|_| ())
    }

    /// The names of every lease (ended ones too), over ClientService.ListLeases.
    async fn list_leases(&mut self) -> Result<Vec<String>, tonic::Status> {
        let request = client_pb::ListLeasesRequest {
            parent: format!("namespaces/{}", self.credentials.namespace),
            page_size: 1000,
            only_active: Some(false),
            ..Default::default()
        };
        let request = self.credentials.request("Client", request);
        let leases = self.client.list_leases(request).await?.into_inner().leases;
        let prefix = format!("namespaces/{}/leases/", self.credentials.namespace);
        let mut names: Vec<String> = leases
            .into_iter()
            .map(|l| l.name.strip_prefix(&prefix).unwrap_or(&l.name).to_owned())
            .collect();
        names.sort();
        Ok(names)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_writes_clearly_loses_nothing_and_recovers() {
    let fs = Tmpfs::mount(TMPFS_SIZE);
    let data_dir = fs.path.join("data");
    let logs = tempfile::tempdir().expect("log dir");
    let mut service = Service::start(&data_dir, logs.path().join("serve-1.log"));

    let client_file = logs.path().join("alice.yaml");
    ok(
        "create client",
        admin(
            &data_dir,
            &[
                "create",
                "client",
                "alice",
                "--out",
                client_file.to_str().expect("UTF-8"),
            ],
        ),
    );
    let credentials = ConfigCredentials::read(&client_file).expect("client config");
    let mut api = Api::connect(&credentials, &service.grpc).await;
    let mut acknowledged = Vec::new();
    for n in 0..3 {
        let name = format!("before-{n}");
        api.create_lease(&name).await.expect("create before full");
        acknowledged.push(name);
    }

    let filler = fill(&fs.path);

    // Writes go on while the file has room inside, then fail with a clear error.
    let mut refusal = None;
    for n in 0..MAX_WRITES {
        let name = format!("full-{n}");
        match api.create_lease(&name).await {
            Ok(()) => acknowledged.push(name),
            Err(status) => {
                refusal = Some(status);
                break;
            }
        }
    }
    let refusal = refusal.expect("a write on a full disk fails");
    eprintln!(
        "{} leases acknowledged on the full disk before the first refusal",
        acknowledged.len() - 3
    );
    assert!(
        matches!(
            refusal.code(),
            tonic::Code::ResourceExhausted | tonic::Code::Unavailable
        ),
        "{refusal:?}"
    );
    assert!(
        refusal.message().contains("no space left"),
        "the refusal names the cause: {refusal:?}"
    );
    let cli = admin(&data_dir, &["create", "client", "bob"]);
    assert!(!cli.status.success(), "a write through the admin socket");
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(stderr.contains("no space left"), "{stderr}");

    // Reads go on, over gRPC and the admin socket, and the process stays up.
    service.assert_running();
    acknowledged.sort();
    let stored = stored_leases(&data_dir);
    for name in &acknowledged {
        assert!(stored.contains(name), "{name} lost: {stored:?}");
    }
    assert_eq!(
        api.list_leases().await.expect("ListLeases on a full disk"),
        stored
    );
    service.assert_running();

    // Space returns: writes succeed again, without a restart.
    std::fs::remove_file(&filler).expect("remove filler");
    let deadline = Instant::now() + WAIT;
    loop {
        match api.create_lease("after-space").await {
            Ok(()) => break,
            Err(status) => assert!(
                Instant::now() < deadline,
                "writes did not recover: {status:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    acknowledged.push("after-space".into());
    ok(
        "create client after space returned",
        admin(&data_dir, &["create", "client", "carol"]),
    );
    service.assert_running();

    // Nothing acknowledged is lost across a restart.
    service.stop();
    let service = Service::start(&data_dir, logs.path().join("serve-2.log"));
    let stored = stored_leases(&data_dir);
    for name in &acknowledged {
        assert!(
            stored.contains(name),
            "{name} lost after restart: {stored:?}"
        );
    }
    drop(service);
}
