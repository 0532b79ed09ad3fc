//! The router's Prometheus metrics, registered in the caller's registry: the h2 router's
//! ([`Metrics`]) under the `router` prefix (so `jumpstarter_router_*` names when the
//! registry is prefixed by the process, `router_*` otherwise), the QUIC listener's
//! ([`QuicMetrics`]) under `router_quic`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use jumpstarter_shell::metrics_registrar::Registrar;

use crate::refusal::{Intake, Refusal};

/// Label for counters split by a low-cardinality reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: &'static str,
}

/// Label for streams split by how they ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct OutcomeLabel {
    pub(crate) outcome: &'static str,
}

/// Label for relayed bytes: from the stream that waited to the one that arrived second,
/// or the other way.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct DirectionLabel {
    pub(crate) direction: &'static str,
}

/// How a stream ended, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Both directions reached end-of-stream.
    Completed,
    /// This side failed or went away.
    Broken,
    /// The other side failed or went away.
    PeerGone,
    /// The caller went away while waiting for its peer.
    CancelledWaiting,
    /// The token was missing or invalid.
    Unauthenticated,
    /// The router shut down.
    ShuttingDown,
    /// The lease ended (the router token's `lease_end`).
    LeaseEnded,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Broken => "broken",
            Outcome::PeerGone => "peer_gone",
            Outcome::CancelledWaiting => "cancelled_waiting",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::ShuttingDown => "shutting_down",
            Outcome::LeaseEnded => "lease_ended",
        }
    }
}

/// Which way bytes flow in a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    WaitingToArriving,
    ArrivingToWaiting,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Direction::WaitingToArriving => "waiting_to_arriving",
            Direction::ArrivingToWaiting => "arriving_to_waiting",
        }
    }
}

/// Sets a gauge to a count (saturating: a count beyond `i64::MAX` cannot happen).
pub(crate) fn set_count(gauge: &Gauge, count: usize) {
    gauge.set(i64::try_from(count).unwrap_or(i64::MAX));
}

/// Every metric of one router.
#[derive(Debug, Clone, Default)]
pub(crate) struct Metrics {
    pending_streams: Gauge,
    active_pairs: Gauge,
    remembered_streams: Gauge,
    relayed_bytes: Family<DirectionLabel, Counter>,
    relayed_frames: Family<DirectionLabel, Counter>,
    streams: Family<OutcomeLabel, Counter>,
    auth_failures: Family<ReasonLabel, Counter>,
    pairing_timeouts: Counter,
    replay_evictions: Counter,
    pub(crate) pair_times: PairTimes,
}

/// How long first arrivals waited for their peer, and how long pairs lived.
#[derive(Debug, Clone)]
pub(crate) struct PairTimes {
    wait: Histogram,
    duration: Histogram,
}

/// Pairing waits: 0.5 ms to about 16 s (×2); the pairing timeout ends the rest.
const WAIT_BUCKETS: (f64, f64, u16) = (0.0005, 2.0, 16);
/// Session durations: 10 ms to about 12 h (×4).
const DURATION_BUCKETS: (f64, f64, u16) = (0.01, 4.0, 12);

impl Default for PairTimes {
    fn default() -> Self {
        let histogram = |(start, factor, count): (f64, f64, u16)| {
            Histogram::new(exponential_buckets(start, factor, count))
        };
        PairTimes {
            wait: histogram(WAIT_BUCKETS),
            duration: histogram(DURATION_BUCKETS),
        }
    }
}

impl PairTimes {
    fn register(r: &mut Registrar<'_>, what: &str) -> Self {
        let times = PairTimes::default();
        r.with(
            "pairing_wait_seconds",
            &format!("Time the first {what} of a pair waited for its peer"),
            times.wait.clone(),
        );
        r.with(
            "session_duration_seconds",
            &format!("Time pairs of {what}s relayed, from pairing to their end"),
            times.duration.clone(),
        );
        times
    }

    /// The first arrival of a pair waited `waited`.
    pub(crate) fn waited(&self, waited: std::time::Duration) {
        self.wait.observe(waited.as_secs_f64());
    }

    /// A pair relayed for `lasted`.
    pub(crate) fn lasted(&self, lasted: std::time::Duration) {
        self.duration.observe(lasted.as_secs_f64());
    }
}

impl Metrics {
    /// Creates the metrics and registers them in `registry` under the `router` prefix.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let mut r = Registrar::with_prefix(registry, "router");
        let metrics = Metrics {
            pending_streams: r.add("pending_streams", "Streams waiting for their peer"),
            active_pairs: r.add("active_pairs", "Pairs of streams currently relaying"),
            remembered_streams: r.add(
                "remembered_streams",
                "Paired stream ids remembered against token replay",
            ),
            relayed_bytes: r.add("relayed_bytes", "Payload bytes relayed, by direction"),
            relayed_frames: r.add("relayed_frames", "Frames relayed, by direction"),
            streams: r.add("streams", "Streams ended, by outcome"),
            auth_failures: r.add(
                "auth_failures",
                "Streams refused for their credentials, by reason",
            ),
            pairing_timeouts: r.add(
                "pairing_timeouts",
                "Streams whose peer did not arrive within the pairing timeout",
            ),
            replay_evictions: r.add(
                "replay_evictions",
                "Paired stream ids forgotten before their token expired because the memory was full",
            ),
            pair_times: PairTimes::register(&mut r, "stream"),
        };
        // Every direction is exported from the start (at 0), so rates work at once.
        for direction in [Direction::WaitingToArriving, Direction::ArrivingToWaiting] {
            let label = DirectionLabel {
                direction: direction.label(),
            };
            let _ = metrics.relayed_bytes.get_or_create(&label);
            let _ = metrics.relayed_frames.get_or_create(&label);
        }
        metrics
    }

    pub(crate) fn stream_ended(&self, outcome: Outcome) {
        self.streams
            .get_or_create(&OutcomeLabel {
                outcome: outcome.label(),
            })
            .inc();
    }

    pub(crate) fn auth_failed(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
        self.stream_ended(Outcome::Unauthenticated);
    }

    /// A stream refused before or while waiting for its peer.
    pub(crate) fn stream_refused(&self, refusal: &Refusal) {
        if matches!(refusal, Refusal::TimedOut { .. }) {
            self.pairing_timeouts.inc();
        }
        self.streams
            .get_or_create(&OutcomeLabel {
                outcome: refusal.label(),
            })
            .inc();
    }

    pub(crate) fn relayed(&self, direction: Direction, bytes: usize) {
        let label = DirectionLabel {
            direction: direction.label(),
        };
        self.relayed_bytes
            .get_or_create(&label)
            .inc_by(u64::try_from(bytes).unwrap_or(u64::MAX));
        self.relayed_frames.get_or_create(&label).inc();
    }

    /// Mirrors the pairing table's sizes.
    pub(crate) fn table_sizes(&self, pending: usize, remembered: usize, evictions: u64) {
        set_count(&self.pending_streams, pending);
        set_count(&self.remembered_streams, remembered);
        let seen = self.replay_evictions.get();
        if evictions > seen {
            self.replay_evictions.inc_by(evictions - seen);
        }
    }

    pub(crate) fn pair_started(&self) {
        self.active_pairs.inc();
    }

    pub(crate) fn pair_ended(&self) {
        self.active_pairs.dec();
    }
}

/// Every metric of one QUIC listener.
#[derive(Debug, Clone, Default)]
pub(crate) struct QuicMetrics {
    connections: Gauge,
    pending_sessions: Gauge,
    active_pairs: Gauge,
    relayed_bytes: Family<DirectionLabel, Counter>,
    sessions: Family<OutcomeLabel, Counter>,
    admission_failures: Family<ReasonLabel, Counter>,
    pairing_timeouts: Counter,
    renewals: Family<OutcomeLabel, Counter>,
    expired_connections: Counter,
    connection_attempts: Family<OutcomeLabel, Counter>,
    unvalidated_handshakes: Gauge,
    /// The flow-control window budget, `state` = `granted` or `total`.
    pub(crate) window_budget: Family<Vec<(&'static str, &'static str)>, Gauge>,
    send_window: Gauge,
    pub(crate) pair_times: PairTimes,
}

impl QuicMetrics {
    /// Creates the metrics and registers them in `registry` under the `router_quic` prefix.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let mut r = Registrar::with_prefix(registry, "router_quic");
        let metrics = QuicMetrics {
            connections: r.add("connections", "Admitted QUIC connections currently open"),
            pending_sessions: r.add("pending_sessions", "Session streams waiting for their peer"),
            active_pairs: r.add(
                "active_pairs",
                "Pairs of session streams currently relaying",
            ),
            relayed_bytes: r.add("relayed_bytes", "Session bytes relayed, by direction"),
            sessions: r.add("sessions", "Session streams ended, by outcome"),
            admission_failures: r.add(
                "admission_failures",
                "Connections refused for their certificate or handshake, by reason",
            ),
            pairing_timeouts: r.add(
                "pairing_timeouts",
                "Session streams whose peer did not arrive within the pairing timeout",
            ),
            renewals: r.add(
                "certificate_renewals",
                "Renewed lease certificates presented on live connections, by outcome",
            ),
            expired_connections: r.add(
                "expired_connections",
                "Connections closed because their lease certificate ended without a renewal",
            ),
            connection_attempts: r.add(
                "connection_attempts",
                "Connection attempts before their handshake: accepted, asked to validate their \
                 address (retry), or refused (refused_too_many_connections)",
            ),
            unvalidated_handshakes: r.add(
                "unvalidated_handshakes",
                "Handshakes in flight from peers whose address is not validated",
            ),
            window_budget: r.add(
                "window_budget_bytes",
                "Flow-control window bytes (receive + send) granted to QUIC connections at \
                 their full size (state=granted) out of the budget (state=total)",
            ),
            send_window: r.add(
                "send_window_bytes",
                "Send windows in force over the open QUIC connections, each scaled to its \
                 round-trip time: what the router may hold unacknowledged toward its peers",
            ),
            pair_times: PairTimes::register(&mut r, "session stream"),
        };
        // Every direction is exported from the start (at 0), so rates work at once.
        for direction in ["client_to_exporter", "exporter_to_client"] {
            let _ = metrics
                .relayed_bytes
                .get_or_create(&DirectionLabel { direction });
        }
        metrics
    }

    /// A connection's send window changed from `old` to `new` bytes (0: none).
    pub(crate) fn send_window(&self, old: u64, new: u64) {
        let bytes = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.send_window.inc_by(bytes(new));
        self.send_window.dec_by(bytes(old));
    }

    pub(crate) fn connection_attempt(&self, intake: Intake) {
        self.connection_attempts
            .get_or_create(&OutcomeLabel {
                outcome: intake.label(),
            })
            .inc();
    }

    pub(crate) fn unvalidated_handshakes(&self, count: usize) {
        set_count(&self.unvalidated_handshakes, count);
    }

    pub(crate) fn renewal(&self, outcome: &'static str) {
        self.renewals.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub(crate) fn connection_expired(&self) {
        self.expired_connections.inc();
    }

    pub(crate) fn session_ended(&self, outcome: &'static str) {
        self.sessions.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub(crate) fn admission_failed(&self, reason: &'static str) {
        self.admission_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// A session stream refused before or while waiting for its peer.
    pub(crate) fn session_refused(&self, refusal: &Refusal) {
        if matches!(refusal, Refusal::TimedOut { .. }) {
            self.pairing_timeouts.inc();
        }
        self.session_ended(refusal.label());
    }

    pub(crate) fn relayed(&self, direction: &'static str, bytes: usize) {
        self.relayed_bytes
            .get_or_create(&DirectionLabel { direction })
            .inc_by(u64::try_from(bytes).unwrap_or(u64::MAX));
    }

    pub(crate) fn pending(&self, pending: usize) {
        set_count(&self.pending_sessions, pending);
    }

    pub(crate) fn connection_opened(&self) {
        self.connections.inc();
    }

    pub(crate) fn connection_closed(&self) {
        self.connections.dec();
    }

    pub(crate) fn pair_started(&self) {
        self.active_pairs.inc();
    }

    pub(crate) fn pair_ended(&self) {
        self.active_pairs.dec();
    }
}
