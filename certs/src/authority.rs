//! The certificate authority: generating or loading it, and minting server and lease
//! certificates with it.
//!
//! Every minting function takes `now` and is otherwise deterministic in its validity window, so
//! tests can pin exact `notBefore`/`notAfter` values. X.509 stores whole seconds, so all computed
//! times are truncated down to the second (a certificate never outlives what was asked for).

use std::fmt;
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
    SubjectPublicKeyInfo,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use crate::error::{Error, Result};
use crate::identity::LeaseIdentity;
use crate::tls::TlsCredentials;

/// How far the CA and server certificates are backdated, so that peers whose clocks run a little
/// behind the controller's accept a certificate minted a moment ago.
pub const SERVER_BACKDATE: Duration = Duration::minutes(5);

/// Length of random certificate serial numbers: 16 bytes (with the top bit cleared) is well above
/// the 64 bits of entropy the CA/Browser Forum asks for and below RFC 5280's 20-byte limit.
const SERIAL_LEN: usize = 16;

/// A certificate authority: its certificate and its private key.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    subject: String,
    not_after: OffsetDateTime,
}

/// What a server certificate should be valid for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCertParams {
    /// DNS subject alternative names; the first one also becomes the subject common name.
    pub dns_names: Vec<String>,
    /// IP address subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// How long the certificate is valid from `now` (capped at the CA's own `notAfter`).
    pub validity: Duration,
}

/// A freshly minted certificate together with its new private key.
pub struct IssuedCert {
    /// The leaf certificate, PEM.
    pub cert_pem: String,
    /// The leaf's private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The leaf followed by the CA certificate, PEM: what a server presents.
    pub chain_pem: String,
    /// The leaf followed by the CA certificate, DER.
    pub chain_der: Vec<CertificateDer<'static>>,
    /// The leaf's `notAfter`.
    pub not_after: OffsetDateTime,
    key_der: Vec<u8>,
}

/// Limits for a lease certificate's validity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseCertPolicy {
    /// When the lease ends; the certificate never outlives it.
    pub lease_end: OffsetDateTime,
    /// Longest validity of any single certificate; clients renew before it runs out.
    pub max_validity: Duration,
    /// How far `notBefore` lies before `now`, to absorb clock skew between peers.
    pub backdate: Duration,
}

/// A lease certificate signed from a CSR. The private key stays with the requester.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedLeaseCert {
    /// The leaf certificate, PEM.
    pub cert_pem: String,
    /// The leaf followed by the CA certificate, PEM.
    pub chain_pem: String,
    /// The leaf followed by the CA certificate, DER.
    pub chain_der: Vec<CertificateDer<'static>>,
    /// Whom the certificate identifies.
    pub identity: LeaseIdentity,
    /// The leaf's `notBefore`.
    pub not_before: OffsetDateTime,
    /// The leaf's `notAfter`.
    pub not_after: OffsetDateTime,
}

impl Ca {
    /// Generates a new self-signed CA with an ECDSA P-256 key.
    ///
    /// The CA may only sign leaf certificates (path length 0). It is valid from
    /// `now - SERVER_BACKDATE` to `now + validity`.
    pub fn generate(common_name: &str, now: OffsetDateTime, validity: Duration) -> Result<Ca> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(Error::KeyGeneration)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        params.not_before = whole_seconds(now - SERVER_BACKDATE);
        params.not_after = whole_seconds(add(now, validity, common_name)?);
        check_window(common_name, params.not_before, params.not_after, now)?;
        let cert = params.self_signed(&key).map_err(|source| Error::Signing {
            subject: common_name.to_owned(),
            source,
        })?;
        Ca::from_parts(cert.der().clone(), key)
    }

    /// Loads a CA from its certificate and private key, both PEM.
    ///
    /// Rejects a certificate that is not a CA (basicConstraints cA unset, or a key usage without
    /// keyCertSign) and a key that does not belong to the certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca> {
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| {
            Error::CaCertificateParse {
                reason: e.to_string(),
            }
        })?;
        let key = KeyPair::from_pem(key_pem).map_err(Error::CaKeyParse)?;
        Ca::from_parts(cert_der, key)
    }

    fn from_parts(cert_der: CertificateDer<'static>, key: KeyPair) -> Result<Ca> {
        let parse_error = |reason: String| Error::CaCertificateParse { reason };
        let (rest, parsed) = x509_parser::certificate::X509Certificate::from_der(&cert_der)
            .map_err(|e| parse_error(e.to_string()))?;
        if !rest.is_empty() {
            return Err(parse_error(
                "trailing bytes after the certificate".to_owned(),
            ));
        }
        let subject = parsed.subject().to_string();
        let constraints = parsed
            .basic_constraints()
            .map_err(|e| parse_error(format!("basicConstraints: {e}")))?;
        if !constraints.is_some_and(|bc| bc.value.ca) {
            return Err(Error::NotACa {
                subject,
                reason: "basicConstraints does not mark it as a CA",
            });
        }
        let usage = parsed
            .key_usage()
            .map_err(|e| parse_error(format!("keyUsage: {e}")))?;
        if usage.is_some_and(|ku| !ku.value.key_cert_sign()) {
            return Err(Error::NotACa {
                subject,
                reason: "keyUsage does not allow keyCertSign",
            });
        }
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(Error::CaKeyMismatch { subject });
        }
        let not_after = parsed.validity().not_after.to_datetime();
        let issuer =
            Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| parse_error(e.to_string()))?;
        let cert_pem = pem_certificate(&cert_der);
        Ok(Ca {
            issuer,
            cert_der,
            cert_pem,
            subject,
            not_after,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PKCS#8 PEM. Handle with care.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The CA certificate, DER: the trust root to hand to verifiers.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA's `notAfter`; no certificate it issues outlives it.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Mints a TLS server certificate (serverAuth) with a new ECDSA P-256 key.
    ///
    /// Valid from `now - SERVER_BACKDATE` to `min(now + validity, CA notAfter)`.
    pub fn issue_server_cert(
        &self,
        request: &ServerCertParams,
        now: OffsetDateTime,
    ) -> Result<IssuedCert> {
        let subject = match (request.dns_names.first(), request.ip_addresses.first()) {
            (Some(dns), _) => dns.clone(),
            (None, Some(ip)) => ip.to_string(),
            (None, None) => return Err(Error::NoServerNames),
        };
        let mut params = leaf_params(&subject)?;
        for name in &request.dns_names {
            let ia5 = name
                .as_str()
                .try_into()
                .map_err(|source| Error::InvalidDnsName {
                    name: name.clone(),
                    source,
                })?;
            params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        params.subject_alt_names.extend(
            request
                .ip_addresses
                .iter()
                .map(|ip| SanType::IpAddress(*ip)),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = whole_seconds(now - SERVER_BACKDATE);
        params.not_after = whole_seconds(add(now, request.validity, &subject)?.min(self.not_after));
        check_window(&subject, params.not_before, params.not_after, now)?;

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(Error::KeyGeneration)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| Error::Signing {
                subject: subject.clone(),
                source,
            })?;
        let leaf = cert.der().clone();
        Ok(IssuedCert {
            cert_pem: pem_certificate(&leaf),
            key_pem: key.serialize_pem(),
            chain_pem: format!("{}{}", pem_certificate(&leaf), self.cert_pem),
            chain_der: vec![leaf, self.cert_der.clone()],
            not_after: params.not_after,
            key_der: key.serialize_der(),
        })
    }

    /// Signs a lease certificate (clientAuth) for the public key in a PKCS#10 CSR.
    ///
    /// `csr` may be DER or PEM. The CSR's self-signature must verify; everything else it asks for
    /// (subject, SANs, extensions) is ignored: the subject, the identity URI SAN and the
    /// extensions come from `identity` alone.
    ///
    /// Only clientAuth is granted: both sides of a lease dial the router as QUIC/TLS clients, so
    /// a lease certificate never has to act as a server certificate.
    ///
    /// The window is `now - policy.backdate` to
    /// `min(policy.lease_end, now + policy.max_validity, CA notAfter)`.
    pub fn sign_lease_csr(
        &self,
        csr: &[u8],
        identity: &LeaseIdentity,
        policy: &LeaseCertPolicy,
        now: OffsetDateTime,
    ) -> Result<IssuedLeaseCert> {
        let uri = identity.to_uri()?;
        if policy.lease_end <= now {
            return Err(Error::LeaseEnded {
                namespace: identity.namespace.clone(),
                lease_name: identity.lease_name.clone(),
                lease_end: policy.lease_end,
                now,
            });
        }
        let public_key = verified_csr_key(csr)?;

        let subject = identity.common_name();
        let mut params = leaf_params(&subject)?;
        let uri = uri.as_str().try_into().map_err(|source| Error::Signing {
            subject: subject.clone(),
            source,
        })?;
        params.subject_alt_names.push(SanType::URI(uri));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = whole_seconds(now - policy.backdate);
        let by_validity = add(now, policy.max_validity, &subject)?;
        params.not_after = whole_seconds(by_validity.min(policy.lease_end).min(self.not_after));
        check_window(&subject, params.not_before, params.not_after, now)?;

        let cert = params
            .signed_by(&public_key, &self.issuer)
            .map_err(|source| Error::Signing {
                subject: subject.clone(),
                source,
            })?;
        let leaf = cert.der().clone();
        Ok(IssuedLeaseCert {
            cert_pem: pem_certificate(&leaf),
            chain_pem: format!("{}{}", pem_certificate(&leaf), self.cert_pem),
            chain_der: vec![leaf, self.cert_der.clone()],
            identity: identity.clone(),
            not_before: params.not_before,
            not_after: params.not_after,
        })
    }
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("subject", &self.subject)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl IssuedCert {
    /// The chain and key in the form rustls configurations take.
    pub fn credentials(&self) -> TlsCredentials {
        TlsCredentials {
            chain: self.chain_der.clone(),
            key: PrivateKeyDer::Pkcs8(self.key_der.clone().into()),
        }
    }
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Parses a DER or PEM CSR, verifies its self-signature and returns its public key.
fn verified_csr_key(csr: &[u8]) -> Result<SubjectPublicKeyInfo> {
    let der = if csr.trim_ascii_start().starts_with(b"-----BEGIN") {
        CertificateSigningRequestDer::from_pem_slice(csr)
            .map_err(|e| Error::CsrParse {
                reason: e.to_string(),
            })?
            .as_ref()
            .to_vec()
    } else {
        csr.to_vec()
    };
    let (rest, request) =
        X509CertificationRequest::from_der(&der).map_err(|e| Error::CsrParse {
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(Error::CsrParse {
            reason: "trailing bytes after the request".to_owned(),
        });
    }
    request
        .verify_signature()
        .map_err(|_| Error::CsrSignature)?;
    SubjectPublicKeyInfo::from_der(request.certification_request_info.subject_pki.raw)
        .map_err(Error::CsrKeyAlgorithm)
}

/// Parameters shared by every leaf: subject CN, not a CA, digitalSignature, AKI, random serial.
fn leaf_params(common_name: &str) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name_dn(common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

fn common_name_dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; SERIAL_LEN];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| Error::SerialNumber)?;
    // Positive (top bit clear) and of full length (second-highest bit set), so the DER INTEGER
    // is always exactly SERIAL_LEN bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn add(now: OffsetDateTime, validity: Duration, subject: &str) -> Result<OffsetDateTime> {
    now.checked_add(validity)
        .ok_or_else(|| Error::ValidityOverflow {
            subject: subject.to_owned(),
            now,
            validity,
        })
}

/// Rejects a window in which the certificate would never be valid from `now` on.
fn check_window(
    subject: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<()> {
    if not_after <= now || not_after <= not_before {
        return Err(Error::EmptyValidity {
            subject: subject.to_owned(),
            not_before,
            not_after,
        });
    }
    Ok(())
}

fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t - Duration::nanoseconds(i64::from(t.nanosecond()))
}

fn pem_certificate(der: &CertificateDer<'_>) -> String {
    crate::pem::encode("CERTIFICATE", der.as_ref())
}
