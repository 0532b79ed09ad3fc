//! Per-caller token buckets: each key (an authenticated identity) may make `burst` calls at
//! once, then one per `interval`. Sans-IO: the caller passes `now`.
//!
//! Memory stays bounded by the callers that exist (keys are authenticated identities), and
//! buckets that have filled up again are dropped whenever the table grows past
//! [`PRUNE_ABOVE`], so identities that stopped calling cost nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::limits::Rate;

/// Table size above which full buckets are dropped (a full bucket is the same as none).
pub(crate) const PRUNE_ABOVE: usize = 1024;

/// Keyed token buckets of one rate.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: Rate,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens left as of `at` (fractional while refilling).
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(self, rate: Rate, now: Instant) -> Bucket {
        let elapsed = now.saturating_duration_since(self.at);
        let gained = elapsed.as_secs_f64() / rate.interval.as_secs_f64();
        Bucket {
            tokens: (self.tokens + gained).min(f64::from(rate.burst)),
            at: now,
        }
    }
}

impl RateLimiter {
    pub(crate) fn new(rate: Rate) -> RateLimiter {
        RateLimiter {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token of `key` at `now`; when none is left, how long until one is.
    pub(crate) fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let rate = self.rate;
        // A panic cannot happen while the lock is held (arithmetic and map operations
        // only), so a poisoned lock still holds consistent buckets.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            let burst = f64::from(rate.burst);
            buckets.retain(|_, b| b.refilled(rate, now).tokens < burst);
        }
        let bucket = buckets
            .get(key)
            .map_or(
                Bucket {
                    tokens: f64::from(rate.burst),
                    at: now,
                },
                |b| *b,
            )
            .refilled(rate, now);
        if bucket.tokens >= 1.0 {
            buckets.insert(
                key.to_owned(),
                Bucket {
                    tokens: bucket.tokens - 1.0,
                    ..bucket
                },
            );
            Ok(())
        } else {
            buckets.insert(key.to_owned(), bucket);
            Err(rate.interval.mul_f64(1.0 - bucket.tokens))
        }
    }

    /// Number of buckets kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(burst: u32, interval_ms: u64) -> RateLimiter {
        RateLimiter::new(Rate {
            burst,
            interval: Duration::from_millis(interval_ms),
        })
    }

    #[test]
    fn burst_then_one_per_interval() {
        let l = limiter(3, 1000);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check("a", t0), Ok(()));
        }
        let wait = l.check("a", t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(1000));
        // Half an interval later: half a token, half an interval to wait.
        let wait = l
            .check("a", t0 + Duration::from_millis(500))
            .expect_err("still empty");
        assert!(wait <= Duration::from_millis(501) && wait >= Duration::from_millis(499));
        assert_eq!(l.check("a", t0 + Duration::from_millis(1000)), Ok(()));
        assert!(l.check("a", t0 + Duration::from_millis(1000)).is_err());
    }

    #[test]
    fn keys_are_independent() {
        let l = limiter(1, 1000);
        let t0 = Instant::now();
        assert_eq!(l.check("a", t0), Ok(()));
        assert!(l.check("a", t0).is_err());
        assert_eq!(l.check("b", t0), Ok(()));
    }

    #[test]
    fn refill_never_exceeds_the_burst() {
        let l = limiter(2, 10);
        let t0 = Instant::now();
        assert_eq!(l.check("a", t0), Ok(()));
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(l.check("a", later), Ok(()));
        assert_eq!(l.check("a", later), Ok(()));
        assert!(l.check("a", later).is_err());
    }

    #[test]
    fn idle_full_buckets_are_pruned() {
        let l = limiter(1, 10);
        let t0 = Instant::now();
        for i in 0..=PRUNE_ABOVE {
            assert_eq!(l.check(&format!("k{i}"), t0), Ok(()));
        }
        assert_eq!(l.len(), PRUNE_ABOVE + 1);
        // All buckets have refilled a second later: they are dropped, one is kept.
        assert_eq!(l.check("new", t0 + Duration::from_secs(1)), Ok(()));
        assert_eq!(l.len(), 1);
    }
}
