//! Forged and mangled tokens against both verifiers: each is refused with a precise reason
//! (the metric label callers count), and no key is ever used as an HMAC secret.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use jumpstarter_token::internal::{DEFAULT_AUDIENCE, DEFAULT_ISSUER, Issuer, ObjectKind, Subject};
use jumpstarter_token::router::{self, StreamGrant};
use jumpstarter_token::{SigningKey, TokenError};
use time::{Duration, OffsetDateTime};

fn issuer() -> Issuer {
    Issuer {
        key: SigningKey::generate().expect("key"),
        issuer: DEFAULT_ISSUER.into(),
        audience: DEFAULT_AUDIENCE.into(),
        lifetime: Duration::days(1),
    }
}

fn subject() -> Subject {
    Subject {
        kind: ObjectKind::Client,
        namespace: "lab".into(),
        name: "alice".into(),
        uid: "u-1".into(),
    }
}

/// The payload segment of `token`, decoded.
fn payload(token: &str) -> serde_json::Value {
    let part = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64")).expect("json")
}

/// A compact JWS with `header`, the claims of `genuine` and `signature`.
fn forge(header: serde_json::Value, genuine: &str, signature: &[u8]) -> String {
    let enc = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    format!(
        "{}.{}.{}",
        enc(header.to_string().as_bytes()),
        enc(payload(genuine).to_string().as_bytes()),
        enc(signature)
    )
}

/// The same attacks, as tokens carrying `genuine`'s claims.
fn attacks(genuine: &str, public_pem: &str) -> Vec<(&'static str, String, &'static str)> {
    let claims = payload(genuine);
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(public_pem.as_bytes()).expect("hmac key"),
    )
    .expect("hs256");
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("p384");
    let es384 = jsonwebtoken::encode(
        &Header::new(Algorithm::ES384),
        &claims,
        &EncodingKey::from_ec_pem(p384.serialize_pem().as_bytes()).expect("p384 pem"),
    )
    .expect("es384");
    let mut cut = genuine.to_owned();
    cut.truncate(genuine.len() - 10);
    let signing_input = genuine.rsplit_once('.').expect("dots").0.to_owned();
    vec![
        (
            "alg none",
            forge(
                serde_json::json!({"alg": "none", "typ": "JWT"}),
                genuine,
                b"",
            ),
            "bad_algorithm",
        ),
        (
            "alg None",
            forge(serde_json::json!({"alg": "None"}), genuine, b""),
            "bad_algorithm",
        ),
        ("HS256 keyed with the public key", hs256, "bad_algorithm"),
        ("ES384", es384, "bad_algorithm"),
        (
            "ES256 header, no signature",
            format!("{signing_input}."),
            "bad_signature",
        ),
        ("truncated signature", cut, "bad_signature"),
        ("two segments", signing_input, "malformed"),
        ("empty", String::new(), "malformed"),
        ("garbage", "garbage".into(), "malformed"),
        ("non-JSON header", "eyJhbGc.e30.AAAA".into(), "malformed"),
        (
            "header without alg",
            forge(serde_json::json!({"typ": "JWT"}), genuine, b"x"),
            "malformed",
        ),
    ]
}

#[test]
fn internal_verifier_refuses_each_attack_with_its_reason() {
    let issuer = issuer();
    let now = OffsetDateTime::now_utc();
    let (genuine, _) = issuer.issue(&subject(), now).expect("issue");
    let verifier = issuer.verifier();
    assert!(verifier.verify(&genuine, now).is_ok());
    let public = issuer.key.verifying_key().to_public_pem().to_owned();
    for (what, token, reason) in attacks(&genuine, &public) {
        let err = verifier.verify(&token, now).expect_err(what);
        assert_eq!(err.reason(), reason, "{what}: {err}");
    }
}

#[test]
fn router_verifier_refuses_each_attack_with_its_reason() {
    let key = SigningKey::generate().expect("key");
    let now = OffsetDateTime::now_utc();
    let grant = StreamGrant {
        stream_id: "s-1".into(),
        token_id: "j-1".into(),
        lease: "lab/l-1".into(),
    };
    let genuine = router::mint(&key, &grant, Duration::minutes(2), now).expect("mint");
    let keys = [key.verifying_key().clone()];
    assert!(router::verify(&keys, &genuine, now).is_ok());
    for (what, token, reason) in attacks(&genuine, key.verifying_key().to_public_pem()) {
        let err = router::verify(&keys, &token, now).expect_err(what);
        assert_eq!(err.reason(), reason, "{what}: {err}");
    }
}

#[test]
fn algorithm_refusals_name_the_algorithm() {
    let issuer = issuer();
    let now = OffsetDateTime::now_utc();
    let (genuine, _) = issuer.issue(&subject(), now).expect("issue");
    let none = forge(serde_json::json!({"alg": "none"}), &genuine, b"");
    assert_eq!(
        issuer.verifier().verify(&none, now),
        Err(TokenError::Algorithm("none".into()))
    );
}

#[test]
fn generation_claim_round_trips_and_defaults_to_zero() {
    let issuer = issuer();
    let now = OffsetDateTime::now_utc();
    let (zero, _) = issuer.issue(&subject(), now).expect("issue");
    assert!(payload(&zero).get("gen").is_none(), "0.9.0 claim layout");
    assert_eq!(
        issuer.verifier().verify(&zero, now).expect("ok").generation,
        0
    );
    let (third, _) = issuer.issue_generation(&subject(), 3, now).expect("issue");
    assert_eq!(payload(&third)["gen"], 3);
    assert_eq!(
        issuer
            .verifier()
            .verify(&third, now)
            .expect("ok")
            .generation,
        3
    );
}
