//! Credentials issued by a jumpstarter 0.9.0 controller keep working here (Kubernetes
//! mode, the real kube-apiserver as store, the services over real TLS on loopback): with
//! Secret `jumpstarter-controller-secret` as 0.9.0 installations have it, tokens the real
//! Go code minted from its key (`tools/legacy-key`) authenticate, the reconcile loop keeps
//! the credential Secrets holding them, and a reload of the keys Secret keeps accepting
//! them. Without that key they are refused, as before.

use crate::support;

use support::{Identity, LoopbackGrpc, assert_status, call};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use jumpstarter_testenv::legacy_key;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use jumpstarter_controller::auth::AuthMetrics;
use jumpstarter_controller::crd::{Client, ClientSpec, Exporter, ExporterSpec};
use jumpstarter_controller::keys::legacy::{LEGACY_SECRET, LEGACY_SECRET_KEY, LegacyKeySource};
use jumpstarter_controller::keys::{self, Keys};
use jumpstarter_controller::reconcile::{ReconcileMetrics, Reconciler};
use jumpstarter_controller::service::{ServiceMetrics, Services};
use jumpstarter_controller::settings::Settings;
use jumpstarter_controller::store::Store;
use jumpstarter_controller::store::kube::KubeStore;
use jumpstarter_proto::jumpstarter::client::v1 as client_pb;
use jumpstarter_proto::jumpstarter::client::v1::client_service_client::ClientServiceClient;
use jumpstarter_token::SigningKey;
use jumpstarter_token::internal::ObjectKind;

const WAIT: StdDuration = StdDuration::from_secs(20);
/// As the 0.9.0 Helm chart and operator generate it (`openssl rand -hex 32`).
const CONTROLLER_KEY: &str = "9c41e7d0b3a85f26e1d47c9a0b3f58e2d6a17c4b9e0f32a8d5c61b7e4f09a3d2";
/// 0.9.0's operator default token lifetime.
const LIFETIME: StdDuration = StdDuration::from_secs(43_800 * 3600);

fn secret(namespace: &str, name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Secret::default()
    }
}

/// Client or Exporter `name` with its credential Secret (`<name>-client` or
/// `<name>-exporter`) holding a token for it, made by the Go code with `controller_key`,
/// controlled by the object: as a 0.9.0 controller leaves them.
async fn object_of_0_9_0(
    store: &KubeStore,
    namespace: &str,
    kind: ObjectKind,
    name: &str,
    controller_key: &str,
) -> Identity {
    let metadata = support::object_meta(namespace, name, &[]);
    let uid = match kind {
        ObjectKind::Client => {
            store
                .create(&Client {
                    metadata,
                    spec: ClientSpec::default(),
                    status: None,
                })
                .await
                .expect("create client")
                .metadata
                .uid
        }
        ObjectKind::Exporter => {
            store
                .create(&Exporter {
                    metadata,
                    spec: ExporterSpec::default(),
                    status: None,
                })
                .await
                .expect("create exporter")
                .metadata
                .uid
        }
    }
    .expect("uid");
    let prefix = kind.as_str().to_lowercase();
    let token = legacy_key::mint(
        controller_key,
        &format!("{prefix}:{namespace}:{name}:{uid}"),
        LIFETIME,
    );
    let mut credential = secret(
        namespace,
        &format!("{name}-{prefix}"),
        &[("token", token.as_str())],
    );
    credential.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "jumpstarter.dev/v1alpha1".into(),
        kind: kind.as_str().into(),
        name: name.into(),
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    store.create(&credential).await.expect("create credential");
    Identity {
        kind,
        namespace: namespace.into(),
        name: name.into(),
        token,
    }
}

async fn stored_token(store: &KubeStore, id: &Identity) -> String {
    let name = format!("{}-{}", id.name, id.kind.as_str().to_lowercase());
    let secret: Secret = store
        .get(&id.namespace, &name)
        .await
        .expect("get")
        .expect("credential secret");
    String::from_utf8(secret.data.expect("data")["token"].0.clone()).expect("text")
}

async fn bootstrap(store: &KubeStore, namespace: &str) -> (Arc<Settings>, Keys) {
    let settings = Arc::new(Settings::example(
        namespace,
        "localhost:8082",
        "router.example.test:443",
    ));
    let keys = keys::bootstrap(store, &settings, OffsetDateTime::now_utc())
        .await
        .expect("bootstrap");
    (settings, keys)
}

#[tokio::test]
async fn credentials_of_a_0_9_0_controller_keep_working() {
    let (namespace, store) = support::kube_namespace("legacy-key").await;
    store
        .create(&secret(
            &namespace,
            LEGACY_SECRET,
            &[(LEGACY_SECRET_KEY, CONTROLLER_KEY)],
        ))
        .await
        .expect("create the 0.9.0 controller secret");
    let alice = object_of_0_9_0(
        &store,
        &namespace,
        ObjectKind::Client,
        "alice",
        CONTROLLER_KEY,
    )
    .await;
    let bench = object_of_0_9_0(
        &store,
        &namespace,
        ObjectKind::Exporter,
        "bench",
        CONTROLLER_KEY,
    )
    .await;
    // Credentials of some other 0.9.0 installation: they must be re-signed.
    let foreign_bench = object_of_0_9_0(
        &store,
        &namespace,
        ObjectKind::Exporter,
        "foreign-bench",
        "another installation",
    )
    .await;
    let bob = object_of_0_9_0(
        &store,
        &namespace,
        ObjectKind::Client,
        "bob",
        "another installation",
    )
    .await;

    let (settings, keys) = bootstrap(&store, &namespace).await;
    let mut registry = Registry::default();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let services = Services::new(
        store.clone(),
        settings.clone(),
        keys.tokens.clone(),
        Arc::new(AuthMetrics::new(&mut registry)),
        Arc::new(ServiceMetrics::new(&mut registry)),
        shutdown.clone(),
    );
    let (ca, cert) = support::localhost_pki("legacy-ca", OffsetDateTime::now_utc());
    let grpc = LoopbackGrpc::serve(&services, &cert, &ca, shutdown.clone()).await;
    let channel = grpc.endpoint(WAIT).connect().await.expect("connect");
    let list = |id: &Identity| {
        let mut api = ClientServiceClient::new(channel.clone());
        let request = call(
            client_pb::ListExportersRequest {
                parent: format!("namespaces/{namespace}"),
                ..Default::default()
            },
            id,
        );
        async move { api.list_exporters(request).await }
    };

    // Without the 0.9.0 key the token is foreign.
    assert_status(list(&alice).await, Code::Unknown, "signature is invalid");

    let source = keys::legacy::accept(&store, &namespace, None, &keys)
        .await
        .expect("accept")
        .expect("the Secret is found");
    assert_eq!(
        source,
        LegacyKeySource::Secret {
            namespace: namespace.clone(),
            name: LEGACY_SECRET.into()
        }
    );
    list(&alice).await.expect("a 0.9.0 token is accepted");
    assert_status(list(&bob).await, Code::Unknown, "signature is invalid");

    // A reconcile pass keeps alice's and bench's Secrets (their tokens verify) and
    // re-signs bob's and foreign-bench's.
    let keys = Arc::new(keys);
    let reconciler = Reconciler::new(
        store.clone(),
        keys.clone(),
        settings.clone(),
        Arc::new(ReconcileMetrics::unregistered()),
    );
    reconciler
        .pass(OffsetDateTime::now_utc())
        .await
        .expect("pass");
    assert_eq!(
        stored_token(&store, &alice).await,
        alice.token,
        "the 0.9.0 client credential is kept"
    );
    assert_eq!(
        stored_token(&store, &bench).await,
        bench.token,
        "the 0.9.0 exporter credential is kept"
    );
    assert_ne!(
        stored_token(&store, &foreign_bench).await,
        foreign_bench.token,
        "the foreign exporter credential is re-signed"
    );
    let resigned = Identity {
        token: stored_token(&store, &bob).await,
        ..bob.clone()
    };
    assert_ne!(
        resigned.token, bob.token,
        "the foreign credential is re-signed"
    );
    list(&resigned).await.expect("bob's new token is accepted");

    // The keys Secret reloaded with a change: the 0.9.0 key stays accepted.
    let extra = SigningKey::generate().expect("key");
    let mut keys_secret: Secret = store
        .get(&namespace, keys::KEYS_SECRET)
        .await
        .expect("get")
        .expect("keys secret");
    keys_secret
        .data
        .get_or_insert_with(Default::default)
        .insert(
            keys::TOKEN_VERIFY_KEYS_KEY.into(),
            ByteString(extra.verifying_key().to_public_pem().as_bytes().to_vec()),
        );
    store.replace(&keys_secret).await.expect("replace");
    assert!(
        keys::reload(&store, &settings, &keys)
            .await
            .expect("reload"),
        "the keys changed"
    );
    assert_eq!(keys.tokens.current().verify_keys.len(), 1);
    list(&alice)
        .await
        .expect("a 0.9.0 token is accepted after a reload");
}

#[tokio::test]
async fn where_the_0_9_0_key_comes_from() {
    let (namespace, store) = support::kube_namespace("legacy-source").await;
    let (_, keys) = bootstrap(&store, &namespace).await;
    let now = OffsetDateTime::now_utc();
    let token = legacy_key::mint("given key", "client:lab:alice:u-1", LIFETIME);

    // No Secret and nothing given: no 0.9.0 key.
    let found = keys::legacy::accept(&store, &namespace, None, &keys)
        .await
        .expect("accept");
    assert_eq!(found, None);
    assert!(keys.tokens.current().legacy_verify_key.is_none());

    // A Secret without the key: none either.
    store
        .create(&secret(&namespace, LEGACY_SECRET, &[("other", "x")]))
        .await
        .expect("create");
    let found = keys::legacy::accept(&store, &namespace, None, &keys)
        .await
        .expect("accept");
    assert_eq!(found, None);

    // A key given (CONTROLLER_KEY) wins over the Secret.
    let found = keys::legacy::accept(&store, &namespace, Some(b"given key"), &keys)
        .await
        .expect("accept");
    assert_eq!(found, Some(LegacyKeySource::Given));
    let current = keys.tokens.current();
    let claims = current
        .credential_verifier()
        .verify(&token, now)
        .expect("verifies as a credential");
    assert_eq!(claims.sub, "client:lab:alice:u-1");
    // It verifies credentials only: not the tokens replicas present to each other.
    assert!(current.verifier().verify(&token, now).is_err());
}

/// A controller whose identity may not read the Secret starts without the 0.9.0 key (and
/// says why in its log) instead of failing.
#[tokio::test]
async fn an_unreadable_secret_gives_no_key() {
    let (namespace, admin) = support::kube_namespace("legacy-forbidden").await;
    admin
        .create(&secret(
            &namespace,
            LEGACY_SECRET,
            &[(LEGACY_SECRET_KEY, CONTROLLER_KEY)],
        ))
        .await
        .expect("create");
    // The RBAC-only identity of the test control plane, without a Role in this namespace.
    let limited = KubeStore::new(
        jumpstarter_testenv::TestEnv::shared()
            .controller_client()
            .await,
    );
    let read: Result<Option<Secret>, _> = limited.get(&namespace, LEGACY_SECRET).await;
    assert!(
        matches!(
            read,
            Err(jumpstarter_controller::store::StoreError::Forbidden { .. })
        ),
        "{read:?}"
    );
    let found = keys::legacy::find(&limited, &namespace, None)
        .await
        .expect("find");
    assert!(found.is_none());
    // Given explicitly, it needs no Secret.
    let found = keys::legacy::find(&limited, &namespace, Some(CONTROLLER_KEY.as_bytes()))
        .await
        .expect("find")
        .expect("given");
    assert_eq!(found.source, LegacyKeySource::Given);
}
