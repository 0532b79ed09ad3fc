//! Admission checks of `verify_lease_cert`: chain, validity window, identity expectations.

// In tests a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod support;

use jumpstarter_certs::{
    Ca, Error, Expectation, IssuedLeaseCert, LeaseCertPolicy, LeaseIdentity, Role,
    ServerCertParams, generate_csr, verify_lease_cert,
};
use rustls_pki_types::CertificateDer;
use support::{NOW, identity};
use time::{Duration, OffsetDateTime};

fn new_ca(name: &str) -> Ca {
    Ca::generate(name, NOW, Duration::days(365)).unwrap()
}

fn lease_cert(ca: &Ca, identity: &LeaseIdentity) -> IssuedLeaseCert {
    let request = generate_csr(&identity.holder).unwrap();
    let policy = LeaseCertPolicy {
        lease_end: NOW + Duration::hours(8),
        max_validity: Duration::hours(1),
        backdate: Duration::minutes(1),
    };
    ca.sign_lease_csr(&request.csr_der, identity, &policy, NOW)
        .unwrap()
}

/// Why `chain` is refused against `roots` at `at`, expecting nothing about the lease.
fn refusal(
    roots: &[CertificateDer<'static>],
    chain: &[CertificateDer<'static>],
    at: OffsetDateTime,
) -> Error {
    verify_lease_cert(roots, chain, at, &Expectation::any()).unwrap_err()
}

#[test]
fn valid_lease_cert_yields_its_identity() {
    let ca = new_ca("ca");
    let cert = lease_cert(&ca, &identity(Role::Exporter));
    let expected = Expectation::any()
        .with_role(Role::Exporter)
        .with_lease("lab", "lease-42")
        .with_lease_uid("0f8e7a4c-1b2d-4e5f-8a9b-0c1d2e3f4a5b");
    let roots = [ca.cert_der().clone()];
    // With and without the trailing CA copy, at both ends of the window.
    for chain in [&cert.chain_der[..], &cert.chain_der[..1]] {
        for at in [cert.not_before, cert.not_after] {
            let found = verify_lease_cert(&roots, chain, at, &expected).unwrap();
            assert_eq!(found, identity(Role::Exporter));
        }
    }
}

#[test]
fn expired_and_not_yet_valid_are_distinct() {
    let ca = new_ca("ca");
    let cert = lease_cert(&ca, &identity(Role::Client));
    let roots = [ca.cert_der().clone()];
    let err = refusal(
        &roots,
        &cert.chain_der,
        cert.not_after + Duration::seconds(1),
    );
    assert!(
        matches!(err, Error::Expired { not_after, .. } if not_after == cert.not_after.unix_timestamp() as u64),
        "{err}"
    );
    let err = refusal(
        &roots,
        &cert.chain_der,
        cert.not_before - Duration::seconds(1),
    );
    assert!(matches!(err, Error::NotYetValid { .. }), "{err}");
}

#[test]
fn wrong_ca_is_unknown_issuer() {
    let ca = new_ca("ca");
    let other = new_ca("other");
    let cert = lease_cert(&ca, &identity(Role::Client));
    let err = refusal(&[other.cert_der().clone()], &cert.chain_der, NOW);
    assert!(matches!(err, Error::UnknownIssuer), "{err}");
}

#[test]
fn wrong_role_is_rejected() {
    let ca = new_ca("ca");
    let cert = lease_cert(&ca, &identity(Role::Client));
    let err = verify_lease_cert(
        &[ca.cert_der().clone()],
        &cert.chain_der,
        NOW,
        &Expectation::any().with_role(Role::Exporter),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongRole {
                expected: Role::Exporter,
                found: Role::Client
            }
        ),
        "{err}"
    );
}

#[test]
fn wrong_lease_or_namespace_is_rejected() {
    let ca = new_ca("ca");
    let cert = lease_cert(&ca, &identity(Role::Client));
    let roots = [ca.cert_der().clone()];
    let cases = [
        (
            Expectation::any().with_lease("lab", "lease-43"),
            "lease name",
        ),
        (
            Expectation::any().with_lease("other", "lease-42"),
            "namespace",
        ),
        (Expectation::any().with_lease_uid("1234"), "lease uid"),
    ];
    for (expected, which) in cases {
        let err = verify_lease_cert(&roots, &cert.chain_der, NOW, &expected).unwrap_err();
        assert!(
            matches!(err, Error::WrongLease { field, .. } if field == which),
            "{which}: {err}"
        );
    }
}

#[test]
fn client_cert_without_identity_is_rejected() {
    // A clientAuth certificate from the right CA but without a lease identity: built directly
    // with rcgen against the CA's key.
    let ca = new_ca("ca");
    let ca_key = rcgen::KeyPair::from_pem(&ca.key_pem()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(ca.cert_der(), ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["spiffe-less.example".to_owned()]).unwrap();
    params.not_before = NOW - Duration::hours(1);
    params.not_after = NOW + Duration::hours(1);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let err = refusal(&[ca.cert_der().clone()], &[cert.der().clone()], NOW);
    assert!(matches!(err, Error::MissingIdentity), "{err}");

    // One with a malformed identity URI is a bad identity, not a missing one.
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://jumpstarter.dev/ns/lab/lease/x/role/client"
            .try_into()
            .unwrap(),
    )];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let err = refusal(&[ca.cert_der().clone()], &[cert.der().clone()], NOW);
    assert!(matches!(err, Error::BadIdentity { .. }), "{err}");
}

#[test]
fn server_cert_is_not_a_lease_cert() {
    let ca = new_ca("ca");
    let server = ca
        .issue_server_cert(
            &ServerCertParams {
                dns_names: vec!["router.test".to_owned()],
                ip_addresses: vec![],
                validity: Duration::days(1),
            },
            NOW,
        )
        .unwrap();
    let err = refusal(&[ca.cert_der().clone()], &server.chain_der, NOW);
    assert!(matches!(err, Error::InvalidChain(_)), "{err}");
    assert!(matches!(
        verify_lease_cert(&[ca.cert_der().clone()], &[], NOW, &Expectation::any()),
        Err(Error::NoCertificate)
    ));
}
