//! Send windows sized to each connection's round-trip time.
//!
//! A connection's send window bounds the bytes it has written and the peer has not yet
//! acknowledged, so it bounds what can be in flight. The configured window fits a long path
//! (32 MiB carries 1 Gbit/s at 100 ms with room to spare); on a short one, quinn's congestion
//! controller lets far more than the path needs into flight when the receiver is the
//! bottleneck, and the excess waits in the receiver's UDP socket. At a router that socket
//! is shared: every other connection's datagrams queue behind it. On loopback a 64-byte
//! round trip through the router waited 26 ms (p99) behind one bulk session with full
//! windows, the socket's 8 MiB queue full and dropping, against 8–9 ms with the send
//! windows scaled, the queue then under 605 KB without drops (`jumpstarter-loadtest --pin
//! latency`; the bulk session's rate did not fall).
//!
//! So every endpoint (the router toward its peers, clients and exporters toward the router)
//! scales its send window by `lowest RTT / full_rtt`, between [`MIN_SEND_WINDOW`] and the
//! configured window. The lowest RTT seen is the path's own, without the queueing a bulk
//! transfer adds, so a busy connection does not grow its window by its own queue. Only the
//! send window scales: it holds no bytes for a stream whose reader stalls (those wait for
//! stream credit, outside it), so a stalled session cannot block the others of its
//! connection, which a shrunken receive window would do. A zero `full_rtt` keeps the
//! configured window.

use std::time::Duration;

/// The round-trip time from which a connection gets its full send window by default: the
/// windows' design point.
pub const DEFAULT_FULL_WINDOW_RTT: Duration = Duration::from_millis(100);

/// The smallest scaled send window. A bulk transfer on loopback through a busy router still
/// runs at the router's speed with it (512 KiB per millisecond of round trip is 500 MiB/s),
/// and one on a 1 ms LAN at 1 Gbit/s needs a quarter of it.
pub const MIN_SEND_WINDOW: u64 = 512 * 1024;

/// How often a connection's RTT is read again.
const RESAMPLE: Duration = Duration::from_secs(1);

/// The send window of a connection configured with `configured` whose lowest RTT is `rtt`.
pub fn scaled(configured: u64, rtt: Duration, full_rtt: Duration) -> u64 {
    if full_rtt.is_zero() || rtt >= full_rtt {
        return configured;
    }
    let share = (configured as u128 * rtt.as_nanos() / full_rtt.as_nanos()) as u64;
    share.max(MIN_SEND_WINDOW).min(configured)
}

/// Keeps `connection`'s send window scaled to its lowest RTT until it closes, telling
/// `applied(old, new)` each change (`old` 0 at first, `new` 0 at the close). The caller
/// must not hold the connection open only through this future: quinn closes a connection
/// when its last handle is dropped, and this holds one.
pub async fn follow(
    connection: quinn::Connection,
    configured: u64,
    full_rtt: Duration,
    mut applied: impl FnMut(u64, u64),
) {
    let mut lowest = Duration::MAX;
    let mut current = 0;
    loop {
        lowest = lowest.min(connection.rtt());
        let window = scaled(configured, lowest, full_rtt);
        if window != current {
            tracing::debug!(
                rtt_us = lowest.as_micros() as u64,
                send_window = window,
                "send window scaled to the round-trip time"
            );
            connection.set_send_window(window);
            applied(current, window);
            current = window;
        }
        // At the smallest window a lower RTT changes nothing more: wait for the close only.
        let settled = window == MIN_SEND_WINDOW.min(configured);
        tokio::select! {
            _ = connection.closed() => {
                applied(current, 0);
                return;
            }
            () = tokio::time::sleep(RESAMPLE), if !settled => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_path_as_long_as_the_design_point_or_longer_keeps_the_configured_window() {
        assert_eq!(scaled(32 * MIB, ms(100), ms(100)), 32 * MIB);
        assert_eq!(scaled(32 * MIB, ms(300), ms(100)), 32 * MIB);
    }

    #[test]
    fn a_shorter_path_gets_a_window_in_proportion() {
        assert_eq!(scaled(32 * MIB, ms(50), ms(100)), 16 * MIB);
        assert_eq!(scaled(32 * MIB, ms(20), ms(100)), (32 * MIB) / 5);
    }

    #[test]
    fn loopback_gets_the_minimum_and_never_less() {
        let local = scaled(32 * MIB, Duration::from_micros(150), ms(100));
        assert_eq!(local, MIN_SEND_WINDOW);
        assert_eq!(scaled(32 * MIB, Duration::ZERO, ms(100)), MIN_SEND_WINDOW);
    }

    #[test]
    fn never_more_than_configured_even_below_the_minimum() {
        let small = MIN_SEND_WINDOW / 4;
        assert_eq!(scaled(small, ms(1), ms(100)), small);
        assert_eq!(scaled(small, ms(90), ms(100)), small);
    }

    #[test]
    fn zero_full_rtt_turns_scaling_off() {
        assert_eq!(scaled(32 * MIB, ms(1), Duration::ZERO), 32 * MIB);
    }
}
