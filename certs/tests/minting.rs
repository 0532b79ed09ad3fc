//! Minting: CA, server certificates and lease certificates, checked with rustls-webpki and with
//! the openssl CLI, plus the validity-window rules.

// In tests a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{IpAddr, Ipv4Addr};

use jumpstarter_certs::{
    Ca, Error, LeaseCertPolicy, LeaseIdentity, Role, ServerCertParams, generate_csr,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use support::{NOW, identity, openssl_text, openssl_verify, validity};
use time::Duration;
use time::macros::datetime;

fn ca() -> Ca {
    Ca::generate("jumpstarter test CA", NOW, Duration::days(365)).unwrap()
}

fn server_params() -> ServerCertParams {
    ServerCertParams {
        dns_names: vec!["controller.jumpstarter.test".to_owned()],
        ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        validity: Duration::days(30),
    }
}

fn policy() -> LeaseCertPolicy {
    LeaseCertPolicy {
        lease_end: datetime!(2025-06-01 14:00:00 UTC),
        max_validity: Duration::hours(1),
        backdate: Duration::minutes(2),
    }
}

fn webpki_time(t: time::OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(t.unix_timestamp()).unwrap(),
    ))
}

#[test]
fn server_cert_verifies_with_webpki_for_its_names() {
    let ca = ca();
    let issued = ca.issue_server_cert(&server_params(), NOW).unwrap();
    assert_eq!(issued.chain_der.len(), 2);
    assert_eq!(&issued.chain_der[1], ca.cert_der());

    let anchor = webpki::anchor_from_trusted_cert(ca.cert_der()).unwrap();
    let leaf = webpki::EndEntityCert::try_from(&issued.chain_der[0]).unwrap();
    let algs = rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all;
    let at = webpki_time(NOW + Duration::days(1));
    leaf.verify_for_usage(
        algs,
        std::slice::from_ref(&anchor),
        &[],
        at,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .unwrap();
    // A server certificate is not a client certificate.
    assert!(
        leaf.verify_for_usage(
            algs,
            &[anchor],
            &[],
            at,
            webpki::KeyUsage::client_auth(),
            None,
            None
        )
        .is_err()
    );
    for name in ["controller.jumpstarter.test", "127.0.0.1"] {
        leaf.verify_is_valid_for_subject_name(&ServerName::try_from(name).unwrap())
            .unwrap();
    }
    assert!(
        leaf.verify_is_valid_for_subject_name(&ServerName::try_from("other.test").unwrap())
            .is_err()
    );
}

#[test]
fn server_cert_verifies_with_openssl_and_expires_when_stated() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let issued = ca.issue_server_cert(&server_params(), NOW).unwrap();
    assert_eq!(issued.not_after, datetime!(2025-07-01 12:00:00 UTC));
    assert_eq!(validity(&issued.chain_der[0]).1, issued.not_after);

    let verify =
        |at, purpose| openssl_verify(dir.path(), ca.cert_pem(), &issued.cert_pem, at, purpose);
    let (ok, out) = verify(NOW, "sslserver");
    assert!(ok, "{out}");
    let (ok, out) = verify(issued.not_after + Duration::seconds(1), "sslserver");
    assert!(!ok && out.contains("expired"), "{out}");
    let (ok, out) = verify(NOW, "sslclient");
    assert!(
        !ok,
        "a serverAuth-only certificate passed as sslclient: {out}"
    );

    let text = openssl_text(dir.path(), &issued.cert_pem);
    assert!(text.contains("DNS:controller.jumpstarter.test"), "{text}");
    assert!(text.contains("IP Address:127.0.0.1"), "{text}");
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    assert!(text.contains("ASN1 OID: prime256v1"), "{text}");
    assert!(issued.chain_pem.starts_with(&issued.cert_pem));
    assert!(issued.chain_pem.ends_with(ca.cert_pem()));
}

#[test]
fn server_cert_validity_is_capped_at_the_ca() {
    let ca = Ca::generate("short CA", NOW, Duration::days(2)).unwrap();
    let mut params = server_params();
    params.validity = Duration::days(30);
    let issued = ca.issue_server_cert(&params, NOW).unwrap();
    assert_eq!(issued.not_after, ca.not_after());
    assert_eq!(issued.not_after, datetime!(2025-06-03 12:00:00 UTC));
}

#[test]
fn server_cert_needs_a_name() {
    let mut params = server_params();
    params.dns_names.clear();
    params.ip_addresses.clear();
    assert!(matches!(
        ca().issue_server_cert(&params, NOW),
        Err(Error::NoServerNames)
    ));
}

#[test]
fn ca_round_trips_through_pem_and_rejects_impostors() {
    let ca = ca();
    let loaded = Ca::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
    assert_eq!(loaded.cert_der(), ca.cert_der());
    assert_eq!(loaded.not_after(), datetime!(2026-06-01 12:00:00 UTC));
    // The loaded CA issues certificates that chain to the original.
    let dir = tempfile::tempdir().unwrap();
    let issued = loaded.issue_server_cert(&server_params(), NOW).unwrap();
    let (ok, out) = openssl_verify(
        dir.path(),
        ca.cert_pem(),
        &issued.cert_pem,
        NOW,
        "sslserver",
    );
    assert!(ok, "{out}");

    let other = Ca::generate("other CA", NOW, Duration::days(1)).unwrap();
    assert!(matches!(
        Ca::from_pem(ca.cert_pem(), &other.key_pem()),
        Err(Error::CaKeyMismatch { .. })
    ));
    assert!(matches!(
        Ca::from_pem(&issued.cert_pem, &issued.key_pem),
        Err(Error::NotACa { .. })
    ));
    assert!(matches!(
        Ca::from_pem("not a pem", &ca.key_pem()),
        Err(Error::CaCertificateParse { .. })
    ));
    assert!(matches!(
        Ca::from_pem(ca.cert_pem(), "garbage"),
        Err(Error::CaKeyParse(_))
    ));
}

#[test]
fn ca_certificate_is_a_strict_ca_per_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    // The CA verifies against itself under -x509_strict.
    let (ok, out) = openssl_verify(dir.path(), ca.cert_pem(), ca.cert_pem(), NOW, "any");
    assert!(ok, "{out}");
    let text = openssl_text(dir.path(), ca.cert_pem());
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
    assert!(text.contains("Certificate Sign"), "{text}");
}

#[test]
fn lease_cert_verifies_with_openssl_as_client_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let request = generate_csr("alice").unwrap();
    let issued = ca
        .sign_lease_csr(&request.csr_der, &identity(Role::Client), &policy(), NOW)
        .unwrap();
    let verify =
        |at, purpose| openssl_verify(dir.path(), ca.cert_pem(), &issued.cert_pem, at, purpose);
    let (ok, out) = verify(NOW, "sslclient");
    assert!(ok, "{out}");
    let (ok, out) = verify(NOW, "sslserver");
    assert!(
        !ok,
        "a clientAuth-only certificate passed as sslserver: {out}"
    );
    let (ok, out) = verify(issued.not_after + Duration::seconds(1), "sslclient");
    assert!(!ok && out.contains("expired"), "{out}");

    let text = openssl_text(dir.path(), &issued.cert_pem);
    let uri = identity(Role::Client).to_uri().unwrap();
    assert!(text.contains(&format!("URI:{uri}")), "{text}");
    assert!(text.contains("CN = jumpstarter client lab/alice"), "{text}");
    // The certificate certifies the requester's key: TLS credentials from the two agree.
    jumpstarter_certs::TlsCredentials::from_pem(&issued.chain_pem, &request.key_pem).unwrap();
}

#[test]
fn lease_cert_ignores_what_the_csr_asks_for() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    // A CSR asking for a DNS SAN, serverAuth and CA powers.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let csr = params.serialize_request(&key).unwrap();
    let pem = csr.pem().unwrap();
    let issued = ca
        .sign_lease_csr(pem.as_bytes(), &identity(Role::Exporter), &policy(), NOW)
        .unwrap();
    let text = openssl_text(dir.path(), &issued.cert_pem);
    assert!(!text.contains("evil.example"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(!text.contains("TLS Web Server Authentication"), "{text}");
    assert_eq!(
        LeaseIdentity::from_cert_der(&issued.chain_der[0]).unwrap(),
        identity(Role::Exporter)
    );
}

#[test]
fn lease_validity_is_capped_at_max_validity() {
    let ca = ca();
    let request = generate_csr("alice").unwrap();
    let issued = ca
        .sign_lease_csr(&request.csr_der, &identity(Role::Client), &policy(), NOW)
        .unwrap();
    // now = 12:00:00.5, backdate 2 min, max validity 1 h; lease ends at 14:00.
    assert_eq!(issued.not_before, datetime!(2025-06-01 11:58:00 UTC));
    assert_eq!(issued.not_after, datetime!(2025-06-01 13:00:00 UTC));
    assert_eq!(
        validity(&issued.chain_der[0]),
        (issued.not_before, issued.not_after)
    );
}

#[test]
fn lease_validity_is_capped_at_lease_end() {
    let ca = ca();
    let request = generate_csr("alice").unwrap();
    let mut policy = policy();
    policy.lease_end = datetime!(2025-06-01 12:20:00 UTC);
    let issued = ca
        .sign_lease_csr(&request.csr_der, &identity(Role::Client), &policy, NOW)
        .unwrap();
    assert_eq!(issued.not_after, datetime!(2025-06-01 12:20:00 UTC));
    assert_eq!(validity(&issued.chain_der[0]).1, policy.lease_end);
}

#[test]
fn lease_cert_is_refused_for_an_ended_lease() {
    let ca = ca();
    let request = generate_csr("alice").unwrap();
    for lease_end in [NOW, NOW - Duration::hours(1)] {
        let mut policy = policy();
        policy.lease_end = lease_end;
        let err = ca
            .sign_lease_csr(&request.csr_der, &identity(Role::Client), &policy, NOW)
            .unwrap_err();
        assert!(matches!(err, Error::LeaseEnded { .. }), "{err}");
    }
}

#[test]
fn lease_cert_is_refused_for_a_tampered_csr() {
    let ca = ca();
    let request = generate_csr("alice").unwrap();
    // The CSR ends with the ECDSA signature's `s` integer: flipping its last byte keeps the
    // DER structure intact but breaks the signature.
    let mut tampered = request.csr_der.clone();
    *tampered.last_mut().unwrap() ^= 0x01;
    let err = ca
        .sign_lease_csr(&tampered, &identity(Role::Client), &policy(), NOW)
        .unwrap_err();
    assert!(matches!(err, Error::CsrSignature), "{err}");

    // Changing the subject invalidates the signature too. The CN "alice" sits in the body.
    let mut tampered = request.csr_der.clone();
    let at = tampered
        .windows(5)
        .position(|w| w == b"alice")
        .expect("CN in the CSR");
    tampered[at] = b'b';
    let err = ca
        .sign_lease_csr(&tampered, &identity(Role::Client), &policy(), NOW)
        .unwrap_err();
    assert!(matches!(err, Error::CsrSignature), "{err}");

    let err = ca
        .sign_lease_csr(b"not a csr", &identity(Role::Client), &policy(), NOW)
        .unwrap_err();
    assert!(matches!(err, Error::CsrParse { .. }), "{err}");
}

#[test]
fn lease_cert_is_refused_for_an_invalid_identity() {
    let ca = ca();
    let request = generate_csr("alice").unwrap();
    let mut id = identity(Role::Client);
    id.namespace = "Lab".to_owned();
    let err = ca
        .sign_lease_csr(&request.csr_der, &id, &policy(), NOW)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidIdentity { .. }), "{err}");
}

#[test]
fn lease_cert_with_zero_max_validity_is_refused() {
    let ca = ca();
    let request = generate_csr("alice").unwrap();
    let mut policy = policy();
    policy.max_validity = Duration::ZERO;
    let err = ca
        .sign_lease_csr(&request.csr_der, &identity(Role::Client), &policy, NOW)
        .unwrap_err();
    assert!(matches!(err, Error::EmptyValidity { .. }), "{err}");
}

#[test]
fn serial_numbers_differ() {
    let ca = ca();
    let a = ca.issue_server_cert(&server_params(), NOW).unwrap();
    let b = ca.issue_server_cert(&server_params(), NOW).unwrap();
    let serial = |der: &CertificateDer<'_>| {
        use x509_parser::prelude::FromDer;
        let (_, c) = x509_parser::certificate::X509Certificate::from_der(der).unwrap();
        c.raw_serial().to_vec()
    };
    assert_ne!(serial(&a.chain_der[0]), serial(&b.chain_der[0]));
    assert_eq!(serial(&a.chain_der[0]).len(), 16);
}
