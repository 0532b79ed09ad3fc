//! An issuer's signing keys, from its JWKS document, and the signature check against them.
//!
//! Keys the service cannot use are skipped, not fatal: encryption keys (`use: enc`),
//! symmetric (`oct`) and Edwards keys, curves other than P-256/P-384, malformed entries. A
//! token's `alg` must fit the key: its family, its curve, and the JWK's own `alg` if given.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// The signature algorithms accepted, in the order go-oidc lists them (no HMAC, no `none`;
/// ES512 is missing from the crypto backend).
pub(crate) const SUPPORTED_ALGORITHMS: [&str; 8] = [
    "RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "PS384", "PS512",
];

/// One usable verification key.
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    /// The JWK's `alg`, when it names one: only that algorithm may use the key.
    alg: Option<Algorithm>,
    /// The curve of an EC key (P-256 for ES256, P-384 for ES384).
    curve: Option<EllipticCurve>,
    rsa: bool,
    key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("curve", &self.curve)
            .field("rsa", &self.rsa)
            .finish_non_exhaustive()
    }
}

/// The keys of one JWKS document.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeySet {
    keys: Vec<Key>,
}

/// What checking a signature against a [`KeySet`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignatureCheck {
    Verified,
    /// No key carries the token's `kid` (or, without a `kid`, none verified it): the
    /// issuer may have rotated its keys, worth one refetch.
    NoMatchingKey,
    /// A key with the token's `kid` exists and the signature does not verify with it.
    Invalid,
}

impl KeySet {
    /// Parses a JWKS document; keys it cannot use are skipped and counted.
    pub(crate) fn from_jwks(document: &[u8]) -> Result<(KeySet, usize), String> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(document)
            .map_err(|e| format!("key set is not a JWKS document: {e}"))?;
        let mut keys = Vec::with_capacity(document.keys.len());
        let mut skipped = 0;
        for value in document.keys {
            match serde_json::from_value::<Jwk>(value).ok().and_then(usable) {
                Some(key) => keys.push(key),
                None => skipped += 1,
            }
        }
        Ok((KeySet { keys }, skipped))
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Checks the signature of `token` (a compact JWS whose header says `alg` and `kid`).
    pub(crate) fn check(&self, token: &str, alg: Algorithm, kid: Option<&str>) -> SignatureCheck {
        let mut candidates = self
            .keys
            .iter()
            .filter(|key| kid.is_none() || key.kid.as_deref() == kid)
            .peekable();
        if candidates.peek().is_none() {
            return SignatureCheck::NoMatchingKey;
        }
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let verified = candidates.filter(|key| key.fits(alg)).any(|key| {
            jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation).is_ok()
        });
        match (verified, kid) {
            (true, _) => SignatureCheck::Verified,
            (false, Some(_)) => SignatureCheck::Invalid,
            (false, None) => SignatureCheck::NoMatchingKey,
        }
    }
}

impl Key {
    fn fits(&self, alg: Algorithm) -> bool {
        if self.alg.is_some_and(|own| own != alg) {
            return false;
        }
        match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => self.rsa,
            Algorithm::ES256 => self.curve == Some(EllipticCurve::P256),
            Algorithm::ES384 => self.curve == Some(EllipticCurve::P384),
            _ => false,
        }
    }
}

/// The key of a JWK if this service can verify signatures with it.
fn usable(jwk: Jwk) -> Option<Key> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(alg) => {
            let name = alg.to_string();
            if !SUPPORTED_ALGORITHMS.contains(&name.as_str()) {
                return None;
            }
            Some(name.parse::<Algorithm>().ok()?)
        }
    };
    let (curve, rsa) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (None, true),
        AlgorithmParameters::EllipticCurve(ec)
            if matches!(ec.curve, EllipticCurve::P256 | EllipticCurve::P384) =>
        {
            (Some(ec.curve.clone()), false)
        }
        _ => return None,
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id,
        alg,
        curve,
        rsa,
        key,
    })
}
