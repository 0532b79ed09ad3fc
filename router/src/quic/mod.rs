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
//! Map: `exchange` (pairing), `splice` (the pumps), [`metrics`].

mod exchange;
pub mod metrics;
mod splice;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jumpstarter_certs::{
    ClientAuth, Expectation, LeaseIdentity, TlsCredentials, server_config, verify_lease_cert,
};
use jumpstarter_tunnel::{ALPN, code, read_header};
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{RecvStream, SendStream, VarInt};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::pairing::{DEFAULT_MAX_PENDING, DEFAULT_MAX_REMEMBERED, Limits};
use exchange::{Arrival, Exchange, refuse};
use metrics::QuicMetrics;
use splice::Side;

/// How long a QUIC handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a new stream may take to send its header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connections get to close after the drain period.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Everything a QUIC listener needs.
#[derive(Debug, Clone)]
pub struct QuicRouterConfig {
    /// TLS server configuration requiring client certificates from the lease CA; see
    /// [`QuicRouterConfig::new`]. Its ALPN is set to [`ALPN`].
    pub tls: rustls::ServerConfig,
    /// The lease CA bundle, to re-verify the peer leaf and read its identity.
    pub client_ca: Vec<CertificateDer<'static>>,
    /// How long a session stream waits for its peer.
    pub pair_timeout: Duration,
    /// Session streams waiting for a peer, at most.
    pub max_pending: usize,
    /// Paired sessions remembered against a third stream, at most.
    pub max_remembered: usize,
    /// Concurrent session streams per connection.
    pub max_sessions_per_connection: u32,
    /// After a shutdown signal, how long live pairs may go on.
    pub drain_timeout: Duration,
}

impl QuicRouterConfig {
    /// The router's server certificate and the lease CA whose certificates it admits.
    pub fn new(
        credentials: TlsCredentials,
        client_ca: Vec<CertificateDer<'static>>,
    ) -> Result<Self, jumpstarter_certs::Error> {
        let tls = server_config(
            credentials,
            vec![ALPN.to_vec()],
            ClientAuth::Required(client_ca.clone()),
        )?;
        Ok(QuicRouterConfig {
            tls,
            client_ca,
            pair_timeout: Duration::from_secs(30),
            max_pending: DEFAULT_MAX_PENDING,
            max_remembered: DEFAULT_MAX_REMEMBERED,
            max_sessions_per_connection: 1024,
            drain_timeout: Duration::from_secs(30),
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
    client_ca: Arc<Vec<CertificateDer<'static>>>,
    exchange: Exchange,
    metrics: QuicMetrics,
    stop_relays: CancellationToken,
    drain_timeout: Duration,
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
        let crypto = QuicServerConfig::try_from(tls).map_err(QuicSetupError::Tls)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = jumpstarter_tunnel::quic::transport_config();
        transport.max_concurrent_bidi_streams(config.max_sessions_per_connection.into());
        transport.max_concurrent_uni_streams(VarInt::from_u32(0));
        server.transport_config(Arc::new(transport));
        let endpoint = quinn::Endpoint::server(server, addr)
            .map_err(|source| QuicSetupError::Bind { addr, source })?;
        let metrics = QuicMetrics::register(registry);
        let stop_relays = CancellationToken::new();
        let limits = Limits {
            pair_timeout: config.pair_timeout,
            max_pending: config.max_pending,
            max_remembered: config.max_remembered,
        };
        Ok(QuicRouter {
            endpoint,
            client_ca: Arc::new(config.client_ca),
            exchange: Exchange::new(limits, metrics.clone(), stop_relays.clone()),
            metrics,
            stop_relays,
            drain_timeout: config.drain_timeout,
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
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
            let handler = ConnectionHandler {
                client_ca: self.client_ca.clone(),
                exchange: self.exchange.clone(),
                metrics: self.metrics.clone(),
            };
            tokio::spawn(handler.run(incoming));
        }
        info!(drain_timeout = ?self.drain_timeout, "QUIC router shutting down");
        self.endpoint.set_server_config(None);
        self.exchange.close();
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

/// Admits one connection and serves its session streams.
struct ConnectionHandler {
    client_ca: Arc<Vec<CertificateDer<'static>>>,
    exchange: Exchange,
    metrics: QuicMetrics,
}

impl ConnectionHandler {
    async fn run(self, incoming: quinn::Incoming) {
        let remote = incoming.remote_address();
        let connection = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => {
                self.metrics.admission_failed("handshake");
                info!(%remote, %error, "QUIC handshake failed");
                return;
            }
            Err(_) => {
                self.metrics.admission_failed("handshake_timeout");
                debug!(%remote, "QUIC handshake timed out");
                return;
            }
        };
        let (identity, not_after) = match self.admit(&connection) {
            Ok(admitted) => admitted,
            Err(reason) => {
                self.metrics.admission_failed("identity");
                info!(%remote, "connection refused: {reason}");
                connection.close(VarInt::from_u32(code::NOT_ADMITTED), reason.as_bytes());
                return;
            }
        };
        let span = info_span!(
            "quic",
            namespace = %identity.namespace,
            lease = %identity.lease_name,
            role = %identity.role,
        );
        self.metrics.connection_opened();
        self.serve(connection, identity, not_after)
            .instrument(span)
            .await;
        self.metrics.connection_closed();
    }

    /// The peer's lease identity and when its certificate ends, or why it is refused.
    fn admit(&self, connection: &quinn::Connection) -> Result<(LeaseIdentity, Instant), String> {
        let chain = connection
            .peer_identity()
            .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
            .ok_or_else(|| "no client certificate".to_owned())?;
        let now = OffsetDateTime::now_utc();
        let identity = verify_lease_cert(&self.client_ca, &chain, now, &Expectation::any())
            .map_err(|error| error.to_string())?;
        let not_after = chain
            .first()
            .and_then(|leaf| x509_parser::parse_x509_certificate(leaf).ok())
            .map(|(_, cert)| cert.validity().not_after.timestamp())
            .ok_or_else(|| "unreadable client certificate".to_owned())?;
        let remaining = u64::try_from(not_after - now.unix_timestamp()).unwrap_or(0);
        Ok((identity, Instant::now() + Duration::from_secs(remaining)))
    }

    async fn serve(
        &self,
        connection: quinn::Connection,
        identity: LeaseIdentity,
        not_after: Instant,
    ) {
        let identity = Arc::new(identity);
        loop {
            let accepted = tokio::select! {
                accepted = connection.accept_bi() => accepted,
                () = tokio::time::sleep_until(not_after.into()) => {
                    info!("certificate expired: closing the connection");
                    connection.close(VarInt::from_u32(code::NOT_ADMITTED), b"certificate expired");
                    return;
                }
            };
            let (send, recv) = match accepted {
                Ok(streams) => streams,
                Err(error) => {
                    debug!(%error, "connection ended");
                    return;
                }
            };
            let exchange = self.exchange.clone();
            let metrics = self.metrics.clone();
            let identity = identity.clone();
            let connection = connection.clone();
            tokio::spawn(
                async move {
                    session(
                        send,
                        recv,
                        &identity,
                        not_after,
                        &exchange,
                        &metrics,
                        &connection,
                    )
                    .await;
                }
                .in_current_span(),
            );
        }
    }
}

/// Reads a stream's header and hands it to the exchange.
async fn session(
    send: SendStream,
    mut recv: RecvStream,
    identity: &LeaseIdentity,
    not_after: Instant,
    exchange: &Exchange,
    metrics: &QuicMetrics,
    connection: &quinn::Connection,
) {
    let header = match tokio::time::timeout(HEADER_TIMEOUT, read_header(&mut recv)).await {
        Ok(Ok(header)) => header,
        Ok(Err(error)) => {
            info!("session refused: {error}");
            metrics.session_ended("bad_header");
            refuse(Side { send, recv }, code::BAD_HEADER);
            return;
        }
        Err(_) => {
            info!("session refused: no header in time");
            metrics.session_ended("bad_header");
            refuse(Side { send, recv }, code::BAD_HEADER);
            return;
        }
    };
    let span = info_span!("session", id = header.session_id());
    let arrival = Arrival {
        key: format!(
            "{}/{}/{}/{}",
            identity.namespace,
            identity.lease_name,
            identity.lease_uid,
            header.session_id()
        ),
        role: identity.role,
        side: Side { send, recv },
        remember_until: not_after,
    };
    if header.token().is_some() {
        // Tokens matter only for pairing with h2 peers, which this listener does not do yet.
        warn!("ignoring the router token of a QUIC session");
    }
    exchange.arrive(arrival, connection).instrument(span).await;
}
