//! The reconcile loop works on what changed: on the embedded store, with every exporter
//! online and nothing changing, passes compute no exporter status; one exporter changing
//! costs about one status, not one per exporter; a new lease is still assigned.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jumpstarter_controller::crd::{
    Client, ClientSpec, Device, Exporter, ExporterSpec, ExporterStatus, ExporterStatusValue, Lease,
    LeaseSpec,
};
use jumpstarter_controller::keys;
use jumpstarter_controller::reconcile::{self, ReconcileMetrics};
use jumpstarter_controller::settings::Settings;
use jumpstarter_controller::store::Store;
use jumpstarter_controller::store::embedded::EmbeddedStore;
use k8s_openapi::api::core::v1::LocalObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{self as meta, LabelSelector};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

const NAMESPACE: &str = "default";
const EXPORTERS: usize = 40;
/// Longer than the loop's longest idle time (5 s): at least one pass runs in it.
const IDLE: Duration = Duration::from_secs(6);
/// Upper bound of every wait.
const WAIT: Duration = Duration::from_secs(60);

/// Waits until `done` holds, polling; panics with `what` after [`WAIT`].
async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for at least one whole pass to start and end after this call.
async fn next_passes(metrics: &ReconcileMetrics, passes: u64) {
    let start = metrics.passes.get();
    wait_until("passes", async || metrics.passes.get() > start + passes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_compute_the_statuses_of_changed_exporters_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&dir.path().join("store.redb")).expect("open");
    let settings = Arc::new(Settings::example(
        NAMESPACE,
        "ctl.example.com:8082",
        "r:8083",
    ));
    let keys = keys::bootstrap(&store, &settings, OffsetDateTime::now_utc())
        .await
        .expect("keys");
    let mut client = Client::new("client", ClientSpec::default());
    client.metadata.namespace = Some(NAMESPACE.into());
    store.create(&client).await.expect("client");
    // Online for the whole test: seen in the future.
    let seen =
        k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_hours(1);
    for i in 0..EXPORTERS {
        let mut exporter = Exporter::new(&format!("exporter-{i:02}"), ExporterSpec::default());
        exporter.metadata.namespace = Some(NAMESPACE.into());
        exporter.metadata.labels = Some(BTreeMap::from([("board".into(), format!("b{i}"))]));
        let mut exporter = store.create(&exporter).await.expect("exporter");
        exporter.status = Some(ExporterStatus {
            devices: Some(vec![Device::default()]),
            last_seen: Some(meta::Time(seen)),
            exporter_status: Some(ExporterStatusValue::Available),
            ..Default::default()
        });
        store.replace_status(&exporter).await.expect("status");
    }

    let metrics = Arc::new(ReconcileMetrics::unregistered());
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let task = tokio::spawn(reconcile::run(
        store.clone(),
        Arc::new(keys),
        settings,
        Arc::clone(&metrics),
        jumpstarter_controller::replica::ReplicaRegistry::single(
            jumpstarter_controller::replica::ReplicaId::new("incremental"),
        ),
        shutdown.clone(),
    ));

    // Settled: every exporter has its credential and is online, and a pass wrote nothing.
    wait_until("every exporter online with a credential", async || {
        let exporters =
            jumpstarter_controller::store::list_all::<_, Exporter>(&store, NAMESPACE, None)
                .await
                .expect("list");
        exporters.len() == EXPORTERS
            && exporters.iter().all(|e| {
                e.status.as_ref().is_some_and(|s| {
                    s.credential.is_some()
                        && s.conditions
                            .iter()
                            .flatten()
                            .any(|c| c.type_ == "Online" && c.status == "True")
                })
            })
    })
    .await;
    let started = Instant::now();
    loop {
        let writes = metrics.writes.get();
        next_passes(&metrics, 1).await;
        if metrics.writes.get() == writes {
            break;
        }
        assert!(started.elapsed() < WAIT, "the loop keeps writing");
    }
    assert!(
        metrics.exporter_statuses.get() >= EXPORTERS as u64,
        "the first pass computes every status"
    );

    // Idle: passes run (on the clock) and compute nothing.
    let before = metrics.exporter_statuses.get();
    let passes = metrics.passes.get();
    tokio::time::sleep(IDLE).await;
    assert!(metrics.passes.get() > passes, "an idle pass ran");
    assert_eq!(
        metrics.exporter_statuses.get() - before,
        0,
        "idle passes computed statuses"
    );

    // One exporter changes: about one status is computed.
    let before = metrics.exporter_statuses.get();
    let mut exporter: Exporter = store
        .get(NAMESPACE, "exporter-07")
        .await
        .expect("get")
        .expect("exists");
    exporter
        .metadata
        .labels
        .get_or_insert_default()
        .insert("extra".into(), "yes".into());
    store.replace(&exporter).await.expect("relabel");
    next_passes(&metrics, 2).await;
    let computed = metrics.exporter_statuses.get() - before;
    assert!(
        (1..=3).contains(&computed),
        "{computed} statuses computed for one changed exporter"
    );

    // A new lease is assigned the one matching exporter, and the exporter's leaseRef set.
    let mut lease = Lease::new(
        "lease",
        LeaseSpec {
            client_ref: LocalObjectReference {
                name: "client".into(),
            },
            duration: Some("1h".into()),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([("board".into(), "b7".into())])),
                match_expressions: None,
            },
            ..LeaseSpec::default()
        },
    );
    lease.metadata.namespace = Some(NAMESPACE.into());
    store.create(&lease).await.expect("lease");
    wait_until(
        "the lease assigned and the exporter's leaseRef",
        async || {
            let lease: Option<Lease> = store.get(NAMESPACE, "lease").await.expect("get");
            let exporter: Option<Exporter> =
                store.get(NAMESPACE, "exporter-07").await.expect("get");
            let assigned = lease
                .and_then(|l| l.status?.exporter_ref)
                .is_some_and(|r| r.name == "exporter-07");
            let referenced = exporter
                .and_then(|e| e.status?.lease_ref)
                .is_some_and(|r| r.name == "lease");
            assigned && referenced
        },
    )
    .await;

    shutdown.cancel();
    task.await.expect("task").expect("loop");
}
