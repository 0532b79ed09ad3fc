//! Router stream tokens, minted by the controller at Dial and verified by routers with
//! the controller's public key (no shared secret).
//!
//! Claims keep 0.9.0's layout — `iss` = [`ISSUER`], `aud` = [[`AUDIENCE`]], `sub` = the
//! stream id both peers pair on, `iat`, `nbf`, `exp`, `jti` — plus `lease`
//! (`<namespace>/<lease>`) for logs and metrics. The same token goes to both peers.
//! Expiry is checked when a stream opens; a running stream outlives its token.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::jws::{self, Audience};
use crate::{SigningKey, TokenError, VerifyingKey};

/// Issuer of router tokens (0.9.0 value).
pub const ISSUER: &str = "https://jumpstarter.dev/stream";
/// Audience of router tokens (0.9.0 value).
pub const AUDIENCE: &str = "https://jumpstarter.dev/router";
/// Tolerated clock difference between controller and router for `nbf`/`iat`.
pub const CLOCK_SKEW: Duration = Duration::seconds(5);

/// Verified claims of a router token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: Vec<String>,
    /// The stream id: both peers present the same token, the router pairs them on it.
    pub sub: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    /// `<namespace>/<lease name>` the stream belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
}

#[derive(Deserialize)]
struct RawClaims {
    iss: Option<String>,
    aud: Option<Audience>,
    sub: Option<String>,
    iat: Option<i64>,
    nbf: Option<i64>,
    exp: Option<i64>,
    jti: Option<String>,
    lease: Option<String>,
}

/// What a new stream token is for.
#[derive(Debug, Clone)]
pub struct StreamGrant {
    pub stream_id: String,
    pub token_id: String,
    pub lease: String,
}

/// Mints a router token valid from `now` for `lifetime`.
pub fn mint(
    key: &SigningKey,
    grant: &StreamGrant,
    lifetime: Duration,
    now: OffsetDateTime,
) -> Result<String, TokenError> {
    let now_s = now.unix_timestamp();
    let claims = Claims {
        iss: ISSUER.into(),
        aud: vec![AUDIENCE.into()],
        sub: grant.stream_id.clone(),
        iat: now_s,
        nbf: now_s,
        exp: (now + lifetime).unix_timestamp(),
        jti: grant.token_id.clone(),
        lease: Some(grant.lease.clone()),
    };
    jws::sign(key, &claims)
}

/// Verifies a router token as a router does when a stream opens.
pub fn verify(
    keys: &[VerifyingKey],
    token: &str,
    now: OffsetDateTime,
) -> Result<Claims, TokenError> {
    let raw: RawClaims = jws::verify(keys, token)?;
    let missing = |c: &str| TokenError::Malformed(format!("claim {c} is missing"));
    let iss = raw.iss.ok_or_else(|| missing("iss"))?;
    if iss != ISSUER {
        return Err(TokenError::WrongIssuer(iss));
    }
    let aud = raw.aud.ok_or_else(|| missing("aud"))?;
    if !aud.contains(AUDIENCE) {
        return Err(TokenError::WrongAudience(aud.to_vec()));
    }
    let now_s = now.unix_timestamp();
    let skew = CLOCK_SKEW.whole_seconds();
    let exp = raw.exp.ok_or_else(|| missing("exp"))?;
    if now_s >= exp {
        return Err(TokenError::Expired { exp, now: now_s });
    }
    let iat = raw.iat.ok_or_else(|| missing("iat"))?;
    if iat > now_s + skew {
        return Err(TokenError::IssuedInFuture { iat, now: now_s });
    }
    let nbf = raw.nbf.unwrap_or(iat);
    if nbf > now_s + skew {
        return Err(TokenError::NotYetValid { nbf, now: now_s });
    }
    let sub = raw
        .sub
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("sub"))?;
    Ok(Claims {
        iss,
        aud: aud.to_vec(),
        sub,
        iat,
        nbf,
        exp,
        jti: raw.jti.unwrap_or_default(),
        lease: raw.lease,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn grant() -> StreamGrant {
        StreamGrant {
            stream_id: "stream-1".into(),
            token_id: "jti-1".into(),
            lease: "lab/lease-1".into(),
        }
    }

    #[test]
    fn minted_token_verifies_with_the_public_key_only() {
        let key = SigningKey::generate().expect("key");
        let public =
            VerifyingKey::from_public_pem(key.verifying_key().to_public_pem()).expect("public");
        let now = datetime!(2026-11-29 12:00 UTC);
        let token = mint(&key, &grant(), Duration::minutes(2), now).expect("mint");
        let claims = verify(&[public], &token, now + Duration::seconds(30)).expect("verify");
        assert_eq!(claims.sub, "stream-1");
        assert_eq!(claims.lease.as_deref(), Some("lab/lease-1"));
        assert_eq!(claims.exp - claims.iat, 120);
    }

    #[test]
    fn refusals() {
        let key = SigningKey::generate().expect("key");
        let keys = [key.verifying_key().clone()];
        let now = datetime!(2026-11-29 12:00 UTC);
        let token = mint(&key, &grant(), Duration::minutes(2), now).expect("mint");
        assert!(matches!(
            verify(&keys, &token, now + Duration::minutes(3)),
            Err(TokenError::Expired { .. })
        ));
        assert!(matches!(
            verify(&keys, &token, now - Duration::minutes(1)),
            Err(TokenError::IssuedInFuture { .. })
        ));
        let other = SigningKey::generate().expect("key");
        assert_eq!(
            verify(&[other.verifying_key().clone()], &token, now),
            Err(TokenError::BadSignature)
        );
        // An internal (client) token is not a router token.
        let internal = crate::internal::Issuer {
            key: key.clone(),
            issuer: crate::internal::DEFAULT_ISSUER.into(),
            audience: crate::internal::DEFAULT_AUDIENCE.into(),
            lifetime: Duration::days(1),
        };
        let subject = crate::internal::Subject {
            kind: crate::internal::ObjectKind::Client,
            namespace: "lab".into(),
            name: "a".into(),
            uid: "u".into(),
        };
        let (client_token, _) = internal.issue(&subject, now).expect("issue");
        assert!(matches!(
            verify(&keys, &client_token, now),
            Err(TokenError::WrongIssuer(_))
        ));
    }

    #[test]
    fn key_rotation_accepts_any_listed_key() {
        let old = SigningKey::generate().expect("key");
        let new = SigningKey::generate().expect("key");
        let now = datetime!(2026-11-29 12:00 UTC);
        let token = mint(&old, &grant(), Duration::minutes(2), now).expect("mint");
        let keys = [new.verifying_key().clone(), old.verifying_key().clone()];
        assert!(verify(&keys, &token, now).is_ok());
    }
}
