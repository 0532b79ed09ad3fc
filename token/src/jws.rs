//! Signing and signature checking; claim checks are left to the callers, which take `now`.

use jsonwebtoken::{Algorithm, Header, Validation};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{SigningKey, TokenError, VerifyingKey};

pub(crate) fn sign<C: Serialize>(key: &SigningKey, claims: &C) -> Result<String, TokenError> {
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some("JWT".into());
    jsonwebtoken::encode(&header, claims, key.encoding())
        .map_err(|e| TokenError::Signing(e.to_string()))
}

/// Checks the signature against any of `keys` (several during a key rotation) and
/// decodes the claims. Time, issuer and audience are NOT checked here.
pub(crate) fn verify<C: DeserializeOwned>(
    keys: &[VerifyingKey],
    token: &str,
) -> Result<C, TokenError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
    if header.alg != Algorithm::ES256 {
        return Err(TokenError::Malformed(format!(
            "algorithm {:?} is not accepted, only ES256",
            header.alg
        )));
    }
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let mut last = TokenError::BadSignature;
    for key in keys {
        match jsonwebtoken::decode::<C>(token, key.decoding(), &validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => {
                last = match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
                    _ => TokenError::Malformed(e.to_string()),
                }
            }
        }
    }
    Err(last)
}

/// An `aud` claim: a string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(untagged)]
pub(crate) enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub(crate) fn contains(&self, aud: &str) -> bool {
        match self {
            Audience::One(a) => a == aud,
            Audience::Many(v) => v.iter().any(|a| a == aud),
        }
    }

    pub(crate) fn to_vec(&self) -> Vec<String> {
        match self {
            Audience::One(a) => vec![a.clone()],
            Audience::Many(v) => v.clone(),
        }
    }
}
