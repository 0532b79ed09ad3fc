//! Metrics of the reconcile loop.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use jumpstarter_shell::metrics_registrar::Registrar;

/// Labels of the lease gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaseStateLabels {
    /// `pending` (waiting for an exporter), `ready` (holding one) or `ended`.
    pub state: &'static str,
}

/// Labels of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// A stable reason: the store error's reason (`conflict`, `unavailable`, ...) or `token`.
    pub reason: &'static str,
}

/// Labels of the watch error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    /// The watched kind: `Client`, `Exporter`, `Lease`, `ExporterAccessPolicy`, `Secret`.
    pub kind: String,
}

/// Metrics of the reconcile loop; registered once per process.
#[derive(Debug)]
pub struct ReconcileMetrics {
    /// Leases by state, as of the last pass.
    pub leases: Family<LeaseStateLabels, Gauge>,
    /// Seconds from lease creation until an exporter was assigned (`Ready=True`).
    pub scheduling_latency: Histogram,
    /// Reconcile passes started.
    pub passes: Counter,
    /// Failed operations within passes, by reason. Conflicts are expected under
    /// concurrency and lead to an immediate new pass.
    pub errors: Family<ErrorLabels, Counter>,
    /// Objects written (statuses, metadata, Secrets).
    pub writes: Counter,
    /// Seconds each reconcile pass took (read, plan, write), failed ones included.
    pub pass_duration: Histogram,
    /// Errors of the loop's watches by kind (each restarts with backoff).
    pub watch_errors: Family<WatchLabels, Counter>,
    /// Exporter statuses computed by passes: for the exporters that changed or turned
    /// offline by the clock, not for every exporter at every pass.
    pub exporter_statuses: Counter,
    /// Spot leases given notice because a lease without spot access needs their exporter.
    pub preemptions: Counter,
    /// Waiting leases with a queue position, as of the last pass.
    pub queue_depth: Gauge,
    /// 1 while this process runs the reconcile loop (it holds the leader election, or
    /// runs without one), else 0.
    pub leader: Gauge,
}

/// A histogram with exponential buckets `(start, factor, count)`.
fn exponential_histogram((start, factor, count): (f64, f64, u16)) -> Histogram {
    Histogram::new(exponential_buckets(start, factor, count))
}

/// Histogram buckets for pass durations: 1 ms to about 16 s (exponential, x2).
const PASS_BUCKETS: (f64, f64, u16) = (0.001, 2.0, 15);

/// Histogram buckets for scheduling latency: 1 ms (grants inside CreateLease take tens of
/// milliseconds) to about 1.6 h (exponential, x2.5).
const LATENCY_BUCKETS: (f64, f64, u16) = (0.001, 2.5, 18);

impl ReconcileMetrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &mut Registry) -> ReconcileMetrics {
        let mut r = Registrar::new(registry);
        let metrics = ReconcileMetrics {
            leases: r.add(
                "jumpstarter_controller_leases",
                "Leases by state (pending, ready, ended)",
            ),
            scheduling_latency: r.with(
                "jumpstarter_controller_lease_scheduling_seconds",
                "Time from lease creation until an exporter was assigned",
                exponential_histogram(LATENCY_BUCKETS),
            ),
            passes: r.add(
                "jumpstarter_controller_reconcile_passes",
                "Reconcile passes started",
            ),
            errors: r.add(
                "jumpstarter_controller_reconcile_errors",
                "Failed operations in reconcile passes by reason",
            ),
            writes: r.add(
                "jumpstarter_controller_reconcile_writes",
                "Objects written by the reconcile loop",
            ),
            pass_duration: r.with(
                "jumpstarter_controller_reconcile_pass_duration_seconds",
                "Time each reconcile pass took (reading the namespace, planning, writing)",
                exponential_histogram(PASS_BUCKETS),
            ),
            watch_errors: r.add(
                "jumpstarter_controller_reconcile_watch_errors",
                "Errors of the reconcile loop's watches by kind (each restarts with backoff)",
            ),
            exporter_statuses: r.add(
                "jumpstarter_controller_reconcile_exporter_statuses",
                "Exporter statuses computed by reconcile passes (those that changed or are due)",
            ),
            preemptions: r.add(
                "jumpstarter_controller_lease_preemptions",
                "Spot leases given notice because a lease without spot access needs their exporter",
            ),
            queue_depth: r.add(
                "jumpstarter_controller_lease_queue_depth",
                "Leases waiting in the queue for an exporter that is online (with a queue position)",
            ),
            leader: r.add(
                "jumpstarter_controller_leader",
                "1 while this replica runs the reconcile loop (holds the leader election), else 0",
            ),
        };
        // The expected reason is exported from the start (at 0), so rates work at once.
        metrics.error_count("conflict");
        metrics
    }

    fn error_count(&self, reason: &'static str) -> u64 {
        self.errors.get_or_create(&ErrorLabels { reason }).get()
    }

    /// Metrics that are not registered anywhere (tests, tools).
    pub fn unregistered() -> ReconcileMetrics {
        ReconcileMetrics::new(&mut Registry::default())
    }

    pub(crate) fn watch_error(&self, kind: &str) {
        self.watch_errors
            .get_or_create(&WatchLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub(crate) fn error(&self, reason: &'static str) {
        self.errors.get_or_create(&ErrorLabels { reason }).inc();
    }
}
