//! The I/O of `jumpstarter admin check`: reads from the Kubernetes API, TLS over TCP, QUIC
//! over UDP and a gRPC health call, each bounded by the timeout it is given. Every probe
//! returns an observation ([`super::verdict`] judges it); none fails the run.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jumpstarter_shell::error_chain::error_chain;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use super::advertised::split_host_port;
use super::verdict::{Fetched, QuicEnd, QuicOutcome, TlsOutcome};

/// Reads object `name` through `api`.
pub(crate) async fn get<K>(api: &Api<K>, name: &str, timeout: Duration) -> Fetched<K>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    match tokio::time::timeout(timeout, api.get_opt(name)).await {
        Err(_) => Fetched::Failed(format!("no answer from the API server within {timeout:?}")),
        Ok(Ok(Some(object))) => Fetched::Found(object),
        Ok(Ok(None)) => Fetched::Missing,
        Ok(Err(error)) => api_error(error),
    }
}

/// The resources (plural names) API discovery lists for `group_version`.
pub(crate) async fn discovery(
    client: &kube::Client,
    group_version: &str,
    timeout: Duration,
) -> Fetched<Vec<String>> {
    match tokio::time::timeout(timeout, client.list_api_group_resources(group_version)).await {
        Err(_) => Fetched::Failed(format!("no answer from the API server within {timeout:?}")),
        Ok(Ok(list)) => Fetched::Found(list.resources.into_iter().map(|r| r.name).collect()),
        Ok(Err(error)) => api_error(error),
    }
}

/// The one Deployment matching `selector`: none is [`Fetched::Missing`], several a failure
/// naming them.
pub(crate) async fn find_deployment(
    api: &Api<Deployment>,
    selector: &str,
    timeout: Duration,
) -> Fetched<Deployment> {
    let params = ListParams::default().labels(selector);
    match tokio::time::timeout(timeout, api.list(&params)).await {
        Err(_) => Fetched::Failed(format!("no answer from the API server within {timeout:?}")),
        Ok(Err(error)) => api_error(error),
        Ok(Ok(list)) => {
            let mut items = list.items;
            match items.len() {
                0 => Fetched::Missing,
                1 => Fetched::Found(items.remove(0)),
                _ => Fetched::Failed(format!(
                    "several Deployments match {selector}: {}; name one with --controller-deployment",
                    items
                        .iter()
                        .filter_map(|d| d.metadata.name.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
    }
}

fn api_error<K>(error: kube::Error) -> Fetched<K> {
    match error {
        kube::Error::Api(status) if status.code == 404 => Fetched::Missing,
        kube::Error::Api(status) if status.code == 403 => Fetched::Denied(status.message),
        other => Fetched::Failed(error_chain(&other)),
    }
}

/// Connects to `endpoint` over TCP and completes a TLS 1.3 handshake offering `alpn`,
/// verifying the server certificate against `roots` for the endpoint's host.
pub(crate) async fn tls(
    endpoint: &str,
    roots: &[CertificateDer<'static>],
    alpn: &[u8],
    timeout: Duration,
) -> TlsOutcome {
    let (host, port) = match split_host_port(endpoint) {
        Ok(hp) => hp,
        Err(e) => return TlsOutcome::BadEndpoint(e),
    };
    let addr = match resolve(&host, port, timeout).await {
        Ok(addr) => addr,
        Err(e) => return TlsOutcome::NoAddress(e),
    };
    let shown = addr.to_string();
    let (config, _) = match client_config(roots, alpn) {
        Ok(c) => c,
        Err(error) => return TlsOutcome::Broken { addr: shown, error },
    };
    let server_name = match ServerName::try_from(host.clone()) {
        Ok(name) => name,
        Err(e) => return TlsOutcome::BadEndpoint(format!("{host:?} is not a server name: {e}")),
    };
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => {
            return TlsOutcome::TimedOut {
                addr: shown,
                step: "TCP connect",
            };
        }
        Ok(Err(e)) => {
            return TlsOutcome::Unreachable {
                addr: shown,
                error: e.to_string(),
            };
        }
        Ok(Ok(stream)) => stream,
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    match tokio::time::timeout(timeout, connector.connect(server_name, stream)).await {
        Err(_) => TlsOutcome::TimedOut {
            addr: shown,
            step: "TLS handshake",
        },
        Ok(Err(e)) => match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(error) => TlsOutcome::Refused {
                addr: shown,
                error: error.clone(),
            },
            None => TlsOutcome::Broken {
                addr: shown,
                error: e.to_string(),
            },
        },
        Ok(Ok(stream)) => TlsOutcome::Secured {
            addr: shown,
            alpn: stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec),
        },
    }
}

/// Attempts a QUIC handshake with the router at `endpoint` (ALPN of the session tunnel),
/// verifying its certificate against `roots`, and notes how far it got.
pub(crate) async fn quic(
    endpoint: &str,
    roots: &[CertificateDer<'static>],
    timeout: Duration,
) -> QuicOutcome {
    let (host, port) = match split_host_port(endpoint) {
        Ok(hp) => hp,
        Err(e) => return QuicOutcome::BadEndpoint(e),
    };
    let addr = match resolve(&host, port, timeout).await {
        Ok(addr) => addr,
        Err(e) => return QuicOutcome::NoAddress(e),
    };
    let (tls, seen) = match client_config(roots, jumpstarter_tunnel::ALPN) {
        Ok(c) => c,
        Err(e) => return QuicOutcome::NotStarted(e),
    };
    let crypto = match quinn::crypto::rustls::QuicClientConfig::try_from(tls) {
        Ok(c) => c,
        Err(e) => return QuicOutcome::NotStarted(e.to_string()),
    };
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    if let Ok(idle) = quinn::IdleTimeout::try_from(timeout) {
        transport.max_idle_timeout(Some(idle));
    }
    config.transport_config(Arc::new(transport));
    let local: SocketAddr = if addr.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let client = match quinn::Endpoint::client(local) {
        Ok(client) => client,
        Err(e) => return QuicOutcome::NotStarted(format!("UDP socket: {e}")),
    };
    let end = match client.connect_with(config, addr, &host) {
        Err(e) => return QuicOutcome::NotStarted(e.to_string()),
        Ok(connecting) => match tokio::time::timeout(timeout, connecting).await {
            Err(_) => QuicEnd::TimedOut,
            Ok(Ok(connection)) => {
                connection.close(0u32.into(), b"check done");
                QuicEnd::Established
            }
            Ok(Err(error)) => match error {
                quinn::ConnectionError::ConnectionClosed(frame) => {
                    QuicEnd::ClosedByPeer(frame.to_string())
                }
                quinn::ConnectionError::ApplicationClosed(frame) => {
                    QuicEnd::ClosedByPeer(frame.to_string())
                }
                quinn::ConnectionError::TimedOut => QuicEnd::TimedOut,
                other => QuicEnd::Local(other.to_string()),
            },
        },
    };
    client.close(0u32.into(), b"check done");
    let server_cert = seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
    QuicOutcome::Attempted {
        addr: addr.to_string(),
        server_cert,
        end,
    }
}

/// Calls `grpc.health.v1.Health/Check` on the controller at `endpoint`, trusting `ca_pem`;
/// the serving status's name.
pub(crate) async fn health(
    endpoint: &str,
    ca_pem: &str,
    timeout: Duration,
) -> Result<String, String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let (host, _) = split_host_port(endpoint)?;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
        .domain_name(host);
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{endpoint}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = match tokio::time::timeout(timeout, channel.connect()).await {
        Err(_) => return Err(format!("no connection within {timeout:?}")),
        Ok(Err(e)) => return Err(error_chain(&e)),
        Ok(Ok(channel)) => channel,
    };
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: String::new(),
    };
    match tokio::time::timeout(timeout, client.check(request)).await {
        Err(_) => Err(format!("no answer within {timeout:?}")),
        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
        Ok(Ok(response)) => Ok(ServingStatus::try_from(response.into_inner().status)
            .map(|s| s.as_str_name().to_owned())
            .unwrap_or_else(|_| "an unknown status".to_owned())),
    }
}

/// The first address `host` resolves to.
async fn resolve(host: &str, port: u16, timeout: Duration) -> Result<SocketAddr, String> {
    match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Err(_) => Err(format!("resolving {host} took longer than {timeout:?}")),
        Ok(Err(e)) => Err(format!("cannot resolve {host}: {e}")),
        Ok(Ok(mut addrs)) => addrs
            .next()
            .ok_or_else(|| format!("{host} resolves to no address")),
    }
}

/// What the server certificate verification said, once the server sent one.
type Seen = Arc<Mutex<Option<Result<(), rustls::Error>>>>;

/// A TLS 1.3 client configuration trusting only `roots`, offering `alpn`, that notes the
/// verdict on the server certificate (a QUIC handshake may fail afterwards for reasons
/// that say nothing about the certificate).
fn client_config(
    roots: &[CertificateDer<'static>],
    alpn: &[u8],
) -> Result<(rustls::ClientConfig, Seen), String> {
    let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::ring::default_provider());
    let mut store = RootCertStore::empty();
    for root in roots {
        store
            .add(root.clone())
            .map_err(|e| format!("the CA certificate is not a usable root: {e}"))?;
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let seen: Seen = Arc::default();
    let verifier = Arc::new(Recording {
        inner,
        seen: seen.clone(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok((config, seen))
}

/// The standard WebPKI verification (chain to the roots, validity, name), with its verdict
/// noted.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    seen: Seen,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(verdict.as_ref().map(|_| ()).map_err(Clone::clone));
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
