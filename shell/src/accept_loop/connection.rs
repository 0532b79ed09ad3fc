//! An admitted connection: its place in the listener's counts ([`Ticket`], released when
//! it is dropped) and, once handshaken, the TLS stream that carries it
//! ([`TlsConnection`]), which keeps the ticket until the HTTP/2 server drops it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use super::admission::{Admission, Refusal, Source};
use super::idle::{ConnectionInfo, IdleTimer, Streams};
use super::metrics::AcceptMetrics;

/// The listener's counts, shared by the loop and every admitted connection.
#[derive(Debug)]
pub(crate) struct Ledger {
    admission: Mutex<Admission>,
    metrics: Option<AcceptMetrics>,
}

impl Ledger {
    pub(crate) fn new(admission: Admission, metrics: Option<AcceptMetrics>) -> Arc<Ledger> {
        Arc::new(Ledger {
            admission: Mutex::new(admission),
            metrics,
        })
    }

    /// Admits a connection from `peer` or says why not (and counts the refusal).
    pub(crate) fn admit(self: &Arc<Self>, peer: SocketAddr) -> Result<Ticket, Refusal> {
        let source = Source::of(peer.ip());
        let admitted = self.update(|admission| admission.admit(source));
        match admitted {
            Ok(()) => Ok(Ticket {
                ledger: self.clone(),
                source,
                handshaking: true,
            }),
            Err(refusal) => {
                if let Some(metrics) = &self.metrics {
                    metrics.refused(refusal);
                }
                Err(refusal)
            }
        }
    }

    pub(crate) fn metrics(&self) -> Option<&AcceptMetrics> {
        self.metrics.as_ref()
    }

    /// Applies `change` and mirrors the counts in the metrics.
    fn update<T>(&self, change: impl FnOnce(&mut Admission) -> T) -> T {
        let mut admission = self
            .admission
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let result = change(&mut admission);
        if let Some(metrics) = &self.metrics {
            metrics.counts(admission.connections(), admission.handshakes());
        }
        result
    }
}

/// One admitted connection's place in the counts: a handshake until
/// [`Ticket::handshake_done`], a connection until dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    ledger: Arc<Ledger>,
    source: Source,
    handshaking: bool,
}

impl Ticket {
    /// The handshake finished: the connection no longer holds a handshake slot.
    pub(crate) fn handshake_done(&mut self) {
        if std::mem::take(&mut self.handshaking) {
            let source = self.source;
            self.ledger
                .update(|admission| admission.handshake_ended(source));
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let (source, handshaking) = (self.source, self.handshaking);
        self.ledger.update(|admission| {
            if handshaking {
                admission.handshake_ended(source);
            }
            admission.closed(source);
        });
    }
}

/// A handshaken TLS connection of the accept loop; it counts as open until dropped. With
/// an idle timeout, it reads end-of-stream once it has had no request in flight for that
/// long (see [`super::StreamTracking`]).
#[derive(Debug)]
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    streams: Streams,
    idle: Option<IdleTimer>,
    /// Bytes read since this connection's task last yielded (see [`READ_SLICE`]).
    read_since_yield: usize,
    _ticket: Ticket,
}

/// Bytes one connection reads before it lets other connections' tasks run: a bulk
/// transfer's connection would otherwise decrypt and parse up to its whole HTTP/2 window in
/// one poll while a small message on another connection waits for the thread. With the
/// h2 router on one CPU beside a saturating session, a 64-byte round trip's median fell
/// from 2–4 ms to about 1 ms (`jumpstarter-loadtest --pin latency`); its p99 did not move.
const READ_SLICE: usize = 256 * 1024;

impl TlsConnection {
    pub(crate) fn new(
        stream: TlsStream<TcpStream>,
        ticket: Ticket,
        idle_timeout: Option<std::time::Duration>,
    ) -> TlsConnection {
        let streams = Streams::new();
        TlsConnection {
            stream,
            idle: idle_timeout.map(|timeout| IdleTimer::new(streams.clone(), timeout)),
            streams,
            read_since_yield: 0,
            _ticket: ticket,
        }
    }

    /// The TLS stream.
    pub fn get_ref(&self) -> &TlsStream<TcpStream> {
        &self.stream
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.read_since_yield >= READ_SLICE {
            this.read_since_yield = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if read.is_ready() {
            this.read_since_yield += buf.filled().len() - before;
        } else {
            this.read_since_yield = 0;
        }
        if read.is_pending()
            && let Some(idle) = &mut this.idle
            && idle.poll_expired(cx).is_ready()
        {
            // End-of-stream: the HTTP/2 server closes the connection.
            tracing::debug!("closing a connection without streams (idle timeout)");
            return Poll::Ready(Ok(()));
        }
        read
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnectionInfo::new(self.stream.connect_info(), self.streams.clone())
    }
}
