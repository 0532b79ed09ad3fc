//! The small HTTP services of the controller process (the login service, the dashboard):
//! an axum app served over TLS from the shared accept loop, or in plain HTTP, until
//! shutdown. Handlers can read the peer's address ([`Peer`]).

use std::net::SocketAddr;
use std::sync::Arc;

use jumpstarter_shell::accept_loop::{AcceptLimits, TlsConnection, TlsIncoming};
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::ServerError;

/// The address a request came from (`axum::extract::ConnectInfo<Peer>`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TcpListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// Serves `app` (the `what` service) on `listener` until `shutdown`: over TLS with `tls`,
/// else in plain HTTP.
pub(crate) async fn serve(
    what: &'static str,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: axum::Router,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".to_owned());
    tracing::info!(%addr, tls = tls.is_some(), "{what} listening");
    let service = app.into_make_service_with_connect_info::<Peer>();
    let result = match tls {
        Some(tls) => {
            let incoming = TlsListener {
                what,
                incoming: TlsIncoming::start(
                    listener,
                    tls,
                    AcceptLimits::default(),
                    None,
                    shutdown.clone(),
                ),
            };
            axum::serve(incoming, service)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
        None => {
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
    };
    result.map_err(|source| ServerError::Http { addr, source })
}

/// TLS connections from the shared accept loop, as axum's listener.
pub(crate) struct TlsListener {
    what: &'static str,
    incoming: TlsIncoming,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.incoming.next().await {
                Some(Ok(connection)) => {
                    let peer = connection
                        .get_ref()
                        .get_ref()
                        .0
                        .peer_addr()
                        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                    return (connection, peer);
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, "{} connection failed", self.what);
                }
                // The accept loop ended (shutdown): wait for the graceful shutdown to end
                // the server.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Err(std::io::Error::other(format!(
            "the {} listener's address is logged at start",
            self.what
        )))
    }
}
