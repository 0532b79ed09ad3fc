//! A `jumpstarter-router` process on loopback ports (or on an address of a network
//! namespace), started with the [`Lab`]'s files: its h2 and QUIC addresses, its resident
//! memory and CPU time, and stop/kill/restart on the same ports.

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

/// CPU time (user + system) process `pid` has used so far, in seconds, from
/// `/proc/<pid>/stat` (in clock ticks of `sysconf(_SC_CLK_TCK)`).
pub(crate) fn cpu_seconds_of(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = cpu_ticks(&stat).with_context(|| format!("parsing {path}"))?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .context("sysconf(_SC_CLK_TCK)")?
        .filter(|&t| t > 0)
        .context("no clock tick rate")?;
    Ok(ticks as f64 / per_second as f64)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in clock ticks. The
/// command name (field 2) is in parentheses and may contain spaces and parentheses, so
/// fields are counted from the last `)`.
fn cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    let (_, after) = stat
        .rsplit_once(')')
        .context("no `)` after the command name")?;
    // Field 3 (state) is the first after the name: utime is the 12th from there.
    let mut fields = after.split_whitespace().skip(11);
    let mut next = |name: &str| -> anyhow::Result<u64> {
        fields
            .next()
            .with_context(|| format!("no {name} field"))?
            .parse()
            .with_context(|| format!("{name} is not a number"))
    };
    let utime = next("utime")?;
    let stime = next("stime")?;
    Ok(utime + stime)
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
    // The idle scenario holds thousands of QUIC connections (the default cap is 2,048).
    ("JUMPSTARTER_ROUTER_QUIC_MAX_CONNECTIONS", "1000000"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_add_user_and_system_time_whatever_the_command_name() {
        let stat = "4242 (jumpstarter-rou) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    150 37 0 0 20 0 9 0 12345 123456789 5000 18446744073709551615";
        assert_eq!(cpu_ticks(stat).expect("ticks"), 187);
        // A name with spaces and parentheses does not shift the fields.
        let odd = "7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 1 1 1";
        assert_eq!(cpu_ticks(odd).expect("ticks"), 11);
        assert!(cpu_ticks("7 (short) R 1 2").is_err());
        assert!(cpu_ticks("no name here").is_err());
    }

    #[test]
    fn this_process_has_used_some_cpu_time() {
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let seconds = cpu_seconds_of(std::process::id()).expect("cpu seconds");
        assert!(seconds > 0.0, "{seconds}");
    }
}
