//! The one bounded TLS accept loop of the controller, the router and the edge.
//!
//! TCP connections are accepted and their TLS handshakes run concurrently, at most
//! [`AcceptLimits::max_handshakes`] at once (more connections wait in the kernel's
//! backlog) and each for at most [`AcceptLimits::handshake_timeout`], so stalled or
//! hostile peers hold neither memory nor tasks. Finished connections come out of
//! [`TlsIncoming`], a stream to give to tonic's `serve_with_incoming*`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long a TLS handshake may take before the connection is dropped: far more than a
/// handshake needs across a continent, short enough that stalled peers hold little.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS handshakes running at once; more connections wait in the kernel's backlog. A
/// handshake costs one signature and a few KiB, so 256 keep a core busy without letting a
/// flood of connections exhaust memory.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 256;

/// Handshaken connections waiting for the HTTP/2 server to pick them up.
pub const ACCEPTED_QUEUE: usize = 64;

/// Pause after a failed `accept` (usually out of file descriptors), instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The loop's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptLimits {
    pub max_handshakes: usize,
    pub handshake_timeout: Duration,
    pub accepted_queue: usize,
}

impl Default for AcceptLimits {
    fn default() -> Self {
        AcceptLimits {
            max_handshakes: MAX_CONCURRENT_HANDSHAKES,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            accepted_queue: ACCEPTED_QUEUE,
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

/// Called for every handshake that did not complete.
pub type OnFailure = Arc<dyn Fn(HandshakeFailure) + Send + Sync>;

/// Handshaken TLS connections of one listener; the accept loop runs until `stop` is
/// cancelled or the stream is dropped.
pub struct TlsIncoming {
    accepted: mpsc::Receiver<TlsStream<TcpStream>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for TlsIncoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIncoming").finish_non_exhaustive()
    }
}

impl TlsIncoming {
    /// Starts accepting on `listener` with `tls` (in the current span); `on_failure`
    /// hears of handshakes that did not complete.
    pub fn start(
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        limits: AcceptLimits,
        on_failure: Option<OnFailure>,
        stop: CancellationToken,
    ) -> TlsIncoming {
        let (tx, accepted) = mpsc::channel(limits.accepted_queue.max(1));
        let task = tokio::spawn(
            accept(
                listener,
                TlsAcceptor::from(tls),
                limits,
                tx,
                on_failure,
                stop,
            )
            .in_current_span(),
        );
        TlsIncoming { accepted, task }
    }
}

impl Stream for TlsIncoming {
    type Item = Result<TlsStream<TcpStream>, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.accepted.poll_recv(cx).map(|next| next.map(Ok))
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: AcceptLimits,
    accepted: mpsc::Sender<TlsStream<TcpStream>>,
    on_failure: Option<OnFailure>,
    stop: CancellationToken,
) {
    let handshakes = Arc::new(Semaphore::new(limits.max_handshakes.max(1)));
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => return,
            permit = handshakes.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                // Invariant: the semaphore is never closed.
                Err(_) => return,
            },
        };
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
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        let (acceptor, accepted, on_failure) =
            (acceptor.clone(), accepted.clone(), on_failure.clone());
        tokio::spawn(
            async move {
                let _permit = permit;
                let failure = match tokio::time::timeout(
                    limits.handshake_timeout,
                    acceptor.accept(tcp),
                )
                .await
                {
                    Ok(Ok(tls)) => {
                        // Fails only when the server stopped; the connection is dropped.
                        let _ = accepted.send(tls).await;
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
                if let Some(on_failure) = on_failure {
                    on_failure(failure);
                }
            }
            .instrument(handshake_span(peer)),
        );
    }
}

fn handshake_span(peer: SocketAddr) -> tracing::Span {
    tracing::debug_span!("tls_handshake", %peer)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::StreamExt;

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

    #[tokio::test]
    async fn a_silent_peer_times_out_and_garbage_fails() {
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(NoCertificate));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let failures = Arc::new(Mutex::new(Vec::new()));
        let seen = failures.clone();
        let stop = CancellationToken::new();
        let mut incoming = TlsIncoming::start(
            listener,
            Arc::new(tls),
            AcceptLimits {
                max_handshakes: 1,
                handshake_timeout: Duration::from_millis(200),
                accepted_queue: 1,
            },
            Some(Arc::new(move |failure| {
                seen.lock().expect("lock").push(failure)
            })),
            stop.clone(),
        );
        // The only handshake slot is held by a silent peer until it times out; the second
        // peer's garbage is read only after that.
        let _silent = TcpStream::connect(addr).await.expect("connect");
        let mut garbage = TcpStream::connect(addr).await.expect("connect");
        tokio::io::AsyncWriteExt::write_all(&mut garbage, b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            *failures.lock().expect("lock"),
            [HandshakeFailure::Timeout, HandshakeFailure::Error]
        );
        stop.cancel();
        assert!(incoming.next().await.is_none(), "the stream ends at stop");
    }
}
