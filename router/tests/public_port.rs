//! The router's h2 port under attack, over real TLS on loopback with the default limits:
//! a flood of streams the server must reset (it ends the connection with GOAWAY), 10,000
//! streams on one connection (the SETTINGS limit holds them back), and 1,000 silent TCP
//! connects from one source while a real gRPC client from another source is answered
//! within a second. Other connections are served throughout, and refusals are counted in
//! the metrics.

use crate::support;

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::Reason;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use support::TestRouter;
use support::authority::HOST;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::codegen::Service;
use tonic::codegen::http::{Request, StatusCode, Uri};
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Silent TCP connects of the flood.
const SILENT: usize = 1_000;

/// The default limits the tests expect (`jumpstarter_shell`'s flag defaults).
const MAX_CONCURRENT_STREAMS: usize = 100;
const MAX_LOCAL_ERROR_RESETS: usize = 1_024;
const MAX_HANDSHAKES_PER_SOURCE: usize = 32;

/// Every wait of these tests is bounded by this, unless the test promises less.
const WAIT: Duration = Duration::from_secs(20);

/// The source address of the honest client: another address of the loopback network.
const OTHER_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn client_tls(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let roots = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("CA PEM");
    let tls =
        jumpstarter_certs::client_config(roots, None, vec![b"h2".to_vec()]).expect("client TLS");
    Arc::new(tls)
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
    let name = ServerName::try_from(HOST).expect("server name").to_owned();
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
async fn health_check(router: &TestRouter, source: IpAddr) -> Result<(), String> {
    let connector = FromSource {
        addr: router.addr,
        source,
        tls: client_tls(&router.ca_pem),
    };
    let channel = Endpoint::from_static("http://router.test")
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

/// A raw HTTP/2 client on a new TLS connection; its connection task ends with the
/// connection.
async fn h2_client(
    router: &TestRouter,
) -> (
    h2::client::SendRequest<Bytes>,
    JoinHandle<Result<(), h2::Error>>,
) {
    let tls = tls_connect(router.addr, None, client_tls(&router.ca_pem))
        .await
        .expect("TLS connect");
    let (send, connection) = h2::client::handshake(tls).await.expect("h2 handshake");
    (send, tokio::spawn(connection))
}

fn grpc_request(method: &str) -> Request<()> {
    Request::post(format!("https://{HOST}/grpc.health.v1.Health/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request")
}

/// One complete health check on `send`: once its answer is here, so are the server's
/// SETTINGS.
async fn h2_health_check(send: &h2::client::SendRequest<Bytes>) {
    let mut ready = timeout(WAIT, send.clone().ready())
        .await
        .expect("ready in time")
        .expect("ready");
    let (response, mut body) = ready
        .send_request(grpc_request("Check"), false)
        .expect("send");
    // An empty HealthCheckRequest: no compression, length 0.
    body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .expect("body");
    let response = timeout(WAIT, response)
        .await
        .expect("answer in time")
        .expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
}

/// The value of the gauge `name` in `text`.
fn gauge(text: &str, name: &str) -> u64 {
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .expect("gauge")
        .trim()
        .parse()
        .expect("gauge value")
}

/// The value of the counter `name` with label `reason` in `text` (0 when absent).
fn counter(text: &str, name: &str, reason: &str) -> u64 {
    let prefix = format!("{name}{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |value| value.trim().parse().expect("counter value"))
}

/// Streams of the reset flood sent before waiting for the server's answers.
const FLOOD_BATCH: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_streams_the_server_must_reset_ends_with_goaway() {
    let router = support::start(|_| {}).await;
    let (mut send, connection) = h2_client(&router).await;
    h2_health_check(&send).await;

    // Each request announces a body but ends at once: malformed (RFC 9113 8.1.1), so the
    // server resets the stream itself. Batches are answered before the next is sent, so
    // the client reads the server's GOAWAY instead of writing into a closed socket.
    let deadline = Instant::now() + WAIT;
    let mut sent = 0;
    let mut reasons = Vec::new();
    'flood: while sent < 4 * MAX_LOCAL_ERROR_RESETS {
        assert!(Instant::now() < deadline, "the flood did not end in time");
        // Near the limit, one stream at a time: the server's last read must leave nothing
        // unread, or its close becomes a TCP reset that may discard the GOAWAY.
        let batch = if sent + FLOOD_BATCH < MAX_LOCAL_ERROR_RESETS {
            FLOOD_BATCH
        } else {
            1
        };
        let mut answers = Vec::with_capacity(batch);
        for _ in 0..batch {
            send = match timeout(WAIT, send.ready()).await {
                Ok(Ok(send)) => send,
                Ok(Err(error)) => {
                    reasons.push(error);
                    break 'flood;
                }
                Err(_) => panic!("the client stalled"),
            };
            let mut request = grpc_request("Check");
            request
                .headers_mut()
                .insert("content-length", "5".parse().expect("header"));
            match send.send_request(request, true) {
                Ok((answer, _)) => answers.push(answer),
                Err(error) => {
                    reasons.push(error);
                    break 'flood;
                }
            }
            sent += 1;
        }
        for answer in answers {
            match timeout(WAIT, answer).await.expect("answer in time") {
                Ok(response) => panic!("a malformed request was answered: {response:?}"),
                // The GOAWAY, or the close after it (when this stream was the last the
                // server took, the GOAWAY does not end it; the close does).
                Err(error) if error.is_go_away() || error.is_io() => {
                    reasons.push(error);
                    break 'flood;
                }
                Err(error) => assert_eq!(
                    error.reason(),
                    Some(Reason::PROTOCOL_ERROR),
                    "after {sent} streams: {error:?}"
                ),
            }
        }
    }
    let ended = timeout(WAIT, connection)
        .await
        .expect("the server ends the flooding connection")
        .expect("connection task");
    reasons.extend(ended.err());
    assert!(
        reasons.iter().any(|error| error.is_go_away()
            && error.is_remote()
            && error.reason() == Some(Reason::ENHANCE_YOUR_CALM)),
        "GOAWAY ENHANCE_YOUR_CALM from the server after {sent} streams: {reasons:?}"
    );
    assert!(sent >= MAX_LOCAL_ERROR_RESETS, "only {sent} streams sent");

    // Another connection is served.
    timeout(WAIT, health_check(&router, OTHER_SOURCE))
        .await
        .expect("answer in time")
        .expect("health check on another connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_streams_on_one_connection_stop_at_the_concurrency_limit() {
    let router = support::start(|_| {}).await;
    let (send, connection) = h2_client(&router).await;
    h2_health_check(&send).await;
    assert_eq!(send.current_max_send_streams(), MAX_CONCURRENT_STREAMS);

    // Health/Watch streams stay open: the server answers with the current status and
    // keeps streaming. The client queues a few requests beyond the server's limit (it
    // guesses its count of open streams) and is then not ready for more.
    let mut flood = send.clone();
    let mut open = Vec::new();
    for _ in 0..10_000 {
        flood = match timeout(Duration::from_millis(500), flood.ready()).await {
            Ok(Ok(ready)) => ready,
            Ok(Err(error)) => panic!("the connection failed: {error}"),
            Err(_) => break,
        };
        let (answer, mut body) = flood
            .send_request(grpc_request("Watch"), false)
            .expect("open a stream");
        body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
            .expect("request message");
        open.push((answer, body));
    }
    assert!(open.len() < 10_000, "the client was never held back");
    // Only the streams the server accepted are answered.
    let answers = futures::future::join_all(
        open.iter_mut()
            .map(|(answer, _)| timeout(Duration::from_secs(2), answer)),
    )
    .await;
    let answered = answers
        .iter()
        .filter(|answer| matches!(answer, Ok(Ok(_))))
        .count();
    assert_eq!(answered, MAX_CONCURRENT_STREAMS, "streams served at once");

    // The router serves other connections, and keeps this one.
    timeout(WAIT, health_check(&router, OTHER_SOURCE))
        .await
        .expect("answer in time")
        .expect("health check on another connection");
    assert!(!connection.is_finished(), "the connection stays open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connects_from_one_source_do_not_keep_a_client_out() {
    let router = support::start(|_| {}).await;
    // All at once, as a flood comes. A connect that finds the backlog full retries its SYN
    // for seconds, so the wait for them is bounded; the connections made are held.
    let silent = Arc::new(std::sync::Mutex::new(Vec::with_capacity(SILENT)));
    let connects = (0..SILENT).map(|_| {
        let silent = silent.clone();
        let addr = router.addr;
        tokio::spawn(async move {
            // Connections over the per-source handshake cap may be reset while connecting.
            if let Ok(tcp) = TcpStream::connect(addr).await {
                silent.lock().expect("lock").push(tcp);
            }
        })
    });
    let mut connects: Vec<_> = connects.collect();
    let _ = timeout(
        Duration::from_secs(5),
        futures::future::join_all(connects.iter_mut()),
    )
    .await;

    // A real gRPC client from another source connects and is answered within a second.
    timeout(Duration::from_secs(1), health_check(&router, OTHER_SOURCE))
        .await
        .expect("answered within 1 s despite the silent connects")
        .expect("health check");

    // The flood holds at most its source's handshake slots; the rest was refused at once
    // and counted. (Not every connect of the flood reaches the listener: SYNs that find
    // the kernel's queues full are retried, or given up after the wait above.)
    let deadline = Instant::now() + WAIT;
    loop {
        let text = router.metrics_text();
        let refused = counter(
            &text,
            "router_connections_refused_total",
            "handshakes_per_source",
        );
        let handshakes = gauge(&text, "router_handshakes");
        if refused >= u64::try_from(SILENT / 2).expect("count")
            && handshakes <= MAX_HANDSHAKES_PER_SOURCE as u64
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{refused} refusals counted, {handshakes} handshakes in flight"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for connect in connects {
        connect.abort();
    }
    drop(silent);
}
