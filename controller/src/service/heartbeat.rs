//! When an exporter's `status.lastSeen` is refreshed, and when a refresh is due. Sans-IO.
//!
//! `lastSeen` is the time of the exporter's last connection event or status report: its
//! own calls (Register, ReportStatus, opening a Status stream) and the end of a replica's
//! last Status stream of it (see [`super::status_stream`]). It is not refreshed while a
//! stream stays open: the stream annotation of a live replica stands for the exporter then,
//! so an idle online exporter costs no write. The reconciler calls an exporter without a
//! held stream offline a minute after `lastSeen`.
//!
//! Refreshes are bounded whatever the caller does: a refresh at a call is written only
//! when the stored `lastSeen` is older than [`REFRESH_MIN_AGE`], so reconnect storms and a
//! stream of identical ReportStatus calls cost at most one write per 10 s per exporter.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use time::{Duration, OffsetDateTime};

use crate::crd::vocabulary::time_of;

/// A stored `lastSeen` younger than this is fresh enough for a call: well within the
/// minute after which the reconciler acts on it, and one write per ~10 s at most (the
/// second less than 10 allows for Kubernetes' whole-second timestamps).
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
    fn due_once_per_ten_seconds() {
        assert!(is_due(None, at(0.0)));
        // Written at 0.9 s, stored as 0 s.
        let stored = stored_time(at(0.9));
        assert!(!is_due(Some(&stored), at(1.0)));
        assert!(!is_due(Some(&stored), at(8.9)));
        // A call 10 s after the write always finds the refresh due.
        assert!(is_due(Some(&stored), at(10.9)));
        assert!(is_due(Some(&stored), at(9.0)));
    }

    #[test]
    fn a_future_last_seen_is_fresh() {
        let stored = stored_time(at(100.0));
        assert!(!is_due(Some(&stored), at(0.0)));
    }
}
