//! The QUIC listener on 127.0.0.1 with certificates minted in the test: pairing and
//! splicing of session streams, half-close, independent flow control per session,
//! admission refusals and per-stream header errors. Every wait is bounded.

use crate::support;

use std::time::Duration;

use jumpstarter_certs::{Ca, Role, client_config};
use jumpstarter_tunnel::{ALPN, Connection, QuicPeer, code};

use support::WAIT;
use support::authority::HOST;
use support::lab::{BLOCK, quic_receive as receive_all, quic_send as send_blocks, read_reset_code};
use support::quic_only::{lease_cert, start};
use time::OffsetDateTime;
use tokio::time::timeout;

/// Asserts that a connection attempt was refused by the router: either the handshake
/// fails, or the connection is closed right after it (TLS 1.3 clients finish first).
async fn assert_refused(attempt: Result<Connection, jumpstarter_tunnel::ConnectError>) {
    let Ok(connection) = attempt else { return };
    let error = timeout(Duration::from_secs(10), connection.quic().closed())
        .await
        .expect("the router closes the connection well before the idle timeout");
    assert!(
        matches!(
            error,
            quinn::ConnectionError::TransportError(_) | quinn::ConnectionError::ConnectionClosed(_)
        ),
        "refused with a TLS alert, got {error:?}"
    );
    // And no session works on it.
    let opened = timeout(WAIT, connection.open_session("s"))
        .await
        .expect("bounded");
    assert!(opened.is_err());
}

#[tokio::test]
async fn sixty_four_mib_cross_intact_both_ways() {
    let router = start(|_| {}).await;
    let client = router.peer(Role::Client, "alice").await;
    let exporter = router.peer(Role::Exporter, "board-1").await;
    let (c_send, c_recv) = client
        .open_session("session-1")
        .await
        .expect("client session");
    let (e_send, e_recv) = exporter
        .open_session("session-1")
        .await
        .expect("exporter session");

    let blocks = 64 * 1024 * 1024 / BLOCK as u64;
    let up = tokio::spawn(send_blocks(c_send, 1, blocks));
    let down = tokio::spawn(send_blocks(e_send, 2, blocks));
    let up_rx = tokio::spawn(receive_all(e_recv));
    let down_rx = tokio::spawn(receive_all(c_recv));
    let transfer = async {
        (
            up.await.expect("up"),
            down.await.expect("down"),
            up_rx.await.expect("up rx"),
            down_rx.await.expect("down rx"),
        )
    };
    let (sent_up, sent_down, got_up, got_down) = timeout(Duration::from_secs(240), transfer)
        .await
        .expect("transfer in time");
    assert_eq!(got_up, (sent_up, 64 * 1024 * 1024));
    assert_eq!(got_down, (sent_down.clone(), 64 * 1024 * 1024));
    assert_ne!(
        got_down.0, got_up.0,
        "the two directions carry different data"
    );

    let text = router.metrics_text();
    assert!(
        text.contains(
            r#"router_quic_relayed_bytes_total{direction="client_to_exporter"} 67108864"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn fin_is_a_half_close() {
    let router = start(|_| {}).await;
    let client = router.peer(Role::Client, "alice").await;
    let exporter = router.peer(Role::Exporter, "board-1").await;
    // The exporter may open first as well.
    let (mut e_send, mut e_recv) = exporter.open_session("s").await.expect("exporter");
    let (mut c_send, mut c_recv) = client.open_session("s").await.expect("client");

    c_send.write_all(b"ping").await.expect("write");
    c_send.finish().expect("finish");
    let got = timeout(WAIT, e_recv.read_to_end(1024))
        .await
        .expect("bounded")
        .expect("read");
    assert_eq!(got, b"ping");
    // The exporter saw the end of the client's direction and still answers.
    e_send
        .write_all(b"pong")
        .await
        .expect("write after peer FIN");
    e_send.finish().expect("finish");
    let got = timeout(WAIT, c_recv.read_to_end(1024))
        .await
        .expect("bounded")
        .expect("read");
    assert_eq!(got, b"pong");
}

#[tokio::test]
async fn a_stalled_session_does_not_block_another() {
    let router = start(|_| {}).await;
    let client = router.peer(Role::Client, "alice").await;
    let exporter = router.peer(Role::Exporter, "board-1").await;
    let (mut stalled_send, _stalled_c_recv) = client.open_session("stalled").await.expect("a");
    let (_stalled_e_send, stalled_e_recv) = exporter.open_session("stalled").await.expect("a");

    // The exporter never reads "stalled": its writer blocks once the windows are full.
    let stalled_writer = tokio::spawn(async move {
        let block = vec![7u8; BLOCK];
        for _ in 0..(64 * 1024 * 1024 / BLOCK) {
            stalled_send.write_all(&block).await.expect("write");
        }
        stalled_send.finish().expect("finish");
    });

    let (b_send, b_recv) = client.open_session("busy").await.expect("b");
    let (e_send, e_recv) = exporter.open_session("busy").await.expect("b");
    let blocks = 8 * 1024 * 1024 / BLOCK as u64;
    let transfer = async {
        let (sent_up, sent_down, got_up, got_down) = tokio::join!(
            send_blocks(b_send, 3, blocks),
            send_blocks(e_send, 4, blocks),
            receive_all(e_recv),
            receive_all(b_recv),
        );
        assert_eq!(got_up.0, sent_up);
        assert_eq!(got_down.0, sent_down);
    };
    timeout(Duration::from_secs(120), transfer)
        .await
        .expect("the busy session completes while the other is stalled");
    assert!(
        !stalled_writer.is_finished(),
        "the stalled session really is stalled"
    );

    // Once its reader reads, the stalled session completes as well.
    let (_, len) = timeout(Duration::from_secs(240), receive_all(stalled_e_recv))
        .await
        .expect("the stalled session drains");
    assert_eq!(len, 64 * 1024 * 1024);
    timeout(WAIT, stalled_writer)
        .await
        .expect("writer done")
        .expect("writer");
}

#[tokio::test]
async fn connections_without_a_client_certificate_are_refused() {
    let router = start(|_| {}).await;
    let tls = client_config(
        vec![router.ca.cert_der().clone()],
        None,
        vec![ALPN.to_vec()],
    )
    .expect("tls");
    let attempt = timeout(WAIT, QuicPeer::connect_with_tls(router.addr, HOST, tls))
        .await
        .expect("bounded");
    assert_refused(attempt).await;
    assert!(
        router
            .metrics_text()
            .contains("router_quic_admission_failures_total")
    );
}

#[tokio::test]
async fn certificates_from_another_ca_are_refused() {
    let router = start(|_| {}).await;
    let now = OffsetDateTime::now_utc();
    let other = Ca::generate("another CA", now, time::Duration::days(1)).expect("CA");
    let cert = lease_cert(
        &other,
        Role::Client,
        "mallory",
        now,
        now + time::Duration::hours(1),
    );
    assert_refused(router.connect(cert).await).await;
}

#[tokio::test]
async fn expired_certificates_are_refused() {
    let router = start(|_| {}).await;
    let now = OffsetDateTime::now_utc();
    let long_ago = now - time::Duration::hours(3);
    let cert = lease_cert(
        &router.ca,
        Role::Client,
        "alice",
        long_ago,
        long_ago + time::Duration::hours(1),
    );
    assert_refused(router.connect(cert).await).await;
}

#[tokio::test]
async fn two_sides_of_the_same_role_do_not_pair() {
    let router = start(|_| {}).await;
    let first = router.peer(Role::Client, "alice").await;
    let second = router.peer(Role::Client, "alice-again").await;
    let (mut f_send, mut f_recv) = first.open_session("s").await.expect("first");
    // Let the first stream reach the router before the second.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_s_send, mut s_recv) = second.open_session("s").await.expect("second");
    assert_eq!(
        read_reset_code(&mut s_recv).await,
        u64::from(code::SAME_ROLE)
    );

    // The first still waits, and pairs with the exporter.
    let exporter = router.peer(Role::Exporter, "board-1").await;
    let (mut e_send, mut e_recv) = exporter.open_session("s").await.expect("exporter");
    f_send.write_all(b"hello").await.expect("write");
    f_send.finish().expect("finish");
    let got = timeout(WAIT, e_recv.read_to_end(64))
        .await
        .expect("bounded")
        .expect("read");
    assert_eq!(got, b"hello");
    e_send.finish().expect("finish");
    let got = timeout(WAIT, f_recv.read_to_end(64))
        .await
        .expect("bounded")
        .expect("read");
    assert!(got.is_empty());

    // A third stream for a paired session is refused.
    let (_t_send, mut t_recv) = exporter.open_session("s").await.expect("third");
    assert_eq!(
        read_reset_code(&mut t_recv).await,
        u64::from(code::ALREADY_PAIRED)
    );
}

#[tokio::test]
async fn header_errors_reset_only_that_stream() {
    let router = start(|_| {}).await;
    let client = router.peer(Role::Client, "alice").await;
    let exporter = router.peer(Role::Exporter, "board-1").await;

    for bad in [
        &b"GET / HTTP/1.1\r\n"[..],
        &b"JMP\x02\x01s\x00\x00"[..],
        &b"JMP\x01\x81"[..],
        &b"JMP\x01\x05ab"[..], // truncated by the FIN below
    ] {
        let (mut send, mut recv) = client.quic().open_bi().await.expect("open");
        send.write_all(bad).await.expect("write");
        send.finish().expect("finish");
        assert_eq!(
            read_reset_code(&mut recv).await,
            u64::from(code::BAD_HEADER),
            "for {bad:?}"
        );
    }

    // The connection is still fine for real sessions.
    let (mut c_send, _c_recv) = client.open_session("ok").await.expect("client");
    let (_e_send, mut e_recv) = exporter.open_session("ok").await.expect("exporter");
    c_send.write_all(b"still here").await.expect("write");
    c_send.finish().expect("finish");
    let got = timeout(WAIT, e_recv.read_to_end(64))
        .await
        .expect("bounded")
        .expect("read");
    assert_eq!(got, b"still here");
}

#[tokio::test]
async fn a_lonely_session_times_out_with_a_reset() {
    let router = start(|config| config.pair_timeout = Duration::from_millis(300)).await;
    let client = router.peer(Role::Client, "alice").await;
    let (_send, mut recv) = client.open_session("alone").await.expect("session");
    assert_eq!(
        read_reset_code(&mut recv).await,
        u64::from(code::PAIR_TIMEOUT)
    );
    assert!(
        router
            .metrics_text()
            .contains("router_quic_pairing_timeouts_total 1")
    );
}
