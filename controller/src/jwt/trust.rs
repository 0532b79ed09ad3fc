//! The roots an issuer's HTTPS endpoints are verified with: the configured
//! `certificateAuthority` (inline PEM, or a file re-read when its content changes), else the
//! system roots.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Where an `issuer.certificateAuthority` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CertificateAuthority<'a> {
    /// PEM text in the configuration.
    Inline(&'a str),
    /// A file path, re-read when the file changes.
    File(&'a str),
}

impl<'a> CertificateAuthority<'a> {
    /// PEM text is inline; anything else is a path (0.9.0 treats a value naming an
    /// existing file as a path, and anything else as PEM, which then fails to parse).
    pub(crate) fn of(value: &'a str) -> CertificateAuthority<'a> {
        if value.contains("-----BEGIN") {
            CertificateAuthority::Inline(value)
        } else {
            CertificateAuthority::File(value.trim())
        }
    }
}

/// The root store of a PEM bundle: at least one certificate, each usable as a root.
pub(crate) fn parse_pem_roots(pem: &[u8]) -> Result<Arc<RootCertStore>, String> {
    root_store(pem_certificates(pem)?)
}

/// The certificates of a PEM bundle; at least one.
fn pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(certs)
}

/// A root store of `certs`, refusing certificates that are not usable as roots.
fn root_store(certs: Vec<CertificateDer<'static>>) -> Result<Arc<RootCertStore>, String> {
    let mut store = RootCertStore::empty();
    for cert in certs {
        store
            .add(cert)
            .map_err(|e| format!("not a usable root certificate: {e}"))?;
    }
    Ok(Arc::new(store))
}
