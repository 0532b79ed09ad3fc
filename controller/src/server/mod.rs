//! The controller's listeners.
//!
//! - [`serve_grpc`]: one TLS port (rustls, ALPN `h2`) for `ControllerService`,
//!   `ClientService` and `grpc.health.v1.Health`, built by [`grpc_routes`]. Messages over
//!   [`MAX_MESSAGE_SIZE`] are refused with RESOURCE_EXHAUSTED (grpc-go's code for it).
//!   HTTP/2 PINGs are answered whatever their rate, with or without calls in flight
//!   (0.9.0 clients ping every 20 s on idle connections). `LeaseCertificateService` is
//!   served on the same port when the services carry a CA, and so is `PeerService`, the
//!   channel between controller replicas (peer tokens only). gRPC server reflection
//!   (`grpc.reflection.v1` and `v1alpha`, as grpc-go serves them for 0.9.0) describes them
//!   all, without credentials. Connections go through the
//!   shared bounded accept loop (`jumpstarter_shell::accept_loop`: connection and
//!   handshake caps, refusals counted); the server applies the port's HTTP/2 limits
//!   (`jumpstarter_shell::http2_limits`), keepalive PINGs included, so a connection whose
//!   peer vanished is closed and its streams end.
//! - [`serve_http`]: plain HTTP `/healthz`, `/readyz` (see [`Readiness`]) and `/metrics`
//!   (the process's one prometheus-client registry).

pub(crate) mod http;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use jumpstarter_shell::accept_loop::{AcceptMetrics, TlsIncoming};
use jumpstarter_shell::port_limits::PortLimits;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use jumpstarter_proto::jumpstarter::client::v1::client_service_server::ClientServiceServer;
use jumpstarter_proto::jumpstarter::peer::v1::peer_service_server::PeerServiceServer;
use jumpstarter_proto::jumpstarter::quic::v1::lease_certificate_service_server::LeaseCertificateServiceServer;
use jumpstarter_proto::jumpstarter::v1::controller_service_server::ControllerServiceServer;

use crate::service::Services;
use crate::store::Store;

/// Largest gRPC message accepted: gRPC's customary 4 MiB default, which 0.9.0 keeps.
pub(crate) const MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;
/// ALPN protocols of the gRPC port.
pub const ALPN: &[&[u8]] = &[b"h2"];

/// Why a listener stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("gRPC server on {addr} failed: {source}")]
    Grpc {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("HTTP server on {addr} failed: {source}")]
    Http {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC over QUIC on UDP {addr} failed: {source}")]
    Quic {
        addr: String,
        #[source]
        source: jumpstarter_tunnel::CarrierError,
    },
    #[error("a server task failed: {0}")]
    Task(String),
}

/// Readiness of the process: keys loaded and the gRPC port bound.
#[derive(Debug, Default)]
pub struct Readiness {
    keys_loaded: AtomicBool,
    grpc_bound: AtomicBool,
}

impl Readiness {
    pub fn set_keys_loaded(&self) {
        self.keys_loaded.store(true, Ordering::SeqCst);
    }

    pub(crate) fn set_grpc_bound(&self) {
        self.grpc_bound.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.keys_loaded.load(Ordering::SeqCst) && self.grpc_bound.load(Ordering::SeqCst)
    }
}

/// Both services and the health service, with the message size limit, as routes.
pub async fn grpc_routes<S: Store>(services: &Services<S>) -> Routes {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ControllerServiceServer<crate::service::ControllerApi<S>>>()
        .await;
    health
        .set_serving::<ClientServiceServer<crate::service::ClientApi<S>>>()
        .await;
    let controller = ControllerServiceServer::new(services.controller())
        .max_decoding_message_size(MAX_MESSAGE_SIZE);
    let client =
        ClientServiceServer::new(services.client()).max_decoding_message_size(MAX_MESSAGE_SIZE);
    let peer = PeerServiceServer::new(services.peer()).max_decoding_message_size(MAX_MESSAGE_SIZE);
    let (reflection, reflection_v1alpha) = reflection_services();
    let mut routes = Routes::new(health_service)
        .add_service(controller)
        .add_service(client)
        .add_service(peer)
        .add_service(reflection)
        .add_service(reflection_v1alpha);
    if let Some(lease_certificates) = services.lease_certificates() {
        health
            .set_serving::<LeaseCertificateServiceServer<crate::service::LeaseCertificateApi<S>>>()
            .await;
        routes = routes.add_service(
            LeaseCertificateServiceServer::new(lease_certificates)
                .max_decoding_message_size(MAX_MESSAGE_SIZE),
        );
    }
    let routes = routes.prepare();
    let router = routes
        .into_axum_router()
        .layer(axum::middleware::map_response(
            oversized_is_resource_exhausted,
        ));
    Routes::from(router)
}

/// gRPC server reflection, both versions (grpcurl asks for `v1` and falls back to
/// `v1alpha`), over every service this port may serve and the health service.
fn reflection_services() -> (
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
) {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(jumpstarter_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // Invariant: both descriptor sets are compiled in by protoc-free build scripts and
    // decode (the unit test below builds them); a failure is a build defect.
    (
        builder()
            .build_v1()
            .expect("the compiled-in descriptor sets decode"),
        builder()
            .build_v1alpha()
            .expect("the compiled-in descriptor sets decode"),
    )
}

/// tonic answers an oversized message with OUT_OF_RANGE; grpc-go (and so 0.9.0) with
/// RESOURCE_EXHAUSTED. The services never return OUT_OF_RANGE themselves.
async fn oversized_is_resource_exhausted(
    mut response: axum::response::Response,
) -> axum::response::Response {
    const OUT_OF_RANGE: &str = "11";
    const RESOURCE_EXHAUSTED: &str = "8";
    let headers = response.headers_mut();
    if headers
        .get("grpc-status")
        .is_some_and(|v| v == OUT_OF_RANGE)
    {
        headers.insert("grpc-status", HeaderValue::from_static(RESOURCE_EXHAUSTED));
    }
    response
}

/// Serves `routes` over TLS on `listener` until `shutdown`, then drains connections.
/// Connections come through the shared bounded accept loop with `limits` (refusals and
/// counts in `metrics`); the server applies the HTTP/2 limits.
pub async fn serve_grpc(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    routes: Routes,
    limits: PortLimits,
    metrics: Option<AcceptMetrics>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".to_owned());
    let incoming = {
        let _span = tracing::info_span!("grpc_accept", %addr).entered();
        TlsIncoming::start(listener, tls, limits.accept, metrics, shutdown.clone())
    };
    tracing::info!(%addr, "gRPC server listening");
    let result = limits
        .http2
        .apply(tonic::transport::Server::builder())
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
        .map_err(|source| ServerError::Grpc {
            addr: addr.clone(),
            source,
        });
    tracing::info!(%addr, "gRPC server stopped");
    result
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `listener` until `shutdown`.
pub(crate) async fn serve_http(
    listener: TcpListener,
    readiness: Arc<Readiness>,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let addr = listener
        .local_addr()
        .map(|a: SocketAddr| a.to_string())
        .unwrap_or_else(|_| "?".to_owned());
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let ready = readiness.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || {
                let registry = registry.clone();
                async move { metrics_response(&registry) }
            }),
        );
    tracing::info!(%addr, "HTTP probes and metrics listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|source| ServerError::Http { addr, source })
}

fn metrics_response(registry: &Registry) -> axum::response::Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics").into_response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_reflection_services_build() {
        let _ = super::reflection_services();
    }
}
