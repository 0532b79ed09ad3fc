//! The router's memory and pairing bounds against hostile or careless peers, on 127.0.0.1
//! with real TLS and QUIC: a QUIC handshake flood meets address validation (Retry) and a
//! real peer still connects; QUIC connections beyond the cap are refused; 256 parked QUIC
//! streams on each of 10 connections, each sent 1.2 MB, leave the router process's RSS
//! bounded; one lease cannot fill the pending table; two h2 streams of the same role do
//! not pair; an h2 pair queues a bounded number of bytes for a reader that does not read;
//! an h2 session ends at its lease's end (or later, when a newer token of the lease says the
//! lease was extended). Every wait is bounded.

use crate::support;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use jumpstarter_certs::Role;
use jumpstarter_proto::jumpstarter::v1::FrameType;
use jumpstarter_router::PairLimits;
use jumpstarter_tunnel::{Connection, QuicPeer};
use time::OffsetDateTime;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tonic::Code;

use support::WAIT;
use support::authority::{self, HOST, authority};
use support::{frame, open, recv, send};

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

/// Polls `probe` every 50 ms until it holds, for at most `within`.
async fn eventually(within: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if probe() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    probe()
}

// ---------------------------------------------------------------------------------------
// h2

#[tokio::test]
async fn two_h2_streams_of_the_same_role_do_not_pair() {
    let router = support::start(|_| {}).await;
    let tokens = router.token_pair("self-pair", "lab/lease-1", None);
    let client_header = format!("Bearer {}", tokens.client);
    let exporter_header = format!("Bearer {}", tokens.exporter);

    // The client's first stream waits; its second one, with the same token, is refused.
    let mut first_channel = router.client().await;
    let first = tokio::spawn(async move {
        let peer = open(&mut first_channel, Some(&client_header), 4).await;
        (peer, client_header, first_channel)
    });
    assert!(
        eventually(WAIT, || router.metric("router_pending_streams") >= 1.0).await,
        "the first stream waits"
    );
    let mut second_channel = router.client().await;
    let header = format!("Bearer {}", tokens.client);
    let refused = timeout(WAIT, open(&mut second_channel, Some(&header), 4))
        .await
        .expect("answered in time");
    let status = refused.err().expect("a second client stream is refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        status.message(),
        "both streams of the session hold the same role"
    );

    // The exporter's stream still pairs with the waiting client stream.
    let mut exporter_channel = router.client().await;
    let mut exporter = timeout(WAIT, open(&mut exporter_channel, Some(&exporter_header), 4))
        .await
        .expect("in time")
        .expect("the exporter pairs");
    let (client, _, _) = timeout(WAIT, first).await.expect("in time").expect("task");
    let mut client = client.expect("the client pairs");
    send(&client.tx, frame(FrameType::Data, b"ping".to_vec())).await;
    let got = recv(&mut exporter.rx).await.expect("ok").expect("frame");
    assert_eq!(got.payload, b"ping");
    send(&exporter.tx, frame(FrameType::Data, b"pong".to_vec())).await;
    let got = recv(&mut client.rx).await.expect("ok").expect("frame");
    assert_eq!(got.payload, b"pong");
    assert!(
        router
            .metrics_text()
            .contains(r#"router_streams_total{outcome="same_role"} 1"#),
        "{}",
        router.metrics_text()
    );
}

#[tokio::test]
async fn one_lease_cannot_fill_the_pending_table() {
    let limits = PairLimits {
        max_pending_per_lease: 2,
        ..PairLimits::default()
    };
    let router = support::start_with(|config| config.max_pending = 4, limits).await;

    // Lease A's party opens four streams nobody answers: two wait, two are refused.
    let mut waiting = Vec::new();
    let mut refused = Vec::new();
    for index in 0..4 {
        let tokens = router.token_pair(&format!("a-{index}"), "lab/lease-a", None);
        let header = format!("Bearer {}", tokens.client);
        let mut channel = router.client().await;
        let pending_before = router.metric("router_pending_streams");
        let mut attempt = tokio::spawn(async move { open(&mut channel, Some(&header), 4).await });
        let outcome = tokio::select! {
            answered = &mut attempt => Some(answered.expect("task")),
            waits = eventually(Duration::from_secs(5), || {
                router.metric("router_pending_streams") > pending_before
            }) => {
                assert!(waits, "stream {index} neither waits nor is refused");
                None
            }
        };
        match outcome {
            Some(answer) => refused.push(answer.err().expect("refused")),
            None => waiting.push(attempt),
        }
    }
    assert_eq!(waiting.len(), 2, "two streams of lease A wait");
    assert_eq!(refused.len(), 2, "two streams of lease A are refused");
    for status in &refused {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(
            status.message(),
            "too many streams of lease lab/lease-a are waiting for a peer (limit 2)"
        );
    }

    // Lease B still pairs: the table had room left for it.
    let tokens = router.token_pair("b-0", "lab/lease-b", None);
    let mut client_channel = router.client().await;
    let mut exporter_channel = router.client().await;
    let client_header = format!("Bearer {}", tokens.client);
    let exporter_header = format!("Bearer {}", tokens.exporter);
    let (client, exporter) = timeout(
        WAIT,
        futures::future::join(
            open(&mut client_channel, Some(&client_header), 4),
            open(&mut exporter_channel, Some(&exporter_header), 4),
        ),
    )
    .await
    .expect("lease B pairs in time");
    let client = client.expect("lease B's client pairs");
    let mut exporter = exporter.expect("lease B's exporter pairs");
    send(&client.tx, frame(FrameType::Data, b"b".to_vec())).await;
    assert_eq!(
        recv(&mut exporter.rx)
            .await
            .expect("ok")
            .expect("frame")
            .payload,
        b"b"
    );
    assert!(
        router
            .metrics_text()
            .contains(r#"router_streams_total{outcome="too_many_pending_for_lease"} 2"#),
        "{}",
        router.metrics_text()
    );
    for attempt in waiting {
        attempt.abort();
    }
}

#[tokio::test]
async fn an_h2_pair_queues_a_bounded_number_of_bytes_for_a_reader_that_does_not_read() {
    /// The largest payload a peer may send in one message (gRPC's 4 MiB).
    const FRAME: usize = 4 * 1024 * 1024;
    /// Frames the writer tries to send, at most.
    const FRAMES: usize = 24;
    let router = support::start(|_| {}).await;
    let tokens = router.token_pair("bulk", "lab/lease-1", None);
    let client_header = format!("Bearer {}", tokens.client);
    let exporter_header = format!("Bearer {}", tokens.exporter);
    let mut client_channel = router.client().await;
    let mut exporter_channel = router.client().await;
    let (writer, reader) = timeout(
        WAIT,
        futures::future::join(
            open(&mut client_channel, Some(&client_header), 1),
            open(&mut exporter_channel, Some(&exporter_header), 1),
        ),
    )
    .await
    .expect("pairing in time");
    let writer = writer.expect("writer");
    // The reader never reads; it keeps its stream open.
    let _reader = reader.expect("reader");

    // The writer sends until the router stops taking frames (each send gets 3 s).
    let payload = vec![0x5a; FRAME];
    let mut sent = 0;
    while sent < FRAMES {
        let request = frame(FrameType::Data, payload.clone());
        match timeout(Duration::from_secs(3), writer.tx.send(request)).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) => panic!("the writer's stream ended"),
            Err(_) => break,
        }
    }
    // What the router took from the writer and queued for the reader (or handed to the
    // reader's connection, whose HTTP/2 window the reader does not open).
    let relayed: f64 = ["waiting_to_arriving", "arriving_to_waiting"]
        .iter()
        .map(|direction| {
            router.metric(&format!(
                "router_relayed_bytes_total{{direction=\"{direction}\"}}"
            ))
        })
        .sum();
    let mib = relayed / (1024.0 * 1024.0);
    println!("frames sent by the writer: {sent}; relayed toward the stalled reader: {mib:.1} MiB");
    assert!(
        sent < FRAMES,
        "the writer is held back by the stalled reader"
    );
    // 16 frames of 4 MiB used to wait in the queue; now 1 MiB (or one frame) does, plus
    // what the reader's connection buffers.
    assert!(
        mib <= 16.0,
        "{mib:.1} MiB relayed toward a reader that does not read"
    );
}

#[tokio::test]
async fn an_h2_session_ends_within_seconds_of_its_lease_end() {
    let router = support::start(|_| {}).await;
    // Whole seconds, as in the token: the lease ends 2 to 3 seconds from now.
    let lease_end = OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let tokens = router.token_pair("ending", "lab/lease-1", Some(lease_end));
    let client_header = format!("Bearer {}", tokens.client);
    let exporter_header = format!("Bearer {}", tokens.exporter);
    let mut client_channel = router.client().await;
    let mut exporter_channel = router.client().await;
    let (client, exporter) = timeout(
        WAIT,
        futures::future::join(
            open(&mut client_channel, Some(&client_header), 4),
            open(&mut exporter_channel, Some(&exporter_header), 4),
        ),
    )
    .await
    .expect("pairing in time");
    let mut client = client.expect("client");
    let mut exporter = exporter.expect("exporter");
    send(&client.tx, frame(FrameType::Data, b"before".to_vec())).await;
    assert_eq!(
        recv(&mut exporter.rx)
            .await
            .expect("ok")
            .expect("frame")
            .payload,
        b"before"
    );

    // Both peers keep their streams open; the router ends both at the lease's end.
    for (side, rx) in [("client", &mut client.rx), ("exporter", &mut exporter.rx)] {
        let ended = timeout(Duration::from_secs(10), rx.message())
            .await
            .unwrap_or_else(|_| panic!("the {side}'s stream still runs 7 s after the lease end"));
        let status = ended.expect_err("ended with an error status");
        assert_eq!(status.code(), Code::PermissionDenied, "{side}: {status:?}");
        assert_eq!(status.message(), "the lease ended");
    }
    let ended_at = OffsetDateTime::now_utc();
    assert!(ended_at >= lease_end - time::Duration::seconds(1));
    assert!(
        router
            .metrics_text()
            .contains(r#"router_streams_total{outcome="lease_ended"} 2"#),
        "{}",
        router.metrics_text()
    );

    // A stream of the ended lease is refused at once.
    let late = router.token_pair("late", "lab/lease-1", Some(lease_end));
    let header = format!("Bearer {}", late.client);
    let mut channel = router.client().await;
    let refused = timeout(WAIT, open(&mut channel, Some(&header), 4))
        .await
        .expect("answered in time")
        .err()
        .expect("refused");
    assert_eq!(refused.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn an_h2_session_outlives_its_token_lease_end_when_a_newer_token_extends_the_lease() {
    let router = support::start(|_| {}).await;
    let now = OffsetDateTime::now_utc();
    let tokens = router.token_pair(
        "first",
        "lab/lease-1",
        Some(now + time::Duration::seconds(3)),
    );
    let client_header = format!("Bearer {}", tokens.client);
    let exporter_header = format!("Bearer {}", tokens.exporter);
    let mut client_channel = router.client().await;
    let mut exporter_channel = router.client().await;
    let (client, exporter) = timeout(
        WAIT,
        futures::future::join(
            open(&mut client_channel, Some(&client_header), 4),
            open(&mut exporter_channel, Some(&exporter_header), 4),
        ),
    )
    .await
    .expect("pairing in time");
    let client = client.expect("client");
    let mut exporter = exporter.expect("exporter");

    // The lease is extended; a later Dial's token, with the new end, reaches the router.
    let extended = router.token_pair(
        "second",
        "lab/lease-1",
        Some(now + time::Duration::minutes(10)),
    );
    let header = format!("Bearer {}", extended.client);
    let mut channel = router.client().await;
    let _waiting = tokio::spawn(async move { open(&mut channel, Some(&header), 4).await });
    assert!(
        eventually(WAIT, || router.metric("router_pending_streams") >= 1.0).await,
        "the newer token arrived"
    );

    // Past the first token's lease end, the first pair still relays.
    tokio::time::sleep(Duration::from_secs(5)).await;
    send(&client.tx, frame(FrameType::Data, b"after".to_vec())).await;
    assert_eq!(
        recv(&mut exporter.rx)
            .await
            .expect("still relaying")
            .expect("frame")
            .payload,
        b"after"
    );
}

// ---------------------------------------------------------------------------------------
// QUIC

/// A UDP relay that forwards datagrams to the router and drops every answer: QUIC
/// handshakes through it never complete, as with a flood of spoofed source addresses.
async fn black_hole(router: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let front = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let back = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    back.connect(router).await.expect("connect");
    let addr = front.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((len, _)) = front.recv_from(&mut buf).await {
            let _ = back.send(&buf[..len]).await;
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_quic_handshake_flood_meets_retry_and_a_real_peer_still_connects() {
    const THRESHOLD: usize = 4;
    let router = support::quic_only::start(|config| config.retry_threshold = THRESHOLD).await;
    let (hole, relay) = black_hole(router.addr).await;

    // Forty handshakes that never complete.
    let mut flood = JoinSet::new();
    for _ in 0..40 {
        let now = OffsetDateTime::now_utc();
        let cert = support::quic_only::lease_cert(
            &router.ca,
            Role::Client,
            "mallory",
            now,
            now + time::Duration::hours(1),
        );
        let roots = vec![router.ca.cert_der().clone()];
        flood.spawn(async move {
            let _ = QuicPeer::connect(hole, HOST, roots, cert.chain, cert.key).await;
        });
    }
    assert!(
        eventually(WAIT, || {
            let text = router.metrics_text();
            metric(&text, "router_quic_unvalidated_handshakes") >= THRESHOLD as f64
                && metric(
                    &text,
                    r#"router_quic_connection_attempts_total{outcome="retry"}"#,
                ) >= 1.0
        })
        .await,
        "the flood fills the unvalidated handshakes and meets Retry: {}",
        router.metrics_text()
    );

    // A real peer proves its address (one more round trip) and connects.
    let started = Instant::now();
    let client = router.peer(Role::Client, "alice").await;
    let exporter = router.peer(Role::Exporter, "board-1").await;
    println!(
        "two real peers connected during the flood in {:?}",
        started.elapsed()
    );
    let (mut c_send, _c_recv) = client.open_session("s-1").await.expect("client session");
    let (_e_send, mut e_recv) = exporter
        .open_session("s-1")
        .await
        .expect("exporter session");
    c_send.write_all(b"through").await.expect("write");
    c_send.finish().expect("finish");
    let got = timeout(WAIT, e_recv.read_to_end(64))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(got, b"through");
    let text = router.metrics_text();
    let retries = metric(
        &text,
        r#"router_quic_connection_attempts_total{outcome="retry"}"#,
    );
    let accepted = metric(
        &text,
        r#"router_quic_connection_attempts_total{outcome="accepted"}"#,
    );
    println!("connection attempts: {retries} retried, {accepted} accepted");
    assert!(retries >= 1.0, "{text}");
    flood.abort_all();
    relay.abort();
}

#[tokio::test]
async fn quic_connections_beyond_the_cap_are_refused_and_established_ones_go_on() {
    let router = support::quic_only::start(|config| config.max_connections = 2).await;
    let client = router.peer(Role::Client, "alice").await;
    let exporter = router.peer(Role::Exporter, "board-1").await;
    let now = OffsetDateTime::now_utc();
    let third = support::quic_only::lease_cert(
        &router.ca,
        Role::Client,
        "bob",
        now,
        now + time::Duration::hours(1),
    );
    let refused = router.connect(third).await;
    let error = refused.expect_err("a third connection is refused");
    assert!(
        format!("{error:?}").contains("CONNECTION_REFUSED"),
        "{error:?}"
    );
    assert_eq!(
        metric(
            &router.metrics_text(),
            r#"router_quic_connection_attempts_total{outcome="refused_too_many_connections"}"#
        ),
        1.0,
        "{}",
        router.metrics_text()
    );

    // The two established connections still carry a session.
    let (mut c_send, _c_recv) = client.open_session("s-1").await.expect("client session");
    let (_e_send, mut e_recv) = exporter
        .open_session("s-1")
        .await
        .expect("exporter session");
    c_send.write_all(b"still here").await.expect("write");
    c_send.finish().expect("finish");
    let got = timeout(WAIT, e_recv.read_to_end(64))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(got, b"still here");

    // Once one leaves, a new peer connects again.
    client.close();
    drop(client);
    let deadline = Instant::now() + WAIT;
    let again = loop {
        let now = OffsetDateTime::now_utc();
        let cert = support::quic_only::lease_cert(
            &router.ca,
            Role::Client,
            "carol",
            now,
            now + time::Duration::hours(1),
        );
        match router.connect(cert).await {
            Ok(connection) => break connection,
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("no room after a peer left: {error:?}"),
        }
    };
    drop(again);
}

/// The router binary with a QUIC listener, its stderr lines on a channel; killed on drop.
struct RouterProcess {
    child: Child,
    quic: SocketAddr,
    metrics: SocketAddr,
    ca: jumpstarter_certs::Ca,
    _dir: tempfile::TempDir,
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RouterProcess {
    fn start(extra: &[&str]) -> RouterProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, server) = authority("memory test CA");
        let token_key = jumpstarter_token::SigningKey::generate().expect("token key");
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("tls.crt"), &server.chain_pem).expect("write");
        std::fs::write(path("tls.key"), &server.key_pem).expect("write");
        std::fs::write(path("ca.crt"), ca.cert_pem()).expect("write");
        std::fs::write(path("keys.pem"), token_key.verifying_key().to_public_pem()).expect("write");
        // A free UDP port, released just before the router binds it.
        let quic = UdpSocket::bind("127.0.0.1:0")
            .and_then(|socket| socket.local_addr())
            .expect("free port");
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|socket| socket.local_addr())
            .expect("free port");
        let mut child = Command::new(env!("CARGO_BIN_EXE_jumpstarter-router"))
            .args(["--listen", "127.0.0.1:0"])
            .args(["--metrics-listen", &metrics.to_string()])
            .args(["--quic-listen", &quic.to_string(), "--pair-timeout", "5m"])
            .arg("--client-ca")
            .arg(path("ca.crt"))
            .arg("--tls-cert")
            .arg(path("tls.crt"))
            .arg("--tls-key")
            .arg(path("tls.key"))
            .arg("--token-public-keys")
            .arg(path("keys.pem"))
            .args(extra)
            .env("RUST_LOG", "warn,jumpstarter_router=info")
            .env_remove("JUMPSTARTER_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the router");
        let (lines_tx, lines) = std_mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let process = RouterProcess {
            child,
            quic,
            metrics,
            ca,
            _dir: dir,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains("QUIC router serving") => break,
                Ok(_) => {}
                Err(_) => panic!("the router did not start"),
            }
        }
        process
    }

    /// The value of the metric line starting with `prefix` (0 when absent).
    fn metric(&self, prefix: &str) -> f64 {
        use std::io::{Read, Write};
        let mut text = String::new();
        if let Ok(mut stream) = std::net::TcpStream::connect(self.metrics) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: router\r\n\r\n");
            let _ = stream.read_to_string(&mut text);
        }
        metric(&text, prefix)
    }

    /// The process's resident set size, in KiB.
    fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    async fn connect(&self, lease: &str) -> Connection {
        let now = OffsetDateTime::now_utc();
        let cert = authority::lease_cert(
            &self.ca,
            lease,
            Role::Client,
            "mallory",
            now,
            now + time::Duration::hours(1),
            None,
        );
        authority::connect(self.quic, &self.ca, &cert)
            .await
            .expect("connect")
    }
}

/// Connections, parked streams per connection, and bytes each stream sends.
const CONNECTIONS: usize = 10;
const PARKED: usize = 256;
const PAYLOAD: usize = 1_200_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_quic_streams_leave_the_router_memory_bounded() {
    // A budget of two connections' full windows (64 MiB each by default): the other eight
    // get the floor (2 MiB connection windows).
    let router = RouterProcess::start(&["--quic-window-budget", "134217728"]);
    let before = router.rss_kib();

    // Ten connections (one lease each), 256 streams each that no peer ever answers, each
    // sending 1.2 MB after its header: 3 GB if the router buffered it all. Every header
    // goes out first: the payload of parked streams fills the connection's window, which
    // the router does not open again while they wait.
    let mut connections = Vec::new();
    let mut streams = Vec::new();
    for index in 0..CONNECTIONS {
        let connection = router.connect(&format!("parked-{index}")).await;
        for stream in 0..PARKED {
            let opened = timeout(WAIT, connection.open_session(&format!("s-{stream}")))
                .await
                .expect("opened in time")
                .expect("open");
            streams.push(opened);
        }
        connections.push(connection);
    }
    let parked = CONNECTIONS * PARKED;
    let router_pending = || router.metric("jumpstarter_router_quic_pending_sessions");
    assert!(
        eventually(WAIT, || router_pending() >= parked as f64).await,
        "{} of {parked} streams parked",
        router_pending()
    );
    let mut writers = JoinSet::new();
    let payload = std::sync::Arc::new(vec![0xa5; PAYLOAD]);
    for (mut send, recv) in streams {
        let payload = payload.clone();
        writers.spawn(async move {
            let _keep = recv;
            let _ = send.write_all(&payload).await;
            send
        });
    }

    // Wait until the router takes no more: its RSS is the same over two seconds.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = router.rss_kib();
    let mut stable_since = Instant::now();
    while Instant::now() < deadline && stable_since.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = router.rss_kib();
        if now.abs_diff(last) > 1024 {
            stable_since = Instant::now();
        }
        last = now;
    }
    let after = router.rss_kib();
    let growth_mib = after.saturating_sub(before) as f64 / 1024.0;
    println!(
        "router RSS: {} MiB before, {} MiB with {} parked streams sending {} bytes each \
         (+{growth_mib:.1} MiB)",
        before / 1024,
        after / 1024,
        CONNECTIONS * PARKED,
        PAYLOAD
    );
    assert!(
        growth_mib < 200.0,
        "the router's RSS grew by {growth_mib:.1} MiB"
    );

    // The router still admits a new connection and its sessions.
    let client = router.connect("fresh").await;
    let (mut send, _recv) = client.open_session("s").await.expect("session");
    send.write_all(b"x").await.expect("write");
    writers.abort_all();
    drop(connections);
}
