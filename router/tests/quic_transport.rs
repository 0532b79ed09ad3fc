//! The QUIC transport settings in force on the router binary, checked from outside: the
//! router started with non-default settings (Cubic, a 3 MiB stream window, 1400-byte
//! datagrams) and with the defaults (BBR, 16 MiB, 6550). For each:
//! - its metrics show the configured windows and the congestion controller of the live
//!   connection;
//! - on the wire, a peer with a larger send window can write about the router's stream
//!   receive window on a session stream whose partner never comes, and no more;
//! - MTU discovery: on loopback (MTU 65,536) a peer's path MTU grows to the bound the
//!   router accepts (6550 by default), and stays at 1400 when the router accepts no more.
//!
//! Also the fairness of a shared connection: round trips on one session complete while
//! another session of the same connection moves bulk data.

use crate::support;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jumpstarter_certs::Role;
use jumpstarter_tunnel::{Congestion, Connection, QuicPeer, QuicTransport};
use time::OffsetDateTime;
use tokio::time::timeout;

use support::WAIT;
use support::authority::{self, HOST, authority};

const MIB: u64 = 1024 * 1024;

/// How long a write may wait before the stream counts as blocked by flow control. Writes
/// within the window complete at once (they only queue bytes); a blocked one never does.
const BLOCKED: Duration = Duration::from_millis(700);

/// The router binary with a QUIC listener, its stderr lines kept; killed on drop.
struct RouterProcess {
    child: Child,
    quic: SocketAddr,
    metrics: SocketAddr,
    ca: jumpstarter_certs::Ca,
    lines: Arc<Mutex<Vec<String>>>,
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
        RouterProcess::start_with(extra, &[])
    }

    /// Started with the flags `extra` and the environment variables `env`.
    fn start_with(extra: &[&str], env: &[(&str, &str)]) -> RouterProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, server) = authority("transport test CA");
        let token_key = jumpstarter_token::SigningKey::generate().expect("token key");
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("tls.crt"), &server.chain_pem).expect("write");
        std::fs::write(path("tls.key"), &server.key_pem).expect("write");
        std::fs::write(path("ca.crt"), ca.cert_pem()).expect("write");
        std::fs::write(path("keys.pem"), token_key.verifying_key().to_public_pem()).expect("write");
        // Free ports, released just before the router binds them.
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
            .envs(env.iter().copied())
            .env(
                "RUST_LOG",
                "warn,jumpstarter_router=info,jumpstarter_tunnel=info",
            )
            .env_remove("JUMPSTARTER_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the router");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn({
            let lines = lines.clone();
            move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("QUIC router serving") {
                        let _ = ready_tx.send(());
                    }
                    lines.lock().expect("lines").push(without_ansi(&line));
                }
            }
        });
        let process = RouterProcess {
            child,
            quic,
            metrics,
            ca,
            lines,
            _dir: dir,
        };
        ready.recv_timeout(WAIT).expect("the router started");
        process
    }

    fn metrics_text(&self) -> String {
        use std::io::{Read, Write};
        let mut text = String::new();
        if let Ok(mut stream) = std::net::TcpStream::connect(self.metrics) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: router\r\n\r\n");
            let _ = stream.read_to_string(&mut text);
        }
        text
    }

    /// The value of the metric line that starts with `series` exactly (labels included).
    fn metric(&self, series: &str) -> Option<f64> {
        self.metrics_text()
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    fn log_line(&self, needle: &str) -> Option<String> {
        let lines = self.lines.lock().expect("lines");
        lines.iter().find(|line| line.contains(needle)).cloned()
    }

    async fn connect(&self, lease: &str, role: Role, transport: &QuicTransport) -> Connection {
        let now = OffsetDateTime::now_utc();
        let cert = authority::lease_cert(
            &self.ca,
            lease,
            role,
            "peer",
            now,
            now + time::Duration::hours(1),
            None,
        );
        timeout(
            WAIT,
            QuicPeer::connect_with_transport(
                self.quic,
                HOST,
                vec![self.ca.cert_der().clone()],
                cert.chain,
                cert.key,
                transport,
            ),
        )
        .await
        .expect("connect in time")
        .expect("connect")
    }
}

/// `line` without terminal colour sequences (`ESC [ … m`).
fn without_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What the router should run with, and what a peer should see of it.
struct Expected {
    stream_receive_window: u64,
    receive_window: u64,
    send_window: u64,
    congestion: Congestion,
    max_udp_payload: u16,
}

/// Bytes written on a fresh session stream (no partner ever comes) before a write blocks.
/// Keeps the stream open until the count is known.
async fn writable_before_blocking(connection: &Connection, session: &str) -> u64 {
    let (mut send, _recv) = timeout(WAIT, connection.open_session(session))
        .await
        .expect("open in time")
        .expect("open");
    let chunk = vec![0x5a; 32 * 1024];
    let mut total = 0u64;
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "still writing after {total} bytes"
        );
        match timeout(BLOCKED, send.write(&chunk)).await {
            Ok(Ok(written)) => total += written as u64,
            Ok(Err(error)) => panic!("write failed after {total} bytes: {error}"),
            Err(_) => return total,
        }
    }
}

/// Polls `probe` every 50 ms until it holds or `within` passes.
async fn eventually(within: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if probe() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn check_router(extra: &[&str], expected: Expected) {
    let router = RouterProcess::start(extra);
    let other = |c: Congestion| Congestion::ALL.into_iter().filter(move |&o| o != c);

    // A peer with windows larger than any the router may have, so the router's are the
    // limit; and its own MTU bound above the router's.
    let peer_transport = QuicTransport {
        stream_receive_window: 64 * MIB,
        receive_window: 128 * MIB,
        send_window: 128 * MIB,
        congestion: Congestion::NewReno,
        max_udp_payload: 16_000,
    };
    let peer = router
        .connect("transport", Role::Client, &peer_transport)
        .await;
    assert_eq!(
        Congestion::in_force(peer.quic()),
        Some(Congestion::NewReno),
        "the client library runs the controller it was given"
    );

    // (a) The metrics: configured windows, the live connection's controller.
    for (window, bytes) in [
        ("stream_receive", expected.stream_receive_window),
        ("receive", expected.receive_window),
        ("send", expected.send_window),
    ] {
        let series =
            format!("jumpstarter_quic_window_bytes{{endpoint=\"router\",window=\"{window}\"}}");
        assert_eq!(router.metric(&series), Some(bytes as f64), "{series}");
    }
    let info = |c: Congestion| {
        format!("jumpstarter_quic_congestion_info{{endpoint=\"router\",congestion=\"{c}\"}}")
    };
    assert!(
        eventually(WAIT, || router.metric(&info(expected.congestion))
            == Some(1.0))
        .await,
        "{}",
        router.metrics_text()
    );
    for other in other(expected.congestion) {
        assert_eq!(router.metric(&info(other)), Some(0.0), "{}", info(other));
    }
    for kind in ["gso", "gro"] {
        let series =
            format!("jumpstarter_quic_udp_offload_segments{{endpoint=\"router\",kind=\"{kind}\"}}");
        assert!(router.metric(&series).is_some_and(|n| n >= 1.0), "{series}");
    }
    let start = router
        .log_line("QUIC transport in force")
        .expect("the start line");
    for field in [
        format!("congestion=\"{}\"", expected.congestion),
        format!("stream_receive_window={}", expected.stream_receive_window),
        format!("max_udp_payload={}", expected.max_udp_payload),
    ] {
        assert!(start.contains(&field), "{field} in {start}");
    }
    assert!(router.log_line("worst_case_bytes").is_some());

    // (b) On the wire: the router's stream receive window, give or take a header and one
    // flow-control update, is what a parked stream takes.
    let written = writable_before_blocking(&peer, "parked").await;
    println!(
        "{written} bytes written on a parked stream (router stream window {})",
        expected.stream_receive_window
    );
    let margin = 64 * 1024;
    assert!(
        written + margin >= expected.stream_receive_window
            && written <= expected.stream_receive_window + margin,
        "{written} bytes written on a parked stream; the router's stream window is {}",
        expected.stream_receive_window
    );

    // (c) MTU discovery after that transfer: up to what the router accepts on loopback.
    let mtu = || peer.quic().stats().path.current_mtu;
    if expected.max_udp_payload > 1452 {
        assert!(
            eventually(Duration::from_secs(20), || mtu() > 1452).await,
            "the path MTU stayed at {}",
            mtu()
        );
        assert!(mtu() <= expected.max_udp_payload, "{}", mtu());
    } else {
        // Give discovery the same chance; it must stop at the router's bound.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(mtu() <= expected.max_udp_payload, "{}", mtu());
    }
    println!(
        "path MTU {} (router bound {})",
        mtu(),
        expected.max_udp_payload
    );
    peer.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_default_settings_are_in_force_on_the_router() {
    check_router(
        &[
            "--quic-congestion",
            "cubic",
            "--quic-stream-receive-window",
            "3145728",
            "--quic-receive-window",
            "8388608",
            "--quic-send-window",
            "5242880",
            "--quic-max-udp-payload",
            "1400",
        ],
        Expected {
            stream_receive_window: 3 * MIB,
            receive_window: 8 * MIB,
            send_window: 5 * MIB,
            congestion: Congestion::Cubic,
            max_udp_payload: 1400,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_settings_are_in_force_on_the_router() {
    let defaults = QuicTransport::default();
    check_router(
        &[],
        Expected {
            stream_receive_window: defaults.stream_receive_window,
            receive_window: defaults.receive_window,
            send_window: defaults.send_window,
            congestion: defaults.congestion,
            max_udp_payload: defaults.max_udp_payload,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_window_environment_names_still_work() {
    let router = RouterProcess::start_with(
        &[],
        &[
            ("JUMPSTARTER_ROUTER_QUIC_STREAM_RECEIVE_WINDOW", "2097152"),
            ("JUMPSTARTER_ROUTER_QUIC_RECEIVE_WINDOW", "4194304"),
        ],
    );
    for (window, bytes) in [("stream_receive", 2 * MIB), ("receive", 4 * MIB)] {
        let series =
            format!("jumpstarter_quic_window_bytes{{endpoint=\"router\",window=\"{window}\"}}");
        assert_eq!(router.metric(&series), Some(bytes as f64), "{series}");
    }
}

/// Round trips of 64 bytes on one session complete while another session of the same
/// connection moves bulk data through the router: the small writes do not queue behind
/// the bulk stream's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_round_trips_do_not_wait_behind_bulk_data_on_the_same_connection() {
    let router = RouterProcess::start(&[]);
    let transport = QuicTransport::default();
    let client = router.connect("fair", Role::Client, &transport).await;
    let exporter = router.connect("fair", Role::Exporter, &transport).await;

    // Bulk: the client sends, the exporter drains; running until told to stop.
    let (mut bulk_send, _bulk_back) = client.open_session("bulk").await.expect("open");
    let (_bulk_reply, mut bulk_recv) = exporter.open_session("bulk").await.expect("open");
    let drained = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let drain = tokio::spawn({
        let drained = drained.clone();
        async move {
            let mut buf = vec![0; 256 * 1024];
            while let Ok(Some(n)) = bulk_recv.read(&mut buf).await {
                drained.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let bulk = tokio::spawn({
        let stop = stop.clone();
        async move {
            let chunk = vec![0xb1; 256 * 1024];
            let mut sent = 0u64;
            while !stop.is_cancelled() {
                match bulk_send.write_all(&chunk).await {
                    Ok(()) => sent += chunk.len() as u64,
                    Err(_) => break,
                }
            }
            (sent, bulk_send)
        }
    });
    // Let the bulk transfer fill its windows first.
    assert!(
        eventually(WAIT, || drained.load(std::sync::atomic::Ordering::Relaxed)
            > 64 * MIB)
        .await,
        "the bulk transfer does not run"
    );

    // Echo: the exporter returns every 64-byte message.
    let (mut ping_send, mut ping_recv) = client.open_session("ping").await.expect("open");
    let (mut echo_send, mut echo_recv) = exporter.open_session("ping").await.expect("open");
    let echo = tokio::spawn(async move {
        let mut message = [0u8; 64];
        while echo_recv.read_exact(&mut message).await.is_ok() {
            if echo_send.write_all(&message).await.is_err() {
                break;
            }
        }
    });
    let round_trips = 100;
    let started = Instant::now();
    for index in 0..round_trips {
        let message = [index as u8; 64];
        let mut answer = [0u8; 64];
        timeout(WAIT, async {
            ping_send.write_all(&message).await.expect("ping");
            ping_recv.read_exact(&mut answer).await.expect("pong");
        })
        .await
        .unwrap_or_else(|_| panic!("round trip {index} did not complete"));
        assert_eq!(answer, message);
    }
    let elapsed = started.elapsed();
    let during = drained.load(std::sync::atomic::Ordering::Relaxed);
    // The bulk transfer was still running: it goes on moving data after the round trips.
    assert!(
        eventually(WAIT, || drained.load(std::sync::atomic::Ordering::Relaxed)
            > during + 8 * MIB)
        .await,
        "the bulk transfer stopped"
    );
    assert!(!bulk.is_finished(), "the bulk writer ended early");
    println!("{round_trips} round trips in {elapsed:?} beside a bulk transfer");
    stop.cancel();
    bulk.abort();
    drain.abort();
    echo.abort();
}

/// Send windows follow the round-trip time: on loopback (far below the 100 ms design point)
/// the client library and the router scale theirs toward the 512 KiB minimum (to at most
/// 4 MiB here, which allows for round trips of a loaded test machine), which the router
/// reports as `jumpstarter_router_quic_send_window_bytes` (the sum over its connections);
/// with `--quic-full-window-rtt 0s` the router keeps the configured 32 MiB. Either way a
/// session then moves bulk data both ways, and the gauge returns to 0 when the connections
/// close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_windows_are_scaled_to_the_round_trip_time() {
    use jumpstarter_tunnel::send_window::MIN_SEND_WINDOW;
    let series = "jumpstarter_router_quic_send_window_bytes";
    let configured = QuicTransport::default().send_window;
    let scaled = |bytes: f64| (2.0 * MIN_SEND_WINDOW as f64..=8.0 * MIB as f64).contains(&bytes);
    let fixed = |bytes: f64| bytes == 2.0 * configured as f64;
    for (extra, expected) in [
        (&[][..], &scaled as &dyn Fn(f64) -> bool),
        (&["--quic-full-window-rtt", "0s"][..], &fixed),
    ] {
        let router = RouterProcess::start(extra);
        let transport = QuicTransport::default();
        let client = router.connect("scaled", Role::Client, &transport).await;
        let exporter = router.connect("scaled", Role::Exporter, &transport).await;
        assert!(
            eventually(WAIT, || router.metric(series).is_some_and(expected)).await,
            "{extra:?}: {series} = {:?} for two connections",
            router.metric(series)
        );
        assert!(
            eventually(WAIT, || (MIN_SEND_WINDOW..=4 * MIB)
                .contains(&client.send_window()))
            .await,
            "the client library's send window: {}",
            client.send_window()
        );

        let (mut send, mut back) = client.open_session("bulk").await.expect("open");
        let (mut reply, mut recv) = exporter.open_session("bulk").await.expect("open");
        let total = 16 * MIB as usize;
        let echo = tokio::spawn(async move {
            let mut buf = vec![0; 256 * 1024];
            let mut moved = 0;
            while let Some(n) = recv.read(&mut buf).await.expect("exporter reads") {
                reply.write_all(&buf[..n]).await.expect("exporter writes");
                moved += n;
            }
            reply.finish().expect("finish");
            moved
        });
        let chunk = vec![0x7e; 256 * 1024];
        let (sent, got) = tokio::join!(
            async {
                for _ in 0..total / chunk.len() {
                    send.write_all(&chunk).await.expect("client writes");
                }
                send.finish().expect("finish");
            },
            timeout(Duration::from_secs(60), back.read_to_end(total + 1))
        );
        let () = sent;
        let got = got.expect("echoed in time").expect("client reads");
        assert_eq!(got.len(), total);
        assert_eq!(echo.await.expect("echo"), total);
        client.close();
        exporter.close();
        assert!(
            eventually(WAIT, || router.metric(series) == Some(0.0)).await,
            "{series} returns to 0 when the connections close: {:?}",
            router.metric(series)
        );
    }
}
