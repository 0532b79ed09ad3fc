//! Controller replicas against a real kube-apiserver: each keeps a replica record (a
//! coordination Lease) and sees the others'; a client's Dial on one replica reaches the
//! exporter's Listen stream on another over the peer channel (real TLS on loopback, peer
//! tokens); nobody listening anywhere is UNAVAILABLE with the 0.9.0 text; PeerService takes
//! peer tokens only and peer tokens are no client credentials; a live but unreachable peer
//! costs a counted call failure, not the Dial; a replica's record goes at a graceful stop,
//! and a replica killed with SIGKILL stops being live when its record expires.

use crate::support;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease as CoordinationLease;
use k8s_openapi::api::core::v1::LocalObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request};

use jumpstarter_controller::crd::vocabulary;
use jumpstarter_controller::crd::{self, Exporter, ExporterStatusValue, Lease, LeaseStatus};
use jumpstarter_controller::keys::{self, Keys};
use jumpstarter_controller::peer::metrics::{FailureLabels, OutcomeLabels};
use jumpstarter_controller::replica::record::{self, RecordConfig};
use jumpstarter_controller::replica::{
    ENDPOINT_ANNOTATION, INCARNATION_ANNOTATION, ReplicaId, ReplicaRegistry, record_name,
};
use jumpstarter_controller::runtime::{self, ControllerMetrics, GrpcServer};
use jumpstarter_controller::server::Readiness;
use jumpstarter_controller::settings::Settings;
use jumpstarter_controller::store::Store;
use jumpstarter_controller::store::kube::KubeStore;
use jumpstarter_proto::jumpstarter::peer::v1::peer_service_client::PeerServiceClient;
use jumpstarter_proto::jumpstarter::peer::v1::{OfferRequest, Outcome};
use jumpstarter_proto::jumpstarter::v1 as pb;
use jumpstarter_proto::jumpstarter::v1::controller_service_client::ControllerServiceClient;
use jumpstarter_testenv::TestEnv;
use jumpstarter_token::internal::ObjectKind;
use support::{Identity, assert_status, call, created_client, created_exporter, object_meta};

/// Bound of every wait (records seen, streams answered, processes started).
const WAIT: Duration = Duration::from_secs(30);
/// Bound of the wait for a killed replica's record to expire: its validity (20 s) plus
/// the grace (5 s) plus one renewal interval, with room to spare.
const EXPIRY_WAIT: Duration = Duration::from_secs(45);
const ROUTER_ENDPOINT: &str = "router.lab.example:443";

async fn bounded<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {WAIT:?}"))
}

/// Polls `check` every 100 ms until it holds, for at most `limit`.
async fn eventually(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released for the server to take).
fn free_port() -> u16 {
    StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// One in-process replica: the real gRPC server wiring and the real record keeper.
struct Replica {
    port: u16,
    metrics: ControllerMetrics,
    registry: Arc<ReplicaRegistry>,
    record: Option<JoinHandle<()>>,
    shutdown: CancellationToken,
}

impl Replica {
    async fn start(store: &KubeStore, settings: &Arc<Settings>, identity: &str) -> Replica {
        let port = free_port();
        let keys: Arc<Keys> = Arc::new(
            keys::bootstrap(store, settings, OffsetDateTime::now_utc())
                .await
                .expect("keys"),
        );
        let registry = ReplicaRegistry::new(ReplicaId::new(identity));
        let shutdown = CancellationToken::new();
        let record = record::spawn(
            store.clone(),
            registry.clone(),
            RecordConfig::new(&settings.namespace, Some(format!("127.0.0.1:{port}")), None),
            shutdown.clone(),
        );
        let metrics = ControllerMetrics::register(&mut Registry::default());
        runtime::spawn_grpc(
            GrpcServer {
                store: store.clone(),
                settings: settings.clone(),
                keys,
                tls_sans: Vec::new(),
                listen: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                quic_listen: None,
                quic_transport: jumpstarter_tunnel::QuicTransport::default(),
                limits: Default::default(),
                replicas: registry.clone(),
                login: None,
                sessions: Vec::new(),
                dashboard: None,
            },
            &metrics,
            &Arc::new(Readiness::default()),
            &shutdown,
        )
        .await
        .expect("gRPC server");
        Replica {
            port,
            metrics,
            registry,
            record: Some(record),
            shutdown,
        }
    }

    /// Stops it gracefully and waits until its record is handled.
    async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(record) = self.record.take() {
            bounded("record deletion", record)
                .await
                .expect("record task");
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A TLS channel to a replica's port, trusting the controller CA, expecting `localhost`.
async fn channel(port: u16, ca_pem: &str) -> Channel {
    let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .expect("endpoint")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca_pem))
                .domain_name("localhost"),
        )
        .expect("tls")
        .connect_timeout(Duration::from_secs(5));
    bounded("connect", endpoint.connect())
        .await
        .expect("connect")
}

async fn active_lease(
    store: &KubeStore,
    namespace: &str,
    name: &str,
    client: &str,
    exporter: &str,
) {
    let lease = Lease {
        metadata: object_meta(namespace, name, &[]),
        spec: crd::LeaseSpec {
            client_ref: LocalObjectReference {
                name: client.into(),
            },
            duration: Some("1h0m0s".into()),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([("board".to_owned(), "mock".to_owned())])),
                match_expressions: None,
            },
            exporter_ref: Some(LocalObjectReference {
                name: exporter.into(),
            }),
            ..crd::LeaseSpec::default()
        },
        status: None,
    };
    let mut created = store.create(&lease).await.expect("create lease");
    created.status = Some(LeaseStatus {
        begin_time: Some(vocabulary::now_time()),
        exporter_ref: Some(LocalObjectReference {
            name: exporter.into(),
        }),
        ended: false,
        ..LeaseStatus::default()
    });
    store.replace_status(&created).await.expect("lease status");
    let mut stored: Exporter = store
        .get(namespace, exporter)
        .await
        .expect("get exporter")
        .expect("exporter");
    let status = stored.status.get_or_insert_with(Default::default);
    status.lease_ref = Some(LocalObjectReference { name: name.into() });
    status.exporter_status = Some(ExporterStatusValue::LeaseReady);
    store
        .replace_status(&stored)
        .await
        .expect("exporter status");
}

fn dial(lease: &str) -> pb::DialRequest {
    pb::DialRequest {
        lease_name: lease.into(),
    }
}

/// A peer-service request with `token` as bearer (or none).
fn offer(namespace: &str, token: Option<&str>) -> Request<OfferRequest> {
    let mut request = Request::new(OfferRequest {
        lease: format!("{namespace}/l1"),
        router_endpoint: ROUTER_ENDPOINT.into(),
        router_token: "t".into(),
    });
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    request
}

#[tokio::test]
async fn a_dial_on_one_replica_reaches_the_listen_on_another() {
    let (namespace, store) = support::kube_namespace("peers").await;
    let port_hint = free_port();
    let settings = Arc::new(Settings::example(
        &namespace,
        &format!("localhost:{port_hint}"),
        ROUTER_ENDPOINT,
    ));
    let mut a = Replica::start(&store, &settings, "replica-a").await;
    let mut b = Replica::start(&store, &settings, "replica-b").await;
    let mut c = Replica::start(&store, &settings, "replica-c").await;
    for replica in [&a, &b, &c] {
        let registry = replica.registry.clone();
        eventually("every replica sees the two others", WAIT, async || {
            registry.live_peers(OffsetDateTime::now_utc()).len() == 2
        })
        .await;
    }
    let keys = keys::bootstrap(&store, &settings, OffsetDateTime::now_utc())
        .await
        .expect("keys");
    let issuer = keys.tokens.current().issuer.clone();
    let ca_pem = keys.ca.cert_pem().to_owned();
    let alice = created_client(&store, &issuer, &namespace, "alice").await;
    let exp = created_exporter(&store, &issuer, &namespace, "exp1", &[("board", "mock")]).await;
    active_lease(&store, &namespace, "l1", "alice", "exp1").await;

    // Nobody listens anywhere: UNAVAILABLE with the 0.9.0 text, also after asking peers.
    let mut on_b = ControllerServiceClient::new(channel(b.port, &ca_pem).await);
    assert_status(
        on_b.dial(call(dial("l1"), &alice)).await,
        Code::Unavailable,
        "exporter is not listening on lease l1",
    );

    // The exporter listens on A; the client dials on B, then on C.
    let mut on_a = ControllerServiceClient::new(channel(a.port, &ca_pem).await);
    let mut listen = on_a
        .listen(call(
            pb::ListenRequest {
                lease_name: "l1".into(),
            },
            &exp,
        ))
        .await
        .expect("listen on A")
        .into_inner();
    let router_keys = [keys.tokens.current().router_key.verifying_key().clone()];
    let mut on_c = ControllerServiceClient::new(channel(c.port, &ca_pem).await);
    for (via, client) in [("B", &mut on_b), ("C", &mut on_c)] {
        let dialed = bounded("dial", client.dial(call(dial("l1"), &alice)))
            .await
            .unwrap_or_else(|e| panic!("dial via {via}: {e:?}"))
            .into_inner();
        assert_eq!(dialed.router_endpoint, ROUTER_ENDPOINT);
        let heard = bounded("listen", listen.message())
            .await
            .expect("listen stream")
            .expect("a message");
        assert_eq!(heard.router_endpoint, ROUTER_ENDPOINT);
        let now = OffsetDateTime::now_utc();
        let client_claims =
            jumpstarter_token::router::verify(&router_keys, &dialed.router_token, now)
                .expect("client token");
        let exporter_claims =
            jumpstarter_token::router::verify(&router_keys, &heard.router_token, now)
                .expect("exporter token");
        assert_eq!(
            client_claims.sub, exporter_claims.sub,
            "the exporter on A got the token of the Dial on {via}"
        );
    }

    // Counted where they happened: B and C forwarded one Dial each, A queued both.
    let count = |family: &Family<OutcomeLabels, Counter>, outcome: &'static str| {
        family.get_or_create(&OutcomeLabels { outcome }).get()
    };
    for replica in [&b, &c] {
        assert_eq!(count(&replica.metrics.peer.forwarded, "queued"), 1);
    }
    assert_eq!(count(&a.metrics.peer.received, "queued"), 2);
    assert_eq!(count(&b.metrics.peer.forwarded, "not_listening"), 1);

    // PeerService takes peer tokens only.
    let mut peer_on_a = PeerServiceClient::new(channel(a.port, &ca_pem).await);
    for (what, token) in [
        ("no token", None),
        ("a client credential", Some(alice.token.as_str())),
        ("an exporter credential", Some(exp.token.as_str())),
    ] {
        let refused = peer_on_a.offer(offer(&namespace, token)).await;
        let status = refused.expect_err(what);
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    }
    let peer_token = jumpstarter_token::peer::mint(
        &issuer.key,
        &issuer.issuer,
        "replica-test/00000000",
        time::Duration::minutes(2),
        OffsetDateTime::now_utc(),
    )
    .expect("peer token");
    let accepted = peer_on_a
        .offer(offer(&namespace, Some(&peer_token)))
        .await
        .expect("a peer token is accepted")
        .into_inner();
    assert_eq!(accepted.outcome(), Outcome::Queued);
    let heard = bounded("listen", listen.message())
        .await
        .expect("listen stream")
        .expect("the offer");
    assert_eq!(heard.router_token, "t");
    // And a peer token is no client credential.
    let as_client = Identity {
        token: peer_token.clone(),
        ..alice.clone()
    };
    let refused = on_a.dial(call(dial("l1"), &as_client)).await;
    let status = refused.expect_err("a peer token as client credential");
    assert!(
        status.message().contains("audience"),
        "refused for its audience: {status:?}"
    );
    assert_eq!(as_client.kind, ObjectKind::Client);

    // The listener gone: UNAVAILABLE again, from every replica.
    drop(listen);
    eventually("the Listen on A has ended", WAIT, async || {
        matches!(
            on_b.dial(call(dial("l1"), &alice)).await,
            Err(status) if status.code() == Code::Unavailable
        )
    })
    .await;

    // A graceful stop deletes C's record; the others stop counting C.
    let c_record = record_name("replica-c");
    c.stop().await;
    let gone: Option<CoordinationLease> = store.get(&namespace, &c_record).await.expect("get");
    assert!(gone.is_none(), "C's record is deleted at its stop");
    let c_text = c.registry.me().text();
    for replica in [&a, &b] {
        let registry = replica.registry.clone();
        eventually("C no longer live", WAIT, async || {
            let now = OffsetDateTime::now_utc();
            registry.live_peers(now).len() == 1 && !registry.is_live(&c_text, now)
        })
        .await;
    }

    // A peer that is live by its record but unreachable (a pod gone without its record
    // expiring yet): it counts as a call failure, and the others still decide.
    let ghost_port = free_port();
    store
        .create(&ghost_record(
            &namespace,
            &format!("127.0.0.1:{ghost_port}"),
        ))
        .await
        .expect("ghost record");
    let registry = b.registry.clone();
    eventually("B sees the ghost", WAIT, async || {
        registry.live_peers(OffsetDateTime::now_utc()).len() == 2
    })
    .await;
    assert_status(
        bounded("dial", on_b.dial(call(dial("l1"), &alice))).await,
        Code::Unavailable,
        "exporter is not listening on lease l1",
    );
    let failures = b
        .metrics
        .peer
        .call_failures
        .get_or_create(&FailureLabels {
            reason: "unreachable",
        })
        .get();
    assert!(failures >= 1, "the unreachable peer is counted");
    let mut listen = on_a
        .listen(call(
            pb::ListenRequest {
                lease_name: "l1".into(),
            },
            &exp,
        ))
        .await
        .expect("listen on A")
        .into_inner();
    bounded("dial", on_b.dial(call(dial("l1"), &alice)))
        .await
        .expect("A queues it whatever the ghost does");
    bounded("listen", listen.message())
        .await
        .expect("listen stream")
        .expect("a message");

    a.stop().await;
    b.stop().await;
}

/// The record of a replica that is live by its record (renewed now) but whose endpoint
/// nobody serves.
fn ghost_record(namespace: &str, endpoint: &str) -> CoordinationLease {
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    let mut meta = object_meta(namespace, &record_name("ghost"), &[]);
    meta.annotations = Some(BTreeMap::from([
        (INCARNATION_ANNOTATION.to_owned(), "0000dead".to_owned()),
        (ENDPOINT_ANNOTATION.to_owned(), endpoint.to_owned()),
    ]));
    CoordinationLease {
        metadata: meta,
        spec: Some(LeaseSpec {
            holder_identity: Some("ghost".into()),
            lease_duration_seconds: Some(20),
            renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            ..LeaseSpec::default()
        }),
    }
}

/// A `jumpstarter-controller run` process of this test, killed (by its PID) if the test
/// ends early.
struct Process {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Process {
    fn spawn(namespace: &str, identity: &str, log: PathBuf) -> Process {
        let env = TestEnv::shared();
        let port = free_port();
        let out = std::fs::File::create(&log).expect("log");
        let err = out.try_clone().expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_jumpstarter-controller"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(&env.admin_kubeconfig)
            .args(["--namespace", namespace])
            .args(["--grpc-listen", &format!("127.0.0.1:{port}")])
            .args(["--grpc-endpoint", &format!("localhost:{port}")])
            .args(["--peer-endpoint", &format!("127.0.0.1:{port}")])
            .args(["--probe-listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(["--identity", identity])
            .args(["--leader-elect"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn the controller");
        Process { child, log, port }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
    }

    async fn exited(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "still running:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The replica text (`identity/incarnation`) of `identity`'s record, once it exists.
async fn recorded(
    store: &KubeStore,
    namespace: &str,
    identity: &str,
    process: &mut Process,
) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let record: Option<CoordinationLease> = store
            .get(namespace, &record_name(identity))
            .await
            .expect("get record");
        if let Some(incarnation) = record
            .and_then(|r| r.metadata.annotations)
            .and_then(|a| a.get(INCARNATION_ANNOTATION).cloned())
        {
            return format!("{identity}/{incarnation}");
        }
        if let Some(status) = process.child.try_wait().expect("wait") {
            panic!("controller exited ({status}):\n{}", process.log());
        }
        assert!(
            Instant::now() < deadline,
            "no record of {identity}:\n{}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_stopped_replica_deletes_its_record_and_a_killed_one_expires() {
    let (namespace, store) = support::kube_namespace("peers-kill").await;
    let logs = tempfile::tempdir().expect("log dir");
    let mut stopped = Process::spawn(&namespace, "graceful", logs.path().join("graceful.log"));
    let mut killed = Process::spawn(&namespace, "killed", logs.path().join("killed.log"));
    let graceful_text = recorded(&store, &namespace, "graceful", &mut stopped).await;
    let killed_text = recorded(&store, &namespace, "killed", &mut killed).await;

    // An observer replica sees both, with their peer endpoints.
    let observer = ReplicaRegistry::new(ReplicaId::new("observer"));
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let observer_record = record::spawn(
        store.clone(),
        observer.clone(),
        RecordConfig::new(&namespace, None, None),
        shutdown.clone(),
    );
    let expected: Vec<String> = {
        let mut endpoints = vec![
            format!("127.0.0.1:{}", stopped.port),
            format!("127.0.0.1:{}", killed.port),
        ];
        endpoints.sort();
        endpoints
    };
    eventually("the observer sees both processes", WAIT, async || {
        let now = OffsetDateTime::now_utc();
        let mut endpoints: Vec<String> = observer
            .live_peers(now)
            .into_iter()
            .map(|p| p.endpoint)
            .collect();
        endpoints.sort();
        endpoints == expected && observer.is_live(&killed_text, now)
    })
    .await;

    // SIGTERM: the record is deleted before the process exits.
    stopped.signal("-TERM");
    let status = stopped.exited().await;
    assert!(status.success(), "{status}\n{}", stopped.log());
    let record: Option<CoordinationLease> = store
        .get(&namespace, &record_name("graceful"))
        .await
        .expect("get");
    assert!(record.is_none(), "record left behind:\n{}", stopped.log());
    eventually("the stopped replica is not live", WAIT, async || {
        !observer.is_live(&graceful_text, OffsetDateTime::now_utc())
    })
    .await;

    // SIGKILL: the record stays, and stops counting when it expires.
    killed.signal("-KILL");
    killed.exited().await;
    let record: Option<CoordinationLease> = store
        .get(&namespace, &record_name("killed"))
        .await
        .expect("get");
    assert!(
        record.is_some(),
        "a killed replica cannot delete its record"
    );
    assert!(
        observer.is_live(&killed_text, OffsetDateTime::now_utc()),
        "live until the record expires"
    );
    let next = observer.next_expiry(OffsetDateTime::now_utc());
    assert!(next.is_some(), "the observer knows when to look again");
    eventually(
        "the killed replica's record expires",
        EXPIRY_WAIT,
        async || !observer.is_live(&killed_text, OffsetDateTime::now_utc()),
    )
    .await;
    assert!(observer.live_peers(OffsetDateTime::now_utc()).is_empty());
    shutdown.cancel();
    bounded("observer record", observer_record)
        .await
        .expect("observer task");
}
