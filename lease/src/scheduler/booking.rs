//! Bookings checked at creation: a lease with a future begin time must fit next to the
//! bookings and leases already holding its exporters in that window, or it is refused with
//! the conflicting lease named (unless the request asks to queue; see [`QUEUE_TAG`]).
//!
//! By exporter name: any non-ended lease that holds the exporter past the begin time, or
//! books it for an overlapping window, conflicts. By selector: the enabled exporters the
//! selector matches are the capacity; leases holding one of them past the begin time and
//! bookings of overlapping windows that may use one of them count against it.

use time::OffsetDateTime;

use super::planner::{rfc3339, started_expiry};
use super::snapshot::{Exporter, Lease, LeaseSpec};
use crate::selector;

/// The tag (and its value) with which a booking that overlaps others is queued instead of
/// refused: it then starts when an exporter is free after its begin time.
pub const QUEUE_TAG: (&str, &str) = ("booking", "queue");

/// Why a booking is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Conflict {
    /// The conflicting lease.
    pub lease: String,
    /// What the caller is told.
    pub message: String,
}

/// Checks the booking `spec` (a lease not yet created) against `leases` and `exporters`
/// at `now`. Leases without a future begin time are never refused.
pub fn check(
    spec: &LeaseSpec,
    leases: &[Lease],
    exporters: &[Exporter],
    now: OffsetDateTime,
) -> Result<(), Conflict> {
    let Some(begin) = spec.begin_time.filter(|begin| *begin > now) else {
        return Ok(());
    };
    let end = started_expiry(spec, begin);
    let targets: Vec<&Exporter> = exporters
        .iter()
        .filter(|e| match &spec.exporter_ref {
            Some(name) => e.name == *name,
            None => e.enabled && selector::matches(&spec.selector, &e.labels),
        })
        .collect();
    if targets.is_empty() {
        // Nothing to book: the planner tells the lease why once it is created.
        return Ok(());
    }
    let overlaps = |from: OffsetDateTime, to: Option<OffsetDateTime>| {
        to.is_none_or(|to| begin < to) && end.is_none_or(|end| from < end)
    };
    let mut against = Vec::new();
    for lease in leases {
        if lease.status.ended || lease.spec.release {
            continue;
        }
        let uses = |exporter: &Exporter| match (&lease.status.exporter, &lease.spec.exporter_ref) {
            (Some(held), _) => *held == exporter.name,
            (None, Some(pinned)) => *pinned == exporter.name,
            (None, None) => selector::matches(&lease.spec.selector, &exporter.labels),
        };
        if !targets.iter().any(|e| uses(e)) {
            continue;
        }
        let window = match (lease.status.begin_time, lease.spec.begin_time) {
            (Some(started), _) => Some((started, started_expiry(&lease.spec, started))),
            (None, Some(booked)) => Some((booked, started_expiry(&lease.spec, booked))),
            // Waiting without a booking: the queue decides, bookings come first.
            (None, None) => None,
        };
        if let Some((from, to)) = window
            && overlaps(from, to)
        {
            against.push((lease, from, to));
        }
    }
    if against.len() < targets.len() {
        return Ok(());
    }
    against.sort_by_key(|(lease, from, _)| (*from, lease.name.clone()));
    let (lease, from, to) = &against[0];
    let what = match &spec.exporter_ref {
        Some(name) => format!("exporter {name} is"),
        None => format!(
            "all {} exporters matching {} are",
            targets.len(),
            selector::format(&spec.selector)
        ),
    };
    let until = to.map_or_else(
        || "with no end".to_owned(),
        |to| format!("until {}", rfc3339(to)),
    );
    Err(Conflict {
        lease: lease.name.clone(),
        message: format!(
            "{what} taken from {} {until} by lease {} (and {} more) in the window asked for; \
             choose another time, or add the tag {}={} to queue",
            rfc3339(*from),
            lease.name,
            against.len() - 1,
            QUEUE_TAG.0,
            QUEUE_TAG.1,
        ),
    })
}

#[cfg(test)]
mod tests {
    use time::Duration;

    use super::*;
    use crate::scheduler::snapshot::LeaseStatus;
    use crate::selector::parse;

    fn t(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + seconds).expect("valid")
    }

    fn exporter(name: &str) -> Exporter {
        Exporter {
            name: name.to_owned(),
            labels: parse("board=mock").expect("labels").match_labels,
            enabled: true,
            registered: true,
            online: true,
            exporter_status: "Available".to_owned(),
        }
    }

    fn booking(pinned: Option<&str>, begin: i64, seconds: i64) -> LeaseSpec {
        LeaseSpec {
            selector: parse(if pinned.is_some() { "" } else { "board=mock" }).expect("selector"),
            exporter_ref: pinned.map(str::to_owned),
            duration: Some(Duration::seconds(seconds)),
            begin_time: Some(t(begin)),
            ..LeaseSpec::default()
        }
    }

    fn lease(name: &str, spec: LeaseSpec, status: LeaseStatus) -> Lease {
        Lease {
            name: name.to_owned(),
            uid: None,
            generation: 1,
            creation_time: t(0),
            client: "c".to_owned(),
            spec,
            status,
        }
    }

    #[test]
    fn overlapping_bookings_of_one_exporter_are_refused_naming_the_other() {
        let exporters = [exporter("a"), exporter("b")];
        let first = lease("first", booking(Some("a"), 100, 60), LeaseStatus::default());
        let conflict = check(
            &booking(Some("a"), 130, 60),
            std::slice::from_ref(&first),
            &exporters,
            t(0),
        )
        .expect_err("overlaps");
        assert_eq!(conflict.lease, "first");
        assert_eq!(
            conflict.message,
            "exporter a is taken from 2023-11-14T22:15:00Z until 2023-11-14T22:16:00Z by lease \
             first (and 0 more) in the window asked for; choose another time, or add the tag \
             booking=queue to queue"
        );
        // Back to back, another exporter, or a lease that is not a booking: fine.
        let leases = [first];
        assert_eq!(
            check(&booking(Some("a"), 160, 60), &leases, &exporters, t(0)),
            Ok(())
        );
        assert_eq!(
            check(&booking(Some("b"), 130, 60), &leases, &exporters, t(0)),
            Ok(())
        );
        let mut now = booking(Some("a"), 130, 60);
        now.begin_time = None;
        assert_eq!(check(&now, &leases, &exporters, t(0)), Ok(()));
    }

    #[test]
    fn a_lease_holding_the_exporter_past_the_begin_time_conflicts() {
        let exporters = [exporter("a")];
        let holding = LeaseStatus {
            exporter: Some("a".to_owned()),
            begin_time: Some(t(0)),
            ..LeaseStatus::default()
        };
        let mut spec = booking(None, 0, 0);
        spec.begin_time = None;
        spec.duration = Some(Duration::seconds(200));
        let holder = lease("holder", spec, holding);
        let refused = check(
            &booking(Some("a"), 100, 60),
            std::slice::from_ref(&holder),
            &exporters,
            t(0),
        );
        assert_eq!(refused.map_err(|c| c.lease), Err("holder".to_owned()));
        assert_eq!(
            check(&booking(Some("a"), 200, 60), &[holder], &exporters, t(0)),
            Ok(())
        );
    }

    #[test]
    fn selector_bookings_count_against_the_matching_exporters() {
        let exporters = [exporter("a"), exporter("b")];
        let one = lease("one", booking(Some("a"), 100, 60), LeaseStatus::default());
        let two = lease("two", booking(None, 110, 60), LeaseStatus::default());
        // One of two taken: room for a selector booking.
        assert_eq!(
            check(
                &booking(None, 120, 60),
                std::slice::from_ref(&one),
                &exporters,
                t(0)
            ),
            Ok(())
        );
        let conflict =
            check(&booking(None, 120, 60), &[one, two], &exporters, t(0)).expect_err("both taken");
        assert_eq!(conflict.lease, "one");
        assert!(
            conflict
                .message
                .starts_with("all 2 exporters matching board=mock are taken")
        );
    }
}
