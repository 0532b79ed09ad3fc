//! Which QUIC connection attempts start a handshake: the listener holds at most
//! [`IntakeLimits::max_connections`] connections (handshaking or established), and asks a
//! peer to prove its address with a Retry (one extra round trip, no state kept) while more
//! than [`IntakeLimits::retry_threshold`] handshakes from unvalidated addresses are in
//! flight. A flood of spoofed Initial packets then costs the router a stateless Retry each
//! instead of a handshake each, and a real peer still connects.
//!
//! [`decide`] is the pure rule; [`Handshakes`] counts the unvalidated handshakes in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::metrics::QuicMetrics;
use crate::refusal::Intake;

/// Bounds of connection attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IntakeLimits {
    /// Connections, handshaking or established, at most.
    pub(crate) max_connections: usize,
    /// Handshakes from unvalidated addresses in flight beyond which new peers must
    /// validate their address first (0: always).
    pub(crate) retry_threshold: usize,
}

/// What to do with a connection attempt: `open` connections exist, `unvalidated`
/// handshakes from unvalidated addresses are in flight; the attempt's address is
/// `validated` (it came with a Retry token) or not, and a Retry `may` be sent for it.
pub(crate) fn decide(
    limits: IntakeLimits,
    open: usize,
    unvalidated: usize,
    validated: bool,
    may_retry: bool,
) -> Intake {
    if open >= limits.max_connections {
        Intake::TooManyConnections
    } else if !validated && may_retry && unvalidated >= limits.retry_threshold {
        Intake::Retried
    } else {
        Intake::Accepted
    }
}

/// Handshakes from unvalidated addresses in flight, mirrored in a gauge.
#[derive(Debug, Clone)]
pub(crate) struct Handshakes {
    count: Arc<AtomicUsize>,
    metrics: QuicMetrics,
}

/// One unvalidated handshake in flight; dropping it ends it.
#[derive(Debug)]
pub(crate) struct Unvalidated(Handshakes);

impl Handshakes {
    pub(crate) fn new(metrics: QuicMetrics) -> Handshakes {
        Handshakes {
            count: Arc::new(AtomicUsize::new(0)),
            metrics,
        }
    }

    /// Unvalidated handshakes in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Counts a new unvalidated handshake until the guard is dropped.
    pub(crate) fn start(&self) -> Unvalidated {
        let now = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        self.metrics.unvalidated_handshakes(now);
        Unvalidated(self.clone())
    }
}

impl Drop for Unvalidated {
    fn drop(&mut self) {
        let now = self
            .0
            .count
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1);
        self.0.metrics.unvalidated_handshakes(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: IntakeLimits = IntakeLimits {
        max_connections: 10,
        retry_threshold: 3,
    };

    #[test]
    fn connections_beyond_the_cap_are_refused_even_when_validated() {
        assert_eq!(
            decide(LIMITS, 10, 0, true, false),
            Intake::TooManyConnections
        );
        assert_eq!(
            decide(LIMITS, 12, 5, false, true),
            Intake::TooManyConnections
        );
        assert_eq!(decide(LIMITS, 9, 0, false, true), Intake::Accepted);
    }

    #[test]
    fn unvalidated_peers_retry_above_the_threshold_and_validated_ones_go_through() {
        assert_eq!(decide(LIMITS, 0, 2, false, true), Intake::Accepted);
        assert_eq!(decide(LIMITS, 0, 3, false, true), Intake::Retried);
        // Back with the Retry token: its address is proven.
        assert_eq!(decide(LIMITS, 0, 3, true, false), Intake::Accepted);
        // quinn cannot Retry it (it already carries a token): handshake.
        assert_eq!(decide(LIMITS, 0, 3, false, false), Intake::Accepted);
        let always = IntakeLimits {
            retry_threshold: 0,
            ..LIMITS
        };
        assert_eq!(decide(always, 0, 0, false, true), Intake::Retried);
    }

    #[test]
    fn the_guard_counts_handshakes_in_flight() {
        let handshakes = Handshakes::new(QuicMetrics::default());
        let a = handshakes.start();
        let b = handshakes.start();
        assert_eq!(handshakes.in_flight(), 2);
        drop(a);
        assert_eq!(handshakes.in_flight(), 1);
        drop(b);
        assert_eq!(handshakes.in_flight(), 0);
    }
}
