//! The wiring of a controller process, shared by the Kubernetes-mode binary and the
//! standalone one: metrics registration, the HTTP probe and metrics listeners, and the TLS
//! gRPC server with `ControllerService` + `ClientService` + `LeaseCertificateService`, on
//! TCP and optionally on UDP (gRPC over QUIC, for hosts that reach the service only over
//! UDP; see `jumpstarter_tunnel::carrier`). Each binary keeps its own store,
//! its key bootstrap and the way it runs the reconcile loop (with or without leader
//! election).

use std::net::SocketAddr;
use std::sync::Arc;

use jumpstarter_certs::{Ca, ServingCert, reloadable_server_config};
use jumpstarter_shell::accept_loop::AcceptMetrics;
use jumpstarter_shell::port_limits::PortLimits;
use jumpstarter_tunnel::{CarrierError, CarrierServer, QuicTransport, TransportGauges};
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::AuthMetrics;
use crate::keys::refresh::{RENEW_CHECK_INTERVAL, RefreshMetrics, renew_serving_cert};
use crate::keys::{Keys, KeysError};
use crate::peer::{Forwarder, PeerMetrics};
use crate::reconcile::ReconcileMetrics;
use crate::replica::ReplicaRegistry;
use crate::server::{self, Readiness, ServerError};
use crate::service::{ServiceMetrics, Services};
use crate::settings::Settings;
use crate::store::Store;

/// A spawned listener; it ends at shutdown (or when it fails).
pub(crate) type ServerTask = JoinHandle<Result<(), ServerError>>;

/// The controller's metrics, registered in the process's one registry.
#[derive(Debug, Clone)]
pub struct ControllerMetrics {
    pub auth: Arc<AuthMetrics>,
    pub service: Arc<ServiceMetrics>,
    pub reconcile: Arc<ReconcileMetrics>,
    /// The gRPC port's accept loop (`jumpstarter_controller_grpc_*`).
    pub accept: AcceptMetrics,
    /// The gRPC-over-QUIC listener's connections (`jumpstarter_controller_grpc_quic_*`).
    pub quic_accept: AcceptMetrics,
    /// The QUIC transport in force (`jumpstarter_quic_*`), of every QUIC endpoint of the
    /// process.
    pub quic_transport: TransportGauges,
    pub refresh: RefreshMetrics,
    /// The channel between replicas (`jumpstarter_controller_peer_*`).
    pub peer: Arc<PeerMetrics>,
    /// Fetches of the JWT issuers' documents (`jumpstarter_controller_jwt_*`).
    pub jwt: Arc<crate::jwt::JwtMetrics>,
}

impl ControllerMetrics {
    pub fn register(registry: &mut Registry) -> ControllerMetrics {
        ControllerMetrics {
            auth: Arc::new(AuthMetrics::new(registry)),
            service: Arc::new(ServiceMetrics::new(registry)),
            reconcile: Arc::new(ReconcileMetrics::new(registry)),
            accept: AcceptMetrics::register(registry, "jumpstarter_controller_grpc"),
            quic_accept: AcceptMetrics::register(registry, "jumpstarter_controller_grpc_quic"),
            quic_transport: TransportGauges::register(
                registry.sub_registry_with_prefix("jumpstarter"),
            ),
            refresh: RefreshMetrics::new(registry),
            peer: Arc::new(PeerMetrics::new(registry)),
            jwt: Arc::new(crate::jwt::JwtMetrics::new(registry)),
        }
    }
}

/// Why a listener could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("bind the {what} listener on {addr}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("mint the controller serving certificate")]
    Certificate(#[source] KeysError),
    #[error("build the TLS configuration")]
    Tls(#[source] jumpstarter_certs::Error),
    #[error("load the CA that signs lease certificates")]
    LeaseCa(#[source] jumpstarter_certs::Error),
    #[error("configure the JWT authenticators (authentication.jwt)")]
    Jwt(#[source] crate::jwt::JwtConfigError),
    #[error("configure the dashboard")]
    Dashboard(#[source] crate::dashboard::DashboardError),
    #[error("start the controller QUIC listener on UDP {addr}")]
    Quic {
        addr: SocketAddr,
        #[source]
        source: CarrierError,
    },
}

/// Binds one HTTP listener per address given (`/healthz`, `/readyz`, `/metrics` on each)
/// and serves them until `shutdown`. Pass each address once.
pub async fn spawn_http(
    addrs: &[SocketAddr],
    readiness: &Arc<Readiness>,
    registry: &Arc<Registry>,
    shutdown: &CancellationToken,
) -> Result<Vec<ServerTask>, RuntimeError> {
    let mut tasks = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| RuntimeError::Bind {
                what: "HTTP",
                addr,
                source,
            })?;
        tasks.push(tokio::spawn(server::serve_http(
            listener,
            readiness.clone(),
            registry.clone(),
            shutdown.clone(),
        )));
    }
    Ok(tasks)
}

/// What the gRPC server serves and where.
#[derive(Debug)]
pub struct GrpcServer<S> {
    pub store: S,
    pub settings: Arc<Settings>,
    pub keys: Arc<Keys>,
    /// Extra subject alternative names of the serving certificate, besides the host of
    /// `settings.grpc_endpoint`.
    pub tls_sans: Vec<String>,
    pub listen: SocketAddr,
    /// UDP address for the same services over QUIC; `None` serves TCP only.
    pub quic_listen: Option<SocketAddr>,
    /// Windows and congestion controller of the QUIC listener.
    pub quic_transport: QuicTransport,
    /// Connection, handshake and HTTP/2 limits of both listeners.
    pub limits: PortLimits,
    /// The controller replicas this process is one of.
    pub replicas: Arc<ReplicaRegistry>,
    /// The login service (`/v1/auth/config`), when asked for.
    pub login: Option<LoginListen>,
    /// Routers embedded in this process: which leases have a session live in them now
    /// (`namespace/name`), read every [`SESSION_POLL`] as session activity for idle
    /// timeouts. Empty when the routers run apart.
    pub sessions: Vec<SessionSource>,
    /// The lab dashboard, when asked for.
    pub dashboard: Option<DashboardListen>,
}

/// Where the dashboard listens, how, and its admin credential.
#[derive(Debug, Clone)]
pub struct DashboardListen {
    pub addr: SocketAddr,
    /// Plain HTTP on a non-loopback address (an ingress ends TLS); loopback is always plain.
    pub plain_http: bool,
    pub token: Arc<str>,
    /// Offer the admin actions.
    pub actions: bool,
    /// The address is a default, not asked for: if it is taken, the service goes on
    /// without a dashboard (with a warning) instead of stopping.
    pub optional: bool,
    /// Single sign-on and sessions (checked against the JWT authenticators at start).
    pub sso: crate::flags::dashboard::DashboardSsoArgs,
}

impl DashboardListen {
    /// From the dashboard flags: `None` unless `--dashboard-listen` was given.
    pub fn from_args(
        args: &crate::flags::dashboard::DashboardArgs,
    ) -> Result<Option<DashboardListen>, crate::dashboard::DashboardError> {
        let (Some(addr), Some(path)) = (args.dashboard_listen, &args.dashboard_token_file) else {
            if args.sso.dashboard_oidc_client_id.is_some() {
                return Err(crate::dashboard::DashboardError::Sso(
                    "--dashboard-oidc-client-id needs the dashboard: set --dashboard-listen".into(),
                ));
            }
            return Ok(None);
        };
        Ok(Some(DashboardListen {
            addr,
            plain_http: args.dashboard_plain_http,
            token: crate::dashboard::read_token(path)?,
            actions: args.dashboard_actions,
            optional: false,
            sso: args.sso.clone(),
        }))
    }
}

/// The leases (`namespace/name`) with a session live in one embedded router.
#[derive(Clone)]
pub struct SessionSource(Arc<dyn Fn() -> Vec<String> + Send + Sync>);

impl SessionSource {
    pub fn new(leases: impl Fn() -> Vec<String> + Send + Sync + 'static) -> Self {
        SessionSource(Arc::new(leases))
    }

    fn leases(&self) -> Vec<String> {
        (self.0)()
    }
}

impl std::fmt::Debug for SessionSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSource")
    }
}

/// How often the sessions of embedded routers are read as activity: well within the
/// shortest activity interval that matters (a tenth of a minute).
pub const SESSION_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads the sessions of the embedded routers every [`SESSION_POLL`] until `shutdown`.
async fn record_sessions<S: Store>(
    services: Services<S>,
    sources: Vec<SessionSource>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(SESSION_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut leases: Vec<String> = sources.iter().flat_map(SessionSource::leases).collect();
        leases.sort_unstable();
        leases.dedup();
        services.record_sessions(leases).await;
    }
}

/// Where the login service listens, and whether over TLS (the gRPC port's certificate).
#[derive(Debug, Clone, Copy)]
pub struct LoginListen {
    pub addr: SocketAddr,
    /// Plain HTTP, for an ingress that ends TLS in front of it.
    pub plain_http: bool,
}

impl LoginListen {
    /// From the login flags: `None` unless `--login-listen` was given.
    pub fn from_args(args: &crate::flags::login::LoginArgs) -> Option<LoginListen> {
        args.login_listen.map(|addr| LoginListen {
            addr,
            plain_http: args.login_plain_http,
        })
    }
}

/// The gRPC listener tasks: TCP, and QUIC when asked for.
#[derive(Debug)]
pub struct GrpcTasks {
    pub tcp: ServerTask,
    pub quic: Option<ServerTask>,
    /// The login service, when it was asked for.
    pub login: Option<ServerTask>,
    /// The dashboard, when it was asked for (and its default address was free).
    pub dashboard: Option<ServerTask>,
}

impl GrpcTasks {
    /// Waits for both listeners; the first error wins.
    pub async fn join(self) -> Result<(), ServerError> {
        let tcp = self
            .tcp
            .await
            .unwrap_or_else(|e| Err(ServerError::Task(e.to_string())));
        let wait = |task: Option<ServerTask>| async move {
            match task {
                Some(task) => task
                    .await
                    .unwrap_or_else(|e| Err(ServerError::Task(e.to_string()))),
                None => Ok(()),
            }
        };
        let quic = wait(self.quic).await;
        let login = wait(self.login).await;
        let dashboard = wait(self.dashboard).await;
        tcp.and(quic).and(login).and(dashboard)
    }
}

/// Mints the serving certificate, binds `listen` (and `quic_listen`; then `readiness` is
/// marked bound) and serves the gRPC services until `shutdown`. Both transports share one
/// service context, so a Dial on one reaches a Listen on the other. When a server ends for
/// any reason it cancels `shutdown`, so the whole process stops.
pub async fn spawn_grpc<S: Store>(
    server: GrpcServer<S>,
    metrics: &ControllerMetrics,
    readiness: &Arc<Readiness>,
    shutdown: &CancellationToken,
) -> Result<GrpcTasks, RuntimeError> {
    let GrpcServer {
        store,
        settings,
        keys,
        mut tls_sans,
        listen,
        quic_listen,
        quic_transport,
        limits,
        replicas,
        login,
        sessions,
        dashboard,
    } = server;
    // The QUIC listener presents the same certificate: it must name that address too.
    if let Some(quic) = quic_listen
        && quic.ip() != listen.ip()
        && !quic.ip().is_unspecified()
    {
        tls_sans.push(quic.ip().to_string());
    }
    let credentials = keys
        .controller_server_cert(&settings, &tls_sans, OffsetDateTime::now_utc())
        .map_err(RuntimeError::Certificate)?;
    // Both transports present what this holds; it is renewed before it expires.
    let serving = ServingCert::new(credentials).map_err(RuntimeError::Tls)?;
    let tls = reloadable_server_config(
        serving.clone(),
        server::ALPN.iter().map(|p| p.to_vec()).collect(),
        None,
    )
    .map_err(RuntimeError::Tls)?;
    tokio::spawn(renew_serving_cert(
        serving.clone(),
        {
            let (keys, settings, tls_sans) = (keys.clone(), settings.clone(), tls_sans.clone());
            move |now| keys.controller_server_cert(&settings, &tls_sans, now)
        },
        RENEW_CHECK_INTERVAL,
        metrics.refresh.clone(),
        shutdown.clone(),
    ));
    let login = match login {
        Some(login) => Some(spawn_login(login, &settings, &keys, &serving, shutdown).await?),
        None => None,
    };
    let settings_for_dashboard = settings.clone();
    let lease_ca =
        Ca::from_pem(keys.ca.cert_pem(), &keys.ca.key_pem()).map_err(RuntimeError::LeaseCa)?;

    // Peers present certificates for the same endpoint host as this replica's (minting
    // the serving certificate above has checked that there is one).
    let peer_server_name = crate::keys::endpoint_host(&settings.grpc_endpoint)
        .unwrap_or_default()
        .to_owned();
    let forwarder = Forwarder::new(
        replicas.clone(),
        keys.tokens.clone(),
        keys.ca.cert_pem(),
        &peer_server_name,
        metrics.peer.clone(),
    );
    let jwt = jwt_authenticators(&settings, &metrics.jwt)?;
    let dashboard = match dashboard {
        Some(listen) => {
            let sso = crate::dashboard::DashboardSso::resolve(
                &listen.sso,
                dashboard_url(&listen),
                jwt.as_ref(),
            )
            .map_err(RuntimeError::Dashboard)?;
            Some((listen, sso))
        }
        None => None,
    };
    let services = Services::new(
        store,
        settings,
        keys.tokens.clone(),
        metrics.auth.clone(),
        metrics.service.clone(),
        shutdown.clone(),
    )
    .with_lease_ca(Arc::new(lease_ca))
    .with_replicas(replicas)
    .with_forwarder(Arc::new(forwarder));
    let services = match jwt {
        Some(jwt) => {
            // The first logins should not wait for the issuers' keys.
            let prefetch = jwt.clone();
            tokio::spawn(async move { prefetch.prefetch(OffsetDateTime::now_utc()).await });
            services.with_jwt(jwt)
        }
        None => services,
    };
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| RuntimeError::Bind {
            what: "gRPC",
            addr: listen,
            source,
        })?;
    let carrier = match quic_listen {
        Some(addr) => {
            let tls = reloadable_server_config(serving.clone(), Vec::new(), None)
                .map_err(RuntimeError::Tls)?;
            let carrier = CarrierServer::bind_with(addr, tls, quic_transport)
                .map_err(|source| RuntimeError::Quic { addr, source })?
                .with_limits(
                    limits.accept.max_connections,
                    limits.http2,
                    Some(metrics.quic_accept.clone()),
                )
                .with_gauges(metrics.quic_transport.clone());
            Some((addr, carrier))
        }
        None => None,
    };
    readiness.set_grpc_bound();
    if !sessions.is_empty() {
        tokio::spawn(record_sessions(
            services.clone(),
            sessions,
            shutdown.clone(),
        ));
    }
    let dashboard = match dashboard {
        Some((listen, sso)) => {
            spawn_dashboard(
                listen,
                sso,
                &settings_for_dashboard,
                &services,
                &serving,
                shutdown,
            )
            .await?
        }
        None => None,
    };
    let routes = server::grpc_routes(&services).await;
    let quic = carrier.map(|(addr, carrier)| {
        let (routes, shutdown) = (routes.clone(), shutdown.clone());
        tokio::spawn(async move {
            let result = carrier
                .serve(routes, shutdown.clone().cancelled_owned())
                .await
                .map_err(|source| ServerError::Quic {
                    addr: addr.to_string(),
                    source,
                });
            shutdown.cancel();
            result
        })
    });
    let shutdown = shutdown.clone();
    let accept_metrics = metrics.accept.clone();
    let tcp = tokio::spawn(async move {
        let result = server::serve_grpc(
            listener,
            Arc::new(tls),
            routes,
            limits,
            Some(accept_metrics),
            shutdown.clone(),
        )
        .await;
        // Whatever ended the server ends the process.
        shutdown.cancel();
        result
    });
    Ok(GrpcTasks {
        tcp,
        quic,
        login,
        dashboard,
    })
}

/// The JWT authenticators `settings` configures (`None` without any); a configuration
/// that does not parse, or names a CA file that cannot be read, is an error.
fn jwt_authenticators(
    settings: &Settings,
    metrics: &crate::jwt::JwtMetrics,
) -> Result<Option<crate::jwt::Authenticators>, RuntimeError> {
    if settings.jwt.is_empty() {
        return Ok(None);
    }
    let configs = crate::jwt::parse_authenticators(&settings.jwt).map_err(RuntimeError::Jwt)?;
    let issuers: Vec<&str> = configs.iter().map(|c| c.issuer.url.as_str()).collect();
    tracing::info!(?issuers, "accepting tokens of these JWT issuers");
    crate::jwt::Authenticators::new(configs, crate::jwt::JwtOptions::default(), metrics)
        .map(Some)
        .map_err(RuntimeError::Jwt)
}

/// Whether the dashboard is served over TLS: on every address but loopback, unless an
/// ingress ends TLS in front of it.
fn dashboard_tls(listen: &DashboardListen) -> bool {
    !listen.addr.ip().is_loopback() && !listen.plain_http
}

/// The dashboard's own URL, as browsers reach it when they connect to it directly (`None`
/// when it listens on every address: no one address to name).
fn dashboard_url(listen: &DashboardListen) -> Option<String> {
    if listen.addr.ip().is_unspecified() {
        return None;
    }
    let scheme = if dashboard_tls(listen) {
        "https"
    } else {
        "http"
    };
    Some(format!("{scheme}://{}", listen.addr))
}

/// Binds the dashboard and serves it until `shutdown` (ending the process if it fails).
/// `None` when its address is an optional default that is taken.
async fn spawn_dashboard<S: Store>(
    listen: DashboardListen,
    sso: Option<crate::dashboard::DashboardSso>,
    settings: &Settings,
    services: &Services<S>,
    serving: &Arc<ServingCert>,
    shutdown: &CancellationToken,
) -> Result<Option<ServerTask>, RuntimeError> {
    let tls = dashboard_tls(&listen);
    let tls_config = if tls {
        let alpn = crate::login::ALPN.iter().map(|p| p.to_vec()).collect();
        Some(Arc::new(
            reloadable_server_config(serving.clone(), alpn, None).map_err(RuntimeError::Tls)?,
        ))
    } else {
        None
    };
    let listener = match TcpListener::bind(listen.addr).await {
        Ok(listener) => listener,
        Err(source) if listen.optional => {
            tracing::warn!(addr = %listen.addr, error = %source, "the dashboard is not served: its default address is taken (move it with --dashboard-listen)");
            return Ok(None);
        }
        Err(source) => {
            return Err(RuntimeError::Bind {
                what: "dashboard",
                addr: listen.addr,
                source,
            });
        }
    };
    let config = crate::dashboard::DashboardConfig {
        namespace: settings.namespace.clone(),
        token: listen.token,
        actions: listen.actions,
        // Browsers reach it over HTTPS: served so, or behind an ingress at an https URL.
        tls: tls
            || sso
                .as_ref()
                .is_some_and(|sso| sso.redirect_uri.starts_with("https://")),
        sso,
        session_ttl: listen.sso.dashboard_session_ttl.0,
    };
    if let Some(sso) = &config.sso {
        tracing::info!(issuer = %sso.issuer, client_id = %sso.client_id, redirect_uri = %sso.redirect_uri, admins = ?sso.admins, "dashboard single sign-on");
    }
    let app = crate::dashboard::routes(services.read_cache(), config, shutdown.clone());
    let shutdown = shutdown.clone();
    Ok(Some(tokio::spawn(async move {
        let result =
            crate::server::http::serve("dashboard", listener, tls_config, app, shutdown.clone())
                .await;
        shutdown.cancel();
        result
    })))
}

/// Binds the login service and serves it until `shutdown` (ending the process if it
/// fails), with the identity providers of `settings` (validated at start).
async fn spawn_login(
    login: LoginListen,
    settings: &Settings,
    keys: &Keys,
    serving: &Arc<ServingCert>,
    shutdown: &CancellationToken,
) -> Result<ServerTask, RuntimeError> {
    let providers = crate::jwt::parse_authenticators(&settings.jwt)
        .unwrap_or_default()
        .into_iter()
        .map(|config| (config.issuer.url, config.issuer.audiences));
    let config = Arc::new(crate::login::LoginConfig::new(
        &settings.grpc_endpoint,
        settings.routers.first().map(|r| r.endpoint.as_str()),
        &settings.namespace,
        Some(keys.ca.cert_pem()),
        providers,
    ));
    let tls = if login.plain_http {
        None
    } else {
        let alpn = crate::login::ALPN.iter().map(|p| p.to_vec()).collect();
        Some(Arc::new(
            reloadable_server_config(serving.clone(), alpn, None).map_err(RuntimeError::Tls)?,
        ))
    };
    let listener = TcpListener::bind(login.addr)
        .await
        .map_err(|source| RuntimeError::Bind {
            what: "login",
            addr: login.addr,
            source,
        })?;
    let shutdown = shutdown.clone();
    Ok(tokio::spawn(async move {
        let result = crate::login::serve(listener, tls, config, shutdown.clone()).await;
        shutdown.cancel();
        result
    }))
}
