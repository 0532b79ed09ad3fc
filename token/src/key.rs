//! ES256 key pairs: generated, stored as PKCS#8 PEM, public half as SPKI PEM.

use jsonwebtoken::{DecodingKey, EncodingKey};

use crate::TokenError;

/// A private ES256 key that signs tokens. Its PEM is a secret: never log it.
#[derive(Clone)]
pub struct SigningKey {
    pem: String,
    encoding: EncodingKey,
    verifying: VerifyingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh random P-256 key.
    pub fn generate() -> Result<SigningKey, TokenError> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| TokenError::BadKey(e.to_string()))?;
        SigningKey::from_pkcs8_pem(&pair.serialize_pem())
    }

    /// Loads a PKCS#8 PEM P-256 private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<SigningKey, TokenError> {
        let pair = rcgen::KeyPair::from_pem(pem)
            .map_err(|e| TokenError::BadKey(format!("not a PKCS#8 private key: {e}")))?;
        if !pair.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
            return Err(TokenError::BadKey(
                "the key is not an ECDSA P-256 key".into(),
            ));
        }
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes())
            .map_err(|e| TokenError::BadKey(e.to_string()))?;
        let verifying = VerifyingKey::from_public_pem(&pair.public_key_pem())?;
        Ok(SigningKey {
            pem: pem.to_owned(),
            encoding,
            verifying,
        })
    }

    /// The private key as PKCS#8 PEM, for storing in a Secret or a 0600 file.
    pub fn to_pkcs8_pem(&self) -> &str {
        &self.pem
    }

    /// The public half.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.verifying
    }

    pub(crate) fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }
}

/// A public ES256 key that verifies tokens.
#[derive(Clone)]
pub struct VerifyingKey {
    pem: String,
    decoding: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("pem", &self.pem)
            .finish()
    }
}

impl VerifyingKey {
    /// Loads an SPKI ("PUBLIC KEY") PEM P-256 public key.
    pub fn from_public_pem(pem: &str) -> Result<VerifyingKey, TokenError> {
        let decoding = DecodingKey::from_ec_pem(pem.as_bytes())
            .map_err(|e| TokenError::BadKey(format!("not an EC public key: {e}")))?;
        Ok(VerifyingKey {
            pem: pem.to_owned(),
            decoding,
        })
    }

    /// The public key as SPKI PEM, safe to publish.
    pub fn to_public_pem(&self) -> &str {
        &self.pem
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }
}
