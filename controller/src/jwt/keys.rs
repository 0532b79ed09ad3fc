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

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    fn ec_key(
        alg: &'static rcgen::SignatureAlgorithm,
        jwt_alg: Algorithm,
    ) -> (EncodingKey, serde_json::Value) {
        let pair = rcgen::KeyPair::generate_for(alg).expect("key");
        let encoding = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("pem");
        let jwk = Jwk::from_encoding_key(&encoding, jwt_alg).expect("jwk");
        (encoding, serde_json::to_value(jwk).expect("json"))
    }

    fn sign(key: &EncodingKey, alg: Algorithm, kid: Option<&str>) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, &json!({"sub": "x"}), key).expect("sign")
    }

    #[test]
    fn unusable_keys_are_skipped_not_fatal() {
        let (_, p256) = ec_key(&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256);
        let mut enc = p256.clone();
        enc["use"] = json!("enc");
        let document = json!({"keys": [
            p256,
            enc,
            {"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "kid": "hmac"},
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA", "kid": "p521"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "RSA", "kid": "broken"},
            "not an object",
        ]});
        let (keys, skipped) = KeySet::from_jwks(document.to_string().as_bytes()).expect("jwks");
        assert_eq!((keys.len(), skipped), (1, 6));
        assert!(KeySet::from_jwks(b"{\"kees\": []}").is_err());
    }

    #[test]
    fn a_key_only_verifies_the_algorithm_it_fits() {
        let (p256_key, mut p256) = ec_key(&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256);
        let (p384_key, mut p384) = ec_key(&rcgen::PKCS_ECDSA_P384_SHA384, Algorithm::ES384);
        p256["kid"] = json!("p256");
        p384["kid"] = json!("p384");
        let document = json!({"keys": [p256, p384]}).to_string();
        let (keys, _) = KeySet::from_jwks(document.as_bytes()).expect("jwks");

        let es256 = sign(&p256_key, Algorithm::ES256, Some("p256"));
        assert_eq!(
            keys.check(&es256, Algorithm::ES256, Some("p256")),
            SignatureCheck::Verified
        );
        // Without a kid every key is tried.
        assert_eq!(
            keys.check(&es256, Algorithm::ES256, None),
            SignatureCheck::Verified
        );
        let es384 = sign(&p384_key, Algorithm::ES384, Some("p384"));
        assert_eq!(
            keys.check(&es384, Algorithm::ES384, Some("p384")),
            SignatureCheck::Verified
        );
        // A P-384 key named by an ES256 token does not verify it.
        let wrong = sign(&p256_key, Algorithm::ES256, Some("p384"));
        assert_eq!(
            keys.check(&wrong, Algorithm::ES256, Some("p384")),
            SignatureCheck::Invalid
        );
        // An unknown kid, or no kid and no key verifying: worth a refetch.
        assert_eq!(
            keys.check(&es256, Algorithm::ES256, Some("p999")),
            SignatureCheck::NoMatchingKey
        );
        let (stranger, _) = ec_key(&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256);
        let unsigned = sign(&stranger, Algorithm::ES256, None);
        assert_eq!(
            keys.check(&unsigned, Algorithm::ES256, None),
            SignatureCheck::NoMatchingKey
        );
    }
}
