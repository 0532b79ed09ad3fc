//! `jumpstarter serve`: the whole service in one process.
//!
//! One [`EmbeddedStore`] file in the data directory; on it the controller's gRPC services
//! (TLS, ALPN h2), the reconcile loop (no leader election: the lock on the data file
//! already guarantees a single instance), the router, HTTP probes and `/metrics`, and the
//! admin API on a Unix socket. Unless disabled, the router also listens for QUIC sessions
//! (UDP) admitting per-lease certificates of the controller CA, and that endpoint is handed
//! out with the certificates. The controller's services are also served as gRPC over QUIC
//! (UDP, same certificate; see `jumpstarter_tunnel::carrier`) for hosts that reach the
//! service only over UDP. Keys and the CA are generated at first start and kept in the
//! data file. SIGTERM/SIGINT stop everything gracefully.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use jumpstarter_certs::{ServingCert, TrustedRoots, reloadable_server_config};
use jumpstarter_controller::admin::Admin;
use jumpstarter_controller::keys;
use jumpstarter_controller::limits::Limits;
use jumpstarter_controller::reconcile;
use jumpstarter_controller::replica::{ReplicaId, ReplicaRegistry};
use jumpstarter_controller::runtime::{self, ControllerMetrics, GrpcServer};
use jumpstarter_controller::server::Readiness;
use jumpstarter_controller::settings::{self, RouterEntry, Settings};
use jumpstarter_controller::store::embedded::EmbeddedStore;
use jumpstarter_controller::upstream::{GivenFlags, UpstreamConfig};
use jumpstarter_router::{QuicRouter, QuicRouterConfig, ResetKey, Router, RouterConfig};
use jumpstarter_shell::{advertised_address, private_file, signal};
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin_api;
use crate::admin_api::peer::{AdminSocketMetrics, PeerCheck};
use crate::data_dir::DataDir;

/// The identity of the standalone service's one replica (it keeps no record).
const STANDALONE_IDENTITY: &str = "standalone";

/// What `serve` needs, parsed from flags.
#[derive(Debug, Clone)]
pub(crate) struct ServeOptions {
    pub(crate) data_dir: DataDir,
    pub(crate) namespace: String,
    pub(crate) grpc_listen: SocketAddr,
    pub(crate) router_listen: SocketAddr,
    /// UDP address of the QUIC session listener; `None` disables it.
    pub(crate) quic_listen: Option<SocketAddr>,
    /// UDP address of the controller's gRPC-over-QUIC listener; `None` disables it.
    pub(crate) controller_quic_listen: Option<SocketAddr>,
    /// Windows and congestion controller of both QUIC listeners.
    pub(crate) quic_transport: jumpstarter_tunnel::QuicTransport,
    /// The login service (`/v1/auth/config`), when asked for.
    pub(crate) login: Option<jumpstarter_controller::runtime::LoginListen>,
    /// The lab dashboard, unless `--no-dashboard`.
    pub(crate) dashboard: Option<DashboardOptions>,
    pub(crate) http_listen: SocketAddr,
    /// Advertised controller endpoint; `None` derives it from `grpc_listen`.
    pub(crate) grpc_endpoint: Option<String>,
    /// Advertised router endpoint; `None` derives it from `router_listen`.
    pub(crate) router_endpoint: Option<String>,
    pub(crate) tls_sans: Vec<String>,
    pub(crate) token_lifetime: time::Duration,
    pub(crate) lease_cert_max_validity: time::Duration,
    /// Limits of the controller's and the router's ports alike.
    pub(crate) limits: jumpstarter_shell::port_limits::PortLimits,
    /// HTTP/2 receive windows of the router's port.
    pub(crate) http2_windows: jumpstarter_shell::http2_windows::Http2Windows,
    /// Per-caller limits of the controller's services.
    pub(crate) caller_limits: Limits,
    /// Label key prefixes exporters may set on themselves.
    pub(crate) exporter_label_prefixes: Vec<String>,
    /// The 0.9.0 configuration (`--config`), folded in where no flag was `given`.
    pub(crate) upstream: UpstreamConfig,
    pub(crate) given: GivenFlags,
    /// The `CONTROLLER_KEY` of a 0.9.0 controller whose credentials stay valid.
    pub(crate) legacy_key: jumpstarter_controller::flags::legacy_key::LegacyKeyArgs,
}

/// The endpoint clients should use for a listen address (see
/// [`advertised_address::advertised`]).
fn advertised(listen: SocketAddr) -> String {
    advertised_address::advertised(listen).to_string()
}

pub(crate) async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    signal::spawn_watch(shutdown.clone());

    let data_dir = options.data_dir.clone();
    data_dir.prepare()?;
    let state_file = data_dir.state_file();
    let store = {
        let path = state_file.clone();
        tokio::task::spawn_blocking(move || EmbeddedStore::open(&path))
            .await
            .context("open the data file")?
            // The store's message names the file and the cause (corrupt, newer, locked).
            .map_err(|e| anyhow::anyhow!("{e}"))?
    };
    // It holds the CA key and the signing keys: owner only, whatever the umask was.
    private_file::restrict(&state_file)?;

    let grpc_endpoint = options
        .grpc_endpoint
        .clone()
        .unwrap_or_else(|| advertised(options.grpc_listen));
    let router_endpoint = options
        .router_endpoint
        .clone()
        .unwrap_or_else(|| advertised(options.router_listen));
    let quic_endpoint = options.quic_listen.map(advertised);
    let mut settings = Settings {
        namespace: options.namespace.clone(),
        grpc_endpoint: grpc_endpoint.clone(),
        routers: vec![RouterEntry {
            name: "default".to_owned(),
            endpoint: router_endpoint.clone(),
            labels: BTreeMap::new(),
            quic_endpoint: quic_endpoint.clone(),
        }],
        token_lifetime: options.token_lifetime,
        router_token_lifetime: settings::DEFAULT_ROUTER_TOKEN_LIFETIME,
        max_tags: settings::DEFAULT_MAX_TAGS,
        hidden_labels: Vec::new(),
        deprecated_labels: Default::default(),
        provisioning: false,
        internal_prefix: jumpstarter_controller::upstream::DEFAULT_INTERNAL_PREFIX.to_owned(),
        jwt: Vec::new(),
        lease_cert_max_validity: options.lease_cert_max_validity,
        limits: options.caller_limits.clone(),
        exporter_label_prefixes: options.exporter_label_prefixes.clone(),
        // Nothing here is deleted by a Kubernetes garbage collector.
        owner: None,
        scheduling: Default::default(),
    };
    options.upstream.apply(&mut settings, &options.given);
    let settings = Arc::new(settings);
    let mut limits = options.limits;
    for item in options
        .upstream
        .apply_keepalive(&mut limits, &options.given)
    {
        tracing::info!("not applied: {item}");
    }

    let now = OffsetDateTime::now_utc();
    let keys = Arc::new(
        keys::bootstrap(&store, &settings, now)
            .await
            .context("load the controller keys")?,
    );
    if let Some(value) = options.legacy_key.value() {
        let legacy = keys::legacy::LegacyKey::derive(value, keys::legacy::LegacyKeySource::Given)
            .context("accept the tokens of a 0.9.0 controller key")?;
        keys.accept_legacy(&legacy);
    }
    // The QUIC listener presents the same certificate: it must name that host too
    // (duplicate names are dropped when the certificate is minted).
    let mut router_sans = options.tls_sans.clone();
    if let Some(quic) = options.quic_listen {
        router_sans.push(advertised_address::advertised(quic).ip().to_string());
    }
    let router_cert = keys
        .router_server_cert(&router_endpoint, &router_sans, now)
        .with_context(|| format!("mint the router certificate for {router_endpoint}"))?;
    // Renewed before it expires, like the controller's own certificate.
    let router_serving =
        ServingCert::new(router_cert.credentials()).context("load the router certificate")?;
    let router_tls = reloadable_server_config(router_serving.clone(), vec![b"h2".to_vec()], None)
        .context("build the router TLS configuration")?;

    let mut registry = Registry::default();
    jumpstarter_shell::process_metrics::register(
        &mut registry,
        env!("CARGO_PKG_VERSION"),
        env!("JUMPSTARTER_GIT_COMMIT"),
    );
    let metrics = ControllerMetrics::register(&mut registry);
    let router_keys = router_token_keys(&keys.tokens.current());
    let mut router_config = RouterConfig::new(router_tls, router_keys.clone());
    router_config.limits = limits;
    router_config.http2_windows = options.http2_windows;
    let router = Router::new(
        router_config,
        registry.sub_registry_with_prefix("jumpstarter"),
    );
    let quic_router = match options.quic_listen {
        Some(addr) => {
            let lease_ca =
                TrustedRoots::new(vec![keys.ca.cert_der().clone()]).context("load the lease CA")?;
            // The router certificate is minted afresh at every start; the CA key is kept in
            // the store, so resets stay recognisable across restarts.
            let reset_key = ResetKey::derive(keys.ca.key_pem().as_bytes());
            let mut config =
                QuicRouterConfig::reloadable(router_serving.clone(), lease_ca, reset_key)
                    .context("build the QUIC router TLS configuration")?;
            config.transport = options.quic_transport;
            // One registration of the transport gauges per registry: the controller's.
            config.gauges = Some(metrics.quic_transport.clone());
            let mut quic = QuicRouter::bind(
                config,
                addr,
                registry.sub_registry_with_prefix("jumpstarter"),
            )
            .with_context(|| format!("bind the QUIC router on UDP {addr}"))?;
            // QUIC sessions carrying a router token pair with 0.9.0 h2 streams.
            quic.pair_with_h2(&router);
            Some(quic)
        }
        None => None,
    };
    let dashboard = match &options.dashboard {
        Some(dashboard) => {
            let path = data_dir.dashboard_token();
            let token = dashboard_token(&path)
                .with_context(|| format!("the dashboard token {}", path.display()))?;
            Some(runtime::DashboardListen {
                addr: dashboard.addr,
                plain_http: false,
                token,
                actions: dashboard.actions,
                optional: dashboard.optional,
                sso: dashboard.sso.clone(),
            })
        }
        None => None,
    };
    // Sessions in the embedded routers are activity for idle timeouts.
    let mut sessions: Vec<runtime::SessionSource> = Vec::new();
    let h2_sessions = router.session_leases();
    sessions.push(runtime::SessionSource::new(move || h2_sessions.leases()));
    if let Some(quic) = &quic_router {
        let quic_sessions = quic.session_leases();
        sessions.push(runtime::SessionSource::new(move || quic_sessions.leases()));
    }
    let admin_socket_metrics = AdminSocketMetrics::register(&mut registry);
    let registry = Arc::new(registry);
    let readiness = Arc::new(Readiness::default());
    readiness.set_keys_loaded();
    tokio::spawn(keys::refresh::follow_keys(
        store.clone(),
        settings.clone(),
        keys.clone(),
        std::time::Duration::try_from(keys::refresh::DEFAULT_KEYS_RELOAD_INTERVAL)
            .unwrap_or(std::time::Duration::from_secs(10)),
        metrics.refresh.clone(),
        move |tokens| router_keys.replace(router_token_keys(tokens).current().to_vec()),
        shutdown.clone(),
    ));
    tokio::spawn(keys::refresh::renew_serving_cert(
        router_serving,
        {
            let (keys, endpoint, sans) = (keys.clone(), router_endpoint.clone(), router_sans);
            move |now| {
                keys.router_server_cert(&endpoint, &sans, now)
                    .map(|cert| cert.credentials())
            }
        },
        keys::refresh::RENEW_CHECK_INTERVAL,
        keys::refresh::RefreshMetrics::default(),
        shutdown.clone(),
    ));

    let http_tasks =
        runtime::spawn_http(&[options.http_listen], &readiness, &registry, &shutdown).await?;
    // One process: one replica, always live, without peers or a record.
    let replicas = ReplicaRegistry::single(ReplicaId::new(STANDALONE_IDENTITY));
    let grpc_server = GrpcServer {
        store: store.clone(),
        settings: settings.clone(),
        keys: keys.clone(),
        tls_sans: options.tls_sans.clone(),
        listen: options.grpc_listen,
        quic_listen: options.controller_quic_listen,
        quic_transport: options.quic_transport,
        limits,
        replicas: replicas.clone(),
        login: options.login,
        sessions,
        dashboard,
    };
    let grpc = runtime::spawn_grpc(grpc_server, &metrics, &readiness, &shutdown).await?;
    let router_listener = TcpListener::bind(options.router_listen)
        .await
        .with_context(|| format!("bind the router listener on {}", options.router_listen))?;
    let router_task = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let result = router
                .serve(router_listener, shutdown.clone().cancelled_owned())
                .await;
            shutdown.cancel();
            result
        })
    };

    let quic_task =
        quic_router.map(|quic| tokio::spawn(quic.serve(shutdown.clone().cancelled_owned())));

    let socket_path = data_dir.admin_socket();
    let socket = admin_api::server::bind(&socket_path)
        .with_context(|| format!("create the admin socket {}", socket_path.display()))?;
    let admin_task = tokio::spawn(admin_api::server::serve(
        socket,
        Admin::new(store.clone(), options.namespace.clone()).with_max_tags(settings.max_tags),
        PeerCheck::new(admin_socket_metrics),
        shutdown.clone(),
    ));

    print_banner(
        &options,
        &grpc_endpoint,
        &router_endpoint,
        quic_endpoint.as_deref(),
        grpc.dashboard.is_some(),
    );
    if let Some(addr) = options.controller_quic_listen {
        println!(
            "  controller QUIC: {} (gRPC over QUIC, UDP)",
            advertised(addr)
        );
    }

    if let Err(error) = reconcile::run(
        store.clone(),
        keys.clone(),
        settings.clone(),
        metrics.reconcile.clone(),
        replicas.clone(),
        shutdown.clone(),
    )
    .await
    {
        tracing::error!(%error, "reconcile loop stopped");
    }
    // The reconcile loop only returns at shutdown (or on a fatal error).
    shutdown.cancel();

    let grpc_result = grpc.join().await;
    let router_result = router_task.await.context("router task")?;
    let admin_result = admin_task.await.context("admin socket task")?;
    if let Some(quic_task) = quic_task {
        quic_task.await.context("QUIC router task")?;
    }
    for task in http_tasks {
        task.await.context("HTTP server task")??;
    }
    // Best effort: a stale socket is replaced at the next start anyway.
    let _ = std::fs::remove_file(&socket_path);
    grpc_result?;
    router_result?;
    admin_result.context("admin socket")?;
    tracing::info!("jumpstarter stopped");
    Ok(())
}

fn print_banner(
    options: &ServeOptions,
    grpc_endpoint: &str,
    router_endpoint: &str,
    quic_endpoint: Option<&str>,
    dashboard_served: bool,
) {
    let dir = &options.data_dir;
    let dashboard = match &options.dashboard {
        None => "off".to_owned(),
        Some(d) if !dashboard_served => format!("not served ({} is taken)", d.addr),
        Some(d) => {
            let scheme = if d.addr.ip().is_loopback() {
                "http"
            } else {
                "https"
            };
            format!(
                "{scheme}://{}/ (credential: {})",
                advertised(d.addr),
                dir.dashboard_token().display()
            )
        }
    };
    let flag = dir.flag_hint();
    let ns = if options.namespace == "default" {
        String::new()
    } else {
        format!(" (namespace {})", options.namespace)
    };
    let quic = quic_endpoint.map_or_else(
        || "off".to_owned(),
        |endpoint| format!("{endpoint} (QUIC over UDP, per-lease certificates)"),
    );
    println!(
        "Jumpstarter is running{ns}.\n\
         \x20 data:        {state}\n\
         \x20 admin API:   {socket}\n\
         \x20 controller:  {grpc_endpoint} (gRPC over TLS)\n\
         \x20 router:      {router_endpoint}\n\
         \x20 QUIC router: {quic}\n\
         \x20 dashboard:   {dashboard}\n\
         \x20 probes:      http://{http}/readyz, metrics at http://{http}/metrics\n\
         Next steps:\n\
         \x20 jumpstarter admin create exporter board-1 --label board=mock --out board-1.yaml{flag}\n\
         \x20 # describe its drivers under `export:` in board-1.yaml, then:\n\
         \x20 jmp run --exporter-config board-1.yaml\n\
         \x20 jumpstarter admin create client alice --out alice.yaml{flag}\n\
         \x20 jmp shell --client-config alice.yaml -l board=mock -- j --help\n\
         \x20 jumpstarter admin list exporters{flag}",
        state = dir.state_file().display(),
        socket = dir.admin_socket().display(),
        http = options.http_listen,
    );
}

/// The public keys the embedded router accepts router tokens from: the signing key's and
/// the extra ones of the keys Secret.
fn router_token_keys(
    tokens: &jumpstarter_controller::keys::live::TokenKeySet,
) -> jumpstarter_router::TokenKeys {
    std::iter::once(tokens.router_key.verifying_key().clone())
        .chain(tokens.router_verify_keys.iter().cloned())
        .collect::<Vec<_>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_advertise_loopback() {
        assert_eq!(
            advertised("0.0.0.0:8082".parse().unwrap()),
            "127.0.0.1:8082"
        );
        assert_eq!(advertised("[::]:8083".parse().unwrap()), "[::1]:8083");
        assert_eq!(advertised("10.1.2.3:9".parse().unwrap()), "10.1.2.3:9");
    }
}

/// Where the dashboard of `jumpstarter serve` listens unless told otherwise (0.9.0's port).
pub(crate) const DEFAULT_DASHBOARD_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8084);

/// The dashboard of `jumpstarter serve`.
#[derive(Debug, Clone)]
pub(crate) struct DashboardOptions {
    pub(crate) addr: SocketAddr,
    /// The address is the default: if it is taken, serve without a dashboard.
    pub(crate) optional: bool,
    pub(crate) actions: bool,
    /// Single sign-on and sessions.
    pub(crate) sso: jumpstarter_controller::flags::dashboard::DashboardSsoArgs,
}

/// The dashboard credential in `path`, made (random, owner-only) when the file is absent.
fn dashboard_token(path: &std::path::Path) -> anyhow::Result<std::sync::Arc<str>> {
    if !path.exists() {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        // Two random UUIDs: 244 random bits, in characters any shell or form takes.
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(format!("{token}\n").as_bytes())?;
    }
    Ok(jumpstarter_controller::dashboard::read_token(path)?)
}
