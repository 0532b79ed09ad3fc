//! The reconcile loop against a real kube-apiserver: credentials, exporter status, lease
//! scheduling (assignment, queueing, release, expiry), idempotency, and exclusivity with
//! several loops writing at once.

use crate::support;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jumpstarter_controller::crd::{
    Client, ClientSpec, Device, Exporter, ExporterSpec, ExporterStatusValue, Lease, LeaseSpec,
};
use jumpstarter_controller::keys::{self, Keys};
use jumpstarter_controller::reconcile::{self, ReconcileMetrics, Reconciler};
use jumpstarter_controller::settings::Settings;
use jumpstarter_controller::store::kube::KubeStore;
use jumpstarter_controller::store::{Object, Store, StoreError, list_all};
use jumpstarter_token::internal::{ObjectKind, Subject};
use k8s_openapi::api::core::v1::{LocalObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{self as meta, LabelSelector};
use kube::ResourceExt;
use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Upper bound of every wait in these tests; passes normally settle in well under a second.
const WAIT: Duration = Duration::from_secs(30);
const ENDED_LABEL: &str = "jumpstarter.dev/lease-ended";

struct Fixture {
    store: KubeStore,
    settings: Arc<Settings>,
    keys: Arc<Keys>,
    ns: String,
}

impl Fixture {
    async fn new(prefix: &str) -> Fixture {
        let (ns, store) = support::kube_namespace(prefix).await;
        let settings = Arc::new(Settings::example(
            &ns,
            "controller.example.com:8082",
            "router.example.com:8083",
        ));
        let keys = keys::bootstrap(&store, &settings, OffsetDateTime::now_utc())
            .await
            .expect("bootstrap keys");
        Fixture {
            store,
            settings,
            keys: Arc::new(keys),
            ns,
        }
    }

    fn reconciler(&self) -> Reconciler<KubeStore> {
        Reconciler::new(
            self.store.clone(),
            Arc::clone(&self.keys),
            Arc::clone(&self.settings),
            Arc::new(ReconcileMetrics::unregistered()),
        )
    }

    /// Starts a reconcile loop; cancel the token to stop it.
    fn spawn_loop(&self) -> (CancellationToken, JoinHandle<()>) {
        let token = CancellationToken::new();
        let handle = tokio::spawn(reconcile::run(
            self.store.clone(),
            Arc::clone(&self.keys),
            Arc::clone(&self.settings),
            Arc::new(ReconcileMetrics::unregistered()),
            jumpstarter_controller::replica::ReplicaRegistry::single(
                jumpstarter_controller::replica::ReplicaId::new("test"),
            ),
            token.clone(),
        ));
        let handle = tokio::spawn(async move {
            handle.await.expect("loop task").expect("loop result");
        });
        (token, handle)
    }

    /// `token` verifies with the current issuer and speaks for the object `name` (`uid`).
    fn assert_token(&self, token: &str, kind: ObjectKind, name: &str, uid: &str) {
        let claims = self
            .keys
            .tokens
            .current()
            .verifier()
            .verify(token, OffsetDateTime::now_utc())
            .expect("token verifies with the current issuer");
        let subject = Subject {
            kind,
            namespace: self.ns.clone(),
            name: name.into(),
            uid: uid.into(),
        };
        assert_eq!(claims.sub, subject.to_string());
    }

    /// Waits until the object `name` has a credential in its status (`parts` reads the
    /// credential and the endpoint there), checks that they are `secret` and the
    /// controller's endpoint, and returns the object.
    async fn wait_credential<K: Object>(
        &self,
        name: &str,
        secret: &str,
        parts: impl Fn(&K) -> (Option<&LocalObjectReference>, Option<&str>),
    ) -> K {
        let object: K = wait_for(&format!("{name}'s credential in its status"), || async {
            let object: K = self.get(name).await?;
            parts(&object).0?;
            Some(object)
        })
        .await;
        let (credential, endpoint) = parts(&object);
        assert_eq!(credential.map(|c| c.name.as_str()), Some(secret));
        assert_eq!(endpoint, Some(self.settings.grpc_endpoint.as_str()));
        object
    }

    async fn get<K: Object>(&self, name: &str) -> Option<K> {
        self.store.get::<K>(&self.ns, name).await.expect("get")
    }

    async fn create_client(&self, name: &str) -> Client {
        let mut client = Client::new(name, ClientSpec::default());
        client.metadata.namespace = Some(self.ns.clone());
        self.store.create(&client).await.expect("create client")
    }

    async fn create_exporter(&self, name: &str, labels: &[(&str, &str)]) -> Exporter {
        let mut exporter = Exporter::new(name, ExporterSpec::default());
        exporter.metadata.namespace = Some(self.ns.clone());
        exporter.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self.store.create(&exporter).await.expect("create exporter")
    }

    /// What the gRPC service does when an exporter registers and reports Available.
    async fn report_online(&self, name: &str) {
        self.modify_status::<Exporter>(name, |e| {
            let status = e.status.get_or_insert_with(Default::default);
            status.devices = Some(vec![Device {
                uuid: Some("dev-1".into()),
                parent_uuid: None,
                labels: Some(BTreeMap::from([(
                    "jumpstarter.dev/name".into(),
                    "power".into(),
                )])),
            }]);
            status.last_seen = Some(meta::Time(k8s_openapi::jiff::Timestamp::now()));
            status.exporter_status = Some(ExporterStatusValue::Available);
            status.status_message = Some("Available".into());
        })
        .await;
    }

    async fn create_lease(
        &self,
        name: &str,
        client: &str,
        selector: &[(&str, &str)],
        duration: &str,
    ) -> Lease {
        let mut lease = Lease::new(
            name,
            LeaseSpec {
                client_ref: LocalObjectReference {
                    name: client.into(),
                },
                duration: Some(duration.into()),
                selector: LabelSelector {
                    match_labels: Some(
                        selector
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                    ),
                    match_expressions: None,
                },
                ..LeaseSpec::default()
            },
        );
        lease.metadata.namespace = Some(self.ns.clone());
        self.store.create(&lease).await.expect("create lease")
    }

    async fn release(&self, name: &str) {
        self.modify::<Lease>(name, |l| l.spec.release = Some(true))
            .await;
    }

    async fn modify<K: Object>(&self, name: &str, change: impl Fn(&mut K)) {
        self.read_modify_write(name, change, false).await;
    }

    async fn modify_status<K: Object>(&self, name: &str, change: impl Fn(&mut K)) {
        self.read_modify_write(name, change, true).await;
    }

    async fn read_modify_write<K: Object>(
        &self,
        name: &str,
        change: impl Fn(&mut K),
        status: bool,
    ) {
        for _ in 0..20 {
            let mut object: K = self.get(name).await.expect("object exists");
            change(&mut object);
            let written = if status {
                self.store.replace_status(&object).await
            } else {
                self.store.replace(&object).await
            };
            match written {
                Ok(_) => return,
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => panic!("writing {name}: {e}"),
            }
        }
        panic!("writing {name}: too many conflicts");
    }

    async fn leases(&self) -> Vec<Lease> {
        list_all::<KubeStore, Lease>(&self.store, &self.ns, None)
            .await
            .expect("list leases")
    }
}

/// Cancels a loop of [`Fixture::spawn_loop`] and waits, at most [`WAIT`], for it to end.
async fn stop_loop(stop: &CancellationToken, handle: JoinHandle<()>) {
    stop.cancel();
    tokio::time::timeout(WAIT, handle)
        .await
        .expect("loop stops")
        .expect("loop task");
}

/// Polls `check` every 100 ms until it returns `Some`, for at most [`WAIT`].
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn condition<'a>(
    conditions: Option<&'a Vec<meta::Condition>>,
    type_: &str,
) -> Option<&'a meta::Condition> {
    conditions.and_then(|cs| cs.iter().find(|c| c.type_ == type_))
}

fn lease_exporter(lease: &Lease) -> Option<&str> {
    lease
        .status
        .as_ref()?
        .exporter_ref
        .as_ref()
        .map(|r| r.name.as_str())
}

fn ended(lease: &Lease) -> bool {
    lease.status.as_ref().is_some_and(|s| s.ended)
}

fn token_of(secret: &Secret) -> String {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get("token"))
        .expect("token key");
    String::from_utf8(bytes.0.clone()).expect("utf-8 token")
}

/// Fails when two non-ended leases hold one exporter.
fn assert_exclusive(leases: &[Lease]) {
    let mut holders: BTreeMap<&str, &str> = BTreeMap::new();
    for lease in leases.iter().filter(|l| !ended(l)) {
        if let Some(exporter) = lease_exporter(lease) {
            let name = lease.metadata.name.as_deref().unwrap_or_default();
            if let Some(other) = holders.insert(exporter, name) {
                panic!("exporter {exporter} is held by both {other} and {name}");
            }
        }
    }
}

#[tokio::test]
async fn client_and_exporter_credentials_are_provisioned_and_resigned() {
    let fx = Fixture::new("rec-cred").await;
    fx.create_client("alice").await;
    let exporter = fx.create_exporter("bench-1", &[("dut", "a")]).await;
    let (stop, handle) = fx.spawn_loop();

    let client: Client = fx
        .wait_credential("alice", "alice-client", |c: &Client| {
            c.status.as_ref().map_or((None, None), |s| {
                (s.credential.as_ref(), s.endpoint.as_deref())
            })
        })
        .await;
    let uid = client.uid().expect("uid");
    let secret: Secret = fx.get("alice-client").await.expect("client secret");
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    let owner = &secret
        .metadata
        .owner_references
        .as_ref()
        .expect("owner refs")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Client", uid.as_str(), Some(true))
    );
    let first_secret_uid = secret.uid().expect("secret uid");
    fx.assert_token(&token_of(&secret), ObjectKind::Client, "alice", &uid);

    let exporter: Exporter = fx
        .wait_credential(&exporter.name_any(), "bench-1-exporter", |e: &Exporter| {
            e.status.as_ref().map_or((None, None), |s| {
                (s.credential.as_ref(), s.endpoint.as_deref())
            })
        })
        .await;
    let status = exporter.status.as_ref().expect("status");
    assert_eq!(status.lease_ref, None);
    let registered = condition(status.conditions.as_ref(), "Registered").expect("Registered");
    assert_eq!(
        (registered.status.as_str(), registered.reason.as_str()),
        ("False", "Unregister")
    );
    let online = condition(status.conditions.as_ref(), "Online").expect("Online");
    assert_eq!(
        (online.status.as_str(), online.message.as_str()),
        ("False", "Never seen")
    );
    let secret: Secret = fx.get("bench-1-exporter").await.expect("exporter secret");
    let exporter_uid = exporter.uid().expect("uid");
    fx.assert_token(
        &token_of(&secret),
        ObjectKind::Exporter,
        "bench-1",
        &exporter_uid,
    );

    // `jmp admin rotate`: deleting the Secret gets a freshly signed one. (Signing is
    // deterministic, so within the same second the token text may be the same.)
    fx.store
        .delete::<Secret>(&fx.ns, "alice-client")
        .await
        .expect("delete secret");
    let rotated = wait_for("re-created client secret", || async {
        let s: Secret = fx.get("alice-client").await?;
        (s.uid()? != first_secret_uid).then(|| token_of(&s))
    })
    .await;
    fx.assert_token(&rotated, ObjectKind::Client, "alice", &uid);

    // A token that does not verify is replaced too.
    fx.modify::<Secret>("bench-1-exporter", |s| {
        s.data.get_or_insert_with(BTreeMap::new).insert(
            "token".into(),
            k8s_openapi::ByteString(b"not-a-token".to_vec()),
        );
    })
    .await;
    let resigned = wait_for("re-signed exporter token", || async {
        let s: Secret = fx.get("bench-1-exporter").await?;
        let token = token_of(&s);
        (token != "not-a-token").then_some(token)
    })
    .await;
    fx.assert_token(&resigned, ObjectKind::Exporter, "bench-1", &exporter_uid);

    // Registration and heartbeat make the exporter Registered and Online.
    fx.report_online("bench-1").await;
    wait_for("exporter online", || async {
        let e: Exporter = fx.get("bench-1").await?;
        let conditions = e.status.as_ref()?.conditions.as_ref();
        let online = condition(conditions, "Online")?;
        let registered = condition(conditions, "Registered")?;
        (online.status == "True" && online.reason == "Seen" && registered.reason == "Register")
            .then_some(())
    })
    .await;

    // Silent for more than a minute: offline.
    fx.modify_status::<Exporter>("bench-1", |e| {
        let old =
            k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(120);
        e.status.get_or_insert_with(Default::default).last_seen = Some(meta::Time(old));
    })
    .await;
    let offline = wait_for("exporter offline", || async {
        let e: Exporter = fx.get("bench-1").await?;
        let status = e.status.clone()?;
        (status.exporter_status == Some(ExporterStatusValue::Offline)).then_some(status)
    })
    .await;
    assert_eq!(
        offline.status_message.as_deref(),
        Some("Connection lost - last seen more than 1 minute ago")
    );
    assert_eq!(
        condition(offline.conditions.as_ref(), "Online").map(|c| c.status.as_str()),
        Some("False")
    );

    stop_loop(&stop, handle).await;
}

#[tokio::test]
async fn a_pass_without_input_changes_writes_nothing() {
    let fx = Fixture::new("rec-idem").await;
    fx.create_client("alice").await;
    fx.create_exporter("bench-1", &[("dut", "a")]).await;
    fx.report_online("bench-1").await;
    fx.create_lease("lease-1", "alice", &[("dut", "a")], "1h")
        .await;
    fx.create_lease("lease-2", "alice", &[("dut", "a")], "1h")
        .await;

    let reconciler = fx.reconciler();
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("valid");
    let first = reconciler.pass(now).await.expect("first pass");
    assert!(!first.again, "a lone pass meets no conflicts");
    assert!(first.writes > 0, "the first pass provisions and assigns");
    let lease: Lease = fx.get("lease-1").await.expect("lease");
    assert_eq!(lease_exporter(&lease), Some("bench-1"));

    let second = reconciler.pass(now).await.expect("second pass");
    assert_eq!(second.writes, 0, "nothing changed, so nothing is written");
    let third = reconciler
        .pass(now + time::Duration::seconds(2))
        .await
        .expect("third pass");
    assert_eq!(third.writes, 0, "time passing alone changes nothing here");
    assert!(
        third.next_wakeup.is_some(),
        "the pending lease asks to be looked at again"
    );
}

#[tokio::test]
async fn leases_are_assigned_queued_oldest_first_released_and_expired() {
    let fx = Fixture::new("rec-lease").await;
    fx.create_client("alice").await;
    let exporter = fx.create_exporter("bench-1", &[("dut", "a")]).await;
    fx.report_online("bench-1").await;
    let (stop, handle) = fx.spawn_loop();

    fx.create_lease("lease-1", "alice", &[("dut", "a")], "1h")
        .await;
    let first = wait_for("lease-1 ready", || async {
        let l: Lease = fx.get("lease-1").await?;
        lease_exporter(&l)?;
        l.owner_references()
            .iter()
            .any(|r| r.kind == "Exporter")
            .then_some(l)
    })
    .await;
    let status = first.status.as_ref().expect("status");
    assert_eq!(lease_exporter(&first), Some("bench-1"));
    assert!(status.begin_time.is_some() && !status.ended);
    let ready = condition(status.conditions.as_ref(), "Ready").expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Ready")
    );
    let owner = &first.owner_references()[0];
    assert_eq!(
        (
            owner.name.as_str(),
            Some(owner.uid.clone()),
            owner.controller
        ),
        ("bench-1", exporter.uid(), Some(true))
    );
    wait_for("exporter leaseRef", || async {
        let e: Exporter = fx.get("bench-1").await?;
        (e.status?.lease_ref?.name == "lease-1").then_some(())
    })
    .await;

    // Two more wait in line; the older one (short) goes first, then the younger one.
    fx.create_lease("lease-2", "alice", &[("dut", "a")], "2s")
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    fx.create_lease("lease-3", "alice", &[("dut", "a")], "1h")
        .await;
    wait_for("lease-2 and lease-3 pending", || async {
        let two: Lease = fx.get("lease-2").await?;
        let three: Lease = fx.get("lease-3").await?;
        let pending = |l: &Lease| {
            condition(l.status.as_ref()?.conditions.as_ref(), "Pending")
                .map(|c| c.status == "True" && c.reason == "NotAvailable")
        };
        (pending(&two)? && pending(&three)?).then_some(())
    })
    .await;

    fx.release("lease-1").await;
    let released = wait_for("lease-1 ended with its label", || async {
        let l: Lease = fx.get("lease-1").await?;
        (ended(&l) && l.labels().get(ENDED_LABEL).map(String::as_str) == Some("true")).then_some(l)
    })
    .await;
    let ready = condition(
        released.status.as_ref().and_then(|s| s.conditions.as_ref()),
        "Ready",
    )
    .expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Released")
    );
    assert!(
        released
            .status
            .as_ref()
            .and_then(|s| s.end_time.as_ref())
            .is_some()
    );

    let second = wait_for("lease-2 assigned", || async {
        let l: Lease = fx.get("lease-2").await?;
        lease_exporter(&l).is_some().then_some(l)
    })
    .await;
    assert!(!ended(&second));
    let third: Lease = fx.get("lease-3").await.expect("lease-3");
    assert_eq!(
        lease_exporter(&third),
        None,
        "the younger lease waits for the older one"
    );

    // lease-2 runs out after two seconds; then lease-3 gets the exporter.
    let expired = wait_for("lease-2 expired", || async {
        let l: Lease = fx.get("lease-2").await?;
        (ended(&l) && l.labels().contains_key(ENDED_LABEL)).then_some(l)
    })
    .await;
    let ready = condition(
        expired.status.as_ref().and_then(|s| s.conditions.as_ref()),
        "Ready",
    )
    .expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Expired")
    );
    wait_for("lease-3 assigned", || async {
        let l: Lease = fx.get("lease-3").await?;
        (lease_exporter(&l) == Some("bench-1")).then_some(())
    })
    .await;
    wait_for("exporter leaseRef follows", || async {
        let e: Exporter = fx.get("bench-1").await?;
        (e.status?.lease_ref?.name == "lease-3").then_some(())
    })
    .await;
    assert_exclusive(&fx.leases().await);

    stop_loop(&stop, handle).await;
}

#[tokio::test]
async fn concurrent_loops_never_give_one_exporter_to_two_leases() {
    let fx = Fixture::new("rec-race").await;
    fx.create_client("alice").await;
    for name in ["bench-1", "bench-2"] {
        fx.create_exporter(name, &[("dut", "x")]).await;
        fx.report_online(name).await;
    }
    // Two loops and a third writer hammering passes, all against one namespace.
    let (stop_a, loop_a) = fx.spawn_loop();
    let (stop_b, loop_b) = fx.spawn_loop();
    let hammer_stop = CancellationToken::new();
    let hammer = {
        let reconciler = fx.reconciler();
        let stop = hammer_stop.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let now = OffsetDateTime::now_utc()
                    .replace_nanosecond(0)
                    .expect("valid");
                // Conflicts and transient errors are expected here; exclusivity is checked below.
                let _ = reconciler.pass(now).await;
            }
        })
    };

    const LEASES: usize = 6;
    let creates = (0..LEASES).map(|i| {
        let name = format!("lease-{i}");
        let fx = &fx;
        async move { fx.create_lease(&name, "alice", &[("dut", "x")], "2s").await }
    });
    futures::future::join_all(creates).await;

    // Every lease is eventually served, and at no observed moment do two share an exporter.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut served: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let leases = fx.leases().await;
        assert_exclusive(&leases);
        for lease in &leases {
            if let Some(exporter) = lease_exporter(lease) {
                served.insert(lease.name_any(), exporter.to_owned());
            }
        }
        if served.len() == LEASES && leases.iter().all(ended) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every lease was served in time: {served:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Both exporters were used.
    let used: std::collections::BTreeSet<&String> = served.values().collect();
    assert_eq!(used.len(), 2, "{served:?}");

    // Exclusivity over time too: the [begin, end) windows on each exporter do not overlap.
    let leases = fx.leases().await;
    for exporter in ["bench-1", "bench-2"] {
        let mut windows: Vec<(i64, i64)> = leases
            .iter()
            .filter(|l| lease_exporter(l) == Some(exporter))
            .map(|l| {
                let s = l.status.as_ref().expect("status");
                let begin = s.begin_time.as_ref().expect("begin").0.as_second();
                let end = s.end_time.as_ref().expect("end").0.as_second();
                (begin, end)
            })
            .collect();
        windows.sort();
        // Each pass stamps times with the second it started in, and passes of different
        // loops interleave, so a successor may be stamped up to one second early.
        for pair in windows.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0 + 1,
                "overlapping leases on {exporter}: {windows:?}"
            );
        }
    }

    hammer_stop.cancel();
    stop_a.cancel();
    stop_b.cancel();
    tokio::time::timeout(WAIT, hammer)
        .await
        .expect("hammer stops")
        .expect("hammer task");
    tokio::time::timeout(WAIT, loop_a)
        .await
        .expect("loop a stops")
        .expect("loop a task");
    tokio::time::timeout(WAIT, loop_b)
        .await
        .expect("loop b stops")
        .expect("loop b task");
}
