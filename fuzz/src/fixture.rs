//! What the targets hold fixed: the clock, a signing key, a CA and a lease identity. Fixed
//! values keep the committed seeds (signed tokens above all) meaningful on every run.

use std::sync::OnceLock;

use jumpstarter_certs::{Ca, LeaseCertPolicy, LeaseIdentity, Role};
use jumpstarter_token::{SigningKey, VerifyingKey};
use time::{Duration, OffsetDateTime};

/// The targets' "now": 2026-05-28T20:26:40Z, so seeds signed for it stay valid.
pub const NOW_UNIX: i64 = 1_780_000_000;

/// A P-256 key made for fuzzing only; it signs seed tokens and nothing else.
const SIGNING_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg+9im8yKqX2xYeoya
dPWEu+wWuSZZBN6d/RvyjptrFfyhRANCAARdq4WjGaOYUGS5/5QGG7waJXKjJZgA
kv1j6uM7vHCqaGoq99XOAWY/7JA+h42vQ47BPTiCTzoP0/bLZ8CJz4bo
-----END PRIVATE KEY-----
";

/// The targets' "now".
pub fn now() -> OffsetDateTime {
    // Invariant: a constant well inside the supported range.
    OffsetDateTime::from_unix_timestamp(NOW_UNIX).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The fixed signing key.
pub fn signing_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| {
        SigningKey::from_pkcs8_pem(SIGNING_KEY_PEM).expect("the fixed fuzzing key loads")
    })
}

/// The verifying half of [`signing_key`].
pub fn verifying_keys() -> Vec<VerifyingKey> {
    vec![signing_key().verifying_key().clone()]
}

/// A CA, generated once per process (its certificates are not part of any seed's meaning).
pub fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        Ca::generate("jumpstarter fuzz CA", now(), Duration::days(3650)).expect("a CA generates")
    })
}

/// The lease side that CSRs are signed for.
pub fn identity() -> LeaseIdentity {
    LeaseIdentity {
        namespace: "lab".into(),
        lease_name: "0190a1b2-lease".into(),
        lease_uid: "6f1c7a52-8e0b-4f8e-9d55-1b2f0c3a4d5e".into(),
        role: Role::Exporter,
        holder: "board-1".into(),
    }
}

/// The lease-certificate policy CSRs are signed under (the controller's defaults).
pub fn lease_policy() -> LeaseCertPolicy {
    LeaseCertPolicy {
        lease_end: now() + Duration::hours(1),
        max_validity: Duration::seconds(10),
        backdate: Duration::seconds(5),
    }
}
