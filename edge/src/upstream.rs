//! The edge's connection to the controller: one tonic [`Channel`], over QUIC (the carrier,
//! UDP) or TLS over TCP, verifying the controller as the tool would (its `tls.ca`, or no
//! verification with `tls.insecure`), and the tool's credentials for the edge's own calls.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use jumpstarter_certs::client_config;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::codegen::Service;
use tonic::codegen::http::Uri;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::config::{ToolConfig, ToolTls};

/// How long a connection to the controller may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How controller calls travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Transport {
    /// gRPC over QUIC (UDP): works where only UDP reaches the service.
    Quic,
    /// gRPC over TLS over TCP, as the tool itself would connect.
    Tcp,
}

/// Why the controller connection cannot be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("the controller endpoint {endpoint:?} is not host:port")]
    Endpoint { endpoint: String },
    #[error("cannot build the TLS configuration for the controller")]
    Tls(#[source] jumpstarter_certs::Error),
    #[error("cannot set up gRPC over QUIC to {target}")]
    Carrier {
        target: String,
        #[source]
        source: jumpstarter_tunnel::CarrierError,
    },
    #[error("{target:?} is not a valid channel address")]
    Uri {
        target: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// The tool's identity on controller calls (0.9.0 call metadata).
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    token: String,
    kind: &'static str,
    namespace: String,
    name: String,
}

impl Credentials {
    pub(crate) fn of(config: &ToolConfig) -> Credentials {
        Credentials {
            token: config.token.clone(),
            kind: config.role.metadata_kind(),
            namespace: config.namespace.clone(),
            name: config.name.clone(),
        }
    }

    /// `request` carrying these credentials; values that are not valid metadata are left out
    /// (the controller then names what is missing).
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let metadata = request.metadata_mut();
        let pairs = [
            ("authorization", format!("Bearer {}", self.token)),
            ("jumpstarter-kind", self.kind.to_owned()),
            ("jumpstarter-namespace", self.namespace.clone()),
            ("jumpstarter-name", self.name.clone()),
        ];
        for (key, value) in pairs {
            if let Ok(value) = MetadataValue::try_from(value.as_str()) {
                metadata.insert(key, value);
            }
        }
        request
    }

    /// The name to put in a certificate request.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

/// The host of `host:port` or `[v6]:port`.
pub(crate) fn endpoint_host(endpoint: &str) -> Option<&str> {
    let (host, port) = endpoint.trim().rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

/// A lazy channel to the controller of `config`. With [`Transport::Quic`] the UDP address
/// is `quic_target` or else the endpoint's own host and port.
pub(crate) fn channel(
    config: &ToolConfig,
    transport: Transport,
    quic_target: Option<&str>,
    quic_transport: &jumpstarter_tunnel::QuicTransport,
) -> Result<Channel, UpstreamError> {
    let endpoint = config.endpoint.as_str();
    let host = endpoint_host(endpoint).ok_or_else(|| UpstreamError::Endpoint {
        endpoint: endpoint.to_owned(),
    })?;
    match transport {
        Transport::Quic => {
            let target = quic_target.unwrap_or(endpoint);
            let tls = tls_config(&config.tls, Vec::new())?;
            jumpstarter_tunnel::carrier::channel_with(target, host, tls, quic_transport).map_err(
                |source| UpstreamError::Carrier {
                    target: target.to_owned(),
                    source,
                },
            )
        }
        Transport::Tcp => {
            let tls = tls_config(&config.tls, vec![b"h2".to_vec()])?;
            let server_name =
                ServerName::try_from(host.to_owned()).map_err(|_| UpstreamError::Endpoint {
                    endpoint: endpoint.to_owned(),
                })?;
            let connector = TcpTlsConnector {
                target: endpoint.to_owned(),
                server_name,
                tls: TlsConnector::from(Arc::new(tls)),
            };
            let uri = Endpoint::from_shared(format!("http://{endpoint}")).map_err(|source| {
                UpstreamError::Uri {
                    target: endpoint.to_owned(),
                    source,
                }
            })?;
            Ok(uri
                .connect_timeout(CONNECT_TIMEOUT)
                .connect_with_connector_lazy(connector))
        }
    }
}

/// The TLS client configuration the tool's `tls` block asks for.
fn tls_config(tls: &ToolTls, alpn: Vec<Vec<u8>>) -> Result<rustls::ClientConfig, UpstreamError> {
    // As 0.9.0: `insecure` wins over `ca` (it trusts whatever the server presents).
    if !tls.insecure {
        return client_config(tls.roots.clone(), None, alpn).map_err(UpstreamError::Tls);
    }
    tracing::warn!("tls.insecure: the controller's certificate is not verified");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| {
            UpstreamError::Tls(jumpstarter_certs::Error::TlsConfig {
                side: "client",
                source,
            })
        })?
        .dangerous()
        .with_custom_certificate_verifier(jumpstarter_certs::AnyServerCertificate::new())
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    Ok(config)
}

/// Connects TLS over TCP to the controller for tonic.
#[derive(Clone)]
struct TcpTlsConnector {
    target: String,
    server_name: ServerName<'static>,
    tls: TlsConnector,
}

impl std::fmt::Debug for TcpTlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTlsConnector")
            .field("target", &self.target)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Service<Uri> for TcpTlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(this.target.as_str()).await?;
            let _ = tcp.set_nodelay(true);
            let tls = this.tls.connect(this.server_name.clone(), tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_hosts() {
        assert_eq!(
            endpoint_host("controller.example:443"),
            Some("controller.example")
        );
        assert_eq!(endpoint_host("127.0.0.1:8082"), Some("127.0.0.1"));
        assert_eq!(endpoint_host("[::1]:8082"), Some("::1"));
        assert_eq!(endpoint_host("no-port"), None);
        assert_eq!(endpoint_host(":8082"), None);
        assert_eq!(endpoint_host("host:port"), None);
    }
}
