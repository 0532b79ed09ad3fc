//! The one bounded TLS accept loop of the controller, the router and the edge.
//!
//! Every accepted TCP connection first passes the [`admission`](Refusal): the listener
//! holds at most [`AcceptLimits::max_connections`] open connections (counted until the
//! HTTP/2 server drops them), [`AcceptLimits::max_connections_per_source`] per source
//! address (IPv6: per /64), [`AcceptLimits::max_handshakes`] TLS handshakes in flight and
//! [`AcceptLimits::max_handshakes_per_source`] per source. A connection over a limit is
//! closed at once (with a TCP reset, before any TLS byte is read) and counted by reason in
//! [`AcceptMetrics`]; nothing waits in the kernel's backlog for a slot, and established
//! connections are never touched. Each handshake runs in its own task for at most
//! [`AcceptLimits::handshake_timeout`]. So silent or hostile peers from one source hold
//! only that source's few handshake slots, for a bounded time.
//!
//! Finished connections ([`TlsConnection`]) come out of [`TlsIncoming`], a stream to give
//! to tonic's `serve_with_incoming*`.

mod admission;
mod connection;
mod idle;
mod metrics;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use admission::Refusal;
pub use connection::TlsConnection;
pub use idle::{ConnectionInfo, StreamTracking, Tracked};
pub use metrics::AcceptMetrics;

use admission::{Admission, Caps};
use connection::{Ledger, Ticket};

/// How long a TLS handshake may take before the connection is dropped: far more than a
/// handshake needs across a continent, short enough that stalled peers hold little.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS handshakes running at once. A handshake costs one signature and a few KiB, so 256
/// keep a core busy without letting a flood of connections exhaust memory.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 256;

/// TLS handshakes one source may have in flight. Honest peers handshake once per
/// connection and finish within milliseconds; 32 absorb a reconnect storm of a site behind
/// one NAT (refused peers retry with their backoff), while a silent source holds at most
/// an eighth of the [`MAX_CONCURRENT_HANDSHAKES`] slots, each for at most
/// [`HANDSHAKE_TIMEOUT`].
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 32;

/// Open connections a listener holds. An idle HTTP/2 connection over TLS costs some tens
/// of KiB; 16,384 keep memory in the hundreds of MiB and stay below common descriptor
/// limits of containers, while a controller or router serves thousands of exporters.
pub const MAX_CONNECTIONS: usize = 16_384;

/// Open connections one source may hold: an exporter keeps one or two connections to the
/// controller and one per session to a router, so 1,024 serve hundreds of exporters behind
/// one NAT, while one host cannot take the whole listener.
pub const MAX_CONNECTIONS_PER_SOURCE: usize = 1_024;

/// How long a connection may go without a request in flight before it is closed: an
/// abandoned connection holds its slot and a few tens of KiB for at most five minutes,
/// while clients between calls keep their connection (0.9.0 exporters always have their
/// Status and Listen streams open).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Handshaken connections waiting for the HTTP/2 server to pick them up.
pub const ACCEPTED_QUEUE: usize = 64;

/// Pause after a failed `accept` (usually out of file descriptors), instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The loop's bounds; a flag group (`--max-connections`, …) with safe defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct AcceptLimits {
    /// Open TLS connections of the port (handshaking or established); beyond, new
    /// connections are reset at once.
    #[arg(
        long = "max-connections",
        env = "JUMPSTARTER_MAX_CONNECTIONS",
        default_value_t = MAX_CONNECTIONS
    )]
    pub max_connections: usize,
    /// Open TLS connections of the port per source address (IPv6: per /64); beyond, new
    /// connections from that source are reset at once.
    #[arg(
        long = "max-connections-per-source",
        env = "JUMPSTARTER_MAX_CONNECTIONS_PER_SOURCE",
        default_value_t = MAX_CONNECTIONS_PER_SOURCE
    )]
    pub max_connections_per_source: usize,
    /// TLS handshakes in flight on the port; beyond, new connections are reset at once.
    #[arg(
        long = "max-handshakes",
        env = "JUMPSTARTER_MAX_HANDSHAKES",
        default_value_t = MAX_CONCURRENT_HANDSHAKES
    )]
    pub max_handshakes: usize,
    /// TLS handshakes in flight per source address (IPv6: per /64); beyond, new
    /// connections from that source are reset at once.
    #[arg(
        long = "max-handshakes-per-source",
        env = "JUMPSTARTER_MAX_HANDSHAKES_PER_SOURCE",
        default_value_t = MAX_HANDSHAKES_PER_SOURCE
    )]
    pub max_handshakes_per_source: usize,
    /// How long a TLS handshake may take before the connection is dropped, as a Go
    /// duration.
    #[arg(
        long = "handshake-timeout",
        env = "JUMPSTARTER_HANDSHAKE_TIMEOUT",
        default_value = "10s",
        value_parser = crate::duration_flag::parse
    )]
    pub handshake_timeout: Duration,
    /// How long a connection may go without a call in flight (PINGs do not count) before
    /// it is closed, as a Go duration; `0s` never closes idle connections.
    #[arg(
        long = "idle-timeout",
        env = "JUMPSTARTER_IDLE_TIMEOUT",
        default_value = "5m",
        value_parser = crate::duration_flag::parse
    )]
    pub idle_timeout: Duration,
    /// Handshaken connections waiting for the HTTP/2 server (not a flag).
    #[arg(skip = ACCEPTED_QUEUE)]
    pub accepted_queue: usize,
}

impl Default for AcceptLimits {
    fn default() -> Self {
        AcceptLimits {
            max_connections: MAX_CONNECTIONS,
            max_connections_per_source: MAX_CONNECTIONS_PER_SOURCE,
            max_handshakes: MAX_CONCURRENT_HANDSHAKES,
            max_handshakes_per_source: MAX_HANDSHAKES_PER_SOURCE,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            accepted_queue: ACCEPTED_QUEUE,
        }
    }
}

impl AcceptLimits {
    /// The caps, each at least 1 (a zero would refuse every connection).
    fn caps(&self) -> Caps {
        Caps {
            connections: self.max_connections.max(1),
            connections_per_source: self.max_connections_per_source.max(1),
            handshakes: self.max_handshakes.max(1),
            handshakes_per_source: self.max_handshakes_per_source.max(1),
        }
    }
}

/// Why a handshake did not complete (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The TLS handshake failed.
    Error,
    /// It did not finish within the timeout.
    Timeout,
}

impl HandshakeFailure {
    /// The metric label of the failure.
    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::Error => "error",
            HandshakeFailure::Timeout => "timeout",
        }
    }
}

/// Handshaken TLS connections of one listener; the accept loop runs until `stop` is
/// cancelled or the stream is dropped.
pub struct TlsIncoming {
    accepted: mpsc::Receiver<TlsConnection>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for TlsIncoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIncoming").finish_non_exhaustive()
    }
}

impl TlsIncoming {
    /// Starts accepting on `listener` with `tls` (in the current span); refusals,
    /// failed handshakes and the counts go to `metrics`.
    pub fn start(
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        limits: AcceptLimits,
        metrics: Option<AcceptMetrics>,
        stop: CancellationToken,
    ) -> TlsIncoming {
        let (tx, accepted) = mpsc::channel(limits.accepted_queue.max(1));
        let ledger = Ledger::new(Admission::new(limits.caps()), metrics);
        let task = tokio::spawn(
            accept(
                listener,
                TlsAcceptor::from(tls),
                Timeouts {
                    handshake: limits.handshake_timeout,
                    idle: (!limits.idle_timeout.is_zero()).then_some(limits.idle_timeout),
                },
                ledger,
                tx,
                stop,
            )
            .in_current_span(),
        );
        TlsIncoming { accepted, task }
    }
}

impl Stream for TlsIncoming {
    type Item = Result<TlsConnection, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.accepted.poll_recv(cx).map(|next| next.map(Ok))
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The loop's timeouts: of handshakes, and of connections without streams (if any).
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    handshake: Duration,
    idle: Option<Duration>,
}

async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    timeouts: Timeouts,
    ledger: Arc<Ledger>,
    accepted: mpsc::Sender<TlsConnection>,
    stop: CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let ticket = match ledger.admit(peer) {
            Ok(ticket) => ticket,
            Err(refusal) => {
                tracing::debug!(%peer, limit = refusal.label(), "connection refused");
                refuse(tcp);
                continue;
            }
        };
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        tokio::spawn(
            handshake(
                tcp,
                ticket,
                acceptor.clone(),
                timeouts,
                ledger.clone(),
                accepted.clone(),
            )
            .instrument(handshake_span(peer)),
        );
    }
}

/// Closes a refused connection at once: a reset, so that neither side keeps the socket in
/// TIME_WAIT and the peer learns immediately.
fn refuse(tcp: TcpStream) {
    if let Err(error) = tcp.set_zero_linger() {
        tracing::debug!(%error, "cannot set SO_LINGER");
    }
    drop(tcp);
}

async fn handshake(
    tcp: TcpStream,
    mut ticket: Ticket,
    acceptor: TlsAcceptor,
    timeouts: Timeouts,
    ledger: Arc<Ledger>,
    accepted: mpsc::Sender<TlsConnection>,
) {
    let failure = match tokio::time::timeout(timeouts.handshake, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            ticket.handshake_done();
            let connection = TlsConnection::new(tls, ticket, timeouts.idle);
            // Fails only when the server stopped; the connection is dropped.
            let _ = accepted.send(connection).await;
            return;
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, "TLS handshake failed");
            HandshakeFailure::Error
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            HandshakeFailure::Timeout
        }
    };
    drop(ticket);
    if let Some(metrics) = ledger.metrics() {
        metrics.handshake_failed(failure);
    }
}

fn handshake_span(peer: SocketAddr) -> tracing::Span {
    tracing::debug_span!("tls_handshake", %peer)
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[derive(Debug)]
    struct NoCertificate;

    impl rustls::server::ResolvesServerCert for NoCertificate {
        fn resolve(
            &self,
            _hello: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            None
        }
    }

    fn no_certificate() -> Arc<rustls::ServerConfig> {
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(NoCertificate));
        Arc::new(tls)
    }

    #[tokio::test]
    async fn a_silent_peer_times_out_and_garbage_fails() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let metrics = AcceptMetrics::default();
        let stop = CancellationToken::new();
        let mut incoming = TlsIncoming::start(
            listener,
            no_certificate(),
            AcceptLimits {
                handshake_timeout: Duration::from_millis(200),
                ..AcceptLimits::default()
            },
            Some(metrics.clone()),
            stop.clone(),
        );
        let _silent = TcpStream::connect(addr).await.expect("connect");
        let mut garbage = TcpStream::connect(addr).await.expect("connect");
        garbage
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            (
                metrics.handshake_failures(HandshakeFailure::Timeout),
                metrics.handshake_failures(HandshakeFailure::Error)
            ),
            (1, 1)
        );
        stop.cancel();
        assert!(incoming.next().await.is_none(), "the stream ends at stop");
    }

    /// Whether the server closed `tcp` (EOF or reset) within `within`.
    async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(within, tcp.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn connections_over_a_source_cap_are_reset_at_once_and_counted() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let metrics = AcceptMetrics::default();
        let stop = CancellationToken::new();
        let _incoming = TlsIncoming::start(
            listener,
            no_certificate(),
            AcceptLimits {
                max_handshakes_per_source: 2,
                handshake_timeout: Duration::from_secs(30),
                ..AcceptLimits::default()
            },
            Some(metrics.clone()),
            stop.clone(),
        );
        let mut silent = Vec::new();
        for _ in 0..2 {
            silent.push(TcpStream::connect(addr).await.expect("connect"));
        }
        // Give the loop time to admit the first two.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut refused = 0;
        for _ in 0..3 {
            // The reset may already arrive while connecting.
            match TcpStream::connect(addr).await {
                Ok(mut tcp) => {
                    if closed_within(&mut tcp, Duration::from_secs(5)).await {
                        refused += 1;
                    }
                }
                Err(_) => refused += 1,
            }
        }
        assert_eq!(refused, 3, "the three connections over the cap are closed");
        for tcp in &mut silent[..2] {
            assert!(
                !closed_within(tcp, Duration::from_millis(200)).await,
                "admitted connections stay in their handshake"
            );
        }
        assert_eq!(metrics.refusals(Refusal::HandshakesPerSource), 3);
        // Closing the admitted ones frees their slots.
        silent.clear();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(mut tcp) = TcpStream::connect(addr).await
                && !closed_within(&mut tcp, Duration::from_millis(200)).await
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "slots are never released"
            );
        }
        stop.cancel();
    }
}
