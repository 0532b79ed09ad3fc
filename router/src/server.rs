//! The router as a server: TLS (ALPN h2) through the shared bounded accept loop
//! (`jumpstarter_shell::accept_loop`: connection and handshake caps, refusals and failures
//! counted in the metrics), tonic with the port's HTTP/2 limits
//! (`jumpstarter_shell::http2_limits`) and the router and health services, gRPC server
//! reflection of them (as 0.9.0's router serves it), graceful shutdown with a drain period.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jumpstarter_shell::accept_loop::{AcceptMetrics, TlsIncoming};
use jumpstarter_shell::http2_windows::Http2Windows;
use jumpstarter_shell::port_limits::PortLimits;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::authentication::TokenKeys;
use crate::metrics::Metrics;
use crate::pairing::{DEFAULT_MAX_PENDING, DEFAULT_MAX_REMEMBERED, Limits};
use crate::stream_service::{SERVICE_NAME, StreamService};
use crate::switchboard::Switchboard;

/// gRPC server reflection, both versions (grpcurl asks for `v1` and falls back to
/// `v1alpha`), advertising the router's services only (the descriptor set also holds the
/// controller's).
fn reflection_services() -> (
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
) {
    const ADVERTISED: [&str; 2] = ["jumpstarter.v1.RouterService", "grpc.health.v1.Health"];
    let builder = |reflection: &str| {
        ADVERTISED.into_iter().chain([reflection]).fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(jumpstarter_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |builder, name| builder.with_service_name(name),
        )
    };
    // Invariant: both descriptor sets are compiled in and decode (the unit test below
    // builds them); a failure is a build defect.
    (
        builder("grpc.reflection.v1.ServerReflection")
            .build_v1()
            .expect("the compiled-in descriptor sets decode"),
        builder("grpc.reflection.v1alpha.ServerReflection")
            .build_v1alpha()
            .expect("the compiled-in descriptor sets decode"),
    )
}

/// Largest gRPC message accepted or sent: 0.9.0 peers use gRPC's default 4 MiB limit, and
/// a 4 MiB payload needs a few bytes of protobuf framing on top.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024 + 1024;

/// Default frames queued per direction of a pair. Python peers send at most 64 KiB per
/// frame, so sixteen frames bound the queue to 1 MiB per direction (2 MiB per pair) for
/// them; a peer sending messages of the largest size ([`MAX_MESSAGE_BYTES`]) could fill
/// it with at most 64 MiB per direction. HTTP/2 flow control windows come on top. Deeper
/// than 4 frames measurably raises one session's bulk throughput: the reading and the
/// writing connection tasks wake up less often.
pub(crate) const DEFAULT_QUEUE_FRAMES: usize = 16;

/// Largest HTTP/2 frame the router accepts (SETTINGS_MAX_FRAME_SIZE, the protocol's
/// maximum is 16 MiB). Peers that honour it send a 64 KiB message in one DATA frame
/// instead of four 16 KiB ones; what the router sends is bounded by each peer's own
/// setting (16 KiB for gRPC's defaults).
const MAX_FRAME_BYTES: u32 = 1024 * 1024;

/// How long relays that were stopped at the end of the drain period get to send their
/// final status.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long a stream waits for its peer by default: a peer that has not arrived after
/// half a minute (0.9.0 exporters answer a Dial within seconds) is not coming.
pub const DEFAULT_PAIR_TIMEOUT: Duration = Duration::from_secs(30);

/// How long live pairs may go on after a shutdown signal by default: long enough for
/// short transfers to finish, well within Kubernetes' grace periods.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a router needs; parse flags or embed it with [`RouterConfig::new`].
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// TLS server configuration; the router sets its ALPN to `h2`.
    pub tls: rustls::ServerConfig,
    /// Public keys a router token may be signed with (several during rotation); replace
    /// them through a clone of this handle while the router runs.
    pub token_keys: TokenKeys,
    /// How long a stream waits for its peer.
    pub pair_timeout: Duration,
    /// Streams waiting for a peer, at most.
    pub max_pending: usize,
    /// Paired stream ids remembered against token replay, at most.
    pub max_remembered: usize,
    /// Frames queued per direction of a pair.
    pub queue_frames: usize,
    /// After a shutdown signal, how long live pairs may go on before they are stopped.
    pub drain_timeout: Duration,
    /// Connection, handshake and HTTP/2 limits of the port (keepalive PINGs notice peers
    /// that vanished without a FIN; peers' own pings are accepted at any rate).
    pub limits: PortLimits,
    /// HTTP/2 receive windows of the port (sized for long fat paths by default).
    pub http2_windows: Http2Windows,
}

impl RouterConfig {
    /// A configuration with default limits.
    pub fn new(tls: rustls::ServerConfig, token_keys: impl Into<TokenKeys>) -> Self {
        RouterConfig {
            tls,
            token_keys: token_keys.into(),
            pair_timeout: DEFAULT_PAIR_TIMEOUT,
            max_pending: DEFAULT_MAX_PENDING,
            max_remembered: DEFAULT_MAX_REMEMBERED,
            queue_frames: DEFAULT_QUEUE_FRAMES,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            limits: PortLimits::default(),
            http2_windows: Http2Windows::default(),
        }
    }
}

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the gRPC server failed")]
    Transport(#[source] tonic::transport::Error),
}

/// Whether the router accepts streams, for readiness probes.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Whether the router is serving and not shutting down.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }
}

/// One router: pairing state, metrics and the server around them.
#[derive(Debug)]
pub struct Router {
    tls: Arc<rustls::ServerConfig>,
    drain_timeout: Duration,
    limits: PortLimits,
    http2_windows: Http2Windows,
    switchboard: Switchboard,
    accept_metrics: AcceptMetrics,
    stop_relays: CancellationToken,
    readiness: Readiness,
}

impl Router {
    /// Builds a router and registers its metrics in `registry`.
    pub fn new(config: RouterConfig, registry: &mut Registry) -> Self {
        let mut tls = config.tls;
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let metrics = Metrics::register(registry);
        let accept_metrics = AcceptMetrics::register(registry, "router");
        let stop_relays = CancellationToken::new();
        let limits = Limits {
            pair_timeout: config.pair_timeout,
            max_pending: config.max_pending,
            max_remembered: config.max_remembered,
        };
        let switchboard = Switchboard::for_streams(
            config.token_keys,
            limits,
            config.queue_frames,
            metrics,
            stop_relays.clone(),
        );
        Router {
            tls: Arc::new(tls),
            drain_timeout: config.drain_timeout,
            limits: config.limits,
            http2_windows: config.http2_windows,
            switchboard,
            accept_metrics,
            stop_relays,
            readiness: Readiness::default(),
        }
    }

    /// The pairing state, shared with a QUIC listener that pairs with h2 streams.
    pub(crate) fn switchboard(&self) -> Switchboard {
        self.switchboard.clone()
    }

    /// Which leases have a session live in this router (h2 pairs, and QUIC sessions that
    /// carry a router token), for a controller that embeds the router.
    pub fn session_leases(&self) -> SessionLeases {
        SessionLeases(self.switchboard.clone())
    }

    /// A handle telling whether the router is ready (for `/readyz`).
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting, ends waiting
    /// streams with UNAVAILABLE, lets live pairs go on for the drain timeout, stops the
    /// rest and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status(SERVICE_NAME, ServingStatus::Serving)
            .await;
        let router_service = StreamService::new(self.switchboard.clone());

        let reflection = reflection_services();
        let stop_accepting = CancellationToken::new();
        let incoming = TlsIncoming::start(
            listener,
            self.tls.clone(),
            self.limits.accept,
            Some(self.accept_metrics.clone()),
            stop_accepting.clone(),
        );

        let server = tonic::transport::Server::builder();
        let server = self
            .limits
            .http2
            .apply(self.http2_windows.apply(server))
            .max_frame_size(MAX_FRAME_BYTES)
            .add_service(health_service)
            .add_service(router_service)
            .add_service(reflection.0)
            .add_service(reflection.1)
            .serve_with_incoming_shutdown(incoming, stop_accepting.clone().cancelled_owned());
        let mut server = pin!(server);

        self.readiness.set(true);
        info!("router serving");
        let finished = tokio::select! {
            result = &mut server => Some(result),
            () = shutdown => None,
        };
        self.readiness.set(false);
        let result = match finished {
            Some(result) => {
                warn!("the gRPC server stopped on its own");
                result
            }
            None => {
                info!(drain_timeout = ?self.drain_timeout, "shutting down: draining live streams");
                health
                    .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
                    .await;
                self.switchboard.close();
                stop_accepting.cancel();
                match tokio::time::timeout(self.drain_timeout, &mut server).await {
                    Ok(result) => result,
                    Err(_) => {
                        info!("drain timeout: stopping live streams");
                        self.stop_relays.cancel();
                        tokio::time::timeout(STOP_GRACE, &mut server)
                            .await
                            .unwrap_or(Ok(()))
                    }
                }
            }
        };
        stop_accepting.cancel();
        self.stop_relays.cancel();
        info!("router stopped");
        result.map_err(ServeError::Transport)
    }
}

/// A handle on the pairs of one switchboard: which leases have a session live now.
#[derive(Debug, Clone)]
pub struct SessionLeases(pub(crate) Switchboard);

impl SessionLeases {
    /// The leases (`namespace/name`) with at least one live pair now.
    pub fn leases(&self) -> Vec<String> {
        self.0.leases_in_session()
    }
}
