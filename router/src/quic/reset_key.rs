//! The stateless-reset key of the QUIC listener: one secret behind its reset tokens and its
//! connection ids, derived from the server key so that a restarted router (or a replica
//! sharing the key) resets the connections of its predecessor.

use std::sync::Arc;
use std::time::Duration;

/// The secret behind a router's QUIC stateless resets and connection ids (never logged).
///
/// A peer accepts a stateless reset only if it carries the token the router derived from
/// the connection id with this secret; and the router answers a packet for a connection it
/// does not know only if the connection id validates as one of its own (quinn's keyed
/// generator). So both come from this one secret.
#[derive(Clone)]
pub struct ResetKey([u8; 40]);

impl std::fmt::Debug for ResetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResetKey(..)")
    }
}

impl ResetKey {
    /// HKDF-SHA256 of a long-lived secret (the server's private key by default), for
    /// this one purpose.
    pub fn derive(secret: &[u8]) -> ResetKey {
        struct Len;
        impl ring::hkdf::KeyType for Len {
            fn len(&self) -> usize {
                40
            }
        }
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"jumpstarter-router");
        let mut key = [0u8; 40];
        let expanded = salt
            .extract(secret)
            .expand(&[b"quic stateless reset"], Len)
            .and_then(|okm| okm.fill(&mut key));
        // Only a length beyond 255 hash lengths fails; 40 bytes cannot.
        debug_assert!(expanded.is_ok());
        ResetKey(key)
    }

    /// The endpoint configuration: reset tokens and connection ids keyed by this secret.
    pub(super) fn endpoint_config(&self) -> quinn::EndpointConfig {
        let (hmac, cid) = self.0.split_at(32);
        let mut config = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            hmac,
        )));
        let mut cid_key = [0u8; 8];
        cid_key.copy_from_slice(cid);
        let cid_key = u64::from_le_bytes(cid_key);
        config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        // quinn sends at most one reset per 20 ms by default: after a crash, most of a
        // thousand peers' keep-alives then go unanswered and those peers wait for their
        // idle timeout (load-test scenario 6). A reset is always smaller than the packet
        // that caused it, so answering every one amplifies nothing.
        config.min_reset_interval(Duration::ZERO);
        config
    }
}
