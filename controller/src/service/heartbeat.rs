//! How often an exporter's `status.lastSeen` is refreshed, and when a refresh is due.
//! Sans-IO.
//!
//! `lastSeen` says that the exporter was alive. The evidence is the exporter's own calls
//! (Register, ReportStatus, opening a Status stream) and, while a Status stream is open, its
//! HTTP/2 connection: the server PINGs it every 10 s and closes it when an ack is 20 s late,
//! which ends the stream and with it the refreshes. So an exporter cut off without a FIN is
//! refreshed for at most about 30 s more, and the reconciler calls it offline a minute after
//! the last refresh: well within two minutes of the cut.
//!
//! Refreshes are bounded whatever the caller does: a refresh is written only when the stored
//! `lastSeen` is older than [`REFRESH_MIN_AGE`], so several Status streams of one exporter and
//! a stream of ReportStatus calls cost at most one write per [`HEARTBEAT`].

use std::time::Duration as StdDuration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use time::{Duration, OffsetDateTime};

use crate::crd::vocabulary::time_of;

/// How often an open Status stream refreshes `lastSeen` (0.9.0 value; the reconciler
/// calls an exporter offline after a minute without it).
pub(crate) const HEARTBEAT: StdDuration = StdDuration::from_secs(10);

/// A stored `lastSeen` younger than this is fresh enough: one [`HEARTBEAT`] less the one
/// second that Kubernetes' whole-second timestamps may lose, so that a stream's own ticks
/// always find their refresh due, and everything else within the interval does not.
pub(crate) const REFRESH_MIN_AGE: Duration = Duration::seconds(9);

/// Whether `last_seen` should be refreshed at `now`.
pub(crate) fn is_due(last_seen: Option<&Time>, now: OffsetDateTime) -> bool {
    match last_seen {
        None => true,
        Some(seen) => now - time_of(seen) >= REFRESH_MIN_AGE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::vocabulary::stored_time;

    fn at(seconds: f64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("valid")
            + Duration::seconds_f64(seconds)
    }

    #[test]
    fn due_once_per_heartbeat() {
        assert!(is_due(None, at(0.0)));
        // Written at 0.9 s, stored as 0 s.
        let stored = stored_time(at(0.9));
        assert!(!is_due(Some(&stored), at(1.0)));
        assert!(!is_due(Some(&stored), at(8.9)));
        // The writer's next tick, 10 s after its write, always finds the refresh due.
        assert!(is_due(Some(&stored), at(10.9)));
        assert!(is_due(Some(&stored), at(9.0)));
    }

    #[test]
    fn a_future_last_seen_is_fresh() {
        let stored = stored_time(at(100.0));
        assert!(!is_due(Some(&stored), at(0.0)));
    }
}
