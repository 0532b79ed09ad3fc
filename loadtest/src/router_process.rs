//! A `jumpstarter-router` process on loopback ports (or on an address of a network
//! namespace), started with the [`Lab`]'s files: its h2 and QUIC addresses, its resident
//! memory, and stop/kill/restart on the same ports.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::lab::Lab;

/// How long a router may take to start listening.
const START_WAIT: Duration = Duration::from_secs(30);

/// A router process.
#[derive(Debug)]
pub(crate) struct RouterProcess {
    binary: PathBuf,
    args: Vec<String>,
    /// The network namespace it runs in (`ip netns exec`), when not the load test's own.
    netns: Option<String>,
    log: PathBuf,
    child: Option<Child>,
    /// The h2 (gRPC over TLS) listener.
    pub(crate) h2: SocketAddr,
    /// The QUIC listener (same port number, UDP).
    pub(crate) quic: SocketAddr,
}

impl RouterProcess {
    /// Starts `binary` with `lab`'s certificates on free loopback ports; logs go to
    /// `log_dir`.
    pub(crate) async fn start(binary: &Path, lab: &Lab, log_dir: &Path) -> anyhow::Result<Self> {
        Self::start_at(binary, lab, log_dir, Ipv4Addr::LOCALHOST.into(), None).await
    }

    /// Starts `binary` listening on `ip` (h2, QUIC and metrics), inside network namespace
    /// `netns` when given. The readiness check connects from the calling thread, so with a
    /// namespace call this on a runtime whose threads are in it.
    pub(crate) async fn start_at(
        binary: &Path,
        lab: &Lab,
        log_dir: &Path,
        ip: IpAddr,
        netns: Option<&str>,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let metrics_port = free_port()?;
        let h2: SocketAddr = (ip, port).into();
        let files = lab.files();
        let path = |p: &Path| p.display().to_string();
        let args = vec![
            "--listen".to_owned(),
            h2.to_string(),
            "--quic-listen".to_owned(),
            h2.to_string(),
            "--tls-cert".to_owned(),
            path(&files.tls_cert),
            "--tls-key".to_owned(),
            path(&files.tls_key),
            "--token-public-keys".to_owned(),
            path(&files.token_public_keys),
            "--client-ca".to_owned(),
            path(&files.client_ca),
            "--metrics-listen".to_owned(),
            SocketAddr::from((ip, metrics_port)).to_string(),
            // The restart scenario measures how fast peers come back, not the drain.
            "--drain-timeout".to_owned(),
            "0".to_owned(),
        ];
        let mut router = RouterProcess {
            binary: binary.to_owned(),
            args,
            netns: netns.map(str::to_owned),
            log: log_dir.join(format!("router-{port}.log")),
            child: None,
            h2,
            quic: h2,
        };
        router.spawn().await?;
        Ok(router)
    }

    /// The process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Resident memory of the process in bytes (`VmRSS` of `/proc/<pid>/status`).
    pub(crate) fn rss_bytes(&self) -> anyhow::Result<u64> {
        let pid = self.pid().context("the router is not running")?;
        rss_of(pid)
    }

    /// SIGKILL (a crash) or SIGTERM (a graceful stop), then waits for the exit.
    pub(crate) async fn stop(&mut self, kill: bool) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if kill {
            child.start_kill().context("killing the router")?;
        } else if let Some(pid) = child.id() {
            use nix::sys::signal::{Signal, kill as send};
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).context("the router's PID")?);
            send(pid, Signal::SIGTERM).with_context(|| format!("SIGTERM to {pid}"))?;
        }
        tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .context("the router did not exit within 30 s")?
            .context("waiting for the router")?;
        Ok(())
    }

    /// Starts the process again on the same ports.
    pub(crate) async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut command = match &self.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        let child = spawn_logged(command.args(&self.args), log)
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_WAIT;
        // The QUIC socket is bound before the TCP listener, so TCP answering means both.
        loop {
            if tokio::net::TcpStream::connect(self.h2).await.is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "the router exited with {status} before listening; see {}",
                    self.log.display()
                );
            }
            if Instant::now() > deadline {
                bail!("the router did not listen within {START_WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `VmRSS` of process `pid`, in bytes.
pub(crate) fn rss_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("empty VmRSS line")?
        .parse()
        .context("VmRSS is not a number")?;
    Ok(kib * 1024)
}

/// A TCP port that was free a moment ago (its UDP twin is normally free as well).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    for _ in 0..20 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port with a free UDP twin")
}

/// Public-port and per-caller limits lifted for the load test: its whole load comes from
/// one host, few connections and few clients, so per-source, per-connection and per-client
/// caps would measure the caps, not the service (the Go router ignores these variables).
const LIFTED_LIMITS: &[(&str, &str)] = &[
    ("JUMPSTARTER_MAX_CONNECTIONS", "1000000"),
    ("JUMPSTARTER_MAX_CONNECTIONS_PER_SOURCE", "1000000"),
    ("JUMPSTARTER_MAX_HANDSHAKES_PER_SOURCE", "1000000"),
    ("JUMPSTARTER_HTTP2_MAX_CONCURRENT_STREAMS", "1000000"),
    ("JUMPSTARTER_DIAL_BURST", "1000000"),
    ("JUMPSTARTER_DIAL_INTERVAL", "1us"),
    ("JUMPSTARTER_MAX_PENDING_LEASES_PER_CLIENT", "1000000"),
];

/// Starts `command` with no input, its output appended to `log`, warnings-only logging
/// (`RUST_LOG=warn`, which the Go router ignores), the public-port limits lifted
/// ([`LIFTED_LIMITS`]), and killed when its handle is dropped.
pub(crate) fn spawn_logged(command: &mut Command, log: std::fs::File) -> std::io::Result<Child> {
    command
        .env("RUST_LOG", "warn")
        .envs(LIFTED_LIMITS.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
}
