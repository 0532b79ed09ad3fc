//! The accept loop's Prometheus metrics, registered by each binary under its own prefix:
//! `<prefix>_connections` and `<prefix>_handshakes` (gauges: open connections, TLS
//! handshakes in flight), `<prefix>_connections_refused_total{reason}` (see
//! [`Refusal::label`]) and `<prefix>_tls_handshake_failures_total{reason}` (see
//! [`HandshakeFailure::label`]).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::HandshakeFailure;
use super::admission::Refusal;
use crate::metrics_registrar::Registrar;

/// Label of counters split by a low-cardinality reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// What one listener's accept loop counts.
#[derive(Debug, Clone, Default)]
pub struct AcceptMetrics {
    connections: Gauge,
    handshakes: Gauge,
    refused: Family<ReasonLabel, Counter>,
    handshake_failures: Family<ReasonLabel, Counter>,
}

impl AcceptMetrics {
    /// Creates the metrics and registers them in `registry` under `prefix`.
    pub fn register(registry: &mut Registry, prefix: &str) -> AcceptMetrics {
        let mut r = Registrar::with_prefix(registry, prefix);
        AcceptMetrics {
            connections: r.add(
                "connections",
                "Open TLS connections (handshaking or established)",
            ),
            handshakes: r.add("handshakes", "TLS handshakes in flight"),
            refused: r.add(
                "connections_refused",
                "Connections closed right after accept because a limit was reached, by limit",
            ),
            handshake_failures: r.add(
                "tls_handshake_failures",
                "Connections dropped during the TLS handshake, by reason",
            ),
        }
    }

    /// Counts a connection refused for `refusal`.
    pub fn refused(&self, refusal: Refusal) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: refusal.label(),
            })
            .inc();
    }

    pub(crate) fn handshake_failed(&self, failure: HandshakeFailure) {
        self.handshake_failures
            .get_or_create(&ReasonLabel {
                reason: failure.label(),
            })
            .inc();
    }

    /// Mirrors a listener's open connections and handshakes in flight.
    pub fn counts(&self, connections: usize, handshakes: usize) {
        self.connections
            .set(i64::try_from(connections).unwrap_or(i64::MAX));
        self.handshakes
            .set(i64::try_from(handshakes).unwrap_or(i64::MAX));
    }

    /// Refusals counted so far for `refusal` (for tests and logs).
    pub fn refusals(&self, refusal: Refusal) -> u64 {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: refusal.label(),
            })
            .get()
    }

    /// Failed handshakes counted so far for `failure`.
    pub fn handshake_failures(&self, failure: HandshakeFailure) -> u64 {
        self.handshake_failures
            .get_or_create(&ReasonLabel {
                reason: failure.label(),
            })
            .get()
    }
}
