//! The reconcile loop: applies the controller's decisions to the stored objects.
//!
//! Level-triggered, in the style of a status index with a single writer: a pass computes
//! what should be stored and writes only what differs. Passes work on what changed since
//! the last one (the names the watches report, the leases and exporters whose time has
//! come), so an idle namespace of thousands of exporters costs almost nothing per pass;
//! see [`pass`].
//! Passes run when a watched object changes (Clients, Exporters, Leases,
//! ExporterAccessPolicies, Secrets; bursts are debounced), at the planner's next wake-up,
//! when the live controller replicas change or a replica's record expires (exporters whose
//! Status stream it held go offline), and at least every [`MAX_IDLE`] (exporters go offline
//! by the clock, not by an event).
//!
//! - [`pass`]: one pass ([`Reconciler::pass`]).
//! - `view`: the namespace as read, and the planner's view of its objects.
//! - `memory`: what a pass keeps for the next (the view, the planner's index, desired
//!   exporter statuses, claims, holders).
//! - `reflections`: the loop's watch-fed copy of the namespace, which passes read instead of
//!   listing the store.
//! - [`credential`]: Client and Exporter credential Secrets.
//! - [`exporter`]: the exporter status the controller maintains.
//! - `lease`: writing a plan (exporter claims, lease status, lease metadata).
//! - [`metrics`]: the loop's metrics, [`ReconcileMetrics`].
//!
//! Writes are conditional on the resourceVersion read, so several loops may run against one
//! namespace (e.g. during a leader hand-over) without ever giving one exporter to two
//! leases; see the `lease` module.

pub(crate) mod credential;
pub(crate) mod exporter;
mod lease;
mod memory;
pub(crate) mod metrics;
pub(crate) mod pass;
mod reflections;
pub(crate) mod view;

use jumpstarter_shell::error_chain::error_chain;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use metrics::ReconcileMetrics;
pub use pass::Reconciler;

use crate::keys::Keys;
use crate::replica::ReplicaRegistry;
use crate::settings::Settings;
use crate::store::reflection::Reflection;
use crate::store::warning_throttle::WarningThrottle;
use crate::store::{Object, Store, StoreError};
use reflections::Reflections;

/// Longest time between passes. Exporters go offline one minute after their last
/// connection event or status report; checking every 5 s notices it within a few seconds.
pub(crate) const MAX_IDLE: Duration = Duration::from_secs(5);
/// How long a pass waits after a change for more changes, so that the writes of one burst
/// (an exporter registering, a client creating several leases) land in one pass. Kept
/// short: it adds to every lease's time to Ready. Changes that arrive while a pass runs
/// are coalesced into the next pass anyway, so under load passes batch by themselves.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(5);
/// Delay before re-running a pass that met a concurrent write; short, since the conflict
/// is already resolved by the time we re-read.
pub(crate) const CONFLICT_RETRY: Duration = Duration::from_millis(20);
/// First and longest delay after a failed pass (store unavailable, forbidden, ...).
pub(crate) const ERROR_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(200), Duration::from_secs(10));

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Reading the namespace failed.
    #[error("reading the objects of namespace {namespace}")]
    Read {
        namespace: String,
        #[source]
        source: StoreError,
    },
    /// Writing one object failed.
    #[error("writing {kind} {namespace}/{name}")]
    Write {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: StoreError,
    },
    /// Signing a credential failed.
    #[error("signing the credential of {kind} {namespace}/{name}")]
    Token {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: jumpstarter_token::TokenError,
    },
}

impl ReconcileError {
    /// A stable, low-cardinality label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ReconcileError::Read { source, .. } | ReconcileError::Write { source, .. } => {
                source.reason()
            }
            ReconcileError::Token { .. } => "token",
        }
    }
}

/// Sets the leader gauge to 1 while held, back to 0 when dropped.
struct LeaderGauge<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> LeaderGauge<'a> {
    fn hold(gauge: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.set(1);
        LeaderGauge(gauge)
    }
}

impl Drop for LeaderGauge<'_> {
    fn drop(&mut self) {
        self.0.set(0);
    }
}

/// Runs passes over `settings.namespace` until `shutdown` is cancelled.
///
/// Exporter liveness follows `replicas` (exporters whose Status stream a live replica
/// holds are online): passes also run when the live replicas change and when a record
/// expires.
///
/// A failed pass is logged, counted and retried with backoff; the loop itself only returns
/// when `shutdown` is cancelled.
pub async fn run<S: Store>(
    store: S,
    keys: Arc<Keys>,
    settings: Arc<Settings>,
    metrics: Arc<ReconcileMetrics>,
    replicas: Arc<ReplicaRegistry>,
    shutdown: CancellationToken,
) -> Result<(), ReconcileError> {
    let namespace = settings.namespace.clone();
    let _leader = LeaderGauge::hold(&metrics.leader);
    let (changed, reflections) = watch_all(&store, &namespace, &metrics, &shutdown);
    let mut replica_changes = replicas.subscribe();
    let reconciler = Reconciler::new(store, keys, Arc::clone(&settings), Arc::clone(&metrics))
        .with_reflections(reflections)
        .with_replicas(Arc::clone(&replicas));
    let mut backoff = ERROR_BACKOFF.0;
    // The live replicas as the last pass saw them: when they change, every exporter's
    // liveness is looked at again (the exporters whose Status stream a dead replica held
    // are offline now).
    let mut live_seen: Option<LiveReplicas> = None;
    tracing::info!(%namespace, "reconcile loop started");
    loop {
        let now = whole_seconds(OffsetDateTime::now_utc());
        let live = LiveReplicas::of(&replicas, now);
        if live_seen.as_ref() != Some(&live) {
            reconciler.recheck_liveness();
            live_seen = Some(live);
        }
        let started = Instant::now();
        // A pass stuck on an API call that does not answer is abandoned when the loop is
        // told to stop (e.g. leadership lost): its writes are conditional, so a pass cut
        // short is like a crash, which the next pass (anyone's) repairs.
        let result = tokio::select! {
            _ = shutdown.cancelled() => break,
            result = reconciler.pass(now) => result,
        };
        metrics
            .pass_duration
            .observe(started.elapsed().as_secs_f64());
        let wait = match result {
            Ok(outcome) => {
                backoff = ERROR_BACKOFF.0;
                if outcome.again {
                    CONFLICT_RETRY
                } else {
                    let expiry = replicas.next_expiry(now);
                    let wakeup = match (outcome.next_wakeup, expiry) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    until(wakeup, now).min(MAX_IDLE)
                }
            }
            Err(error) => {
                metrics.error(error.reason());
                tracing::warn!(%namespace, error = %error_chain(&error), retry_in = ?backoff, "reconcile pass failed");
                let wait = backoff;
                backoff = (backoff * 2).min(ERROR_BACKOFF.1);
                wait
            }
        };
        let deadline = Instant::now() + wait;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => {}
            // A sender gone (never, while the registry lives) only ends these wake-ups.
            Ok(()) = replica_changes.changed() => {}
            () = changed.notified() => {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(DEBOUNCE) => {}
                }
                // The changes of the debounce window are read by the coming pass.
                let _ = changed.notified().now_or_never();
            }
        }
    }
    tracing::info!(%namespace, "reconcile loop stopped");
    Ok(())
}

/// Which replicas count as live at an instant: whether their records have been listed yet
/// (before that, every named replica counts as live), and the others that count as live.
#[derive(Debug, PartialEq, Eq)]
struct LiveReplicas {
    complete: bool,
    holders: Vec<crate::replica::ReplicaId>,
}

impl LiveReplicas {
    fn of(replicas: &ReplicaRegistry, now: OffsetDateTime) -> LiveReplicas {
        let view = replicas.view();
        LiveReplicas {
            complete: view.is_complete(),
            holders: view.live_holders(now),
        }
    }
}

/// Watches every type a pass reads, each on a task of its own that consumes its stream as
/// fast as it comes (so no watch falls behind while a pass runs): each event updates the
/// returned [`Reflections`], then signals the returned [`Notify`]. A signal given while
/// nobody waits is kept (one), so a change during a pass starts the next one; many changes
/// coalesce into one pass.
fn watch_all<S: Store>(
    store: &S,
    namespace: &str,
    metrics: &Arc<ReconcileMetrics>,
    shutdown: &CancellationToken,
) -> (Arc<Notify>, Arc<Reflections>) {
    let changed = Arc::new(Notify::new());
    let reflections = Arc::new(Reflections::new());
    let r = &reflections;
    let m = metrics;
    spawn_watch(store, namespace, &changed, m, shutdown, r, |r| &r.clients);
    spawn_watch(store, namespace, &changed, m, shutdown, r, |r| &r.exporters);
    spawn_watch(store, namespace, &changed, m, shutdown, r, |r| &r.leases);
    spawn_watch(store, namespace, &changed, m, shutdown, r, |r| &r.policies);
    spawn_watch::<S, Secret>(store, namespace, &changed, m, shutdown, r, |r| &r.secrets);
    (changed, reflections)
}

fn spawn_watch<S: Store, K: Object>(
    store: &S,
    namespace: &str,
    changed: &Arc<Notify>,
    metrics: &Arc<ReconcileMetrics>,
    shutdown: &CancellationToken,
    reflections: &Arc<Reflections>,
    reflection: fn(&Reflections) -> &Reflection<K>,
) {
    let reflections = Arc::clone(reflections);
    let mut events = store.watch::<K>(namespace, None);
    let (changed, shutdown) = (Arc::clone(changed), shutdown.clone());
    let kind = K::kind(&());
    let namespace = namespace.to_owned();
    let metrics = Arc::clone(metrics);
    tokio::spawn(async move {
        let mut throttle = WarningThrottle::default();
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return,
                event = events.next() => event,
            };
            match event {
                Some(Ok(event)) => {
                    reflection(&reflections).apply(event);
                    changed.notify_one();
                }
                Some(Err(error)) => {
                    // The stream restarts itself with backoff; the periodic pass covers
                    // the gap.
                    metrics.watch_error(kind.as_ref());
                    match throttle.check(std::time::Instant::now()) {
                        Some(suppressed) => {
                            tracing::warn!(%kind, %namespace, %error, suppressed, "watch failed; it restarts with backoff");
                        }
                        None => tracing::debug!(%kind, %error, "watch interrupted"),
                    }
                }
                None => {
                    // Streams restart themselves, so this is unexpected. The copy can no
                    // longer be kept current: passes read the store again, on the clock.
                    reflection(&reflections).abandon();
                    tracing::warn!(%kind, %namespace, "watch ended; reconciling on the clock for it");
                    return;
                }
            }
        }
    });
}

fn until(at: Option<OffsetDateTime>, now: OffsetDateTime) -> Duration {
    match at {
        Some(at) if at > now => Duration::try_from(at - now).unwrap_or(MAX_IDLE),
        // Already due: run soon, but never spin.
        Some(_) => DEBOUNCE,
        None => MAX_IDLE,
    }
}

/// Kubernetes stores times in whole seconds; planning with them keeps passes idempotent.
fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}
