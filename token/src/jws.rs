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
    let alg = header_algorithm(token)?;
    if alg != "ES256" {
        return Err(TokenError::Algorithm(alg));
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

/// The `alg` of a compact JWS header, read without trusting anything else in the token:
/// the algorithm is checked before any key is touched, so a token naming `none`, an HMAC
/// or another curve is refused as such, not as a bad signature.
pub(crate) fn header_algorithm(token: &str) -> Result<String, TokenError> {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    struct RawHeader {
        alg: Option<String>,
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "not a compact JWS (three dot-separated parts)".into(),
        ));
    };
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|e| TokenError::Malformed(format!("header is not base64url: {e}")))?;
    let raw: RawHeader = serde_json::from_slice(&json)
        .map_err(|e| TokenError::Malformed(format!("header is not a JSON object: {e}")))?;
    raw.alg
        .ok_or_else(|| TokenError::Malformed("header has no alg".into()))
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
