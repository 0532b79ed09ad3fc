//! What the edge reads from a router token: the stream id (`sub`, the QUIC session id) and
//! the lease (`lease`, `<namespace>/<name>`). The payload is decoded **without** verifying
//! the signature: the edge only routes by it, the router (and the lease certificate) decide
//! what is allowed.

use std::time::{Duration, SystemTime};

use base64::Engine;
use serde::Deserialize;
use tonic::metadata::MetadataMap;

/// The claims the edge routes by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamClaims {
    /// The stream id; both sides of the session present it.
    pub(crate) session: String,
    /// The lease's namespace.
    pub(crate) namespace: String,
    /// The lease's name.
    pub(crate) lease: String,
}

/// Why a router call cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("missing authorization header")]
    Missing,
    #[error("malformed authorization header")]
    NotBearer,
    #[error("the router token is not a JWT")]
    NotJwt,
    #[error("the router token's payload is not JSON with a string sub")]
    Payload,
    #[error("the router token was not handed out to this edge's tool by the controller")]
    NotIssued,
    #[error(
        "the router token names no lease (`lease` claim); this controller cannot be used over QUIC"
    )]
    NoLease,
}

#[derive(Deserialize)]
struct Payload {
    sub: String,
    #[serde(default)]
    lease: Option<String>,
    #[serde(default)]
    exp: Option<i64>,
}

/// The bearer token of a call.
pub(crate) fn bearer(metadata: &MetadataMap) -> Result<&str, TokenError> {
    let value = metadata
        .get("authorization")
        .ok_or(TokenError::Missing)?
        .to_str()
        .map_err(|_| TokenError::NotBearer)?;
    let (scheme, token) = value.split_once(' ').ok_or(TokenError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(TokenError::NotBearer);
    }
    Ok(token.trim())
}

/// Reads the claims of `token` (unverified).
pub(crate) fn peek(token: &str) -> Result<StreamClaims, TokenError> {
    let payload = payload(token)?;
    if payload.sub.is_empty() {
        return Err(TokenError::Payload);
    }
    let lease = payload.lease.ok_or(TokenError::NoLease)?;
    let (namespace, name) = lease.split_once('/').ok_or(TokenError::NoLease)?;
    if namespace.is_empty() || name.is_empty() {
        return Err(TokenError::NoLease);
    }
    Ok(StreamClaims {
        session: payload.sub,
        namespace: namespace.to_owned(),
        lease: name.to_owned(),
    })
}

/// The token's `exp` (unverified), when it has one.
pub(crate) fn expiry(token: &str) -> Option<SystemTime> {
    let exp = u64::try_from(payload(token).ok()?.exp?).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(exp))
}

fn payload(token: &str) -> Result<Payload, TokenError> {
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::NotJwt);
    };
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| TokenError::NotJwt)?;
    serde_json::from_slice(&json).map_err(|_| TokenError::Payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(payload: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.{}",
            b64(r#"{"alg":"ES256"}"#),
            b64(payload),
            b64("sig")
        )
    }

    #[test]
    fn sub_and_lease_are_read() {
        let claims = peek(&token(
            r#"{"iss":"https://jumpstarter.dev/stream","sub":"0190-abc","lease":"lab/l1","exp":1}"#,
        ))
        .unwrap();
        assert_eq!(
            claims,
            StreamClaims {
                session: "0190-abc".into(),
                namespace: "lab".into(),
                lease: "l1".into()
            }
        );
        let with_exp = token(r#"{"sub":"s","lease":"a/b","exp":1700000000}"#);
        assert_eq!(
            expiry(&with_exp),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(expiry(&token(r#"{"sub":"s"}"#)), None);
    }

    #[test]
    fn unusable_tokens_are_refused() {
        assert_eq!(peek("abc"), Err(TokenError::NotJwt));
        assert_eq!(peek("a.b.c.d"), Err(TokenError::NotJwt));
        assert_eq!(peek(&token("not json")), Err(TokenError::Payload));
        assert_eq!(peek(&token(r#"{"sub":""}"#)), Err(TokenError::Payload));
        assert_eq!(peek(&token(r#"{"sub":"s"}"#)), Err(TokenError::NoLease));
        assert_eq!(
            peek(&token(r#"{"sub":"s","lease":"nolease"}"#)),
            Err(TokenError::NoLease)
        );
    }

    #[test]
    fn bearer_header() {
        let mut metadata = MetadataMap::new();
        assert_eq!(bearer(&metadata), Err(TokenError::Missing));
        metadata.insert("authorization", "Basic x".parse().unwrap());
        assert_eq!(bearer(&metadata), Err(TokenError::NotBearer));
        metadata.insert("authorization", "bearer t.o.k".parse().unwrap());
        assert_eq!(bearer(&metadata), Ok("t.o.k"));
    }
}
