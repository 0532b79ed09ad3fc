//! The exporter's Status stream: its current lease state at once and after every change
//! (never twice in a row the same), with the stream doubling as the heartbeat that keeps
//! `status.lastSeen` fresh.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::Instrument;

use jumpstarter_proto::jumpstarter::v1::StatusResponse;

use super::metrics::GaugeGuard;
use super::write::{self, Part};
use super::{Shared, store_status};
use crate::auth::Caller;
use crate::crd::vocabulary;
use crate::crd::{Exporter, ExporterStatusValue, Lease};
use crate::store::{Store, StoreError, WatchEvent};

/// How often an open Status stream refreshes `lastSeen` (0.9.0 value; the reconciler
/// calls an exporter offline after a minute without it).
pub(crate) const HEARTBEAT: StdDuration = StdDuration::from_secs(10);

/// Opens the stream for `caller` (an authenticated exporter).
pub(super) async fn open<S: Store>(
    shared: Arc<Shared<S>>,
    caller: Caller,
) -> Result<ReceiverStream<Result<StatusResponse, Status>>, Status> {
    let namespace = caller.namespace.clone();
    let name = caller.name.clone();
    let exporter =
        write::modify::<S, Exporter, _>(&shared.store, &namespace, &name, Part::Status, |e| {
            let status = e.status.get_or_insert_with(Default::default);
            status.last_seen = Some(vocabulary::now_time());
            // A recent connection after a graceful shutdown: forget the Offline report so an
            // old exporter that never reports a status again is not stuck offline.
            if status.exporter_status == Some(ExporterStatusValue::Offline) {
                status.exporter_status = None;
                status.status_message = None;
            }
            true
        })
        .await
        .map_err(store_status)?;
    let first = state_of(&shared.store, &namespace, &exporter).await;
    let (tx, rx) = mpsc::channel(4);
    // Capacity 4 and nothing sent yet: this cannot fail for lack of room.
    let _ = tx.try_send(Ok(first.clone()));
    let guard = GaugeGuard::new(&shared.metrics.status_streams);
    let span = tracing::info_span!("status", exporter = %format!("{namespace}/{name}"));
    tokio::spawn(
        async move {
            let _guard = guard;
            run(shared, namespace, name, first, tx).await;
        }
        .instrument(span),
    );
    Ok(ReceiverStream::new(rx))
}

async fn run<S: Store>(
    shared: Arc<Shared<S>>,
    namespace: String,
    name: String,
    mut last: StatusResponse,
    tx: mpsc::Sender<Result<StatusResponse, Status>>,
) {
    tracing::debug!("status stream opened");
    let mut watch = shared.store.watch::<Exporter>(&namespace, Some(&name));
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end: Option<Status> = loop {
        tokio::select! {
            () = tx.closed() => break None,
            () = shared.shutdown.cancelled() => break None,
            _ = heartbeat.tick() => {
                let beat = write::modify::<S, Exporter, _>(&shared.store, &namespace, &name, Part::Status, |e| {
                    e.status.get_or_insert_with(Default::default).last_seen = Some(vocabulary::now_time());
                    true
                })
                .await;
                match beat {
                    Ok(_) => {}
                    Err(StoreError::NotFound { .. }) => break Some(Status::not_found(format!("exporter {namespace}/{name} was deleted"))),
                    Err(err) => tracing::warn!("heartbeat failed: {err}"),
                }
            }
            event = watch.next() => match event {
                Some(Ok(WatchEvent::Applied(exporter))) => {
                    let state = state_of(&shared.store, &namespace, &exporter).await;
                    if state != last {
                        if tx.send(Ok(state.clone())).await.is_err() {
                            break None;
                        }
                        last = state;
                    }
                }
                Some(Ok(WatchEvent::Deleted(_))) => {
                    break Some(Status::not_found(format!("exporter {namespace}/{name} was deleted")));
                }
                Some(Ok(WatchEvent::Relisting | WatchEvent::Listed)) => {}
                Some(Err(err)) => tracing::warn!("exporter watch error (it restarts): {err}"),
                None => break Some(Status::unavailable("exporter watch ended")),
            },
        }
    };
    if let Some(status) = end {
        let _ = tx.send(Err(status)).await;
    }
    tracing::debug!("status stream closed");
}

/// `{leased, lease_name, client_name}` of an exporter.
async fn state_of<S: Store>(store: &S, namespace: &str, exporter: &Exporter) -> StatusResponse {
    let lease_name = exporter
        .status
        .as_ref()
        .and_then(|s| s.lease_ref.as_ref())
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty());
    let Some(lease_name) = lease_name else {
        return StatusResponse {
            leased: false,
            lease_name: None,
            client_name: None,
        };
    };
    let client_name = match store.get::<Lease>(namespace, &lease_name).await {
        Ok(Some(lease)) => Some(lease.spec.client_ref.name),
        Ok(None) => None,
        Err(err) => {
            tracing::warn!(lease = %lease_name, "cannot read lease for status: {err}");
            None
        }
    };
    StatusResponse {
        leased: true,
        lease_name: Some(lease_name),
        client_name,
    }
}
