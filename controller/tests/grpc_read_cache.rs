//! The gRPC services read from their watch-fed copy of the namespace, against the real
//! kube-apiserver, with the services served in-process over real TLS: once the copy is
//! complete, the calls clients repeat (authentication, GetLease polling, ListExporters with
//! paging, ListLeases) send no read to the API server; a caller reads its own writes at once
//! even when the watch lags behind; an object another replica created and this one's watch
//! has not reported yet is read from the store.

use crate::support;

use support::counting::CountingStore;
use support::{Identity, LoopbackGrpc, call, created_client, created_exporter};

use std::sync::Arc;
use std::time::Duration as StdDuration;

use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use jumpstarter_controller::auth::AuthMetrics;
use jumpstarter_controller::crd::{Lease, LeaseSpec};
use jumpstarter_controller::service::{ServiceMetrics, Services, TokenSigners};
use jumpstarter_controller::settings::Settings;
use jumpstarter_controller::store::Store;
use jumpstarter_controller::store::kube::KubeStore;
use jumpstarter_proto::jumpstarter::client::v1 as client_pb;
use jumpstarter_proto::jumpstarter::client::v1::client_service_client::ClientServiceClient;
use jumpstarter_proto::jumpstarter::v1 as pb;
use jumpstarter_proto::jumpstarter::v1::controller_service_client::ControllerServiceClient;
use jumpstarter_token::SigningKey;

/// Upper bound of ordinary waits.
const WAIT: StdDuration = StdDuration::from_secs(20);

struct Harness {
    namespace: String,
    /// The services' store (counting what they read).
    store: CountingStore<KubeStore>,
    /// Writes as another replica would make them (not counted, not put into the copy).
    admin: KubeStore,
    registry: Registry,
    alice: Identity,
    grpc: LoopbackGrpc,
}

impl Harness {
    async fn start(prefix: &str) -> Harness {
        let (namespace, admin) = support::kube_namespace(prefix).await;
        let store = CountingStore::new(admin.clone());
        let (ca, cert) = support::localhost_pki("cache-test-ca", OffsetDateTime::now_utc());
        let issuer = support::token_issuer();
        let settings = Arc::new(Settings::example(
            &namespace,
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
        let alice = created_client(&admin, &issuer, &namespace, "alice").await;
        for (name, board) in [
            ("exp-a", "mock"),
            ("exp-b", "other"),
            ("exp-c", "mock"),
            ("exp-d", "mock"),
            ("exp-e", "mock"),
        ] {
            created_exporter(&admin, &issuer, &namespace, name, &[("board", board)]).await;
        }
        let grpc = LoopbackGrpc::serve(&services, &cert, &ca, CancellationToken::new()).await;
        Harness {
            namespace,
            store,
            admin,
            registry,
            alice,
            grpc,
        }
    }

    async fn channel(&self) -> Channel {
        self.grpc.endpoint(WAIT).connect().await.expect("connect")
    }

    fn parent(&self) -> String {
        format!("namespaces/{}", self.namespace)
    }

    fn lease_name(&self, name: &str) -> String {
        format!("{}/leases/{name}", self.parent())
    }

    /// Calls GetExporter until a call reads nothing from the store (the copies of Clients
    /// and Exporters are complete), at most for [`WAIT`].
    async fn warm_up(&self, api: &mut ClientServiceClient<Channel>) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let before = self.store.all_reads();
            api.get_exporter(call(
                client_pb::GetExporterRequest {
                    name: format!("{}/exporters/exp-a", self.parent()),
                    show_hidden_labels: false,
                },
                &self.alice,
            ))
            .await
            .expect("get exporter");
            if self.store.all_reads() == before {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "every GetExporter still read the store after {WAIT:?}"
            );
            tokio::time::sleep(StdDuration::from_millis(50)).await;
        }
    }

    /// The value of the sample `series` (name and labels as written), if present.
    fn metric(&self, series: &str) -> Option<f64> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("encode");
        text.lines().find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.parse().ok()
        })
    }
}

fn lease_request(parent: &str, lease_id: &str, seconds: i64) -> client_pb::CreateLeaseRequest {
    client_pb::CreateLeaseRequest {
        parent: parent.to_owned(),
        lease_id: lease_id.to_owned(),
        lease: Some(client_pb::Lease {
            selector: "board=mock".into(),
            duration: Some(prost_types::Duration { seconds, nanos: 0 }),
            ..Default::default()
        }),
    }
}

/// Every exporter `filter` selects, page by page of `page_size`; also the number of pages.
async fn list_exporters(
    h: &Harness,
    api: &mut ClientServiceClient<Channel>,
    filter: &str,
    page_size: i32,
) -> (Vec<String>, usize) {
    let mut names = Vec::new();
    let mut token = String::new();
    for pages in 1..=20 {
        let page = api
            .list_exporters(call(
                client_pb::ListExportersRequest {
                    parent: h.parent(),
                    page_size,
                    page_token: token,
                    filter: filter.into(),
                    show_hidden_labels: false,
                },
                &h.alice,
            ))
            .await
            .expect("list exporters")
            .into_inner();
        names.extend(
            page.exporters
                .into_iter()
                .map(|e| e.name.rsplit('/').next().unwrap_or_default().to_owned()),
        );
        token = page.next_page_token;
        if token.is_empty() {
            return (names, pages);
        }
    }
    panic!("ListExporters did not end within 20 pages");
}

#[tokio::test]
async fn repeated_reads_are_served_from_the_copy_not_the_api_server() {
    let h = Harness::start("cache-reads").await;
    let mut api = ClientServiceClient::new(h.channel().await);
    let mut legacy = ControllerServiceClient::new(h.channel().await);
    h.warm_up(&mut api).await;
    let created = api
        .create_lease(call(lease_request(&h.parent(), "polled", 3600), &h.alice))
        .await
        .expect("create lease")
        .into_inner();

    let before = h.store.all_reads();
    // What `jmp shell` does while it waits, and what `jmp get exporters` / `leases` do.
    for _ in 0..20 {
        let lease = api
            .get_lease(call(
                client_pb::GetLeaseRequest {
                    name: created.name.clone(),
                },
                &h.alice,
            ))
            .await
            .expect("get lease")
            .into_inner();
        assert_eq!(lease.name, created.name);
        legacy
            .get_lease(call(
                pb::GetLeaseRequest {
                    name: "polled".into(),
                },
                &h.alice,
            ))
            .await
            .expect("legacy get lease");
    }
    let (all, pages) = list_exporters(&h, &mut api, "", 2).await;
    assert_eq!(all, ["exp-a", "exp-b", "exp-c", "exp-d", "exp-e"]);
    assert_eq!(pages, 3);
    let (mock, _) = list_exporters(&h, &mut api, "board=mock", 3).await;
    assert_eq!(mock, ["exp-a", "exp-c", "exp-d", "exp-e"]);
    let (everything, pages) = list_exporters(&h, &mut api, "", 0).await;
    assert_eq!((everything.len(), pages), (5, 1));
    let leases = api
        .list_leases(call(
            client_pb::ListLeasesRequest {
                parent: h.parent(),
                page_size: 100,
                ..Default::default()
            },
            &h.alice,
        ))
        .await
        .expect("list leases")
        .into_inner();
    assert_eq!(leases.leases.len(), 1);
    let names = legacy
        .list_leases(call(pb::ListLeasesRequest {}, &h.alice))
        .await
        .expect("legacy list leases")
        .into_inner()
        .names;
    assert_eq!(names, ["polled"]);
    assert_eq!(
        h.store.all_reads(),
        before,
        "reads went to the API server: Client {}, Exporter {}, Lease {}",
        h.store.reads("Client"),
        h.store.reads("Exporter"),
        h.store.reads("Lease"),
    );
    let from_cache = h
        .metric("jumpstarter_controller_service_reads_total{kind=\"Lease\",source=\"cache\"}")
        .unwrap_or(0.0);
    assert!(
        from_cache >= 40.0,
        "Lease reads from the cache: {from_cache}"
    );

    // A page token of ours is refused when it is not one.
    let refused = api
        .list_exporters(call(
            client_pb::ListExportersRequest {
                parent: h.parent(),
                page_size: 2,
                page_token: "bm90IG91cnM".into(),
                ..Default::default()
            },
            &h.alice,
        ))
        .await
        .expect_err("bad token");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
}

#[tokio::test]
async fn a_caller_reads_its_own_writes_while_the_watch_lags() {
    let h = Harness::start("cache-own-writes").await;
    let mut api = ClientServiceClient::new(h.channel().await);
    h.warm_up(&mut api).await;
    // From here on this replica's watches report nothing.
    h.store.hold_watches(true);
    let lease_reads = h.store.reads("Lease");

    let created = api
        .create_lease(call(lease_request(&h.parent(), "mine", 3600), &h.alice))
        .await
        .expect("create lease")
        .into_inner();
    let get = |api: &mut ClientServiceClient<Channel>, name: String| {
        let mut api = api.clone();
        let request = call(client_pb::GetLeaseRequest { name }, &h.alice);
        async move { api.get_lease(request).await }
    };
    let read = get(&mut api, created.name.clone())
        .await
        .expect("own lease, read at once")
        .into_inner();
    assert_eq!(read.duration.map(|d| d.seconds), Some(3600));

    let updated = api
        .update_lease(call(
            client_pb::UpdateLeaseRequest {
                lease: Some(client_pb::Lease {
                    name: created.name.clone(),
                    duration: Some(prost_types::Duration {
                        seconds: 7200,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
                update_mask: None,
            },
            &h.alice,
        ))
        .await
        .expect("update lease")
        .into_inner();
    assert_eq!(updated.duration.map(|d| d.seconds), Some(7200));
    let read = get(&mut api, created.name.clone())
        .await
        .expect("own update, read at once")
        .into_inner();
    assert_eq!(read.duration.map(|d| d.seconds), Some(7200));
    assert_eq!(
        h.store.reads("Lease"),
        lease_reads,
        "the own writes were read from the API server, not from the copy"
    );

    // Another replica creates a lease; this replica's watch has not reported it: the
    // store answers.
    let mut theirs = Lease {
        metadata: support::object_meta(&h.namespace, "theirs", &[]),
        spec: LeaseSpec::default(),
        status: None,
    };
    theirs.spec.client_ref.name = "alice".into();
    theirs.spec.duration = Some("1h".into());
    theirs.spec.selector.match_labels = Some([("board".to_owned(), "mock".to_owned())].into());
    h.admin.create(&theirs).await.expect("create their lease");
    get(&mut api, h.lease_name("theirs"))
        .await
        .expect("a lease the copy has not seen yet is read from the store");
    assert_eq!(h.store.reads("Lease"), lease_reads + 1);

    // Once the watch catches up, the copy answers for it too.
    h.store.hold_watches(false);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let before = h.store.reads("Lease");
        get(&mut api, h.lease_name("theirs")).await.expect("theirs");
        if h.store.reads("Lease") == before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "their lease was never served from the copy"
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    // The own update survived the watch's older events.
    let read = get(&mut api, created.name.clone())
        .await
        .expect("own lease")
        .into_inner();
    assert_eq!(read.duration.map(|d| d.seconds), Some(7200));
}
