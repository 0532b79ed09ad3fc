//! Who may open a stream: the `authorization: Bearer <router token>` header, verified
//! against the controller's public keys ([`TokenKeys`], replaceable while the router runs:
//! the controller's new key signs, old keys verify until they leave the bundle).

use std::sync::{Arc, RwLock};

pub use jumpstarter_token::key::{KeyBundleError, public_keys_from_pem};
use jumpstarter_token::router::Claims;
use jumpstarter_token::{TokenError, VerifyingKey};
use time::OffsetDateTime;
use tonic::metadata::MetadataMap;

/// Why a stream was not authenticated. The text is what the caller sees; it never
/// contains the token.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing authorization header")]
    MissingHeader,
    #[error("malformed authorization header: {0}")]
    MalformedHeader(&'static str),
    #[error("invalid router token: {0}")]
    InvalidToken(#[source] TokenError),
}

impl AuthError {
    /// A stable, low-cardinality name for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::MissingHeader => "missing_header",
            AuthError::MalformedHeader(_) => "malformed_header",
            AuthError::InvalidToken(e) => e.reason(),
        }
    }
}

impl From<AuthError> for tonic::Status {
    fn from(error: AuthError) -> Self {
        tonic::Status::unauthenticated(error.to_string())
    }
}

/// The public keys router tokens may be signed with, shared by every stream and replaced as
/// a whole when the key bundle changes. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct TokenKeys(Arc<RwLock<Arc<Vec<VerifyingKey>>>>);

impl TokenKeys {
    /// The keys accepted now.
    pub fn current(&self) -> Arc<Vec<VerifyingKey>> {
        // Writers only swap a complete bundle in; a poisoned lock still holds a whole one.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Accepts `keys` instead, from the next stream on.
    pub fn replace(&self, keys: Vec<VerifyingKey>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
    }
}

impl From<Vec<VerifyingKey>> for TokenKeys {
    fn from(keys: Vec<VerifyingKey>) -> Self {
        TokenKeys(Arc::new(RwLock::new(Arc::new(keys))))
    }
}

/// Verifies the bearer token of a stream's call metadata at `now` and returns its claims.
pub(crate) fn authenticate(
    metadata: &MetadataMap,
    keys: &[VerifyingKey],
    now: OffsetDateTime,
) -> Result<Claims, AuthError> {
    let value = metadata
        .get("authorization")
        .ok_or(AuthError::MissingHeader)?;
    let value = value
        .to_str()
        .map_err(|_| AuthError::MalformedHeader("not printable ASCII"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(AuthError::MalformedHeader("expected \"Bearer <token>\""))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MalformedHeader("the scheme is not Bearer"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::MalformedHeader("the token is empty"));
    }
    jumpstarter_token::router::verify(keys, token, now).map_err(AuthError::InvalidToken)
}

#[cfg(test)]
mod tests {
    use jumpstarter_token::SigningKey;
    use jumpstarter_token::router::{StreamGrant, mint};
    use time::Duration;
    use tonic::metadata::MetadataValue;

    use super::*;

    fn metadata(value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert(
            "authorization",
            MetadataValue::try_from(value).expect("ascii"),
        );
        map
    }

    #[test]
    fn header_shapes() {
        let key = SigningKey::generate().expect("key");
        let keys = [key.verifying_key().clone()];
        let now = OffsetDateTime::now_utc();
        let grant = StreamGrant {
            stream_id: "s-1".into(),
            token_id: "j-1".into(),
            lease: "lab/l".into(),
        };
        let token = mint(&key, &grant, Duration::minutes(5), now).expect("mint");

        let claims = authenticate(&metadata(&format!("Bearer {token}")), &keys, now).expect("ok");
        assert_eq!(claims.sub, "s-1");
        assert!(authenticate(&metadata(&format!("bearer {token}")), &keys, now).is_ok());

        assert_eq!(
            authenticate(&MetadataMap::new(), &keys, now),
            Err(AuthError::MissingHeader)
        );
        let basic = authenticate(&metadata(&format!("Basic {token}")), &keys, now);
        assert_eq!(basic.map_err(|e| e.reason()), Err("malformed_header"));
        let bare = authenticate(&metadata(&token), &keys, now);
        assert_eq!(bare.map_err(|e| e.reason()), Err("malformed_header"));
        let garbage = authenticate(&metadata("Bearer not.a.jwt"), &keys, now);
        assert_eq!(garbage.map_err(|e| e.reason()), Err("malformed"));
        let late = authenticate(
            &metadata(&format!("Bearer {token}")),
            &keys,
            now + Duration::minutes(6),
        )
        .expect_err("expired");
        assert!(
            late.to_string()
                .starts_with("invalid router token: token is expired"),
            "{late}"
        );
        assert!(!late.to_string().contains(&token));
    }
}
