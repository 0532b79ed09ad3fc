//! The edge's local listener: TLS (the local CA's certificate, ALPN h2) on a TCP port for
//! the tool, through the shared bounded accept loop (`jumpstarter_shell::accept_loop`),
//! with the default HTTP/2 limits (`jumpstarter_shell::http2_limits`).
//! `RouterService` is served locally; every other call goes to the controller.

use std::sync::Arc;

use axum::body::Body as AxumBody;
use jumpstarter_proto::jumpstarter::v1::router_service_server::RouterServiceServer;
use jumpstarter_shell::accept_loop::{AcceptLimits, TlsIncoming};
use jumpstarter_shell::http2_limits::Http2Limits;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codegen::http::Request;
use tonic::service::Routes;

use crate::forwarder::Forwarder;
use crate::session::LocalRouter;

/// Handshaken connections waiting for the HTTP/2 server.
const ACCEPT_QUEUE: usize = 16;

/// The routes of the local port: the local router, and the forwarder for everything else.
pub(crate) fn routes(router: LocalRouter, forwarder: Forwarder) -> Routes {
    let axum = Routes::new(RouterServiceServer::new(router))
        .into_axum_router()
        .fallback(move |request: Request<AxumBody>| forwarder.clone().forward(request));
    Routes::from(axum)
}

/// Serves `routes` over TLS on `listener` until `shutdown`, through the shared bounded
/// accept loop.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    routes: Routes,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let incoming = {
        let _span = tracing::debug_span!("local_accept").entered();
        TlsIncoming::start(
            listener,
            tls,
            AcceptLimits {
                accepted_queue: ACCEPT_QUEUE,
                ..AcceptLimits::default()
            },
            None,
            shutdown.clone(),
        )
    };
    Http2Limits::default()
        .apply(tonic::transport::Server::builder())
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}
