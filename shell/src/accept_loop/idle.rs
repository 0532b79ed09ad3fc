//! Connections without streams: tonic and hyper have no idle timeout for HTTP/2 server
//! connections, so the accept loop adds one. [`StreamTracking`], a layer on the tonic
//! server, counts each connection's requests in flight (from the request until its
//! response body is dropped) through the connection's [`ConnectionInfo`]; the connection
//! ([`super::TlsConnection`]) reads end-of-stream once it has had no request in flight for
//! the idle timeout, which makes the HTTP/2 server close it. Keepalive PINGs do not count:
//! a peer that only pings is idle.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{Bytes, Service};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// What the server knows about a connection of the accept loop (a request extension).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// Addresses and peer certificates of the TLS connection.
    pub tls: TlsConnectInfo<TcpConnectInfo>,
    streams: Streams,
}

impl ConnectionInfo {
    pub(crate) fn new(tls: TlsConnectInfo<TcpConnectInfo>, streams: Streams) -> Self {
        ConnectionInfo { tls, streams }
    }
}

/// One connection's requests in flight and since when it has had none.
#[derive(Debug, Clone)]
pub(crate) struct Streams(Arc<StreamsInner>);

#[derive(Debug)]
struct StreamsInner {
    active: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Streams {
    pub(crate) fn new() -> Streams {
        Streams(Arc::new(StreamsInner {
            active: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }))
    }

    fn enter(&self) -> StreamGuard {
        self.0.active.fetch_add(1, Ordering::SeqCst);
        StreamGuard(self.clone())
    }

    /// When the connection became idle, or `None` while requests are in flight.
    fn idle_since(&self) -> Option<Instant> {
        let since = *self
            .0
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (self.0.active.load(Ordering::SeqCst) == 0).then_some(since)
    }
}

/// A request in flight; dropping it ends it.
#[derive(Debug)]
struct StreamGuard(Streams);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let inner = &(self.0).0;
        let mut since = inner
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if inner.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            *since = Instant::now();
        }
    }
}

/// The idle timeout of one connection, polled by its reads.
#[derive(Debug)]
pub(crate) struct IdleTimer {
    streams: Streams,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl IdleTimer {
    pub(crate) fn new(streams: Streams, timeout: Duration) -> IdleTimer {
        let sleep = Box::pin(tokio::time::sleep(timeout));
        IdleTimer {
            streams,
            timeout,
            sleep,
        }
    }

    /// Ready once the connection has been idle for the timeout (and registers the wakeup
    /// otherwise, while it is idle).
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(since) = self.streams.idle_since() else {
            return Poll::Pending;
        };
        let deadline = since + self.timeout;
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().poll(cx)
    }
}

/// The layer counting requests in flight per connection (for the idle timeout); give it to
/// the tonic server of a [`super::TlsIncoming`] (`Server::builder().layer(StreamTracking)`).
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamTracking;

impl<S> tower_layer::Layer<S> for StreamTracking {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Tracked<S> {
        Tracked(inner)
    }
}

/// A service whose requests count as in flight on their connection until their response
/// body is dropped.
#[derive(Debug, Clone)]
pub struct Tracked<S>(S);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S> Service<Request<Body>> for Tracked<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let guard = request
            .extensions()
            .get::<ConnectionInfo>()
            .map(|info| info.streams.enter());
        let response = self.0.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| {
                Body::new(TrackedBody {
                    inner: body,
                    _guard: guard,
                })
            }))
        })
    }
}

/// A response body that keeps its request in flight.
struct TrackedBody {
    inner: Body,
    _guard: Option<StreamGuard>,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map_err(|status| Box::new(status) as BoxError)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
