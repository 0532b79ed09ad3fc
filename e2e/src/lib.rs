//! End-to-end harness: the service's own binaries (controller, router) on loopback, in
//! Kubernetes mode against the real kube-apiserver of `jumpstarter-testenv`, driven by the
//! real jumpstarter 0.9.0 tools (`jmp admin`, `jmp run`, `jmp shell`, `j`) from PyPI.
//!
//! Nothing is mocked and nothing is skipped: a missing binary, venv or API server fails
//! the test with the command that provides it.
//!
//! Map: [`Lab`] (one namespace with a controller and a router), [`Proc`] (a child
//! process killed on drop), [`venv`], [`bin_path`], [`netns`] (a network namespace that no
//! TCP can leave, for proving traffic went over QUIC).

pub mod chart;
pub mod control_plane;
pub mod lease;
pub mod netns;
pub mod node;
pub mod replicas;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use jumpstarter_controller::crd::{Exporter, Lease};
use jumpstarter_testenv::TestEnv;
use kube::api::Api;
pub use nix::sys::signal::Signal;
use tokio::process::{Child, Command};

/// The cached venv with jumpstarter 0.9.0 (see `tools/python-venv.sh`).
pub use jumpstarter_testenv::venv;

/// A binary of this workspace: next to the test executable, or, when Cargo keeps its
/// intermediate files in a separate build directory (`build.build-dir`), in the target
/// directory (`CARGO_TARGET_DIR`, by default the workspace's `target/`).
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let beside = dir.join(name);
    if beside.is_file() {
        return beside;
    }
    let profile = dir.file_name().expect("profile directory");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join(profile).join(name);
    assert!(
        path.is_file(),
        "{name} is missing (looked in {} and {}); build it with `cargo build --workspace --bins` (cargo test --workspace does)",
        dir.display(),
        target.join(profile).display()
    );
    path
}

/// Holds the end-to-end tests that start the service and Python processes to one at a
/// time, across all the test files (they are modules of one test binary): each of them
/// needs most of the CPU, and their timeouts assume they have it.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough on loopback).
///
/// The kernel may hand the same ephemeral port to two quick binds once the first listener
/// is closed, so ports already returned in this process are never returned again (two
/// listeners of one lab on the same port would fail to start).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.insert(port) {
            return port;
        }
    }
    panic!("no port that this process has not used yet after 1000 binds")
}

/// A child process that is terminated (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `program args` with stdout+stderr into `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> anyhow::Result<Proc> {
        let file = std::fs::File::create(&log)?;
        cmd.stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("spawn {name}"))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Sends a signal by PID (this process started the child). Best effort: a child that
    /// has exited already is not an error.
    pub fn signal(&self, signal: Signal) {
        if let Ok(pid) = i32::try_from(self.pid())
            && pid != 0
        {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
    }

    /// SIGTERM and wait up to `grace` for the exit; SIGKILL after that.
    pub async fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        self.signal(Signal::SIGTERM);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = self.child.kill().await;
                None
            }
        }
    }

    /// The process output so far (for failure messages).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            self.signal(Signal::SIGTERM);
            std::thread::sleep(Duration::from_millis(200));
            let _ = self.child.start_kill();
        }
    }
}

/// The result of a finished command.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The lease that `jmp create lease -o name` printed (`…/leases/<name>` or `<name>`);
    /// panics when it printed none.
    pub fn lease_name(&self) -> String {
        let name = self
            .stdout
            .trim()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        assert!(!name.is_empty(), "no lease name printed: {self}");
        name
    }

    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// How the service under test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `jumpstarter-controller` + `jumpstarter-router` processes on the real kube-apiserver;
    /// clients and exporters created with the real `jmp admin`.
    Kubernetes,
    /// One `jumpstarter serve` process on its embedded store; clients and exporters
    /// created with `jumpstarter admin`.
    Standalone,
}

/// One isolated lab: a namespace with its own controller and router (Kubernetes mode), or
/// one standalone service with its own data directory.
#[derive(Debug)]
pub struct Lab {
    pub mode: Mode,
    pub namespace: String,
    pub dir: tempfile::TempDir,
    pub controller: Option<Proc>,
    pub router: Option<Proc>,
    pub grpc_port: u16,
    pub router_port: u16,
    pub probe_port: u16,
    pub kubeconfig: PathBuf,
    pub exporters: BTreeMap<String, Proc>,
    /// Extra arguments of the service process: `jumpstarter serve` (standalone mode) or
    /// `jumpstarter-controller run` (Kubernetes mode).
    pub serve_args: Vec<String>,
    /// The control plane of a Kubernetes-mode lab (else the shared one is assumed).
    pub kube_env: Option<TestEnv>,
    /// Extra arguments of `jumpstarter-controller router-cert` (Kubernetes mode), e.g.
    /// the `--ca-secret` the controller was given.
    pub router_cert_args: Vec<String>,
    /// The router process's probe and metrics port (Kubernetes mode, once started).
    pub router_metrics_port: Option<u16>,
}

impl Lab {
    /// Starts the service: a controller and a router for a fresh namespace (Kubernetes), or
    /// `jumpstarter serve` with a fresh data directory (standalone).
    pub async fn start(mode: Mode, prefix: &str) -> anyhow::Result<Lab> {
        Lab::start_with(mode, prefix, &[]).await
    }

    /// [`Lab::start`], with extra arguments for `jumpstarter serve` (standalone mode).
    pub async fn start_with(mode: Mode, prefix: &str, serve_args: &[&str]) -> anyhow::Result<Lab> {
        Lab::start_on(TestEnv::shared(), mode, prefix, serve_args).await
    }

    /// A Kubernetes-mode lab on the control plane `env` (e.g. a private one a test may
    /// stop), with extra arguments for `jumpstarter-controller run`.
    pub async fn start_kubernetes_on(
        env: &TestEnv,
        prefix: &str,
        controller_args: &[&str],
    ) -> anyhow::Result<Lab> {
        Lab::start_on(env, Mode::Kubernetes, prefix, controller_args).await
    }

    /// A Kubernetes-mode lab on `env` whose controller arguments are computed from the lab
    /// (its ports and paths are chosen before `controller_args` is called).
    pub async fn start_kubernetes_with(
        env: &TestEnv,
        prefix: &str,
        controller_args: impl FnOnce(&Lab) -> Vec<String>,
    ) -> anyhow::Result<Lab> {
        let mut lab = Lab::prepare(env, Mode::Kubernetes, prefix, &[]).await?;
        lab.serve_args = controller_args(&lab);
        lab.start_controller().await?;
        lab.start_router().await?;
        Ok(lab)
    }

    /// A Kubernetes-mode lab on `env` with its namespace made and nothing started: the
    /// test puts objects in place, sets `serve_args`, then calls
    /// [`Lab::start_controller`] and [`Lab::start_router`].
    pub async fn kubernetes_unstarted(env: &TestEnv, prefix: &str) -> anyhow::Result<Lab> {
        Lab::prepare(env, Mode::Kubernetes, prefix, &[]).await
    }

    async fn start_on(
        env: &TestEnv,
        mode: Mode,
        prefix: &str,
        serve_args: &[&str],
    ) -> anyhow::Result<Lab> {
        let mut lab = Lab::prepare(env, mode, prefix, serve_args).await?;
        lab.start_controller().await?;
        lab.start_router().await?;
        Ok(lab)
    }

    /// The lab's namespace, directory and ports, with no process started yet.
    async fn prepare(
        env: &TestEnv,
        mode: Mode,
        prefix: &str,
        serve_args: &[&str],
    ) -> anyhow::Result<Lab> {
        let namespace = match mode {
            Mode::Kubernetes => {
                env.install_crds(&jumpstarter_controller::crd::definitions())
                    .await?;
                env.namespace(prefix).await
            }
            Mode::Standalone => "default".to_owned(),
        };
        let dir = tempfile::Builder::new()
            .prefix(&format!("e2e-{prefix}-"))
            .tempdir()?;
        let lab = Lab {
            mode,
            namespace,
            dir,
            controller: None,
            router: None,
            grpc_port: free_port(),
            router_port: free_port(),
            probe_port: free_port(),
            kubeconfig: env.admin_kubeconfig.clone(),
            exporters: BTreeMap::new(),
            serve_args: serve_args.iter().map(|a| (*a).to_owned()).collect(),
            kube_env: (mode == Mode::Kubernetes).then(|| env.clone()),
            router_cert_args: Vec::new(),
            router_metrics_port: None,
        };
        Ok(lab)
    }

    /// A standalone lab whose service listens for controller gRPC and router traffic on
    /// `host` (TCP, and their QUIC twins on UDP at the same port numbers) instead of
    /// loopback, and advertises `host`; `/metrics` stays on 127.0.0.1. It starts no
    /// Kubernetes API server.
    pub async fn start_standalone_on(
        prefix: &str,
        host: std::net::IpAddr,
        serve_args: &[&str],
    ) -> anyhow::Result<Lab> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("e2e-{prefix}-"))
            .tempdir()?;
        let grpc_port = free_port();
        let router_port = free_port();
        let mut args = vec![
            "--grpc-listen".to_owned(),
            std::net::SocketAddr::new(host, grpc_port).to_string(),
            "--router-listen".to_owned(),
            std::net::SocketAddr::new(host, router_port).to_string(),
        ];
        args.extend(serve_args.iter().map(|a| (*a).to_owned()));
        let mut lab = Lab {
            mode: Mode::Standalone,
            namespace: "default".to_owned(),
            dir,
            controller: None,
            router: None,
            grpc_port,
            router_port,
            probe_port: free_port(),
            kubeconfig: PathBuf::new(),
            exporters: BTreeMap::new(),
            serve_args: args,
            kube_env: None,
            router_cert_args: Vec::new(),
            router_metrics_port: None,
        };
        lab.start_serve_as_given().await?;
        Ok(lab)
    }

    /// (Re)starts `jumpstarter serve` of a [`Lab::start_standalone_on`] lab: its data
    /// directory, `/metrics` on 127.0.0.1, and `serve_args` (which name the listeners).
    pub async fn start_serve_as_given(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(bin_path("jumpstarter"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{}", self.probe_port))
            .args(&self.serve_args);
        self.spawn_controller("jumpstarter serve", "serve", cmd)
            .await
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    pub fn router_endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.router_port)
    }

    /// The standalone service's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.path("data")
    }

    /// Starts (or restarts) the controller process (standalone: the whole service) and
    /// waits until it is ready.
    pub async fn start_controller(&mut self) -> anyhow::Result<()> {
        if self.mode == Mode::Standalone {
            return self.start_standalone().await;
        }
        let mut cmd = Command::new(bin_path("jumpstarter-controller"));
        cmd.arg("run")
            .arg("--namespace")
            .arg(&self.namespace)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--grpc-listen")
            .arg(self.grpc_endpoint())
            .arg("--grpc-endpoint")
            .arg(self.grpc_endpoint())
            .arg("--router")
            .arg(format!("default={}", self.router_endpoint()))
            .arg("--probe-listen")
            .arg(format!("127.0.0.1:{}", self.probe_port))
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{}", self.probe_port))
            .arg("--log-format")
            .arg("text")
            .args(&self.serve_args);
        self.spawn_controller("controller", "controller", cmd).await
    }

    /// Starts `cmd` as this lab's controller process (logging to `<log>-<n>.log`, a new
    /// file per start) and waits until its `/readyz` answers.
    async fn spawn_controller(
        &mut self,
        name: &str,
        log: &str,
        mut cmd: Command,
    ) -> anyhow::Result<()> {
        cmd.env("RUST_LOG", "info");
        let n = std::fs::read_dir(self.dir.path())
            .map(|d| d.count())
            .unwrap_or(0);
        let proc = Proc::spawn(name, cmd, self.path(&format!("{log}-{n}.log")))?;
        self.controller = Some(proc);
        let url = format!("http://127.0.0.1:{}/readyz", self.probe_port);
        let controller = self.controller.as_mut().expect("just set");
        wait_http_ok(&url, Duration::from_secs(60), controller).await
    }

    async fn start_standalone(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(bin_path("jumpstarter"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--grpc-listen")
            .arg(self.grpc_endpoint())
            .arg("--router-listen")
            .arg(self.router_endpoint())
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{}", self.probe_port))
            .args(&self.serve_args);
        self.spawn_controller("jumpstarter serve", "serve", cmd)
            .await
    }

    /// `jumpstarter admin <args>` against the lab (`--data-dir D` in standalone mode,
    /// `--kubeconfig K -n NS` in Kubernetes mode), asserting success; returns stdout.
    pub async fn admin(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = Command::new(bin_path("jumpstarter"));
        cmd.arg("admin").args(args);
        match self.mode {
            Mode::Standalone => cmd.arg("--data-dir").arg(self.data_dir()),
            Mode::Kubernetes => cmd
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .arg("--namespace")
                .arg(&self.namespace),
        };
        let out = cmd.output().await?;
        if !out.status.success() {
            bail!(
                "jumpstarter admin {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Reads an object the way the mode allows: the Kubernetes API, or `jumpstarter admin get -o json`.
    async fn object<K>(&self, kind: &str, name: &str) -> anyhow::Result<Option<K>>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
    {
        match self.mode {
            Mode::Kubernetes => {
                let api: Api<K> = Api::namespaced(self.kube().await, &self.namespace);
                Ok(api.get_opt(name).await?)
            }
            Mode::Standalone => {
                let all: serde_json::Value =
                    serde_json::from_str(&self.admin(&["get", kind, "-o", "json"]).await?)?;
                let items = match all.get("items") {
                    Some(items) => items.as_array().cloned().unwrap_or_default(),
                    None => vec![all],
                };
                for item in items {
                    if item["metadata"]["name"] == name {
                        return Ok(Some(serde_json::from_value(item)?));
                    }
                }
                Ok(None)
            }
        }
    }

    /// The Exporter object, if it exists.
    pub async fn exporter(&self, name: &str) -> anyhow::Result<Option<Exporter>> {
        self.object("exporters", name).await
    }

    /// The Lease object.
    pub async fn lease(&self, name: &str) -> anyhow::Result<Lease> {
        self.object("leases", name)
            .await?
            .with_context(|| format!("lease {name} does not exist"))
    }

    /// Lease `name` once `pred` holds of it (polled every 250 ms); panics with its status
    /// and the lab's logs when `what` is not reached within `timeout`.
    pub async fn wait_lease(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Lease) -> bool,
    ) -> Lease {
        let deadline = Instant::now() + timeout;
        loop {
            let lease = self.lease(name).await.expect("get lease");
            if pred(&lease) {
                return lease;
            }
            assert!(
                Instant::now() < deadline,
                "lease {name}: {what} not reached within {timeout:?}; status: {}\n{}",
                serde_json::to_string(&lease.status).unwrap_or_default(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Every Lease of the lab.
    pub async fn leases(&self) -> anyhow::Result<Vec<Lease>> {
        match self.mode {
            Mode::Kubernetes => {
                let api: Api<Lease> = Api::namespaced(self.kube().await, &self.namespace);
                Ok(api.list(&Default::default()).await?.items)
            }
            Mode::Standalone => {
                let all: serde_json::Value =
                    serde_json::from_str(&self.admin(&["get", "leases", "-o", "json"]).await?)?;
                let items = match all.get("items") {
                    Some(items) => items.as_array().cloned().unwrap_or_default(),
                    None => vec![all],
                };
                Ok(items
                    .into_iter()
                    .map(serde_json::from_value)
                    .collect::<Result<_, _>>()?)
            }
        }
    }

    /// Writes the router's certificate and keys (issued by the controller's CA) and starts it.
    /// Standalone mode runs its router in the service process: nothing to do.
    pub async fn start_router(&mut self) -> anyhow::Result<()> {
        if self.mode == Mode::Standalone {
            return Ok(());
        }
        let out = self.path("router");
        let status = Command::new(bin_path("jumpstarter-controller"))
            .arg("router-cert")
            .arg("--namespace")
            .arg(&self.namespace)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--endpoint")
            .arg(self.router_endpoint())
            .arg("--out-dir")
            .arg(&out)
            .args(&self.router_cert_args)
            .output()
            .await?;
        if !status.status.success() {
            bail!(
                "router-cert failed: {}",
                String::from_utf8_lossy(&status.stderr)
            );
        }
        let metrics_port = free_port();
        let mut cmd = Command::new(bin_path("jumpstarter-router"));
        cmd.arg("--listen")
            .arg(self.router_endpoint())
            .arg("--tls-cert")
            .arg(out.join("tls.crt"))
            .arg("--tls-key")
            .arg(out.join("tls.key"))
            .arg("--token-public-keys")
            .arg(out.join("router-token-keys.pem"))
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .arg("--log-format")
            .arg("text")
            .env("RUST_LOG", "info");
        let proc = Proc::spawn("router", cmd, self.path("router.log"))?;
        self.router = Some(proc);
        self.router_metrics_port = Some(metrics_port);
        let router = self.router.as_mut().expect("just set");
        wait_http_ok(
            &format!("http://127.0.0.1:{metrics_port}/readyz"),
            Duration::from_secs(30),
            router,
        )
        .await
    }

    /// `jmp create lease --client-config C <args> -o name`, asserting success; the lease
    /// name.
    pub async fn create_lease(&self, client: &str, args: &[&str]) -> String {
        let mut all = vec!["create", "lease", "--client-config", client];
        all.extend_from_slice(args);
        all.extend(["-o", "name"]);
        let out = self
            .jmp(&all, Duration::from_secs(60))
            .await
            .expect("jmp create lease");
        assert!(out.ok(), "jmp create lease failed: {out}\n{}", self.logs());
        out.lease_name()
    }

    /// `jmp delete leases --client-config C NAME`, asserting success.
    pub async fn delete_lease(&self, client: &str, name: &str) {
        let out = self
            .jmp(
                &["delete", "leases", "--client-config", client, name],
                Duration::from_secs(60),
            )
            .await
            .expect("jmp delete leases");
        assert!(out.ok(), "jmp delete leases {name}: {out}");
    }

    /// Runs a jumpstarter CLI command (`jmp`, `j`) from the venv with an isolated HOME.
    pub async fn jmp(&self, args: &[&str], timeout: Duration) -> anyhow::Result<Output> {
        let mut cmd = self.jmp_command(args);
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn()?;
        let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(out) => out?,
            Err(_) => bail!("`jmp {}` did not finish within {timeout:?}", args.join(" ")),
        };
        Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// A `jmp` command with the venv on PATH and HOME/config inside the lab directory.
    pub fn jmp_command(&self, args: &[&str]) -> Command {
        self.tool_command(venv().join("bin/jmp"), args)
    }

    /// `program args` in the environment of [`Lab::jmp_command`] (e.g. a wrapper that runs
    /// `jmp` itself).
    pub fn tool_command(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
        let venv = venv();
        let mut cmd = Command::new(program);
        cmd.args(args);
        let path = format!(
            "{}:{}",
            venv.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let home = self.path("home");
        let _ = std::fs::create_dir_all(&home);
        cmd.env("PATH", path)
            .env("HOME", &home)
            .env("JMP_CLIENT_CONFIG_HOME", home.join("jumpstarter"))
            .env("NONINTERACTIVE", "1")
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("JMP_LEASE")
            .current_dir(self.dir.path());
        cmd
    }

    /// `EDGE client --config C --write-config <lab>/client.edge.yaml -- jmp shell
    /// --client-config <that> <target> -- <cmd>`: a `jmp shell` whose controller calls and
    /// sessions go through a client edge (`edge` is the `jumpstarter-edge` binary); its
    /// output, whatever its exit status.
    pub async fn shell_behind_edge(
        &self,
        edge: &Path,
        client: &Path,
        target: &[&str],
        cmd: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<Output> {
        let client = client.to_string_lossy().into_owned();
        let edge_config = self.path("client.edge.yaml").to_string_lossy().into_owned();
        let jmp = venv().join("bin/jmp").to_string_lossy().into_owned();
        let mut args = vec![
            "client",
            "--config",
            &client,
            "--write-config",
            &edge_config,
            "--",
            &jmp,
            "shell",
            "--client-config",
            &edge_config,
        ];
        args.extend_from_slice(target);
        args.push("--");
        args.extend_from_slice(cmd);
        let mut command = self.tool_command(edge, &args);
        command
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = command.spawn().context("spawn the client edge")?;
        let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(out) => out?,
            Err(_) => bail!("`{}` did not finish within {timeout:?}", args.join(" ")),
        };
        Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// `jmp admin create client NAME` (standalone: `jumpstarter admin create client`);
    /// returns the path of the written ClientConfig.
    pub async fn create_client(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.path(&format!("{name}.client.yaml"));
        if self.mode == Mode::Standalone {
            self.admin(&["create", "client", name, "--out", &path.to_string_lossy()])
                .await?;
            return Ok(path);
        }
        let out = self
            .jmp(
                &[
                    "admin",
                    "create",
                    "client",
                    name,
                    "-n",
                    &self.namespace,
                    "--kubeconfig",
                    &self.kubeconfig.to_string_lossy(),
                    "--unsafe",
                    "--nointeractive",
                    "--out",
                    &path.to_string_lossy(),
                ],
                Duration::from_secs(60),
            )
            .await?;
        if !out.ok() {
            bail!("jmp admin create client {name} failed: {out}");
        }
        Ok(path)
    }

    /// `jmp admin create exporter NAME -l k=v...`, adds the driver tree and starts `jmp run`.
    pub async fn start_exporter(&mut self, name: &str, labels: &[&str]) -> anyhow::Result<PathBuf> {
        let path = self.create_exporter_config(name, labels).await?;
        self.run_exporter(name, &path)?;
        Ok(path)
    }

    /// Creates exporter NAME (as [`Lab::start_exporter`] does) and writes its configuration
    /// with the driver tree, without starting it; the configuration's path.
    pub async fn create_exporter_config(
        &self,
        name: &str,
        labels: &[&str],
    ) -> anyhow::Result<PathBuf> {
        let path = self.path(&format!("{name}.exporter.yaml"));
        if self.mode == Mode::Standalone {
            let out_path = path.to_string_lossy().into_owned();
            let mut args = vec!["create", "exporter", name];
            for l in labels {
                args.extend(["-l", l]);
            }
            args.extend(["--out", &out_path]);
            self.admin(&args).await?;
        } else {
            self.jmp_admin_create_exporter(name, labels, &path).await?;
        }
        Lab::add_drivers(&path)?;
        Ok(path)
    }

    async fn jmp_admin_create_exporter(
        &self,
        name: &str,
        labels: &[&str],
        path: &Path,
    ) -> anyhow::Result<()> {
        let mut args = vec!["admin", "create", "exporter", name, "-n", &self.namespace];
        for l in labels {
            args.extend(["-l", l]);
        }
        let kubeconfig = self.kubeconfig.to_string_lossy().into_owned();
        let out_path = path.to_string_lossy().into_owned();
        args.extend([
            "--kubeconfig",
            &kubeconfig,
            "--nointeractive",
            "--out",
            &out_path,
        ]);
        let out = self.jmp(&args, Duration::from_secs(60)).await?;
        if !out.ok() {
            bail!("jmp admin create exporter {name} failed: {out}");
        }
        Ok(())
    }

    /// The service's `/metrics` text (standalone: the whole service; Kubernetes: the
    /// controller).
    pub fn metrics(&self) -> anyhow::Result<String> {
        let out = std::process::Command::new("curl")
            .args(["-sf", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:{}/metrics", self.probe_port))
            .output()?;
        if !out.status.success() {
            bail!(
                "GET /metrics failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Writes the lab's driver tree into the `export:` of the exporter config at `path`.
    pub fn add_drivers(path: &Path) -> anyhow::Result<()> {
        let mut config: serde_norway::Value =
            serde_norway::from_str(&std::fs::read_to_string(path)?)?;
        let export: serde_norway::Value = serde_norway::from_str(
            r#"
power: {type: jumpstarter_driver_power.driver.MockPower}
echo: {type: jumpstarter_driver_network.driver.EchoNetwork}
sh:
  type: jumpstarter_driver_shell.driver.Shell
  config: {methods: {hello: "echo hello-from-exporter $1"}}
"#,
        )?;
        config["export"] = export;
        std::fs::write(path, serde_norway::to_string(&config)?)?;
        Ok(())
    }

    /// Starts `jmp run` for an existing exporter config.
    pub fn run_exporter(&mut self, name: &str, config: &Path) -> anyhow::Result<()> {
        let cmd = self.jmp_command(&["run", "--exporter-config", &config.to_string_lossy()]);
        let n = self.exporters.len();
        let proc = Proc::spawn(
            &format!("exporter {name}"),
            cmd,
            self.path(&format!("exporter-{name}-{n}.log")),
        )?;
        self.exporters.insert(name.to_owned(), proc);
        Ok(())
    }

    pub async fn kube(&self) -> kube::Client {
        match &self.kube_env {
            Some(env) => env.admin_client().await,
            None => TestEnv::shared().admin_client().await,
        }
    }

    /// Waits until the Exporter CR has condition `type` with `status`.
    pub async fn wait_exporter_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        timeout: Duration,
    ) -> anyhow::Result<Exporter> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.exporter(name).await? {
                let hit = e
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == status));
                if hit {
                    return Ok(e);
                }
                if Instant::now() > deadline {
                    bail!(
                        "exporter {name}: condition {type_}={status} not reached within {timeout:?}; status: {}",
                        serde_json::to_string(&e.status).unwrap_or_default()
                    );
                }
            } else if Instant::now() > deadline {
                bail!("exporter {name} does not exist");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The whole log of the controller process (`jumpstarter serve` in standalone mode).
    pub fn controller_output(&self) -> String {
        self.controller
            .as_ref()
            .map(Proc::output)
            .unwrap_or_default()
    }

    /// Logs of all processes, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for p in self
            .controller
            .iter()
            .chain(self.router.iter())
            .chain(self.exporters.values())
        {
            let out = p.output();
            let tail: Vec<&str> = out.lines().rev().take(40).collect();
            s.push_str(&format!(
                "\n===== {} ({}) last lines:\n",
                p.name,
                p.log.display()
            ));
            for l in tail.iter().rev() {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }
}

/// A `j`-side script (run inside `jmp shell`): round trips of 16 KiB messages through the
/// exporter's `echo` driver for `argv[1]` seconds, every answer compared with what was
/// sent. Prints `streaming` once the first round trip is back, and exits 0 only when every
/// message came back intact.
pub const SESSION_SCRIPT: &str = r#"
import hashlib, sys, time
from jumpstarter.utils.env import env
seconds = float(sys.argv[1])
total = messages = 0
with env() as client:
    with client.echo.stream() as conn:
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            data = hashlib.sha256(str(messages).encode()).digest() * 512
            conn.send(data)
            got = bytearray()
            while len(got) < len(data):
                got.extend(conn.receive())
            if bytes(got) != data:
                print("corrupted message", messages, flush=True)
                sys.exit(3)
            messages += 1
            total += len(data)
            if messages == 1:
                print("streaming", flush=True)
            time.sleep(0.05)
print("intact messages", messages, "bytes", total, flush=True)
"#;

/// Waits until `proc`'s output contains `marker`; panics when it exits first or after
/// `timeout`, with `context` (e.g. the other processes' logs) in the message.
pub async fn wait_output(proc: &mut Proc, marker: &str, timeout: Duration, context: &str) {
    let deadline = Instant::now() + timeout;
    while !proc.output().contains(marker) {
        assert!(
            proc.running(),
            "{} exited before printing {marker:?}:\n{}\n{}",
            proc.name,
            proc.output(),
            context
        );
        assert!(
            Instant::now() < deadline,
            "{} did not print {marker:?} within {timeout:?}:\n{}\n{}",
            proc.name,
            proc.output(),
            context
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls `url` until it answers 200, failing early when `proc` exits.
pub async fn wait_http_ok(url: &str, timeout: Duration, proc: &mut Proc) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let ok = std::process::Command::new("curl")
            .args(["-sf", "--max-time", "1", "-o", "/dev/null", url])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return Ok(());
        }
        if !proc.running() {
            bail!(
                "{} exited before {url} was ready:\n{}",
                proc.name,
                proc.output()
            );
        }
        if Instant::now() > deadline {
            bail!("{url} not ready within {timeout:?}:\n{}", proc.output());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a raw gRPC caller needs from a 0.9.0 `ClientConfig` or `ExporterConfig`, read the
/// way the Python tools read it (`tls.ca` is base64 of PEM).
#[derive(Debug, Clone)]
pub struct ConfigCredentials {
    pub endpoint: String,
    pub ca_pem: Vec<u8>,
    pub token: String,
    pub namespace: String,
    pub name: String,
}

impl ConfigCredentials {
    /// Reads the configuration file at `path`.
    pub fn read(path: &Path) -> anyhow::Result<ConfigCredentials> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        ConfigCredentials::from_yaml(&serde_norway::from_str(&text)?)
    }

    /// From a parsed configuration; every field must be a string.
    pub fn from_yaml(config: &serde_norway::Value) -> anyhow::Result<ConfigCredentials> {
        use base64::Engine;
        let s = |v: &serde_norway::Value, field: &str| {
            v.as_str()
                .map(str::to_owned)
                .with_context(|| format!("{field} is not a string"))
        };
        let ca_pem = base64::engine::general_purpose::STANDARD
            .decode(s(&config["tls"]["ca"], "tls.ca")?)
            .context("tls.ca is not base64")?;
        Ok(ConfigCredentials {
            endpoint: s(&config["endpoint"], "endpoint")?,
            ca_pem,
            token: s(&config["token"], "token")?,
            namespace: s(&config["metadata"]["namespace"], "metadata.namespace")?,
            name: s(&config["metadata"]["name"], "metadata.name")?,
        })
    }

    /// A TLS endpoint for `endpoint` (`host:port`) that trusts the configuration's CA and
    /// checks the host name, with a 5 s connect timeout.
    pub fn tls_endpoint(&self, endpoint: &str) -> anyhow::Result<tonic::transport::Endpoint> {
        let host = endpoint
            .rsplit_once(':')
            .map(|(h, _)| h.to_owned())
            .with_context(|| format!("{endpoint} is not host:port"))?;
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .domain_name(host);
        Ok(
            tonic::transport::Endpoint::from_shared(format!("https://{endpoint}"))?
                .tls_config(tls)?
                .connect_timeout(Duration::from_secs(5)),
        )
    }

    /// A request with these credentials as 0.9.0 sends them; `kind` is `Client` or
    /// `Exporter`.
    pub fn request<T>(&self, kind: &str, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        let md = req.metadata_mut();
        let value = |v: &str| v.parse().expect("ASCII metadata");
        md.insert("authorization", value(&format!("Bearer {}", self.token)));
        md.insert("jumpstarter-kind", value(kind));
        md.insert("jumpstarter-namespace", value(&self.namespace));
        md.insert("jumpstarter-name", value(&self.name));
        req
    }
}

/// A gRPC channel and credentials built from a 0.9.0 ClientConfig file, for raw calls.
#[derive(Debug, Clone)]
pub struct RawClient {
    pub channel: tonic::transport::Channel,
    pub credentials: ConfigCredentials,
}

impl RawClient {
    pub async fn from_config(path: &Path) -> anyhow::Result<RawClient> {
        let credentials = ConfigCredentials::read(path)?;
        let channel = credentials
            .tls_endpoint(&credentials.endpoint)?
            .connect()
            .await?;
        Ok(RawClient {
            channel,
            credentials,
        })
    }

    /// A request with this client's credentials as 0.9.0 sends them.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        self.credentials.request("Client", message)
    }
}

/// The stdout of a finished command, which must have succeeded (else a panic naming `what`
/// with its status and output).
pub fn stdout_of(what: &str, output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

/// A `j`-side Python script (run inside `jmp shell`): 64 MiB of random data through the
/// exporter's `echo` driver in 64 KiB chunks; prints both SHA-256 digests and exits 0 only
/// when every byte came back intact.
pub const ECHO_SCRIPT: &str = r#"
import hashlib, os, sys
from jumpstarter.utils.env import env
total = 64 * 1024 * 1024
chunk = 64 * 1024
data = os.urandom(total)
received = bytearray()
with env() as client:
    with client.echo.stream() as conn:
        for off in range(0, total, chunk):
            part = data[off:off + chunk]
            conn.send(part)
            want = off + len(part)
            while len(received) < want:
                received.extend(conn.receive())
sent, got = hashlib.sha256(data).hexdigest(), hashlib.sha256(bytes(received)).hexdigest()
print("sent", sent, "received", got, "bytes", len(received))
sys.exit(0 if sent == got and len(received) == total else 3)
"#;

/// The sum of the samples of `metric` (a counter family) in the metrics text.
pub fn metric_sum(metrics: &str, metric: &str, label: Option<&str>) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.split(['{', ' '])
                .next()
                .is_some_and(|name| name == metric)
        })
        .filter(|line| label.is_none_or(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs each scenario (an `async fn(Mode)` of the calling module) once per mode, one test at
/// a time: the calling module provides `serial()`, the guard that keeps them apart.
#[macro_export]
macro_rules! in_both_modes {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn kubernetes() {
                    let _serial = super::serial();
                    super::$scenario($crate::Mode::Kubernetes).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn standalone() {
                    let _serial = super::serial();
                    super::$scenario($crate::Mode::Standalone).await;
                }
            }
        )*
    };
}
