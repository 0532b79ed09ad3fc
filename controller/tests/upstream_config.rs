//! The 0.9.0 ConfigMap `jumpstarter-controller` against the real kube-apiserver: written
//! as the upstream operator writes it, read the way the controller reads it at start, and
//! its effect seen through the gRPC API (deprecated and hidden labels, the lease policy).
//! An invalid ConfigMap is refused with its precise error; an absent one leaves defaults.

use crate::support;

use support::{LoopbackGrpc, call};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use k8s_openapi::api::core::v1::ConfigMap;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use jumpstarter_controller::auth::AuthMetrics;
use jumpstarter_controller::service::{ServiceMetrics, Services, TokenSigners};
use jumpstarter_controller::settings::Settings;
use jumpstarter_controller::store::Store;
use jumpstarter_controller::store::kube::KubeStore;
use jumpstarter_controller::upstream::source::{DEFAULT_CONFIG_MAP, from_config_map};
use jumpstarter_controller::upstream::{GivenFlags, UpstreamConfig};
use jumpstarter_proto::jumpstarter::client::v1 as client_pb;
use jumpstarter_proto::jumpstarter::client::v1::client_service_client::ClientServiceClient;
use jumpstarter_token::SigningKey;

/// Upper bound of every wait in these tests.
const WAIT: StdDuration = StdDuration::from_secs(20);

const CONFIG: &str = r#"
authentication:
  internal:
    prefix: "internal:"
    tokenLifetime: 43800h
  jwt: []
provisioning:
  enabled: false
grpc:
  keepalive:
    minTime: 3s
    permitWithoutStream: true
leasePolicy:
  maxTags: 1
hiddenLabels:
  keys: [serial]
deprecatedLabels:
  keys:
    pool: "use env instead"
"#;

const ROUTER: &str = "default:\n  endpoint: router.example.test:443\n";

async fn write_config_map(store: &KubeStore, namespace: &str, data: &[(&str, &str)]) {
    let config_map = ConfigMap {
        metadata: support::object_meta(namespace, DEFAULT_CONFIG_MAP, &[]),
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..ConfigMap::default()
    };
    store.create(&config_map).await.expect("create ConfigMap");
}

/// What the controller binary does at start: defaults, then the ConfigMap, flags winning.
fn settings_from(namespace: &str, config: &UpstreamConfig) -> Settings {
    let mut settings = Settings::example(namespace, "localhost:8082", "unused.example.test:443");
    config.apply(&mut settings, &GivenFlags::default());
    settings
}

#[tokio::test]
async fn the_upstream_config_map_reaches_the_grpc_api() {
    let (namespace, store) = support::kube_namespace("upstream-config").await;
    write_config_map(
        &store,
        &namespace,
        &[("config", CONFIG), ("router", ROUTER)],
    )
    .await;
    let config = from_config_map(&store, &namespace, DEFAULT_CONFIG_MAP)
        .await
        .expect("read the ConfigMap")
        .expect("the ConfigMap exists");
    let settings = settings_from(&namespace, &config);
    assert_eq!(settings.routers.len(), 1);
    assert_eq!(settings.routers[0].endpoint, "router.example.test:443");
    assert_eq!(settings.max_tags, 1);

    let issuer = support::token_issuer();
    let (ca, cert) = support::localhost_pki("upstream-test-ca", OffsetDateTime::now_utc());
    let mut registry = Registry::default();
    let shutdown = CancellationToken::new();
    let services = Services::new(
        store.clone(),
        Arc::new(settings),
        TokenSigners {
            issuer: issuer.clone(),
            router_key: SigningKey::generate().expect("router key"),
        },
        Arc::new(AuthMetrics::new(&mut registry)),
        Arc::new(ServiceMetrics::new(&mut registry)),
        shutdown.clone(),
    );
    let grpc = LoopbackGrpc::serve(&services, &cert, &ca, shutdown).await;
    let alice = support::created_client(&store, &issuer, &namespace, "alice").await;
    support::created_exporter(
        &store,
        &issuer,
        &namespace,
        "exp1",
        &[("board", "mock"), ("pool", "staging"), ("serial", "42")],
    )
    .await;
    let channel = grpc.endpoint(WAIT).connect().await.expect("connect");
    let mut api = ClientServiceClient::new(channel);

    let get = |show_hidden_labels: bool| client_pb::GetExporterRequest {
        name: format!("namespaces/{namespace}/exporters/exp1"),
        show_hidden_labels,
    };
    // The services' read cache may lag behind the create: retry NotFound for a while.
    let deadline = tokio::time::Instant::now() + WAIT;
    let exporter = loop {
        match api.get_exporter(call(get(false), &alice)).await {
            Ok(response) => break response.into_inner(),
            Err(status) if status.code() == Code::NotFound => {
                assert!(tokio::time::Instant::now() < deadline, "exporter not seen");
                tokio::time::sleep(StdDuration::from_millis(50)).await;
            }
            Err(status) => panic!("get exporter: {status}"),
        }
    };
    let labels: BTreeMap<_, _> = exporter.labels.into_iter().collect();
    assert_eq!(labels, BTreeMap::from([("board".into(), "mock".into())]));
    let deprecated: BTreeMap<_, _> = exporter.deprecated_labels.into_iter().collect();
    assert_eq!(
        deprecated,
        BTreeMap::from([("pool".into(), "use env instead".into())])
    );

    let shown = api
        .get_exporter(call(get(true), &alice))
        .await
        .expect("get exporter with hidden labels")
        .into_inner();
    assert_eq!(shown.labels.len(), 3);
    assert_eq!(shown.deprecated_labels.len(), 1);

    let listed = api
        .list_exporters(call(
            client_pb::ListExportersRequest {
                parent: format!("namespaces/{namespace}"),
                show_hidden_labels: false,
                ..Default::default()
            },
            &alice,
        ))
        .await
        .expect("list exporters")
        .into_inner();
    assert_eq!(listed.exporters.len(), 1);
    assert_eq!(
        listed.exporters[0]
            .deprecated_labels
            .get("pool")
            .map(String::as_str),
        Some("use env instead")
    );
    assert!(!listed.exporters[0].labels.contains_key("pool"));

    let lease = |selector: &str, tags: &[(&str, &str)]| client_pb::CreateLeaseRequest {
        parent: format!("namespaces/{namespace}"),
        lease_id: String::new(),
        lease: Some(client_pb::Lease {
            selector: selector.into(),
            duration: Some(prost_types::Duration {
                seconds: 600,
                nanos: 0,
            }),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }),
    };
    let created = api
        .create_lease(call(lease("board=mock,pool=staging", &[]), &alice))
        .await
        .expect("create lease")
        .into_inner();
    assert_eq!(
        created.deprecated_labels,
        [("pool".to_owned(), "use env instead".to_owned())].into()
    );
    let read = api
        .get_lease(call(
            client_pb::GetLeaseRequest {
                name: created.name.clone(),
            },
            &alice,
        ))
        .await
        .expect("get lease")
        .into_inner();
    assert_eq!(read.deprecated_labels.len(), 1);
    // leasePolicy.maxTags: 1 from the ConfigMap.
    let refused = api
        .create_lease(call(lease("board=mock", &[("a", "1"), ("b", "2")]), &alice))
        .await
        .expect_err("two tags are over the ConfigMap's maxTags");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
}

#[tokio::test]
async fn an_invalid_config_map_is_refused_with_its_path_and_an_absent_one_is_none() {
    let (namespace, store) = support::kube_namespace("upstream-invalid").await;
    assert!(
        from_config_map(&store, &namespace, DEFAULT_CONFIG_MAP)
            .await
            .expect("read")
            .is_none()
    );
    write_config_map(
        &store,
        &namespace,
        &[("config", "grpc:\n  keepalive:\n    minTim: 1s\n")],
    )
    .await;
    let error = from_config_map(&store, &namespace, DEFAULT_CONFIG_MAP)
        .await
        .expect_err("an unknown key is an error")
        .to_string();
    assert!(
        error.starts_with("config: grpc.keepalive: unknown field `minTim`, expected one of"),
        "{error}"
    );
}
