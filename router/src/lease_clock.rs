//! When each lease ends, as the newest router token of that lease seen by this router says
//! (its `lease_end` claim): a pair ends at its lease's end, and a lease extended after the
//! pair's tokens were minted keeps its pairs going if a newer token of the lease (another
//! Dial) reached this router before the old end. Soft state, rebuilt from tokens: nothing is
//! asked of the controller or the cluster.
//!
//! Bounded: an entry leaves once its end has passed, and at most [`MAX_LEASES`] are kept
//! (beyond, a new lease's pairs end at their own token's `lease_end`, which is always safe).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Leases whose end is remembered, at most. Entries only come from tokens the controller
/// signed, one lease per entry, and leave at the lease's end: far above the leases a router
/// serves at once.
const MAX_LEASES: usize = 100_000;

/// The newest known end of each lease.
#[derive(Debug, Default)]
pub(crate) struct LeaseClock {
    ends: Mutex<HashMap<String, Known>>,
}

#[derive(Debug, Clone, Copy)]
struct Known {
    /// When the token that said it was minted (`iat`, Unix seconds).
    minted: i64,
    end: Instant,
}

impl LeaseClock {
    /// A token of `lease` minted at `minted` (Unix seconds) says the lease ends at `end`;
    /// the newest token wins. `now` is the present.
    pub(crate) fn observe(&self, lease: &str, minted: i64, end: Instant, now: Instant) {
        let mut ends = self.lock();
        if let Some(known) = ends.get_mut(lease) {
            if minted >= known.minted {
                *known = Known { minted, end };
            }
            return;
        }
        if ends.len() >= MAX_LEASES {
            ends.retain(|_, known| known.end > now);
            if ends.len() >= MAX_LEASES {
                return;
            }
        }
        ends.insert(lease.to_owned(), Known { minted, end });
    }

    /// Resolves once `lease` has ended: at `end` (the pair's own token's end), or later if
    /// a newer token moved the lease's end meanwhile. Never resolves without an `end`.
    pub(crate) async fn ended(&self, lease: &str, end: Option<Instant>) {
        let Some(mut at) = end else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep_until(at.into()).await;
            match self.end_of(lease) {
                Some(later) if later > at => at = later,
                _ => break,
            }
        }
        let now = Instant::now();
        self.lock()
            .retain(|name, known| name != lease || known.end > now);
    }

    fn end_of(&self, lease: &str) -> Option<Instant> {
        self.lock().get(lease).map(|known| known.end)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        // Every critical section leaves the map consistent; keep serving after a panic.
        self.ends.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_newer_token_moves_the_end_and_an_older_one_does_not() {
        let clock = LeaseClock::default();
        let t0 = Instant::now();
        let first_end = t0 + Duration::from_millis(100);
        let later_end = t0 + Duration::from_millis(400);
        clock.observe("lab/l", 100, first_end, t0);
        // Extended: a token minted later says the lease ends later.
        clock.observe("lab/l", 105, later_end, t0);
        // A token minted before that one does not move it back.
        clock.observe("lab/l", 101, first_end, t0);
        clock.ended("lab/l", Some(first_end)).await;
        assert!(Instant::now() >= later_end);
        // Ended leases are forgotten.
        assert!(clock.end_of("lab/l").is_none());
        // Another lease's end is its own.
        let other_end = Instant::now() + Duration::from_millis(50);
        clock.observe("lab/other", 1, other_end, Instant::now());
        clock.ended("lab/other", Some(other_end)).await;
        assert!(Instant::now() >= other_end);
    }

    #[tokio::test]
    async fn a_pair_without_a_lease_end_never_ends_by_it() {
        let clock = LeaseClock::default();
        let ended = tokio::time::timeout(Duration::from_millis(200), clock.ended("lab/l", None));
        assert!(ended.await.is_err());
    }
}
