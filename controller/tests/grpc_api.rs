//! The controller's gRPC port against the real kube-apiserver: the services run in-process
//! on 127.0.0.1:0 over real TLS (h2) and are called with tonic clients carrying the same
//! metadata the 0.9.0 Python client and exporter send.
//!
//! Each test works in its own namespace. The reconcile loop does not run here: the tests
//! write the lease and exporter status the loop would write.

use crate::support;

use support::{Identity, LoopbackGrpc, assert_status, call};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use k8s_openapi::api::core::v1::LocalObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ObjectMeta;
use prometheus_client::registry::Registry;
use time::{Duration, OffsetDateTime};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

use jumpstarter_controller::auth::AuthMetrics;
use jumpstarter_controller::crd::vocabulary;
use jumpstarter_controller::crd::{
    self, Client, ClientSpec, Exporter, ExporterSpec, ExporterStatusValue, Lease, LeaseStatus,
};
use jumpstarter_controller::service::{ServiceMetrics, Services, TokenSigners};
use jumpstarter_controller::settings::Settings;
use jumpstarter_controller::store::Store;
use jumpstarter_controller::store::kube::KubeStore;
use jumpstarter_proto::jumpstarter::client::v1 as client_pb;
use jumpstarter_proto::jumpstarter::client::v1::client_service_client::ClientServiceClient;
use jumpstarter_proto::jumpstarter::v1 as pb;
use jumpstarter_proto::jumpstarter::v1::controller_service_client::ControllerServiceClient;
use jumpstarter_token::SigningKey;
use jumpstarter_token::internal::{Issuer, ObjectKind, Subject};

/// Upper bound of every wait in these tests.
const WAIT: StdDuration = StdDuration::from_secs(20);
const ROUTER_ENDPOINT: &str = "router.example.test:443";

struct Harness {
    namespace: String,
    store: KubeStore,
    issuer: Issuer,
    router_key: SigningKey,
    registry: Arc<Registry>,
    grpc: LoopbackGrpc,
    services: Services<KubeStore>,
}

impl Harness {
    async fn start(prefix: &str) -> Harness {
        let (namespace, store) = support::kube_namespace(prefix).await;
        let (ca, cert) = support::localhost_pki("grpc-test-ca", OffsetDateTime::now_utc());
        let issuer = support::token_issuer();
        let router_key = SigningKey::generate().expect("router key");
        let settings = Arc::new(Settings::example(
            &namespace,
            "localhost:8082",
            ROUTER_ENDPOINT,
        ));
        let mut registry = Registry::default();
        let auth_metrics = Arc::new(AuthMetrics::new(&mut registry));
        let service_metrics = Arc::new(ServiceMetrics::new(&mut registry));
        let shutdown = CancellationToken::new();
        let services = Services::new(
            store.clone(),
            settings,
            TokenSigners {
                issuer: issuer.clone(),
                router_key: router_key.clone(),
            },
            auth_metrics,
            service_metrics,
            shutdown.clone(),
        );
        Harness {
            namespace,
            store,
            issuer,
            router_key,
            registry: Arc::new(registry),
            grpc: LoopbackGrpc::serve(&services, &cert, &ca, shutdown).await,
            services,
        }
    }

    /// Waits until the services read what the test wrote behind their back (as the
    /// reconciler on the leader would), at most for [`WAIT`].
    async fn settle<K: jumpstarter_controller::store::Object>(&self, written: &K) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.services.has_seen(written) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the services' read cache did not catch up with a write"
            );
            tokio::time::sleep(StdDuration::from_millis(10)).await;
        }
    }

    fn endpoint(&self) -> Endpoint {
        self.grpc.endpoint(WAIT)
    }

    async fn channel(&self) -> Channel {
        self.endpoint().connect().await.expect("connect over TLS")
    }

    async fn controller(&self) -> ControllerServiceClient<Channel> {
        ControllerServiceClient::new(self.channel().await)
            .max_encoding_message_size(64 * 1024 * 1024)
    }

    async fn clients(&self) -> ClientServiceClient<Channel> {
        ClientServiceClient::new(self.channel().await)
    }

    fn token(&self, kind: ObjectKind, name: &str, uid: &str, now: OffsetDateTime) -> String {
        let subject = Subject {
            kind,
            namespace: self.namespace.clone(),
            name: name.into(),
            uid: uid.into(),
        };
        self.issuer.issue(&subject, now).expect("issue").0
    }

    /// The caller for the object just created (`uid` as the API server assigned it).
    fn identity(&self, kind: ObjectKind, name: &str, uid: Option<String>) -> Identity {
        let uid = uid.expect("uid");
        Identity::issued(&self.issuer, kind, &self.namespace, name, &uid)
    }

    /// The clients `names`, created in this order.
    async fn clients_named<const N: usize>(&self, names: [&str; N]) -> [Identity; N] {
        let mut made = Vec::with_capacity(N);
        for name in names {
            made.push(self.client(name).await);
        }
        made.try_into().expect("one identity per name")
    }

    async fn client(&self, name: &str) -> Identity {
        let created = self
            .store
            .create(&Client {
                metadata: self.meta(name, BTreeMap::new()),
                spec: ClientSpec::default(),
                status: None,
            })
            .await
            .expect("create client");
        self.identity(ObjectKind::Client, name, created.metadata.uid)
    }

    async fn exporter(&self, name: &str, labels: &[(&str, &str)]) -> Identity {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let created = self
            .store
            .create(&Exporter {
                metadata: self.meta(name, labels),
                spec: ExporterSpec::default(),
                status: None,
            })
            .await
            .expect("create exporter");
        self.identity(ObjectKind::Exporter, name, created.metadata.uid)
    }

    fn meta(&self, name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(self.namespace.clone()),
            labels: (!labels.is_empty()).then_some(labels),
            ..ObjectMeta::default()
        }
    }

    fn parent(&self) -> String {
        format!("namespaces/{}", self.namespace)
    }

    fn lease_name(&self, name: &str) -> String {
        format!("namespaces/{}/leases/{name}", self.namespace)
    }

    /// Creates a lease of `client` and, with `exporter`, marks it assigned as the
    /// reconcile loop would (lease status and the exporter's leaseRef).
    async fn lease(&self, name: &str, client: &str, exporter: Option<&str>) {
        let lease = Lease {
            metadata: self.meta(name, BTreeMap::new()),
            spec: crd::LeaseSpec {
                client_ref: LocalObjectReference {
                    name: client.into(),
                },
                duration: Some("1h0m0s".into()),
                selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([("board".to_owned(), "mock".to_owned())])),
                    match_expressions: None,
                },
                exporter_ref: exporter.map(|e| LocalObjectReference { name: e.into() }),
                ..crd::LeaseSpec::default()
            },
            status: None,
        };
        let mut created = self.store.create(&lease).await.expect("create lease");
        if let Some(exporter) = exporter {
            created.status = Some(LeaseStatus {
                begin_time: Some(vocabulary::now_time()),
                exporter_ref: Some(LocalObjectReference {
                    name: exporter.into(),
                }),
                ended: false,
                ..LeaseStatus::default()
            });
            let written = self
                .store
                .replace_status(&created)
                .await
                .expect("lease status");
            self.settle(&written).await;
            self.set_exporter(exporter, |s| {
                s.lease_ref = Some(LocalObjectReference { name: name.into() });
            })
            .await;
        }
    }

    async fn set_exporter(&self, name: &str, change: impl Fn(&mut crd::ExporterStatus)) {
        for _ in 0..10 {
            let mut exporter: Exporter = self
                .store
                .get(&self.namespace, name)
                .await
                .expect("get exporter")
                .expect("exporter exists");
            change(exporter.status.get_or_insert_with(Default::default));
            match self.store.replace_status(&exporter).await {
                Ok(written) => return self.settle(&written).await,
                Err(jumpstarter_controller::store::StoreError::Conflict { .. }) => continue,
                Err(e) => panic!("exporter status: {e}"),
            }
        }
        panic!("exporter status kept conflicting");
    }

    async fn stored_lease(&self, name: &str) -> Lease {
        self.store
            .get(&self.namespace, name)
            .await
            .expect("get")
            .expect("lease")
    }

    async fn stored_exporter(&self, name: &str) -> Exporter {
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

/// `message` with the identity's metadata, as the Python call credentials add it.
async fn bounded<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {WAIT:?}"))
}

/// The next message of a `Status` stream, within [`WAIT`].
async fn next_status(
    stream: &mut tonic::Streaming<pb::StatusResponse>,
    what: &str,
) -> pb::StatusResponse {
    bounded(what, stream.message())
        .await
        .expect("ok")
        .expect("message")
}

#[tokio::test]
async fn auth_failures_have_0_9_0_codes_and_the_server_keeps_serving() {
    let h = Harness::start("grpc-auth").await;
    let [alice, bob] = h.clients_named(["alice", "bob"]).await;
    let mut api = h.clients().await;
    let list = || client_pb::ListExportersRequest {
        parent: h.parent(),
        ..Default::default()
    };

    // Each refused call, in order: the request, the code 0.9.0 answers with and a piece of
    // its message.
    let as_alice = |change: &dyn Fn(&mut Identity)| {
        let mut identity = alice.clone();
        change(&mut identity);
        call(list(), &identity)
    };
    let mut basic = call(list(), &alice);
    basic
        .metadata_mut()
        .insert("authorization", "Basic abc".parse().expect("ascii"));
    let alice_uid: Client = h
        .store
        .get(&h.namespace, "alice")
        .await
        .expect("get")
        .expect("alice");
    let expired_token = h.token(
        ObjectKind::Client,
        "alice",
        alice_uid.metadata.uid.as_deref().expect("uid"),
        OffsetDateTime::now_utc() - Duration::hours(2),
    );
    let mut no_namespace = call(list(), &alice);
    no_namespace.metadata_mut().remove("jumpstarter-namespace");
    let elsewhere = client_pb::ListExportersRequest {
        parent: "namespaces/somewhere-else".into(),
        ..Default::default()
    };
    let bob_denied = format!("permission denied for client {}/bob", h.namespace);
    let garbage = as_alice(&|id| id.token = "not.a.jwt".into());
    let expired = as_alice(&|id| id.token.clone_from(&expired_token));
    let wrong_kind = as_alice(&|id| id.kind = ObjectKind::Exporter);
    let as_bob = as_alice(&|id| id.name = "bob".into());
    let nobody = as_alice(&|id| id.name = "nobody".into());
    #[rustfmt::skip]
    let refused = [
        (Request::new(list()), Code::Unauthenticated, "missing authorization header"),
        (basic, Code::InvalidArgument, "malformed authorization header"),
        (garbage, Code::Unknown, ""),
        (expired, Code::Unknown, "token is expired"),
        (no_namespace, Code::InvalidArgument, "missing metadata: jumpstarter-namespace"),
        (wrong_kind, Code::InvalidArgument, "object kind mismatch"),
        (as_bob, Code::PermissionDenied, bob_denied.as_str()),
        (nobody, Code::NotFound, "nobody"),
        (call(elsewhere, &alice), Code::PermissionDenied, "namespace mismatch"),
    ];
    for (request, code, text) in refused {
        assert_status(api.list_exporters(request).await, code, text);
    }

    // The same connection still serves good calls.
    let ok = api
        .list_exporters(call(list(), &bob))
        .await
        .expect("valid call");
    assert!(ok.into_inner().exporters.is_empty());

    let metrics = h.metrics_text();
    for reason in [
        "missing_authorization",
        "token_expired",
        "kind_mismatch",
        "permission_denied",
    ] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "{reason} not counted:\n{metrics}"
        );
    }
    // Codes as gRPC spells them; every call is also timed.
    assert!(
        metrics.contains("method=\"ClientService/ListExporters\",code=\"OK\""),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "jumpstarter_controller_grpc_request_duration_seconds_count{method=\"ClientService/ListExporters\",code=\"OK\"}"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("code=\"UNAUTHENTICATED\""), "{metrics}");
}

#[tokio::test]
async fn exporter_registers_reports_status_and_streams_its_lease_state() {
    let h = Harness::start("grpc-exporter").await;
    let exp = h.exporter("exp1", &[("board", "mock")]).await;
    h.client("alice").await;
    let mut api = h.controller().await;

    let register = pb::RegisterRequest {
        labels: [("jumpstarter.dev/x", "1"), ("other", "2")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        reports: vec![
            pb::DriverInstanceReport {
                uuid: "root".into(),
                ..Default::default()
            },
            pb::DriverInstanceReport {
                uuid: "power".into(),
                parent_uuid: Some("root".into()),
                labels: [("jumpstarter.dev/name".to_owned(), "power".to_owned())].into(),
                ..Default::default()
            },
        ],
    };
    let uuid = api
        .register(call(register, &exp))
        .await
        .expect("register")
        .into_inner()
        .uuid;
    let stored = h.stored_exporter("exp1").await;
    assert_eq!(Some(uuid), stored.metadata.uid);
    let labels = stored.metadata.labels.clone().unwrap_or_default();
    // Exporters may not label themselves by default (see input_guards.rs).
    assert!(!labels.contains_key("jumpstarter.dev/x"));
    assert_eq!(labels.get("board").map(String::as_str), Some("mock"));
    assert!(!labels.contains_key("other"));
    let devices = stored
        .status
        .as_ref()
        .and_then(|s| s.devices.clone())
        .expect("devices");
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[1].parent_uuid.as_deref(), Some("root"));

    let report = pb::ReportStatusRequest {
        status: pb::ExporterStatus::Available as i32,
        message: Some("Exporter registered and available".into()),
        release_lease: None,
    };
    api.report_status(call(report, &exp))
        .await
        .expect("report status");
    let status = h.stored_exporter("exp1").await.status.expect("status");
    assert_eq!(status.exporter_status, Some(ExporterStatusValue::Available));
    assert_eq!(
        status.status_message.as_deref(),
        Some("Exporter registered and available")
    );
    assert!(status.last_seen.is_some());
    let online = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Online")
        .expect("Online");
    assert_eq!(
        (online.status.as_str(), online.reason.as_str()),
        ("True", "StatusReported")
    );

    let bad_status = pb::ReportStatusRequest {
        status: 42,
        ..Default::default()
    };
    assert_status(
        api.report_status(call(bad_status, &exp)).await,
        Code::InvalidArgument,
        "42",
    );

    let mut stream = api
        .status(call(pb::StatusRequest {}, &exp))
        .await
        .expect("status stream")
        .into_inner();
    let first = next_status(&mut stream, "first status").await;
    assert_eq!(
        first,
        pb::StatusResponse {
            leased: false,
            lease_name: None,
            client_name: None
        }
    );

    h.lease("l1", "alice", Some("exp1")).await;
    let leased = next_status(&mut stream, "leased status").await;
    assert_eq!(
        leased,
        pb::StatusResponse {
            leased: true,
            lease_name: Some("l1".into()),
            client_name: Some("alice".into())
        }
    );

    h.set_exporter("exp1", |s| s.lease_ref = None).await;
    let released = next_status(&mut stream, "released status").await;
    assert!(!released.leased);

    api.unregister(call(
        pb::UnregisterRequest {
            reason: "Exporter shutdown".into(),
        },
        &exp,
    ))
    .await
    .expect("unregister");
    let status = h.stored_exporter("exp1").await.status.expect("status");
    assert!(status.devices.is_none());
    assert!(
        h.metrics_text()
            .contains("jumpstarter_controller_status_streams 1")
    );
    drop(stream);
}

#[tokio::test]
async fn leases_are_created_read_listed_and_released() {
    let h = Harness::start("grpc-lease").await;
    let [alice, bob] = h.clients_named(["alice", "bob"]).await;
    let mut api = h.clients().await;

    let request = |selector: &str, lease_id: &str| client_pb::CreateLeaseRequest {
        parent: h.parent(),
        lease_id: lease_id.into(),
        lease: Some(client_pb::Lease {
            selector: selector.into(),
            duration: Some(prost_types::Duration {
                seconds: 600,
                nanos: 0,
            }),
            tags: [("team".to_owned(), "qa".to_owned())].into(),
            ..Default::default()
        }),
    };
    let created = api
        .create_lease(call(request("board=mock", ""), &alice))
        .await
        .expect("create lease")
        .into_inner();
    let id = created
        .name
        .strip_prefix(&format!("namespaces/{}/leases/", h.namespace))
        .expect("lease name format")
        .to_owned();
    assert_eq!(
        uuid::Uuid::parse_str(&id).expect("uuid").get_version_num(),
        7
    );
    assert_eq!(created.selector, "board=mock");
    assert_eq!(
        created.client.as_deref(),
        Some(format!("namespaces/{}/clients/alice", h.namespace).as_str())
    );
    assert_eq!(
        created.duration,
        Some(prost_types::Duration {
            seconds: 600,
            nanos: 0
        })
    );
    assert_eq!(created.exporter, None);
    assert_eq!(created.tags.get("team").map(String::as_str), Some("qa"));
    assert!(created.conditions.is_empty());

    let stored = h.stored_lease(&id).await;
    let labels = stored.metadata.labels.unwrap_or_default();
    for (key, value) in [("board", "mock"), ("metadata.jumpstarter.dev/team", "qa")] {
        assert_eq!(labels.get(key).map(String::as_str), Some(value), "{key}");
    }
    assert_eq!(stored.spec.client_ref.name, "alice");

    // Any client of the namespace may read it.
    let got = api
        .get_lease(call(
            client_pb::GetLeaseRequest {
                name: created.name.clone(),
            },
            &bob,
        ))
        .await
        .expect("get lease")
        .into_inner();
    assert_eq!(got, created);

    let named = api
        .create_lease(call(request("board=mock", "my-lease"), &alice))
        .await
        .expect("create named lease")
        .into_inner();
    assert_eq!(named.name, h.lease_name("my-lease"));
    assert_status(
        api.create_lease(call(request("board=mock", "my-lease"), &alice))
            .await,
        Code::AlreadyExists,
        "",
    );

    let list = |filter: &str, tag_filter: &str| client_pb::ListLeasesRequest {
        parent: h.parent(),
        page_size: 100,
        filter: filter.into(),
        tag_filter: tag_filter.into(),
        ..Default::default()
    };
    let count = |r: client_pb::ListLeasesResponse| r.leases.len();
    let lister = api.clone();
    let listed = |filter: &'static str, tags: &'static str| {
        let mut api = lister.clone();
        let request = call(list(filter, tags), &alice);
        async move {
            count(
                api.list_leases(request)
                    .await
                    .expect("list leases")
                    .into_inner(),
            )
        }
    };
    assert_eq!(listed("", "").await, 2);
    assert_eq!(listed("board=mock", "team=qa").await, 2);
    assert_eq!(listed("", "team=other").await, 0);
    assert_eq!(listed("board=other", "").await, 0);

    let mut paged = list("", "");
    paged.page_size = 1;
    let page = api
        .list_leases(call(paged.clone(), &alice))
        .await
        .expect("page 1")
        .into_inner();
    assert_eq!(page.leases.len(), 1);
    assert!(!page.next_page_token.is_empty());
    paged.page_token = page.next_page_token;
    let page = api
        .list_leases(call(paged, &alice))
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(page.leases.len(), 1);

    // Bad input is INVALID_ARGUMENT with a precise message.
    assert_status(
        api.create_lease(call(request("a in (", ""), &alice)).await,
        Code::InvalidArgument,
        "selector",
    );
    assert_status(
        api.create_lease(call(request("", ""), &alice)).await,
        Code::InvalidArgument,
        "selector or exporter_name",
    );
    assert_status(
        api.get_lease(call(
            client_pb::GetLeaseRequest {
                name: "namespaces/x".into(),
            },
            &alice,
        ))
        .await,
        Code::InvalidArgument,
        "invalid lease name \"namespaces/x\"",
    );
    assert_status(
        api.list_leases(call(list("a in (", ""), &alice)).await,
        Code::InvalidArgument,
        "filter",
    );
    assert_status(
        api.get_lease(call(
            client_pb::GetLeaseRequest {
                name: h.lease_name("missing"),
            },
            &alice,
        ))
        .await,
        Code::NotFound,
        "missing",
    );

    // Release: owner only, once.
    let delete = |name: &str| client_pb::DeleteLeaseRequest { name: name.into() };
    assert_status(
        api.delete_lease(call(delete(&created.name), &bob)).await,
        Code::PermissionDenied,
        "permission denied",
    );
    api.delete_lease(call(delete(&created.name), &alice))
        .await
        .expect("delete lease");
    let stored = h.stored_lease(&id).await;
    assert_eq!(stored.spec.release, Some(true));
    assert_status(
        api.delete_lease(call(delete(&created.name), &alice)).await,
        Code::FailedPrecondition,
        "released",
    );

    // Ended leases disappear from the active list.
    let mut ended = stored;
    ended
        .metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(vocabulary::LEASE_ENDED_LABEL.into(), "true".into());
    let ended = h.store.replace(&ended).await.expect("mark ended");
    h.settle(&ended).await;
    assert_eq!(listed("", "").await, 1);
    let mut all = list("", "");
    all.only_active = Some(false);
    assert_eq!(
        count(
            api.list_leases(call(all, &alice))
                .await
                .expect("list all")
                .into_inner()
        ),
        2
    );
}

#[tokio::test]
async fn dial_hands_client_and_exporter_one_router_token_each_for_the_same_stream() {
    let h = Harness::start("grpc-dial").await;
    let [alice, bob] = h.clients_named(["alice", "bob"]).await;
    let exp = h.exporter("exp1", &[("board", "mock")]).await;
    h.lease("l1", "alice", Some("exp1")).await;
    h.lease("pending", "alice", None).await;
    h.set_exporter("exp1", |s| {
        s.exporter_status = Some(ExporterStatusValue::LeaseReady)
    })
    .await;
    let mut api = h.controller().await;
    let dial = |lease: &str| pb::DialRequest {
        lease_name: lease.into(),
    };

    let refusals = [
        (
            "l1",
            &alice,
            Code::Unavailable,
            "exporter is not listening on lease l1",
        ),
        ("l1", &bob, Code::Unknown, "permission denied"),
        ("nope", &alice, Code::NotFound, "nope"),
        ("pending", &alice, Code::Unknown, "lease not active"),
        ("", &alice, Code::InvalidArgument, "lease_name"),
    ];
    for (lease, caller, code, message) in refusals {
        assert_status(api.dial(call(dial(lease), caller)).await, code, message);
    }

    // The exporter may only listen on its own lease.
    let mut exporter_api = h.controller().await;
    let foreign = exporter_api
        .listen(call(
            pb::ListenRequest {
                lease_name: "pending".into(),
            },
            &exp,
        ))
        .await;
    assert_status(foreign.map(|_| ()), Code::Unknown, "permission denied");

    let mut listen = exporter_api
        .listen(call(
            pb::ListenRequest {
                lease_name: "l1".into(),
            },
            &exp,
        ))
        .await
        .expect("listen")
        .into_inner();
    // The registration happens when the call is answered; Dial right after must find it.
    let dialed = bounded("dial", api.dial(call(dial("l1"), &alice)))
        .await
        .expect("dial")
        .into_inner();
    assert_eq!(dialed.router_endpoint, ROUTER_ENDPOINT);
    let heard = bounded("listen", listen.message())
        .await
        .expect("ok")
        .expect("message");
    assert_eq!(heard.router_endpoint, dialed.router_endpoint);
    let claims = jumpstarter_token::router::verify(
        std::slice::from_ref(h.router_key.verifying_key()),
        &dialed.router_token,
        OffsetDateTime::now_utc(),
    )
    .expect("router token verifies");
    assert_eq!(
        claims.lease.as_deref(),
        Some(format!("{}/l1", h.namespace).as_str())
    );
    // One token per side of the same stream: the router pairs only opposite roles.
    let heard_claims = jumpstarter_token::router::verify(
        std::slice::from_ref(h.router_key.verifying_key()),
        &heard.router_token,
        OffsetDateTime::now_utc(),
    )
    .expect("the exporter's router token verifies");
    assert_eq!(heard_claims.sub, claims.sub);
    use jumpstarter_token::router::StreamRole;
    assert_eq!(claims.role, Some(StreamRole::Client));
    assert_eq!(heard_claims.role, Some(StreamRole::Exporter));
    assert_eq!(heard_claims.lease_end, claims.lease_end);
    let second = api
        .dial(call(dial("l1"), &alice))
        .await
        .expect("dial again")
        .into_inner();
    let second_claims = jumpstarter_token::router::verify(
        std::slice::from_ref(h.router_key.verifying_key()),
        &second.router_token,
        OffsetDateTime::now_utc(),
    )
    .expect("verifies");
    assert_ne!(claims.sub, second_claims.sub, "each Dial is a new stream");

    // Available: Dial waits server-side until the exporter is ready.
    h.set_exporter("exp1", |s| {
        s.exporter_status = Some(ExporterStatusValue::Available)
    })
    .await;
    let waiting = {
        let mut api = api.clone();
        let request = call(dial("l1"), &alice);
        tokio::spawn(async move { api.dial(request).await })
    };
    tokio::time::sleep(StdDuration::from_millis(800)).await;
    assert!(
        !waiting.is_finished(),
        "Dial should wait while the exporter is Available"
    );
    h.set_exporter("exp1", |s| {
        s.exporter_status = Some(ExporterStatusValue::LeaseReady)
    })
    .await;
    bounded("waiting dial", waiting)
        .await
        .expect("join")
        .expect("dial after ready");

    h.set_exporter("exp1", |s| {
        s.exporter_status = Some(ExporterStatusValue::Offline)
    })
    .await;
    assert_status(
        api.dial(call(dial("l1"), &alice)).await,
        Code::FailedPrecondition,
        "exporter is offline",
    );
    assert!(
        h.metrics_text()
            .contains("jumpstarter_controller_listen_streams 1")
    );
}

#[tokio::test]
async fn oversized_messages_are_resource_exhausted_and_health_is_serving() {
    let h = Harness::start("grpc-limits").await;
    let alice = h.client("alice").await;
    let mut api = h.controller().await;
    // Over the limit is refused; just under it is decoded (and then refused as a bad name).
    for (mib, code, text) in [
        (5, Code::ResourceExhausted, ""),
        (3, Code::InvalidArgument, "invalid lease name"),
    ] {
        let request = pb::DialRequest {
            lease_name: "x".repeat(mib * 1024 * 1024),
        };
        assert_status(api.dial(call(request, &alice)).await, code, text);
    }

    let mut health = tonic_health::pb::health_client::HealthClient::new(h.channel().await);
    // The server as a whole, then the controller service.
    for service in ["", "jumpstarter.v1.ControllerService"] {
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(
            answer.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "{service:?}"
        );
    }

    let mut audit = api.clone();
    let stream = futures::stream::iter(Vec::<pb::AuditStreamRequest>::new());
    assert_status(
        audit.audit_stream(call(stream, &alice)).await,
        Code::Unimplemented,
        "",
    );
}

#[tokio::test]
async fn idle_connections_survive_frequent_keepalive_pings() {
    let h = Harness::start("grpc-keepalive").await;
    let alice = h.client("alice").await;
    let channel = h
        .endpoint()
        .http2_keep_alive_interval(StdDuration::from_millis(100))
        .keep_alive_timeout(StdDuration::from_secs(5))
        .keep_alive_while_idle(true)
        .connect()
        .await
        .expect("connect");
    let mut api = ClientServiceClient::new(channel);
    let list = || client_pb::ListExportersRequest {
        parent: h.parent(),
        ..Default::default()
    };
    api.list_exporters(call(list(), &alice))
        .await
        .expect("first call");
    tokio::time::sleep(StdDuration::from_secs(2)).await;
    api.list_exporters(call(list(), &alice))
        .await
        .expect("call after idle pings");
}
