//! `jumpstarter.quic.v1.LeaseCertificateService` against the real kube-apiserver: the
//! controller's gRPC port runs in-process on 127.0.0.1:0 over real TLS (h2), and the
//! parties of a lease ask for certificates with CSRs whose keys stay in the test.
//!
//! Each test works in its own namespace. The reconcile loop does not run here: the tests
//! write the lease status the loop would write.

use crate::support;

use support::{Identity, LoopbackGrpc, assert_status};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use k8s_openapi::api::core::v1::LocalObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::api::ObjectMeta;
use prometheus_client::registry::Registry;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use jumpstarter_certs::{Expectation, LeaseIdentity, Role, generate_csr, verify_lease_cert};
use jumpstarter_controller::auth::AuthMetrics;
use jumpstarter_controller::crd::{self, Client, ClientSpec, Exporter, ExporterSpec, Lease};
use jumpstarter_controller::service::{ServiceMetrics, Services, TokenSigners};
use jumpstarter_controller::settings::{RouterEntry, Settings};
use jumpstarter_controller::store::Store;
use jumpstarter_controller::store::kube::KubeStore;
use jumpstarter_proto::jumpstarter::quic::v1 as pb;
use jumpstarter_proto::jumpstarter::quic::v1::lease_certificate_service_client::LeaseCertificateServiceClient;
use jumpstarter_token::SigningKey;
use jumpstarter_token::internal::{Issuer, ObjectKind};

/// Upper bound of every wait in these tests.
const WAIT: StdDuration = StdDuration::from_secs(20);
const QUIC_ENDPOINT: &str = "router.example.test:4433";
const MAX_VALIDITY: Duration = Duration::minutes(30);

struct Harness {
    namespace: String,
    store: KubeStore,
    issuer: Issuer,
    grpc: LoopbackGrpc,
}

/// How the test lease's spec bounds it.
enum Window {
    /// `spec.endTime` this far from now.
    EndsIn(Duration),
    /// `spec.duration`, counted from `status.beginTime` (now).
    Lasts(&'static str),
}

/// The lease status the test writes.
enum Assignment {
    None,
    To(&'static str),
    EndedWith(&'static str),
}

impl Harness {
    async fn start(prefix: &str) -> Harness {
        let (namespace, store) = support::kube_namespace(prefix).await;
        let (ca, cert) = support::localhost_pki("lease-cert-test-ca", OffsetDateTime::now_utc());
        let issuer = support::token_issuer();
        let mut settings = Settings::example(&namespace, "localhost:8082", "router:443");
        settings.routers = vec![RouterEntry {
            name: "default".into(),
            endpoint: "router.example.test:443".into(),
            labels: BTreeMap::new(),
            quic_endpoint: Some(QUIC_ENDPOINT.into()),
        }];
        settings.lease_cert_max_validity = MAX_VALIDITY;
        let mut registry = Registry::default();
        let shutdown = CancellationToken::new();
        let lease_ca = Arc::new(ca);
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
        )
        .with_lease_ca(lease_ca.clone());
        Harness {
            namespace,
            store,
            issuer,
            grpc: LoopbackGrpc::serve(&services, &cert, &lease_ca, shutdown).await,
        }
    }

    async fn service(&self) -> LeaseCertificateServiceClient<Channel> {
        let channel = self
            .grpc
            .endpoint(WAIT)
            .connect()
            .await
            .expect("connect over TLS");
        LeaseCertificateServiceClient::new(channel)
    }

    fn meta(&self, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(self.namespace.clone()),
            ..ObjectMeta::default()
        }
    }

    fn identity(&self, kind: ObjectKind, name: &str, uid: String) -> Identity {
        Identity::issued(&self.issuer, kind, &self.namespace, name, &uid)
    }

    async fn client(&self, name: &str) -> Identity {
        let created = self
            .store
            .create(&Client {
                metadata: self.meta(name),
                spec: ClientSpec::default(),
                status: None,
            })
            .await
            .expect("create client");
        self.identity(ObjectKind::Client, name, created.metadata.uid.expect("uid"))
    }

    async fn exporter(&self, name: &str) -> Identity {
        let created = self
            .store
            .create(&Exporter {
                metadata: self.meta(name),
                spec: ExporterSpec::default(),
                status: None,
            })
            .await
            .expect("create exporter");
        self.identity(
            ObjectKind::Exporter,
            name,
            created.metadata.uid.expect("uid"),
        )
    }

    /// Creates a lease of `client` and writes the status the reconcile loop would; returns
    /// the lease's UID.
    async fn lease(
        &self,
        name: &str,
        client: &str,
        window: Window,
        assignment: Assignment,
    ) -> String {
        let mut spec = crd::LeaseSpec {
            client_ref: LocalObjectReference {
                name: client.into(),
            },
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([("board".to_owned(), "mock".to_owned())])),
                match_expressions: None,
            },
            ..crd::LeaseSpec::default()
        };
        match window {
            Window::EndsIn(span) => spec.end_time = Some(time(OffsetDateTime::now_utc() + span)),
            Window::Lasts(duration) => spec.duration = Some(duration.into()),
        }
        let mut created = self
            .store
            .create(&Lease {
                metadata: self.meta(name),
                spec,
                status: None,
            })
            .await
            .expect("create lease");
        let (exporter, ended) = match assignment {
            Assignment::None => return created.metadata.uid.expect("uid"),
            Assignment::To(exporter) => (exporter, false),
            Assignment::EndedWith(exporter) => (exporter, true),
        };
        created.status = Some(crd::LeaseStatus {
            begin_time: Some(time(OffsetDateTime::now_utc())),
            end_time: ended.then(|| time(OffsetDateTime::now_utc())),
            exporter_ref: Some(LocalObjectReference {
                name: exporter.into(),
            }),
            ended,
            ..crd::LeaseStatus::default()
        });
        let stored = self
            .store
            .replace_status(&created)
            .await
            .expect("lease status");
        stored.metadata.uid.expect("uid")
    }
}

fn time(t: OffsetDateTime) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(t.unix_timestamp()).expect("in range"))
}

fn call(lease: &str, csr: Vec<u8>, id: &Identity) -> Request<pb::IssueLeaseCertificateRequest> {
    support::call(
        pb::IssueLeaseCertificateRequest {
            lease_name: lease.into(),
            csr,
        },
        id,
    )
}

async fn issue(
    service: &mut LeaseCertificateServiceClient<Channel>,
    request: Request<pb::IssueLeaseCertificateRequest>,
) -> Result<pb::IssueLeaseCertificateResponse, Status> {
    tokio::time::timeout(WAIT, service.issue_lease_certificate(request))
        .await
        .expect("call finishes in time")
        .map(tonic::Response::into_inner)
}

fn fresh_csr() -> Vec<u8> {
    generate_csr("requester").expect("csr").csr_der
}

/// The leaf and the chain of a response, checked against the CA it names.
fn verified(response: &pb::IssueLeaseCertificateResponse, role: Role) -> LeaseIdentity {
    let leaf = CertificateDer::from_pem_slice(response.certificate_pem.as_bytes()).expect("leaf");
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(response.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("chain");
    assert_eq!(chain.len(), 2, "leaf and CA");
    assert_eq!(chain[0], leaf);
    let ca = CertificateDer::from_pem_slice(response.ca_pem.as_bytes()).expect("ca");
    let identity = verify_lease_cert(
        &[ca],
        &chain,
        OffsetDateTime::now_utc(),
        &Expectation {
            role: Some(role),
            ..Expectation::default()
        },
    )
    .expect("the chain verifies against the CA");
    assert_eq!(
        LeaseIdentity::from_cert_der(&leaf).expect("identity"),
        identity
    );
    assert_eq!(response.role, role.as_str());
    assert_eq!(response.router_quic_endpoint, QUIC_ENDPOINT);
    identity
}

fn not_after(response: &pb::IssueLeaseCertificateResponse) -> OffsetDateTime {
    let seconds = response.not_after.as_ref().expect("not_after").seconds;
    OffsetDateTime::from_unix_timestamp(seconds).expect("in range")
}

#[tokio::test]
async fn the_parties_of_a_lease_get_certificates_for_their_role() {
    let h = Harness::start("lease-cert-parties").await;
    let alice = h.client("alice").await;
    let board = h.exporter("board").await;
    let end = OffsetDateTime::now_utc() + Duration::minutes(10);
    let uid = h
        .lease(
            "l1",
            "alice",
            Window::EndsIn(Duration::minutes(10)),
            Assignment::To("board"),
        )
        .await;
    let mut service = h.service().await;

    let before = OffsetDateTime::now_utc();
    let response = issue(&mut service, call("l1", fresh_csr(), &alice))
        .await
        .expect("the holder gets a certificate");
    let identity = verified(&response, Role::Client);
    assert_eq!(
        identity,
        LeaseIdentity {
            namespace: h.namespace.clone(),
            lease_name: "l1".into(),
            lease_uid: uid.clone(),
            role: Role::Client,
            holder: "alice".into(),
        }
    );
    // spec.endTime is stored in whole seconds: the certificate ends with the lease.
    let lease_end = OffsetDateTime::from_unix_timestamp(end.unix_timestamp()).expect("range");
    assert!(
        not_after(&response) <= lease_end,
        "{:?}",
        response.not_after
    );
    assert!(not_after(&response) > before + Duration::minutes(9));

    // The exporter sends its CSR as PEM.
    let csr_pem = generate_csr("board").expect("csr").csr_pem().into_bytes();
    let response = issue(&mut service, call("l1", csr_pem, &board))
        .await
        .expect("the assigned exporter gets a certificate");
    let identity = verified(&response, Role::Exporter);
    assert_eq!(identity.holder, "board");
    assert_eq!(identity.lease_uid, uid);
    assert!(not_after(&response) <= lease_end);

    // A long lease: the configured maximum bounds the certificate.
    h.lease(
        "l2",
        "alice",
        Window::Lasts("5h0m0s"),
        Assignment::To("board"),
    )
    .await;
    let before = OffsetDateTime::now_utc();
    let response = issue(&mut service, call("l2", fresh_csr(), &alice))
        .await
        .expect("certificate for the long lease");
    verified(&response, Role::Client);
    let after = OffsetDateTime::now_utc();
    assert!(not_after(&response) <= after + MAX_VALIDITY);
    assert!(not_after(&response) >= before + MAX_VALIDITY - Duration::seconds(1));
}

#[tokio::test]
async fn requests_outside_an_active_lease_or_with_bad_csrs_are_refused() {
    let h = Harness::start("lease-cert-refusals").await;
    let alice = h.client("alice").await;
    let bob = h.client("bob").await;
    let board = h.exporter("board").await;
    let other = h.exporter("other").await;
    let hour = Window::EndsIn(Duration::hours(1));
    h.lease("l1", "alice", hour, Assignment::To("board")).await;
    h.lease("queued", "alice", Window::Lasts("1h0m0s"), Assignment::None)
        .await;
    h.lease(
        "done",
        "alice",
        Window::Lasts("1h0m0s"),
        Assignment::EndedWith("board"),
    )
    .await;
    let mut service = h.service().await;

    assert_status(
        issue(&mut service, call("l1", fresh_csr(), &bob)).await,
        Code::PermissionDenied,
        "not a party to lease l1",
    );
    assert_status(
        issue(&mut service, call("l1", fresh_csr(), &other)).await,
        Code::PermissionDenied,
        "not a party to lease l1",
    );
    assert_status(
        issue(&mut service, call("queued", fresh_csr(), &alice)).await,
        Code::FailedPrecondition,
        "lease queued is not active (not assigned yet)",
    );
    // No exporter is assigned, so no exporter is a party either.
    assert_status(
        issue(&mut service, call("queued", fresh_csr(), &board)).await,
        Code::PermissionDenied,
        "not a party to lease queued",
    );
    assert_status(
        issue(&mut service, call("done", fresh_csr(), &alice)).await,
        Code::FailedPrecondition,
        "lease done is not active (ended)",
    );
    assert_status(
        issue(&mut service, call("missing", fresh_csr(), &alice)).await,
        Code::NotFound,
        "not found",
    );
    assert_status(
        issue(&mut service, call("l1", b"not a CSR".to_vec(), &alice)).await,
        Code::InvalidArgument,
        "cannot be parsed",
    );
    let mut tampered = fresh_csr();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    assert_status(
        issue(&mut service, call("l1", tampered, &alice)).await,
        Code::InvalidArgument,
        "signature does not verify",
    );
    // A caller that is not authenticated learns nothing about the lease.
    let mut forged = call("l1", fresh_csr(), &alice);
    forged
        .metadata_mut()
        .insert("authorization", "Bearer nonsense".parse().expect("ascii"));
    let status = issue(&mut service, forged).await.expect_err("refused");
    assert_eq!(status.code(), Code::Unknown, "{status:?}");

    // The refusals did not disturb the service.
    let response = issue(&mut service, call("l1", fresh_csr(), &alice))
        .await
        .expect("the holder still gets a certificate");
    verified(&response, Role::Client);
}
