//! Prometheus metrics of the QUIC listener, under the `router_quic` prefix.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::{DirectionLabel, OutcomeLabel, ReasonLabel};
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
        let metrics = QuicMetrics::default();
        let r = registry.sub_registry_with_prefix("router_quic");
        r.register(
            "connections",
            "Admitted QUIC connections currently open",
            metrics.connections.clone(),
        );
        r.register(
            "pending_sessions",
            "Session streams waiting for their peer",
            metrics.pending_sessions.clone(),
        );
        r.register(
            "active_pairs",
            "Pairs of session streams currently relaying",
            metrics.active_pairs.clone(),
        );
        r.register(
            "relayed_bytes",
            "Session bytes relayed, by direction",
            metrics.relayed_bytes.clone(),
        );
        r.register(
            "sessions",
            "Session streams ended, by outcome",
            metrics.sessions.clone(),
        );
        r.register(
            "admission_failures",
            "Connections refused for their certificate or handshake, by reason",
            metrics.admission_failures.clone(),
        );
        r.register(
            "pairing_timeouts",
            "Session streams whose peer did not arrive within the pairing timeout",
            metrics.pairing_timeouts.clone(),
        );
        r.register(
            "certificate_renewals",
            "Renewed lease certificates presented on live connections, by outcome",
            metrics.renewals.clone(),
        );
        r.register(
            "expired_connections",
            "Connections closed because their lease certificate ended without a renewal",
            metrics.expired_connections.clone(),
        );
        metrics
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
        self.pending_sessions
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
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
