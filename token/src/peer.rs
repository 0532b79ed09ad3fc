//! Tokens controller replicas present to each other on the peer channel
//! (`jumpstarter.peer.v1.PeerService`).
//!
//! Signed with the same internal key as client and exporter credentials (every replica
//! has it, from the shared keys Secret), but for their own audience [`AUDIENCE`] and with
//! the subject `controller-peer:<replica>`: a client or exporter credential is no peer
//! token, and a peer token is no client or exporter credential (its audience is not
//! theirs, and its subject names no Client or Exporter). Short-lived: a replica mints a
//! fresh one every few minutes.

use time::{Duration, OffsetDateTime};

use crate::internal::{Claims, Verifier};
use crate::{SigningKey, TokenError, VerifyingKey, jws};

/// Audience of peer tokens.
pub const AUDIENCE: &str = "jumpstarter-controller-peer";
/// Prefix of a peer token's subject; the replica's `<identity>/<incarnation>` follows.
pub const SUBJECT_PREFIX: &str = "controller-peer:";

/// Mints a peer token for `replica` (its text form), valid from `now` for `lifetime`.
pub fn mint(
    key: &SigningKey,
    issuer: &str,
    replica: &str,
    lifetime: Duration,
    now: OffsetDateTime,
) -> Result<String, TokenError> {
    let claims = Claims {
        iss: issuer.to_owned(),
        aud: vec![AUDIENCE.to_owned()],
        sub: format!("{SUBJECT_PREFIX}{replica}"),
        iat: now.unix_timestamp(),
        exp: (now + lifetime).unix_timestamp(),
        generation: 0,
    };
    jws::sign(key, &claims)
}

/// Verifies a peer token against `keys` (the internal signing key and the ones still
/// accepted) and `issuer`; returns the replica it names.
pub fn verify(
    keys: &[VerifyingKey],
    issuer: &str,
    token: &str,
    now: OffsetDateTime,
) -> Result<String, TokenError> {
    let verifier = Verifier {
        keys: keys.to_vec(),
        issuer: issuer.to_owned(),
        audience: AUDIENCE.to_owned(),
    };
    let claims = verifier.verify(token, now)?;
    match claims.sub.strip_prefix(SUBJECT_PREFIX) {
        Some(replica) if !replica.is_empty() => Ok(replica.to_owned()),
        _ => Err(TokenError::BadSubject(claims.sub)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::internal::{DEFAULT_AUDIENCE, DEFAULT_ISSUER, Issuer, ObjectKind, Subject};

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
    }

    #[test]
    fn a_peer_token_verifies_as_peer_only() {
        let key = SigningKey::generate().unwrap();
        let keys = [key.verifying_key().clone()];
        let token = mint(
            &key,
            DEFAULT_ISSUER,
            "c-0/0a1b2c3d",
            Duration::minutes(5),
            now(),
        )
        .unwrap();
        assert_eq!(
            verify(&keys, DEFAULT_ISSUER, &token, now()).unwrap(),
            "c-0/0a1b2c3d"
        );
        // Not a client or exporter credential: another audience.
        let credentials = Issuer {
            key: key.clone(),
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
            lifetime: Duration::hours(1),
        };
        assert!(matches!(
            credentials.verifier().verify(&token, now()),
            Err(TokenError::WrongAudience(_))
        ));
        // And a client credential is no peer token.
        let subject = Subject {
            kind: ObjectKind::Client,
            namespace: "lab".into(),
            name: "alice".into(),
            uid: "u".into(),
        };
        let (client, _) = credentials.issue(&subject, now()).unwrap();
        assert!(matches!(
            verify(&keys, DEFAULT_ISSUER, &client, now()),
            Err(TokenError::WrongAudience(_))
        ));
    }

    #[test]
    fn expired_foreign_or_subjectless_peer_tokens_are_refused() {
        let key = SigningKey::generate().unwrap();
        let keys = [key.verifying_key().clone()];
        let token = mint(&key, DEFAULT_ISSUER, "c-0/1", Duration::minutes(5), now()).unwrap();
        assert!(matches!(
            verify(&keys, DEFAULT_ISSUER, &token, now() + Duration::minutes(5)),
            Err(TokenError::Expired { .. })
        ));
        let other = SigningKey::generate().unwrap();
        assert_eq!(
            verify(
                &[other.verifying_key().clone()],
                DEFAULT_ISSUER,
                &token,
                now()
            ),
            Err(TokenError::BadSignature)
        );
        let nobody = mint(&key, DEFAULT_ISSUER, "", Duration::minutes(5), now()).unwrap();
        assert!(matches!(
            verify(&keys, DEFAULT_ISSUER, &nobody, now()),
            Err(TokenError::BadSubject(_))
        ));
    }
}
