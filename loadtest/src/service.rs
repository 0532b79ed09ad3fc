//! The controller under test, and the gRPC calls clients and simulated exporters make:
//! a `jumpstarter serve` process (controller and h2 router, state in a scratch data
//! directory) with its admin socket, or a `jumpstarter-controller` process on a real
//! Kubernetes API server, administered through that API like `jmp admin` does.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use jumpstarter_controller::admin::{Admin, Manifest};
use jumpstarter_controller::crd::vocabulary::lease_condition::{INVALID, READY, UNSATISFIABLE};
use jumpstarter_controller::store::kube::KubeStore;
use jumpstarter_proto::jumpstarter::client::v1 as client_pb;
use jumpstarter_proto::jumpstarter::client::v1::client_service_client::ClientServiceClient;
use jumpstarter_proto::jumpstarter::v1 as pb;
use jumpstarter_proto::jumpstarter::v1::controller_service_client::ControllerServiceClient;
use serde::Deserialize;
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tonic::Request;
use tonic::transport::Channel;

use crate::kube::KubeTarget;
use crate::route::h2_channel;
use crate::router_process::{free_port, spawn_logged};

/// How long the service may take to start.
const START_WAIT: Duration = Duration::from_secs(60);
/// The namespace the service serves.
pub(crate) const NAMESPACE: &str = "default";

/// How clients and exporters are created.
#[derive(Debug)]
enum AdminPath {
    /// The admin socket of `jumpstarter serve`.
    Socket(PathBuf),
    /// The Kubernetes API, with the controller's admin library (what `jmp admin` does).
    Kube(Admin<KubeStore>),
}

/// A running controller (`jumpstarter serve`, or `jumpstarter-controller` on Kubernetes);
/// killed when dropped.
#[derive(Debug)]
pub(crate) struct Service {
    child: Child,
    admin: AdminPath,
    /// The namespace it serves.
    namespace: String,
    pub(crate) grpc: SocketAddr,
    /// Probes and metrics.
    http: SocketAddr,
    pub(crate) ca_pem: String,
    /// How to start the process again ([`Service::restart`]).
    launch: Option<Launch>,
}

/// The command line of a `jumpstarter serve` process and where its output goes.
#[derive(Debug, Clone)]
struct Launch {
    binary: PathBuf,
    args: Vec<std::ffi::OsString>,
    /// Log file, appended to by every start.
    log: PathBuf,
    /// Names the process (and its log) in errors.
    name: String,
}

impl Launch {
    fn spawn(&self) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        spawn_logged(Command::new(&self.binary).args(&self.args), log)
            .with_context(|| format!("starting {} serve", self.binary.display()))
    }
}

/// Who calls the controller: a client or an exporter and its token.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) kind: &'static str,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) token: String,
}

/// The parts of a 0.9.0 client or exporter configuration the load test needs.
#[derive(Debug, Deserialize)]
struct Config {
    metadata: ConfigMetadata,
    tls: ConfigTls,
    token: String,
}

#[derive(Debug, Deserialize)]
struct ConfigMetadata {
    name: String,
}

#[derive(Debug, Deserialize)]
struct ConfigTls {
    ca: String,
}

impl Service {
    /// Starts `binary serve` on a fresh data directory under `work`.
    pub(crate) async fn start(binary: &Path, work: &Path, name: &str) -> anyhow::Result<Service> {
        let data_dir = work.join(name);
        std::fs::create_dir_all(&data_dir)?;
        let grpc: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let router: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let http: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let launch = Launch {
            binary: binary.to_owned(),
            args: vec![
                "serve".into(),
                "--data-dir".into(),
                data_dir.clone().into(),
                "--grpc-listen".into(),
                grpc.to_string().into(),
                "--router-listen".into(),
                router.to_string().into(),
                "--http-listen".into(),
                http.to_string().into(),
                "--no-quic".into(),
            ],
            log: work.join(format!("{name}.log")),
            name: name.to_owned(),
        };
        let child = launch.spawn()?;
        let mut service = Service {
            child,
            admin: AdminPath::Socket(data_dir.join("admin.sock")),
            namespace: NAMESPACE.to_owned(),
            grpc,
            http,
            ca_pem: String::new(),
            launch: Some(launch),
        };
        service.wait_started("jumpstarter serve", name).await?;
        Ok(service)
    }

    /// Stops a `jumpstarter serve` started by [`Service::start`] (SIGKILL, a crash, or
    /// SIGTERM, a graceful stop), starts it again with the same data directory and ports,
    /// and waits until it takes admin calls.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "only the storm fault test restarts the service")
    )]
    pub(crate) async fn restart(&mut self, kill: bool) -> anyhow::Result<()> {
        let launch = self
            .launch
            .clone()
            .context("only a `jumpstarter serve` started here can be restarted")?;
        if kill {
            self.child.start_kill().context("killing the service")?;
        } else if let Some(pid) = self.child.id() {
            use nix::sys::signal::{Signal, kill as send};
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).context("the service's PID")?);
            send(pid, Signal::SIGTERM).with_context(|| format!("SIGTERM to {pid}"))?;
        }
        tokio::time::timeout(START_WAIT, self.child.wait())
            .await
            .context("the service did not exit")?
            .context("waiting for the service")?;
        self.child = launch.spawn()?;
        self.wait_started("jumpstarter serve", &launch.name).await
    }

    /// The admin socket of `jumpstarter serve` (none on Kubernetes).
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "only the storm fault test lists leases")
    )]
    pub(crate) fn admin_socket(&self) -> Option<&Path> {
        match &self.admin {
            AdminPath::Socket(socket) => Some(socket),
            AdminPath::Kube(_) => None,
        }
    }

    /// Starts `binary run` (the Kubernetes controller) for `namespace` of the API server
    /// of `kube`, with a router endpoint nobody dials; waits until it is ready. With
    /// `replica`, it is one of several replicas: `--leader-elect` with that identity, its
    /// gRPC address as `--peer-endpoint` (its log is `<namespace>-<replica>.log`).
    pub(crate) async fn start_kube(
        binary: &Path,
        work: &Path,
        kube: &KubeTarget,
        namespace: &str,
        replica: Option<&str>,
    ) -> anyhow::Result<Service> {
        let grpc: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let router: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let http: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let name = match replica {
            Some(identity) => format!("{namespace}-{identity}"),
            None => namespace.to_owned(),
        };
        let log = std::fs::File::create(work.join(format!("{name}.log")))?;
        let mut command = Command::new(binary);
        command
            .arg("run")
            .args(["--namespace", namespace])
            .arg("--kubeconfig")
            .arg(&kube.kubeconfig)
            .args(["--grpc-listen", &grpc.to_string()])
            .args(["--grpc-endpoint", &grpc.to_string()])
            .args(["--router", &format!("default={router}")])
            .args(["--probe-listen", &http.to_string()])
            .args(["--metrics-listen", &http.to_string()])
            .args(["--log-format", "text"]);
        if let Some(identity) = replica {
            command
                .args(["--leader-elect", "--identity", identity])
                .args(["--peer-endpoint", &grpc.to_string()]);
        }
        let child = spawn_logged(&mut command, log)
            .with_context(|| format!("starting {} run", binary.display()))?;
        let admin = Admin::new(KubeStore::new(kube.client.clone()), namespace)
            .with_credential_wait(Duration::from_secs(120));
        let mut service = Service {
            child,
            admin: AdminPath::Kube(admin),
            namespace: namespace.to_owned(),
            grpc,
            http,
            ca_pem: String::new(),
            launch: None,
        };
        service
            .wait_started("jumpstarter-controller", &name)
            .await?;
        Ok(service)
    }

    /// Waits until the process takes admin calls: its admin socket accepts connections
    /// (`jumpstarter serve`), or its `/readyz` answers 200 (Kubernetes). Fails when the
    /// process exits first or after [`START_WAIT`]; `log` names its log file.
    async fn wait_started(&mut self, what: &str, log: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_WAIT;
        loop {
            let started = match &self.admin {
                AdminPath::Socket(socket) => UnixStream::connect(socket).await.is_ok(),
                AdminPath::Kube(_) => self.http_get("/readyz").await.is_ok_and(|answer| {
                    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
                }),
            };
            if started {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{what} exited with {status}; see {log}.log");
            }
            if Instant::now() > deadline {
                bail!("{what} did not start within {START_WAIT:?}; see {log}.log");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET path` on the probes and metrics port: the whole answer, headers included.
    async fn http_get(&self, path: &str) -> anyhow::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
        crate::pipe::bounded("a request to the probes and metrics port", async {
            let mut tcp = tokio::net::TcpStream::connect(self.http).await?;
            tcp.write_all(request.as_bytes()).await?;
            let mut text = String::new();
            tcp.read_to_string(&mut text).await?;
            Ok(text)
        })
        .await
    }

    /// The process id.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The reconcile loop's passes so far and the seconds they took in all, from the
    /// service's Prometheus metrics.
    pub(crate) async fn reconcile_passes(&self) -> anyhow::Result<(f64, f64)> {
        let text = self.http_get("/metrics").await?;
        let value = |suffix: &str| {
            text.lines()
                .find(|line| {
                    line.split_whitespace()
                        .next()
                        .is_some_and(|n| n.ends_with(suffix))
                })
                .and_then(|line| line.split_whitespace().nth(1)?.parse::<f64>().ok())
                .with_context(|| format!("no metric *{suffix} in the service's metrics"))
        };
        Ok((
            value("reconcile_pass_duration_seconds_count")?,
            value("reconcile_pass_duration_seconds_sum")?,
        ))
    }

    /// Creates a client (`kind` "clients") or an exporter ("exporters") with `labels`
    /// through the admin socket; returns its identity.
    /// The first creation also learns the service's CA.
    pub(crate) async fn create(
        &mut self,
        kind: &str,
        name: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<Identity> {
        let (identity, ca) = self.admin_create(kind, name, labels).await?;
        if self.ca_pem.is_empty() {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(&ca)
                .context("tls.ca is not base64")?;
            self.ca_pem = String::from_utf8(pem).context("tls.ca is not PEM")?;
        }
        Ok(identity)
    }

    /// Creates an exporter with `labels`; returns its identity.
    pub(crate) async fn create_exporter(
        &self,
        name: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<Identity> {
        Ok(self.admin_create("exporters", name, labels).await?.0)
    }

    async fn admin_create(
        &self,
        kind: &str,
        name: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<(Identity, String)> {
        let (kind, name, token, ca) = match &self.admin {
            AdminPath::Socket(socket) => {
                let labels: HashMap<&str, &str> = labels.iter().copied().collect();
                let body =
                    serde_json::to_vec(&serde_json::json!({ "name": name, "labels": labels }))?;
                let answer = admin_call(socket, &format!("/v1/{kind}"), body).await?;
                let config: Config =
                    serde_json::from_slice(&answer).context("reading the configuration")?;
                let kind = if kind == "clients" {
                    "Client"
                } else {
                    "Exporter"
                };
                (kind, config.metadata.name, config.token, config.tls.ca)
            }
            AdminPath::Kube(admin) => {
                let labels: BTreeMap<String, String> = labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
                if kind == "clients" {
                    let config = admin.create_client(name, &labels).await?;
                    ("Client", config.metadata.name, config.token, config.tls.ca)
                } else {
                    let config = admin.create_exporter(name, &labels).await?;
                    (
                        "Exporter",
                        config.metadata.name,
                        config.token,
                        config.tls.ca,
                    )
                }
            }
        };
        let identity = Identity {
            kind,
            namespace: self.namespace.clone(),
            name,
            token,
        };
        Ok((identity, ca))
    }

    /// Applies the YAML `manifest` as `jumpstarter admin apply -f` does.
    pub(crate) async fn apply(&self, manifest: &str) -> anyhow::Result<()> {
        match &self.admin {
            AdminPath::Socket(socket) => {
                let body = serde_json::to_vec(&serde_json::json!({ "manifest": manifest }))?;
                admin_call(socket, "/v1/apply", body).await?;
            }
            AdminPath::Kube(admin) => {
                let manifest = Manifest::parse(manifest, &self.namespace, true)?;
                admin.apply(&manifest).await?;
            }
        }
        Ok(())
    }

    /// A TLS channel to the controller.
    pub(crate) async fn channel(&self) -> anyhow::Result<Channel> {
        h2_channel(self.grpc, &self.ca_pem, "127.0.0.1").await
    }

    /// A TLS channel to a router endpoint `host:port` the controller handed out.
    pub(crate) async fn router_channel(&self, endpoint: &str) -> anyhow::Result<Channel> {
        let addr: SocketAddr = endpoint
            .parse()
            .with_context(|| format!("router endpoint {endpoint:?}"))?;
        h2_channel(addr, &self.ca_pem, &addr.ip().to_string()).await
    }
}

/// `message` with the 0.9.0 call metadata of `who`.
pub(crate) fn authed<T>(who: &Identity, message: T) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert("authorization", format!("Bearer {}", who.token).parse()?);
    metadata.insert("jumpstarter-kind", who.kind.parse()?);
    metadata.insert("jumpstarter-namespace", who.namespace.parse()?);
    metadata.insert("jumpstarter-name", who.name.parse()?);
    Ok(request)
}

/// Registers exporter `who` with one device and reports it `status`, as a 0.9.0 exporter
/// does at start (without the Status stream; the report sets `lastSeen`).
pub(crate) async fn bring_online(
    channel: &Channel,
    who: &Identity,
    status: pb::ExporterStatus,
) -> anyhow::Result<()> {
    let mut controller = ControllerServiceClient::new(channel.clone());
    let report = pb::DriverInstanceReport {
        uuid: format!("device-{}", who.name),
        ..Default::default()
    };
    controller
        .register(authed(
            who,
            pb::RegisterRequest {
                labels: HashMap::new(),
                reports: vec![report],
            },
        )?)
        .await
        .context("Register")?;
    report_status(channel, who, status).await
}

/// `ReportStatus` of exporter `who`.
pub(crate) async fn report_status(
    channel: &Channel,
    who: &Identity,
    status: pb::ExporterStatus,
) -> anyhow::Result<()> {
    ControllerServiceClient::new(channel.clone())
        .report_status(authed(
            who,
            pb::ReportStatusRequest {
                status: status as i32,
                message: Some("load test".to_owned()),
                release_lease: None,
            },
        )?)
        .await
        .context("ReportStatus")?;
    Ok(())
}

/// Creates a lease on any exporter matching `selector`; returns its full name.
pub(crate) async fn create_lease(
    channel: &Channel,
    client: &Identity,
    selector: &str,
) -> anyhow::Result<String> {
    create_lease_for(channel, client, selector, Duration::from_secs(1800)).await
}

/// Creates a lease of `duration` on any exporter matching `selector`; returns its full
/// name.
pub(crate) async fn create_lease_for(
    channel: &Channel,
    client: &Identity,
    selector: &str,
    duration: Duration,
) -> anyhow::Result<String> {
    let lease = client_pb::Lease {
        selector: selector.to_owned(),
        duration: Some(prost_types::Duration {
            seconds: i64::try_from(duration.as_secs()).context("lease duration")?,
            nanos: 0,
        }),
        ..Default::default()
    };
    let created = ClientServiceClient::new(channel.clone())
        .create_lease(authed(
            client,
            client_pb::CreateLeaseRequest {
                parent: format!("namespaces/{}", client.namespace),
                lease_id: String::new(),
                lease: Some(lease),
            },
        )?)
        .await
        .context("CreateLease")?;
    Ok(created.into_inner().name)
}

/// Whether lease `name` has `Ready=True`; errors if it ended without.
pub(crate) async fn lease_ready(
    channel: &Channel,
    client: &Identity,
    name: &str,
) -> anyhow::Result<bool> {
    let lease = ClientServiceClient::new(channel.clone())
        .get_lease(authed(
            client,
            client_pb::GetLeaseRequest {
                name: name.to_owned(),
            },
        )?)
        .await
        .context("GetLease")?
        .into_inner();
    let condition = |kind: &str| {
        lease
            .conditions
            .iter()
            .find(|c| c.r#type.as_deref() == Some(kind))
            .and_then(|c| c.status.clone())
    };
    if condition(READY).as_deref() == Some("True") {
        return Ok(true);
    }
    for failed in [UNSATISFIABLE, INVALID] {
        if condition(failed).as_deref() == Some("True") {
            bail!("lease {name} is {failed}");
        }
    }
    Ok(false)
}

/// Polls lease `name` every `interval` until it is ready (at most `limit`).
pub(crate) async fn wait_ready(
    channel: &Channel,
    client: &Identity,
    name: &str,
    interval: Duration,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !lease_ready(channel, client, name).await? {
        if Instant::now() > deadline {
            bail!("lease {name} not ready within {limit:?}");
        }
        tokio::time::sleep(interval).await;
    }
    Ok(())
}

/// Releases lease `name`.
pub(crate) async fn delete_lease(
    channel: &Channel,
    client: &Identity,
    name: &str,
) -> anyhow::Result<()> {
    ClientServiceClient::new(channel.clone())
        .delete_lease(authed(
            client,
            client_pb::DeleteLeaseRequest {
                name: name.to_owned(),
            },
        )?)
        .await
        .context("DeleteLease")?;
    Ok(())
}

/// Exporters of the namespace of `client` (listed over gRPC, 1,000 a page, at most
/// `pages` pages) and how many of them are online, as 0.9.0's `jmp get exporters` sees them.
pub(crate) async fn online_exporters(
    channel: &Channel,
    client: &Identity,
    pages: usize,
) -> anyhow::Result<(usize, usize)> {
    let (mut listed, mut online) = (0, 0);
    let mut page_token = String::new();
    for _ in 0..pages {
        let page = ClientServiceClient::new(channel.clone())
            .list_exporters(authed(
                client,
                client_pb::ListExportersRequest {
                    parent: format!("namespaces/{}", client.namespace),
                    page_size: 1000,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
            )?)
            .await
            .context("ListExporters")?
            .into_inner();
        listed += page.exporters.len();
        online += page.exporters.iter().filter(|e| e.online).count();
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok((listed, online))
}

/// The short name of lease `namespaces/<ns>/leases/<name>`.
pub(crate) fn short_name(full: &str) -> &str {
    full.rsplit('/').next().unwrap_or(full)
}

/// Every lease of the namespace of the `jumpstarter serve` whose admin socket is
/// `socket`, bounded by the pipe's stall limit.
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "only the storm fault test lists leases")
)]
pub(crate) async fn list_leases(
    socket: &Path,
) -> anyhow::Result<Vec<jumpstarter_controller::crd::Lease>> {
    let answer = crate::pipe::bounded(
        "listing leases",
        admin_request(socket, hyper::Method::GET, "/v1/leases", Vec::new()),
    )
    .await?;
    let mut list: serde_json::Value =
        serde_json::from_slice(&answer).context("reading the lease list")?;
    serde_json::from_value(list["items"].take()).context("reading the leases")
}

/// One POST to the admin API on `socket`; the answer's body.
async fn admin_call(socket: &Path, path: &str, body: Vec<u8>) -> anyhow::Result<Bytes> {
    admin_request(socket, hyper::Method::POST, path, body).await
}

/// One request to the admin API on `socket`; the answer's body.
async fn admin_request(
    socket: &Path,
    method: hyper::Method,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<Bytes> {
    let stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(connection);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "localhost")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    driver.abort();
    if !status.is_success() {
        bail!(
            "admin API {path}: {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok(bytes)
}
