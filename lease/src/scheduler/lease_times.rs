//! The begin/end/duration reconciliation `CreateLease` and `UpdateLease` apply to a
//! requested lease before it is stored (jumpstarter 0.9.0 `ReconcileLeaseTimeFields`).

use time::{Duration, OffsetDateTime};

use super::duration;

/// The three time fields of a lease spec after reconciliation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTimes {
    /// `spec.beginTime`: as requested, or derived as `end - duration`.
    pub begin_time: Option<OffsetDateTime>,
    /// `spec.endTime`: as requested.
    pub end_time: Option<OffsetDateTime>,
    /// `spec.duration`: as requested, or derived as `end - begin`; always positive.
    pub duration: Duration,
}

/// Why the requested time fields cannot be stored. The texts are 0.9.0's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseTimesError {
    /// Begin, end and a positive duration were all given and disagree.
    #[error("duration conflicts with begin_time and end_time")]
    Conflict,
    /// Neither a duration nor both begin and end were given.
    #[error("duration is required (must specify Duration, or both BeginTime and EndTime)")]
    Missing,
    /// The duration (given or derived) is zero or negative.
    #[error("duration must be positive, got {}", duration::format(*.0))]
    NotPositive(Duration),
    /// `end - duration` is outside the representable time range.
    #[error("begin time out of range: end time minus duration {}", duration::format(*.0))]
    OutOfRange(Duration),
}

/// Reconciles the requested fields:
///
/// - begin and end given: the duration is `end - begin`; a positive requested duration must
///   equal it.
/// - end and a positive duration given: the begin is `end - duration`.
/// - the duration must end up present and positive.
pub fn reconcile(
    begin_time: Option<OffsetDateTime>,
    end_time: Option<OffsetDateTime>,
    duration: Option<Duration>,
) -> Result<LeaseTimes, LeaseTimesError> {
    let mut begin_time = begin_time;
    let mut duration = duration;
    match (begin_time, end_time, duration) {
        (Some(begin), Some(end), requested) => {
            let calculated = end - begin;
            if let Some(requested) = requested
                && requested.is_positive()
                && requested != calculated
            {
                return Err(LeaseTimesError::Conflict);
            }
            duration = Some(calculated);
        }
        (None, Some(end), Some(requested)) if requested.is_positive() => {
            begin_time = Some(
                end.checked_sub(requested)
                    .ok_or(LeaseTimesError::OutOfRange(requested))?,
            );
        }
        _ => {}
    }
    let duration = duration.ok_or(LeaseTimesError::Missing)?;
    if !duration.is_positive() {
        return Err(LeaseTimesError::NotPositive(duration));
    }
    Ok(LeaseTimes {
        begin_time,
        end_time,
        duration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(seconds).expect("valid")
    }

    #[test]
    fn duration_only() {
        let times = reconcile(None, None, Some(Duration::minutes(5))).expect("ok");
        assert_eq!(times.begin_time, None);
        assert_eq!(times.end_time, None);
        assert_eq!(times.duration, Duration::minutes(5));
    }

    #[test]
    fn begin_and_end_give_the_duration() {
        let times = reconcile(Some(at(100)), Some(at(160)), None).expect("ok");
        assert_eq!(times.duration, Duration::seconds(60));
        let same = reconcile(Some(at(100)), Some(at(160)), Some(Duration::seconds(60)));
        assert_eq!(same, Ok(times));
        // A zero duration counts as "not given".
        let zero = reconcile(Some(at(100)), Some(at(160)), Some(Duration::ZERO));
        assert_eq!(zero, Ok(times));
        let conflict = reconcile(Some(at(100)), Some(at(160)), Some(Duration::seconds(61)));
        assert_eq!(conflict, Err(LeaseTimesError::Conflict));
        assert_eq!(
            conflict.expect_err("must fail").to_string(),
            "duration conflicts with begin_time and end_time"
        );
    }

    #[test]
    fn end_and_duration_give_the_begin() {
        let times = reconcile(None, Some(at(160)), Some(Duration::seconds(60))).expect("ok");
        assert_eq!(times.begin_time, Some(at(100)));
        assert_eq!(times.end_time, Some(at(160)));
    }

    #[test]
    fn errors() {
        let missing = reconcile(Some(at(100)), None, None).expect_err("must fail");
        assert_eq!(
            missing.to_string(),
            "duration is required (must specify Duration, or both BeginTime and EndTime)"
        );
        assert_eq!(
            reconcile(None, Some(at(100)), None),
            Err(LeaseTimesError::Missing)
        );
        let backwards = reconcile(Some(at(160)), Some(at(100)), None).expect_err("must fail");
        assert_eq!(
            backwards.to_string(),
            "duration must be positive, got -1m0s"
        );
        let zero = reconcile(None, Some(at(100)), Some(Duration::ZERO)).expect_err("must fail");
        assert_eq!(zero.to_string(), "duration must be positive, got 0s");
        let early = time::PrimitiveDateTime::MIN.assume_utc();
        assert!(matches!(
            reconcile(None, Some(early), Some(Duration::days(1))),
            Err(LeaseTimesError::OutOfRange(_))
        ));
    }
}
