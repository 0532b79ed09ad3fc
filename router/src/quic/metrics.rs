//! Prometheus metrics of the QUIC listener, under the `router_quic` prefix.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::{DirectionLabel, OutcomeLabel, ReasonLabel, Registrar, set_count};
use crate::refusal::Refusal;

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
}

impl QuicMetrics {
    /// Creates the metrics and registers them in `registry` under the `router_quic` prefix.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let mut r = Registrar::new(registry, "router_quic");
        QuicMetrics {
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
        }
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
