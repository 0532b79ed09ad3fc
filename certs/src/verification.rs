//! Admitting a peer by its lease certificate: chain, validity and identity.

use std::time::Duration as StdDuration;

use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;
use webpki::{EndEntityCert, KeyUsage};

use crate::error::{Error, Result};
use crate::identity::{LeaseIdentity, Role};

/// What a verified lease certificate must additionally say. `None` fields accept anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectation {
    /// Required side of the lease.
    pub role: Option<Role>,
    /// Required namespace of the lease.
    pub namespace: Option<String>,
    /// Required lease name.
    pub lease_name: Option<String>,
    /// Required lease UID.
    pub lease_uid: Option<String>,
}

impl Expectation {
    /// Accepts any valid lease identity.
    pub fn any() -> Expectation {
        Expectation::default()
    }

    /// Also requires `role`.
    pub fn with_role(mut self, role: Role) -> Expectation {
        self.role = Some(role);
        self
    }

    /// Also requires the lease `namespace/lease_name`.
    pub fn with_lease(mut self, namespace: &str, lease_name: &str) -> Expectation {
        self.namespace = Some(namespace.to_owned());
        self.lease_name = Some(lease_name.to_owned());
        self
    }

    /// Also requires the lease UID.
    pub fn with_lease_uid(mut self, lease_uid: &str) -> Expectation {
        self.lease_uid = Some(lease_uid.to_owned());
        self
    }

    /// Checks an identity against this expectation.
    pub fn check(&self, identity: &LeaseIdentity) -> Result<()> {
        if let Some(expected) = self.role
            && expected != identity.role
        {
            return Err(Error::WrongRole {
                expected,
                found: identity.role,
            });
        }
        let fields = [
            ("namespace", &self.namespace, &identity.namespace),
            ("lease name", &self.lease_name, &identity.lease_name),
            ("lease uid", &self.lease_uid, &identity.lease_uid),
        ];
        for (field, expected, found) in fields {
            if let Some(expected) = expected
                && expected != found
            {
                return Err(Error::WrongLease {
                    field,
                    expected: expected.clone(),
                    found: found.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Verifies a peer's lease certificate chain at `now` and returns the identity it carries.
///
/// `chain[0]` is the peer's certificate and the rest are intermediates (a trailing copy of the
/// root is harmless). The chain must lead to one of `ca_roots`, every certificate must be valid at
/// `now`, the leaf must allow clientAuth, carry exactly one lease identity URI, and match
/// `expected`.
pub fn verify_lease_cert(
    ca_roots: &[CertificateDer<'_>],
    chain: &[CertificateDer<'_>],
    now: OffsetDateTime,
    expected: &Expectation,
) -> Result<LeaseIdentity> {
    let (leaf, intermediates) = chain.split_first().ok_or(Error::NoCertificate)?;
    let anchors = ca_roots
        .iter()
        .map(|root| {
            webpki::anchor_from_trusted_cert(root).map_err(|e| Error::CertificateParse {
                what: "root certificate",
                reason: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let end_entity = EndEntityCert::try_from(leaf).map_err(|e| Error::CertificateParse {
        what: "peer certificate",
        reason: e.to_string(),
    })?;
    let algorithms = rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all;
    end_entity
        .verify_for_usage(
            algorithms,
            &anchors,
            intermediates,
            unix_time(now),
            KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(chain_error)?;
    let identity = LeaseIdentity::from_cert_der(leaf)?;
    expected.check(&identity)?;
    Ok(identity)
}

/// `now` as webpki's time. Times before 1970 cannot be valid for any certificate we mint, so
/// they are clamped to the epoch rather than rejected.
pub(crate) fn unix_time(now: OffsetDateTime) -> UnixTime {
    let secs = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    UnixTime::since_unix_epoch(StdDuration::from_secs(secs))
}

fn chain_error(error: webpki::Error) -> Error {
    match error {
        webpki::Error::CertExpired { time, not_after } => Error::Expired {
            not_after: not_after.as_secs(),
            now: time.as_secs(),
        },
        webpki::Error::CertNotValidYet { time, not_before } => Error::NotYetValid {
            not_before: not_before.as_secs(),
            now: time.as_secs(),
        },
        webpki::Error::UnknownIssuer => Error::UnknownIssuer,
        other => Error::InvalidChain(other),
    }
}
