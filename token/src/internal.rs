//! Credentials of clients and exporters: long-lived ES256 tokens issued by the controller.
//!
//! Claims follow 0.9.0: `iss`, `aud` (array), `sub` = [`Subject`], `iat`, `exp`; no `nbf`.
//! The subject embeds the object's UID, so deleting and re-creating a Client or Exporter
//! with the same name invalidates the old tokens.
//!
//! One claim is ours: `gen`, the credential generation of the object when the token was
//! issued (absent, i.e. 0, in tokens of 0.9.0 and of earlier releases). Rotating a
//! credential raises the object's generation; the controller refuses tokens of a lower
//! generation ([`Claims::generation`]), which is what makes rotation revoke.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::jws::{self, Audience};
use crate::{SigningKey, TokenError, VerifyingKey};

/// Issuer written into internal tokens. Same value as 0.9.0's internal issuer so that
/// tokens look familiar to operators; nothing resolves it.
pub const DEFAULT_ISSUER: &str = "https://localhost:8085";
/// Audience of internal tokens (0.9.0 value).
pub const DEFAULT_AUDIENCE: &str = "jumpstarter";

/// The kind of object a credential belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    Client,
    Exporter,
}

impl ObjectKind {
    /// The `jumpstarter-kind` metadata value and CR kind.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Client => "Client",
            ObjectKind::Exporter => "Exporter",
        }
    }

    fn subject_prefix(self) -> &'static str {
        match self {
            ObjectKind::Client => "client",
            ObjectKind::Exporter => "exporter",
        }
    }
}

/// `client:<ns>:<name>:<uid>` or `exporter:<ns>:<name>:<uid>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.kind.subject_prefix(),
            self.namespace,
            self.name,
            self.uid
        )
    }
}

impl FromStr for Subject {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Subject, TokenError> {
        let bad = || TokenError::BadSubject(s.to_owned());
        let mut parts = s.split(':');
        let kind = match parts.next() {
            Some("client") => ObjectKind::Client,
            Some("exporter") => ObjectKind::Exporter,
            _ => return Err(bad()),
        };
        let (Some(namespace), Some(name), Some(uid), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if namespace.is_empty() || name.is_empty() || uid.is_empty() {
            return Err(bad());
        }
        Ok(Subject {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: uid.to_owned(),
        })
    }
}

/// Decoded and verified claims of an internal token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: Vec<String>,
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    /// Credential generation (`gen`); 0 when absent.
    #[serde(default, rename = "gen", skip_serializing_if = "is_zero")]
    pub generation: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Deserialize)]
struct RawClaims {
    iss: Option<String>,
    aud: Option<Audience>,
    sub: Option<String>,
    iat: Option<i64>,
    exp: Option<i64>,
    #[serde(rename = "gen")]
    generation: Option<u64>,
}

/// Signs internal tokens.
#[derive(Debug, Clone)]
pub struct Issuer {
    pub key: SigningKey,
    pub issuer: String,
    pub audience: String,
    pub lifetime: Duration,
}

impl Issuer {
    /// Issues a token for `subject` of credential generation 0, valid from `now` for the
    /// configured lifetime.
    pub fn issue(
        &self,
        subject: &Subject,
        now: OffsetDateTime,
    ) -> Result<(String, OffsetDateTime), TokenError> {
        self.issue_generation(subject, 0, now)
    }

    /// Issues a token for `subject` of credential generation `generation`.
    pub fn issue_generation(
        &self,
        subject: &Subject,
        generation: u64,
        now: OffsetDateTime,
    ) -> Result<(String, OffsetDateTime), TokenError> {
        let exp = now + self.lifetime;
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: vec![self.audience.clone()],
            sub: subject.to_string(),
            iat: now.unix_timestamp(),
            exp: exp.unix_timestamp(),
            generation,
        };
        Ok((jws::sign(&self.key, &claims)?, exp))
    }

    /// A verifier that accepts what this issuer signs.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            keys: vec![self.key.verifying_key().clone()],
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
        }
    }
}

/// Verifies internal tokens: signature, issuer, audience, expiry.
#[derive(Debug, Clone)]
pub struct Verifier {
    pub keys: Vec<VerifyingKey>,
    pub issuer: String,
    pub audience: String,
}

impl Verifier {
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> Result<Claims, TokenError> {
        let raw: RawClaims = jws::verify(&self.keys, token)?;
        let missing = |c: &str| TokenError::Malformed(format!("claim {c} is missing"));
        let iss = raw.iss.ok_or_else(|| missing("iss"))?;
        if iss != self.issuer {
            return Err(TokenError::WrongIssuer(iss));
        }
        let aud = raw.aud.ok_or_else(|| missing("aud"))?;
        if !aud.contains(&self.audience) {
            return Err(TokenError::WrongAudience(aud.to_vec()));
        }
        let exp = raw.exp.ok_or_else(|| missing("exp"))?;
        let now_s = now.unix_timestamp();
        if now_s >= exp {
            return Err(TokenError::Expired { exp, now: now_s });
        }
        let sub = raw.sub.ok_or_else(|| missing("sub"))?;
        Ok(Claims {
            iss,
            aud: aud.to_vec(),
            sub,
            iat: raw.iat.unwrap_or(0),
            exp,
            generation: raw.generation.unwrap_or(0),
        })
    }
}

/// A [`Verifier`] that remembers the claims of tokens whose signature it checked, so a token
/// presented again (each call of a client, each reconcile pass over a credential) costs a
/// lookup instead of an ECDSA verification. Expiry is checked against `now` on every use;
/// only tokens that verified are remembered; when `capacity` tokens are remembered, it
/// forgets them all and starts over.
#[derive(Debug)]
pub struct CachedVerifier {
    verifier: Verifier,
    capacity: usize,
    seen: std::sync::Mutex<std::collections::HashMap<String, Claims>>,
}

impl CachedVerifier {
    /// Remembers at most `capacity` tokens.
    pub fn new(verifier: Verifier, capacity: usize) -> CachedVerifier {
        CachedVerifier {
            verifier,
            capacity: capacity.max(1),
            seen: std::sync::Mutex::default(),
        }
    }

    /// Like [`Verifier::verify`].
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> Result<Claims, TokenError> {
        let remembered = self.lock().get(token).cloned();
        if let Some(claims) = remembered {
            let now_s = now.unix_timestamp();
            if now_s >= claims.exp {
                return Err(TokenError::Expired {
                    exp: claims.exp,
                    now: now_s,
                });
            }
            return Ok(claims);
        }
        let claims = self.verifier.verify(token, now)?;
        let mut seen = self.lock();
        if seen.len() >= self.capacity {
            seen.clear();
        }
        seen.insert(token.to_owned(), claims.clone());
        Ok(claims)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Claims>> {
        // The map holds only verified claims; a panic elsewhere cannot make one wrong.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn cached_verification_still_checks_expiry_and_refuses_forgeries() {
        let issuer = issuer();
        let cached = CachedVerifier::new(issuer.verifier(), 2);
        let now = datetime!(2026-01-01 0:00 UTC);
        let subject = Subject {
            kind: ObjectKind::Client,
            namespace: "lab".into(),
            name: "alice".into(),
            uid: "u1".into(),
        };
        let (token, _) = issuer.issue(&subject, now).expect("issue");
        assert!(cached.verify(&token, now).is_ok());
        assert!(cached.verify(&token, now).is_ok(), "from the cache");
        let later = now + Duration::days(366);
        assert!(matches!(
            cached.verify(&token, later),
            Err(TokenError::Expired { .. })
        ));
        let other = Issuer {
            key: SigningKey::generate().expect("key"),
            ..issuer
        };
        let (forged, _) = other.issue(&subject, now).expect("issue");
        assert!(cached.verify(&forged, now).is_err(), "another key");
        assert!(cached.verify(&forged, now).is_err(), "and again");
        // Past capacity it starts over and still verifies.
        for name in ["bob", "carol", "dave"] {
            let (t, _) = other
                .issue(
                    &Subject {
                        name: name.into(),
                        ..subject.clone()
                    },
                    now,
                )
                .expect("issue");
            assert!(cached.verify(&t, now).is_err());
        }
        assert!(cached.verify(&token, now).is_ok());
    }

    fn issuer() -> Issuer {
        Issuer {
            key: SigningKey::generate().expect("key"),
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
            lifetime: Duration::days(365),
        }
    }

    fn subject() -> Subject {
        Subject {
            kind: ObjectKind::Client,
            namespace: "lab".into(),
            name: "alice".into(),
            uid: "1234-abcd".into(),
        }
    }

    #[test]
    fn issued_token_verifies_and_carries_the_subject() {
        let now = datetime!(2026-11-29 12:00 UTC);
        let iss = issuer();
        let (token, exp) = iss.issue(&subject(), now).expect("issue");
        assert_eq!(exp, now + Duration::days(365));
        let claims = iss
            .verifier()
            .verify(&token, now + Duration::days(1))
            .expect("verify");
        assert_eq!(claims.sub, "client:lab:alice:1234-abcd");
        assert_eq!(claims.sub.parse::<Subject>().expect("subject"), subject());
        assert_eq!(claims.aud, vec!["jumpstarter".to_string()]);
    }

    #[test]
    fn expired_token_says_token_is_expired() {
        let now = datetime!(2026-11-29 12:00 UTC);
        let iss = issuer();
        let (token, _) = iss.issue(&subject(), now).expect("issue");
        let err = iss
            .verifier()
            .verify(&token, now + Duration::days(366))
            .expect_err("expired");
        assert!(matches!(err, TokenError::Expired { .. }));
        assert!(err.to_string().contains("token is expired"));
    }

    #[test]
    fn other_key_wrong_issuer_and_garbage_are_refused() {
        let now = datetime!(2026-11-29 12:00 UTC);
        let iss = issuer();
        let (token, _) = iss.issue(&subject(), now).expect("issue");
        let other = issuer();
        assert_eq!(
            other.verifier().verify(&token, now),
            Err(TokenError::BadSignature)
        );
        let mut wrong = iss.verifier();
        wrong.issuer = "https://elsewhere".into();
        assert!(matches!(
            wrong.verify(&token, now),
            Err(TokenError::WrongIssuer(_))
        ));
        let mut wrong = iss.verifier();
        wrong.audience = "router".into();
        assert!(matches!(
            wrong.verify(&token, now),
            Err(TokenError::WrongAudience(_))
        ));
        assert!(matches!(
            iss.verifier().verify("not.a.jwt", now),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            iss.verifier().verify("", now),
            Err(TokenError::Malformed(_))
        ));
        // Flip one character of the signature.
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert!(iss.verifier().verify(&tampered, now).is_err());
    }

    #[test]
    fn subjects_parse_strictly() {
        for bad in [
            "",
            "client",
            "client:lab:alice",
            "user:lab:alice:1",
            "client:lab:alice:1:2",
            "client::alice:1",
        ] {
            assert!(bad.parse::<Subject>().is_err(), "{bad:?} should be refused");
        }
        let s: Subject = "exporter:lab:board-1:uid".parse().expect("parse");
        assert_eq!(s.kind, ObjectKind::Exporter);
    }

    #[test]
    fn signing_key_round_trips_through_pem() {
        let key = SigningKey::generate().expect("key");
        let again = SigningKey::from_pkcs8_pem(key.to_pkcs8_pem()).expect("load");
        assert_eq!(
            key.verifying_key().to_public_pem(),
            again.verifying_key().to_public_pem()
        );
        assert!(
            SigningKey::from_pkcs8_pem(
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            )
            .is_err()
        );
        let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519");
        assert!(SigningKey::from_pkcs8_pem(&rsa.serialize_pem()).is_err());
    }
}
