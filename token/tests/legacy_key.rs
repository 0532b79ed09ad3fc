//! The key of a jumpstarter 0.9.0 controller, derived here and by the real Go code
//! (tools/legacy-key: Go's math/rand, filippo.io/keygen and golang-jwt, as 0.9.0 uses
//! them), must be the same key: tokens minted by the Go code verify with ours and the
//! other way round.

use std::time::Duration as StdDuration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jumpstarter_testenv::legacy_key;
use jumpstarter_token::internal::{
    DEFAULT_AUDIENCE, DEFAULT_ISSUER, Issuer, ObjectKind, Subject, Verifier,
};
use jumpstarter_token::legacy::derive_signing_key;
use jumpstarter_token::{TokenError, VerifyingKey};
use time::{Duration, OffsetDateTime};

/// Controller keys as installations have them (the Helm job and the operator write
/// `openssl rand -hex 32`) and odd ones.
const CONTROLLER_KEYS: &[&str] = &[
    "3f9c2a7e51b04d8c96e1f0a2b7d43c58e9a1f6b20c7d48e3a5b9f1c2d6e07a84",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "",
    "a",
    "supersecret-controller-key",
    "clé-ключ-鍵-🔑",
    "a key with spaces\tand a tab",
    "The quick brown fox jumps over the lazy dog, many times over, so that this key is longer than one SHA-256 block of sixty-four bytes.",
];

fn without_whitespace(pem: &str) -> String {
    pem.split_whitespace().collect()
}

fn verifier(key: VerifyingKey) -> Verifier {
    Verifier {
        keys: vec![key],
        issuer: DEFAULT_ISSUER.into(),
        audience: DEFAULT_AUDIENCE.into(),
    }
}

fn segment(token: &str, index: usize) -> serde_json::Value {
    let part = token.split('.').nth(index).expect("three segments");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

#[test]
fn derived_public_keys_equal_go() {
    for key in CONTROLLER_KEYS {
        let ours = derive_signing_key(key.as_bytes()).expect("derive");
        assert_eq!(
            without_whitespace(ours.verifying_key().to_public_pem()),
            without_whitespace(&legacy_key::pubkey(key)),
            "public key derived from {key:?}"
        );
    }
}

#[test]
fn go_minted_tokens_verify_with_the_derived_key() {
    let lifetime = StdDuration::from_secs(8760 * 3600);
    let sub = "exporter:lab:bench-1:0f8e2c1a-5b7d-4e9a-8c3f-2d1b6a7e9f40";
    let now = OffsetDateTime::now_utc();
    for key in CONTROLLER_KEYS.iter().take(3) {
        let token = legacy_key::mint(key, sub, lifetime);
        let derived = derive_signing_key(key.as_bytes()).expect("derive");
        let claims = verifier(derived.verifying_key().clone())
            .verify(&token, now)
            .expect("a 0.9.0 token verifies with the derived key");
        assert_eq!(claims.sub, sub);
        assert_eq!(claims.aud, vec![DEFAULT_AUDIENCE.to_owned()]);
        assert_eq!(claims.exp - claims.iat, 8760 * 3600);
        assert_eq!(claims.generation, 0);
        assert_eq!(
            segment(&token, 0),
            serde_json::json!({"alg": "ES256", "typ": "JWT"}),
            "0.9.0 header: no kid"
        );
    }
    // A token of another controller key is refused.
    let token = legacy_key::mint("another key", sub, lifetime);
    let derived = derive_signing_key(CONTROLLER_KEYS[0].as_bytes()).expect("derive");
    assert_eq!(
        verifier(derived.verifying_key().clone()).verify(&token, now),
        Err(TokenError::BadSignature)
    );
    // An expired one says so (0.9.0 clients re-authenticate on "token is expired").
    let iat = now.unix_timestamp() - 7200;
    let token = legacy_key::mint_at(CONTROLLER_KEYS[0], sub, StdDuration::from_secs(3600), iat);
    let err = verifier(derived.verifying_key().clone())
        .verify(&token, now)
        .expect_err("expired");
    assert!(err.to_string().contains("token is expired"), "{err}");
}

#[test]
fn tokens_signed_with_the_derived_key_are_those_of_go() {
    let key = CONTROLLER_KEYS[0];
    let derived = derive_signing_key(key.as_bytes()).expect("derive");
    let subject = Subject {
        kind: ObjectKind::Client,
        namespace: "lab".into(),
        name: "alice".into(),
        uid: "7c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f".into(),
    };
    let now = OffsetDateTime::now_utc();
    let issuer = Issuer {
        key: derived,
        issuer: DEFAULT_ISSUER.into(),
        audience: DEFAULT_AUDIENCE.into(),
        lifetime: Duration::hours(8760),
    };
    let (ours, _) = issuer.issue(&subject, now).expect("sign");
    // Ours verifies with the public key the Go code derives.
    let go_key = VerifyingKey::from_public_pem(&legacy_key::pubkey(key)).expect("Go's PEM");
    verifier(go_key)
        .verify(&ours, now)
        .expect("verifies with Go's key");
    // Same header and claims as the Go controller writes for the same subject and time.
    let go = legacy_key::mint_at(
        key,
        &subject.to_string(),
        StdDuration::from_secs(8760 * 3600),
        now.unix_timestamp(),
    );
    assert_eq!(segment(&ours, 0), segment(&go, 0));
    assert_eq!(segment(&ours, 1), segment(&go, 1));
}
