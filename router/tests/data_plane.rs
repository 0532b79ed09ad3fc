//! One router serving h2 and QUIC with shared pairing, on 127.0.0.1, with certificates and
//! tokens minted in the test: mixed pairs (h2 ↔ QUIC) moving 64 MiB, router tokens on QUIC
//! sessions, certificate renewal on live connections and the end of a lease, 50 sessions on
//! one connection with one stalled, admission refusals and a handshake flood. Every wait is
//! bounded.

use crate::support;

use std::time::Duration;

use jumpstarter_certs::{Role, client_config};
use jumpstarter_proto::jumpstarter::v1::{FrameType, StreamRequest};
use jumpstarter_token::router::{StreamGrant, mint};
use jumpstarter_tunnel::{ALPN, Connection, Header, QuicPeer, RenewError, code};
use quinn::RecvStream;
use sha2::{Digest, Sha256};
use support::lab::{
    BLOCK, HOST, LEASE, Lab, WAIT, block, quic_receive, quic_send, read_reset_code,
};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;

/// The router with a short pairing timeout, so refusals by timeout come quickly.
async fn lab() -> Lab {
    support::lab::lab(|quic| quic.pair_timeout = Duration::from_secs(5)).await
}

/// Moves 64 MiB each way between an h2 peer and a QUIC peer of role `quic_role`.
async fn mixed_transfer(quic_role: Role) {
    let lab = lab().await;
    let token = lab.token("mixed-1", LEASE, time::Duration::minutes(5));
    let quic = lab.peer(quic_role).await;
    let header = Header::new("mixed-1")
        .expect("header")
        .with_token(&token)
        .expect("token");
    let (quic_tx, quic_rx) = quic.open_with_header(&header).await.expect("open quic");

    let mut h2 = lab.h2_client().await;
    let (h2_tx, requests) = mpsc::channel::<StreamRequest>(4);
    let mut request = Request::new(ReceiverStream::new(requests));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header value"),
    );
    let mut h2_rx = timeout(WAIT, h2.stream(request))
        .await
        .expect("paired in time")
        .expect("h2 stream")
        .into_inner();

    let blocks = 64 * 1024 * 1024 / BLOCK as u64;
    let h2_sender = async {
        let mut digest = Sha256::new();
        for index in 0..blocks {
            let data = block(11, index);
            digest.update(&data);
            h2_tx
                .send(StreamRequest {
                    payload: data,
                    frame_type: FrameType::Data.into(),
                })
                .await
                .expect("h2 send");
        }
        // 0.9.0's half-close: an empty GOAWAY frame, then the end of the request stream.
        h2_tx
            .send(StreamRequest {
                payload: Vec::new(),
                frame_type: FrameType::Goaway.into(),
            })
            .await
            .expect("goaway");
        drop(h2_tx);
        digest.finalize().to_vec()
    };
    let h2_receiver = async {
        let mut digest = Sha256::new();
        let mut len = 0u64;
        let mut goaway = false;
        while let Some(frame) = h2_rx.message().await.expect("h2 read") {
            match FrameType::try_from(frame.frame_type).expect("frame type") {
                FrameType::Data => {
                    assert!(!goaway, "no data after GOAWAY");
                    len += frame.payload.len() as u64;
                    digest.update(&frame.payload);
                }
                FrameType::Goaway => goaway = true,
                other => panic!("unexpected frame {other:?}"),
            }
        }
        assert!(goaway, "the QUIC side's FIN arrives as GOAWAY");
        (digest.finalize().to_vec(), len)
    };
    let transfer = async {
        tokio::join!(
            h2_sender,
            h2_receiver,
            quic_send(quic_tx, 22, blocks),
            quic_receive(quic_rx)
        )
    };
    let (h2_sent, h2_got, quic_sent, quic_got) = timeout(Duration::from_secs(240), transfer)
        .await
        .expect("the transfer completes");
    assert_eq!(quic_got.1, 64 * 1024 * 1024);
    assert_eq!(quic_got.0, h2_sent, "h2 → QUIC intact");
    assert_eq!(h2_got.1, 64 * 1024 * 1024);
    assert_eq!(h2_got.0, quic_sent, "QUIC → h2 intact");
    assert!(lab.metric("router_quic_sessions_total{outcome=\"completed\"}") >= 1.0);
    assert!(lab.metric("router_streams_total{outcome=\"completed\"}") >= 1.0);
}

#[tokio::test]
async fn h2_client_and_quic_exporter_move_64_mib_intact() {
    mixed_transfer(Role::Exporter).await;
}

#[tokio::test]
async fn quic_client_and_h2_exporter_move_64_mib_intact() {
    mixed_transfer(Role::Client).await;
}

#[tokio::test]
async fn quic_sessions_with_the_token_pair_with_each_other() {
    let lab = lab().await;
    let token = lab.token("both-quic", LEASE, time::Duration::minutes(5));
    let header = Header::new("both-quic")
        .expect("header")
        .with_token(&token)
        .expect("token");
    let client = lab.peer(Role::Client).await;
    let exporter = lab.peer(Role::Exporter).await;
    let (mut c_send, c_recv) = client.open_with_header(&header).await.expect("client");
    let (mut e_send, e_recv) = exporter.open_with_header(&header).await.expect("exporter");
    c_send.write_all(b"hello").await.expect("write");
    c_send.finish().expect("finish");
    e_send.write_all(b"world").await.expect("write");
    e_send.finish().expect("finish");
    let (up, down) = timeout(WAIT, async {
        tokio::join!(e_recv.read_to_end_owned(), c_recv.read_to_end_owned())
    })
    .await
    .expect("bounded");
    assert_eq!(up, b"hello");
    assert_eq!(down, b"world");
}

trait ReadToEndOwned {
    async fn read_to_end_owned(self) -> Vec<u8>;
}

impl ReadToEndOwned for RecvStream {
    async fn read_to_end_owned(mut self) -> Vec<u8> {
        self.read_to_end(1 << 20).await.expect("read to end")
    }
}

#[tokio::test]
async fn quic_sessions_with_a_bad_token_are_refused_with_bad_token() {
    let lab = lab().await;
    let exporter = lab.peer(Role::Exporter).await;
    let cases = [
        (
            "another lease",
            lab.token("t1", "lease-2", time::Duration::minutes(5)),
        ),
        ("garbage", "not.a.token".to_owned()),
        (
            "expired",
            mint(
                &lab.token_key,
                &StreamGrant {
                    stream_id: "t3".into(),
                    token_id: "jti-t3".into(),
                    lease: format!("lab/{LEASE}"),
                },
                time::Duration::minutes(1),
                OffsetDateTime::now_utc() - time::Duration::hours(1),
            )
            .expect("mint"),
        ),
    ];
    for (what, token) in cases {
        let header = Header::new("t").expect("h").with_token(&token).expect("t");
        let (_send, mut recv) = exporter.open_with_header(&header).await.expect("open");
        assert_eq!(
            read_reset_code(&mut recv).await,
            u64::from(code::BAD_TOKEN),
            "{what}"
        );
    }
    // Only the streams were refused: the connection still carries a good session.
    let token = lab.token("good", LEASE, time::Duration::minutes(5));
    let header = Header::new("good")
        .expect("h")
        .with_token(&token)
        .expect("t");
    let client = lab.peer(Role::Client).await;
    let (mut c_send, _c_recv) = client.open_with_header(&header).await.expect("c");
    let (_e_send, e_recv) = exporter.open_with_header(&header).await.expect("e");
    c_send.write_all(b"ok").await.expect("write");
    c_send.finish().expect("finish");
    assert_eq!(
        timeout(WAIT, e_recv.read_to_end_owned())
            .await
            .expect("bounded"),
        b"ok"
    );
    assert!(lab.metric("router_auth_failures_total{reason=\"lease_mismatch\"}") >= 1.0);
    assert!(lab.metric("router_quic_sessions_total{outcome=\"bad_token\"}") >= 3.0);
}

/// Opens session `id` between `client` and `exporter` and checks one message goes through.
async fn ping(client: &Connection, exporter: &Connection, id: &str) -> bool {
    let attempt = async {
        let (mut c_send, _c_recv) = client.open_session(id).await.ok()?;
        let (_e_send, mut e_recv) = exporter.open_session(id).await.ok()?;
        c_send.write_all(b"ping").await.ok()?;
        c_send.finish().ok()?;
        let got = e_recv.read_to_end(16).await.ok()?;
        Some(got == b"ping")
    };
    timeout(Duration::from_secs(10), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

#[tokio::test]
async fn a_renewed_certificate_keeps_the_connection_past_the_first_one() {
    let lab = lab().await;
    let short = time::Duration::seconds(3);
    let client_cert = lab.cert(Role::Client, short);
    let exporter_cert = lab.cert(Role::Exporter, short);
    let client = lab.connect(&client_cert).await.expect("client");
    let exporter = lab.connect(&exporter_cert).await.expect("exporter");

    // A session in progress across the renewal.
    let (mut live_send, _live_c_recv) = client.open_session("live").await.expect("live");
    let (_live_e_send, mut live_recv) = exporter.open_session("live").await.expect("live");
    live_send.write_all(b"before ").await.expect("write");

    let now = OffsetDateTime::now_utc();
    let minute = time::Duration::minutes(1);
    for (connection, cert, role) in [
        (&client, &client_cert, Role::Client),
        (&exporter, &exporter_cert, Role::Exporter),
    ] {
        let renewed = lab.cert_for(LEASE, role, now, minute, Some(&cert.key_pem));
        let until = timeout(WAIT, connection.renew(&renewed.chain))
            .await
            .expect("bounded")
            .expect("renewal accepted");
        let left = until
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        assert!(
            left > Duration::from_secs(50),
            "renewed for a minute, got {left:?}"
        );
    }

    // Refusals: another key, another lease, another role; the connection keeps its end.
    let other_key = lab.cert_for(LEASE, Role::Client, now, minute, None);
    let other_lease = lab.cert_for(
        "lease-2",
        Role::Client,
        now,
        minute,
        Some(&client_cert.key_pem),
    );
    let other_role = lab.cert_for(
        LEASE,
        Role::Exporter,
        now,
        minute,
        Some(&client_cert.key_pem),
    );
    for (what, cert) in [
        ("another key", other_key),
        ("another lease", other_lease),
        ("another role", other_role),
    ] {
        match timeout(WAIT, client.renew(&cert.chain))
            .await
            .expect("bounded")
        {
            Err(RenewError::Refused(reason)) => {
                assert!(!reason.is_empty(), "{what}: a reason is given");
            }
            other => panic!("{what}: expected a refusal, got {other:?}"),
        }
    }

    // Well past the first certificates' end, the live session and new ones still work.
    tokio::time::sleep(Duration::from_secs(5)).await;
    live_send
        .write_all(b"after")
        .await
        .expect("write after the first end");
    live_send.finish().expect("finish");
    let got = timeout(WAIT, live_recv.read_to_end(64))
        .await
        .expect("bounded")
        .expect("read");
    assert_eq!(got, b"before after");
    assert!(ping(&client, &exporter, "fresh").await, "new sessions open");
    assert!(lab.metric("router_quic_certificate_renewals_total{outcome=\"accepted\"}") >= 2.0);
    assert!(lab.metric("router_quic_certificate_renewals_total{outcome=\"refused\"}") >= 3.0);
    assert_eq!(lab.metric("router_quic_expired_connections_total"), 0.0);
}

#[tokio::test]
async fn without_renewal_traffic_stops_when_the_certificate_ends() {
    let lab = lab().await;
    let short = time::Duration::seconds(3);
    let client = lab
        .connect(&lab.cert(Role::Client, short))
        .await
        .expect("client");
    let exporter = lab
        .connect(&lab.cert(Role::Exporter, short))
        .await
        .expect("exporter");
    let (mut send, _c_recv) = client.open_session("doomed").await.expect("open");
    let (_e_send, mut recv) = exporter.open_session("doomed").await.expect("open");
    send.write_all(b"x").await.expect("write");
    let mut one = [0u8; 1];
    timeout(WAIT, recv.read_exact(&mut one))
        .await
        .expect("bounded")
        .expect("first byte flows");

    let closed = timeout(Duration::from_secs(10), client.quic().closed())
        .await
        .expect("the router closes the connection when its certificate ends");
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                close.error_code.into_inner(),
                u64::from(code::CERTIFICATE_EXPIRED)
            );
        }
        other => panic!("expected an application close, got {other:?}"),
    }
    // Nothing more reaches the exporter.
    let more = timeout(WAIT, recv.read(&mut one)).await.expect("bounded");
    assert!(
        more.is_err(),
        "the session ended with the certificate: {more:?}"
    );
    assert!(lab.metric("router_quic_expired_connections_total") >= 1.0);

    // An expired certificate cannot revive a connection either.
    let expired = lab.cert_for(
        LEASE,
        Role::Client,
        OffsetDateTime::now_utc() - time::Duration::hours(2),
        time::Duration::hours(1),
        None,
    );
    assert!(
        lab.connect(&expired).await.is_err() || {
            let connection = lab.connect(&expired).await.expect("handshake");
            timeout(WAIT, connection.quic().closed()).await.is_ok()
        }
    );
}

#[tokio::test]
async fn certificates_not_yet_valid_or_for_another_lease_do_not_reach_the_session() {
    let lab = lab().await;
    // Not yet valid: refused at the handshake.
    let future = lab.cert_for(
        LEASE,
        Role::Client,
        OffsetDateTime::now_utc() + time::Duration::hours(1),
        time::Duration::hours(1),
        None,
    );
    match lab.connect(&future).await {
        Err(_) => {}
        Ok(connection) => {
            timeout(Duration::from_secs(10), connection.quic().closed())
                .await
                .expect("closed right after the handshake");
        }
    }
    assert!(
        lab.metric("router_quic_admission_failures_total") >= 1.0
            || lab
                .metrics_text()
                .contains("admission_failures_total{reason=")
    );

    // Another lease: admitted, but its session never meets this lease's exporter.
    let intruder = lab
        .connect(&lab.cert_for(
            "lease-2",
            Role::Client,
            OffsetDateTime::now_utc(),
            time::Duration::hours(1),
            None,
        ))
        .await
        .expect("connect");
    let exporter = lab.peer(Role::Exporter).await;
    let (_i_send, mut i_recv) = intruder.open_session("s").await.expect("open");
    let (_e_send, mut e_recv) = exporter.open_session("s").await.expect("open");
    assert_eq!(
        read_reset_code(&mut i_recv).await,
        u64::from(code::PAIR_TIMEOUT)
    );
    assert_eq!(
        read_reset_code(&mut e_recv).await,
        u64::from(code::PAIR_TIMEOUT)
    );
}

#[tokio::test]
async fn fifty_sessions_share_a_connection_and_a_stalled_one_blocks_none() {
    let lab = lab().await;
    let client = lab.peer(Role::Client).await;
    let exporter = lab.peer(Role::Exporter).await;

    // Session 0: the exporter never reads; the client writes until flow control stops it.
    let (mut stalled_send, _stalled_c_recv) = client.open_session("s-0").await.expect("s-0");
    let (_stalled_e_send, _stalled_e_recv) = exporter.open_session("s-0").await.expect("s-0");
    // 128 MiB: more than every window on the way (the router's and the exporter's stream
    // windows, the client's send window) holds.
    let stalled = tokio::spawn(async move {
        for index in 0..2048 {
            if stalled_send.write_all(&block(0, index)).await.is_err() {
                return;
            }
        }
    });

    let blocks = 16; // 1 MiB each way per session
    let mut sessions = tokio::task::JoinSet::new();
    for n in 1..50u64 {
        let id = format!("s-{n}");
        let (c_send, c_recv) = client.open_session(&id).await.expect("client side");
        let (e_send, e_recv) = exporter.open_session(&id).await.expect("exporter side");
        sessions.spawn(async move {
            let (up_sent, down_sent, up_got, down_got) = tokio::join!(
                quic_send(c_send, n, blocks),
                quic_send(e_send, n + 100, blocks),
                quic_receive(e_recv),
                quic_receive(c_recv),
            );
            assert_eq!(up_got.0, up_sent, "session {n} up");
            assert_eq!(down_got.0, down_sent, "session {n} down");
        });
    }
    let done = timeout(Duration::from_secs(180), async {
        let mut completed = 0;
        while let Some(result) = sessions.join_next().await {
            result.expect("session task");
            completed += 1;
        }
        completed
    })
    .await
    .expect("the 49 sessions complete while one is stalled");
    assert_eq!(done, 49);
    assert!(!stalled.is_finished(), "session 0 really is stalled");
    stalled.abort();
}

#[tokio::test]
async fn a_flood_of_handshakes_without_certificates_is_refused_and_counted() {
    let lab = lab().await;
    let attempts = 300;
    let mut flood = tokio::task::JoinSet::new();
    let roots = vec![lab.ca.cert_der().clone()];
    for _ in 0..attempts {
        let tls = client_config(roots.clone(), None, vec![ALPN.to_vec()]).expect("tls");
        let addr = lab.quic_addr;
        flood.spawn(async move {
            let Ok(connection) = QuicPeer::connect_with_tls(addr, HOST, tls).await else {
                return true;
            };
            // TLS 1.3 clients finish before the server checks: the close follows.
            timeout(Duration::from_secs(20), connection.quic().closed())
                .await
                .is_ok()
        });
    }
    let refused = timeout(Duration::from_secs(120), async {
        let mut refused = 0;
        while let Some(result) = flood.join_next().await {
            if result.expect("attempt") {
                refused += 1;
            }
        }
        refused
    })
    .await
    .expect("the flood ends");
    assert_eq!(refused, attempts, "every attempt was refused");
    let counted: f64 = lab
        .metrics_text()
        .lines()
        .filter(|line| line.starts_with("router_quic_admission_failures_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(counted >= f64::from(attempts), "counted {counted}");
    assert_eq!(
        lab.metric("router_quic_connections "),
        0.0,
        "nothing stays admitted"
    );
    // The router still serves lease holders.
    let client = lab.peer(Role::Client).await;
    let exporter = lab.peer(Role::Exporter).await;
    assert!(ping(&client, &exporter, "after-flood").await);
}
