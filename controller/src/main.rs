//! `jumpstarter-controller`: the Jumpstarter controller in Kubernetes mode.
//!
//! - `run`: serves `ControllerService` + `ClientService` (+ health) on one TLS port, HTTP
//!   probes and metrics, and runs the reconcile loop (under leader election with
//!   `--leader-elect`). SIGTERM/SIGINT stop it gracefully: streams end, the reconcile loop
//!   stops and the election Lease is released.
//!   With `--router-cert-secrets` it also keeps one certificate Secret per `--router`
//!   (`<name>-tls`) for routers running as pods; with `--ca-secret` the CA comes from a
//!   `kubernetes.io/tls` Secret (e.g. issued by cert-manager) instead of being generated.
//! - `router-cert`: writes a router's serving certificate, the CA and the router-token
//!   public key into a directory, so a router can be started next to the controller.
//!
//! Every flag can also be set through its `JUMPSTARTER_*` environment variable. This is the
//! only place that reads the environment; everything below gets plain values. Logging,
//! signals, the kube client and the key file writer come from `jumpstarter_shell`; the
//! credential-lifetime and TLS-SAN flag groups from `jumpstarter_controller::flags`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use jumpstarter_controller::flags::exporter_labels::ExporterLabelArgs;
use jumpstarter_controller::flags::legacy_key::{self, LegacyKeyArgs};
use jumpstarter_controller::flags::login::LoginArgs;
use jumpstarter_controller::flags::upstream::UpstreamConfigArgs;
use jumpstarter_controller::flags::{GoDuration, LifetimeArgs, TlsSanArgs};
use jumpstarter_controller::limits::LimitArgs;
use jumpstarter_controller::owner::OwnerArgs;
use jumpstarter_controller::peer::PeerArgs;
use jumpstarter_controller::reconcile;
use jumpstarter_controller::replica::{self, ReplicaId, ReplicaRegistry, record::RecordConfig};
use jumpstarter_controller::runtime::{self, ControllerMetrics, GrpcServer};
use jumpstarter_controller::server::Readiness;
use jumpstarter_controller::settings::{self, RouterEntry, Settings};
use jumpstarter_controller::store::kube::KubeStore;
use jumpstarter_controller::upstream::GivenFlags;
use jumpstarter_controller::{keys, leader};
use jumpstarter_shell::logging::{self, LogArgs};
use jumpstarter_shell::{kube_client, private_file, signal};

/// Where Kubernetes mounts the pod's namespace.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

#[derive(Debug, Parser)]
#[command(
    name = "jumpstarter-controller",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("JUMPSTARTER_GIT_COMMIT"), ")"),
    about = "Jumpstarter controller (Kubernetes mode)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller: gRPC services, probes, metrics and the reconcile loop.
    Run(Box<RunArgs>),
    /// Write a router's TLS certificate, the CA and the router-token public key to a directory.
    RouterCert(RouterCertArgs),
}

/// Options every subcommand shares.
#[derive(Debug, Args)]
struct CommonArgs {
    /// Namespace the controller serves [default: the pod's namespace, else `default`].
    #[arg(long, env = "JUMPSTARTER_NAMESPACE")]
    namespace: Option<String>,
    /// Kubeconfig file [default: in-cluster configuration, else `$KUBECONFIG` / `~/.kube/config`].
    #[arg(long, env = "JUMPSTARTER_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    log: LogArgs,
    /// Take the CA from this `kubernetes.io/tls` Secret (`tls.crt`, `tls.key` PKCS#8), e.g.
    /// one cert-manager maintains, instead of the generated one [default: generated].
    #[arg(long, env = "JUMPSTARTER_CA_SECRET")]
    ca_secret: Option<String>,
}

impl CommonArgs {
    fn ca_source(&self) -> keys::CaSource {
        match &self.ca_secret {
            Some(name) => keys::CaSource::Secret(name.clone()),
            None => keys::CaSource::Generated,
        }
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Address the gRPC TLS port listens on.
    #[arg(long, env = "JUMPSTARTER_GRPC_LISTEN", default_value = "0.0.0.0:8082")]
    grpc_listen: SocketAddr,
    /// UDP address serving the same gRPC API over QUIC, for hosts (edges) that reach the
    /// service only over UDP; off unless given (usually the same port as `--grpc-listen`).
    #[arg(long, env = "JUMPSTARTER_GRPC_QUIC_LISTEN")]
    grpc_quic_listen: Option<SocketAddr>,
    #[command(flatten)]
    quic_transport: jumpstarter_tunnel::QuicTransportArgs,
    /// Advertised controller endpoint `host:port` (written into Client/Exporter status and
    /// used as a SAN of the serving certificate).
    #[arg(
        long,
        env = "JUMPSTARTER_GRPC_ENDPOINT",
        default_value = "localhost:8082"
    )]
    grpc_endpoint: String,
    /// A router as `name=host:port`, optionally followed by `;key=value` labels and by
    /// `;quic=host:port`, its QUIC data-plane endpoint; repeat the flag (or give a
    /// comma-separated list in the environment) for several routers.
    #[arg(long = "router", env = "JUMPSTARTER_ROUTERS", value_delimiter = ',', value_parser = RouterEntry::parse)]
    routers: Vec<RouterEntry>,
    #[command(flatten)]
    sans: TlsSanArgs,
    #[command(flatten)]
    exporter_labels: ExporterLabelArgs,
    /// Address of the HTTP probes (`/healthz`, `/readyz`; `/metrics` is served here too).
    #[arg(long, env = "JUMPSTARTER_PROBE_LISTEN", default_value = "0.0.0.0:8081")]
    probe_listen: SocketAddr,
    /// Address of the HTTP metrics endpoint (`/metrics`, with the probes too); when equal
    /// to `--probe-listen`, one listener serves everything.
    #[arg(
        long,
        env = "JUMPSTARTER_METRICS_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    metrics_listen: SocketAddr,
    /// Run the reconcile loop only while holding the leader election Lease.
    #[arg(long, env = "JUMPSTARTER_LEADER_ELECT", default_value_t = false)]
    leader_elect: bool,
    /// Identity of this replica (leader election, replica record, peers) [default: `<hostname>_<pid>`].
    #[arg(long, env = "JUMPSTARTER_IDENTITY")]
    identity: Option<String>,
    #[command(flatten)]
    lifetimes: LifetimeArgs,
    #[command(flatten)]
    caller_limits: LimitArgs,
    /// Lifetime of router stream tokens, as a Go duration.
    #[arg(
        long,
        env = "JUMPSTARTER_ROUTER_TOKEN_LIFETIME",
        default_value_t = GoDuration(settings::DEFAULT_ROUTER_TOKEN_LIFETIME),
        value_parser = GoDuration::parse
    )]
    router_token_lifetime: GoDuration,
    /// Most tags a lease may carry.
    #[arg(long, env = "JUMPSTARTER_MAX_TAGS", default_value_t = settings::DEFAULT_MAX_TAGS)]
    max_tags: usize,
    /// Exporter label keys hidden from clients unless they ask for them.
    #[arg(
        long = "hidden-label",
        env = "JUMPSTARTER_HIDDEN_LABELS",
        value_delimiter = ','
    )]
    hidden_labels: Vec<String>,
    /// Keep a serving-certificate Secret `<name>-tls` for every `--router` (for routers
    /// that run as pods and mount it); checked at start and every few hours.
    #[arg(long, env = "JUMPSTARTER_ROUTER_CERT_SECRETS", default_value_t = false)]
    router_cert_secrets: bool,
    #[command(flatten)]
    limits: jumpstarter_shell::port_limits::PortLimits,
    #[command(flatten)]
    key_reload: keys::refresh::KeyReloadArgs,
    #[command(flatten)]
    owner: OwnerArgs,
    #[command(flatten)]
    peers: PeerArgs,
    #[command(flatten)]
    upstream: UpstreamConfigArgs,
    #[command(flatten)]
    legacy_key: LegacyKeyArgs,
    #[command(flatten)]
    login: LoginArgs,
    #[command(flatten)]
    dashboard: jumpstarter_controller::flags::dashboard::DashboardArgs,
}

#[derive(Debug, Args)]
struct RouterCertArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Advertised router endpoint `host:port`; its host becomes the certificate's SAN.
    #[arg(long, env = "JUMPSTARTER_ROUTER_ENDPOINT")]
    endpoint: String,
    #[command(flatten)]
    sans: TlsSanArgs,
    /// Directory to write `tls.crt`, `tls.key`, `ca.crt` and `router-token-keys.pem` into.
    #[arg(long, env = "JUMPSTARTER_OUT_DIR")]
    out_dir: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Which flags were given explicitly: they win over the upstream configuration.
    let given = matches
        .subcommand_matches("run")
        .map(GivenFlags::from_matches)
        .unwrap_or_default();
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    match cli.command {
        Command::Run(args) => {
            logging::init(args.common.log.log_format, "info");
            runtime.block_on(run(*args, given))
        }
        Command::RouterCert(args) => {
            logging::init(args.common.log.log_format, "info");
            runtime.block_on(router_cert(args))
        }
    }
}

async fn run(args: RunArgs, given: GivenFlags) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    signal::spawn_watch(shutdown.clone());

    let namespace = namespace(&args.common);
    let client = kube_client::connect(args.common.kubeconfig.as_deref()).await?;
    let store = KubeStore::new(client.clone());
    let owner = args.owner.resolve(&store, &namespace).await?;
    let upstream = args
        .upstream
        .load(&store, &namespace)
        .await
        .context("read the configuration")?;
    let mut settings = Settings {
        namespace: namespace.clone(),
        grpc_endpoint: args.grpc_endpoint.clone(),
        routers: args.routers.clone(),
        token_lifetime: args.lifetimes.token_lifetime.0,
        router_token_lifetime: args.router_token_lifetime.0,
        max_tags: args.max_tags,
        hidden_labels: args.hidden_labels.clone(),
        deprecated_labels: Default::default(),
        provisioning: false,
        internal_prefix: jumpstarter_controller::upstream::DEFAULT_INTERNAL_PREFIX.to_owned(),
        jwt: Vec::new(),
        lease_cert_max_validity: args.lifetimes.lease_cert_max_validity.0,
        limits: args.caller_limits.limits(),
        exporter_label_prefixes: args.exporter_labels.exporter_label_prefixes.clone(),
        owner,
        scheduling: Default::default(),
    };
    upstream.apply(&mut settings, &given);
    if settings.routers.is_empty() {
        tracing::warn!(
            "no router (--router or the ConfigMap's key `router`): every Dial will fail with \"no router available\""
        );
    }
    let settings = Arc::new(settings);
    let mut port_limits = args.limits;
    for item in upstream.apply_keepalive(&mut port_limits, &given) {
        tracing::info!("not applied: {item}");
    }
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let replicas = ReplicaRegistry::new(ReplicaId::new(&identity));

    let mut registry = Registry::default();
    jumpstarter_shell::process_metrics::register(
        &mut registry,
        env!("CARGO_PKG_VERSION"),
        env!("JUMPSTARTER_GIT_COMMIT"),
    );
    let metrics = ControllerMetrics::register(&mut registry);
    let registry = Arc::new(registry);
    let readiness = Arc::new(Readiness::default());

    let mut http_addrs = vec![args.probe_listen];
    if args.metrics_listen != args.probe_listen {
        http_addrs.push(args.metrics_listen);
    }
    let http_tasks = runtime::spawn_http(&http_addrs, &readiness, &registry, &shutdown).await?;

    let Some(keys) = load_keys(&store, &settings, &args.common.ca_source(), &shutdown).await?
    else {
        return Ok(());
    };
    let legacy_key = args
        .legacy_key
        .clone()
        .or_upstream(std::env::var(legacy_key::UPSTREAM_ENV).ok());
    keys::legacy::accept(&store, &namespace, legacy_key.value(), &keys)
        .await
        .context("accept the tokens of a 0.9.0 controller key")?;
    let keys = Arc::new(keys);
    if args.router_cert_secrets {
        keys::router_secret::publish(&store, &settings, &keys, OffsetDateTime::now_utc())
            .await
            .context("write the router certificate Secrets")?;
        tokio::spawn(renew_router_secrets(
            store.clone(),
            keys.clone(),
            settings.clone(),
            shutdown.clone(),
        ));
    }
    tokio::spawn(keys::refresh::follow_keys(
        store.clone(),
        settings.clone(),
        keys.clone(),
        args.key_reload.interval(),
        metrics.refresh.clone(),
        |_| {},
        shutdown.clone(),
    ));
    readiness.set_keys_loaded();
    let grpc = runtime::spawn_grpc(
        GrpcServer {
            store: store.clone(),
            settings: settings.clone(),
            keys: keys.clone(),
            tls_sans: args.sans.tls_sans.clone(),
            listen: args.grpc_listen,
            quic_listen: args.grpc_quic_listen,
            quic_transport: args.quic_transport.transport(),
            limits: port_limits,
            replicas: replicas.clone(),
            login: runtime::LoginListen::from_args(&args.login),
            // The routers run apart: their sessions are not seen here.
            sessions: Vec::new(),
            dashboard: runtime::DashboardListen::from_args(&args.dashboard)?,
        },
        &metrics,
        &readiness,
        &shutdown,
    )
    .await?;

    let record = replica::record::spawn(
        store.clone(),
        replicas.clone(),
        RecordConfig::new(
            &namespace,
            args.peers.peer_endpoint.clone(),
            settings.owner.clone(),
        ),
        shutdown.clone(),
    );

    let work = {
        let store = store.clone();
        let keys = keys.clone();
        let settings = settings.clone();
        let metrics = metrics.reconcile.clone();
        let replicas = replicas.clone();
        move |cancel: CancellationToken| {
            let (store, keys, settings, metrics, replicas) = (
                store.clone(),
                keys.clone(),
                settings.clone(),
                metrics.clone(),
                replicas.clone(),
            );
            async move {
                let run = reconcile::run(store, keys, settings, metrics, replicas, cancel);
                if let Err(error) = run.await {
                    tracing::error!(%error, "reconcile loop stopped");
                }
            }
        }
    };
    if args.leader_elect {
        tracing::info!(%identity, "leader election enabled");
        if let Err(error) = leader::run_elected(
            client,
            &namespace,
            &identity,
            settings.owner.clone(),
            shutdown.clone(),
            &work,
        )
        .await
        {
            tracing::error!(%error, "leader election failed");
            shutdown.cancel();
        }
    } else {
        work(shutdown.clone()).await;
    }
    // The reconcile loop only returns at shutdown (or on a fatal election error).
    shutdown.cancel();

    let grpc_result = grpc.join().await;
    record.await.context("replica record task")?;
    for task in http_tasks {
        task.await.context("HTTP server task")??;
    }
    grpc_result?;
    tracing::info!("controller stopped");
    Ok(())
}

/// How long to wait between looks at an external CA Secret that does not exist yet.
const CA_SECRET_RETRY: std::time::Duration = std::time::Duration::from_secs(5);
/// How often router certificate Secrets are checked for renewal; far below
/// [`keys::router_secret::RENEW_BEFORE`].
const ROUTER_SECRET_CHECK: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// Bootstraps the keys; waits (until shutdown, then `None`) while an external CA Secret
/// does not exist yet, since cert-manager may still be issuing it.
async fn load_keys(
    store: &KubeStore,
    settings: &Settings,
    ca: &keys::CaSource,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<keys::Keys>> {
    loop {
        match keys::bootstrap_with(store, settings, ca, OffsetDateTime::now_utc()).await {
            Ok(keys) => return Ok(Some(keys)),
            Err(error @ keys::KeysError::CaSecretMissing { .. }) => {
                tracing::warn!(%error, retry_in = ?CA_SECRET_RETRY, "waiting for the CA Secret");
            }
            Err(error) => return Err(error).context("load the controller keys"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(CA_SECRET_RETRY) => {}
        }
    }
}

async fn renew_router_secrets(
    store: KubeStore,
    keys: Arc<keys::Keys>,
    settings: Arc<Settings>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(ROUTER_SECRET_CHECK) => {}
        }
        let now = OffsetDateTime::now_utc();
        if let Err(error) = keys::router_secret::publish(&store, &settings, &keys, now).await {
            let error = anyhow::Error::new(error);
            tracing::warn!(
                error = format!("{error:#}"),
                "renewing router certificate Secrets failed"
            );
        }
    }
}

async fn router_cert(args: RouterCertArgs) -> anyhow::Result<()> {
    let namespace = namespace(&args.common);
    let client = kube_client::connect(args.common.kubeconfig.as_deref()).await?;
    let store = KubeStore::new(client);
    let settings = Settings {
        namespace: namespace.clone(),
        grpc_endpoint: String::new(),
        routers: Vec::new(),
        token_lifetime: settings::DEFAULT_TOKEN_LIFETIME,
        router_token_lifetime: settings::DEFAULT_ROUTER_TOKEN_LIFETIME,
        max_tags: settings::DEFAULT_MAX_TAGS,
        hidden_labels: Vec::new(),
        deprecated_labels: Default::default(),
        provisioning: false,
        internal_prefix: jumpstarter_controller::upstream::DEFAULT_INTERNAL_PREFIX.to_owned(),
        jwt: Vec::new(),
        lease_cert_max_validity: settings::DEFAULT_LEASE_CERT_MAX_VALIDITY,
        limits: Default::default(),
        exporter_label_prefixes: Vec::new(),
        owner: None,
        scheduling: Default::default(),
    };
    let now = OffsetDateTime::now_utc();
    let keys = keys::bootstrap_with(&store, &settings, &args.common.ca_source(), now)
        .await
        .context("load the controller keys")?;
    let cert = keys
        .router_server_cert(&args.endpoint, &args.sans.tls_sans, now)
        .with_context(|| format!("mint the router certificate for {}", args.endpoint))?;
    write_router_files(
        &args.out_dir,
        &RouterFiles {
            chain_pem: &cert.chain_pem,
            key_pem: &cert.key_pem,
            ca_pem: keys.ca.cert_pem(),
            token_keys_pem: &keys.tokens.current().router_public_pem(),
        },
    )?;
    tracing::info!(endpoint = %args.endpoint, dir = %args.out_dir.display(), "router certificate written");
    Ok(())
}

/// What `router-cert` writes.
#[derive(Debug)]
struct RouterFiles<'a> {
    chain_pem: &'a str,
    key_pem: &'a str,
    ca_pem: &'a str,
    token_keys_pem: &'a str,
}

/// Writes `tls.crt`, `tls.key` (owner only, also when an earlier run left the file with
/// another mode), `ca.crt` and `router-token-keys.pem` into `dir`.
fn write_router_files(dir: &Path, files: &RouterFiles<'_>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    write_public(&dir.join("tls.crt"), files.chain_pem)?;
    private_file::write(&dir.join("tls.key"), files.key_pem.as_bytes())?;
    write_public(&dir.join("ca.crt"), files.ca_pem)?;
    write_public(&dir.join("router-token-keys.pem"), files.token_keys_pem)
}

/// Writes a certificate or public key: readable by everyone (mode 0644 when created).
fn write_public(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("write {}", path.display()))
}

fn namespace(common: &CommonArgs) -> String {
    common
        .namespace
        .clone()
        .or_else(|| {
            std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "default".to_owned())
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "controller".to_owned());
    format!("{host}_{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn router_cert_rewrites_an_existing_world_readable_key_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let temporary = tempfile::tempdir().unwrap();
        let dir = temporary.path().join("router");
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("tls.key");
        std::fs::write(&key, "old key").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let files = RouterFiles {
            chain_pem: "chain",
            key_pem: "new key",
            ca_pem: "ca",
            token_keys_pem: "keys",
        };
        write_router_files(&dir, &files).unwrap();
        let mode = |name: &str| {
            std::fs::metadata(dir.join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("tls.key"), 0o600);
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "new key");
        assert_eq!(mode("ca.crt") & 0o044, 0o044, "public files stay readable");
    }

    #[test]
    fn flags_are_consistent_and_run_has_defaults() {
        let cli = Cli::try_parse_from(["jumpstarter-controller", "run"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run")
        };
        assert_eq!(args.grpc_listen.port(), 8082);
        assert_eq!(
            args.lifetimes.token_lifetime.0,
            time::Duration::hours(43_800)
        );
        assert!(!args.leader_elect);
        assert_eq!(
            args.lifetimes.lease_cert_max_validity.0,
            time::Duration::seconds(10)
        );
        assert_eq!(args.router_token_lifetime.0, time::Duration::minutes(2));
        assert!(!args.router_cert_secrets);
        assert_eq!(args.common.ca_source(), keys::CaSource::Generated);
        let cli = Cli::try_parse_from([
            "jumpstarter-controller",
            "run",
            "--ca-secret",
            "lab-ca",
            "--router-cert-secrets",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run")
        };
        assert!(args.router_cert_secrets);
        assert_eq!(
            args.common.ca_source(),
            keys::CaSource::Secret("lab-ca".into())
        );
        Cli::command().debug_assert();
    }
}
