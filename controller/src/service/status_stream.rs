//! The exporter's Status stream: its current lease state at once and after every change
//! (never twice in a row the same), with the stream doubling as the heartbeat that keeps
//! `status.lastSeen` fresh while its connection lives (see [`heartbeat`]).
//!
//! Streams are bounded and cheap: one exporter may hold at most
//! `limits.max_status_streams_per_exporter` of them (more are refused with
//! RESOURCE_EXHAUSTED), and all streams of a namespace follow the read cache's one watch of
//! its Exporters ([`ReadCache::exporter_events`]), instead of one API watch each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::Instrument;

use jumpstarter_proto::jumpstarter::v1::StatusResponse;

use super::cache::{ExporterEvent, ReadCache};
use super::heartbeat::{self, HEARTBEAT};
use super::metrics::GaugeGuard;
use super::write::{self, Part};
use super::{Shared, store_status};
use crate::auth::Caller;
use crate::crd::{Exporter, ExporterStatusValue, Lease};
use crate::store::{Store, StoreError, WatchEvent};

/// The open Status streams per exporter.
#[derive(Debug, Default)]
pub(crate) struct StatusStreams {
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open stream's place in the per-exporter count; frees it when dropped.
#[derive(Debug)]
struct Slot {
    open: Arc<Mutex<HashMap<String, usize>>>,
    key: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section is a single map operation: a panic cannot leave it half done.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl StatusStreams {
    /// Takes one of the `max` stream places of exporter `key`.
    fn take_slot(&self, key: &str, max: usize) -> Option<Slot> {
        let mut open = lock(&self.open);
        let n = open.entry(key.to_owned()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            open: Arc::clone(&self.open),
            key: key.to_owned(),
        })
    }
}

/// Opens the stream for `caller` (an authenticated exporter).
pub(super) async fn open<S: Store>(
    shared: Arc<Shared<S>>,
    caller: Caller,
) -> Result<ReceiverStream<Result<StatusResponse, Status>>, Status> {
    let namespace = caller.namespace.clone();
    let name = caller.name.clone();
    let key = format!("{namespace}/{name}");
    let max = shared.settings.limits.max_status_streams_per_exporter;
    let Some(slot) = shared.status_streams.take_slot(&key, max) else {
        shared.metrics.refused("status_streams_per_exporter");
        return Err(Status::resource_exhausted(format!(
            "exporter {key} already has {max} Status streams open (the limit); close one or \
             wait for dead connections to time out"
        )));
    };
    // Subscribe before reading, so that no change after the read is missed.
    let events = shared.cache.exporter_events(&namespace);
    let exporter = refresh(&shared, &namespace, &name, true, "status_open")
        .await
        .map_err(store_status)?;
    let first = state_of(&shared.cache, &namespace, &exporter).await;
    let (tx, rx) = mpsc::channel(4);
    // Capacity 4 and nothing sent yet: this cannot fail for lack of room.
    let _ = tx.try_send(Ok(first.clone()));
    let guard = GaugeGuard::new(&shared.metrics.status_streams);
    let span = tracing::info_span!("status", exporter = %key);
    tokio::spawn(
        async move {
            let _guard = guard;
            let _slot = slot;
            run(shared, namespace, name, first, events, tx).await;
        }
        .instrument(span),
    );
    Ok(ReceiverStream::new(rx))
}

/// Refreshes `lastSeen` of exporter `namespace/name` if it is due (see [`heartbeat`]); at
/// the opening of a stream (`opening`) also forgets an Offline report. Returns the stored
/// exporter.
async fn refresh<S: Store>(
    shared: &Shared<S>,
    namespace: &str,
    name: &str,
    opening: bool,
    call: &'static str,
) -> Result<Exporter, StoreError> {
    let mut wrote = false;
    let exporter =
        write::modify_cached::<S, Exporter, _>(&shared.cache, namespace, name, Part::Status, |e| {
            let now = OffsetDateTime::now_utc();
            let status = e.status.get_or_insert_with(Default::default);
            let mut changed = false;
            if heartbeat::is_due(status.last_seen.as_ref(), now) {
                status.last_seen = Some(crate::crd::vocabulary::stored_time(now));
                changed = true;
            }
            // A recent connection after a graceful shutdown: forget the Offline report so
            // an old exporter that never reports a status again is not stuck offline.
            if opening && status.exporter_status == Some(ExporterStatusValue::Offline) {
                status.exporter_status = None;
                status.status_message = None;
                changed = true;
            }
            wrote = changed;
            changed
        })
        .await?;
    shared.metrics.status_write(call, wrote);
    Ok(exporter)
}

async fn run<S: Store>(
    shared: Arc<Shared<S>>,
    namespace: String,
    name: String,
    mut last: StatusResponse,
    mut events: broadcast::Receiver<ExporterEvent>,
    tx: mpsc::Sender<Result<StatusResponse, Status>>,
) {
    tracing::debug!("status stream opened");
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deleted = || Status::not_found(format!("exporter {namespace}/{name} was deleted"));
    let end: Option<Status> = loop {
        // The exporter as changed, when it must be looked at again.
        let changed: Option<Exporter> = tokio::select! {
            // The connection is gone (closed, or found dead by keepalive): no more
            // heartbeats on its behalf.
            () = tx.closed() => break None,
            () = shared.shutdown.cancelled() => break None,
            _ = beat.tick() => {
                match refresh(&shared, &namespace, &name, false, "status_heartbeat").await {
                    Ok(_) => {}
                    Err(StoreError::NotFound { .. }) => break Some(deleted()),
                    Err(err) => tracing::warn!("heartbeat failed: {err}"),
                }
                None
            }
            event = events.recv() => match event {
                Ok(event) => match &*event {
                    WatchEvent::Applied(e) if is_named(e, &name) => Some(e.clone()),
                    WatchEvent::Deleted(e) if is_named(e, &name) => break Some(deleted()),
                    // After a re-list, deletions during the gap are not reported: look.
                    WatchEvent::Listed => match shared.cache.get::<Exporter>(&namespace, &name).await {
                        Ok(Some(e)) => Some(e),
                        Ok(None) => break Some(deleted()),
                        Err(err) => {
                            tracing::debug!("cannot re-read the exporter: {err}");
                            None
                        }
                    },
                    _ => None,
                },
                // Missed changes: read the exporter as it is now.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    match shared.cache.get::<Exporter>(&namespace, &name).await {
                        Ok(Some(e)) => Some(e),
                        Ok(None) => break Some(deleted()),
                        Err(err) => {
                            tracing::debug!("cannot re-read the exporter: {err}");
                            None
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {
                    break Some(Status::unavailable("exporter watch ended"))
                }
            },
        };
        if let Some(exporter) = changed {
            let state = state_of(&shared.cache, &namespace, &exporter).await;
            if state != last {
                if tx.send(Ok(state.clone())).await.is_err() {
                    break None;
                }
                last = state;
            }
        }
    };
    if let Some(status) = end {
        let _ = tx.send(Err(status)).await;
    }
    tracing::debug!("status stream closed");
}

fn is_named(exporter: &Exporter, name: &str) -> bool {
    exporter.metadata.name.as_deref() == Some(name)
}

/// `{leased, lease_name, client_name}` of an exporter.
async fn state_of<S: Store>(
    cache: &ReadCache<S>,
    namespace: &str,
    exporter: &Exporter,
) -> StatusResponse {
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
    let client_name = match cache.get::<Lease>(namespace, &lease_name).await {
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
