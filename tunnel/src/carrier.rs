//! gRPC over QUIC: every bidirectional QUIC stream carries one plaintext HTTP/2 connection.
//!
//! This lets a host that reaches the service only over UDP make its controller calls too.
//! TLS is QUIC's own (server certificate only, ALPN [`CARRIER_ALPN`]); callers authenticate
//! with their bearer tokens exactly as over TCP, so the same tonic services serve both.
//!
//! - Server: [`CarrierServer::bind`] a UDP socket, then [`CarrierServer::serve`] tonic
//!   [`Routes`] on it (or take [`CarrierServer::incoming`], a stream of [`CarrierStream`]s for
//!   `serve_with_incoming`). Each accepted bidirectional stream is one HTTP/2 connection.
//!   The server holds at most a configured number of QUIC connections (more are refused
//!   with CONNECTION_REFUSED and counted), asks unvalidated peers for a Retry (address
//!   validation) while many handshakes are in flight, and applies the port's HTTP/2
//!   limits ([`CarrierServer::with_limits`]).
//! - Client: [`channel`] returns a tonic [`Channel`] whose connector ([`CarrierConnector`])
//!   opens a bidirectional stream on one shared QUIC connection, reconnecting when that
//!   connection has died.
//!
//! ```text
//! let server = CarrierServer::bind(addr, server_tls)?;
//! tokio::spawn(server.serve(routes, shutdown));
//! let channel = carrier::channel("127.0.0.1:8082", "127.0.0.1", client_tls)?;
//! ```

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use jumpstarter_shell::accept_loop::{AcceptMetrics, MAX_CONNECTIONS, Refusal};
use jumpstarter_shell::http2_limits::Http2Limits;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{RecvStream, SendStream, VarInt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::Service;
use tonic::codegen::http::Uri;
use tonic::service::Routes;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

use crate::socket::Offloads;
use crate::transport::QuicTransport;
use crate::transport_gauges::{EndpointRole, TransportGauges};

/// The ALPN protocol of gRPC carried over QUIC streams.
pub const CARRIER_ALPN: &[u8] = b"jumpstarter-grpc/1";

/// How long a QUIC handshake may take before the peer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepted streams waiting for the HTTP/2 server: a short queue, the server takes them
/// immediately; a full queue only delays the next accept.
const ACCEPT_QUEUE: usize = 64;

/// QUIC handshakes in flight above which peers whose address is not validated yet are
/// asked for a Retry first: a spoofed source cannot answer it, so a flood of forged
/// Initial packets then costs one stateless packet each instead of a handshake. Honest
/// peers pay one round trip more, only while the listener is that busy.
const RETRY_ABOVE_HANDSHAKES: usize = 64;

/// HTTP/2 connections one client may keep open at once. A tonic channel uses one; the rest
/// absorb reconnects and several channels sharing a peer address.
const MAX_STREAMS_PER_CONNECTION: u32 = 64;

/// Why the carrier could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum CarrierError {
    #[error("the TLS configuration cannot be used for QUIC")]
    Quic(#[source] quinn::crypto::rustls::NoInitialCipherSuite),
    #[error("cannot bind the UDP socket {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot resolve {target}")]
    Resolve {
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("{target} resolves to no address")]
    NoAddress { target: String },
    #[error("cannot open a UDP socket")]
    Socket(#[source] io::Error),
    #[error("cannot connect to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: quinn::ConnectError,
    },
    #[error("the QUIC connection to {addr} failed")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: quinn::ConnectionError,
    },
    #[error("cannot open a stream to {target}")]
    Open {
        target: String,
        #[source]
        source: quinn::ConnectionError,
    },
    #[error("{target:?} is not a valid channel address")]
    Uri {
        target: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the gRPC server on the QUIC listener failed")]
    Serve(#[source] tonic::transport::Error),
}

/// One HTTP/2 connection's bytes: a bidirectional QUIC stream. Shutting down the write
/// side finishes the stream (FIN).
#[derive(Debug)]
pub struct CarrierStream {
    send: SendStream,
    recv: RecvStream,
    remote: SocketAddr,
}

/// What the server knows about a carried connection (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CarrierConnectInfo {
    /// The peer's UDP address.
    pub remote: SocketAddr,
}

impl CarrierStream {
    /// The peer's UDP address.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }
}

impl AsyncRead for CarrierStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for CarrierStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.send).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.send).poll_shutdown(cx)
    }
}

impl Connected for CarrierStream {
    type ConnectInfo = CarrierConnectInfo;

    fn connect_info(&self) -> CarrierConnectInfo {
        CarrierConnectInfo {
            remote: self.remote,
        }
    }
}

/// A QUIC listener whose streams are HTTP/2 connections.
#[derive(Debug)]
pub struct CarrierServer {
    endpoint: quinn::Endpoint,
    transport: QuicTransport,
    offloads: Offloads,
    gauges: Option<TransportGauges>,
    max_connections: usize,
    http2: Http2Limits,
    metrics: Option<AcceptMetrics>,
}

impl CarrierServer {
    /// Binds the UDP socket `addr`, presenting the certificate of `tls` (its ALPN is set to
    /// [`CARRIER_ALPN`]; it should not ask for client certificates).
    pub fn bind(addr: SocketAddr, tls: rustls::ServerConfig) -> Result<Self, CarrierError> {
        CarrierServer::bind_with(addr, tls, QuicTransport::default())
    }

    /// Like [`CarrierServer::bind`], with the given transport settings.
    pub fn bind_with(
        addr: SocketAddr,
        mut tls: rustls::ServerConfig,
        settings: QuicTransport,
    ) -> Result<Self, CarrierError> {
        tls.alpn_protocols = vec![CARRIER_ALPN.to_vec()];
        let crypto = QuicServerConfig::try_from(tls).map_err(CarrierError::Quic)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = settings.to_quinn();
        transport.max_concurrent_bidi_streams(MAX_STREAMS_PER_CONNECTION.into());
        transport.max_concurrent_uni_streams(VarInt::from_u32(0));
        server.transport_config(Arc::new(transport));
        let socket =
            crate::socket::bind(addr).map_err(|source| CarrierError::Bind { addr, source })?;
        let (endpoint, offloads) =
            crate::socket::endpoint(settings.endpoint_config(), Some(server), socket)
                .map_err(|source| CarrierError::Bind { addr, source })?;
        Ok(CarrierServer {
            endpoint,
            transport: settings,
            offloads,
            gauges: None,
            max_connections: MAX_CONNECTIONS,
            http2: Http2Limits::default(),
            metrics: None,
        })
    }

    /// Holds at most `max_connections` QUIC connections (refusals and counts go to
    /// `metrics`) and serves with the HTTP/2 limits `http2`.
    pub fn with_limits(
        mut self,
        max_connections: usize,
        http2: Http2Limits,
        metrics: Option<AcceptMetrics>,
    ) -> Self {
        self.max_connections = max_connections.max(1);
        self.http2 = http2;
        self.metrics = metrics;
        self
    }

    /// Publishes the transport in force as the `controller` endpoint's gauges (and reads
    /// the congestion controller of every new connection into them).
    pub fn with_gauges(mut self, gauges: TransportGauges) -> Self {
        self.gauges = Some(gauges);
        self
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Accepts connections and their streams in the background; each stream is one item.
    /// Dropping the returned stream stops accepting and closes the endpoint.
    pub fn incoming(self) -> ReceiverStream<Result<CarrierStream, io::Error>> {
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let gauges = self.gauges.unwrap_or_default();
        gauges.started(EndpointRole::Controller, &self.transport, self.offloads);
        let counts = Arc::new(Counts {
            max_connections: self.max_connections,
            metrics: self.metrics,
            gauges,
            connections: AtomicUsize::new(0),
            handshakes: AtomicUsize::new(0),
        });
        tokio::spawn(accept_loop(self.endpoint, counts, tx));
        ReceiverStream::new(rx)
    }

    /// Serves `routes` on every accepted stream until `shutdown` completes, then lets the
    /// calls in flight finish.
    pub async fn serve(
        self,
        routes: Routes,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), CarrierError> {
        let addr = self.local_addr().ok();
        tracing::info!(?addr, "gRPC over QUIC listening");
        let mut server = self.http2.apply(tonic::transport::Server::builder());
        let result = server
            .add_routes(routes)
            .serve_with_incoming_shutdown(self.incoming(), shutdown)
            .await
            .map_err(CarrierError::Serve);
        tracing::info!(?addr, "gRPC over QUIC stopped");
        result
    }
}

/// The listener's open connections and handshakes in flight.
#[derive(Debug)]
struct Counts {
    max_connections: usize,
    metrics: Option<AcceptMetrics>,
    /// What the listener runs with (unregistered when nobody asked for metrics).
    gauges: TransportGauges,
    connections: AtomicUsize,
    handshakes: AtomicUsize,
}

impl Counts {
    /// Takes a connection slot (and a handshake slot), or `None` when all are taken.
    fn admit(self: &Arc<Self>) -> Option<Slot> {
        let admitted = self
            .connections
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |open| {
                (open < self.max_connections).then_some(open + 1)
            })
            .is_ok();
        if !admitted {
            if let Some(metrics) = &self.metrics {
                metrics.refused(Refusal::Connections);
            }
            return None;
        }
        self.handshakes.fetch_add(1, Ordering::SeqCst);
        self.publish();
        Some(Slot {
            counts: self.clone(),
            handshaking: true,
        })
    }

    fn publish(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.counts(
                self.connections.load(Ordering::SeqCst),
                self.handshakes.load(Ordering::SeqCst),
            );
        }
    }
}

/// One connection's place in [`Counts`], released when dropped.
#[derive(Debug)]
struct Slot {
    counts: Arc<Counts>,
    handshaking: bool,
}

impl Slot {
    fn handshake_ended(&mut self) {
        if std::mem::take(&mut self.handshaking) {
            self.counts.handshakes.fetch_sub(1, Ordering::SeqCst);
            self.counts.publish();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.handshake_ended();
        self.counts.connections.fetch_sub(1, Ordering::SeqCst);
        self.counts.publish();
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    counts: Arc<Counts>,
    tx: mpsc::Sender<Result<CarrierStream, io::Error>>,
) {
    loop {
        let incoming = tokio::select! {
            () = tx.closed() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        if !incoming.remote_address_validated()
            && incoming.may_retry()
            && counts.handshakes.load(Ordering::SeqCst) >= RETRY_ABOVE_HANDSHAKES
        {
            // Stateless: the peer comes back with a token proving its address.
            if let Err(error) = incoming.retry() {
                tracing::debug!(?error, "cannot send a QUIC Retry");
            }
            continue;
        }
        let Some(slot) = counts.admit() else {
            tracing::debug!(remote = %incoming.remote_address(), "QUIC connection refused: listener full");
            incoming.refuse();
            continue;
        };
        tokio::spawn(serve_connection(incoming, slot, tx.clone()));
    }
    endpoint.close(VarInt::from_u32(crate::code::SHUTTING_DOWN), b"stopped");
}

async fn serve_connection(
    incoming: quinn::Incoming,
    mut slot: Slot,
    tx: mpsc::Sender<Result<CarrierStream, io::Error>>,
) {
    let remote = incoming.remote_address();
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await;
    slot.handshake_ended();
    let connection = match handshake {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            tracing::debug!(%remote, %error, "QUIC handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "QUIC handshake timed out");
            return;
        }
    };
    let congestion = slot
        .counts
        .gauges
        .connection(EndpointRole::Controller, &connection);
    tracing::debug!(%remote, ?congestion, "carrier connection open");
    loop {
        let accepted = tokio::select! {
            () = tx.closed() => break,
            accepted = connection.accept_bi() => accepted,
        };
        match accepted {
            Ok((send, recv)) => {
                let stream = CarrierStream { send, recv, remote };
                if tx.send(Ok(stream)).await.is_err() {
                    break;
                }
            }
            Err(error) => {
                tracing::debug!(%remote, %error, "carrier connection ended");
                return;
            }
        }
    }
    connection.close(VarInt::from_u32(crate::code::SHUTTING_DOWN), b"stopped");
}

/// A tonic channel to the carrier server at `target` (`host:port`, resolved at every
/// reconnect) whose certificate must name `server_name` and chain to the roots of `tls`.
/// Lazy: nothing is sent before the first call.
pub fn channel(
    target: &str,
    server_name: &str,
    tls: rustls::ClientConfig,
) -> Result<Channel, CarrierError> {
    channel_with(target, server_name, tls, &QuicTransport::default())
}

/// Like [`channel`], with the given transport settings.
pub fn channel_with(
    target: &str,
    server_name: &str,
    tls: rustls::ClientConfig,
    transport: &QuicTransport,
) -> Result<Channel, CarrierError> {
    let connector = CarrierConnector::new_with(target, server_name, tls, transport)?;
    let endpoint =
        Endpoint::from_shared(format!("http://{target}")).map_err(|source| CarrierError::Uri {
            target: target.to_owned(),
            source,
        })?;
    Ok(endpoint
        .connect_timeout(HANDSHAKE_TIMEOUT)
        .connect_with_connector_lazy(connector))
}

/// Opens HTTP/2 connections as streams of one shared QUIC connection; a tonic connector.
#[derive(Debug, Clone)]
pub struct CarrierConnector {
    shared: Arc<ConnectorShared>,
}

#[derive(Debug)]
struct ConnectorShared {
    target: String,
    server_name: String,
    config: quinn::ClientConfig,
    transport: QuicTransport,
    /// The live connection, with the endpoint (socket) it was made on.
    live: tokio::sync::Mutex<Option<(quinn::Connection, quinn::Endpoint)>>,
}

impl CarrierConnector {
    /// A connector to `target` (`host:port`), verifying the certificate for `server_name`
    /// with `tls` (its ALPN is set to [`CARRIER_ALPN`]).
    pub fn new(
        target: &str,
        server_name: &str,
        tls: rustls::ClientConfig,
    ) -> Result<Self, CarrierError> {
        CarrierConnector::new_with(target, server_name, tls, &QuicTransport::default())
    }

    /// Like [`CarrierConnector::new`], with the given transport settings.
    pub fn new_with(
        target: &str,
        server_name: &str,
        mut tls: rustls::ClientConfig,
        transport: &QuicTransport,
    ) -> Result<Self, CarrierError> {
        tls.alpn_protocols = vec![CARRIER_ALPN.to_vec()];
        let crypto = QuicClientConfig::try_from(tls).map_err(CarrierError::Quic)?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(Arc::new(transport.to_quinn()));
        Ok(CarrierConnector {
            shared: Arc::new(ConnectorShared {
                target: target.to_owned(),
                server_name: server_name.to_owned(),
                config,
                transport: *transport,
                live: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// Opens one stream (one HTTP/2 connection's worth of bytes), connecting first when
    /// there is no live QUIC connection.
    pub async fn open(&self) -> Result<CarrierStream, CarrierError> {
        let shared = &self.shared;
        let connection = {
            let mut live = shared.live.lock().await;
            match live.as_ref() {
                Some((connection, _)) if connection.close_reason().is_none() => connection.clone(),
                _ => {
                    let (connection, endpoint) = shared.connect().await?;
                    *live = Some((connection.clone(), endpoint));
                    connection
                }
            }
        };
        let remote = connection.remote_address();
        let (send, recv) = connection
            .open_bi()
            .await
            .map_err(|source| CarrierError::Open {
                target: shared.target.clone(),
                source,
            })?;
        Ok(CarrierStream { send, recv, remote })
    }
}

impl ConnectorShared {
    async fn connect(&self) -> Result<(quinn::Connection, quinn::Endpoint), CarrierError> {
        let addr = tokio::net::lookup_host(self.target.as_str())
            .await
            .map_err(|source| CarrierError::Resolve {
                target: self.target.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| CarrierError::NoAddress {
                target: self.target.clone(),
            })?;
        let local: SocketAddr = if addr.is_ipv6() {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let (endpoint, _) = crate::socket::client_endpoint_for(local, &self.transport)
            .map_err(CarrierError::Socket)?;
        let connecting = endpoint
            .connect_with(self.config.clone(), addr, &self.server_name)
            .map_err(|source| CarrierError::Connect { addr, source })?;
        let connection = connecting
            .await
            .map_err(|source| CarrierError::Handshake { addr, source })?;
        tracing::debug!(%addr, "carrier connection established");
        Ok((connection, endpoint))
    }
}

impl Service<Uri> for CarrierConnector {
    type Response = TokioIo<CarrierStream>;
    type Error = CarrierError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, CarrierError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), CarrierError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move { connector.open().await.map(TokioIo::new) })
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use jumpstarter_certs::{Ca, ClientAuth, ServerCertParams, client_config, server_config};
    use time::OffsetDateTime;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    use super::*;

    const WAIT: Duration = Duration::from_secs(20);

    fn pki(names: &[&str]) -> (rustls::ServerConfig, Ca) {
        let now = OffsetDateTime::now_utc();
        let ca = Ca::generate("carrier test CA", now, time::Duration::hours(1)).unwrap();
        let mut params = ServerCertParams {
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            validity: time::Duration::hours(1),
        };
        for name in names {
            match name.parse::<IpAddr>() {
                Ok(ip) => params.ip_addresses.push(ip),
                Err(_) => params.dns_names.push((*name).to_owned()),
            }
        }
        let issued = ca.issue_server_cert(&params, now).unwrap();
        let tls = server_config(issued.credentials(), Vec::new(), ClientAuth::None).unwrap();
        (tls, ca)
    }

    async fn health_server(tls: rustls::ServerConfig) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("carrier.Test", tonic_health::ServingStatus::Serving)
            .await;
        let server = CarrierServer::bind("127.0.0.1:0".parse().unwrap(), tls).unwrap();
        let addr = server.local_addr().unwrap();
        let routes = Routes::new(service);
        let task = tokio::spawn(async move {
            // Keep the reporter alive as long as the server.
            let _reporter = reporter;
            server.serve(routes, std::future::pending()).await.unwrap();
        });
        (addr, task)
    }

    /// The QUIC connection the connector's channel currently runs on.
    async fn live_connection(connector: &CarrierConnector) -> quinn::Connection {
        connector
            .shared
            .live
            .lock()
            .await
            .as_ref()
            .expect("a live connection")
            .0
            .clone()
    }

    #[tokio::test]
    async fn grpc_calls_travel_over_quic_streams_and_survive_a_reconnect() {
        let (tls, ca) = pki(&["127.0.0.1"]);
        let (addr, task) = health_server(tls).await;
        let client_tls = client_config(vec![ca.cert_der().clone()], None, Vec::new()).unwrap();
        let connector = CarrierConnector::new(&addr.to_string(), "127.0.0.1", client_tls).unwrap();
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
        let channel = endpoint.connect_with_connector_lazy(connector.clone());
        let mut health = HealthClient::new(channel);
        let check = |service: &str| HealthCheckRequest {
            service: service.to_owned(),
        };
        for _ in 0..3 {
            let answer = tokio::time::timeout(WAIT, health.check(check("carrier.Test")))
                .await
                .expect("answer in time")
                .expect("check")
                .into_inner();
            assert_eq!(answer.status, ServingStatus::Serving as i32);
        }
        let unknown = tokio::time::timeout(WAIT, health.check(check("carrier.Unknown")))
            .await
            .expect("answer in time")
            .expect_err("unknown service");
        assert_eq!(unknown.code(), tonic::Code::NotFound);

        // Kill the QUIC connection under the channel: the next calls reconnect.
        let first = live_connection(&connector).await;
        first.close(VarInt::from_u32(0), b"test");
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout(WAIT, health.check(check("carrier.Test"))).await {
                Ok(Ok(answer)) => {
                    assert_eq!(answer.into_inner().status, ServingStatus::Serving as i32);
                    break;
                }
                _ => assert!(std::time::Instant::now() < deadline, "no reconnect"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let second = live_connection(&connector).await;
        assert_ne!(first.stable_id(), second.stable_id(), "a new connection");
        task.abort();
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_refused_and_counted() {
        let (tls, ca) = pki(&["127.0.0.1"]);
        let (_reporter, service) = tonic_health::server::health_reporter();
        let metrics = AcceptMetrics::default();
        let server = CarrierServer::bind("127.0.0.1:0".parse().unwrap(), tls)
            .unwrap()
            .with_limits(1, Http2Limits::default(), Some(metrics.clone()));
        let addr = server.local_addr().unwrap();
        let task = tokio::spawn(server.serve(Routes::new(service), std::future::pending()));
        let connector = || {
            let client_tls = client_config(vec![ca.cert_der().clone()], None, Vec::new()).unwrap();
            CarrierConnector::new(&addr.to_string(), "127.0.0.1", client_tls).unwrap()
        };
        let first = connector();
        tokio::time::timeout(WAIT, first.open())
            .await
            .expect("in time")
            .expect("the first connection is admitted");
        let second = tokio::time::timeout(WAIT, connector().open())
            .await
            .expect("in time")
            .expect_err("the listener is full");
        assert!(
            matches!(
                &second,
                CarrierError::Handshake {
                    source: quinn::ConnectionError::ConnectionClosed(close),
                    ..
                } if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED
            ),
            "{second:?}"
        );
        assert_eq!(metrics.refusals(Refusal::Connections), 1);
        // The admitted connection is still served.
        tokio::time::timeout(WAIT, first.open())
            .await
            .expect("in time")
            .expect("a new stream on the admitted connection");
        task.abort();
    }

    #[tokio::test]
    async fn a_server_certificate_for_another_name_is_refused() {
        let (tls, ca) = pki(&["carrier.example"]);
        let (addr, task) = health_server(tls).await;
        let client_tls = client_config(vec![ca.cert_der().clone()], None, Vec::new()).unwrap();
        let error = CarrierConnector::new(&addr.to_string(), "127.0.0.1", client_tls)
            .unwrap()
            .open()
            .await
            .expect_err("the name does not match");
        assert!(matches!(error, CarrierError::Handshake { .. }), "{error:?}");
        task.abort();
    }
}
