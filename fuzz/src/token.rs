//! Bearer tokens: client and exporter credentials (controller), router stream tokens
//! (routers, and the edge, which reads them without verifying).
//!
//! An input that starts with `{` is a token's JSON — `header\npayload`, or a payload alone
//! under an ES256 header — that the target signs with the fixed key, so that mutations reach
//! the claim checks behind the signature; any other input is presented as a token as is.

use std::sync::OnceLock;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use jumpstarter_token::internal::{self, DEFAULT_AUDIENCE, DEFAULT_ISSUER, Subject};
use jumpstarter_token::{TokenError, router};

use crate::edge_router_token;
use crate::fixture;

/// The header of a signed payload that comes without one.
const ES256_HEADER: &str = r#"{"alg":"ES256","typ":"JWT"}"#;

/// A token to present, and what the target knows about it.
struct Presented {
    token: String,
    /// Signed with the fixed key: the signature is good, so no refusal may blame it.
    signed: bool,
    /// The header's `alg` when the target signed it (anything but ES256 must be refused).
    alg: Option<String>,
}

fn presented(data: &[u8]) -> Option<Presented> {
    let text = std::str::from_utf8(data).ok()?;
    if !text.starts_with('{') {
        return Some(Presented {
            token: text.to_owned(),
            signed: false,
            alg: None,
        });
    }
    let (header, payload) = text.split_once('\n').unwrap_or((ES256_HEADER, text));
    let alg = serde_json::from_str::<serde_json::Value>(header)
        .ok()
        .and_then(|h| h.get("alg")?.as_str().map(str::to_owned));
    Some(Presented {
        token: sign(header.as_bytes(), payload.as_bytes()),
        signed: true,
        alg,
    })
}

/// A compact JWS of raw header and payload bytes, ES256-signed with the fixed key.
pub(crate) fn sign(header: &[u8], payload: &[u8]) -> String {
    static KEY: OnceLock<EncodingKey> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        EncodingKey::from_ec_pem(fixture::signing_key().to_pkcs8_pem().as_bytes())
            .expect("the fixed key is an EC key")
    });
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let message = format!("{}.{}", b64(header), b64(payload));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, Algorithm::ES256)
        .expect("ES256 signs any message");
    format!("{message}.{signature}")
}

/// What holds for every refusal, and for refusals of tokens the target signed.
fn check_refusal(error: &TokenError, presented: &Presented) {
    assert!(!error.to_string().is_empty() && !error.reason().is_empty());
    if presented.signed {
        assert_ne!(
            *error,
            TokenError::BadSignature,
            "a good signature was refused"
        );
    }
    if matches!(error, TokenError::BadKey(_) | TokenError::Signing(_)) {
        panic!("a verification reported a key or signing error: {error:?}");
    }
}

pub(crate) fn check_internal(data: &[u8]) {
    let Some(presented) = presented(data) else {
        return;
    };
    let verifier = internal::Verifier {
        keys: fixture::verifying_keys(),
        issuer: DEFAULT_ISSUER.into(),
        audience: DEFAULT_AUDIENCE.into(),
    };
    match verifier.verify(&presented.token, fixture::now()) {
        Ok(claims) => {
            assert_eq!(presented.alg.as_deref().unwrap_or("ES256"), "ES256");
            assert_eq!(claims.iss, DEFAULT_ISSUER);
            assert!(claims.aud.iter().any(|a| a == DEFAULT_AUDIENCE));
            assert!(claims.exp > fixture::NOW_UNIX);
            // A subject that parses renders back to the same text.
            if let Ok(subject) = claims.sub.parse::<Subject>() {
                assert_eq!(subject.to_string(), claims.sub);
            }
        }
        Err(error) => check_refusal(&error, &presented),
    }
}

pub(crate) fn check_router(data: &[u8]) {
    let Some(presented) = presented(data) else {
        return;
    };
    let verified = router::verify(&fixture::verifying_keys(), &presented.token, fixture::now());
    // The edge reads any token without verifying; it must not panic either.
    let peeked = edge_router_token::peek(&presented.token);
    let expiry = edge_router_token::expiry(&presented.token);
    match verified {
        Ok(claims) => {
            assert_eq!(presented.alg.as_deref().unwrap_or("ES256"), "ES256");
            let now = fixture::NOW_UNIX;
            let skew = router::CLOCK_SKEW.whole_seconds();
            assert_eq!(claims.iss, router::ISSUER);
            assert!(claims.aud.iter().any(|a| a == router::AUDIENCE));
            assert!(claims.exp > now && claims.iat <= now + skew && claims.nbf <= now + skew);
            assert!(!claims.sub.is_empty());
            // What the router accepted, the edge routes by the same stream and lease.
            let lease = claims.lease.as_deref().and_then(|l| l.split_once('/'));
            if let Some((namespace, name)) = lease.filter(|(n, l)| !n.is_empty() && !l.is_empty()) {
                let peeked = peeked.expect("the edge reads a token the router accepts");
                assert_eq!(peeked.session, claims.sub);
                assert_eq!(
                    (peeked.namespace.as_str(), peeked.lease.as_str()),
                    (namespace, name)
                );
            }
            let exp_secs = u64::try_from(claims.exp).ok();
            let edge_secs = expiry.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            assert_eq!(edge_secs.map(|d| d.as_secs()), exp_secs);
        }
        Err(error) => check_refusal(&error, &presented),
    }
}
