//! The QUIC listener's lease CA is replaceable while it runs: the TLS handshake and the
//! admission check read the same [`TrustedRoots`], so after a replacement new connections
//! are judged by the new roots (a lease certificate from a newly trusted CA is admitted and
//! its sessions pair; one from a CA no longer trusted is refused).

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use jumpstarter_certs::{Ca, Role, TrustedRoots};
use jumpstarter_tunnel::Connection;
use support::WAIT;
use support::lab::{BLOCK, quic_receive, quic_send};
use support::quic_only::{lease_cert, start};
use time::OffsetDateTime;
use tokio::time::timeout;

/// The connection was refused: closed by the router, no session opens on it.
async fn assert_refused(attempt: Result<Connection, jumpstarter_tunnel::ConnectError>) {
    let Ok(connection) = attempt else { return };
    let error = timeout(Duration::from_secs(10), connection.quic().closed())
        .await
        .expect("the router closes the connection well before the idle timeout");
    assert!(
        matches!(
            error,
            quinn::ConnectionError::TransportError(_) | quinn::ConnectionError::ConnectionClosed(_)
        ),
        "refused, got {error:?}"
    );
}

#[tokio::test]
async fn a_replaced_lease_ca_applies_to_new_connections() {
    let mut roots: Option<Arc<TrustedRoots>> = None;
    let router = start(|config| roots = Some(config.client_ca.clone())).await;
    let roots = roots.expect("roots");
    let now = OffsetDateTime::now_utc();
    let later = now + time::Duration::hours(1);
    let next = Ca::generate("next lease CA", now, time::Duration::days(1)).expect("CA");

    assert_refused(
        router
            .connect(lease_cert(&next, Role::Client, "alice", now, later))
            .await,
    )
    .await;

    // Both CAs trusted: peers of the new one are admitted and pair.
    roots
        .replace(vec![router.ca.cert_der().clone(), next.cert_der().clone()])
        .expect("replace");
    let client = router
        .connect(lease_cert(&next, Role::Client, "alice", now, later))
        .await
        .expect("client admitted");
    let exporter = router
        .connect(lease_cert(&next, Role::Exporter, "board-1", now, later))
        .await
        .expect("exporter admitted");
    let (c_send, _c_recv) = client.open_session("s-1").await.expect("client session");
    let (_e_send, e_recv) = exporter
        .open_session("s-1")
        .await
        .expect("exporter session");
    let sent = tokio::spawn(quic_send(c_send, 7, 4));
    let (digest, len) = timeout(WAIT, quic_receive(e_recv))
        .await
        .expect("bytes in time");
    assert_eq!(len, 4 * BLOCK as u64);
    assert_eq!(digest, sent.await.expect("sender"));
    let old = router.peer(Role::Client, "carol").await;

    // Only the new CA: the old one's certificates are refused from now on.
    roots
        .replace(vec![next.cert_der().clone()])
        .expect("replace");
    assert_refused(
        router
            .connect(lease_cert(&router.ca, Role::Client, "dave", now, later))
            .await,
    )
    .await;
    // A bad replacement changes nothing.
    assert!(roots.replace(Vec::new()).is_err());
    router
        .connect(lease_cert(&next, Role::Client, "erin", now, later))
        .await
        .expect("still the new CA");
    drop(old);
}
