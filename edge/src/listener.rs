//! The edge's local listener: TLS (the local CA's certificate, ALPN h2) on a TCP port for
//! the tool. `RouterService` is served locally; every other call goes to the controller.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body as AxumBody;
use jumpstarter_proto::jumpstarter::v1::router_service_server::RouterServiceServer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::codegen::http::Request;
use tonic::service::Routes;
use tracing::Instrument;

use crate::forwarder::Forwarder;
use crate::session::LocalRouter;

/// A TLS handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the HTTP/2 server.
const ACCEPT_QUEUE: usize = 16;

/// The routes of the local port: the local router, and the forwarder for everything else.
pub(crate) fn routes(router: LocalRouter, forwarder: Forwarder) -> Routes {
    let axum = Routes::new(RouterServiceServer::new(router))
        .into_axum_router()
        .fallback(move |request: Request<AxumBody>| forwarder.clone().forward(request));
    Routes::from(axum)
}

/// Serves `routes` over TLS on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    routes: Routes,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let (tx, rx) = mpsc::channel::<Result<TlsStream<TcpStream>, std::io::Error>>(ACCEPT_QUEUE);
    let accept = tokio::spawn(
        accept_loop(listener, TlsAcceptor::from(tls), tx, shutdown.clone())
            .instrument(tracing::debug_span!("local_accept")),
    );
    let result = tonic::transport::Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(ReceiverStream::new(rx), shutdown.cancelled_owned())
        .await;
    accept.abort();
    result
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<Result<TlsStream<TcpStream>, std::io::Error>>,
    shutdown: CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = tx.send(Ok(stream)).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "local TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "local TLS handshake timed out"),
            }
        });
    }
}
