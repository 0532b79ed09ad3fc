//! A network namespace the load test creates and removes (`ip netns`), the commands it
//! runs inside one (`ip -n`, `nft`), and tokio runtimes whose threads live in one: a socket
//! belongs to the namespace of the thread that creates it, so whatever such a runtime
//! creates (quinn endpoints, TCP connections, listeners) is in that namespace.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use nix::sched::{CloneFlags, setns};

/// A named network namespace, removed when dropped.
#[derive(Debug)]
pub(crate) struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` with its loopback up; one of the same name left over by a
    /// killed earlier run is removed first.
    pub(crate) fn create(name: &str) -> anyhow::Result<Netns> {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", name])
            .output();
        command("ip", &["netns", "add", name])
            .context("creating a network namespace (needs root and iproute2)")?;
        let netns = Netns {
            name: name.to_owned(),
        };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.name))
    }

    /// `ip -n <name> args…`; its standard output.
    pub(crate) fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        command("ip", &all)
    }

    /// `nft args…` inside the namespace; its standard output.
    pub(crate) fn nft(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["netns", "exec", &self.name, "nft"];
        all.extend_from_slice(args);
        command("ip", &all).context("running nft (needs nftables)")
    }

    /// The value of sysctl `key` (e.g. `net.ipv4.tcp_wmem`) inside the namespace, as
    /// `sysctl -n` prints it (fields separated by tabs or spaces), trimmed.
    pub(crate) fn sysctl(&self, key: &str) -> anyhow::Result<String> {
        let out = command("ip", &["netns", "exec", &self.name, "sysctl", "-n", key])
            .context("running sysctl (needs procps)")?;
        Ok(out.trim().to_owned())
    }

    /// Sets sysctl `key` to `value` inside the namespace (only the namespace's own copy
    /// for the per-namespace ones, such as `net.ipv4.tcp_rmem`).
    pub(crate) fn set_sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let assignment = format!("{key}={value}");
        command(
            "ip",
            &[
                "netns",
                "exec",
                &self.name,
                "sysctl",
                "-q",
                "-w",
                &assignment,
            ],
        )
        .context("running sysctl (needs procps)")?;
        Ok(())
    }

    /// Runs `body` on a new thread that entered the namespace.
    pub(crate) fn on_thread<T: Send>(
        &self,
        body: impl FnOnce() -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<T> {
        let file = self.open()?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    enter(&file)?;
                    body()
                })
                .join()
                .map_err(|_| anyhow::anyhow!("a thread in namespace {} panicked", self.name))?
        })
    }

    /// A multi-threaded runtime whose threads all live in the namespace: it is built on a
    /// thread that entered it (workers inherit the namespace of the thread that starts
    /// them), and every thread it starts later (blocking pool) enters it as well.
    pub(crate) fn runtime(&self, threads: usize) -> anyhow::Result<NsRuntime> {
        let file = Arc::new(self.open()?);
        let fault: Arc<Mutex<Option<String>>> = Arc::default();
        let runtime = self.on_thread(|| {
            let (file, fault) = (file.clone(), fault.clone());
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name(format!("{}-rt", self.name))
                .enable_all()
                .on_thread_start(move || {
                    if let Err(e) = enter(&file)
                        && let Ok(mut fault) = fault.lock()
                    {
                        *fault = Some(format!("{e:#}"));
                    }
                })
                .build()
                .context("building a runtime in a network namespace")
        })?;
        Ok(NsRuntime {
            namespace: self.name.clone(),
            runtime: Some(runtime),
            fault,
        })
    }

    fn open(&self) -> anyhow::Result<File> {
        let path = self.path();
        File::open(&path).with_context(|| format!("opening {}", path.display()))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Moves the calling thread into the network namespace of `file`, and checks it did.
fn enter(file: &File) -> anyhow::Result<()> {
    setns(file, CloneFlags::CLONE_NEWNET).context("entering a network namespace")?;
    let wanted = file.metadata()?.ino();
    let now = std::fs::metadata("/proc/thread-self/ns/net")?.ino();
    if wanted != now {
        bail!("the thread is not in the network namespace it entered");
    }
    Ok(())
}

/// A runtime whose threads live in a network namespace; shut down (without waiting for
/// its tasks) when dropped, which is allowed from async code.
#[derive(Debug)]
pub(crate) struct NsRuntime {
    namespace: String,
    runtime: Option<tokio::runtime::Runtime>,
    fault: Arc<Mutex<Option<String>>>,
}

impl NsRuntime {
    /// Runs `task` on this runtime (so that what it creates lives in the namespace) and
    /// waits for it from any runtime.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        task: impl Future<Output = anyhow::Result<T>> + Send + 'static,
    ) -> anyhow::Result<T> {
        let runtime = self
            .runtime
            .as_ref()
            .context("the namespace runtime is shut down")?;
        let out = runtime
            .spawn(task)
            .await
            .with_context(|| format!("{what} (a task in namespace {})", self.namespace))??;
        if let Ok(fault) = self.fault.lock()
            && let Some(e) = fault.as_ref()
        {
            bail!("a thread of namespace {} is elsewhere: {e}", self.namespace);
        }
        Ok(out)
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs `program args…`; its standard output, or an error with its standard error.
fn command(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
