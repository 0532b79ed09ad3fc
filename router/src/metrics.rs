//! The router's Prometheus metrics, registered in the caller's registry under the
//! `router` prefix (so `jumpstarter_router_*` names when the registry is prefixed by
//! the process, `router_*` otherwise).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::refusal::Refusal;

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
    tls_handshake_failures: Family<ReasonLabel, Counter>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry` under the `router` prefix.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = Metrics::default();
        let r = registry.sub_registry_with_prefix("router");
        r.register(
            "pending_streams",
            "Streams waiting for their peer",
            metrics.pending_streams.clone(),
        );
        r.register(
            "active_pairs",
            "Pairs of streams currently relaying",
            metrics.active_pairs.clone(),
        );
        r.register(
            "remembered_streams",
            "Paired stream ids remembered against token replay",
            metrics.remembered_streams.clone(),
        );
        r.register(
            "relayed_bytes",
            "Payload bytes relayed, by direction",
            metrics.relayed_bytes.clone(),
        );
        r.register(
            "relayed_frames",
            "Frames relayed, by direction",
            metrics.relayed_frames.clone(),
        );
        r.register(
            "streams",
            "Streams ended, by outcome",
            metrics.streams.clone(),
        );
        r.register(
            "auth_failures",
            "Streams refused for their credentials, by reason",
            metrics.auth_failures.clone(),
        );
        r.register(
            "pairing_timeouts",
            "Streams whose peer did not arrive within the pairing timeout",
            metrics.pairing_timeouts.clone(),
        );
        r.register(
            "replay_evictions",
            "Paired stream ids forgotten before their token expired because the memory was full",
            metrics.replay_evictions.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "Connections dropped during the TLS handshake, by reason",
            metrics.tls_handshake_failures.clone(),
        );
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

    pub(crate) fn tls_handshake_failed(&self, reason: &'static str) {
        self.tls_handshake_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Mirrors the pairing table's sizes.
    pub(crate) fn table_sizes(&self, pending: usize, remembered: usize, evictions: u64) {
        self.pending_streams
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.remembered_streams
            .set(i64::try_from(remembered).unwrap_or(i64::MAX));
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
