//! The admin operations on the Kubernetes backend: a real kube-apiserver, with the
//! reconcile loop running in this process to issue credentials, as `jmp admin` sees a
//! cluster with a controller.

use crate::support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jumpstarter_controller::admin::{
    Admin, AdminError, Applied, ClientConfig, ExporterConfig, Kind, LeaseOrder, Manifest, Objects,
    OutputFormat,
};
use jumpstarter_controller::crd::{Client, Exporter, ExporterAccessPolicy, Lease, LeaseSpec};
use jumpstarter_controller::keys::{self, Keys};
use jumpstarter_controller::reconcile::{self, ReconcileMetrics};
use jumpstarter_controller::settings::Settings;
use jumpstarter_controller::store::Store;
use jumpstarter_controller::store::kube::KubeStore;
use jumpstarter_token::internal::{ObjectKind, Subject};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{LocalObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

const GRPC_ENDPOINT: &str = "controller.example.com:8082";

struct Fixture {
    store: KubeStore,
    keys: Arc<Keys>,
    ns: String,
    stop: CancellationToken,
}

impl Fixture {
    /// A fresh namespace with the controller's keys; with `reconcile`, a running loop.
    async fn new(prefix: &str, reconcile: bool) -> Fixture {
        let (ns, store) = support::kube_namespace(prefix).await;
        let settings = Arc::new(Settings::example(
            &ns,
            GRPC_ENDPOINT,
            "router.example.com:8083",
        ));
        let keys = Arc::new(
            keys::bootstrap(&store, &settings, OffsetDateTime::now_utc())
                .await
                .expect("bootstrap keys"),
        );
        let stop = CancellationToken::new();
        if reconcile {
            tokio::spawn(reconcile::run(
                store.clone(),
                keys.clone(),
                settings,
                Arc::new(ReconcileMetrics::unregistered()),
                jumpstarter_controller::replica::ReplicaRegistry::single(
                    jumpstarter_controller::replica::ReplicaId::new("test"),
                ),
                stop.clone(),
            ));
        }
        Fixture {
            store,
            keys,
            ns,
            stop,
        }
    }

    fn admin(&self) -> Admin<KubeStore> {
        Admin::new(self.store.clone(), self.ns.clone())
    }

    /// Creates the client `name` (no labels) through the admin operations.
    async fn create_client(&self, name: &str) {
        self.admin()
            .create_client(name, &BTreeMap::new())
            .await
            .expect("create client");
    }

    /// The token must verify with the controller's key for exactly this object.
    async fn assert_token_for<K: jumpstarter_controller::store::Object>(
        &self,
        kind: ObjectKind,
        name: &str,
        token: &str,
    ) {
        let object: K = self
            .store
            .get(&self.ns, name)
            .await
            .expect("get")
            .expect("object exists");
        let claims = self
            .keys
            .tokens
            .current()
            .verifier()
            .verify(token, OffsetDateTime::now_utc())
            .expect("the token verifies");
        let subject = Subject {
            kind,
            namespace: self.ns.clone(),
            name: name.to_owned(),
            uid: kube::ResourceExt::uid(&object).expect("uid"),
        };
        assert_eq!(claims.sub, subject.to_string());
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Base64 as Kubernetes encodes Secret data: an encoder independent of the one under test.
fn base64(text: &str) -> String {
    serde_json::to_value(ByteString(text.as_bytes().to_vec()))
        .expect("encode")
        .as_str()
        .expect("a string")
        .to_owned()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn create_client_writes_a_working_0_9_0_config() {
    let f = Fixture::new("admin-client", true).await;
    let config = f
        .admin()
        .create_client("alice", &labels(&[("team", "a")]))
        .await
        .expect("create client");
    assert_eq!(config.api_version, "jumpstarter.dev/v1alpha1");
    assert_eq!(config.kind, "ClientConfig");
    assert_eq!(config.metadata.namespace, f.ns);
    assert_eq!(config.metadata.name, "alice");
    assert_eq!(config.endpoint, GRPC_ENDPOINT);
    assert_eq!(config.tls.ca, base64(f.keys.ca.cert_pem()));
    assert!(!config.tls.insecure);
    assert!(config.drivers.allow_any && config.drivers.allow.is_empty());
    f.assert_token_for::<Client>(ObjectKind::Client, "alice", &config.token)
        .await;

    // The written YAML has the 0.9.0 field names and reads back unchanged.
    let yaml = config.to_yaml().expect("yaml");
    let value: serde_norway::Value = serde_norway::from_str(&yaml).expect("parse");
    for key in [
        "apiVersion",
        "kind",
        "metadata",
        "endpoint",
        "tls",
        "token",
        "grpcOptions",
        "drivers",
    ] {
        assert!(value.get(key).is_some(), "{key} in\n{yaml}");
    }
    assert_eq!(value["drivers"]["unsafe"].as_bool(), Some(true));
    let back: ClientConfig = serde_norway::from_str(&yaml).expect("read back");
    assert_eq!(back, config);

    // The object carries the labels; a second create is refused.
    let client: Client = f.store.get(&f.ns, "alice").await.unwrap().unwrap();
    assert_eq!(client.metadata.labels, Some(labels(&[("team", "a")])));
    let again = f.admin().create_client("alice", &BTreeMap::new()).await;
    assert!(
        matches!(again, Err(AdminError::AlreadyExists { .. })),
        "{again:?}"
    );
}

#[tokio::test]
async fn create_exporter_labels_it_and_leaves_export_to_fill_in() {
    let f = Fixture::new("admin-exporter", true).await;
    let config = f
        .admin()
        .create_exporter("board-1", &labels(&[("board", "mock"), ("site", "lab")]))
        .await
        .expect("create exporter");
    assert_eq!(config.kind, "ExporterConfig");
    assert_eq!(config.metadata.name, "board-1");
    assert_eq!(config.endpoint, GRPC_ENDPOINT);
    assert_eq!(config.tls.ca, base64(f.keys.ca.cert_pem()));
    assert!(config.export.is_empty());
    f.assert_token_for::<Exporter>(ObjectKind::Exporter, "board-1", &config.token)
        .await;
    let exporter: Exporter = f.store.get(&f.ns, "board-1").await.unwrap().unwrap();
    assert_eq!(
        exporter.metadata.labels,
        Some(labels(&[("board", "mock"), ("site", "lab")]))
    );
    let yaml = config.to_yaml().expect("yaml");
    let back: ExporterConfig = serde_norway::from_str(&yaml).expect("read back");
    assert_eq!(back, config);
}

#[tokio::test]
async fn get_list_and_delete() {
    let f = Fixture::new("admin-crud", true).await;
    let admin = f.admin();
    for name in ["bob", "alice"] {
        admin
            .create_client(name, &BTreeMap::new())
            .await
            .expect("create client");
    }
    admin
        .create_exporter("board-1", &labels(&[("board", "mock")]))
        .await
        .expect("create exporter");
    let mut lease = Lease::new(
        "lease-1",
        LeaseSpec {
            client_ref: LocalObjectReference {
                name: "alice".into(),
            },
            duration: Some("1h".into()),
            selector: LabelSelector {
                match_labels: Some(labels(&[("board", "mock")])),
                match_expressions: None,
            },
            ..LeaseSpec::default()
        },
    );
    lease.metadata.namespace = Some(f.ns.clone());
    f.store.create(&lease).await.expect("create lease");

    // list: sorted by name; the table shows the columns.
    let clients = admin.list(Kind::Client).await.expect("list clients");
    assert_eq!(clients.names(), vec!["alice".to_owned(), "bob".to_owned()]);
    let table = clients
        .render(OutputFormat::Table, false, OffsetDateTime::now_utc())
        .unwrap();
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.lines().next().unwrap().ends_with("   AGE"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("alice") && l.contains(GRPC_ENDPOINT)),
        "{table}"
    );
    let exporters = admin.list(Kind::Exporter).await.expect("list exporters");
    let table = exporters
        .render(OutputFormat::Table, false, OffsetDateTime::now_utc())
        .unwrap();
    assert!(table.contains("board=mock"), "{table}");
    let leases = admin.list(Kind::Lease).await.expect("list leases");
    let table = leases
        .render(OutputFormat::Table, false, OffsetDateTime::now_utc())
        .unwrap();
    let row = table
        .lines()
        .find(|l| l.starts_with("lease-1"))
        .expect(&table);
    assert!(
        row.contains("alice") && row.contains("board=mock") && row.contains("1h"),
        "{table}"
    );

    // get: one object; YAML leaves out managedFields.
    let one = admin.get(Kind::Client, "alice").await.expect("get");
    let Objects::Clients(items) = &one else {
        panic!("clients: {one:?}")
    };
    assert_eq!(items.len(), 1);
    let yaml = one
        .render(OutputFormat::Yaml, true, OffsetDateTime::now_utc())
        .unwrap();
    let value: serde_norway::Value = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(value["kind"].as_str(), Some("Client"));
    assert!(value["metadata"].get("managedFields").is_none(), "{yaml}");
    let missing = admin.get(Kind::Exporter, "nope").await;
    assert!(
        matches!(missing, Err(AdminError::NotFound { .. })),
        "{missing:?}"
    );

    // delete: the object and its credential Secret go; a second delete is NotFound.
    admin.delete(Kind::Client, "bob").await.expect("delete bob");
    assert!(f.store.get::<Client>(&f.ns, "bob").await.unwrap().is_none());
    assert!(
        f.store
            .get::<Secret>(&f.ns, "bob-client")
            .await
            .unwrap()
            .is_none()
    );
    let again = admin.delete(Kind::Client, "bob").await;
    assert!(
        matches!(again, Err(AdminError::NotFound { .. })),
        "{again:?}"
    );
    admin
        .delete(Kind::Lease, "lease-1")
        .await
        .expect("delete lease");
    admin
        .delete(Kind::Exporter, "board-1")
        .await
        .expect("delete exporter");
    assert!(admin.list(Kind::Lease).await.unwrap().is_empty());
    assert!(admin.list(Kind::Exporter).await.unwrap().is_empty());
    assert_eq!(
        admin.list(Kind::Client).await.unwrap().names(),
        vec!["alice".to_owned()]
    );
}

#[tokio::test]
async fn create_without_a_controller_times_out_clearly() {
    let f = Fixture::new("admin-nocontroller", false).await;
    let started = std::time::Instant::now();
    let result = f
        .admin()
        .with_credential_wait(Duration::from_secs(1))
        .create_client("alice", &BTreeMap::new())
        .await;
    let Err(error @ AdminError::CredentialTimeout { .. }) = result else {
        panic!("expected a timeout, got {result:?}")
    };
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(
        error.to_string().contains("is the controller running"),
        "{error}"
    );
}

#[tokio::test]
async fn invalid_names_and_labels_are_refused_before_writing() {
    let f = Fixture::new("admin-invalid", true).await;
    let bad_name = f.admin().create_client("Alice", &BTreeMap::new()).await;
    assert!(
        matches!(bad_name, Err(AdminError::InvalidName { .. })),
        "{bad_name:?}"
    );
    let bad_label = f
        .admin()
        .create_exporter("board-1", &labels(&[("board", "not ok")]))
        .await;
    assert!(
        matches!(bad_label, Err(AdminError::InvalidLabel { .. })),
        "{bad_label:?}"
    );
    assert!(f.admin().list(Kind::Exporter).await.unwrap().is_empty());
}

#[tokio::test]
async fn create_lease_by_selector_and_by_exporter() {
    let f = Fixture::new("admin-lease", true).await;
    let admin = f.admin();
    f.create_client("alice").await;
    admin
        .create_exporter("board-1", &labels(&[("board", "mock")]))
        .await
        .expect("create exporter");

    // By selector: labels from matchLabels and tags, a UUIDv7 name, the client's ref.
    let by_selector = admin
        .create_lease(&LeaseOrder {
            client: "alice".into(),
            selector: Some("board=mock,site in (a,b)".into()),
            duration: Some("30m".into()),
            tags: labels(&[("team", "qa")]),
            ..LeaseOrder::default()
        })
        .await
        .expect("create lease by selector");
    let Objects::Leases(created) = &by_selector else {
        panic!("leases: {by_selector:?}")
    };
    let lease = &created[0];
    let name = lease.metadata.name.clone().expect("name");
    assert_eq!(
        uuid::Uuid::parse_str(&name)
            .expect("a UUID")
            .get_version_num(),
        7
    );
    assert_eq!(lease.spec.client_ref.name, "alice");
    assert_eq!(lease.spec.duration.as_deref(), Some("30m0s"));
    assert_eq!(
        lease.metadata.labels,
        Some(labels(&[
            ("board", "mock"),
            ("metadata.jumpstarter.dev/team", "qa")
        ]))
    );
    assert_eq!(
        lease.spec.selector.match_expressions.as_ref().map(Vec::len),
        Some(1)
    );
    let stored: Lease = f.store.get(&f.ns, &name).await.unwrap().expect("stored");
    assert_eq!(stored.spec, lease.spec);

    // By exporter name, with a chosen name and begin/end instead of a duration.
    admin
        .create_lease(&LeaseOrder {
            client: "alice".into(),
            exporter: Some("board-1".into()),
            begin_time: Some("2030-01-01T10:00:00Z".into()),
            end_time: Some("2030-01-01T11:30:00Z".into()),
            name: Some("pinned".into()),
            ..LeaseOrder::default()
        })
        .await
        .expect("create lease by exporter");
    let pinned: Lease = f.store.get(&f.ns, "pinned").await.unwrap().expect("stored");
    assert_eq!(
        pinned.spec.exporter_ref.as_ref().map(|r| r.name.as_str()),
        Some("board-1")
    );
    assert_eq!(pinned.spec.duration.as_deref(), Some("1h30m0s"));

    let listed = admin.list(Kind::Lease).await.expect("list leases");
    let mut expected = vec![name.clone(), "pinned".to_owned()];
    expected.sort();
    assert_eq!(listed.names(), expected);
    let table = listed
        .render(OutputFormat::Table, false, OffsetDateTime::now_utc())
        .unwrap();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&name) && l.contains("alice")),
        "{table}"
    );

    // The same name twice is refused.
    let again = admin
        .create_lease(&LeaseOrder {
            client: "alice".into(),
            exporter: Some("board-1".into()),
            duration: Some("1h".into()),
            name: Some("pinned".into()),
            ..LeaseOrder::default()
        })
        .await;
    assert!(
        matches!(again, Err(AdminError::AlreadyExists { .. })),
        "{again:?}"
    );

    for lease in expected {
        admin.delete(Kind::Lease, &lease).await.expect("delete");
    }
    assert!(admin.list(Kind::Lease).await.unwrap().is_empty());
}

#[tokio::test]
async fn create_lease_refuses_bad_orders_precisely() {
    let f = Fixture::new("admin-lease-bad", true).await;
    let admin = f.admin();
    f.create_client("alice").await;
    let order = |change: &dyn Fn(&mut LeaseOrder)| {
        let mut order = LeaseOrder {
            client: "alice".into(),
            selector: Some("board=mock".into()),
            duration: Some("30m".into()),
            ..LeaseOrder::default()
        };
        change(&mut order);
        order
    };
    let message = |result: Result<Objects, AdminError>| match result {
        Err(error) => error.to_string(),
        Ok(created) => panic!("created {created:?}"),
    };

    let unknown = admin
        .create_lease(&order(&|o| o.client = "nobody".into()))
        .await;
    assert!(
        matches!(&unknown, Err(AdminError::NotFound { kind: "client", name, .. }) if name == "nobody"),
        "{unknown:?}"
    );
    type Change = dyn Fn(&mut LeaseOrder);
    let cases: [(&Change, &str); 6] = [
        (
            &|o| o.selector = Some("board in (".into()),
            "invalid lease:",
        ),
        (
            &|o| o.selector = None,
            "one of selector or exporter_name is required",
        ),
        (&|o| o.duration = Some("soon".into()), "invalid duration"),
        (&|o| o.duration = None, "duration is required"),
        (
            &|o| o.tags = (0..11).map(|i| (format!("k{i}"), "v".to_owned())).collect(),
            "too many tags: 11 (at most 10)",
        ),
        (&|o| o.name = Some("Not_A_Name".into()), "invalid lease_id"),
    ];
    for (change, expected) in cases {
        let text = message(admin.create_lease(&order(change)).await);
        assert!(text.contains(expected), "{text:?} should say {expected:?}");
    }
    // Nothing was written.
    assert!(admin.list(Kind::Lease).await.unwrap().is_empty());
}

/// A policy and a client, as `apply -f` reads them.
const APPLIED: &str = "\
apiVersion: jumpstarter.dev/v1alpha1
kind: ExporterAccessPolicy
metadata:
  name: lab-policy
spec:
  exporterSelector:
    matchLabels:
      board: mock
  policies:
    - priority: 20
      from:
        - clientSelector:
            matchLabels:
              team: ci
---
apiVersion: jumpstarter.dev/v1alpha1
kind: Client
metadata:
  name: alice
  labels:
    team: ci
";

#[tokio::test]
async fn apply_creates_updates_in_place_and_refuses_bad_manifests_whole() {
    let f = Fixture::new("admin-apply", true).await;
    let admin = f.admin();
    let manifest = |text: &str| Manifest::parse(text, &f.ns, true).expect("a valid manifest");
    let lines = |applied: Vec<Applied>| -> Vec<String> {
        applied.iter().map(ToString::to_string).collect()
    };
    assert_eq!(
        lines(admin.apply(&manifest(APPLIED)).await.expect("apply")),
        [
            "exporteraccesspolicy.jumpstarter.dev/lab-policy created",
            "client.jumpstarter.dev/alice created",
        ]
    );
    // The reconciler issues the credential of a client apply created.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let alice: Client = f.store.get(&f.ns, "alice").await.unwrap().expect("alice");
        if alice.status.and_then(|s| s.credential).is_some() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no credential");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first: ExporterAccessPolicy = f.store.get(&f.ns, "lab-policy").await.unwrap().unwrap();

    assert_eq!(
        lines(admin.apply(&manifest(APPLIED)).await.expect("apply again")),
        [
            "exporteraccesspolicy.jumpstarter.dev/lab-policy unchanged",
            "client.jumpstarter.dev/alice unchanged",
        ]
    );
    let changed = APPLIED.replace("priority: 20", "priority: 30");
    assert_eq!(
        lines(
            admin
                .apply(&manifest(&changed))
                .await
                .expect("apply a change")
        ),
        [
            "exporteraccesspolicy.jumpstarter.dev/lab-policy configured",
            "client.jumpstarter.dev/alice unchanged",
        ]
    );
    let second: ExporterAccessPolicy = f.store.get(&f.ns, "lab-policy").await.unwrap().unwrap();
    assert_eq!(
        second.metadata.uid, first.metadata.uid,
        "updated, not re-created"
    );
    assert_eq!(second.spec.policies.unwrap()[0].priority, Some(30));

    // A bad document refuses the whole manifest, before anything is written.
    let bad = format!(
        "{}---\napiVersion: jumpstarter.dev/v1alpha1\nkind: Client\nmetadata: {{name: bob}}\n\
         ---\napiVersion: jumpstarter.dev/v1alpha1\nkind: Exporter\n\
         metadata: {{name: board-1, namespace: elsewhere}}\n",
        changed.replace("priority: 30", "priority: 40")
    );
    let Err(AdminError::InvalidManifest { errors }) = Manifest::parse(&bad, &f.ns, true) else {
        panic!("another namespace is refused")
    };
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].document, 4);
    let bob: Option<Client> = f.store.get(&f.ns, "bob").await.unwrap();
    assert!(bob.is_none());

    // get and delete policies.
    let listed = admin.list(Kind::Policy).await.expect("list policies");
    assert_eq!(listed.names(), ["lab-policy"]);
    let table = listed
        .render(OutputFormat::Table, false, OffsetDateTime::now_utc())
        .unwrap();
    assert!(
        table.contains("lab-policy   board=mock   1       30"),
        "{table}"
    );
    admin
        .delete(Kind::Policy, "lab-policy")
        .await
        .expect("delete");
    assert!(matches!(
        admin.get(Kind::Policy, "lab-policy").await,
        Err(AdminError::NotFound { .. })
    ));
}
