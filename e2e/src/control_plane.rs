//! A private Kubernetes control plane: etcd and kube-apiserver of
//! `tools/k8s-testenv/testenv.sh`, started in a temporary directory of their own on their
//! own ports, for a test that stops and starts the API server. The shared control plane of
//! the other tests is never touched.
//!
//! [`PrivateControlPlane::stop_api_server`] stops the API server (SIGTERM, then SIGKILL)
//! after noting its command line; [`PrivateControlPlane::start_api_server`] starts it again
//! with that command line (same certificates, port and etcd) and waits for `/readyz`.
//! Dropping the value stops both processes by the PIDs the script recorded.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use jumpstarter_testenv::{TestEnv, repo_root};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a stopped API server may take to exit before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long a restarted API server may take to answer `/readyz` (it re-reads etcd and
/// runs its post-start hooks; on two busy cores that takes a while).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// etcd and kube-apiserver for one test.
#[derive(Debug)]
pub struct PrivateControlPlane {
    pub env: TestEnv,
    state: PathBuf,
    /// The API server's command line, noted when it was stopped.
    api_command: Option<Vec<OsString>>,
    /// The API server started again by this process (reaped on drop).
    api_child: Option<std::process::Child>,
    _dir: tempfile::TempDir,
}

impl PrivateControlPlane {
    /// Starts etcd and kube-apiserver with `testenv.sh start` in a fresh directory.
    pub fn start(prefix: &str) -> anyhow::Result<PrivateControlPlane> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("kte-{prefix}-"))
            .tempdir()?;
        let state = dir.path().join("kte");
        let output = script(&state, "start")?;
        if !output.status.success() {
            bail!(
                "testenv.sh start failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let env = TestEnv::from_dir(&state)?;
        Ok(PrivateControlPlane {
            env,
            state,
            api_command: None,
            api_child: None,
            _dir: dir,
        })
    }

    fn api_pid(&self) -> anyhow::Result<Pid> {
        let path = self.state.join("kube-apiserver.pid");
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        Ok(Pid::from_raw(
            text.trim().parse().context("API server PID")?,
        ))
    }

    /// Stops the API server (SIGTERM; SIGKILL after [`STOP_GRACE`]); etcd keeps running.
    pub fn stop_api_server(&mut self) -> anyhow::Result<()> {
        let pid = self.api_pid()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .with_context(|| format!("the API server (PID {pid}) is not running"))?;
        let command: Vec<OsString> = cmdline
            .split(|b| *b == 0)
            .filter(|part| !part.is_empty())
            .map(|part| OsString::from_vec(part.to_vec()))
            .collect();
        anyhow::ensure!(!command.is_empty(), "empty command line of PID {pid}");
        self.api_command = Some(command);
        kill(pid, Signal::SIGTERM).with_context(|| format!("SIGTERM to {pid}"))?;
        let deadline = Instant::now() + STOP_GRACE;
        while !gone(pid) {
            if Instant::now() > deadline {
                let _ = kill(pid, Signal::SIGKILL);
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Starts the API server again with the command line it had, and waits until it
    /// answers `/readyz`.
    pub async fn start_api_server(&mut self) -> anyhow::Result<()> {
        let command = self
            .api_command
            .clone()
            .context("the API server was not stopped")?;
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.state.join("kube-apiserver.log"))?;
        let child = Command::new(&command[0])
            .args(&command[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start kube-apiserver again")?;
        std::fs::write(
            self.state.join("kube-apiserver.pid"),
            child.id().to_string(),
        )?;
        self.api_child = Some(child);
        let token = std::fs::read_to_string(self.state.join("env"))?
            .lines()
            .find_map(|l| l.strip_prefix("KTE_ADMIN_TOKEN=").map(str::to_owned))
            .context("KTE_ADMIN_TOKEN in the env file")?;
        let url = format!("https://127.0.0.1:{}/readyz", self.env.api_port);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let code = Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "2",
                ])
                .arg("--cacert")
                .arg(self.state.join("pki/ca.crt"))
                .arg("-H")
                .arg(format!("Authorization: Bearer {token}"))
                .arg(&url)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            if code == "200" {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the restarted API server did not answer /readyz within {READY_TIMEOUT:?} (last: {code})"
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Whether process `pid` is gone (or a zombie, which its parent has yet to reap).
fn gone(pid: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // `pid (comm) S ...`: the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Runs `testenv.sh <action>` for the control plane in `state`.
fn script(state: &Path, action: &str) -> anyhow::Result<std::process::Output> {
    let path = repo_root().join("tools/k8s-testenv/testenv.sh");
    Command::new(&path)
        .arg(action)
        .env("KTE_DIR", state)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {} {action}", path.display()))
}

impl Drop for PrivateControlPlane {
    fn drop(&mut self) {
        let _ = script(&self.state, "stop");
        // The script stopped it; make sure (our own child, by its handle) and reap it, so
        // no zombie is left.
        if let Some(mut child) = self.api_child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
