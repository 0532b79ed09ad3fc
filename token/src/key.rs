//! ES256 key pairs: generated, stored as PKCS#8 PEM, public half as SPKI PEM; bundles of
//! public keys (several during a key rotation) as concatenated PEM blocks.

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

/// Why a PEM bundle of public keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyBundleError {
    #[error("public key #{index} in the bundle is not usable")]
    BadKey {
        index: usize,
        #[source]
        source: TokenError,
    },
    #[error("public key #{index} in the bundle has no END line")]
    Unterminated { index: usize },
    #[error("the bundle holds no PUBLIC KEY block")]
    Empty,
}

/// Reads every `PUBLIC KEY` block of a PEM bundle; several keys allow rotation (a token
/// signed by any of them is accepted). Other block types are ignored.
pub fn public_keys_from_pem(bundle: &str) -> Result<Vec<VerifyingKey>, KeyBundleError> {
    const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
    const END: &str = "-----END PUBLIC KEY-----";
    let mut keys = Vec::new();
    let mut block: Option<String> = None;
    for line in bundle.lines().map(str::trim) {
        match block.as_mut() {
            None if line == BEGIN => block = Some(format!("{BEGIN}\n")),
            None => {}
            Some(pem) => {
                pem.push_str(line);
                pem.push('\n');
                if line == END {
                    let index = keys.len();
                    let key = VerifyingKey::from_public_pem(pem)
                        .map_err(|source| KeyBundleError::BadKey { index, source })?;
                    keys.push(key);
                    block = None;
                }
            }
        }
    }
    if block.is_some() {
        return Err(KeyBundleError::Unterminated { index: keys.len() });
    }
    if keys.is_empty() {
        return Err(KeyBundleError::Empty);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_hold_several_keys() {
        let a = SigningKey::generate().expect("key");
        let b = SigningKey::generate().expect("key");
        let bundle = format!(
            "# rotation\n{}\n{}",
            a.verifying_key().to_public_pem(),
            b.verifying_key().to_public_pem()
        );
        let keys = public_keys_from_pem(&bundle).expect("bundle");
        assert_eq!(keys.len(), 2);
        assert!(matches!(
            public_keys_from_pem("nothing here"),
            Err(KeyBundleError::Empty)
        ));
        assert!(matches!(
            public_keys_from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n"),
            Err(KeyBundleError::Unterminated { index: 0 })
        ));
        assert!(matches!(
            public_keys_from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
            Err(KeyBundleError::BadKey { index: 0, .. })
        ));
    }
}
