//! Exporter liveness and per-caller limits of the controller's gRPC port, against the real
//! kube-apiserver, with the services served in-process on 127.0.0.1 over real TLS (h2) by
//! the production server (`server::serve_grpc`, with its HTTP/2 keepalive).
//!
//! - An exporter with an open Status stream is named as held by the replica serving it and
//!   stays Online however long it is connected, with no write at all while it is; it goes
//!   Offline when that replica's record expires (and Online again if it is renewed), and a
//!   minute after its stream ended.
//! - An exporter whose connection goes silent (a proxy that stops forwarding without
//!   closing anything) is no longer held once keepalive finds the connection dead, is
//!   found Offline by the reconciler within two minutes of the cut and gets no new lease;
//!   it is Online again and gets the lease when it reconnects.
//! - ReportStatus with an unchanged report writes nothing.
//! - Status streams per exporter, Dial and RotateToken rates and pending leases per client
//!   are capped, refused with RESOURCE_EXHAUSTED and counted.

use crate::support;

use support::counting::CountingStore;
use support::{
    Identity, LoopbackGrpc, SilentProxy, assert_status, call, created_client, created_exporter,
};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration as StdDuration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::ObjectMeta;
use prometheus_client::registry::Registry;
use time::{Duration, OffsetDateTime};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

use jumpstarter_controller::auth::AuthMetrics;
use jumpstarter_controller::crd::{Exporter, ExporterSpec, Lease};
use jumpstarter_controller::keys;
use jumpstarter_controller::limits::{Limits, Rate};
use jumpstarter_controller::reconcile::{ReconcileMetrics, Reconciler};
use jumpstarter_controller::replica::{self, ReplicaId, ReplicaRegistry};
use jumpstarter_controller::service::{ServiceMetrics, Services, TokenSigners};
use jumpstarter_controller::settings::Settings;
use jumpstarter_controller::store::Store;
use jumpstarter_controller::store::WatchEvent;
use jumpstarter_controller::store::embedded::EmbeddedStore;
use jumpstarter_controller::store::kube::KubeStore;
use jumpstarter_proto::jumpstarter::client::v1 as client_pb;
use jumpstarter_proto::jumpstarter::client::v1::client_service_client::ClientServiceClient;
use jumpstarter_proto::jumpstarter::v1 as pb;
use jumpstarter_proto::jumpstarter::v1::controller_service_client::ControllerServiceClient;
use jumpstarter_token::SigningKey;
use jumpstarter_token::internal::ObjectKind;
use k8s_openapi::api::coordination::v1::{
    Lease as CoordinationLease, LeaseSpec as CoordinationLeaseSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

/// Upper bound of ordinary waits.
const WAIT: StdDuration = StdDuration::from_secs(20);
/// The server PINGs every 10 s and gives an ack 20 s: a silent connection is closed within
/// 30 s; with scheduling slack.
const KEEPALIVE_BOUND: StdDuration = StdDuration::from_secs(45);
/// The reconciler calls an exporter offline a minute after its last `lastSeen` (0.9.0).
const OFFLINE_AFTER: Duration = Duration::seconds(60);
/// The reconcile loop's longest idle time between passes.
const PASS_EVERY: Duration = Duration::seconds(5);

struct Harness {
    namespace: String,
    store: KubeStore,
    settings: Arc<Settings>,
    issuer: jumpstarter_token::internal::Issuer,
    registry: Arc<Registry>,
    grpc: LoopbackGrpc,
    /// The replica the services are (they always count themselves live).
    replica: Arc<ReplicaRegistry>,
}

impl Harness {
    async fn start(prefix: &str, limits: Limits) -> Harness {
        let (namespace, store) = support::kube_namespace(prefix).await;
        let (ca, cert) = support::localhost_pki("liveness-test-ca", OffsetDateTime::now_utc());
        let issuer = support::token_issuer();
        let mut settings = Settings::example(&namespace, "localhost:8082", "router.test:443");
        settings.limits = limits;
        let settings = Arc::new(settings);
        let mut registry = Registry::default();
        let auth_metrics = Arc::new(AuthMetrics::new(&mut registry));
        let service_metrics = Arc::new(ServiceMetrics::new(&mut registry));
        let shutdown = CancellationToken::new();
        let replica = ReplicaRegistry::single(ReplicaId::new("replica-r"));
        let services = Services::new(
            store.clone(),
            Arc::clone(&settings),
            TokenSigners {
                issuer: issuer.clone(),
                router_key: SigningKey::generate().expect("router key"),
            },
            auth_metrics,
            service_metrics,
            shutdown.clone(),
        )
        .with_replicas(Arc::clone(&replica));
        Harness {
            replica,
            grpc: LoopbackGrpc::serve(&services, &cert, &ca, shutdown).await,
            namespace,
            store,
            settings,
            issuer,
            registry: Arc::new(registry),
        }
    }

    async fn channel(&self) -> Channel {
        self.grpc.endpoint(WAIT).connect().await.expect("connect")
    }

    async fn client(&self, name: &str) -> Identity {
        created_client(&self.store, &self.issuer, &self.namespace, name).await
    }

    async fn exporter(&self, name: &str) -> Identity {
        created_exporter(
            &self.store,
            &self.issuer,
            &self.namespace,
            name,
            &[("board", "mock")],
        )
        .await
    }

    async fn stored_exporter(&self, name: &str) -> Exporter {
        self.store
            .get(&self.namespace, name)
            .await
            .expect("get exporter")
            .expect("exporter exists")
    }

    fn parent(&self) -> String {
        format!("namespaces/{}", self.namespace)
    }

    fn lease_request(&self) -> client_pb::CreateLeaseRequest {
        client_pb::CreateLeaseRequest {
            parent: self.parent(),
            lease: Some(client_pb::Lease {
                selector: "board=mock".into(),
                duration: Some(prost_types::Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn metrics_text(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("encode");
        text
    }

    /// The value of the sample `series` (name and labels as written), if present.
    fn metric(&self, series: &str) -> Option<f64> {
        self.metrics_text().lines().find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.parse().ok()
        })
    }
}

fn condition<'a>(exporter: &'a Exporter, type_: &str) -> Option<&'a Condition> {
    exporter
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The replica named as holding a Status stream of `exporter`.
fn stream_holder(exporter: &Exporter) -> Option<String> {
    exporter
        .metadata
        .annotations
        .as_ref()?
        .get("jumpstarter.dev/status-stream")
        .cloned()
}

fn is_online(exporter: &Exporter) -> bool {
    condition(exporter, "Online").is_some_and(|c| c.status == "True")
}

fn time_of(t: &Time) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.0.as_second()).expect("time")
}

async fn bounded<F: std::future::Future>(what: &str, limit: StdDuration, future: F) -> F::Output {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {limit:?}"))
}

/// The record of replica `id` as renewed at `renewed` (20 s lease, as every replica keeps).
fn replica_record(id: &ReplicaId, renewed: OffsetDateTime) -> WatchEvent<CoordinationLease> {
    let mut lease = CoordinationLease::default();
    lease.metadata.name = Some(replica::record_name(&id.identity));
    lease.metadata.annotations = Some(BTreeMap::from([(
        replica::INCARNATION_ANNOTATION.to_owned(),
        id.incarnation.clone(),
    )]));
    lease.spec = Some(CoordinationLeaseSpec {
        holder_identity: Some(id.identity.clone()),
        lease_duration_seconds: Some(20),
        renew_time: Some(MicroTime(
            k8s_openapi::jiff::Timestamp::from_second(renewed.unix_timestamp()).expect("in range"),
        )),
        ..CoordinationLeaseSpec::default()
    });
    WatchEvent::Applied(lease)
}

#[tokio::test]
async fn a_held_stream_keeps_an_exporter_online_without_writes_until_it_or_its_replica_ends() {
    let h = Harness::start("liveness-held", Limits::default()).await;
    let keys = keys::bootstrap(&h.store, &h.settings, OffsetDateTime::now_utc())
        .await
        .expect("keys");
    // The leader is another replica: it knows the stream's replica by its record only.
    let leader = ReplicaRegistry::new(ReplicaId::new("leader"));
    let reconciler = Reconciler::new(
        h.store.clone(),
        Arc::new(keys),
        Arc::clone(&h.settings),
        Arc::new(ReconcileMetrics::unregistered()),
    )
    .with_replicas(Arc::clone(&leader));
    let r = h.replica.me();
    let exp = h.exporter("exp1").await;
    let mut api = ControllerServiceClient::new(h.channel().await);
    let mut status = api
        .status(call(pb::StatusRequest {}, &exp))
        .await
        .expect("status stream")
        .into_inner();
    bounded("first status", WAIT, status.message())
        .await
        .expect("ok")
        .expect("message");
    let started = Instant::now();
    let opened = loop {
        let exporter = h.stored_exporter("exp1").await;
        if stream_holder(&exporter).as_deref() == Some(r.text().as_str()) {
            break exporter;
        }
        assert!(
            started.elapsed() < WAIT,
            "the stream's replica was not named: {:?}",
            exporter.metadata.annotations
        );
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    };
    let last_seen_at_open = opened.status.as_ref().and_then(|s| s.last_seen.clone());
    assert!(
        last_seen_at_open.is_some(),
        "lastSeen refreshed at the open"
    );

    let t0 = OffsetDateTime::now_utc();
    leader.apply(replica_record(&r, t0), t0);
    leader.apply(WatchEvent::Listed, t0);
    reconciler.pass(t0).await.expect("pass");
    let online = h.stored_exporter("exp1").await;
    assert!(is_online(&online), "{:?}", online.status);
    let version = online.metadata.resource_version.clone();

    // Connected for longer than 0.9.0's 10 s heartbeat: nothing is written.
    tokio::time::sleep(StdDuration::from_secs(12)).await;
    // Three minutes on, the replica still renewing its record: still Online, unwritten.
    let later = t0 + Duration::minutes(3);
    leader.apply(replica_record(&r, later), later);
    reconciler.pass(later).await.expect("pass");
    let still = h.stored_exporter("exp1").await;
    assert!(is_online(&still), "{:?}", still.status);
    assert_eq!(
        still.metadata.resource_version, version,
        "the exporter was written while its stream was held"
    );
    assert_eq!(
        still.status.as_ref().and_then(|s| s.last_seen.clone()),
        last_seen_at_open
    );

    // The replica stops renewing (it died): once its record expires, Offline.
    let dead_at = later + Duration::seconds(26);
    reconciler.pass(dead_at).await.expect("pass");
    let lost = h.stored_exporter("exp1").await;
    assert!(!is_online(&lost), "{:?}", lost.status);
    assert_eq!(
        lost.status.as_ref().and_then(|s| s.exporter_status),
        Some(jumpstarter_controller::crd::ExporterStatusValue::Offline)
    );
    // Its record was only late: Online again.
    leader.apply(replica_record(&r, dead_at), dead_at);
    reconciler.pass(dead_at).await.expect("pass");
    assert!(is_online(&h.stored_exporter("exp1").await));

    // The stream ends: the replica records its end and no longer names itself.
    drop(status);
    let started = Instant::now();
    let ended = loop {
        let exporter = h.stored_exporter("exp1").await;
        if stream_holder(&exporter).is_none() {
            break exporter;
        }
        assert!(
            started.elapsed() < WAIT,
            "the stream's end was not recorded"
        );
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    };
    let closed_at = ended
        .status
        .as_ref()
        .and_then(|s| s.last_seen.as_ref())
        .map(time_of)
        .expect("lastSeen");
    assert!(closed_at >= t0, "lastSeen at the stream's end: {closed_at}");
    reconciler
        .pass(closed_at + Duration::seconds(30))
        .await
        .expect("pass");
    assert!(is_online(&h.stored_exporter("exp1").await));
    reconciler
        .pass(closed_at + OFFLINE_AFTER + Duration::seconds(1))
        .await
        .expect("pass");
    let gone = h.stored_exporter("exp1").await;
    assert!(!is_online(&gone), "{:?}", gone.status);
}

#[tokio::test]
async fn a_silent_exporter_goes_offline_gets_no_lease_and_comes_back() {
    let h = Harness::start("liveness-silent", Limits::default()).await;
    let keys = keys::bootstrap(&h.store, &h.settings, OffsetDateTime::now_utc())
        .await
        .expect("keys");
    // The services' replica leads: it knows its own streams.
    let reconciler = Reconciler::new(
        h.store.clone(),
        Arc::new(keys),
        Arc::clone(&h.settings),
        Arc::new(ReconcileMetrics::unregistered()),
    )
    .with_replicas(Arc::clone(&h.replica));
    let exp = h.exporter("exp1").await;
    let alice = h.client("alice").await;

    // The exporter reaches the controller through a proxy: registers, reports, streams.
    let proxy = SilentProxy::start(SocketAddr::from(([127, 0, 0, 1], h.grpc.port))).await;
    let channel = h
        .grpc
        .endpoint_via(proxy.port, WAIT)
        .connect()
        .await
        .expect("connect through the proxy");
    let mut exporter_api = ControllerServiceClient::new(channel);
    let register = pb::RegisterRequest {
        labels: Default::default(),
        reports: vec![pb::DriverInstanceReport {
            uuid: "root".into(),
            ..Default::default()
        }],
    };
    exporter_api
        .register(call(register, &exp))
        .await
        .expect("register");
    exporter_api
        .report_status(call(
            pb::ReportStatusRequest {
                status: pb::ExporterStatus::Available as i32,
                message: Some("ready".into()),
                release_lease: None,
            },
            &exp,
        ))
        .await
        .expect("report status");
    let mut status = exporter_api
        .status(call(pb::StatusRequest {}, &exp))
        .await
        .expect("status stream")
        .into_inner();
    let first = bounded("first status", WAIT, status.message())
        .await
        .expect("ok")
        .expect("message");
    assert!(!first.leased);
    reconciler
        .pass(OffsetDateTime::now_utc())
        .await
        .expect("pass");
    assert!(
        is_online(&h.stored_exporter("exp1").await),
        "online while connected"
    );
    assert_eq!(h.metric("jumpstarter_controller_status_streams"), Some(1.0));

    // The cable is pulled: nothing passes, nothing is closed.
    proxy.go_silent();
    let cut = OffsetDateTime::now_utc();
    let started = Instant::now();
    // Keepalive finds the connection dead and the server closes it, ending the stream; the
    // replica records the end (lastSeen) and no longer names itself as the holder.
    while h.metric("jumpstarter_controller_status_streams") != Some(0.0)
        || stream_holder(&h.stored_exporter("exp1").await).is_some()
    {
        assert!(
            started.elapsed() < KEEPALIVE_BOUND,
            "the dead exporter's Status stream is still held {KEEPALIVE_BOUND:?} after the cut"
        );
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
    let last_seen = h
        .stored_exporter("exp1")
        .await
        .status
        .and_then(|s| s.last_seen)
        .map(|t| time_of(&t))
        .expect("lastSeen");
    // From now on nothing refreshes it: the reconciler finds it offline one minute later,
    // which its loop (a pass at least every 5 s) does within two minutes of the cut.
    let found_offline_at = last_seen + OFFLINE_AFTER + Duration::seconds(1);
    assert!(
        found_offline_at + PASS_EVERY <= cut + Duration::minutes(2),
        "last seen {last_seen}, {} after the cut",
        last_seen - cut
    );

    // A new lease that only this exporter could serve; the pass at that time (the loop's
    // clock, passed in) finds the exporter offline and leaves the lease waiting.
    let mut client_api = ClientServiceClient::new(h.channel().await);
    let lease = client_api
        .create_lease(call(h.lease_request(), &alice))
        .await
        .expect("create lease")
        .into_inner();
    let lease_name = lease.name.rsplit('/').next().expect("name").to_owned();
    reconciler.pass(found_offline_at).await.expect("pass");
    let offline = h.stored_exporter("exp1").await;
    assert!(!is_online(&offline), "{:?}", offline.status);
    assert_eq!(
        offline.status.as_ref().and_then(|s| s.exporter_status),
        Some(jumpstarter_controller::crd::ExporterStatusValue::Offline)
    );
    let stored_lease: Lease = h
        .store
        .get(&h.namespace, &lease_name)
        .await
        .expect("get lease")
        .expect("lease");
    assert!(
        stored_lease
            .status
            .as_ref()
            .and_then(|s| s.exporter_ref.as_ref())
            .is_none(),
        "an offline exporter was given a lease: {:?}",
        stored_lease.status
    );
    drop(status);

    // It comes back (a new connection): Online again, and the waiting lease is its.
    let mut back = ControllerServiceClient::new(h.channel().await);
    let mut status = back
        .status(call(pb::StatusRequest {}, &exp))
        .await
        .expect("status stream after reconnect")
        .into_inner();
    bounded("first status after reconnect", WAIT, status.message())
        .await
        .expect("ok")
        .expect("message");
    let now = OffsetDateTime::now_utc().max(found_offline_at);
    let back_at = h
        .stored_exporter("exp1")
        .await
        .status
        .and_then(|s| s.last_seen)
        .map(|t| time_of(&t))
        .expect("lastSeen");
    // The reconnect is fresh evidence as of its own time.
    reconciler
        .pass(back_at.max(now - OFFLINE_AFTER + Duration::seconds(1)))
        .await
        .expect("pass");
    let online = h.stored_exporter("exp1").await;
    assert!(is_online(&online), "{:?}", online.status);
    let leased = bounded("the lease on the Status stream", WAIT, async {
        loop {
            let message = status.message().await.expect("ok").expect("message");
            if message.leased {
                return message;
            }
        }
    })
    .await;
    assert_eq!(leased.lease_name.as_deref(), Some(lease_name.as_str()));
}

#[tokio::test]
async fn unchanged_status_reports_write_nothing() {
    let h = Harness::start("liveness-report", Limits::default()).await;
    let exp = h.exporter("exp1").await;
    let mut api = ControllerServiceClient::new(h.channel().await);
    let report = || pb::ReportStatusRequest {
        status: pb::ExporterStatus::Available as i32,
        message: Some("ready".into()),
        release_lease: None,
    };
    api.report_status(call(report(), &exp))
        .await
        .expect("first report");
    let version = h.stored_exporter("exp1").await.metadata.resource_version;
    // Spread over more than a second, so that a write of lastSeen would change the object
    // (Kubernetes keeps whole seconds, and takes an identical write as a no-op).
    for _ in 0..8 {
        api.report_status(call(report(), &exp))
            .await
            .expect("same report");
        tokio::time::sleep(StdDuration::from_millis(250)).await;
    }
    assert_eq!(
        h.stored_exporter("exp1").await.metadata.resource_version,
        version,
        "an unchanged report was written"
    );
    assert_eq!(
        h.metric(
            "jumpstarter_controller_exporter_status_writes_total{call=\"report_status\",outcome=\"unchanged\"}"
        ),
        Some(8.0)
    );
    // A changed report is written.
    api.report_status(call(
        pb::ReportStatusRequest {
            status: pb::ExporterStatus::LeaseReady as i32,
            message: Some("leased".into()),
            release_lease: None,
        },
        &exp,
    ))
    .await
    .expect("changed report");
    assert_ne!(
        h.stored_exporter("exp1").await.metadata.resource_version,
        version
    );
}

#[tokio::test]
async fn status_streams_per_exporter_are_capped() {
    let limits = Limits {
        max_status_streams_per_exporter: 2,
        ..Limits::default()
    };
    let h = Harness::start("liveness-streams", limits).await;
    let exp = h.exporter("exp1").await;
    let other = h.exporter("exp2").await;
    let mut api = ControllerServiceClient::new(h.channel().await);
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = api
            .status(call(pb::StatusRequest {}, &exp))
            .await
            .expect("within the cap")
            .into_inner();
        bounded("first status", WAIT, stream.message())
            .await
            .expect("ok");
        open.push(stream);
    }
    assert_status(
        api.status(call(pb::StatusRequest {}, &exp)).await,
        Code::ResourceExhausted,
        "already has 2 Status streams open",
    );
    assert_eq!(
        h.metric(
            "jumpstarter_controller_limit_refusals_total{limit=\"status_streams_per_exporter\"}"
        ),
        Some(1.0)
    );
    // Another exporter is not affected.
    let mut theirs = api
        .status(call(pb::StatusRequest {}, &other))
        .await
        .expect("another exporter's stream")
        .into_inner();
    bounded("first status", WAIT, theirs.message())
        .await
        .expect("ok");
    // The open streams share one watch and all see a change.
    let mut exporter = h.stored_exporter("exp1").await;
    exporter
        .status
        .get_or_insert_with(Default::default)
        .lease_ref = Some(k8s_openapi::api::core::v1::LocalObjectReference {
        name: "some-lease".into(),
    });
    h.store.replace_status(&exporter).await.expect("lease ref");
    for stream in &mut open {
        let message = bounded("the change", WAIT, stream.message())
            .await
            .expect("ok")
            .expect("message");
        assert_eq!(message.lease_name.as_deref(), Some("some-lease"));
    }
    // A closed stream frees its place.
    open.pop();
    let started = Instant::now();
    loop {
        match api.status(call(pb::StatusRequest {}, &exp)).await {
            Ok(_) => break,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(
                    started.elapsed() < WAIT,
                    "the closed stream's place was not freed"
                );
                tokio::time::sleep(StdDuration::from_millis(100)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
}

#[tokio::test]
async fn dial_and_rotate_token_are_rate_limited_per_client() {
    let limits = Limits {
        dial: Rate {
            burst: 2,
            interval: StdDuration::from_secs(3600),
        },
        rotate_token: Rate {
            burst: 1,
            interval: StdDuration::from_secs(3600),
        },
        ..Limits::default()
    };
    let h = Harness::start("liveness-rates", limits).await;
    let alice = h.client("alice").await;
    let bob = h.client("bob").await;
    let mut api = ControllerServiceClient::new(h.channel().await);
    let dial = || pb::DialRequest {
        lease_name: "no-such-lease".into(),
    };
    for _ in 0..2 {
        assert_status(
            api.dial(call(dial(), &alice)).await,
            Code::NotFound,
            "not found",
        );
    }
    let refused = api
        .dial(call(dial(), &alice))
        .await
        .expect_err("over the rate");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("too many Dial calls"),
        "{refused:?}"
    );
    let retry_ms: u64 = refused
        .metadata()
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after-ms");
    assert!(retry_ms > 3_000_000, "retry in {retry_ms} ms");
    // Another client has its own budget.
    assert_status(
        api.dial(call(dial(), &bob)).await,
        Code::NotFound,
        "not found",
    );

    let mut clients = ClientServiceClient::new(h.channel().await);
    let rotate = || client_pb::RotateTokenRequest { parent: h.parent() };
    let rotated = clients
        .rotate_token(call(rotate(), &alice))
        .await
        .expect("first rotation")
        .into_inner();
    // Rotation revoked the old token: the second call presents the new one.
    let alice = Identity {
        token: rotated.token,
        ..alice
    };
    assert_status(
        clients.rotate_token(call(rotate(), &alice)).await,
        Code::ResourceExhausted,
        "too many RotateToken calls",
    );
    for limit in ["dial_rate", "rotate_token_rate"] {
        assert_eq!(
            h.metric(&format!(
                "jumpstarter_controller_limit_refusals_total{{limit=\"{limit}\"}}"
            )),
            Some(1.0),
            "{limit}"
        );
    }
}

#[tokio::test]
async fn pending_leases_per_client_are_capped() {
    let limits = Limits {
        max_pending_leases_per_client: 2,
        ..Limits::default()
    };
    let h = Harness::start("liveness-pending", limits).await;
    let alice = h.client("alice").await;
    let bob = h.client("bob").await;
    let mut api = ClientServiceClient::new(h.channel().await);
    let mut names = Vec::new();
    for _ in 0..2 {
        let lease = api
            .create_lease(call(h.lease_request(), &alice))
            .await
            .expect("within the cap")
            .into_inner();
        names.push(lease.name.rsplit('/').next().expect("name").to_owned());
    }
    assert_status(
        api.create_lease(call(h.lease_request(), &alice)).await,
        Code::ResourceExhausted,
        "already has 2 leases waiting for an exporter (the limit is 2)",
    );
    // The legacy call is held to the same cap.
    let mut legacy = ControllerServiceClient::new(h.channel().await);
    assert_status(
        legacy
            .request_lease(call(
                pb::RequestLeaseRequest {
                    duration: Some(prost_types::Duration {
                        seconds: 60,
                        nanos: 0,
                    }),
                    selector: Some(pb::LabelSelector {
                        match_labels: BTreeMap::from([("board".to_owned(), "mock".to_owned())])
                            .into_iter()
                            .collect(),
                        ..Default::default()
                    }),
                },
                &alice,
            ))
            .await,
        Code::ResourceExhausted,
        "waiting for an exporter",
    );
    assert_eq!(
        h.metric(
            "jumpstarter_controller_limit_refusals_total{limit=\"pending_leases_per_client\"}"
        ),
        Some(2.0)
    );
    // Another client is not affected.
    api.create_lease(call(h.lease_request(), &bob))
        .await
        .expect("another client");
    // A released lease no longer counts.
    api.delete_lease(call(
        client_pb::DeleteLeaseRequest {
            name: format!("{}/leases/{}", h.parent(), names[0]),
        },
        &alice,
    ))
    .await
    .expect("release");
    api.create_lease(call(h.lease_request(), &alice))
        .await
        .expect("room again after a release");
}

#[tokio::test]
async fn status_streams_share_one_watch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        CountingStore::new(EmbeddedStore::open(&dir.path().join("store.redb")).expect("store"));
    let namespace = "default";
    let (ca, cert) = support::localhost_pki("liveness-test-ca", OffsetDateTime::now_utc());
    let issuer = support::token_issuer();
    let settings = Arc::new(Settings::example(
        namespace,
        "localhost:8082",
        "router.test:443",
    ));
    let mut registry = Registry::default();
    let services = Services::new(
        store.clone(),
        settings,
        TokenSigners {
            issuer: issuer.clone(),
            router_key: SigningKey::generate().expect("router key"),
        },
        Arc::new(AuthMetrics::new(&mut registry)),
        Arc::new(ServiceMetrics::new(&mut registry)),
        CancellationToken::new(),
    );
    let grpc = LoopbackGrpc::serve(&services, &cert, &ca, CancellationToken::new()).await;
    let mut api =
        ControllerServiceClient::new(grpc.endpoint(WAIT).connect().await.expect("connect"));
    let mut streams = Vec::new();
    for name in ["exp1", "exp2", "exp3"] {
        let created = store
            .create(&Exporter {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some(namespace.into()),
                    ..ObjectMeta::default()
                },
                spec: ExporterSpec::default(),
                status: None,
            })
            .await
            .expect("create exporter");
        let uid = created.metadata.uid.expect("uid");
        let id = Identity::issued(&issuer, ObjectKind::Exporter, namespace, name, &uid);
        for _ in 0..2 {
            let mut stream = api
                .status(call(pb::StatusRequest {}, &id))
                .await
                .expect("status stream")
                .into_inner();
            bounded("first status", WAIT, stream.message())
                .await
                .expect("ok");
            streams.push((name, stream));
        }
    }
    // The read cache's watches, one per kind it keeps (Exporters, Leases, Clients); the
    // streams follow its Exporter watch instead of opening their own.
    assert_eq!(
        store.watches.load(Ordering::SeqCst),
        3,
        "six Status streams of three exporters opened watches of their own"
    );
    // Each stream still sees only its own exporter's changes.
    let mut exporter: Exporter = store
        .get(namespace, "exp2")
        .await
        .expect("get")
        .expect("exp2");
    exporter
        .status
        .get_or_insert_with(Default::default)
        .lease_ref = Some(k8s_openapi::api::core::v1::LocalObjectReference {
        name: "lease-of-exp2".into(),
    });
    store.replace_status(&exporter).await.expect("lease ref");
    for (name, stream) in &mut streams {
        if *name == "exp2" {
            let message = bounded("the change", WAIT, stream.message())
                .await
                .expect("ok")
                .expect("message");
            assert_eq!(message.lease_name.as_deref(), Some("lease-of-exp2"));
        } else {
            let nothing =
                tokio::time::timeout(StdDuration::from_millis(300), stream.message()).await;
            assert!(nothing.is_err(), "{name} was told about exp2: {nothing:?}");
        }
    }
}
