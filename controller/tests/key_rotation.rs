//! Token signing keys rotate without a restart: a running controller (services over real
//! TLS on loopback, the real kube-apiserver as store, the key follower polling the keys
//! Secret) accepts tokens of a new key once the Secret names it, keeps accepting the old
//! key's while it is listed among the verify keys, refuses them once it is removed, and
//! keeps its keys when the Secret is broken. The routers' ConfigMap follows.

use crate::support;

use support::{Identity, LoopbackGrpc, call};

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::ObjectMeta;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

use jumpstarter_controller::auth::AuthMetrics;
use jumpstarter_controller::crd::{Client, ClientSpec};
use jumpstarter_controller::keys::{self, refresh};
use jumpstarter_controller::service::{ServiceMetrics, Services};
use jumpstarter_controller::settings::Settings;
use jumpstarter_controller::store::Store;
use jumpstarter_controller::store::kube::KubeStore;
use jumpstarter_proto::jumpstarter::client::v1 as client_pb;
use jumpstarter_proto::jumpstarter::client::v1::client_service_client::ClientServiceClient;
use jumpstarter_token::SigningKey;
use jumpstarter_token::internal::{Issuer, ObjectKind};

const WAIT: StdDuration = StdDuration::from_secs(20);

/// Retries `check` until it returns true, within [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {WAIT:?}");
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
}

async fn edit_secret(store: &KubeStore, namespace: &str, change: impl Fn(&mut Secret)) {
    let mut secret: Secret = store
        .get(namespace, keys::KEYS_SECRET)
        .await
        .expect("get")
        .expect("keys secret");
    change(&mut secret);
    store.replace(&secret).await.expect("replace keys secret");
}

fn put(secret: &mut Secret, key: &str, value: &str) {
    secret
        .data
        .get_or_insert_with(Default::default)
        .insert(key.to_owned(), ByteString(value.as_bytes().to_vec()));
}

#[tokio::test]
async fn signing_keys_rotate_while_the_controller_runs() {
    let (namespace, store) = support::kube_namespace("key-rotation").await;
    let settings = Arc::new(Settings::example(
        &namespace,
        "localhost:8082",
        "router.example.test:443",
    ));
    let keys = Arc::new(
        keys::bootstrap(&store, &settings, OffsetDateTime::now_utc())
            .await
            .expect("bootstrap"),
    );
    let mut registry = Registry::default();
    let auth_metrics = Arc::new(AuthMetrics::new(&mut registry));
    let service_metrics = Arc::new(ServiceMetrics::new(&mut registry));
    let refresh_metrics = refresh::RefreshMetrics::new(&mut registry);
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let services = Services::new(
        store.clone(),
        settings.clone(),
        keys.tokens.clone(),
        auth_metrics,
        service_metrics,
        shutdown.clone(),
    );
    let (ca, cert) = support::localhost_pki("rotation-ca", OffsetDateTime::now_utc());
    let grpc = LoopbackGrpc::serve(&services, &cert, &ca, shutdown.clone()).await;
    tokio::spawn(refresh::follow_keys(
        store.clone(),
        settings.clone(),
        keys.clone(),
        StdDuration::from_millis(200),
        refresh_metrics,
        |_| {},
        shutdown.clone(),
    ));

    let created = store
        .create(&Client {
            metadata: ObjectMeta {
                name: Some("alice".into()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: ClientSpec::default(),
            status: None,
        })
        .await
        .expect("create client");
    let uid = created.metadata.uid.expect("uid");
    let old_issuer = keys.tokens.current().issuer.clone();
    let new_issuer = Issuer {
        key: SigningKey::generate().expect("key"),
        ..old_issuer.clone()
    };
    let old = Identity::issued(&old_issuer, ObjectKind::Client, &namespace, "alice", &uid);
    let new = Identity::issued(&new_issuer, ObjectKind::Client, &namespace, "alice", &uid);
    let channel: Channel = grpc.endpoint(WAIT).connect().await.expect("connect");
    let list = || client_pb::ListExportersRequest {
        parent: format!("namespaces/{namespace}"),
        ..Default::default()
    };
    let accepted = |id: &Identity| {
        let (mut api, request) = (ClientServiceClient::new(channel.clone()), call(list(), id));
        async move { api.list_exporters(request).await }
    };

    assert!(accepted(&old).await.is_ok());
    let refused = accepted(&new).await.expect_err("unknown key");
    assert_eq!(refused.code(), Code::Unknown);
    assert!(
        refused.message().contains("signature is invalid"),
        "{refused:?}"
    );

    // The new key signs; the old one stays as a verify key. A new router key is announced
    // to routers before it signs.
    let next_router = SigningKey::generate().expect("router key");
    let new_pem = new_issuer.key.to_pkcs8_pem().to_owned();
    let old_public = old_issuer.key.verifying_key().to_public_pem().to_owned();
    let next_router_public = next_router.verifying_key().to_public_pem().to_owned();
    edit_secret(&store, &namespace, |s| {
        put(s, keys::TOKEN_KEY_KEY, &new_pem);
        put(s, keys::TOKEN_VERIFY_KEYS_KEY, &old_public);
        put(s, keys::ROUTER_TOKEN_VERIFY_KEYS_KEY, &next_router_public);
    })
    .await;
    eventually("the new key's token accepted", || async {
        accepted(&new).await.is_ok()
    })
    .await;
    assert!(accepted(&old).await.is_ok(), "the old key still verifies");
    // What the controller signs now verifies with the new key only.
    let issued = keys
        .tokens
        .current()
        .issuer
        .issue(
            &jumpstarter_token::internal::Subject {
                kind: ObjectKind::Client,
                namespace: namespace.clone(),
                name: "alice".into(),
                uid: uid.clone(),
            },
            OffsetDateTime::now_utc(),
        )
        .expect("issue")
        .0;
    assert!(
        new_issuer
            .verifier()
            .verify(&issued, OffsetDateTime::now_utc())
            .is_ok()
    );
    let router_keys: ConfigMap = store
        .get(&namespace, keys::ROUTER_KEYS_CONFIG_MAP)
        .await
        .expect("get")
        .expect("config map");
    let bundle = &router_keys.data.expect("data")[keys::ROUTER_KEYS_KEY];
    assert!(bundle.contains(next_router_public.trim()), "{bundle}");
    assert_eq!(
        jumpstarter_token::key::public_keys_from_pem(bundle)
            .expect("bundle")
            .len(),
        2
    );

    // A broken Secret: the keys in use stay.
    edit_secret(&store, &namespace, |s| {
        put(
            s,
            keys::TOKEN_VERIFY_KEYS_KEY,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n",
        );
    })
    .await;
    let metrics = || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        text
    };
    eventually("the broken Secret counted", || async {
        metrics().contains("jumpstarter_controller_key_reloads_total{result=\"rejected\"} 1")
    })
    .await;
    assert!(accepted(&old).await.is_ok(), "still the previous keys");

    // The old key removed: its token is refused, even though it was verified before.
    edit_secret(&store, &namespace, |s| {
        s.data
            .as_mut()
            .map(|d| d.remove(keys::TOKEN_VERIFY_KEYS_KEY));
    })
    .await;
    eventually("the old key's token refused", || async {
        accepted(&old).await.is_err()
    })
    .await;
    let refused = accepted(&old).await.expect_err("old key removed");
    assert!(
        refused.message().contains("signature is invalid"),
        "{refused:?}"
    );
    assert!(accepted(&new).await.is_ok());
    assert!(metrics().contains("jumpstarter_controller_key_reloads_total{result=\"applied\"} 2"));
}
