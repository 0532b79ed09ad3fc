//! Metrics of the peer channel.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use jumpstarter_shell::metrics_registrar::Registrar;

/// Labels of the forwarded and received offer counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Forwarded: `queued`, `full`, `not_listening` (no live peer listens) or `no_peers`.
    /// Received: `queued`, `full`, `not_listening`, `refused` (bad token or request).
    pub outcome: &'static str,
}

/// Labels of the peer call failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `unreachable` (no connection), `timeout`, `refused` (the peer refused our token) or
    /// `error` (any other status).
    pub reason: &'static str,
}

/// Metrics of the peer channel; registered once per process.
#[derive(Debug, Default)]
pub struct PeerMetrics {
    /// Dials offered to peers (nobody listened here), by combined outcome.
    pub forwarded: Family<OutcomeLabels, Counter>,
    /// Offer calls to one peer that got no answer, by reason.
    pub call_failures: Family<FailureLabels, Counter>,
    /// Offers received from peers, by outcome.
    pub received: Family<OutcomeLabels, Counter>,
}

impl PeerMetrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &mut Registry) -> PeerMetrics {
        let mut r = Registrar::new(registry);
        PeerMetrics {
            forwarded: r.add(
                "jumpstarter_controller_peer_forwarded_dials",
                "Dials offered to peer replicas because nobody listened here, by outcome",
            ),
            call_failures: r.add(
                "jumpstarter_controller_peer_call_failures",
                "Offer calls to a peer replica that got no answer, by reason",
            ),
            received: r.add(
                "jumpstarter_controller_peer_offers_received",
                "Offers received from peer replicas, by outcome",
            ),
        }
    }

    pub(crate) fn forwarded(&self, outcome: &'static str) {
        self.forwarded
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub(crate) fn call_failed(&self, reason: &'static str) {
        self.call_failures
            .get_or_create(&FailureLabels { reason })
            .inc();
    }

    pub(crate) fn received(&self, outcome: &'static str) {
        self.received
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }
}
