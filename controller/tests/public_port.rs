//! The controller's gRPC port under attack, over real TLS on loopback with the default
//! limits (served by `server::serve_grpc`, with the health service as its routes): a
//! silent HTTP/2 peer is closed by the keepalive (so the streams of a vanished exporter
//! end), the SETTINGS limit streams per connection, and 1,000 silent TCP connects from
//! one source leave a real gRPC client from another source answered within a second, the
//! refusals counted in the metrics.

use crate::support;

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use jumpstarter_controller::server;
use jumpstarter_shell::accept_loop::{AcceptMetrics, MAX_HANDSHAKES_PER_SOURCE, Refusal};
use jumpstarter_shell::http2_limits::{
    KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, MAX_CONCURRENT_STREAMS,
};
use jumpstarter_shell::port_limits::PortLimits;
use prometheus_client::registry::Registry;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;
use tonic::codegen::Service;
use tonic::codegen::http::{Request, StatusCode, Uri};
use tonic::service::Routes;
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Silent TCP connects of the flood.
const SILENT: usize = 1_000;

/// Every wait of these tests is bounded by this, unless the test promises less.
const WAIT: Duration = Duration::from_secs(20);

/// The source address of the honest client: another address of the loopback network.
const OTHER_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// The gRPC port with the default limits, its accept metrics and the client TLS setup.
struct Port {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    metrics: AcceptMetrics,
    registry: Arc<Mutex<Registry>>,
    shutdown: CancellationToken,
}

impl Drop for Port {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn serve() -> Port {
    serve_with(PortLimits::default()).await
}

async fn serve_with(limits: PortLimits) -> Port {
    let (ca, cert) = support::localhost_pki("public port CA", time::OffsetDateTime::now_utc());
    let server_tls = jumpstarter_certs::server_config(
        cert.credentials(),
        server::ALPN.iter().map(|p| p.to_vec()).collect(),
        jumpstarter_certs::ClientAuth::None,
    )
    .expect("server TLS");
    let tls =
        jumpstarter_certs::client_config(vec![ca.cert_der().clone()], None, vec![b"h2".to_vec()])
            .expect("client TLS");
    let mut registry = Registry::default();
    let metrics = AcceptMetrics::register(&mut registry, "jumpstarter_controller_grpc");
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let shutdown = CancellationToken::new();
    tokio::spawn(server::serve_grpc(
        listener,
        Arc::new(server_tls),
        Routes::new(health),
        limits,
        Some(metrics.clone()),
        shutdown.clone(),
    ));
    Port {
        addr,
        tls: Arc::new(tls),
        metrics,
        registry: Arc::new(Mutex::new(registry)),
        shutdown,
    }
}

/// A TLS connection to `addr` (from `source` when given).
async fn tls_connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
    tls: Arc<rustls::ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let tcp = socket.connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name").to_owned();
    TlsConnector::from(tls).connect(name, tcp).await
}

/// A tonic connector whose connections come from a given source address.
#[derive(Clone)]
struct FromSource {
    addr: SocketAddr,
    source: IpAddr,
    tls: Arc<rustls::ClientConfig>,
}

impl Service<Uri> for FromSource {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            tls_connect(this.addr, Some(this.source), this.tls)
                .await
                .map(TokioIo::new)
        })
    }
}

/// A gRPC health check by tonic on a new connection from `source`.
async fn health_check(port: &Port, source: IpAddr) -> Result<(), String> {
    let connector = FromSource {
        addr: port.addr,
        source,
        tls: port.tls.clone(),
    };
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
        .map_err(|status| format!("check: {status}"))
}

/// The HTTP/2 frame types in `bytes` (whole frames only).
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let length =
            usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = bytes.get(9 + length..).unwrap_or_default();
    }
    types
}

const PING: u8 = 6;
const GOAWAY: u8 = 7;

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_disconnected() {
    let port = serve().await;
    let mut tls = tls_connect(port.addr, None, port.tls.clone())
        .await
        .expect("TLS connect");
    // The client preface and an empty SETTINGS frame; then the peer is as silent as a host
    // that lost power (TCP still acknowledges, nothing answers).
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("preface");
    let bound = KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT + Duration::from_secs(15);
    let mut received = Vec::new();
    let closed = timeout(bound, async {
        let mut buffer = [0u8; 4096];
        loop {
            match tls.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the connection is still open after {bound:?}"
    );
    let types = frame_types(&received);
    assert!(types.contains(&PING), "the server pinged: {types:?}");
    assert!(
        types.contains(&GOAWAY),
        "the server said goodbye: {types:?}"
    );
}

type H2Connection = tokio::task::JoinHandle<Result<(), h2::Error>>;

/// A raw HTTP/2 client on a new TLS connection; its connection task ends with the
/// connection.
async fn h2_client(port: &Port) -> (h2::client::SendRequest<Bytes>, H2Connection) {
    let tls = tls_connect(port.addr, None, port.tls.clone())
        .await
        .expect("TLS connect");
    let (send, connection) = h2::client::handshake(tls).await.expect("h2 handshake");
    (send, tokio::spawn(connection))
}

/// Calls `Health/<method>` on `send` and waits for the answer's headers; the request
/// stream is returned (a Watch goes on).
async fn h2_call(send: &h2::client::SendRequest<Bytes>, method: &str) -> h2::SendStream<Bytes> {
    let mut ready = timeout(WAIT, send.clone().ready())
        .await
        .expect("ready in time")
        .expect("ready");
    let request = Request::post(format!("https://localhost/grpc.health.v1.Health/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (answer, mut body) = ready.send_request(request, false).expect("send");
    // An empty HealthCheckRequest: no compression, length 0.
    body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .expect("body");
    let answer = timeout(WAIT, answer)
        .await
        .expect("in time")
        .expect("answer");
    assert_eq!(answer.status(), StatusCode::OK);
    body
}

#[tokio::test]
async fn a_connection_without_streams_is_closed_after_the_idle_timeout() {
    let idle_timeout = Duration::from_secs(1);
    let mut limits = PortLimits::default();
    limits.accept.idle_timeout = idle_timeout;
    let port = serve_with(limits).await;
    let (idle, idle_connection) = h2_client(&port).await;
    h2_call(&idle, "Check").await;
    let (busy, busy_connection) = h2_client(&port).await;
    let _watch = h2_call(&busy, "Watch").await;

    // The connection whose call ended is closed; the one with a stream open is not.
    timeout(idle_timeout + WAIT, idle_connection)
        .await
        .expect("the idle connection is closed")
        .expect("connection task")
        .expect("closed cleanly");
    tokio::time::sleep(3 * idle_timeout).await;
    assert!(
        !busy_connection.is_finished(),
        "a connection with a stream stays open"
    );
    h2_call(&busy, "Check").await;
}

#[tokio::test]
async fn one_connection_runs_a_bounded_number_of_streams() {
    let port = serve().await;
    let (send, connection) = h2_client(&port).await;
    // One complete call: once it is answered, the server's SETTINGS are here.
    h2_call(&send, "Check").await;
    assert_eq!(
        send.current_max_send_streams(),
        usize::try_from(MAX_CONCURRENT_STREAMS).expect("count")
    );
    drop(send);
    connection.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connects_from_one_source_do_not_keep_a_client_out() {
    let port = serve().await;
    // All at once, as a flood comes; the connections made are held. A connect that finds
    // the kernel's queues full retries its SYN for seconds, so the wait is bounded.
    let silent = Arc::new(Mutex::new(Vec::with_capacity(SILENT)));
    let mut connects: Vec<_> = (0..SILENT)
        .map(|_| {
            let (silent, addr) = (silent.clone(), port.addr);
            tokio::spawn(async move {
                // Connections over the per-source cap may be reset while connecting.
                if let Ok(tcp) = TcpStream::connect(addr).await {
                    silent.lock().expect("lock").push(tcp);
                }
            })
        })
        .collect();
    let _ = timeout(
        Duration::from_secs(5),
        futures::future::join_all(connects.iter_mut()),
    )
    .await;

    // A real gRPC client from another source connects and is answered within a second.
    timeout(Duration::from_secs(1), health_check(&port, OTHER_SOURCE))
        .await
        .expect("answered within 1 s despite the silent connects")
        .expect("health check");

    // The flood was refused at once and counted (in the registry too).
    let deadline = Instant::now() + WAIT;
    while port.metrics.refusals(Refusal::HandshakesPerSource)
        < u64::try_from(SILENT / 2).expect("count")
    {
        assert!(Instant::now() < deadline, "refusals not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &port.registry.lock().expect("lock"))
        .expect("encode");
    assert!(
        text.contains("jumpstarter_controller_grpc_connections_refused_total{reason=\"handshakes_per_source\"}"),
        "{text}"
    );
    let in_flight = text
        .lines()
        .find_map(|line| line.strip_prefix("jumpstarter_controller_grpc_handshakes "))
        .and_then(|value| value.trim().parse::<usize>().ok())
        .expect("handshakes gauge");
    assert!(
        in_flight <= MAX_HANDSHAKES_PER_SOURCE,
        "{in_flight} handshakes"
    );
    for connect in connects {
        connect.abort();
    }
    drop(silent);
}

/// The port's limits with the upstream configuration's `grpc.keepalive` folded in, as the
/// binaries do at start (no flag given explicitly).
fn limits_from_upstream(keepalive: &str) -> PortLimits {
    let config = jumpstarter_controller::upstream::UpstreamConfig::parse(
        Some(&format!("grpc:\n  keepalive:\n{keepalive}")),
        None,
        None,
    )
    .expect("configuration");
    let mut limits = PortLimits::default();
    config.apply_keepalive(
        &mut limits,
        &jumpstarter_controller::upstream::GivenFlags::default(),
    );
    limits
}

#[tokio::test]
async fn the_upstream_keepalive_interval_and_timeout_apply() {
    let port = serve_with(limits_from_upstream(
        "    intervalTime: 1s\n    timeout: 1s\n",
    ))
    .await;
    let mut tls = tls_connect(port.addr, None, port.tls.clone())
        .await
        .expect("TLS connect");
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("preface");
    // The configured 1 s + 1 s, with slack; the defaults would take 30 s.
    let bound = Duration::from_secs(8);
    let mut received = Vec::new();
    let closed = timeout(bound, async {
        let mut buffer = [0u8; 4096];
        loop {
            match tls.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the silent peer is still connected after {bound:?}"
    );
    let types = frame_types(&received);
    assert!(types.contains(&PING), "the server pinged: {types:?}");
}

#[tokio::test]
async fn the_upstream_max_connection_age_closes_connections() {
    let port = serve_with(limits_from_upstream(
        "    maxConnectionAge: 1s\n    maxConnectionAgeGrace: 1s\n",
    ))
    .await;
    let (send, connection) = h2_client(&port).await;
    // A call works on the young connection.
    let _watch = h2_call(&send, "Watch").await;
    // Age 1 s plus 1 s of grace for the call in flight, with slack.
    let bound = Duration::from_secs(10);
    let ended = timeout(bound, connection).await;
    assert!(
        ended.is_ok(),
        "the connection outlived its configured age by far ({bound:?})"
    );

    // Without the setting a connection of that age stays.
    let port = serve().await;
    let (send, connection) = h2_client(&port).await;
    let _watch = h2_call(&send, "Watch").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!connection.is_finished(), "closed without a configured age");
}
