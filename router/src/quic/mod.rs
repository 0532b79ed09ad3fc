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
pub(crate) mod splice;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jumpstarter_certs::{
    ClientAuth, Expectation, LeaseIdentity, TlsCredentials, server_config, verify_lease_cert,
};
use jumpstarter_shell::error_chain::error_chain;
use jumpstarter_tunnel::renewal::{self, Reply};
use jumpstarter_tunnel::{ALPN, Opening, code, read_opening};
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{RecvStream, SendStream, VarInt};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span};

use crate::pairing::{DEFAULT_MAX_PENDING, DEFAULT_MAX_REMEMBERED, Limits};
use crate::switchboard::Switchboard;
pub(crate) use exchange::refuse;
use exchange::{Arrival, Exchange};
use metrics::QuicMetrics;
pub(crate) use splice::Side;

/// How long a QUIC handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a new stream may take to send its header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// The lease CA bundle, to re-verify the peer leaf and read its identity.
    pub client_ca: Vec<CertificateDer<'static>>,
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
    /// After a shutdown signal, how long live pairs may go on.
    pub drain_timeout: Duration,
    /// Secret of the stateless-reset tokens. Derived from the server key, so a router
    /// that restarts with the same key (or a replica sharing it) answers packets of
    /// connections it no longer has with a reset their peer recognises: peers of a
    /// crashed router notice at their next packet instead of at their idle timeout.
    pub reset_key: ResetKey,
}

/// The secret behind a router's QUIC stateless resets and connection ids (never logged).
///
/// A peer accepts a stateless reset only if it carries the token the router derived from
/// the connection id with this secret; and the router answers a packet for a connection it
/// does not know only if the connection id validates as one of its own (quinn's keyed
/// generator). So both come from this one secret.
#[derive(Clone)]
pub struct ResetKey([u8; 40]);

impl std::fmt::Debug for ResetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResetKey(..)")
    }
}

impl ResetKey {
    /// HKDF-SHA256 of a long-lived secret (the server's private key by default), for
    /// this one purpose.
    pub fn derive(secret: &[u8]) -> ResetKey {
        struct Len;
        impl ring::hkdf::KeyType for Len {
            fn len(&self) -> usize {
                40
            }
        }
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"jumpstarter-router");
        let mut key = [0u8; 40];
        let expanded = salt
            .extract(secret)
            .expand(&[b"quic stateless reset"], Len)
            .and_then(|okm| okm.fill(&mut key));
        // Only a length beyond 255 hash lengths fails; 40 bytes cannot.
        debug_assert!(expanded.is_ok());
        ResetKey(key)
    }

    /// The endpoint configuration: reset tokens and connection ids keyed by this secret.
    fn endpoint_config(&self) -> quinn::EndpointConfig {
        let (hmac, cid) = self.0.split_at(32);
        let mut config = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            hmac,
        )));
        let mut cid_key = [0u8; 8];
        cid_key.copy_from_slice(cid);
        let cid_key = u64::from_le_bytes(cid_key);
        config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        // quinn sends at most one reset per 20 ms by default: after a crash, most of a
        // thousand peers' keep-alives then go unanswered and those peers wait for their
        // idle timeout (load-test scenario 6). A reset is always smaller than the packet
        // that caused it, so answering every one amplifies nothing.
        config.min_reset_interval(Duration::ZERO);
        config
    }
}

impl QuicRouterConfig {
    /// The router's server certificate and the lease CA whose certificates it admits.
    pub fn new(
        credentials: TlsCredentials,
        client_ca: Vec<CertificateDer<'static>>,
    ) -> Result<Self, jumpstarter_certs::Error> {
        let reset_key = ResetKey::derive(credentials.key.secret_der());
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
            max_sessions_per_connection: 256,
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
    client_ca: Arc<Vec<CertificateDer<'static>>>,
    exchange: Exchange,
    metrics: QuicMetrics,
    stop_relays: CancellationToken,
    drain_timeout: Duration,
    switchboard: Option<Switchboard>,
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
        let socket = jumpstarter_tunnel::socket::bind(addr)
            .map_err(|source| QuicSetupError::Bind { addr, source })?;
        let endpoint = quinn::Endpoint::new(
            config.reset_key.endpoint_config(),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
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
            switchboard: None,
        })
    }

    /// Lets QUIC sessions that carry a router token pair with 0.9.0 h2 streams of `router`
    /// (and with each other) by the token's stream id: a QUIC client with an h2 exporter, an
    /// h2 client with a QUIC exporter. Without this, such tokens are ignored and sessions
    /// pair by lease and session id among QUIC streams only.
    pub fn pair_with_h2(&mut self, router: &crate::Router) {
        self.switchboard = Some(router.switchboard());
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
                switchboard: self.switchboard.clone(),
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
#[derive(Clone)]
struct ConnectionHandler {
    client_ca: Arc<Vec<CertificateDer<'static>>>,
    exchange: Exchange,
    switchboard: Option<Switchboard>,
    metrics: QuicMetrics,
}

/// What the router knows about an admitted connection: whom it admitted and until when.
#[derive(Debug)]
struct Admitted {
    identity: LeaseIdentity,
    /// The public key of the handshake certificate; renewals must keep it.
    public_key: Vec<u8>,
    /// When the newest accepted certificate ends; renewals move it.
    deadline: tokio::sync::watch::Sender<Instant>,
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
        let admitted = match self.admit(&connection) {
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
            namespace = %admitted.identity.namespace,
            lease = %admitted.identity.lease_name,
            role = %admitted.identity.role,
        );
        self.metrics.connection_opened();
        self.serve(connection, Arc::new(admitted))
            .instrument(span)
            .await;
        self.metrics.connection_closed();
    }

    /// The peer's lease identity and when its certificate ends, or why it is refused.
    fn admit(&self, connection: &quinn::Connection) -> Result<Admitted, String> {
        let chain = connection
            .peer_identity()
            .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
            .ok_or_else(|| "no client certificate".to_owned())?;
        let (identity, public_key, deadline) = self.check(&chain)?;
        Ok(Admitted {
            identity,
            public_key,
            deadline: tokio::sync::watch::Sender::new(deadline),
        })
    }

    /// Verifies a presented chain now: its identity, the leaf's public key and when (as an
    /// `Instant`) the leaf ends.
    fn check(
        &self,
        chain: &[CertificateDer<'static>],
    ) -> Result<(LeaseIdentity, Vec<u8>, Instant), String> {
        let now = OffsetDateTime::now_utc();
        let identity = verify_lease_cert(&self.client_ca, chain, now, &Expectation::any())
            .map_err(|error| error.to_string())?;
        let (_, leaf) = chain
            .first()
            .and_then(|leaf| x509_parser::parse_x509_certificate(leaf).ok())
            .ok_or_else(|| "unreadable client certificate".to_owned())?;
        let not_after = leaf.validity().not_after.timestamp();
        let public_key = leaf.public_key().raw.to_vec();
        let remaining = u64::try_from(not_after - now.unix_timestamp()).unwrap_or(0);
        Ok((
            identity,
            public_key,
            Instant::now() + Duration::from_secs(remaining),
        ))
    }

    async fn serve(&self, connection: quinn::Connection, admitted: Arc<Admitted>) {
        let mut deadline = admitted.deadline.subscribe();
        loop {
            let until = *deadline.borrow_and_update();
            let accepted = tokio::select! {
                accepted = connection.accept_bi() => accepted,
                () = tokio::time::sleep_until(until.into()) => {
                    info!("certificate expired: closing the connection");
                    self.metrics.connection_expired();
                    connection.close(
                        VarInt::from_u32(code::CERTIFICATE_EXPIRED),
                        b"certificate expired",
                    );
                    return;
                }
                _ = deadline.changed() => continue,
            };
            let (send, recv) = match accepted {
                Ok(streams) => streams,
                Err(error) => {
                    debug!(%error, "connection ended");
                    return;
                }
            };
            let handler = self.clone();
            let admitted = admitted.clone();
            let connection = connection.clone();
            tokio::spawn(
                async move {
                    handler.stream(send, recv, &admitted, &connection).await;
                }
                .in_current_span(),
            );
        }
    }

    /// Reads what a new stream opens with and acts on it.
    async fn stream(
        &self,
        send: SendStream,
        mut recv: RecvStream,
        admitted: &Admitted,
        connection: &quinn::Connection,
    ) {
        let opening = match tokio::time::timeout(HEADER_TIMEOUT, read_opening(&mut recv)).await {
            Ok(Ok(opening)) => opening,
            Ok(Err(error)) => {
                info!("stream refused: {}", error_chain(&error));
                self.metrics.session_ended("bad_header");
                refuse(Side { send, recv }, code::BAD_HEADER);
                return;
            }
            Err(_) => {
                info!("stream refused: no header in time");
                self.metrics.session_ended("bad_header");
                refuse(Side { send, recv }, code::BAD_HEADER);
                return;
            }
        };
        match opening {
            Opening::Renewal(chain) => self.renew(send, &chain, admitted),
            Opening::Session(header) => {
                let side = Side { send, recv };
                self.session(side, &header, admitted, connection).await;
            }
        }
    }

    /// Checks a renewed certificate: valid now, same identity, same key; then moves the
    /// connection's end to the new certificate's end.
    fn renew(&self, mut send: SendStream, chain: &[CertificateDer<'static>], admitted: &Admitted) {
        let verdict = self.check(chain).and_then(|(identity, public_key, until)| {
            if identity != admitted.identity {
                return Err(format!(
                    "the certificate is for {} {}/{} (lease uid {}), not for this connection's {} {}/{} (lease uid {})",
                    identity.role,
                    identity.namespace,
                    identity.lease_name,
                    identity.lease_uid,
                    admitted.identity.role,
                    admitted.identity.namespace,
                    admitted.identity.lease_name,
                    admitted.identity.lease_uid,
                ));
            }
            if public_key != admitted.public_key {
                return Err("the certificate is for another key than the connection's".to_owned());
            }
            Ok(until)
        });
        let reply = match verdict {
            Ok(until) => {
                admitted.deadline.send_replace(until);
                let not_after = OffsetDateTime::now_utc().unix_timestamp()
                    + i64::try_from(until.saturating_duration_since(Instant::now()).as_secs())
                        .unwrap_or(i64::MAX / 2);
                info!(
                    valid_for_s = until.saturating_duration_since(Instant::now()).as_secs(),
                    "certificate renewed"
                );
                self.metrics.renewal("accepted");
                Reply::Accepted { not_after }
            }
            Err(reason) => {
                info!("renewal refused: {reason}");
                self.metrics.renewal("refused");
                Reply::Refused { reason }
            }
        };
        let bytes = renewal::encode_reply(&reply);
        tokio::spawn(
            async move {
                if send.write_all(&bytes).await.is_ok() {
                    let _ = send.finish();
                }
            }
            .in_current_span(),
        );
    }

    /// Hands a session stream to the h2 switchboard (it carries a router token and this
    /// router pairs with h2) or to the QUIC exchange.
    async fn session(
        &self,
        side: Side,
        header: &jumpstarter_tunnel::Header,
        admitted: &Admitted,
        connection: &quinn::Connection,
    ) {
        let identity = &admitted.identity;
        let span = info_span!("session", id = header.session_id());
        if let (Some(token), Some(switchboard)) = (header.token(), &self.switchboard) {
            let lease = format!("{}/{}", identity.namespace, identity.lease_name);
            switchboard
                .arrive_quic(
                    token,
                    &lease,
                    identity.role,
                    side,
                    self.metrics.clone(),
                    connection,
                )
                .instrument(span)
                .await;
            return;
        }
        if header.token().is_some() {
            debug!("this router does not pair with h2: the session's router token is not used");
        }
        let arrival = Arrival {
            key: format!(
                "{}/{}/{}/{}",
                identity.namespace,
                identity.lease_name,
                identity.lease_uid,
                header.session_id()
            ),
            role: identity.role,
            side,
            remember_until: *admitted.deadline.borrow(),
        };
        self.exchange
            .arrive(arrival, connection)
            .instrument(span)
            .await;
    }
}
