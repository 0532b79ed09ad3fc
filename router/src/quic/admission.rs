//! Who may hold a QUIC connection: a pure check of a presented certificate chain against
//! the lease CA at an explicit `now`, for the handshake and for renewals on a live
//! connection.

use jumpstarter_certs::{Expectation, LeaseIdentity, verify_lease_cert};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

/// What a valid chain admits: whom, with which key, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Admission {
    pub(crate) identity: LeaseIdentity,
    /// The leaf's public key (SubjectPublicKeyInfo); renewals must keep it.
    pub(crate) public_key: Vec<u8>,
    /// When the leaf ends.
    pub(crate) not_after: OffsetDateTime,
}

/// Why a chain is not admitted. The text is what the peer reads in the close reason or
/// the renewal reply.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdmissionError {
    #[error("no client certificate")]
    NoCertificate,
    #[error(transparent)]
    Invalid(#[from] jumpstarter_certs::Error),
    #[error("unreadable client certificate")]
    Unreadable,
    #[error(
        "the certificate is for {} {}/{} (lease uid {}), not for this connection's {} {}/{} (lease uid {})",
        .presented.role, .presented.namespace, .presented.lease_name, .presented.lease_uid,
        .admitted.role, .admitted.namespace, .admitted.lease_name, .admitted.lease_uid
    )]
    OtherIdentity {
        presented: Box<LeaseIdentity>,
        admitted: Box<LeaseIdentity>,
    },
    #[error("the certificate is for another key than the connection's")]
    OtherKey,
}

/// Verifies `chain` against the lease CA bundle `client_ca` at `now`: a lease certificate
/// of any role, valid at `now`, whose leaf is readable.
pub(crate) fn check(
    client_ca: &[CertificateDer<'static>],
    chain: &[CertificateDer<'static>],
    now: OffsetDateTime,
) -> Result<Admission, AdmissionError> {
    let identity = verify_lease_cert(client_ca, chain, now, &Expectation::any())?;
    let (_, leaf) = chain
        .first()
        .and_then(|leaf| x509_parser::parse_x509_certificate(leaf).ok())
        .ok_or(AdmissionError::Unreadable)?;
    let not_after = leaf.validity().not_after.to_datetime();
    Ok(Admission {
        identity,
        public_key: leaf.public_key().raw.to_vec(),
        not_after,
    })
}

/// Verifies a renewed `chain` for a connection admitted as `admitted`: valid at `now`,
/// for the same identity and the same key.
pub(crate) fn check_renewal(
    client_ca: &[CertificateDer<'static>],
    chain: &[CertificateDer<'static>],
    admitted: &Admission,
    now: OffsetDateTime,
) -> Result<Admission, AdmissionError> {
    let renewed = check(client_ca, chain, now)?;
    if renewed.identity != admitted.identity {
        return Err(AdmissionError::OtherIdentity {
            presented: Box::new(renewed.identity),
            admitted: Box::new(admitted.identity.clone()),
        });
    }
    if renewed.public_key != admitted.public_key {
        return Err(AdmissionError::OtherKey);
    }
    Ok(renewed)
}

#[cfg(test)]
mod tests {
    use jumpstarter_certs::{Ca, LeaseCertPolicy, Role, generate_csr, renewal_csr};
    use time::Duration;

    use super::*;

    struct Lab {
        ca: Ca,
        t0: OffsetDateTime,
    }

    fn identity(role: Role, lease: &str) -> LeaseIdentity {
        LeaseIdentity {
            namespace: "lab".to_owned(),
            lease_name: lease.to_owned(),
            lease_uid: "0b7c4a52-1f0e-4c55-9d7e-3b7f2f6f9a10".to_owned(),
            role,
            holder: "alice".to_owned(),
        }
    }

    impl Lab {
        fn new() -> Lab {
            let t0 = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("t0");
            let ca = Ca::generate("admission test CA", t0, Duration::days(1)).expect("CA");
            Lab { ca, t0 }
        }

        fn roots(&self) -> Vec<CertificateDer<'static>> {
            vec![self.ca.cert_der().clone()]
        }

        /// A chain for `identity`, valid for an hour from `t0`, for `key_pem` or a new key;
        /// returns the chain and its key.
        fn chain(
            &self,
            identity: &LeaseIdentity,
            key_pem: Option<&str>,
        ) -> (Vec<CertificateDer<'static>>, String) {
            let request = match key_pem {
                Some(pem) => renewal_csr(pem, "alice").expect("renewal csr"),
                None => generate_csr("alice").expect("csr"),
            };
            let policy = LeaseCertPolicy {
                lease_end: self.t0 + Duration::hours(1),
                max_validity: Duration::hours(1),
                backdate: Duration::ZERO,
            };
            let issued = self
                .ca
                .sign_lease_csr(&request.csr_der, identity, &policy, self.t0)
                .expect("lease cert");
            (issued.chain_der, request.key_pem)
        }
    }

    #[test]
    fn a_valid_chain_admits_its_identity_until_its_end() {
        let lab = Lab::new();
        let who = identity(Role::Client, "lease-1");
        let (chain, _) = lab.chain(&who, None);
        let admission =
            check(&lab.roots(), &chain, lab.t0 + Duration::minutes(1)).expect("admitted");
        assert_eq!(admission.identity, who);
        assert_eq!(admission.not_after, lab.t0 + Duration::hours(1));
        assert!(!admission.public_key.is_empty());
    }

    #[test]
    fn a_chain_outside_its_validity_or_from_another_ca_is_refused() {
        let lab = Lab::new();
        let (chain, _) = lab.chain(&identity(Role::Exporter, "lease-1"), None);
        let late = check(&lab.roots(), &chain, lab.t0 + Duration::hours(2));
        assert!(matches!(late, Err(AdmissionError::Invalid(_))), "{late:?}");
        let other = Ca::generate("other CA", lab.t0, Duration::days(1)).expect("CA");
        let foreign = check(
            &[other.cert_der().clone()],
            &chain,
            lab.t0 + Duration::minutes(1),
        );
        assert!(
            matches!(foreign, Err(AdmissionError::Invalid(_))),
            "{foreign:?}"
        );
        let empty = check(&lab.roots(), &[], lab.t0);
        assert!(
            matches!(empty, Err(AdmissionError::Invalid(_))),
            "{empty:?}"
        );
    }

    #[test]
    fn a_renewal_must_keep_identity_and_key() {
        let lab = Lab::new();
        let now = lab.t0 + Duration::minutes(1);
        let who = identity(Role::Client, "lease-1");
        let (chain, key_pem) = lab.chain(&who, None);
        let admitted = check(&lab.roots(), &chain, now).expect("admitted");

        let (same_key, _) = lab.chain(&who, Some(&key_pem));
        let renewed = check_renewal(&lab.roots(), &same_key, &admitted, now).expect("renewed");
        assert_eq!(renewed.identity, who);

        let (new_key, _) = lab.chain(&who, None);
        let refused = check_renewal(&lab.roots(), &new_key, &admitted, now);
        assert_eq!(
            refused.map_err(|e| e.to_string()).err().as_deref(),
            Some("the certificate is for another key than the connection's")
        );

        let (other_lease, _) = lab.chain(&identity(Role::Client, "lease-2"), Some(&key_pem));
        let refused = check_renewal(&lab.roots(), &other_lease, &admitted, now)
            .map_err(|e| e.to_string())
            .expect_err("other lease");
        assert!(
            refused.starts_with("the certificate is for client lab/lease-2"),
            "{refused}"
        );
    }
}
