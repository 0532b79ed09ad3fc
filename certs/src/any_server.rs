//! A server-certificate verifier that accepts any certificate chain but still checks the
//! handshake signatures, so the peer holds the key of the certificate it shows. For the
//! 0.9.0 `tls.insecure` mode (trust on first use) and for reading what a local server
//! presents; never for a connection whose peer must be authenticated.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::SignatureScheme;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// See the module documentation.
#[derive(Debug)]
pub struct AnyServerCertificate(WebPkiSupportedAlgorithms);

impl AnyServerCertificate {
    /// The verifier, with the signature algorithms of the ring provider.
    pub fn new() -> Arc<AnyServerCertificate> {
        Arc::new(AnyServerCertificate(
            rustls::crypto::ring::default_provider().signature_verification_algorithms,
        ))
    }
}

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
