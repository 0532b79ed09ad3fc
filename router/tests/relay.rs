//! Relaying over real TLS + HTTP/2 on loopback: bulk data, frame types, half-close,
//! backpressure and a peer that goes away.

use crate::support;

use std::hash::{DefaultHasher, Hasher};
use std::time::Duration;

use jumpstarter_proto::jumpstarter::v1::{FrameType, StreamRequest, StreamResponse};
use support::{Peer, WAIT, frame, noise, pair, recv, send, start};
use tokio::sync::mpsc;
use tonic::{Code, Streaming};

const FRAME: usize = 64 * 1024;

/// Sends `frames` frames of noise seeded by `seed`, then ends the stream; returns the hash
/// of what was sent.
async fn send_all(tx: mpsc::Sender<StreamRequest>, seed: u64, frames: usize) -> u64 {
    let mut hash = DefaultHasher::new();
    for i in 0..frames {
        let payload = noise(seed << 32 | i as u64, FRAME);
        hash.write(&payload);
        send(&tx, frame(FrameType::Data, payload)).await;
    }
    hash.finish()
}

/// Receives until end of stream; returns the hash of the DATA payloads and their total size.
async fn receive_all(mut rx: Streaming<StreamResponse>) -> (u64, usize) {
    let mut hash = DefaultHasher::new();
    let mut total = 0;
    while let Some(response) = recv(&mut rx).await.expect("no error") {
        assert_eq!(response.frame_type, FrameType::Data as i32);
        total += response.payload.len();
        hash.write(&response.payload);
    }
    (hash.finish(), total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_data_both_ways_arrives_intact() {
    let router = start(|_| {}).await;
    let (a, b) = pair(&router, "bulk").await;
    let frames = 64 * 1024 * 1024 / FRAME;

    let send_a = tokio::spawn(send_all(a.tx, 1, frames));
    let send_b = tokio::spawn(send_all(b.tx, 2, frames));
    let recv_a = tokio::spawn(receive_all(a.rx));
    let recv_b = tokio::spawn(receive_all(b.rx));

    let in_time = Duration::from_secs(300);
    let sent_a = tokio::time::timeout(in_time, send_a)
        .await
        .expect("a sends")
        .expect("task");
    let sent_b = tokio::time::timeout(in_time, send_b)
        .await
        .expect("b sends")
        .expect("task");
    let (got_b, size_b) = tokio::time::timeout(in_time, recv_b)
        .await
        .expect("b receives")
        .expect("task");
    let (got_a, size_a) = tokio::time::timeout(in_time, recv_a)
        .await
        .expect("a receives")
        .expect("task");
    assert_eq!(size_b, frames * FRAME);
    assert_eq!(size_a, frames * FRAME);
    assert_eq!(got_b, sent_a, "what A sent arrives at B unchanged");
    assert_eq!(got_a, sent_b, "what B sent arrives at A unchanged");

    let metrics = router.metrics_text();
    assert!(
        metrics.contains(&format!(
            "router_relayed_bytes_total{{direction=\"waiting_to_arriving\"}} {}",
            frames * FRAME
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("router_streams_total{outcome=\"completed\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_types_and_payloads_are_relayed_verbatim() {
    let router = start(|_| {}).await;
    let (a, mut b) = pair(&router, "types").await;
    let frames = vec![
        StreamRequest {
            payload: b"hello".to_vec(),
            frame_type: FrameType::Data as i32,
        },
        StreamRequest {
            payload: vec![],
            frame_type: FrameType::Ping as i32,
        },
        StreamRequest {
            payload: b"ping data".to_vec(),
            frame_type: FrameType::Ping as i32,
        },
        StreamRequest {
            payload: vec![0; 3],
            frame_type: FrameType::RstStream as i32,
        },
        // A frame type 0.9.0 does not know is still relayed unchanged.
        StreamRequest {
            payload: b"x".to_vec(),
            frame_type: 42,
        },
        StreamRequest {
            payload: vec![],
            frame_type: FrameType::Data as i32,
        },
        StreamRequest {
            payload: vec![],
            frame_type: FrameType::Goaway as i32,
        },
    ];
    for f in &frames {
        send(&a.tx, f.clone()).await;
    }
    for f in &frames {
        let got = recv(&mut b.rx).await.expect("no error").expect("a frame");
        assert_eq!(got.payload, f.payload);
        assert_eq!(got.frame_type, f.frame_type);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_stops_one_direction_only() {
    let router = start(|_| {}).await;
    let (a, mut b) = pair(&router, "half").await;
    let Peer {
        tx: a_tx,
        rx: mut a_rx,
    } = a;

    send(&a_tx, frame(FrameType::Data, b"last words".to_vec())).await;
    send(&a_tx, frame(FrameType::Goaway, vec![])).await;
    drop(a_tx); // A half-closes.

    let got = recv(&mut b.rx).await.expect("ok").expect("data");
    assert_eq!(got.payload, b"last words");
    let got = recv(&mut b.rx).await.expect("ok").expect("goaway");
    assert_eq!(got.frame_type, FrameType::Goaway as i32);

    // B keeps talking and A keeps hearing it.
    for i in 0..10u8 {
        send(&b.tx, frame(FrameType::Data, vec![i; 1000])).await;
        let got = recv(&mut a_rx)
            .await
            .expect("ok")
            .expect("data after half-close");
        assert_eq!(got.payload, vec![i; 1000]);
    }
    send(&b.tx, frame(FrameType::Goaway, vec![])).await;
    let got = recv(&mut a_rx).await.expect("ok").expect("goaway");
    assert_eq!(got.frame_type, FrameType::Goaway as i32);
    drop(b.tx);

    // Both directions ended: both RPCs end with OK.
    assert!(recv(&mut a_rx).await.expect("A ends OK").is_none());
    assert!(recv(&mut b.rx).await.expect("B ends OK").is_none());
}

/// A controller that embeds the router reads which leases have a session live (for idle
/// timeouts): a pair counts under its token's lease from pairing until both sides end; its
/// wait and duration are in the router's histograms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_pair_counts_as_a_session_of_its_lease_until_it_ends() {
    let router = start(|_| {}).await;
    assert!(router.sessions.leases().is_empty());
    let (a, b) = pair(&router, "live").await;
    let (c, d) = pair(&router, "second").await;
    assert_eq!(router.sessions.leases(), ["lab/lease-1"]);
    for peer in [a, b] {
        send(&peer.tx, frame(FrameType::Goaway, vec![])).await;
    }
    // One pair of the lease is still live.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(router.sessions.leases(), ["lab/lease-1"]);
    drop((c, d));
    let deadline = tokio::time::Instant::now() + WAIT;
    while !router.sessions.leases().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pairs never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Both pairs are in the pairing-wait and session-duration histograms.
    assert_eq!(router.metric("router_pairing_wait_seconds_count"), 2.0);
    assert_eq!(router.metric("router_session_duration_seconds_count"), 2.0);
    let sum = router.metric("router_session_duration_seconds_sum");
    assert!(sum >= 0.2, "the second pair lived at least 200 ms: {sum}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_stalls_its_sender() {
    let router = start(|_| {}).await;
    let (a, mut b) = pair(&router, "slow").await;
    let total = 1024; // 64 MiB if nothing pushed back.
    let stall = Duration::from_secs(3);

    // B reads nothing: A's sends must stop completing long before all frames are out.
    let mut accepted = 0;
    let mut stalled = None;
    while accepted < total {
        let request = frame(FrameType::Data, noise(accepted as u64, FRAME));
        let permit = tokio::time::timeout(stall, a.tx.reserve()).await;
        match permit {
            Ok(permit) => {
                permit.expect("request stream open").send(request);
                accepted += 1;
            }
            Err(_) => {
                stalled = Some(request);
                break;
            }
        }
    }
    assert!(
        stalled.is_some(),
        "all {accepted} frames went through without a reader"
    );
    // What may be in flight: the router's stream window (the router stops reading A once
    // B's queue is full), B's queue, B's own receive window and A's send buffers: about
    // 20 MiB, far below 64 MiB.
    let bound =
        (jumpstarter_shell::http2_windows::STREAM_WINDOW as usize + 4 * 1024 * 1024) / FRAME;
    assert!(
        accepted < bound,
        "{accepted} frames of 64 KiB were buffered for a reader that stopped (bound {bound})"
    );

    // Once B reads again, everything flows: the accepted frames first, in order.
    let receiver = tokio::spawn(async move {
        for i in 0..total {
            let got = recv(&mut b.rx).await.expect("ok").expect("frame");
            assert_eq!(got.payload, noise(i as u64, FRAME), "frame {i}");
        }
        b
    });
    for i in accepted..total {
        send(&a.tx, frame(FrameType::Data, noise(i as u64, FRAME))).await;
    }
    let b = tokio::time::timeout(Duration::from_secs(120), receiver)
        .await
        .expect("all frames arrive")
        .expect("receiver");
    drop((a.tx, b.tx));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_goes_away_ends_the_other_side_with_an_error() {
    let router = start(|_| {}).await;
    let (a, mut b) = pair(&router, "gone").await;
    send(&a.tx, frame(FrameType::Data, b"hi".to_vec())).await;
    assert_eq!(
        recv(&mut b.rx).await.expect("ok").expect("frame").payload,
        b"hi"
    );

    drop(a); // A cancels its call.

    let status = tokio::time::timeout(Duration::from_secs(10), b.rx.message())
        .await
        .expect("B learns promptly")
        .expect_err("B's call ends with an error");
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert!(status.message().contains("peer went away"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_caller_that_goes_away_frees_its_slot() {
    let router = start(|c| c.max_pending = 1).await;
    let token = router.token("lonely");
    let mut client = router.client().await;
    let header = format!("Bearer {token}");
    let waiting = tokio::spawn(async move {
        let _ = support::open(&mut client, Some(&header), 1).await;
    });
    // Wait until the router counts it as pending.
    tokio::time::timeout(WAIT, async {
        while !router.metrics_text().contains("router_pending_streams 1") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("pending");
    waiting.abort();
    tokio::time::timeout(WAIT, async {
        while !router.metrics_text().contains("router_pending_streams 0") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the waiting stream is withdrawn when its caller goes away");
    // The slot is free again: a new pair forms.
    let (_a, _b) = pair(&router, "next").await;
}
