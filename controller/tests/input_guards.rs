//! What authenticated callers may not do with their input, against the real kube-apiserver:
//! an exporter may not overwrite its administrator's labels, nor set reserved keys or keys
//! that access policies and routers read (only keys under the allowed prefixes, which it then
//! owns); namespace and name headers that cannot name an object are refused before any
//! store call.
//!
//! The gRPC port runs in-process over real TLS (h2), in a fresh namespace per test.

use crate::support;

use support::{Identity, LoopbackGrpc, assert_status, call, created_exporter};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ObjectMeta;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

use jumpstarter_controller::auth::AuthMetrics;
use jumpstarter_controller::crd::{Exporter, ExporterAccessPolicy, ExporterAccessPolicySpec};
use jumpstarter_controller::service::{ServiceMetrics, Services, TokenSigners};
use jumpstarter_controller::settings::Settings;
use jumpstarter_controller::store::Store;
use jumpstarter_controller::store::kube::KubeStore;
use jumpstarter_proto::jumpstarter::v1 as pb;
use jumpstarter_proto::jumpstarter::v1::controller_service_client::ControllerServiceClient;
use jumpstarter_token::SigningKey;
use jumpstarter_token::internal::Issuer;

/// Upper bound of every connection attempt.
const WAIT: StdDuration = StdDuration::from_secs(20);
/// Where the exporter-owned labels are recorded.
const RECORD: &str = "jumpstarter.dev/reported-labels";

struct Harness {
    namespace: String,
    store: KubeStore,
    issuer: Issuer,
    registry: Arc<Registry>,
    grpc: LoopbackGrpc,
}

impl Harness {
    async fn start(prefix: &str, change: impl FnOnce(&mut Settings)) -> Harness {
        let (namespace, store) = support::kube_namespace(prefix).await;
        let (ca, cert) = support::localhost_pki("guard-test-ca", OffsetDateTime::now_utc());
        let issuer = support::token_issuer();
        let mut settings = Settings::example(&namespace, "localhost:8082", "router.test:443");
        change(&mut settings);
        let mut registry = Registry::default();
        let auth_metrics = Arc::new(AuthMetrics::new(&mut registry));
        let service_metrics = Arc::new(ServiceMetrics::new(&mut registry));
        let shutdown = CancellationToken::new();
        let services = Services::new(
            store.clone(),
            Arc::new(settings),
            TokenSigners {
                issuer: issuer.clone(),
                router_key: SigningKey::generate().expect("router key"),
            },
            auth_metrics,
            service_metrics,
            shutdown.clone(),
        );
        Harness {
            namespace,
            store,
            issuer,
            registry: Arc::new(registry),
            grpc: LoopbackGrpc::serve(&services, &cert, &ca, shutdown).await,
        }
    }

    async fn controller(&self) -> ControllerServiceClient<Channel> {
        let channel = self
            .grpc
            .endpoint(WAIT)
            .connect()
            .await
            .expect("connect over TLS");
        ControllerServiceClient::new(channel)
    }

    async fn exporter(&self, name: &str, labels: &[(&str, &str)]) -> Identity {
        created_exporter(&self.store, &self.issuer, &self.namespace, name, labels).await
    }

    async fn stored(&self, name: &str) -> Exporter {
        self.store
            .get(&self.namespace, name)
            .await
            .expect("get exporter")
            .expect("exporter exists")
    }

    fn metrics_text(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("encode");
        text
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn register(labels: &[(&str, &str)]) -> pb::RegisterRequest {
    pb::RegisterRequest {
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        reports: vec![pb::DriverInstanceReport {
            uuid: "root".into(),
            ..Default::default()
        }],
    }
}

#[tokio::test]
async fn register_keeps_admin_labels_and_refuses_reserved_keys_by_default() {
    let h = Harness::start("guard-labels", |_| {}).await;
    let admin = [
        ("board", "mock"),
        ("jumpstarter.dev/tier", "gold"),
        ("site", "lab-1"),
    ];
    let exp = h.exporter("exp1", &admin).await;
    let mut api = h.controller().await;

    // What a 0.9.0 exporter sends (no labels) leaves the administrator's labels alone.
    api.register(call(register(&[]), &exp))
        .await
        .expect("register as 0.9.0");
    assert_eq!(h.stored("exp1").await.metadata.labels, Some(map(&admin)));

    // A hostile exporter: overwrite reserved and admin keys, add keys a selector matches.
    api.register(call(
        register(&[
            ("jumpstarter.dev/tier", "free"),
            ("jumpstarter.dev/new", "x"),
            ("board", "other"),
            ("gpu", "yes"),
        ]),
        &exp,
    ))
    .await
    .expect("register succeeds, refused labels are dropped");
    let stored = h.stored("exp1").await;
    assert_eq!(stored.metadata.labels, Some(map(&admin)));
    assert!(
        !stored
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(RECORD)
    );
    let metrics = h.metrics_text();
    for (reason, count) in [("reserved", 2), ("not_allowed", 2)] {
        let line = format!(
            "jumpstarter_controller_register_labels_refused_total{{reason=\"{reason}\"}} {count}"
        );
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
}

#[tokio::test]
async fn allowed_labels_belong_to_the_exporter_but_never_selected_or_admin_keys() {
    let h = Harness::start("guard-allowed", |s| {
        s.exporter_label_prefixes = vec!["lab.example.com/".into()];
        s.routers[0].labels = map(&[("lab.example.com/zone", "east")]);
    })
    .await;
    h.store
        .create(&ExporterAccessPolicy {
            metadata: ObjectMeta {
                name: Some("gold".into()),
                namespace: Some(h.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: ExporterAccessPolicySpec {
                exporter_selector: Some(LabelSelector {
                    match_labels: Some(map(&[("lab.example.com/tier", "gold")])),
                    match_expressions: None,
                }),
                policies: None,
            },
            status: None,
        })
        .await
        .expect("create policy");
    let exp = h
        .exporter("exp1", &[("board", "mock"), ("lab.example.com/rack", "r1")])
        .await;
    let mut api = h.controller().await;

    api.register(call(
        register(&[
            ("lab.example.com/firmware", "1.0"),
            ("lab.example.com/rack", "r9"),
            ("lab.example.com/tier", "gold"),
            ("lab.example.com/zone", "east"),
            ("board", "other"),
        ]),
        &exp,
    ))
    .await
    .expect("register");
    let stored = h.stored("exp1").await;
    assert_eq!(
        stored.metadata.labels,
        Some(map(&[
            ("board", "mock"),
            ("lab.example.com/firmware", "1.0"),
            ("lab.example.com/rack", "r1"),
        ]))
    );
    assert_eq!(
        stored.metadata.annotations.unwrap_or_default()[RECORD],
        r#"{"lab.example.com/firmware":"1.0"}"#
    );
    let metrics = h.metrics_text();
    for (reason, count) in [("admin_set", 1), ("selected", 2), ("not_allowed", 1)] {
        let line = format!(
            "jumpstarter_controller_register_labels_refused_total{{reason=\"{reason}\"}} {count}"
        );
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }

    // The exporter changes and then drops its own label; the administrator's stay.
    api.register(call(register(&[("lab.example.com/firmware", "2.0")]), &exp))
        .await
        .expect("register again");
    assert_eq!(
        h.stored("exp1").await.metadata.labels.unwrap_or_default()["lab.example.com/firmware"],
        "2.0"
    );
    api.register(call(register(&[]), &exp))
        .await
        .expect("register without labels");
    let stored = h.stored("exp1").await;
    assert_eq!(
        stored.metadata.labels,
        Some(map(&[("board", "mock"), ("lab.example.com/rack", "r1")]))
    );
    assert!(
        !stored
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(RECORD)
    );
}

#[tokio::test]
async fn names_in_metadata_are_checked_before_the_store() {
    let h = Harness::start("guard-names", |_| {}).await;
    let exp = h.exporter("exp1", &[]).await;
    let mut api = h.controller().await;
    let with = |change: &dyn Fn(&mut Identity)| {
        let mut identity = exp.clone();
        change(&mut identity);
        call(pb::UnregisterRequest::default(), &identity)
    };
    #[rustfmt::skip]
    let refused = [
        (with(&|id| id.name = "exp1/../../../../api/v1/namespaces/default/secrets/x".into()), "jumpstarter-name"),
        (with(&|id| id.name = "Exp1".into()), "jumpstarter-name"),
        (with(&|id| id.name = "x".repeat(254)), "jumpstarter-name"),
        (with(&|id| id.namespace = "a.b".into()), "jumpstarter-namespace"),
        (with(&|id| id.namespace = "..".into()), "jumpstarter-namespace"),
        (with(&|id| id.namespace = "n".repeat(64)), "jumpstarter-namespace"),
    ];
    for (request, key) in refused {
        assert_status(
            api.unregister(request).await,
            Code::InvalidArgument,
            &format!("invalid metadata {key}"),
        );
    }
    let metrics = h.metrics_text();
    assert!(
        metrics
            .contains("jumpstarter_controller_auth_failures_total{reason=\"invalid_metadata\"} 6"),
        "{metrics}"
    );
    // The exporter itself still gets through.
    api.unregister(call(pb::UnregisterRequest::default(), &exp))
        .await
        .expect("unregister");
}
