//! Bearer tokens of the Jumpstarter service, as pure functions that take `now`.
//!
//! Two kinds, both JWS **ES256** (ECDSA P-256), so that whoever verifies needs only the
//! public key:
//! - [`internal`]: long-lived credentials of clients and exporters, issued by the
//!   controller (`sub` = `client:<ns>:<name>:<uid>` or `exporter:<ns>:<name>:<uid>`),
//!   carried as `authorization: Bearer` on every controller call (0.9.0 claim layout).
//! - [`router`]: short-lived stream tokens minted at Dial; the same token goes to the
//!   client and the exporter, and the router pairs the two streams by its `sub`.
//!
//! - [`peer`]: short-lived tokens controller replicas present to each other (signed with
//!   the internal key, for their own audience).
//!
//! - [`legacy`]: the signing key a jumpstarter 0.9.0 controller derives from its
//!   `CONTROLLER_KEY`, so that the tokens it issued keep verifying.
//!
//! Map: [`key`] (key pairs, PEM), [`legacy`], [`internal`], [`router`], [`peer`], [`TokenError`].

pub mod internal;
pub mod key;
pub mod legacy;
pub mod peer;
pub mod router;

mod jws;

pub use key::{SigningKey, VerifyingKey};

/// Why a token was refused. The variant name is the metric label; the text is what
/// callers see (0.9.0 clients look for "token is expired" to re-authenticate).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token signature is invalid")]
    BadSignature,
    /// The header names another algorithm than ES256 (`none`, an HMAC, another curve):
    /// refused before any key is used, so no key can be misused as an HMAC secret.
    #[error("token algorithm {0:?} is not accepted, only ES256")]
    Algorithm(String),
    #[error("token is expired (exp {exp}, now {now})")]
    Expired { exp: i64, now: i64 },
    #[error("token is not valid yet (nbf {nbf}, now {now})")]
    NotYetValid { nbf: i64, now: i64 },
    #[error("token was issued in the future (iat {iat}, now {now})")]
    IssuedInFuture { iat: i64, now: i64 },
    #[error("token issuer {0:?} is not accepted")]
    WrongIssuer(String),
    #[error("token audience {0:?} is not accepted")]
    WrongAudience(Vec<String>),
    #[error("token subject {0:?} is not valid")]
    BadSubject(String),
    #[error("invalid key: {0}")]
    BadKey(String),
    #[error("cannot sign token: {0}")]
    Signing(String),
}

impl TokenError {
    /// A stable, low-cardinality name for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "malformed",
            TokenError::BadSignature => "bad_signature",
            TokenError::Algorithm(_) => "bad_algorithm",
            TokenError::Expired { .. } => "expired",
            TokenError::NotYetValid { .. } => "not_yet_valid",
            TokenError::IssuedInFuture { .. } => "issued_in_future",
            TokenError::WrongIssuer(_) => "wrong_issuer",
            TokenError::WrongAudience(_) => "wrong_audience",
            TokenError::BadSubject(_) => "bad_subject",
            TokenError::BadKey(_) => "bad_key",
            TokenError::Signing(_) => "signing",
        }
    }
}
