//! The requester's side of lease certificates: a new key pair and a CSR for it.

use std::fmt;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};

use crate::error::{Error, Result};

/// A new private key and a PKCS#10 certificate signing request for its public key.
pub struct CertificateRequest {
    /// The private key, PKCS#8 PEM. It never leaves the requester.
    pub key_pem: String,
    /// The CSR, DER; what [`crate::Ca::sign_lease_csr`] takes.
    pub csr_der: Vec<u8>,
}

/// Generates an ECDSA P-256 key pair and a CSR whose subject common name is `subject_hint`.
///
/// The CA decides the real subject and identity, so the hint is only informative.
pub fn generate_csr(subject_hint: &str) -> Result<CertificateRequest> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(Error::KeyGeneration)?;
    csr_with_key(key, subject_hint)
}

/// A new CSR for an existing key (PKCS#8 PEM), to renew a lease certificate: the router
/// accepts a renewed certificate on a live connection only for the same key.
pub fn renewal_csr(key_pem: &str, subject_hint: &str) -> Result<CertificateRequest> {
    let key = KeyPair::from_pem(key_pem).map_err(Error::KeyParse)?;
    csr_with_key(key, subject_hint)
}

fn csr_with_key(key: KeyPair, subject_hint: &str) -> Result<CertificateRequest> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, subject_hint);
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .map_err(|source| Error::Signing {
            subject: subject_hint.to_owned(),
            source,
        })?;
    Ok(CertificateRequest {
        key_pem: key.serialize_pem(),
        csr_der: csr.der().to_vec(),
    })
}

impl CertificateRequest {
    /// The CSR as PEM (`CERTIFICATE REQUEST`).
    pub fn csr_pem(&self) -> String {
        crate::pem::encode("CERTIFICATE REQUEST", &self.csr_der)
    }
}

impl fmt::Debug for CertificateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateRequest")
            .field("csr_der_len", &self.csr_der.len())
            .finish_non_exhaustive()
    }
}
