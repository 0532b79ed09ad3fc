//! Credentials issued by a jumpstarter 0.9.0 controller, kept valid.
//!
//! A 0.9.0 controller signs client and exporter tokens with a key it derives from its
//! `CONTROLLER_KEY` (the `key` of Secret [`LEGACY_SECRET`], created by its Helm chart or
//! operator); the tokens live on in `<name>-client` / `<name>-exporter` Secrets and in
//! configuration files on users' machines. When that key is known, its public half
//! ([`jumpstarter_token::legacy::derive_signing_key`]) joins the keys that verify client
//! and exporter credentials ([`super::live::TokenKeySet::legacy_verify_key`]), so those
//! tokens keep working and the reconcile loop keeps the Secrets holding them. New tokens
//! are still signed with this controller's own key.
//!
//! Where the key comes from, in order: `--legacy-controller-key` / `CONTROLLER_KEY`
//! ([`crate::flags::legacy_key::LegacyKeyArgs`]); in Kubernetes mode, Secret
//! [`LEGACY_SECRET`] key [`LEGACY_SECRET_KEY`] when it exists (read at start). The key is
//! never logged, only where it came from.

use std::fmt;

use jumpstarter_token::legacy::derive_signing_key;
use jumpstarter_token::{TokenError, VerifyingKey};
use k8s_openapi::api::core::v1::Secret;

use super::Keys;
use crate::store::{Store, StoreError};

/// The Secret in which 0.9.0 installations keep the controller key.
pub const LEGACY_SECRET: &str = "jumpstarter-controller-secret";
/// The key of [`LEGACY_SECRET`] holding it (given to the 0.9.0 controller as `CONTROLLER_KEY`).
pub const LEGACY_SECRET_KEY: &str = "key";

/// Where the 0.9.0 controller key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegacyKeySource {
    /// `--legacy-controller-key` or `CONTROLLER_KEY`.
    Given,
    /// A Secret, `namespace/name`.
    Secret { namespace: String, name: String },
}

impl fmt::Display for LegacyKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LegacyKeySource::Given => f.write_str("from CONTROLLER_KEY"),
            LegacyKeySource::Secret { namespace, name } => {
                write!(f, "from Secret {namespace}/{name}")
            }
        }
    }
}

/// The public key of a 0.9.0 controller and where its key came from.
#[derive(Debug, Clone)]
pub struct LegacyKey {
    pub verifying_key: VerifyingKey,
    pub source: LegacyKeySource,
}

/// Why the 0.9.0 controller key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LegacyKeyError {
    /// Reading the Secret failed (other than not found or forbidden).
    #[error("read Secret {namespace}/{name}")]
    Store {
        namespace: String,
        name: String,
        #[source]
        source: Box<StoreError>,
    },
    /// The derivation failed (it does not for any input; kept for the library's error).
    #[error("derive the 0.9.0 controller key {source_name}")]
    Derive {
        source_name: LegacyKeySource,
        #[source]
        source: TokenError,
    },
}

impl LegacyKey {
    /// The public key a 0.9.0 controller derived from `controller_key`.
    pub fn derive(controller_key: &[u8], source: LegacyKeySource) -> Result<Self, LegacyKeyError> {
        let key = derive_signing_key(controller_key).map_err(|e| LegacyKeyError::Derive {
            source_name: source.clone(),
            source: e,
        })?;
        Ok(LegacyKey {
            verifying_key: key.verifying_key().clone(),
            source,
        })
    }
}

/// Kubernetes mode: the key `given` by flag or environment, else the one in Secret
/// [`LEGACY_SECRET`] of `namespace` if it exists. A Secret without [`LEGACY_SECRET_KEY`],
/// or one the controller may not read, is logged as a warning and gives `None`.
pub async fn find<S: Store>(
    store: &S,
    namespace: &str,
    given: Option<&[u8]>,
) -> Result<Option<LegacyKey>, LegacyKeyError> {
    if let Some(value) = given {
        return LegacyKey::derive(value, LegacyKeySource::Given).map(Some);
    }
    let secret = match store.get::<Secret>(namespace, LEGACY_SECRET).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return Ok(None),
        Err(error @ StoreError::Forbidden { .. }) => {
            tracing::warn!(
                %error,
                secret = LEGACY_SECRET,
                "cannot read the Secret of a 0.9.0 controller key: its tokens are not accepted (allow `get` on it, or set CONTROLLER_KEY)"
            );
            return Ok(None);
        }
        Err(source) => {
            return Err(LegacyKeyError::Store {
                namespace: namespace.to_owned(),
                name: LEGACY_SECRET.to_owned(),
                source: Box::new(source),
            });
        }
    };
    let Some(value) = secret.data.as_ref().and_then(|d| d.get(LEGACY_SECRET_KEY)) else {
        tracing::warn!(
            namespace,
            secret = LEGACY_SECRET,
            key = LEGACY_SECRET_KEY,
            "the Secret of a 0.9.0 controller key has no such key: its tokens are not accepted"
        );
        return Ok(None);
    };
    let source = LegacyKeySource::Secret {
        namespace: namespace.to_owned(),
        name: LEGACY_SECRET.to_owned(),
    };
    LegacyKey::derive(&value.0, source).map(Some)
}

impl Keys {
    /// Accepts client and exporter credentials signed by `legacy` from now on (and across
    /// reloads of the keys Secret), and says so in the log.
    pub fn accept_legacy(&self, legacy: &LegacyKey) {
        let mut set = (*self.tokens.current()).clone();
        set.legacy_verify_key = Some(legacy.verifying_key.clone());
        self.tokens.replace(set);
        tracing::info!(
            "accepting tokens of a 0.9.0 controller key ({})",
            legacy.source
        );
    }
}

/// Kubernetes mode at start: finds the 0.9.0 key ([`find`]) and, if there is one, accepts
/// its credentials ([`Keys::accept_legacy`]).
pub async fn accept<S: Store>(
    store: &S,
    namespace: &str,
    given: Option<&[u8]>,
    keys: &Keys,
) -> Result<Option<LegacyKeySource>, LegacyKeyError> {
    let found = find(store, namespace, given).await?;
    if let Some(legacy) = &found {
        keys.accept_legacy(legacy);
    }
    Ok(found.map(|legacy| legacy.source))
}
