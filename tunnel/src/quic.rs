//! The client and exporter side of QUIC sessions: one connection to the router per lease
//! side, one bidirectional stream per session.
//!
//! ```text
//! let connection = QuicPeer::connect(router, "router.example", roots, chain, key).await?;
//! let (mut send, mut recv) = connection.open_session(&session_id).await?;
//! ```
//!
//! The client and the exporter both call [`Connection::open_session`] with the session id
//! they got from the controller; the router pairs the two streams. Writing to `send` reaches
//! the other side's `recv`; `send.finish()` is a half-close. Each stream has QUIC's own flow
//! control, so a session whose reader stalls never blocks another session of the connection.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jumpstarter_certs::{TlsCredentials, client_config};
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{RecvStream, SendStream};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::header::{Decoded, Header, HeaderError, MAX_HEADER_LEN};
use crate::renewal::{self, Progress, RenewalError, Reply};
use crate::transport::QuicTransport;

/// The ALPN protocol of the session tunnel.
pub const ALPN: &[u8] = b"jumpstarter-tunnel/1";

/// How often an idle connection sends a keep-alive, well below the idle timeout.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// How long a connection may stay silent before it is considered dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a connection to the router could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot build the TLS configuration")]
    Tls(#[source] jumpstarter_certs::Error),
    #[error("the TLS configuration cannot be used for QUIC")]
    Quic(#[source] quinn::crypto::rustls::NoInitialCipherSuite),
    #[error("cannot open a UDP socket")]
    Socket(#[source] std::io::Error),
    #[error("cannot connect to {addr}")]
    Start {
        addr: SocketAddr,
        #[source]
        source: quinn::ConnectError,
    },
    #[error("the connection to {addr} failed")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: quinn::ConnectionError,
    },
}

/// Why a session could not be opened, or its header not read.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("invalid session header")]
    Header(#[from] HeaderError),
    #[error("cannot open a stream")]
    Open(#[source] quinn::ConnectionError),
    #[error("cannot write the session header")]
    Write(#[source] quinn::WriteError),
    #[error("cannot read the session header")]
    Read(#[source] quinn::ReadError),
    #[error("invalid renewal request")]
    Renewal(#[source] RenewalError),
}

/// Why presenting a renewed certificate failed.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("invalid renewal")]
    Encode(#[source] RenewalError),
    #[error("cannot open the renewal stream")]
    Open(#[source] quinn::ConnectionError),
    #[error("cannot send the renewal")]
    Write(#[source] quinn::WriteError),
    #[error("cannot read the router's answer")]
    Read(#[source] quinn::ReadToEndError),
    #[error("unreadable answer from the router")]
    Reply(#[source] RenewalError),
    #[error("the router refused the renewed certificate: {0}")]
    Refused(String),
}

/// What a new stream on the router opens with.
#[derive(Debug)]
pub enum Opening {
    /// A session stream.
    Session(Header),
    /// A renewed certificate chain (leaf first) for the connection.
    Renewal(Vec<CertificateDer<'static>>),
}

/// Connects clients and exporters to a router.
#[derive(Debug)]
pub struct QuicPeer;

/// A connection to the router, on which sessions are opened.
#[derive(Debug, Clone)]
pub struct Connection {
    connection: quinn::Connection,
    // Kept so the endpoint (and its socket) live as long as the connection handle.
    endpoint_handle: quinn::Endpoint,
    // Scales the send window to the round-trip time while any handle lives.
    send_window: Arc<SendWindow>,
}

/// A connection's send window in force, and the task keeping it scaled
/// ([`crate::send_window::follow`]). The task holds a quinn handle, so it ends with the last
/// of ours, or quinn would keep the connection open.
#[derive(Debug)]
struct SendWindow {
    bytes: Arc<AtomicU64>,
    task: tokio::task::AbortHandle,
}

impl Drop for SendWindow {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl QuicPeer {
    /// Connects to the router at `router_addr` (whose certificate must name `server_name`
    /// and chain to `roots`), presenting the lease certificate `chain` (leaf first) and its
    /// `key`.
    pub async fn connect(
        router_addr: SocketAddr,
        server_name: &str,
        roots: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Connection, ConnectError> {
        QuicPeer::connect_with_transport(
            router_addr,
            server_name,
            roots,
            chain,
            key,
            &QuicTransport::default(),
        )
        .await
    }

    /// Like [`QuicPeer::connect`], with the given transport settings.
    pub async fn connect_with_transport(
        router_addr: SocketAddr,
        server_name: &str,
        roots: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        transport: &QuicTransport,
    ) -> Result<Connection, ConnectError> {
        let tls = client_config(
            roots,
            Some(TlsCredentials { chain, key }),
            vec![ALPN.to_vec()],
        )
        .map_err(ConnectError::Tls)?;
        QuicPeer::connect_with_tls_and_transport(router_addr, server_name, tls, transport).await
    }

    /// Connects with a ready TLS configuration (its ALPN is set to [`ALPN`]), from a new
    /// UDP socket on an ephemeral port.
    pub async fn connect_with_tls(
        router_addr: SocketAddr,
        server_name: &str,
        tls: rustls::ClientConfig,
    ) -> Result<Connection, ConnectError> {
        QuicPeer::connect_with_tls_and_transport(
            router_addr,
            server_name,
            tls,
            &QuicTransport::default(),
        )
        .await
    }

    /// Like [`QuicPeer::connect_with_tls`], with the given transport settings.
    pub async fn connect_with_tls_and_transport(
        router_addr: SocketAddr,
        server_name: &str,
        tls: rustls::ClientConfig,
        transport: &QuicTransport,
    ) -> Result<Connection, ConnectError> {
        let local: SocketAddr = if router_addr.is_ipv6() {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let (endpoint, _) =
            crate::socket::client_endpoint_for(local, transport).map_err(ConnectError::Socket)?;
        QuicPeer::connect_on_with_transport(endpoint, router_addr, server_name, tls, transport)
            .await
    }

    /// Connects from a given client `endpoint` (for a socket made elsewhere, e.g. in another
    /// network namespace).
    pub async fn connect_on(
        endpoint: quinn::Endpoint,
        router_addr: SocketAddr,
        server_name: &str,
        tls: rustls::ClientConfig,
    ) -> Result<Connection, ConnectError> {
        QuicPeer::connect_on_with_transport(
            endpoint,
            router_addr,
            server_name,
            tls,
            &QuicTransport::default(),
        )
        .await
    }

    /// Like [`QuicPeer::connect_on`], with the given transport settings.
    pub async fn connect_on_with_transport(
        endpoint: quinn::Endpoint,
        router_addr: SocketAddr,
        server_name: &str,
        mut tls: rustls::ClientConfig,
        transport: &QuicTransport,
    ) -> Result<Connection, ConnectError> {
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicClientConfig::try_from(tls).map_err(ConnectError::Quic)?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(Arc::new(transport.to_quinn()));
        let connecting = endpoint
            .connect_with(config, router_addr, server_name)
            .map_err(|source| ConnectError::Start {
                addr: router_addr,
                source,
            })?;
        let connection = connecting.await.map_err(|source| ConnectError::Handshake {
            addr: router_addr,
            source,
        })?;
        let bytes = Arc::new(AtomicU64::new(transport.send_window));
        let task = tokio::spawn(crate::send_window::follow(
            connection.clone(),
            transport.send_window,
            crate::send_window::DEFAULT_FULL_WINDOW_RTT,
            {
                let bytes = bytes.clone();
                move |_, new| {
                    if new != 0 {
                        bytes.store(new, Ordering::Relaxed);
                    }
                }
            },
        ))
        .abort_handle();
        Ok(Connection {
            connection,
            endpoint_handle: endpoint,
            send_window: Arc::new(SendWindow { bytes, task }),
        })
    }
}

impl Connection {
    /// Opens the stream of session `session_id`: no round trip, the header goes out with
    /// the first packet of the stream.
    pub async fn open_session(
        &self,
        session_id: &str,
    ) -> Result<(SendStream, RecvStream), SessionError> {
        self.open_with_header(&Header::new(session_id)?).await
    }

    /// Opens a session stream with a full header (e.g. one carrying a router token).
    pub async fn open_with_header(
        &self,
        header: &Header,
    ) -> Result<(SendStream, RecvStream), SessionError> {
        let (mut send, recv) = self
            .connection
            .open_bi()
            .await
            .map_err(SessionError::Open)?;
        send.write_all(&header.encode())
            .await
            .map_err(SessionError::Write)?;
        Ok((send, recv))
    }

    /// Presents a renewed certificate `chain` (leaf first) for the same key as the one the
    /// connection was made with; on success the router keeps the connection until the new
    /// certificate ends, and this returns that time.
    pub async fn renew(
        &self,
        chain: &[CertificateDer<'_>],
    ) -> Result<std::time::SystemTime, RenewError> {
        let request = renewal::encode_request(chain).map_err(RenewError::Encode)?;
        let (mut send, mut recv) = self.connection.open_bi().await.map_err(RenewError::Open)?;
        send.write_all(&request).await.map_err(RenewError::Write)?;
        let _ = send.finish();
        let bytes = recv
            .read_to_end(renewal::MAX_REASON_LEN + 3)
            .await
            .map_err(RenewError::Read)?;
        match renewal::decode_reply(&bytes).map_err(RenewError::Reply)? {
            Progress::Complete {
                value: Reply::Accepted { not_after },
                ..
            } => {
                let secs = u64::try_from(not_after).unwrap_or(0);
                Ok(std::time::UNIX_EPOCH + Duration::from_secs(secs))
            }
            Progress::Complete {
                value: Reply::Refused { reason },
                ..
            } => Err(RenewError::Refused(reason)),
            Progress::NeedMore { .. } => Err(RenewError::Reply(RenewalError::Truncated {
                part: "reply",
                received: bytes.len(),
            })),
        }
    }

    /// Moves the connection to a new local UDP socket (another port or address): QUIC
    /// migrates the live connection and its sessions.
    pub fn rebind(&self, socket: std::net::UdpSocket) -> std::io::Result<()> {
        self.endpoint_handle.rebind(socket)
    }

    /// The local UDP address the connection uses now.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint_handle.local_addr()
    }

    /// The send window in force: the configured one scaled to the connection's round-trip
    /// time ([`crate::send_window`]).
    pub fn send_window(&self) -> u64 {
        self.send_window.bytes.load(Ordering::Relaxed)
    }

    /// The underlying QUIC connection.
    pub fn quic(&self) -> &quinn::Connection {
        &self.connection
    }

    /// Closes the connection and all its sessions.
    pub fn close(&self) {
        self.connection.close(crate::code::DONE.into(), b"bye");
    }
}

/// Bytes a peer may send on one stream before the receiver reads them, by default (see
/// [`crate::transport`]).
pub const STREAM_RECEIVE_WINDOW: u64 = crate::transport::STREAM_RECEIVE_WINDOW;

/// Bytes a peer may send on all streams of a connection before the receiver reads them, by
/// default.
pub const RECEIVE_WINDOW: u64 = crate::transport::RECEIVE_WINDOW;

/// Bytes written by the application that a connection keeps until the peer acknowledges
/// them, by default.
pub const SEND_WINDOW: u64 = crate::transport::SEND_WINDOW;

/// Transport settings of both ends by default: [`QuicTransport::default`] (windows for a
/// 100 ms × 1 Gbit/s path, keep-alives below the idle timeout).
pub fn transport_config() -> quinn::TransportConfig {
    QuicTransport::default().to_quinn()
}

/// Reads what a new stream opens with (a session header or a renewal request), and nothing
/// beyond it. Errors name the malformed part.
pub async fn read_opening(recv: &mut RecvStream) -> Result<Opening, SessionError> {
    let mut buf = vec![0; 4];
    read_more(recv, &mut buf, 0).await?;
    if !renewal::is_renewal(&buf) {
        // Invariant: a header is at least as long as the four bytes already read.
        return read_header_from(recv, buf).await.map(Opening::Session);
    }
    loop {
        match renewal::decode_request(&buf) {
            Ok(Progress::Complete { value, .. }) => return Ok(Opening::Renewal(value)),
            Ok(Progress::NeedMore { total }) => {
                let start = buf.len();
                buf.resize(total, 0);
                read_more(recv, &mut buf, start).await?;
            }
            Err(error) => return Err(SessionError::Renewal(error)),
        }
    }
}

/// Fills `buf[start..]` from `recv`.
async fn read_more(
    recv: &mut RecvStream,
    buf: &mut [u8],
    start: usize,
) -> Result<(), SessionError> {
    match recv.read_exact(&mut buf[start..]).await {
        Ok(()) => Ok(()),
        Err(quinn::ReadExactError::FinishedEarly(got)) => Err(HeaderError::Truncated {
            received: start + got,
        }
        .into()),
        Err(quinn::ReadExactError::ReadError(error)) => Err(SessionError::Read(error)),
    }
}

/// Reads the session header at the start of `recv`, and nothing beyond it.
pub async fn read_header(recv: &mut RecvStream) -> Result<Header, SessionError> {
    read_header_from(recv, Vec::new()).await
}

/// Reads the rest of a session header whose first bytes are `buf`.
async fn read_header_from(recv: &mut RecvStream, mut buf: Vec<u8>) -> Result<Header, SessionError> {
    loop {
        match Header::decode(&buf)? {
            Decoded::Complete { header, .. } => return Ok(header),
            Decoded::NeedMore { total } => {
                // Invariant: decode bounds `total` by MAX_HEADER_LEN.
                let start = buf.len();
                buf.resize(total.min(MAX_HEADER_LEN), 0);
                read_more(recv, &mut buf, start).await?;
            }
        }
    }
}
