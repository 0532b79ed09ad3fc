//! Router stream tokens, minted by the controller at Dial and verified by routers with
//! the controller's public key (no shared secret).
//!
//! Claims keep 0.9.0's layout — `iss` = [`ISSUER`], `aud` = [[`AUDIENCE`]], `sub` = the
//! stream id both peers pair on, `iat`, `nbf`, `exp`, `jti` — plus `lease`
//! (`<namespace>/<lease>`) for logs, metrics and per-lease limits. [`mint`] gives one token
//! for both peers, as 0.9.0 does. [`mint_pair`] adds two claims:
//! - `role` (`client` or `exporter`): one token per side of a stream (the client gets its
//!   own in the `DialResponse`, the exporter its own in the `ListenResponse`), and the
//!   router pairs a stream only with one of the other role. 0.9.0 peers treat the token as
//!   opaque and send nothing but `authorization` to the router, so the role can only come
//!   from the token; tokens without it pair as in 0.9.0.
//! - `lease_end` (Unix seconds): when the lease ends, as the controller knew it at Dial;
//!   the router ends the stream then.
//!
//! Expiry (`exp`) is checked when a stream opens; a running stream outlives its token but
//! not its `lease_end`.

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
    /// Which side of the stream the token is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<StreamRole>,
    /// When the lease ends (Unix seconds), as known when the token was minted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_end: Option<i64>,
}

/// The side of a stream a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamRole {
    Client,
    Exporter,
}

impl StreamRole {
    /// The claim's value.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamRole::Client => "client",
            StreamRole::Exporter => "exporter",
        }
    }
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
    role: Option<StreamRole>,
    lease_end: Option<i64>,
}

/// What a new stream token is for.
#[derive(Debug, Clone)]
pub struct StreamGrant {
    pub stream_id: String,
    pub token_id: String,
    pub lease: String,
}

/// The two tokens of one stream, from [`mint_pair`].
#[derive(Debug, Clone)]
pub struct PairTokens {
    /// For the client (the `DialResponse`).
    pub client: String,
    /// For the exporter (the `ListenResponse`).
    pub exporter: String,
}

/// Mints the two tokens of one stream, valid from `now` for `lifetime`: the same claims
/// but `role` (and `jti`, suffixed with the role), plus `lease_end` if given.
pub fn mint_pair(
    key: &SigningKey,
    grant: &StreamGrant,
    lease_end: Option<OffsetDateTime>,
    lifetime: Duration,
    now: OffsetDateTime,
) -> Result<PairTokens, TokenError> {
    let one = |role: StreamRole| {
        let mut claims = claims_of(grant, lifetime, now);
        claims.jti = format!("{}-{}", grant.token_id, role.as_str());
        claims.role = Some(role);
        claims.lease_end = lease_end.map(OffsetDateTime::unix_timestamp);
        jws::sign(key, &claims)
    };
    Ok(PairTokens {
        client: one(StreamRole::Client)?,
        exporter: one(StreamRole::Exporter)?,
    })
}

/// Mints one router token for both sides, without role nor lease end (0.9.0's layout),
/// valid from `now` for `lifetime`.
pub fn mint(
    key: &SigningKey,
    grant: &StreamGrant,
    lifetime: Duration,
    now: OffsetDateTime,
) -> Result<String, TokenError> {
    jws::sign(key, &claims_of(grant, lifetime, now))
}

fn claims_of(grant: &StreamGrant, lifetime: Duration, now: OffsetDateTime) -> Claims {
    let now_s = now.unix_timestamp();
    Claims {
        iss: ISSUER.into(),
        aud: vec![AUDIENCE.into()],
        sub: grant.stream_id.clone(),
        iat: now_s,
        nbf: now_s,
        exp: (now + lifetime).unix_timestamp(),
        jti: grant.token_id.clone(),
        lease: Some(grant.lease.clone()),
        role: None,
        lease_end: None,
    }
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
        role: raw.role,
        lease_end: raw.lease_end,
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
    fn a_pair_has_one_token_per_role_with_the_lease_end() {
        let key = SigningKey::generate().expect("key");
        let keys = [key.verifying_key().clone()];
        let now = datetime!(2026-11-29 12:00 UTC);
        let end = now + Duration::minutes(10);
        let pair = mint_pair(&key, &grant(), Some(end), Duration::minutes(30), now).expect("mint");
        let client = verify(&keys, &pair.client, now).expect("client");
        let exporter = verify(&keys, &pair.exporter, now).expect("exporter");
        assert_eq!(client.role, Some(StreamRole::Client));
        assert_eq!(exporter.role, Some(StreamRole::Exporter));
        assert_eq!(client.sub, exporter.sub);
        assert_eq!(client.lease_end, Some(end.unix_timestamp()));
        assert_eq!(exporter.lease_end, client.lease_end);
        assert_ne!(client.jti, exporter.jti);
        // The single token of 0.9.0's layout has neither.
        let single = mint(&key, &grant(), Duration::minutes(2), now).expect("mint");
        let single = verify(&keys, &single, now).expect("single");
        assert_eq!((single.role, single.lease_end), (None, None));
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
