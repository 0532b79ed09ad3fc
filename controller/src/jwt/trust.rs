//! The roots an issuer's HTTPS endpoints are verified with: the configured
//! `certificateAuthority` (inline PEM, or a file re-read when its content changes), else the
//! system roots.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::fetch::FetchError;

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

/// The roots of one issuer, kept across fetches.
#[derive(Debug)]
pub(crate) enum Trust {
    /// No `certificateAuthority`: the system roots.
    System,
    /// Inline PEM, parsed once.
    Inline(Arc<RootCertStore>),
    /// A PEM file, re-read at every fetch and re-parsed when its content changed.
    File {
        path: PathBuf,
        content: Vec<u8>,
        roots: Arc<RootCertStore>,
    },
}

impl Trust {
    /// The trust of a configured `certificateAuthority`; a file must exist and hold PEM
    /// certificates now (0.9.0 refuses to start otherwise as well).
    pub(crate) fn new(certificate_authority: Option<&str>) -> Result<Trust, String> {
        match certificate_authority.map(CertificateAuthority::of) {
            None => Ok(Trust::System),
            Some(CertificateAuthority::Inline(pem)) => {
                Ok(Trust::Inline(parse_pem_roots(pem.as_bytes())?))
            }
            Some(CertificateAuthority::File(path)) => {
                let content =
                    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
                let roots = parse_pem_roots(&content).map_err(|e| format!("{path}: {e}"))?;
                Ok(Trust::File {
                    path: PathBuf::from(path),
                    content,
                    roots,
                })
            }
        }
    }

    /// The roots to fetch with now. A file is re-read; when its content changed and
    /// parses, its roots replace the old ones (a file that no longer parses is an error,
    /// and the old roots stay for the next attempt).
    pub(crate) async fn roots(&mut self) -> Result<Arc<RootCertStore>, FetchError> {
        match self {
            Trust::System => system_roots(),
            Trust::Inline(roots) => Ok(roots.clone()),
            Trust::File {
                path,
                content,
                roots,
            } => {
                let ca_error = |message: String| FetchError::CertificateAuthority {
                    path: path.display().to_string(),
                    message,
                };
                let now = tokio::fs::read(&*path)
                    .await
                    .map_err(|e| ca_error(e.to_string()))?;
                if now != *content {
                    let fresh = parse_pem_roots(&now).map_err(ca_error)?;
                    tracing::info!(path = %path.display(), "issuer certificate authority file changed; using its new content");
                    *content = now;
                    *roots = fresh;
                }
                Ok(roots.clone())
            }
        }
    }
}

/// The system's root certificates, loaded once per process.
fn system_roots() -> Result<Arc<RootCertStore>, FetchError> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _ignored) = store.add_parsable_certificates(loaded.certs);
            if added == 0 {
                let errors: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
                return Err(format!(
                    "no system root certificates found{}; set issuer.certificateAuthority",
                    if errors.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", errors.join("; "))
                    }
                ));
            }
            Ok(Arc::new(store))
        })
        .clone()
        .map_err(FetchError::SystemRoots)
}
