//! The QUIC listener: sessions as raw bidirectional streams, admitted by mutual TLS.
//!
//! Admission: the TLS handshake requires a client certificate chaining to the lease CA
//! (`WebPkiClientVerifier`, which also checks the validity window); the router then re-reads
//! the leaf with [`verify_lease_cert`] to get the [`LeaseIdentity`] (namespace, lease, uid,
//! role). A connection without a usable identity is closed with
//! [`code::NOT_ADMITTED`](jumpstarter_tunnel::code::NOT_ADMITTED); an admitted one is closed
//! when its certificate expires.
//!
//! Sessions: every bidirectional stream starts with a [`jumpstarter_tunnel::Header`]. Streams
//! are paired by (namespace, lease, lease uid, session id), one from a client-role and one
//! from an exporter-role connection, and spliced byte for byte (FIN is half-close, a reset
//! is mirrored). Refusals reset only the stream concerned, with a code from
//! [`jumpstarter_tunnel::code`].
//!
//! Memory is bounded by configuration: every connection has explicit flow-control windows
//! ([`QuicRouterConfig::transport`]; a session stream waiting for its peer is read up to
//! its header only, so at most its stream window of payload waits in the router, and all
//! of a connection's waiting streams together at most its connection window), granted in
//! full only while [`QuicRouterConfig::window_budget`] lasts (`window_budget`), at most
//! [`QuicRouterConfig::max_sessions_per_connection`] streams each, at most
//! [`QuicRouterConfig::max_connections`] connections.
//!
//! Map: [`reset_key`] (the stateless-reset secret), `admission` (the pure check of a
//! presented chain), `intake` (connection cap and address validation before a handshake),
//! `connection` (handshake, renewals, session streams), `window_budget` (the windows each
//! connection gets; its send window then follows its round-trip time, see
//! [`jumpstarter_tunnel::send_window`]). Pairing is the crate's
//! `switchboard`, the QUIC ↔ QUIC pumps its `splice`, the metrics its `metrics`.

mod admission;
mod connection;
mod intake;
mod reset_key;
mod window_budget;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jumpstarter_certs::{ServingCert, TlsCredentials, TrustedRoots, reloadable_server_config};
use jumpstarter_tunnel::{ALPN, EndpointRole, QuicTransport, TransportGauges, code};
use quinn::VarInt;
use quinn::crypto::rustls::QuicServerConfig;
use rustls_pki_types::CertificateDer;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::metrics::QuicMetrics;
use crate::pairing::{
    DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_PER_LEASE, DEFAULT_MAX_REMEMBERED, Limits, PairLimits,
};
use crate::refusal::Intake;
use crate::switchboard::Switchboard;
use connection::ConnectionHandler;
use intake::{Handshakes, IntakeLimits};
pub use reset_key::ResetKey;
pub(crate) use window_budget::DEFAULT_WINDOW_BUDGET;
use window_budget::WindowBudget;

/// Default connections (handshaking or established) at most. A leased exporter and its
/// client hold one connection each per lease; 2,048 connections serve a thousand leases
/// at once and bound flow-control buffers to about 8 GiB in the worst case (every
/// connection's receive and send windows full), far less in practice.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 2048;

/// Default handshakes from unvalidated addresses in flight beyond which new peers must
/// prove their address with a Retry. Peers reconnecting after a router restart handshake
/// at once, so this is well above a normal burst's concurrency; beyond it a Retry costs a
/// real peer one round trip, and a flood of spoofed Initials no handshake state.
pub(crate) const DEFAULT_RETRY_THRESHOLD: usize = 64;

/// How long the endpoint keeps running after closing every connection at the end of the
/// drain period: long enough to send the CONNECTION_CLOSE packets, which go out at once.
/// Waiting out quinn's full draining state (three probe timeouts per connection) would only
/// delay a restart; a peer whose close packet is lost gets a stateless reset from the next
/// process instead (see [`ResetKey`]).
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Everything a QUIC listener needs.
#[derive(Debug, Clone)]
pub struct QuicRouterConfig {
    /// TLS server configuration requiring client certificates from the lease CA; see
    /// [`QuicRouterConfig::new`]. Its ALPN is set to [`ALPN`].
    pub tls: rustls::ServerConfig,
    /// The lease CA bundle, to re-verify the peer leaf and read its identity; the same
    /// handle the TLS configuration verifies client certificates with, so replacing its
    /// roots takes effect for both at once.
    pub client_ca: Arc<TrustedRoots>,
    /// How long a session stream waits for its peer.
    pub pair_timeout: Duration,
    /// Session streams waiting for a peer, at most.
    pub max_pending: usize,
    /// Paired sessions remembered against a third stream, at most.
    pub max_remembered: usize,
    /// Concurrent session streams per connection. quinn keeps state for every stream a peer
    /// may open, so this bounds an idle connection's memory too: 256 gives about 60 KB per
    /// idle connection (1,024 gave about 132 KB; `jumpstarter-loadtest idle`).
    pub max_sessions_per_connection: u32,
    /// Flow-control windows, congestion controller and MTU bound of connections granted
    /// their full windows.
    pub transport: QuicTransport,
    /// Window bytes (receive + send) granted in full over all connections; beyond it, new
    /// connections get the floor (1 MiB stream / 2 MiB connection / 2 MiB send windows).
    pub window_budget: u64,
    /// Round-trip time from which a connection keeps the send window it was granted; a
    /// nearer peer's is scaled down in proportion, to 512 KiB at least (zero: never
    /// scaled). See [`jumpstarter_tunnel::send_window`].
    pub full_window_rtt: Duration,
    /// Where the transport in force is published (`jumpstarter_quic_*{endpoint="router"}`);
    /// `None` registers new gauges in the listener's registry.
    pub gauges: Option<TransportGauges>,
    /// Connections, handshaking or established, at most; beyond, new attempts are refused.
    pub max_connections: usize,
    /// Handshakes from unvalidated addresses in flight beyond which new peers must
    /// validate their address with a Retry first (0: always).
    pub retry_threshold: usize,
    /// Session streams of one lease that may wait for a peer at once.
    pub max_pending_per_lease: usize,
    /// After a shutdown signal, how long live pairs may go on.
    pub drain_timeout: Duration,
    /// Secret of the stateless-reset tokens. Derived from the server key, so a router
    /// that restarts with the same key (or a replica sharing it) answers packets of
    /// connections it no longer has with a reset their peer recognises: peers of a
    /// crashed router notice at their next packet instead of at their idle timeout.
    pub reset_key: ResetKey,
}

impl QuicRouterConfig {
    /// The router's server certificate and the lease CA whose certificates it admits.
    pub fn new(
        credentials: TlsCredentials,
        client_ca: Vec<CertificateDer<'static>>,
    ) -> Result<Self, jumpstarter_certs::Error> {
        let reset_key = ResetKey::derive(credentials.key.secret_der());
        Self::reloadable(
            ServingCert::new(credentials)?,
            TrustedRoots::new(client_ca)?,
            reset_key,
        )
    }

    /// Like [`QuicRouterConfig::new`], with certificate and lease CA replaceable while the
    /// router runs: every new connection is served with what `cert` and `client_ca` hold
    /// at its handshake.
    pub fn reloadable(
        cert: Arc<ServingCert>,
        client_ca: Arc<TrustedRoots>,
        reset_key: ResetKey,
    ) -> Result<Self, jumpstarter_certs::Error> {
        let tls = reloadable_server_config(cert, vec![ALPN.to_vec()], Some(client_ca.clone()))?;
        Ok(QuicRouterConfig {
            tls,
            client_ca,
            pair_timeout: Duration::from_secs(30),
            max_pending: DEFAULT_MAX_PENDING,
            max_remembered: DEFAULT_MAX_REMEMBERED,
            max_sessions_per_connection: 256,
            transport: QuicTransport::default(),
            window_budget: DEFAULT_WINDOW_BUDGET,
            full_window_rtt: jumpstarter_tunnel::send_window::DEFAULT_FULL_WINDOW_RTT,
            gauges: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            retry_threshold: DEFAULT_RETRY_THRESHOLD,
            max_pending_per_lease: DEFAULT_MAX_PENDING_PER_LEASE,
            drain_timeout: Duration::from_secs(30),
            reset_key,
        })
    }
}

/// Why the QUIC listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum QuicSetupError {
    #[error("the TLS configuration cannot be used for QUIC")]
    Tls(#[source] quinn::crypto::rustls::NoInitialCipherSuite),
    #[error("cannot bind the UDP socket {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The QUIC session router, beside the h2 [`crate::Router`].
#[derive(Debug)]
pub struct QuicRouter {
    endpoint: quinn::Endpoint,
    client_ca: Arc<TrustedRoots>,
    sessions: Switchboard,
    metrics: QuicMetrics,
    stop_relays: CancellationToken,
    drain_timeout: Duration,
    switchboard: Option<Switchboard>,
    intake: IntakeLimits,
    handshakes: Handshakes,
    budget: WindowBudget,
    /// The send window of connections granted full windows, and of the others.
    full_send_window: u64,
    floor_send_window: u64,
    full_window_rtt: Duration,
    gauges: TransportGauges,
}

impl QuicRouter {
    /// Binds the UDP socket `addr` and registers the metrics in `registry`.
    pub fn bind(
        config: QuicRouterConfig,
        addr: SocketAddr,
        registry: &mut prometheus_client::registry::Registry,
    ) -> Result<Self, QuicSetupError> {
        let mut tls = config.tls;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = Arc::new(QuicServerConfig::try_from(tls).map_err(QuicSetupError::Tls)?);
        let max_sessions = config.max_sessions_per_connection;
        let max_incoming = config.max_connections.clamp(1, 1 << 16);
        let server = |settings: &QuicTransport| {
            let mut server = quinn::ServerConfig::with_crypto(crypto.clone());
            let mut transport = settings.to_quinn();
            transport.max_concurrent_bidi_streams(max_sessions.into());
            transport.max_concurrent_uni_streams(VarInt::from_u32(0));
            server.transport_config(Arc::new(transport));
            // quinn's own bound on attempts not yet decided (65,536 by default) and their
            // buffers: attempts are decided at once, a connection cap's worth is plenty.
            server.max_incoming(max_incoming);
            server
        };
        let socket = jumpstarter_tunnel::socket::bind(addr)
            .map_err(|source| QuicSetupError::Bind { addr, source })?;
        let mut endpoint_config = config.reset_key.endpoint_config();
        config.transport.apply_endpoint(&mut endpoint_config);
        let (endpoint, offloads) = jumpstarter_tunnel::socket::endpoint(
            endpoint_config,
            Some(server(&config.transport)),
            socket,
        )
        .map_err(|source| QuicSetupError::Bind { addr, source })?;
        let gauges = config
            .gauges
            .unwrap_or_else(|| TransportGauges::register(registry));
        gauges.started(EndpointRole::Router, &config.transport, offloads);
        let metrics = QuicMetrics::register(registry);
        let budget = WindowBudget::new(
            config.window_budget,
            &config.transport,
            server,
            metrics.window_budget.clone(),
        );
        info!(
            budget = config.window_budget,
            full_windows_per_connection = window_budget::full_bytes(&config.transport),
            floor_windows_per_connection =
                window_budget::full_bytes(&window_budget::floor_of(&config.transport)),
            max_connections = config.max_connections,
            worst_case_bytes = window_budget::worst_case(
                config.window_budget,
                config.max_connections,
                &config.transport
            ),
            "QUIC flow-control memory: the budget in full windows, the floor beyond it"
        );
        let stop_relays = CancellationToken::new();
        let limits = Limits {
            pair_timeout: config.pair_timeout,
            max_pending: config.max_pending,
            max_remembered: config.max_remembered,
        };
        let sessions = Switchboard::for_sessions(limits, metrics.clone(), stop_relays.clone());
        sessions.set_pair_limits(PairLimits {
            max_pending_per_lease: config.max_pending_per_lease,
            ..PairLimits::default()
        });
        Ok(QuicRouter {
            endpoint,
            client_ca: config.client_ca,
            sessions,
            handshakes: Handshakes::new(metrics.clone()),
            metrics,
            stop_relays,
            drain_timeout: config.drain_timeout,
            switchboard: None,
            intake: IntakeLimits {
                max_connections: config.max_connections,
                retry_threshold: config.retry_threshold,
            },
            budget,
            full_send_window: config.transport.send_window,
            floor_send_window: window_budget::floor_of(&config.transport).send_window,
            full_window_rtt: config.full_window_rtt,
            gauges,
        })
    }

    /// Lets QUIC sessions that carry a router token pair with 0.9.0 h2 streams of `router`
    /// (and with each other) by the token's stream id: a QUIC client with an h2 exporter, an
    /// h2 client with a QUIC exporter. Without this, such tokens are ignored and sessions
    /// pair by lease and session id among QUIC streams only.
    pub fn pair_with_h2(&mut self, router: &crate::Router) {
        self.switchboard = Some(router.switchboard());
    }

    /// Which leases have a QUIC session live in this listener, paired by lease and session
    /// id (sessions paired by router token count in [`crate::Router::session_leases`]).
    pub fn session_leases(&self) -> crate::SessionLeases {
        crate::server::SessionLeases(self.sessions.clone())
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Decides about a connection attempt (see `intake`) and starts its handshake, if any.
    fn admit(&self, incoming: quinn::Incoming) {
        let validated = incoming.remote_address_validated();
        let verdict = intake::decide(
            self.intake,
            self.endpoint.open_connections(),
            self.handshakes.in_flight(),
            validated,
            incoming.may_retry(),
        );
        self.metrics.connection_attempt(verdict);
        let remote = incoming.remote_address();
        match verdict {
            Intake::TooManyConnections => {
                tracing::debug!(%remote, "connection refused: too many connections");
                incoming.refuse();
            }
            Intake::Retried => {
                // Invariant: `decide` answers Retried only when quinn may send a Retry.
                if let Err(error) = incoming.retry() {
                    error.into_incoming().ignore();
                }
            }
            Intake::Accepted => {
                let unvalidated = (!validated).then(|| self.handshakes.start());
                // Accepting here, not in the task, counts the connection at once in
                // `open_connections`, so a burst cannot overshoot the cap.
                let (server, grant) = self.budget.grant();
                let connecting = match incoming.accept_with(server) {
                    Ok(connecting) => connecting,
                    Err(error) => {
                        self.metrics.admission_failed("handshake");
                        tracing::debug!(%remote, %error, "QUIC connection attempt failed");
                        return;
                    }
                };
                let handler = ConnectionHandler {
                    client_ca: self.client_ca.clone(),
                    sessions: self.sessions.clone(),
                    streams: self.switchboard.clone(),
                    metrics: self.metrics.clone(),
                    gauges: self.gauges.clone(),
                    send_window: if grant.is_some() {
                        self.full_send_window
                    } else {
                        self.floor_send_window
                    },
                    full_window_rtt: self.full_window_rtt,
                };
                tokio::spawn(handler.run(connecting, remote, unvalidated, grant));
            }
        }
    }

    /// Serves until `shutdown` completes; then refuses new connections and sessions, resets
    /// waiting streams, lets live pairs go on for the drain timeout and closes the rest.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        info!(addr = ?self.endpoint.local_addr().ok(), "QUIC router serving");
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let incoming = tokio::select! {
                incoming = self.endpoint.accept() => incoming,
                () = &mut shutdown => break,
            };
            let Some(incoming) = incoming else { break };
            self.admit(incoming);
        }
        info!(drain_timeout = ?self.drain_timeout, "QUIC router shutting down");
        self.endpoint.set_server_config(None);
        self.sessions.close();
        let idle = tokio::time::timeout(self.drain_timeout, self.endpoint.wait_idle()).await;
        if idle.is_err() {
            self.stop_relays.cancel();
            self.endpoint.close(
                VarInt::from_u32(code::SHUTTING_DOWN),
                b"router shutting down",
            );
            let _ = tokio::time::timeout(STOP_GRACE, self.endpoint.wait_idle()).await;
        }
        self.stop_relays.cancel();
        info!("QUIC router stopped");
    }
}
