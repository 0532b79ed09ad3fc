//! rustls configurations: TLS 1.3 only, the ring provider passed explicitly (never the
//! process-wide default), ALPN chosen by the caller.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// A certificate chain (leaf first) and the leaf's private key.
#[derive(Debug)]
pub struct TlsCredentials {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

/// Whether a server asks clients for certificates.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// No client certificates (the controller's gRPC port: clients authenticate with tokens).
    None,
    /// Clients must present a certificate chain leading to one of these roots (routers).
    Required(Vec<CertificateDer<'static>>),
}

impl TlsCredentials {
    /// Reads a PEM chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<TlsCredentials> {
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::CertificateParse {
                what: "certificate chain",
                reason: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(Error::CertificateParse {
                what: "certificate chain",
                reason: "no CERTIFICATE block".to_owned(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| {
            Error::PrivateKeyParse {
                reason: e.to_string(),
            }
        })?;
        Ok(TlsCredentials { chain, key })
    }
}

/// The crypto provider every configuration of this crate uses.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS 1.3 server configuration presenting `credentials` and offering `alpn`.
pub fn server_config(
    credentials: TlsCredentials,
    alpn: Vec<Vec<u8>>,
    client_auth: ClientAuth,
) -> Result<ServerConfig> {
    let tls_error = |source| Error::TlsConfig {
        side: "server",
        source,
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Required(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(root_store(roots)?),
                provider(),
            )
            .build()
            .map_err(Error::ClientVerifier)?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(credentials.chain, credentials.key)
        .map_err(tls_error)?;
    config.alpn_protocols = alpn;
    Ok(config)
}

/// A TLS 1.3 client configuration trusting only `roots`, optionally presenting a client
/// certificate, and offering `alpn`.
pub fn client_config(
    roots: Vec<CertificateDer<'static>>,
    client_identity: Option<TlsCredentials>,
    alpn: Vec<Vec<u8>>,
) -> Result<ClientConfig> {
    let tls_error = |source| Error::TlsConfig {
        side: "client",
        source,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_root_certificates(root_store(roots)?);
    let mut config = match client_identity {
        None => builder.with_no_client_auth(),
        Some(identity) => builder
            .with_client_auth_cert(identity.chain, identity.key)
            .map_err(tls_error)?,
    };
    config.alpn_protocols = alpn;
    Ok(config)
}

pub(crate) fn root_store(roots: Vec<CertificateDer<'static>>) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root).map_err(|e| Error::CertificateParse {
            what: "root certificate",
            reason: e.to_string(),
        })?;
    }
    Ok(store)
}
