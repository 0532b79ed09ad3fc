//! The token keys in use now, replaced as a whole while the controller runs.
//!
//! A [`TokenKeySet`] is what the keys Secret holds: the key that signs client and exporter
//! credentials plus public keys that still verify them, and the key that signs router
//! tokens plus public keys routers should still accept; and, given at start, the public key
//! of a 0.9.0 controller whose credentials stay valid ([`super::legacy`]). [`LiveKeys`] is
//! the shared handle every service and the reconcile loop read at each use;
//! [`LiveVerifier`] keeps a verified-token cache for the current set and starts a fresh one
//! when the set changes, so a token of a key that was removed is refused at its next use.

use std::sync::{Arc, Mutex, RwLock};

use jumpstarter_token::internal::{CachedVerifier, Issuer, Verifier};
use jumpstarter_token::{SigningKey, VerifyingKey};

/// Signing keys and the extra public keys that still verify.
#[derive(Debug, Clone)]
pub struct TokenKeySet {
    /// Signs client and exporter credentials (and verifies them).
    pub issuer: Issuer,
    /// Earlier credential keys whose tokens are still accepted.
    pub verify_keys: Vec<VerifyingKey>,
    /// Signs router tokens.
    pub router_key: SigningKey,
    /// Other public keys routers are told to accept (the previous key during a rotation,
    /// or the next one before it signs).
    pub router_verify_keys: Vec<VerifyingKey>,
    /// The key of a 0.9.0 controller ([`super::legacy`]): it verifies client and exporter
    /// credentials only (not peer tokens), and is kept when the keys Secret is reloaded.
    pub legacy_verify_key: Option<VerifyingKey>,
}

impl TokenKeySet {
    /// The set without extra keys.
    pub fn new(issuer: Issuer, router_key: SigningKey) -> Self {
        TokenKeySet {
            issuer,
            verify_keys: Vec::new(),
            router_key,
            router_verify_keys: Vec::new(),
            legacy_verify_key: None,
        }
    }

    /// Verifies tokens signed by the signing key or any extra key (credentials and peer
    /// tokens).
    pub fn verifier(&self) -> Verifier {
        let mut verifier = self.issuer.verifier();
        verifier.keys.extend(self.verify_keys.iter().cloned());
        verifier
    }

    /// Verifies client and exporter credentials: [`TokenKeySet::verifier`], plus the key
    /// of a 0.9.0 controller when one is accepted.
    pub fn credential_verifier(&self) -> Verifier {
        let mut verifier = self.verifier();
        verifier.keys.extend(self.legacy_verify_key.iter().cloned());
        verifier
    }

    /// The PEM bundle routers verify router tokens with: the signing key's public half,
    /// then the extra keys.
    pub fn router_public_pem(&self) -> String {
        std::iter::once(self.router_key.verifying_key())
            .chain(self.router_verify_keys.iter())
            .map(VerifyingKey::to_public_pem)
            .collect::<Vec<_>>()
            .join("")
    }
}

/// The shared, replaceable [`TokenKeySet`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LiveKeys(Arc<RwLock<(u64, Arc<TokenKeySet>)>>);

impl LiveKeys {
    pub fn new(set: TokenKeySet) -> Self {
        LiveKeys(Arc::new(RwLock::new((0, Arc::new(set)))))
    }

    /// The keys in use now.
    pub fn current(&self) -> Arc<TokenKeySet> {
        self.read().1
    }

    /// Uses `set` from now on.
    pub fn replace(&self, set: TokenKeySet) {
        let mut guard = self.0.write().unwrap_or_else(|e| e.into_inner());
        *guard = (guard.0.wrapping_add(1), Arc::new(set));
    }

    fn read(&self) -> (u64, Arc<TokenKeySet>) {
        // Writers only swap a complete set in; a poisoned lock still holds a whole one.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl From<TokenKeySet> for LiveKeys {
    fn from(set: TokenKeySet) -> Self {
        LiveKeys::new(set)
    }
}

/// A [`CachedVerifier`] of the current credential keys of a [`LiveKeys`]
/// ([`TokenKeySet::credential_verifier`]).
#[derive(Debug)]
pub struct LiveVerifier {
    keys: LiveKeys,
    capacity: usize,
    cached: Mutex<(u64, Arc<CachedVerifier>)>,
}

impl LiveVerifier {
    /// Remembers at most `capacity` verified tokens.
    pub fn new(keys: LiveKeys, capacity: usize) -> Self {
        let (version, set) = keys.read();
        let cached = Arc::new(CachedVerifier::new(set.credential_verifier(), capacity));
        LiveVerifier {
            keys,
            capacity,
            cached: Mutex::new((version, cached)),
        }
    }

    /// The verifier of the keys in use now (a fresh cache after a change).
    pub fn current(&self) -> Arc<CachedVerifier> {
        let (version, set) = self.keys.read();
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if cached.0 != version {
            *cached = (
                version,
                Arc::new(CachedVerifier::new(
                    set.credential_verifier(),
                    self.capacity,
                )),
            );
        }
        cached.1.clone()
    }
}

#[cfg(test)]
mod tests {
    use jumpstarter_token::internal::{DEFAULT_AUDIENCE, DEFAULT_ISSUER, ObjectKind, Subject};
    use time::{Duration, OffsetDateTime};

    use super::*;

    fn issuer(key: &SigningKey) -> Issuer {
        Issuer {
            key: key.clone(),
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
            lifetime: Duration::hours(1),
        }
    }

    #[test]
    fn removed_keys_are_refused_even_for_cached_tokens() {
        let (old, new) = (
            SigningKey::generate().expect("key"),
            SigningKey::generate().expect("key"),
        );
        let router = SigningKey::generate().expect("key");
        let live = LiveKeys::new(TokenKeySet::new(issuer(&old), router.clone()));
        let verifier = LiveVerifier::new(live.clone(), 16);
        let subject = Subject {
            kind: ObjectKind::Client,
            namespace: "lab".into(),
            name: "alice".into(),
            uid: "u".into(),
        };
        let now = OffsetDateTime::now_utc();
        let (old_token, _) = issuer(&old).issue(&subject, now).expect("issue");
        assert!(verifier.current().verify(&old_token, now).is_ok());

        // The new key signs, the old one still verifies.
        let mut rotated = TokenKeySet::new(issuer(&new), router.clone());
        rotated.verify_keys.push(old.verifying_key().clone());
        live.replace(rotated.clone());
        let (new_token, _) = live.current().issuer.issue(&subject, now).expect("issue");
        assert!(verifier.current().verify(&new_token, now).is_ok());
        assert!(verifier.current().verify(&old_token, now).is_ok());

        // The old key removed: its token is refused although it was cached.
        rotated.verify_keys.clear();
        live.replace(rotated);
        assert!(verifier.current().verify(&old_token, now).is_err());
        assert!(verifier.current().verify(&new_token, now).is_ok());
    }

    #[test]
    fn the_router_bundle_lists_the_signer_first() {
        let (a, b) = (
            SigningKey::generate().expect("key"),
            SigningKey::generate().expect("key"),
        );
        let mut set = TokenKeySet::new(issuer(&a), a.clone());
        set.router_verify_keys.push(b.verifying_key().clone());
        let keys =
            jumpstarter_token::key::public_keys_from_pem(&set.router_public_pem()).expect("pem");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].to_public_pem(), a.verifying_key().to_public_pem());
    }
}
