//! The generated CRDs on a real kube-apiserver: each kind accepts a valid object that
//! round-trips through the Rust types, and objects violating the CEL rules and schema
//! constraints are rejected with the rule's message.

use std::collections::BTreeMap;

use jumpstarter_controller::crd::{Client, Exporter, ExporterAccessPolicy, Lease};
use jumpstarter_testenv::TestEnv;
use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

async fn setup(prefix: &str) -> (kube::Client, String) {
    let env = TestEnv::shared();
    env.install_crds(&jumpstarter_controller::crd::definitions())
        .await
        .expect("install CRDs");
    (env.admin_client().await, env.namespace(prefix).await)
}

/// Creates `object` (JSON) as `K` and returns the stored object.
async fn create<K>(api: &Api<K>, object: Value) -> Result<K, kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let typed: K = serde_json::from_value(object).expect("test object matches the Rust type");
    api.create(&PostParams::default(), &typed).await
}

fn rejection(result: Result<impl std::fmt::Debug, kube::Error>) -> String {
    match result {
        Ok(obj) => panic!("the API server accepted an invalid object: {obj:?}"),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "expected 422 Invalid, got {status:?}");
            status.message
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
}

/// The spec as JSON, for round-trip comparisons.
fn spec_json<K: serde::Serialize>(object: &K) -> Value {
    serde_json::to_value(object).expect("serialize")["spec"].clone()
}

#[tokio::test]
async fn client_round_trips() {
    let (client, ns) = setup("crd-client").await;
    let api: Api<Client> = Api::namespaced(client, &ns);
    let object = json!({
        "apiVersion": "jumpstarter.dev/v1alpha1", "kind": "Client",
        "metadata": {"name": "alice", "namespace": ns, "labels": {"team": "qa"}},
        "spec": {"username": "internal:client:alice"}
    });
    let created = create(&api, object.clone())
        .await
        .expect("valid client accepted");
    let fetched = api.get("alice").await.expect("get");
    assert_eq!(spec_json(&fetched), object["spec"]);
    assert_eq!(spec_json(&created), object["spec"]);
    // Status subresource: status written through /status survives and round-trips.
    let status =
        json!({"status": {"credential": {"name": "alice-client"}, "endpoint": "127.0.0.1:8082"}});
    let patched = api
        .patch_status("alice", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status patch");
    assert_eq!(
        serde_json::to_value(&patched).expect("json")["status"],
        status["status"]
    );
}

#[tokio::test]
async fn exporter_round_trips_and_defaults_enabled() {
    let (client, ns) = setup("crd-exporter").await;
    let api: Api<Exporter> = Api::namespaced(client, &ns);
    let object = json!({
        "apiVersion": "jumpstarter.dev/v1alpha1", "kind": "Exporter",
        "metadata": {"name": "board-1", "namespace": ns, "labels": {"board": "rpi4"}},
        "spec": {}
    });
    let created = create(&api, object).await.expect("valid exporter accepted");
    assert_eq!(
        created.spec.enabled,
        Some(true),
        "spec.enabled defaults to true"
    );
    let status = json!({"status": {
        "credential": {"name": "board-1-exporter"},
        "devices": [{"uuid": "d1", "parent_uuid": "p0", "labels": {"jumpstarter.dev/name": "power"}}],
        "endpoint": "127.0.0.1:8082",
        "exporterStatus": "Available",
        "statusMessage": "Exporter registered and available",
        "lastSeen": "2026-11-29T12:00:00Z",
        "conditions": [{"type": "Online", "status": "True", "reason": "Seen", "message": "",
                        "lastTransitionTime": "2026-11-29T12:00:00Z"}]
    }});
    let patched = api
        .patch_status("board-1", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status patch");
    assert_eq!(
        serde_json::to_value(&patched).expect("json")["status"],
        status["status"]
    );

    let bad = json!({"status": {"exporterStatus": "Sleeping"}});
    let err = rejection(
        api.patch_status("board-1", &PatchParams::default(), &Patch::Merge(&bad))
            .await,
    );
    assert!(
        err.contains("exporterStatus") && err.contains("Unsupported value"),
        "{err}"
    );
}

#[tokio::test]
async fn access_policy_round_trips() {
    let (client, ns) = setup("crd-policy").await;
    let api: Api<ExporterAccessPolicy> = Api::namespaced(client, &ns);
    let object = json!({
        "apiVersion": "jumpstarter.dev/v1alpha1", "kind": "ExporterAccessPolicy",
        "metadata": {"name": "lab-policy", "namespace": ns},
        "spec": {
            "exporterSelector": {"matchLabels": {"board": "rpi4"}},
            "policies": [{
                "description": "qa may use boards for an hour",
                "priority": 10,
                "from": [{"clientSelector": {"matchLabels": {"team": "qa"}}}],
                "maximumDuration": "1h0m0s",
                "spotAccess": false
            }]
        }
    });
    create(&api, object.clone())
        .await
        .expect("valid policy accepted");
    let fetched = api.get("lab-policy").await.expect("get");
    assert_eq!(spec_json(&fetched), object["spec"]);
}

fn lease(ns: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "jumpstarter.dev/v1alpha1", "kind": "Lease",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec
    })
}

#[tokio::test]
async fn lease_round_trips_and_cel_rules_reject() {
    let (client, ns) = setup("crd-lease").await;
    let api: Api<Lease> = Api::namespaced(client, &ns);

    // Valid: a selector lease and a pinned lease.
    let by_selector = json!({
        "clientRef": {"name": "alice"},
        "duration": "30m0s",
        "selector": {"matchLabels": {"board": "rpi4"},
                     "matchExpressions": [{"key": "site", "operator": "In", "values": ["a", "b"]}]},
        "tags": {"ci-job": "1234"},
        "beginTime": "2026-11-29T12:00:00Z",
        "endTime": "2026-11-29T12:30:00Z"
    });
    create(&api, lease(&ns, "by-selector", by_selector.clone()))
        .await
        .expect("selector lease accepted");
    let fetched = api.get("by-selector").await.expect("get");
    assert_eq!(spec_json(&fetched), by_selector);

    let pinned = json!({"clientRef": {"name": "alice"}, "selector": {}, "exporterRef": {"name": "board-1"},
                        "allowDisabled": true});
    create(&api, lease(&ns, "pinned", pinned.clone()))
        .await
        .expect("pinned lease accepted");
    assert_eq!(spec_json(&api.get("pinned").await.expect("get")), pinned);

    // Status round trip, `ended` always present.
    let status = json!({"status": {
        "ended": false, "exporterRef": {"name": "board-1"}, "beginTime": "2026-11-29T12:00:00Z",
        "priority": 0, "spotAccess": false,
        "conditions": [
            {"type": "Pending", "status": "True", "reason": "NotAvailable", "message": "waiting",
             "lastTransitionTime": "2026-11-29T12:00:00Z"},
            {"type": "Ready", "status": "True", "reason": "Ready",
             "message": "An exporter has been acquired for the client",
             "lastTransitionTime": "2026-11-29T12:00:01Z"}]
    }});
    let patched = api
        .patch_status("pinned", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status patch");
    assert_eq!(
        serde_json::to_value(&patched).expect("json")["status"],
        status["status"]
    );

    // CEL: one of selector or exporterRef.name is required.
    for (name, spec) in [
        (
            "empty",
            json!({"clientRef": {"name": "alice"}, "selector": {}}),
        ),
        (
            "empty-ref",
            json!({"clientRef": {"name": "alice"}, "selector": {}, "exporterRef": {"name": ""}}),
        ),
        (
            "empty-maps",
            json!({"clientRef": {"name": "alice"}, "selector": {"matchLabels": {}, "matchExpressions": []}}),
        ),
    ] {
        let err = rejection(create(&api, lease(&ns, name, spec)).await);
        assert!(
            err.contains("one of selector or exporterRef.name is required"),
            "{name}: {err}"
        );
    }

    // CEL: tags are immutable after creation.
    let mut changed = api.get("by-selector").await.expect("get");
    changed.spec.tags = Some(BTreeMap::from([("ci-job".to_owned(), "5678".to_owned())]));
    let err = rejection(
        api.replace("by-selector", &PostParams::default(), &changed)
            .await,
    );
    assert!(err.contains("tags are immutable after creation"), "{err}");
    // ...while other spec fields may change.
    let mut released = api.get("by-selector").await.expect("get");
    released.spec.release = Some(true);
    api.replace("by-selector", &PostParams::default(), &released)
        .await
        .expect("release is mutable");

    // Schema: at most 10 tags.
    let tags: BTreeMap<String, String> =
        (0..11).map(|i| (format!("t{i}"), "v".to_owned())).collect();
    let err = rejection(
        create(
            &api,
            lease(
                &ns,
                "many-tags",
                json!({"clientRef": {"name": "alice"},
            "selector": {"matchLabels": {"a": "b"}}, "tags": tags}),
            ),
        )
        .await,
    );
    assert!(err.contains("spec.tags") && err.contains("10"), "{err}");

    // Schema: clientRef is required (not expressible with the Rust type, so sent untyped).
    let untyped: Api<DynamicObject> = Api::namespaced_with(
        api.clone().into_client(),
        &ns,
        &ApiResource::erase::<Lease>(&()),
    );
    let object: DynamicObject = serde_json::from_value(lease(
        &ns,
        "no-client",
        json!({"selector": {"matchLabels": {"a": "b"}}}),
    ))
    .expect("dynamic object");
    let err = rejection(untyped.create(&PostParams::default(), &object).await);
    assert!(err.contains("clientRef"), "{err}");
}
