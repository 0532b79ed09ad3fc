//! `keys::bootstrap` against a real kube-apiserver: first start creates the material, later
//! starts load the same material, corrupt content is refused, and the public ConfigMaps are
//! published.

use std::collections::BTreeMap;

use jumpstarter_controller::keys::{self, KeysError};
use jumpstarter_controller::settings::Settings;
use jumpstarter_controller::store::Store;
use jumpstarter_controller::store::kube::KubeStore;
use jumpstarter_testenv::TestEnv;
use jumpstarter_token::internal::{ObjectKind, Subject};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use time::OffsetDateTime;

async fn setup(prefix: &str) -> (KubeStore, Settings) {
    let env = TestEnv::shared();
    let namespace = env.namespace(prefix).await;
    let store = KubeStore::new(env.admin_client().await);
    let settings = Settings::example(
        &namespace,
        "controller.example.com:8082",
        "router.example.com:8083",
    );
    (store, settings)
}

fn data(secret: &Secret, key: &str) -> Vec<u8> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .unwrap_or_else(|| panic!("Secret has no key {key}"))
}

#[tokio::test]
async fn first_start_creates_and_later_starts_reload_the_same_keys() {
    let (store, settings) = setup("keys-create").await;
    let now = OffsetDateTime::now_utc();
    let ns = settings.namespace.as_str();
    assert!(
        store
            .get::<Secret>(ns, keys::KEYS_SECRET)
            .await
            .expect("get")
            .is_none()
    );

    let first = keys::bootstrap(&store, &settings, now)
        .await
        .expect("first bootstrap");
    let secret: Secret = store
        .get(ns, keys::KEYS_SECRET)
        .await
        .expect("get")
        .expect("secret created");
    for key in [
        keys::CA_CERT_KEY,
        keys::CA_KEY_KEY,
        keys::TOKEN_KEY_KEY,
        keys::ROUTER_TOKEN_KEY_KEY,
    ] {
        assert!(!data(&secret, key).is_empty(), "{key} is stored");
    }
    assert_eq!(
        data(&secret, keys::CA_CERT_KEY),
        first.ca.cert_pem().as_bytes()
    );

    // A second start (another replica, a restart) loads the very same material.
    let second = keys::bootstrap(&store, &settings, now)
        .await
        .expect("second bootstrap");
    assert_eq!(second.ca.cert_pem(), first.ca.cert_pem());
    assert_eq!(
        second.tokens.current().issuer.key.to_pkcs8_pem(),
        first.tokens.current().issuer.key.to_pkcs8_pem()
    );
    assert_eq!(
        second.tokens.current().router_key.to_pkcs8_pem(),
        first.tokens.current().router_key.to_pkcs8_pem()
    );
    let subject = Subject {
        kind: ObjectKind::Client,
        namespace: ns.to_owned(),
        name: "alice".into(),
        uid: "uid-1".into(),
    };
    let (token, _) = first
        .tokens
        .current()
        .issuer
        .issue(&subject, now)
        .expect("issue");
    let claims = second
        .tokens
        .current()
        .verifier()
        .verify(&token, now)
        .expect("token from the first start verifies");
    assert_eq!(claims.sub, subject.to_string());

    // The public ConfigMaps.
    let ca: ConfigMap = store
        .get(ns, keys::CA_CONFIG_MAP)
        .await
        .expect("get")
        .expect("CA ConfigMap");
    assert_eq!(
        ca.data
            .as_ref()
            .and_then(|d| d.get(keys::CA_CERT_KEY))
            .map(String::as_str),
        Some(first.ca.cert_pem())
    );
    let router: ConfigMap = store
        .get(ns, keys::ROUTER_KEYS_CONFIG_MAP)
        .await
        .expect("get")
        .expect("router keys ConfigMap");
    let published = router
        .data
        .as_ref()
        .and_then(|d| d.get(keys::ROUTER_KEYS_KEY))
        .cloned();
    assert_eq!(
        published.as_deref(),
        Some(
            first
                .tokens
                .current()
                .router_key
                .verifying_key()
                .to_public_pem()
        )
    );
    assert!(!published.unwrap_or_default().contains("PRIVATE"));

    // A serving certificate for the controller chains to the stored CA.
    let creds = second
        .controller_server_cert(&settings, &["127.0.0.1".into()], now)
        .expect("serving certificate");
    assert_eq!(creds.chain.len(), 2);
    assert_eq!(&creds.chain[1], second.ca.cert_der());
}

#[tokio::test]
async fn concurrent_first_starts_agree_on_one_set_of_keys() {
    let (store, settings) = setup("keys-race").await;
    let now = OffsetDateTime::now_utc();
    let (a, b) = tokio::join!(
        keys::bootstrap(&store, &settings, now),
        keys::bootstrap(&store, &settings, now)
    );
    let (a, b) = (a.expect("bootstrap a"), b.expect("bootstrap b"));
    assert_eq!(a.ca.cert_pem(), b.ca.cert_pem());
    assert_eq!(
        a.tokens.current().issuer.key.to_pkcs8_pem(),
        b.tokens.current().issuer.key.to_pkcs8_pem()
    );
}

#[tokio::test]
async fn corrupt_or_incomplete_secrets_are_refused_not_regenerated() {
    let (store, settings) = setup("keys-corrupt").await;
    let now = OffsetDateTime::now_utc();
    let ns = settings.namespace.clone();
    keys::bootstrap(&store, &settings, now)
        .await
        .expect("bootstrap");
    let original: Secret = store
        .get(&ns, keys::KEYS_SECRET)
        .await
        .expect("get")
        .expect("secret");

    // A garbled token signing key.
    let mut corrupt = original.clone();
    corrupt.data.get_or_insert_with(BTreeMap::new).insert(
        keys::TOKEN_KEY_KEY.into(),
        ByteString(b"-----BEGIN PRIVATE KEY-----\nnope\n".to_vec()),
    );
    let written = store.replace(&corrupt).await.expect("corrupt the secret");
    let error = keys::bootstrap(&store, &settings, now)
        .await
        .expect_err("corrupt key refused");
    assert!(
        matches!(&error, KeysError::Corrupt { key, .. } if *key == keys::TOKEN_KEY_KEY),
        "unexpected error: {error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(keys::KEYS_SECRET) && message.contains(keys::TOKEN_KEY_KEY),
        "{message}"
    );

    // A missing CA key.
    let mut incomplete = written.clone();
    incomplete
        .data
        .get_or_insert_with(BTreeMap::new)
        .remove(keys::CA_KEY_KEY);
    incomplete.data.get_or_insert_with(BTreeMap::new).insert(
        keys::TOKEN_KEY_KEY.into(),
        ByteString(data(&original, keys::TOKEN_KEY_KEY)),
    );
    store.replace(&incomplete).await.expect("drop a key");
    let error = keys::bootstrap(&store, &settings, now)
        .await
        .expect_err("missing key refused");
    assert!(
        matches!(&error, KeysError::Missing { key, .. } if *key == keys::CA_KEY_KEY),
        "unexpected error: {error:?}"
    );

    // Nothing was regenerated behind our back: the stored CA certificate is the original.
    let after: Secret = store
        .get(&ns, keys::KEYS_SECRET)
        .await
        .expect("get")
        .expect("secret");
    assert_eq!(
        data(&after, keys::CA_CERT_KEY),
        data(&original, keys::CA_CERT_KEY)
    );
    assert!(
        after
            .data
            .as_ref()
            .is_some_and(|d| !d.contains_key(keys::CA_KEY_KEY))
    );
}
