//! Which streams the router admits and how it refuses the others, over real TLS + HTTP/2:
//! credentials, replay, pairing timeout, limits, message size and shutdown.

use crate::support;

use std::time::Duration;

use jumpstarter_proto::jumpstarter::v1::FrameType;
use jumpstarter_token::SigningKey;
use jumpstarter_token::internal::{DEFAULT_AUDIENCE, DEFAULT_ISSUER, Issuer, ObjectKind, Subject};
use support::{WAIT, frame, open, pair, recv, send, start};
use time::OffsetDateTime;
use tonic::Code;

async fn refused(router: &support::TestRouter, authorization: Option<&str>) -> tonic::Status {
    let mut client = router.client().await;
    match tokio::time::timeout(WAIT, open(&mut client, authorization, 1))
        .await
        .expect("answer in time")
    {
        Ok(_) => panic!("stream with {authorization:?} was admitted"),
        Err(status) => status,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_unauthenticated_and_good_ones_still_pair() {
    let router = start(|_| {}).await;
    let now = OffsetDateTime::now_utc();
    let expired = router.token_at(
        "old",
        now - time::Duration::hours(1),
        time::Duration::minutes(30),
    );
    let foreign = {
        let other = SigningKey::generate().expect("key");
        let grant = jumpstarter_token::router::StreamGrant {
            stream_id: "s".into(),
            token_id: "j".into(),
            lease: "lab/l".into(),
        };
        jumpstarter_token::router::mint(&other, &grant, time::Duration::minutes(30), now)
            .expect("mint")
    };
    let internal = {
        let issuer = Issuer {
            key: router.key.clone(),
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
            lifetime: time::Duration::days(1),
        };
        let subject = Subject {
            kind: ObjectKind::Client,
            namespace: "lab".into(),
            name: "alice".into(),
            uid: "u-1".into(),
        };
        issuer.issue(&subject, now).expect("issue").0
    };
    let good = router.token("good");

    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "missing authorization header"),
        (
            Some(format!("Basic {good}")),
            "malformed authorization header",
        ),
        (
            Some("Bearer not-a-token".into()),
            "invalid router token: malformed token",
        ),
        (
            Some(format!("Bearer {expired}")),
            "invalid router token: token is expired",
        ),
        (
            Some(format!("Bearer {foreign}")),
            "invalid router token: token signature is invalid",
        ),
        (
            Some(format!("Bearer {internal}")),
            "invalid router token: token issuer",
        ),
    ];
    for (header, message) in &cases {
        let status = refused(&router, header.as_deref()).await;
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{header:?}: {status:?}"
        );
        assert!(
            status.message().starts_with(message),
            "{header:?}: {status:?}"
        );
        assert!(!status.message().contains(&good), "no token in messages");
    }

    let (a, mut b) = pair(&router, "good").await;
    send(&a.tx, frame(FrameType::Data, b"still works".to_vec())).await;
    assert_eq!(
        recv(&mut b.rx).await.expect("ok").expect("frame").payload,
        b"still works"
    );

    let metrics = router.metrics_text();
    for reason in [
        "missing_header",
        "malformed_header",
        "malformed",
        "expired",
        "bad_signature",
        "wrong_issuer",
    ] {
        assert!(
            metrics.contains(&format!(
                "router_auth_failures_total{{reason=\"{reason}\"}} 1"
            )),
            "{reason}: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_token_is_refused_while_paired_and_after() {
    let router = start(|_| {}).await;
    let header = format!("Bearer {}", router.token("once"));
    let (a, b) = pair(&router, "once").await;

    let status = refused(&router, Some(&header)).await;
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert_eq!(status.message(), "stream once is already paired");

    // The pair ends; the token stays used.
    drop((a.tx, b.tx));
    let (mut a_rx, mut b_rx) = (a.rx, b.rx);
    assert!(recv(&mut a_rx).await.expect("ok").is_none());
    assert!(recv(&mut b_rx).await.expect("ok").is_none());
    let status = refused(&router, Some(&header)).await;
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_peer_ends_at_the_pair_timeout() {
    let router = start(|c| c.pair_timeout = Duration::from_millis(500)).await;
    let header = format!("Bearer {}", router.token("alone"));
    let status = refused(&router, Some(&header)).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        status.message(),
        "no peer arrived for stream alone within 0.5s"
    );
    assert!(
        router
            .metrics_text()
            .contains("router_pairing_timeouts_total 1")
    );

    // The id was never paired: both peers arriving later still pair.
    let (_a, _b) = pair(&router, "alone").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_streams_are_bounded() {
    let router = start(|c| c.max_pending = 1).await;
    let first = format!("Bearer {}", router.token("first"));
    let mut client = router.client().await;
    let waiting = tokio::spawn(async move { open(&mut client, Some(&first), 1).await.is_ok() });
    tokio::time::timeout(WAIT, async {
        while !router.metrics_text().contains("router_pending_streams 1") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("first stream pending");

    let status = refused(&router, Some(&format!("Bearer {}", router.token("second")))).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // The first one's peer still gets in.
    let mut client = router.client().await;
    let peer = open(
        &mut client,
        Some(&format!("Bearer {}", router.token("first"))),
        1,
    )
    .await;
    assert!(peer.is_ok());
    assert!(
        tokio::time::timeout(WAIT, waiting)
            .await
            .expect("in time")
            .expect("task")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_up_to_4_mib_pass_and_larger_ones_are_resource_exhausted() {
    let router = start(|_| {}).await;
    let (a, mut b) = pair(&router, "big").await;
    let four_mib = support::noise(7, 4 * 1024 * 1024);
    send(&a.tx, frame(FrameType::Data, four_mib.clone())).await;
    assert_eq!(
        recv(&mut b.rx).await.expect("ok").expect("frame").payload,
        four_mib
    );

    send(&a.tx, frame(FrameType::Data, vec![1; 5 * 1024 * 1024])).await;
    let mut a_rx = a.rx;
    let status = recv(&mut a_rx).await.expect_err("oversized");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let status = recv(&mut b.rx).await.expect_err("peer went away");
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_service_reports_serving() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let router = start(|_| {}).await;
    let mut health = HealthClient::new(router.channel().await);
    let response = tokio::time::timeout(
        WAIT,
        health.check(HealthCheckRequest {
            service: "jumpstarter.v1.RouterService".into(),
        }),
    )
    .await
    .expect("in time")
    .expect("check");
    assert_eq!(
        response.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_waiting_streams_and_drains_live_pairs() {
    let mut router = start(|c| c.drain_timeout = Duration::from_secs(2)).await;
    let (a, mut b) = pair(&router, "live").await;
    let waiting_header = format!("Bearer {}", router.token("waiting"));
    let mut client = router.client().await;
    let waiting =
        tokio::spawn(async move { open(&mut client, Some(&waiting_header), 1).await.err() });
    tokio::time::timeout(WAIT, async {
        while !router.metrics_text().contains("router_pending_streams 1") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("pending");

    router.shut_down();
    let status = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("in time")
        .expect("task")
        .expect("refused");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // The live pair keeps relaying during the drain period...
    send(&a.tx, frame(FrameType::Data, b"draining".to_vec())).await;
    assert_eq!(
        recv(&mut b.rx).await.expect("ok").expect("frame").payload,
        b"draining"
    );
    // ...and is stopped when it is over.
    let status = recv(&mut b.rx).await.expect_err("stopped");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let mut a_rx = a.rx;
    let status = recv(&mut a_rx).await.expect_err("stopped");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    let task = router.task.take().expect("task");
    tokio::time::timeout(WAIT, task)
        .await
        .expect("serve returns")
        .expect("task")
        .expect("clean stop");
}
