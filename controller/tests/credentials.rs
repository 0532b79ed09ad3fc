//! Credential rotation and forged tokens against the controller's gRPC port: the services
//! run in-process on 127.0.0.1 over real TLS (h2) with the real kube-apiserver as store.
//!
//! - RotateToken revokes: the token it replaced is refused with UNAUTHENTICATED on the next
//!   call, the new one works; an administrator revokes an exporter's tokens by raising its
//!   `jumpstarter.dev/token-generation` annotation.
//! - The attack matrix: `alg: none`, HS256 keyed with the public key, ES384, an exporter
//!   token used as a client (and the reverse), garbage and truncated tokens; each refused
//!   and counted under its own reason.

use crate::support;

use support::{Identity, LoopbackGrpc, assert_status, call, created_client, created_exporter};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

use jumpstarter_controller::auth::AuthMetrics;
use jumpstarter_controller::crd::{Client, Exporter};
use jumpstarter_controller::service::{ServiceMetrics, Services, TokenSigners};
use jumpstarter_controller::settings::Settings;
use jumpstarter_controller::store::Store;
use jumpstarter_controller::store::kube::KubeStore;
use jumpstarter_proto::jumpstarter::client::v1 as client_pb;
use jumpstarter_proto::jumpstarter::client::v1::client_service_client::ClientServiceClient;
use jumpstarter_proto::jumpstarter::v1 as pb;
use jumpstarter_proto::jumpstarter::v1::controller_service_client::ControllerServiceClient;
use jumpstarter_token::SigningKey;
use jumpstarter_token::internal::{Issuer, ObjectKind};

const WAIT: StdDuration = StdDuration::from_secs(20);
const GENERATION: &str = "jumpstarter.dev/token-generation";

struct Harness {
    namespace: String,
    store: KubeStore,
    issuer: Issuer,
    registry: Arc<Registry>,
    grpc: LoopbackGrpc,
}

impl Harness {
    async fn start(prefix: &str) -> Harness {
        let (namespace, store) = support::kube_namespace(prefix).await;
        let (ca, cert) = support::localhost_pki("creds-test-ca", OffsetDateTime::now_utc());
        let issuer = support::token_issuer();
        let settings = Arc::new(Settings::example(
            &namespace,
            "localhost:8082",
            "router.example.test:443",
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

    async fn channel(&self) -> Channel {
        self.grpc
            .endpoint(WAIT)
            .connect()
            .await
            .expect("connect over TLS")
    }

    async fn client(&self, name: &str) -> Identity {
        created_client(&self.store, &self.issuer, &self.namespace, name).await
    }

    async fn exporter(&self, name: &str) -> Identity {
        created_exporter(&self.store, &self.issuer, &self.namespace, name, &[]).await
    }

    fn list(&self) -> client_pb::ListExportersRequest {
        client_pb::ListExportersRequest {
            parent: format!("namespaces/{}", self.namespace),
            ..Default::default()
        }
    }

    fn rotate(&self) -> client_pb::RotateTokenRequest {
        client_pb::RotateTokenRequest {
            parent: format!("namespaces/{}", self.namespace),
        }
    }

    /// The count of refusals with `reason`.
    fn refusals(&self, reason: &str) -> u64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("encode");
        let needle = format!("jumpstarter_controller_auth_failures_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&needle))
            .map_or(0, |v| v.trim().parse().expect("count"))
    }
}

fn report() -> pb::ReportStatusRequest {
    pb::ReportStatusRequest {
        status: pb::ExporterStatus::Available as i32,
        message: Some("available".into()),
        release_lease: None,
    }
}

#[tokio::test]
async fn rotate_token_revokes_the_previous_token() {
    let h = Harness::start("creds-rotate").await;
    let alice = h.client("alice").await;
    let mut api = ClientServiceClient::new(h.channel().await);
    api.list_exporters(call(h.list(), &alice))
        .await
        .expect("the first token works");

    let rotated = api
        .rotate_token(call(h.rotate(), &alice))
        .await
        .expect("rotate")
        .into_inner();
    let second = Identity {
        token: rotated.token.clone(),
        ..alice.clone()
    };
    assert_ne!(second.token, alice.token);
    assert_status(
        api.list_exporters(call(h.list(), &alice)).await,
        Code::Unauthenticated,
        "token was revoked",
    );
    assert_eq!(h.refusals("token_revoked"), 1);
    api.list_exporters(call(h.list(), &second))
        .await
        .expect("the rotated token works");
    // The Secret holds the new token, the object the generation.
    let secret: k8s_openapi::api::core::v1::Secret = h
        .store
        .get(&h.namespace, "alice-client")
        .await
        .expect("get")
        .expect("secret");
    let stored = secret.data.expect("data")["token"].0.clone();
    assert_eq!(String::from_utf8(stored).expect("utf8"), rotated.token);
    let object: Client = h
        .store
        .get(&h.namespace, "alice")
        .await
        .expect("get")
        .expect("alice");
    assert_eq!(
        object.metadata.annotations.expect("annotations")[GENERATION],
        "1"
    );

    // Twice in the same second: still a new token, and the second one is revoked too
    // (signing is deterministic, so only the generation tells them apart).
    let third = api
        .rotate_token(call(h.rotate(), &second))
        .await
        .expect("rotate again")
        .into_inner();
    assert_ne!(third.token, second.token);
    assert_status(
        api.rotate_token(call(h.rotate(), &second)).await,
        Code::Unauthenticated,
        "token generation 1, current 2",
    );
    let third = Identity {
        token: third.token,
        ..alice
    };
    api.list_exporters(call(h.list(), &third))
        .await
        .expect("the latest token works");
    assert_eq!(h.refusals("token_revoked"), 2);
}

#[tokio::test]
async fn raising_the_generation_annotation_revokes_an_exporter() {
    let h = Harness::start("creds-revoke").await;
    let exporter = h.exporter("bench-1").await;
    let mut api = ControllerServiceClient::new(h.channel().await);
    api.report_status(call(report(), &exporter))
        .await
        .expect("the exporter's token works");
    let mut object: Exporter = h
        .store
        .get(&h.namespace, "bench-1")
        .await
        .expect("get")
        .expect("exporter");
    object
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(GENERATION.into(), "1".into());
    h.store.replace(&object).await.expect("annotate");
    // Callers are authenticated against the controller's watch-fed copy: the revocation
    // holds as soon as the watch reports the change.
    let deadline = tokio::time::Instant::now() + WAIT;
    let refused = loop {
        let result = api.report_status(call(report(), &exporter)).await;
        if result.is_err() || tokio::time::Instant::now() >= deadline {
            break result;
        }
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    };
    assert_status(refused, Code::Unauthenticated, "token was revoked");
    let uid = object.metadata.uid.clone().expect("uid");
    let subject = jumpstarter_token::internal::Subject {
        kind: ObjectKind::Exporter,
        namespace: h.namespace.clone(),
        name: "bench-1".into(),
        uid,
    };
    let renewed = Identity {
        token: h
            .issuer
            .issue_generation(&subject, 1, OffsetDateTime::now_utc())
            .expect("issue")
            .0,
        ..exporter
    };
    api.report_status(call(report(), &renewed))
        .await
        .expect("a token of the new generation works");
}

/// A compact JWS with `header`, `genuine`'s claims and `signature`.
fn forge(header: serde_json::Value, genuine: &str, signature: &[u8]) -> String {
    let payload = genuine.split('.').nth(1).expect("payload");
    format!(
        "{}.{payload}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

#[tokio::test]
async fn forged_and_misused_tokens_are_refused_and_counted() {
    let h = Harness::start("creds-attacks").await;
    let alice = h.client("alice").await;
    let exporter = h.exporter("bench-1").await;
    let mut clients = ClientServiceClient::new(h.channel().await);
    let mut controller = ControllerServiceClient::new(h.channel().await);

    let claims: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(alice.token.split('.').nth(1).expect("payload"))
            .expect("base64"),
    )
    .expect("json");
    let public_pem = h.issuer.key.verifying_key().to_public_pem();
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(public_pem.as_bytes()).expect("hmac"),
    )
    .expect("hs256");
    let es384 = forge(
        serde_json::json!({"alg": "ES384", "typ": "JWT"}),
        &alice.token,
        &[7u8; 96],
    );
    let none = forge(serde_json::json!({"alg": "none"}), &alice.token, b"");
    // Ten characters off the 86 of the signature leave valid base64 of a short signature.
    let truncated = alice.token[..alice.token.len() - 10].to_owned();
    let with = |token: &str| Identity {
        token: token.to_owned(),
        ..alice.clone()
    };

    #[rustfmt::skip]
    let refused = [
        ("alg none", with(&none), Code::Unknown, "token algorithm \"none\" is not accepted", "token_bad_algorithm"),
        ("HS256 with the public key", with(&hs256), Code::Unknown, "\"HS256\" is not accepted", "token_bad_algorithm"),
        ("ES384", with(&es384), Code::Unknown, "\"ES384\" is not accepted", "token_bad_algorithm"),
        ("truncated", with(&truncated), Code::Unknown, "signature is invalid", "token_bad_signature"),
        ("garbage", with("garbage"), Code::Unknown, "malformed token", "token_malformed"),
        // An exporter's token, presented as the client alice.
        ("exporter as client", with(&exporter.token), Code::PermissionDenied, "permission denied for client", "permission_denied"),
    ];
    for (what, identity, code, text, reason) in refused {
        let before = h.refusals(reason);
        let result = clients.list_exporters(call(h.list(), &identity)).await;
        let status = result.expect_err(what);
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(status.message().contains(text), "{what}: {status:?}");
        assert_eq!(h.refusals(reason), before + 1, "{what} counted as {reason}");
    }
    // An exporter calling ClientService with its own identity: the kind does not fit.
    assert_status(
        clients.list_exporters(call(h.list(), &exporter)).await,
        Code::InvalidArgument,
        "object kind mismatch",
    );
    // A client's token presented as the exporter bench-1.
    let client_as_exporter = Identity {
        token: alice.token.clone(),
        ..exporter.clone()
    };
    assert_status(
        controller
            .report_status(call(report(), &client_as_exporter))
            .await,
        Code::PermissionDenied,
        "permission denied for exporter",
    );
    assert!(h.refusals("kind_mismatch") >= 1);
    // The genuine tokens still work on the same connections.
    clients
        .list_exporters(call(h.list(), &alice))
        .await
        .expect("alice");
    controller
        .report_status(call(report(), &exporter))
        .await
        .expect("exporter");
}
