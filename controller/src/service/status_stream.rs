//! The exporter's Status stream: its current lease state at once and after every change
//! (never twice in a row the same), with the stream standing for the exporter's liveness
//! while its connection lives, at no cost per interval:
//!
//! - When a stream opens, `lastSeen` is refreshed if due ([`heartbeat`]) and this replica
//!   names itself (`<identity>/<incarnation>`) in the exporter's
//!   [`STATUS_STREAM_ANNOTATION`] if another (or none) is named: at most one status write
//!   and one metadata write, none when the exporter reconnects to the replica it was on.
//! - While streams are open nothing is written: the reconciler finds the exporter online
//!   as long as the named replica's record is live.
//! - When this replica's last stream of the exporter ends (closed, or found dead by the
//!   HTTP/2 keepalive: PING every 10 s, closed when an ack is 20 s late), `lastSeen` is set
//!   to now and the annotation removed if it still names this replica ([`farewell`]; in the
//!   background, retried a bounded number of times). The exporter is then offline a minute
//!   later unless it reconnects; if this replica dies instead, its record expires and the
//!   exporter is offline a minute after its last `lastSeen`.
//! - When the replica shuts down, its streams end without these writes (they would be one
//!   per exporter at once); its record is gone, so the exporters are offline until they
//!   reconnect to another replica (which names itself and refreshes `lastSeen`).
//! - Every [`HEAL_INTERVAL`], each replica compares the annotations in its read cache with
//!   the streams it holds and fixes what a lost write or a race left wrong.
//!
//! Streams are bounded and cheap: one exporter may hold at most
//! `limits.max_status_streams_per_exporter` of them (more are refused with
//! RESOURCE_EXHAUSTED), and all streams of a namespace follow the read cache's one watch of
//! its Exporters ([`ReadCache::exporter_events`]), instead of one API watch each.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use time::OffsetDateTime;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::Instrument;

use jumpstarter_proto::jumpstarter::v1::StatusResponse;

use super::cache::{ExporterEvent, ReadCache};
use super::heartbeat;
use super::metrics::GaugeGuard;
use super::write::{self, Part};
use super::{Shared, store_status};
use crate::auth::Caller;
use crate::crd::vocabulary::{STATUS_STREAM_ANNOTATION, stored_time};
use crate::crd::{Exporter, ExporterStatusValue, Lease};
use crate::store::{Store, StoreError, WatchEvent};

/// How often a replica checks the stream annotations against the streams it holds. Well
/// under the minute after which an exporter without a held stream goes offline, so that an
/// annotation lost to a race is restored before its exporter is found offline.
pub(crate) const HEAL_INTERVAL: StdDuration = StdDuration::from_secs(30);
/// Attempts of the writes at the end of a replica's last stream of an exporter, and the
/// first and longest pause between them: the API server may be briefly unavailable; after
/// that, the self-healing pass ([`HEAL_INTERVAL`]) takes over.
const FAREWELL_ATTEMPTS: u32 = 5;
const FAREWELL_BACKOFF: (StdDuration, StdDuration) =
    (StdDuration::from_millis(200), StdDuration::from_secs(3));

/// The open Status streams per exporter, and the namespaces whose annotations are healed.
#[derive(Debug, Default)]
pub(crate) struct StatusStreams {
    open: Arc<Mutex<HashMap<String, usize>>>,
    healing: Mutex<HashSet<String>>,
}

/// One open stream's place in the per-exporter count; frees it when released or dropped.
#[derive(Debug)]
struct Slot {
    open: Arc<Mutex<HashMap<String, usize>>>,
    key: String,
    freed: bool,
}

impl Slot {
    /// Frees the place; returns whether it was the exporter's last stream on this replica.
    fn release(mut self) -> bool {
        self.free()
    }

    fn free(&mut self) -> bool {
        if std::mem::replace(&mut self.freed, true) {
            return false;
        }
        let mut open = lock(&self.open);
        let Some(n) = open.get_mut(&self.key) else {
            return false;
        };
        *n -= 1;
        if *n == 0 {
            open.remove(&self.key);
            return true;
        }
        false
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.free();
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
            freed: false,
        })
    }

    /// Whether this replica holds a stream of exporter `key`.
    fn is_open(&self, key: &str) -> bool {
        lock(&self.open).contains_key(key)
    }
}

/// Opens the stream for `caller` (an authenticated exporter) on replica `me`
/// (`<identity>/<incarnation>`).
pub(super) async fn open<S: Store>(
    shared: Arc<Shared<S>>,
    me: Arc<str>,
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
    let events = shared.cache.exporter_events(&namespace, &name);
    let exporter = refresh(&shared, &namespace, &name, true, "status_open")
        .await
        .map_err(store_status)?;
    match mark(&shared, &namespace, &name, &me).await {
        Ok(()) => {}
        Err(err @ StoreError::NotFound { .. }) => return Err(store_status(err)),
        // The self-healing pass sets it later; until then `lastSeen` (just refreshed)
        // keeps the exporter online.
        Err(err) => {
            tracing::warn!(exporter = %key, "cannot name this replica as the stream's holder: {err}")
        }
    }
    heal_namespace(&shared, &namespace, &me);
    let first = state_of(&shared.cache, &namespace, &exporter).await;
    let (tx, rx) = mpsc::channel(4);
    // Capacity 4 and nothing sent yet: this cannot fail for lack of room.
    let _ = tx.try_send(Ok(first.clone()));
    let guard = GaugeGuard::new(&shared.metrics.status_streams);
    let span = tracing::info_span!("status", exporter = %key);
    tokio::spawn(
        async move {
            let _guard = guard;
            run(
                Arc::clone(&shared),
                namespace.clone(),
                name.clone(),
                first,
                events,
                tx,
            )
            .await;
            // At shutdown, every stream ends at once: no write per exporter then. The
            // replica's record goes, and the exporters reconnect to another replica.
            if slot.release() && !shared.shutdown.is_cancelled() {
                farewell(&shared, &namespace, &name, &me).await;
            }
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

/// The stream annotation of `exporter`, if any.
fn holder(exporter: &Exporter) -> Option<&str> {
    exporter
        .metadata
        .annotations
        .as_ref()?
        .get(STATUS_STREAM_ANNOTATION)
        .map(String::as_str)
}

/// Names replica `me` as the holder of a Status stream of `namespace/name`, unless it is
/// named already.
async fn mark<S: Store>(
    shared: &Shared<S>,
    namespace: &str,
    name: &str,
    me: &str,
) -> Result<(), StoreError> {
    let mut wrote = false;
    write::modify_cached::<S, Exporter, _>(&shared.cache, namespace, name, Part::Object, |e| {
        wrote = holder(e) != Some(me);
        if wrote {
            e.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(STATUS_STREAM_ANNOTATION.to_owned(), me.to_owned());
        }
        wrote
    })
    .await?;
    shared.metrics.status_write("stream_mark", wrote);
    Ok(())
}

/// Removes the stream annotation of `namespace/name` if it names replica `me` and `me`
/// holds no stream of it (any more).
async fn unmark<S: Store>(
    shared: &Shared<S>,
    namespace: &str,
    name: &str,
    me: &str,
) -> Result<(), StoreError> {
    let key = format!("{namespace}/{name}");
    let mut wrote = false;
    write::modify_cached::<S, Exporter, _>(&shared.cache, namespace, name, Part::Object, |e| {
        wrote = holder(e) == Some(me) && !shared.status_streams.is_open(&key);
        if wrote && let Some(annotations) = e.metadata.annotations.as_mut() {
            annotations.remove(STATUS_STREAM_ANNOTATION);
        }
        wrote
    })
    .await?;
    shared.metrics.status_write("stream_unmark", wrote);
    Ok(())
}

/// After this replica's last stream of `namespace/name` ended: `lastSeen` = now (the
/// connection's last moment), then the annotation is removed (in this order, so that the
/// reconciler never finds neither). Retried a bounded number of times.
async fn farewell<S: Store>(shared: &Shared<S>, namespace: &str, name: &str, me: &str) {
    let mut pause = FAREWELL_BACKOFF.0;
    for attempt in 1..=FAREWELL_ATTEMPTS {
        let result = async {
            let mut wrote = false;
            write::modify_cached::<S, Exporter, _>(
                &shared.cache,
                namespace,
                name,
                Part::Status,
                |e| {
                    let now = stored_time(OffsetDateTime::now_utc());
                    let status = e.status.get_or_insert_with(Default::default);
                    wrote = status.last_seen.as_ref() != Some(&now);
                    status.last_seen = Some(now);
                    wrote
                },
            )
            .await?;
            shared.metrics.status_write("status_close", wrote);
            unmark(shared, namespace, name, me).await
        }
        .await;
        match result {
            Ok(()) | Err(StoreError::NotFound { .. }) => return,
            Err(err) if attempt == FAREWELL_ATTEMPTS => {
                tracing::warn!(
                    "cannot record the end of the exporter's stream ({attempt} attempts; \
                     the self-healing pass retries): {err}"
                );
            }
            Err(err) => {
                tracing::debug!("cannot record the end of the exporter's stream: {err}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(FAREWELL_BACKOFF.1);
            }
        }
    }
}

/// Starts the self-healing pass of `namespace` for replica `me`, once per namespace.
fn heal_namespace<S: Store>(shared: &Arc<Shared<S>>, namespace: &str, me: &Arc<str>) {
    if !lock(&shared.status_streams.healing).insert(namespace.to_owned()) {
        return;
    }
    let span = tracing::info_span!("status_stream_heal", %namespace);
    tokio::spawn(heal(Arc::clone(shared), namespace.to_owned(), Arc::clone(me)).instrument(span));
}

/// Every [`HEAL_INTERVAL`] until shutdown: names `me` on exporters it holds a stream of,
/// and removes `me` from those it holds none of, as the read cache has them.
async fn heal<S: Store>(shared: Arc<Shared<S>>, namespace: String, me: Arc<str>) {
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            () = tokio::time::sleep(HEAL_INTERVAL) => {}
        }
        let exporters = match shared.cache.list::<Exporter>(&namespace).await {
            Ok(exporters) => exporters,
            Err(err) => {
                tracing::debug!("cannot list exporters to heal stream annotations: {err}");
                continue;
            }
        };
        for exporter in exporters {
            let Some(name) = exporter.metadata.name.as_deref() else {
                continue;
            };
            let open = shared
                .status_streams
                .is_open(&format!("{namespace}/{name}"));
            let named = holder(&exporter) == Some(&*me);
            let result = match (open, named) {
                (true, false) => mark(&shared, &namespace, name, &me).await,
                (false, true) => unmark(&shared, &namespace, name, &me).await,
                _ => Ok(()),
            };
            if let Err(err) = result {
                tracing::debug!(exporter = %name, "cannot heal the stream annotation: {err}");
            }
        }
    }
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
    let deleted = || Status::not_found(format!("exporter {namespace}/{name} was deleted"));
    let end: Option<Status> = loop {
        // The exporter as changed, when it must be looked at again.
        let changed: Option<Exporter> = tokio::select! {
            // The connection is gone (closed, or found dead by keepalive).
            () = tx.closed() => break None,
            () = shared.shutdown.cancelled() => break None,
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
