//! One behaviour suite for every [`Store`] backend: the Kubernetes API (a real
//! kube-apiserver) and the embedded file store must agree on everything the controller
//! relies on — system fields, generations, status/spec separation, optimistic concurrency,
//! label selection, paging, idempotent deletes and watches.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use jumpstarter_controller::crd::{
    Client, ClientSpec, ClientStatus, Exporter, ExporterSpec, ExporterStatus, Lease,
};
use jumpstarter_controller::store::embedded::EmbeddedStore;
use jumpstarter_controller::store::kube::KubeStore;
use jumpstarter_controller::store::{ListParams, Object, Store, StoreError, WatchEvent, list_all};
use jumpstarter_testenv::TestEnv;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::ObjectMeta;
use serde_json::json;

/// How long a watch event may take to arrive before the test fails.
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn kubernetes_store_behaves() {
    let env = TestEnv::shared();
    env.install_crds(&jumpstarter_controller::crd::definitions())
        .await
        .expect("install CRDs");
    let namespace = env.namespace("store-suite").await;
    suite(KubeStore::new(env.admin_client().await), &namespace).await;
}

#[tokio::test]
async fn embedded_store_behaves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&dir.path().join("store.redb")).expect("open");
    suite(store, "store-suite").await;
}

async fn suite<S: Store>(store: S, ns: &str) {
    create_and_system_fields(&store, ns).await;
    replace_semantics(&store, ns).await;
    status_semantics(&store, ns).await;
    core_types(&store, ns).await;
    lease_round_trip(&store, ns).await;
    list_selectors_and_paging(&store, ns).await;
    delete_is_idempotent(&store, ns).await;
    watch_all(&store, ns).await;
    watch_by_name(&store, ns).await;
}

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.to_owned()),
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

fn exporter(ns: &str, name: &str, username: &str) -> Exporter {
    Exporter {
        metadata: meta(ns, name),
        // `enabled` is set because the API server would default it and the embedded store
        // applies no schema defaults.
        spec: ExporterSpec {
            username: Some(username.to_owned()),
            enabled: Some(true),
        },
        status: None,
    }
}

fn rv<K: Object>(object: &K) -> u64 {
    object
        .meta()
        .resource_version
        .as_deref()
        .expect("resourceVersion set")
        .parse()
        .expect("resourceVersion is a counter")
}

fn config_map(ns: &str, name: &str, labels: &[(&str, &str)], value: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            labels: (!labels.is_empty()).then(|| {
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect()
            }),
            ..meta(ns, name)
        },
        data: Some(BTreeMap::from([("value".to_owned(), value.to_owned())])),
        ..ConfigMap::default()
    }
}

async fn create_and_system_fields<S: Store>(store: &S, ns: &str) {
    let mut sent = exporter(ns, "exp-a", "alice");
    sent.status = Some(ExporterStatus {
        endpoint: Some("sent-with-create".into()),
        ..ExporterStatus::default()
    });
    let created = store.create(&sent).await.expect("create");
    let uid = created.metadata.uid.clone().expect("uid set");
    let uid = uuid::Uuid::parse_str(&uid).expect("uid is a UUID");
    assert_eq!(uid.get_version_num(), 4, "uid is a random (v4) UUID");
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.spec.username.as_deref(), Some("alice"));
    assert!(
        created.status.is_none(),
        "status is a subresource: create drops it"
    );
    let first_rv = rv(&created);

    let got: Exporter = store.get(ns, "exp-a").await.expect("get").expect("exists");
    assert_eq!(got.metadata.uid, created.metadata.uid);
    assert_eq!(
        got.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(got.spec, created.spec);
    assert!(
        store
            .get::<Exporter>(ns, "exp-missing")
            .await
            .expect("get")
            .is_none()
    );

    match store.create(&exporter(ns, "exp-a", "bob")).await {
        Err(StoreError::AlreadyExists { kind, name, .. }) => {
            assert_eq!((kind.as_str(), name.as_str()), ("Exporter", "exp-a"));
        }
        other => panic!("second create must be AlreadyExists, got {other:?}"),
    }

    let other = store
        .create(&exporter(ns, "exp-b", "bob"))
        .await
        .expect("create b");
    assert!(
        rv(&other) > first_rv,
        "resourceVersion grows with every write"
    );
    assert_ne!(other.metadata.uid, created.metadata.uid);

    match store.create(&exporter(ns, "Not_A_Name", "x")).await {
        Err(StoreError::Invalid { .. }) => {}
        other => panic!("an invalid name must be Invalid, got {other:?}"),
    }
}

async fn replace_semantics<S: Store>(store: &S, ns: &str) {
    let current: Exporter = store.get(ns, "exp-a").await.expect("get").expect("exists");

    // Metadata-only change: new resourceVersion, same generation.
    let mut labelled = current.clone();
    labelled.metadata.labels = Some(BTreeMap::from([("lab".into(), "one".into())]));
    let labelled = store.replace(&labelled).await.expect("replace labels");
    assert!(rv(&labelled) > rv(&current));
    assert_eq!(labelled.metadata.generation, Some(1));
    assert_eq!(labelled.metadata.uid, current.metadata.uid);
    assert_eq!(
        labelled.metadata.creation_timestamp,
        current.metadata.creation_timestamp
    );

    // Spec change bumps the generation; status sent with replace is ignored.
    let mut changed = labelled.clone();
    changed.spec.username = Some("alice2".into());
    changed.status = Some(ExporterStatus {
        endpoint: Some("via-replace".into()),
        ..ExporterStatus::default()
    });
    let changed = store.replace(&changed).await.expect("replace spec");
    assert_eq!(changed.metadata.generation, Some(2));
    assert_eq!(changed.spec.username.as_deref(), Some("alice2"));
    assert!(changed.status.is_none(), "replace does not write status");

    // A replace that changes nothing writes nothing.
    let same = store.replace(&changed).await.expect("no-op replace");
    assert_eq!(
        same.metadata.resource_version,
        changed.metadata.resource_version
    );
    assert_eq!(same.metadata.generation, Some(2));

    // Stale resourceVersion: Conflict.
    let mut stale = labelled.clone();
    stale.spec.username = Some("lost-update".into());
    match store.replace(&stale).await {
        Err(StoreError::Conflict { kind, name, .. }) => {
            assert_eq!((kind.as_str(), name.as_str()), ("Exporter", "exp-a"));
        }
        other => panic!("stale replace must conflict, got {other:?}"),
    }

    // Custom resources refuse an update without resourceVersion (no unconditional update).
    let mut unversioned = changed.clone();
    unversioned.metadata.resource_version = None;
    unversioned.spec.username = Some("unversioned".into());
    match store.replace(&unversioned).await {
        Err(StoreError::Invalid { .. }) => {}
        other => panic!("custom resource replace without resourceVersion: {other:?}"),
    }

    // Replacing a missing object: NotFound.
    match store.replace(&exporter(ns, "exp-never", "x")).await {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("replace of a missing object must be NotFound, got {other:?}"),
    }

    let stored: Exporter = store.get(ns, "exp-a").await.expect("get").expect("exists");
    assert_eq!(stored.spec.username.as_deref(), Some("alice2"));
    assert_eq!(
        stored.metadata.resource_version,
        changed.metadata.resource_version
    );
}

async fn status_semantics<S: Store>(store: &S, ns: &str) {
    let current: Exporter = store.get(ns, "exp-a").await.expect("get").expect("exists");
    let generation = current.metadata.generation;

    let mut update = current.clone();
    update.spec.username = Some("ignored-by-status".into());
    update.status = Some(ExporterStatus {
        endpoint: Some("grpc.example.com:443".into()),
        status_message: Some("ready".into()),
        ..ExporterStatus::default()
    });
    let updated = store.replace_status(&update).await.expect("replace_status");
    assert!(rv(&updated) > rv(&current));
    assert_eq!(
        updated.metadata.generation, generation,
        "status does not bump"
    );
    assert_eq!(
        updated.spec, current.spec,
        "replace_status only writes status"
    );
    let status = updated.status.clone().expect("status written");
    assert_eq!(status.endpoint.as_deref(), Some("grpc.example.com:443"));
    assert_eq!(status.status_message.as_deref(), Some("ready"));

    match store.replace_status(&current).await {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("stale replace_status must conflict, got {other:?}"),
    }

    // A later replace keeps the status the status update wrote.
    let mut relabel = updated.clone();
    relabel.status = None;
    relabel.metadata.labels = Some(BTreeMap::from([("lab".into(), "two".into())]));
    let relabelled = store.replace(&relabel).await.expect("replace");
    assert_eq!(relabelled.status, updated.status);

    // Clients too: status on a second CRD type.
    let client = store
        .create(&Client {
            metadata: meta(ns, "client-s"),
            spec: ClientSpec {
                username: Some("carol".into()),
            },
            status: None,
        })
        .await
        .expect("create client");
    let mut with_status = client.clone();
    with_status.status = Some(ClientStatus {
        endpoint: Some("controller:443".into()),
        credential: None,
    });
    let with_status = store
        .replace_status(&with_status)
        .await
        .expect("client status");
    assert_eq!(
        with_status.status.and_then(|s| s.endpoint).as_deref(),
        Some("controller:443")
    );
    assert_eq!(with_status.metadata.generation, Some(1));
}

async fn core_types<S: Store>(store: &S, ns: &str) {
    let secret = Secret {
        metadata: meta(ns, "secret-a"),
        data: Some(BTreeMap::from([(
            "token".to_owned(),
            ByteString(b"\x00binary\xff".to_vec()),
        )])),
        ..Secret::default()
    };
    let created = store.create(&secret).await.expect("create secret");
    assert_eq!(created.data, secret.data, "bytes round-trip");
    assert!(created.metadata.uid.is_some());
    assert_eq!(
        created.metadata.generation, None,
        "core types have no generation"
    );

    // Core types accept an update without resourceVersion (unconditional).
    let mut unconditional = secret.clone();
    unconditional.data = Some(BTreeMap::from([(
        "token".to_owned(),
        ByteString(b"second".to_vec()),
    )]));
    let replaced = store
        .replace(&unconditional)
        .await
        .expect("unconditional replace");
    assert!(rv(&replaced) > rv(&created));
    assert_eq!(replaced.metadata.uid, created.metadata.uid);

    // But a stale one still conflicts.
    let mut stale = created.clone();
    stale.data = None;
    match store.replace(&stale).await {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("stale Secret replace must conflict, got {other:?}"),
    }
    let stored: Secret = store
        .get(ns, "secret-a")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(stored.data, unconditional.data);
}

async fn lease_round_trip<S: Store>(store: &S, ns: &str) {
    let lease: Lease = serde_json::from_value(json!({
        "apiVersion": "jumpstarter.dev/v1alpha1",
        "kind": "Lease",
        "metadata": {"name": "lease-a", "namespace": ns},
        "spec": {
            "clientRef": {"name": "client-s"},
            "duration": "1h",
            "selector": {"matchLabels": {"board": "rpi"}}
        }
    }))
    .expect("lease JSON");
    let created = store.create(&lease).await.expect("create lease");
    assert_eq!(created.spec.duration.as_deref(), Some("1h"));
    let mut ended = created.clone();
    let mut status = ended.status.clone().unwrap_or_default();
    status.ended = true;
    ended.status = Some(status);
    let ended = store.replace_status(&ended).await.expect("end lease");
    assert!(ended.status.as_ref().is_some_and(|s| s.ended));
    let stored: Lease = store
        .get(ns, "lease-a")
        .await
        .expect("get")
        .expect("exists");
    assert!(stored.status.is_some_and(|s| s.ended));
}

fn names<K: Object>(items: &[K]) -> Vec<String> {
    items
        .iter()
        .map(|i| i.meta().name.clone().unwrap_or_default())
        .collect()
}

async fn list_selectors_and_paging<S: Store>(store: &S, ns: &str) {
    // Created out of order; lists come back by name.
    let objects = [
        ("cm-3", vec![("tier", "b")]),
        ("cm-1", vec![("tier", "a"), ("zone", "x")]),
        ("cm-5", vec![]),
        ("cm-2", vec![("tier", "a")]),
        ("cm-4", vec![("tier", "c"), ("zone", "y")]),
    ];
    for (name, labels) in &objects {
        store
            .create(&config_map(ns, name, labels, name))
            .await
            .expect("create config map");
    }
    let select = |selector: &'static str| async move {
        let mut found: Vec<String> = names(
            &list_all::<S, ConfigMap>(store, ns, Some(selector))
                .await
                .unwrap_or_else(|e| panic!("list {selector}: {e}")),
        );
        found.retain(|n| n.starts_with("cm-"));
        found
    };
    assert_eq!(select("tier=a").await, ["cm-1", "cm-2"]);
    assert_eq!(select("tier!=a").await, ["cm-3", "cm-4", "cm-5"]);
    assert_eq!(select("!tier").await, ["cm-5"]);
    assert_eq!(select("tier").await, ["cm-1", "cm-2", "cm-3", "cm-4"]);
    assert_eq!(select("tier in (a, c)").await, ["cm-1", "cm-2", "cm-4"]);
    assert_eq!(select("tier notin (a)").await, ["cm-3", "cm-4", "cm-5"]);
    assert_eq!(select("tier=a,zone").await, ["cm-1"]);
    assert_eq!(select("tier,!zone").await, ["cm-2", "cm-3"]);

    // Custom resources are selected the same way.
    let exporters: Vec<Exporter> = list_all(store, ns, Some("lab=two")).await.expect("list");
    assert_eq!(names(&exporters), ["exp-a"]);
    let all: Vec<Exporter> = list_all(store, ns, None).await.expect("list");
    assert_eq!(names(&all), ["exp-a", "exp-b"]);

    // Paging: stable name order, a token while more follow, none on the last page.
    let page_names = |labels: Option<&str>, limit: u32| {
        let labels = labels.map(str::to_owned);
        async move {
            let mut params = ListParams {
                label_selector: labels,
                limit: Some(limit),
                continue_token: None,
            };
            let mut pages = Vec::new();
            loop {
                let page = store.list::<ConfigMap>(ns, &params).await.expect("page");
                assert!(page.items.len() <= limit as usize);
                pages.push(names(&page.items));
                match page.continue_token {
                    Some(token) => params.continue_token = Some(token),
                    None => return pages,
                }
                assert!(pages.len() < 20, "paging terminates");
            }
        }
    };
    // Every cm- object satisfies this selector; the namespace may also hold system
    // ConfigMaps (kube-root-ca.crt), which sort after them and are filtered out below.
    let pages = page_names(Some("tier notin (none)"), 2).await;
    let mut flat: Vec<String> = pages.concat();
    flat.retain(|n| n.starts_with("cm-"));
    assert_eq!(flat, ["cm-1", "cm-2", "cm-3", "cm-4", "cm-5"]);
    let clients = store
        .list::<Exporter>(
            ns,
            &ListParams {
                limit: Some(1),
                ..ListParams::default()
            },
        )
        .await
        .expect("page 1");
    assert_eq!(names(&clients.items), ["exp-a"]);
    let token = clients.continue_token.expect("a second page follows");
    let rest = store
        .list::<Exporter>(
            ns,
            &ListParams {
                limit: Some(1),
                continue_token: Some(token),
                ..ListParams::default()
            },
        )
        .await
        .expect("page 2");
    assert_eq!(names(&rest.items), ["exp-b"]);
    assert!(rest.continue_token.is_none(), "last page has no token");
    let paged_selected = page_names(Some("tier=a"), 1).await.concat();
    assert_eq!(paged_selected, ["cm-1", "cm-2"]);

    match store
        .list::<ConfigMap>(
            ns,
            &ListParams {
                label_selector: Some("tier in (a".into()),
                ..ListParams::default()
            },
        )
        .await
    {
        Err(StoreError::Invalid { .. }) => {}
        other => panic!("a malformed selector must be Invalid, got {other:?}"),
    }
}

async fn delete_is_idempotent<S: Store>(store: &S, ns: &str) {
    store.delete::<Exporter>(ns, "exp-b").await.expect("delete");
    assert!(
        store
            .get::<Exporter>(ns, "exp-b")
            .await
            .expect("get")
            .is_none()
    );
    store
        .delete::<Exporter>(ns, "exp-b")
        .await
        .expect("deleting a missing object is Ok");
    store
        .delete::<Secret>(ns, "never-existed")
        .await
        .expect("deleting a never-created object is Ok");
    // The name is free again.
    let again = store
        .create(&exporter(ns, "exp-b", "bob"))
        .await
        .expect("re-create");
    assert_eq!(again.metadata.generation, Some(1));
}

/// The next change (`Applied` or `Deleted`) of a watch, failing the test after
/// [`EVENT_TIMEOUT`]; listing markers are skipped.
async fn next<K: Object>(
    stream: &mut BoxStream<'static, Result<WatchEvent<K>, StoreError>>,
) -> WatchEvent<K> {
    loop {
        let event = tokio::time::timeout(EVENT_TIMEOUT, stream.next())
            .await
            .expect("watch event in time")
            .expect("watch stream open")
            .expect("watch event is not an error");
        if !matches!(event, WatchEvent::Relisting | WatchEvent::Listed) {
            return event;
        }
    }
}

fn event_name<K: Object>(event: &WatchEvent<K>) -> (bool, String) {
    match event {
        WatchEvent::Applied(k) => (false, k.meta().name.clone().unwrap_or_default()),
        WatchEvent::Deleted(k) => (true, k.meta().name.clone().unwrap_or_default()),
        WatchEvent::Relisting | WatchEvent::Listed => unreachable!("`next` skips markers"),
    }
}

async fn watch_all<S: Store>(store: &S, ns: &str) {
    let mut watch = store.watch::<Exporter>(ns, None);
    // The initial listing: an optional `Relisting` first, every object `Applied`, then
    // `Listed` (what a reflector needs to know its copy is complete).
    let mut initial = BTreeSet::new();
    for position in 0.. {
        let event = tokio::time::timeout(EVENT_TIMEOUT, watch.next())
            .await
            .expect("watch event in time")
            .expect("watch stream open")
            .expect("watch event is not an error");
        match event {
            WatchEvent::Relisting => assert_eq!(position, 0, "Relisting comes first"),
            WatchEvent::Applied(k) => {
                initial.insert(k.metadata.name.unwrap_or_default());
            }
            WatchEvent::Listed => break,
            WatchEvent::Deleted(k) => panic!("initial events are Applied, got a delete of {k:?}"),
        }
        assert!(position < 10, "no Listed after the initial objects");
    }
    assert_eq!(
        initial,
        BTreeSet::from(["exp-a".to_owned(), "exp-b".to_owned()])
    );

    let created = store
        .create(&exporter(ns, "exp-c", "dave"))
        .await
        .expect("create c");
    let event = next(&mut watch).await;
    assert_eq!(event_name(&event), (false, "exp-c".to_owned()));

    let mut changed = created.clone();
    changed.spec.username = Some("dave2".into());
    let changed = store.replace(&changed).await.expect("replace c");
    match next(&mut watch).await {
        WatchEvent::Applied(seen) => {
            assert_eq!(seen.spec.username.as_deref(), Some("dave2"));
            assert_eq!(
                seen.metadata.resource_version,
                changed.metadata.resource_version
            );
        }
        other => panic!("update must be Applied, got {other:?}"),
    }

    // Other types and namespaces do not show up; a delete does.
    store
        .create(&config_map(ns, "cm-noise", &[], "x"))
        .await
        .expect("noise");
    store
        .delete::<Exporter>(ns, "exp-c")
        .await
        .expect("delete c");
    let event = next(&mut watch).await;
    assert_eq!(event_name(&event), (true, "exp-c".to_owned()));

    // Several changes in a row arrive in commit order.
    for name in ["exp-d", "exp-e", "exp-f"] {
        store
            .create(&exporter(ns, name, "x"))
            .await
            .expect("create");
    }
    for name in ["exp-d", "exp-e", "exp-f"] {
        assert_eq!(
            event_name(&next(&mut watch).await),
            (false, name.to_owned())
        );
    }
}

async fn watch_by_name<S: Store>(store: &S, ns: &str) {
    let mut watch = store.watch::<ConfigMap>(ns, Some("cm-2"));
    match next(&mut watch).await {
        WatchEvent::Applied(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("cm-2")),
        other => panic!("initial event must be Applied, got {other:?}"),
    }
    // A change to another object is not reported; the next event is cm-2's.
    let mut other: ConfigMap = store.get(ns, "cm-1").await.expect("get").expect("cm-1");
    other.data = Some(BTreeMap::from([("value".into(), "changed".into())]));
    store.replace(&other).await.expect("replace cm-1");
    let mut mine: ConfigMap = store.get(ns, "cm-2").await.expect("get").expect("cm-2");
    mine.data = Some(BTreeMap::from([("value".into(), "changed".into())]));
    store.replace(&mine).await.expect("replace cm-2");
    match next(&mut watch).await {
        WatchEvent::Applied(cm) => {
            assert_eq!(cm.metadata.name.as_deref(), Some("cm-2"));
            assert_eq!(
                cm.data.and_then(|d| d.get("value").cloned()).as_deref(),
                Some("changed")
            );
        }
        other => panic!("cm-2's change must be Applied, got {other:?}"),
    }
    store
        .delete::<ConfigMap>(ns, "cm-1")
        .await
        .expect("delete cm-1");
    store
        .delete::<ConfigMap>(ns, "cm-2")
        .await
        .expect("delete cm-2");
    assert_eq!(
        event_name(&next(&mut watch).await),
        (true, "cm-2".to_owned())
    );
}
