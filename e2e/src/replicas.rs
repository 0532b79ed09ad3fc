//! Several controller replicas of one lab (Kubernetes mode): the lab's own controller plus
//! extra `jumpstarter-controller run --leader-elect` processes on the same namespace, each
//! with its own gRPC port, and a TCP [`Balancer`] in front of them the way a Service
//! spreads connections over pods.
//!
//! Configurations of the real 0.9.0 tools are pointed at one replica with
//! [`point_config_at`], so a test decides which replica each client and exporter reaches.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::coordination::v1::Lease as CoordinationLease;
use kube::api::Api;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::task::JoinHandle;

use crate::{Lab, Proc, bin_path, free_port, wait_http_ok};

/// Name of the controllers' leader-election Lease.
pub const LEADER_LEASE: &str = "jumpstarter-controller-leader";

/// One extra controller process of a lab.
#[derive(Debug)]
pub struct Replica {
    pub identity: String,
    pub grpc_port: u16,
    pub probe_port: u16,
    pub proc: Proc,
}

impl Replica {
    /// `127.0.0.1:<grpc port>`.
    pub fn grpc_endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// Its `/metrics` text.
    pub fn metrics(&self) -> anyhow::Result<String> {
        http_get(&format!("http://127.0.0.1:{}/metrics", self.probe_port))
    }
}

/// The arguments that make the lab's own controller one replica among several:
/// leader election under `identity`, and the endpoint where its peers reach it.
pub fn replica_args(identity: &str, grpc_port: u16) -> Vec<String> {
    vec![
        "--leader-elect".to_owned(),
        "--identity".to_owned(),
        identity.to_owned(),
        "--peer-endpoint".to_owned(),
        format!("127.0.0.1:{grpc_port}"),
    ]
}

/// Starts another controller replica for `lab`'s namespace (same router, same API server)
/// and waits until it is ready.
pub async fn start_replica(lab: &Lab, identity: &str) -> anyhow::Result<Replica> {
    let grpc_port = free_port();
    let probe_port = free_port();
    let endpoint = format!("127.0.0.1:{grpc_port}");
    let mut cmd = Command::new(bin_path("jumpstarter-controller"));
    cmd.arg("run")
        .arg("--namespace")
        .arg(&lab.namespace)
        .arg("--kubeconfig")
        .arg(&lab.kubeconfig)
        .arg("--grpc-listen")
        .arg(&endpoint)
        .arg("--grpc-endpoint")
        .arg(&endpoint)
        .arg("--router")
        .arg(format!("default={}", lab.router_endpoint()))
        .arg("--probe-listen")
        .arg(format!("127.0.0.1:{probe_port}"))
        .arg("--metrics-listen")
        .arg(format!("127.0.0.1:{probe_port}"))
        .arg("--log-format")
        .arg("text")
        .args(replica_args(identity, grpc_port))
        .env("RUST_LOG", "info");
    let mut proc = Proc::spawn(
        &format!("controller {identity}"),
        cmd,
        lab.path(&format!("controller-{identity}.log")),
    )?;
    let url = format!("http://127.0.0.1:{probe_port}/readyz");
    wait_http_ok(&url, Duration::from_secs(60), &mut proc).await?;
    Ok(Replica {
        identity: identity.to_owned(),
        grpc_port,
        probe_port,
        proc,
    })
}

/// The identity holding the leader-election Lease of `lab`'s namespace, if any.
pub async fn leader(lab: &Lab) -> anyhow::Result<Option<String>> {
    let api: Api<CoordinationLease> = Api::namespaced(lab.kube().await, &lab.namespace);
    Ok(api
        .get_opt(LEADER_LEASE)
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity))
}

/// Waits until `identity` holds the leader-election Lease.
pub async fn wait_leader(lab: &Lab, identity: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let holder = leader(lab).await?;
        if holder.as_deref() == Some(identity) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{identity} is not the leader after {timeout:?} (holder: {holder:?})");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Writes a copy of the 0.9.0 configuration at `config` whose `endpoint` is `endpoint`;
/// returns the copy's path (`<stem>.<tag>.yaml` beside it).
pub fn point_config_at(config: &Path, endpoint: &str, tag: &str) -> anyhow::Result<PathBuf> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("read {}", config.display()))?;
    let mut value: serde_norway::Value = serde_norway::from_str(&text)?;
    value["endpoint"] = serde_norway::Value::String(endpoint.to_owned());
    let stem = config
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".yaml"))
        .context("configuration file name ends in .yaml")?;
    let path = config.with_file_name(format!("{stem}.{tag}.yaml"));
    std::fs::write(&path, serde_norway::to_string(&value)?)?;
    Ok(path)
}

/// A TCP forwarder: each accepted connection goes to the first backend, in order, that
/// accepts a connection (1 s connect timeout each), like a Service whose endpoints are the
/// live pods. A backend that died refuses; its clients reconnect and reach the next.
#[derive(Debug)]
pub struct Balancer {
    pub addr: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    task: JoinHandle<()>,
}

impl Balancer {
    pub async fn start(backends: Vec<SocketAddr>) -> anyhow::Result<Balancer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let backends = Arc::new(Mutex::new(backends));
        let shared = Arc::clone(&backends);
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                let order = shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
                tokio::spawn(async move {
                    for backend in order {
                        let connect = TcpStream::connect(backend);
                        if let Ok(Ok(mut outbound)) =
                            tokio::time::timeout(Duration::from_secs(1), connect).await
                        {
                            let mut inbound = inbound;
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Ok(Balancer {
            addr,
            backends,
            task,
        })
    }

    /// `127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Replaces the backends new connections are sent to.
    pub fn set_backends(&self, backends: Vec<SocketAddr>) {
        *self.backends.lock().unwrap_or_else(|e| e.into_inner()) = backends;
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn http_get(url: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new("curl")
        .args(["-sf", "--max-time", "5", url])
        .output()?;
    if !out.status.success() {
        bail!("GET {url} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
