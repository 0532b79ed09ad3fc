//! At most one warning per interval for a recurring failure (a watch that keeps failing
//! while the API server is down), with the number of failures in between. Sans-IO.

use std::time::{Duration, Instant};

/// How often a recurring failure is logged at warning level; the failures in between are
/// counted (and logged at debug level by the caller).
pub const WARN_EVERY: Duration = Duration::from_secs(30);

/// Decides which occurrences of one recurring failure are logged as warnings.
#[derive(Debug, Default)]
pub struct WarningThrottle {
    last: Option<Instant>,
    suppressed: u64,
}

impl WarningThrottle {
    /// `Some(n)` when the failure at `now` should be warned about, `n` being the failures
    /// not warned about since the previous warning; `None` otherwise.
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < WARN_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_interval_with_the_count_in_between() {
        let mut throttle = WarningThrottle::default();
        let t0 = Instant::now();
        assert_eq!(throttle.check(t0), Some(0));
        assert_eq!(throttle.check(t0 + Duration::from_secs(1)), None);
        assert_eq!(throttle.check(t0 + Duration::from_secs(2)), None);
        assert_eq!(throttle.check(t0 + WARN_EVERY), Some(2));
        assert_eq!(throttle.check(t0 + WARN_EVERY), None);
    }
}
