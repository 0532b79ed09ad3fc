//! Server TLS material that can be replaced while the server runs: the serving certificate
//! ([`ServingCert`], a rustls certificate resolver) and the roots that client certificates
//! must chain to ([`TrustedRoots`], a client certificate verifier).
//!
//! A server configuration built by [`reloadable_server_config`] reads both at every
//! handshake, so a new TLS connection sees what was installed last; connections already
//! established keep what they negotiated. A replacement is checked completely before it is
//! installed (the chain parses, the key parses and belongs to the leaf, the roots build a
//! verifier): a bad one is an error for the caller to report, and the old material keeps
//! serving.

use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::UnixTime;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::tls::{TlsCredentials, provider, root_store};

/// What a [`ServingCert`] presents now.
#[derive(Debug)]
struct Installed {
    key: Arc<CertifiedKey>,
    not_after: OffsetDateTime,
    serial: String,
}

/// The serving certificate of a server, replaceable while it runs.
#[derive(Debug)]
pub struct ServingCert {
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Installed>>,
}

impl ServingCert {
    /// Starts with `credentials`, checked as [`ServingCert::replace`] checks them.
    pub fn new(credentials: TlsCredentials) -> Result<Arc<ServingCert>> {
        let provider = provider();
        let installed = install(&provider, credentials)?;
        Ok(Arc::new(ServingCert {
            provider,
            current: RwLock::new(Arc::new(installed)),
        }))
    }

    /// Presents `credentials` from the next handshake on. On error nothing changes.
    pub fn replace(&self, credentials: TlsCredentials) -> Result<()> {
        let installed = install(&self.provider, credentials)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(installed);
        Ok(())
    }

    /// The `notAfter` of the leaf presented now.
    pub fn not_after(&self) -> OffsetDateTime {
        self.installed().not_after
    }

    /// The serial number of the leaf presented now, as hex (for logs).
    pub fn serial(&self) -> String {
        self.installed().serial.clone()
    }

    fn installed(&self) -> Arc<Installed> {
        // Writers only swap a complete value in; a poisoned lock still holds a whole one.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.installed().key.clone())
    }
}

fn install(provider: &CryptoProvider, credentials: TlsCredentials) -> Result<Installed> {
    let leaf = credentials
        .chain
        .first()
        .ok_or_else(|| Error::CertificateParse {
            what: "certificate chain",
            reason: "no CERTIFICATE block".to_owned(),
        })?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| Error::CertificateParse {
            what: "serving certificate",
            reason: e.to_string(),
        })?;
    let not_after = parsed.validity().not_after.to_datetime();
    let serial = parsed.raw_serial_as_string();
    let subject = parsed.subject().to_string();
    let key = CertifiedKey::from_der(credentials.chain, credentials.key, provider).map_err(
        |e| match e {
            rustls::Error::InconsistentKeys(_) => Error::ServerKeyMismatch { subject },
            other => Error::PrivateKeyParse {
                reason: other.to_string(),
            },
        },
    )?;
    Ok(Installed {
        key: Arc::new(key),
        not_after,
        serial,
    })
}

/// The roots client certificates must chain to, replaceable while the server runs.
#[derive(Debug)]
pub struct TrustedRoots {
    current: RwLock<Trusted>,
}

/// The roots and the verifier built from them, replaced together.
#[derive(Debug, Clone)]
struct Trusted {
    verifier: Arc<dyn ClientCertVerifier>,
    roots: Arc<Vec<CertificateDer<'static>>>,
}

impl TrustedRoots {
    /// Starts with `roots`.
    pub fn new(roots: Vec<CertificateDer<'static>>) -> Result<Arc<TrustedRoots>> {
        let verifier = verifier(&roots)?;
        Ok(Arc::new(TrustedRoots {
            current: RwLock::new(Trusted {
                verifier,
                roots: Arc::new(roots),
            }),
        }))
    }

    /// Trusts `roots` instead, from the next handshake on. On error nothing changes.
    pub fn replace(&self, roots: Vec<CertificateDer<'static>>) -> Result<()> {
        let verifier = verifier(&roots)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Trusted {
            verifier,
            roots: Arc::new(roots),
        };
        Ok(())
    }

    /// The roots trusted now.
    pub fn roots(&self) -> Arc<Vec<CertificateDer<'static>>> {
        self.read().roots
    }

    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.read().verifier
    }

    fn read(&self) -> Trusted {
        // Writers only swap a complete pair in; a poisoned lock still holds a whole one.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn verifier(roots: &[CertificateDer<'static>]) -> Result<Arc<dyn ClientCertVerifier>> {
    if roots.is_empty() {
        return Err(Error::CertificateParse {
            what: "root certificate",
            reason: "no CERTIFICATE block".to_owned(),
        });
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(roots.to_vec())?), provider())
        .build()
        .map_err(Error::ClientVerifier)
}

impl ClientCertVerifier for TrustedRoots {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No hints: the roots can change under a borrowed slice. Hints are optional in
    /// TLS 1.3; our peers hold exactly one certificate.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        self.verifier()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier().supported_verify_schemes()
    }
}

/// A TLS 1.3 server configuration presenting whatever `cert` holds at each handshake and,
/// with `client_roots`, requiring client certificates chaining to those roots.
pub fn reloadable_server_config(
    cert: Arc<ServingCert>,
    alpn: Vec<Vec<u8>>,
    client_roots: Option<Arc<TrustedRoots>>,
) -> Result<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| Error::TlsConfig {
            side: "server",
            source,
        })?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => builder.with_client_cert_verifier(roots),
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = alpn;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ca, ServerCertParams};
    use time::Duration;

    fn issue(ca: &Ca, days: i64) -> crate::IssuedCert {
        ca.issue_server_cert(
            &ServerCertParams {
                dns_names: vec!["localhost".into()],
                ip_addresses: vec![],
                validity: Duration::days(days),
            },
            OffsetDateTime::now_utc(),
        )
        .expect("cert")
    }

    #[test]
    fn replacement_is_checked_before_it_is_installed() {
        let ca =
            Ca::generate("reload-ca", OffsetDateTime::now_utc(), Duration::days(10)).expect("ca");
        let first = issue(&ca, 2);
        let serving = ServingCert::new(first.credentials()).expect("first");
        let (serial, not_after) = (serving.serial(), serving.not_after());
        assert!(not_after > OffsetDateTime::now_utc() + Duration::days(1));

        // A key of another certificate: refused, the old one stays.
        let second = issue(&ca, 5);
        let mismatched =
            TlsCredentials::from_pem(&second.chain_pem, &first.key_pem).expect("parses");
        let err = serving.replace(mismatched).expect_err("mismatch");
        assert!(matches!(err, Error::ServerKeyMismatch { .. }), "{err}");
        assert_eq!(serving.serial(), serial);

        serving.replace(second.credentials()).expect("second");
        assert_ne!(serving.serial(), serial);
        assert!(serving.not_after() > not_after + Duration::days(2));

        assert!(TrustedRoots::new(Vec::new()).is_err());
        let roots = TrustedRoots::new(vec![ca.cert_der().clone()]).expect("roots");
        assert!(
            roots
                .replace(vec![CertificateDer::from(vec![1, 2, 3])])
                .is_err()
        );
        assert_eq!(roots.roots().len(), 1);
    }
}
