//! Who may use the admin socket: the user that runs the service, and root. The socket's
//! mode (0600, in a 0700 directory) already keeps others out; the peer's credentials
//! (`SO_PEERCRED`, taken when it connected) are checked as well, so a loosened mode or a
//! socket handed on does not open the admin API. A refused peer gets a 403 with the reason
//! and the connection closes; the refusal is logged and counted in
//! `jumpstarter_admin_socket_refused_connections`.

use std::io;
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::net::{UnixListener, UnixStream};

use super::ErrorBody;

/// The superuser, always admitted: it can read the data directory anyway.
const ROOT: u32 = 0;
/// Pause after a failed accept (out of file descriptors, say), so that the loop does not
/// spin while the condition lasts; axum's own listeners wait the same.
const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Label set of the refusal counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RefusalLabels {
    /// `other_user` or `no_credentials`.
    pub(crate) reason: &'static str,
}

/// Metrics of the admin socket.
#[derive(Debug, Clone, Default)]
pub(crate) struct AdminSocketMetrics {
    /// Connections refused, by reason.
    pub(crate) refused: Family<RefusalLabels, Counter>,
}

impl AdminSocketMetrics {
    /// Creates the metrics and registers them.
    pub(crate) fn register(registry: &mut Registry) -> AdminSocketMetrics {
        let metrics = AdminSocketMetrics::default();
        registry.register(
            "jumpstarter_admin_socket_refused_connections",
            "Connections to the admin socket refused by the peer check, by reason",
            metrics.refused.clone(),
        );
        metrics
    }
}

/// Why a peer may not use the socket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error(
        "the admin socket serves only uid {server} (the service's user) and root, not uid {peer}"
    )]
    OtherUser { peer: u32, server: u32 },
    #[error("the admin socket could not read the credentials of its peer")]
    NoCredentials,
}

impl Refusal {
    fn reason(&self) -> &'static str {
        match self {
            Refusal::OtherUser { .. } => "other_user",
            Refusal::NoCredentials => "no_credentials",
        }
    }
}

/// Whether a peer running as `peer` (if its credentials could be read) may use the socket
/// of a service running as `server`.
pub(crate) fn admit(peer: Option<u32>, server: u32) -> Result<(), Refusal> {
    match peer {
        Some(uid) if uid == server || uid == ROOT => Ok(()),
        Some(peer) => Err(Refusal::OtherUser { peer, server }),
        None => Err(Refusal::NoCredentials),
    }
}

/// The credentials of a connected peer, as its connection info.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer {
    /// Its uid, when `SO_PEERCRED` could be read.
    uid: Option<u32>,
}

/// A Unix listener whose connections carry their peer's credentials ([`Peer`]).
#[derive(Debug)]
pub(crate) struct CredentialListener(pub(crate) UnixListener);

impl Listener for CredentialListener {
    type Io = UnixStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (UnixStream, Peer) {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => {
                    let uid = stream.peer_cred().ok().map(|c| c.uid());
                    return (stream, Peer { uid });
                }
                Err(error) => {
                    tracing::warn!(%error, "admin socket accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Peer> {
        // The listener itself has no peer; axum asks only for logs.
        Ok(Peer { uid: None })
    }
}

impl Connected<IncomingStream<'_, CredentialListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, CredentialListener>) -> Peer {
        *stream.remote_addr()
    }
}

/// The check every admin request passes first (an axum middleware with [`check`]).
#[derive(Debug)]
pub(crate) struct PeerCheck {
    server_uid: u32,
    metrics: AdminSocketMetrics,
}

impl PeerCheck {
    /// Admits the user running this process, and root.
    pub(crate) fn new(metrics: AdminSocketMetrics) -> PeerCheck {
        PeerCheck {
            server_uid: nix::unistd::getuid().as_raw(),
            metrics,
        }
    }
}

/// Passes the request on when [`admit`] allows its peer; else answers 403 with the reason
/// and closes the connection, and logs and counts the refusal.
pub(crate) async fn check(
    State(check): State<Arc<PeerCheck>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: Request,
    next: Next,
) -> Response {
    match admit(peer.uid, check.server_uid) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            check
                .metrics
                .refused
                .get_or_create(&RefusalLabels {
                    reason: refusal.reason(),
                })
                .inc();
            tracing::warn!(
                reason = refusal.reason(),
                "admin socket connection refused: {refusal}"
            );
            let body = serde_json::to_vec(&ErrorBody {
                error: refusal.to_string(),
            })
            .unwrap_or_default();
            (
                StatusCode::FORBIDDEN,
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::CONNECTION, "close"),
                ],
                body,
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_user_and_root_only() {
        assert_eq!(admit(Some(1000), 1000), Ok(()));
        assert_eq!(admit(Some(0), 1000), Ok(()));
        assert_eq!(admit(Some(0), 0), Ok(()));
        let refused = admit(Some(1001), 1000).unwrap_err();
        assert_eq!(refused.reason(), "other_user");
        assert!(refused.to_string().contains("not uid 1001"));
        assert_eq!(admit(None, 1000), Err(Refusal::NoCredentials));
        assert_eq!(admit(Some(65534), 0).unwrap_err().reason(), "other_user");
    }
}
