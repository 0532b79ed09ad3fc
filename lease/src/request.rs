//! Lease requests: what a client (or an administrator on its behalf) asks for in
//! `CreateLease`, and the 0.9.0 rules that check it: target, tags, selector and times.

use std::collections::BTreeMap;

use time::{Duration, OffsetDateTime};

use crate::error::LeaseError;
use crate::name::{self, parse_resource};
use crate::scheduler::lease_times::{self, LeaseTimes};
use crate::selector::{self, LabelSelector};

/// Label key prefix reserved for the controller; tags may not use it.
pub const RESERVED_PREFIX: &str = "jumpstarter.dev/";
/// Label key prefix under which a lease's tags are stored as labels (0.9.0's); tags may
/// not use it either, or a tag could pose as another tag.
pub const TAG_LABEL_PREFIX: &str = "metadata.jumpstarter.dev/";
/// Longest lease duration: Go's `time.Duration` range, which 0.9.0 controllers store.
pub const MAX_DURATION: Duration = Duration::nanoseconds(i64::MAX);
/// Collection segment of exporter resource names (`namespaces/{ns}/exporters/{name}`).
const EXPORTERS: &str = "exporters";

/// What the caller asks for, unchecked. Times and durations are already decoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeaseRequest {
    /// Label selector text of the exporters that may serve the lease; may be empty.
    pub selector: String,
    /// The one exporter to lease: an object name or `namespaces/{ns}/exporters/{name}`.
    pub exporter_name: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub allow_disabled: bool,
    pub begin_time: Option<OffsetDateTime>,
    pub end_time: Option<OffsetDateTime>,
    /// Zero counts as absent (proto3 sends 0 for "not given").
    pub duration: Option<Duration>,
}

/// A request that passed every rule, before a name is chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedLease {
    pub selector: LabelSelector,
    pub exporter_name: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub allow_disabled: bool,
    pub begin_time: Option<OffsetDateTime>,
    pub end_time: Option<OffsetDateTime>,
    pub duration: Duration,
}

/// Checks a requested lease: target, tags, selector and time fields, in 0.9.0's order.
pub fn check(request: &LeaseRequest, max_tags: usize) -> Result<CheckedLease, LeaseError> {
    let target = check_target(request, max_tags)?;
    let times = check_times(
        request.begin_time,
        request.end_time,
        requested(request.duration),
    )?;
    Ok(CheckedLease {
        selector: target.selector,
        exporter_name: target.exporter_name,
        tags: target.tags,
        allow_disabled: request.allow_disabled,
        begin_time: times.begin_time,
        end_time: times.end_time,
        duration: times.duration,
    })
}

/// What a request targets, checked: the exporter name, the tags and the selector.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub exporter_name: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub selector: LabelSelector,
}

/// The rules [`check`] applies before the time fields: exporter name, a target, tags and
/// selector. Decoders that reject time fields of the wire call this first, so that a request
/// wrong in both ways is refused for the same reason as by 0.9.0.
pub fn check_target(request: &LeaseRequest, max_tags: usize) -> Result<Target, LeaseError> {
    let exporter_name = match request.exporter_name.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(name) if name.contains('/') => Some(parse_resource(name, EXPORTERS)?.1),
        Some(name) if name::is_object_name(name) => Some(name.to_owned()),
        Some(name) => {
            return Err(LeaseError::InvalidExporterName {
                name: name.to_owned(),
            });
        }
    };
    let selector_text = request.selector.trim();
    if selector_text.is_empty() && exporter_name.is_none() {
        return Err(LeaseError::TargetRequired);
    }
    let tags = check_tags(&request.tags, max_tags)?;
    let selector = if selector_text.is_empty() {
        LabelSelector::default()
    } else {
        selector::parse(selector_text).map_err(LeaseError::InvalidSelector)?
    };
    Ok(Target {
        exporter_name,
        tags,
        selector,
    })
}

/// Checks a legacy `RequestLease` (`jumpstarter.v1`): a non-empty selector and a duration,
/// no tags, no times.
pub fn check_legacy(
    selector: LabelSelector,
    duration: Option<Duration>,
) -> Result<CheckedLease, LeaseError> {
    check_legacy_selector(&selector)?;
    let times = check_times(None, None, requested(duration))?;
    Ok(CheckedLease {
        selector,
        exporter_name: None,
        tags: BTreeMap::new(),
        allow_disabled: false,
        begin_time: None,
        end_time: None,
        duration: times.duration,
    })
}

/// The rule [`check_legacy`] applies before the duration: a selector is required.
pub fn check_legacy_selector(selector: &LabelSelector) -> Result<(), LeaseError> {
    if selector.is_empty() {
        return Err(LeaseError::SelectorRequired);
    }
    Ok(())
}

/// The name asked for a new lease: `None` for "choose one" (an empty `lease_id`), else it
/// must be a lowercase RFC 1123 name.
pub fn check_lease_id(lease_id: &str) -> Result<Option<String>, LeaseError> {
    if lease_id.is_empty() {
        Ok(None)
    } else if name::is_object_name(lease_id) {
        Ok(Some(lease_id.to_owned()))
    } else {
        Err(LeaseError::InvalidLeaseId {
            id: lease_id.to_owned(),
        })
    }
}

/// A requested duration; zero counts as absent.
pub fn requested(duration: Option<Duration>) -> Option<Duration> {
    duration.filter(|d| !d.is_zero())
}

/// [`lease_times::reconcile`], and the duration within [`MAX_DURATION`].
pub fn check_times(
    begin: Option<OffsetDateTime>,
    end: Option<OffsetDateTime>,
    duration: Option<Duration>,
) -> Result<LeaseTimes, LeaseError> {
    let times = lease_times::reconcile(begin, end, duration)?;
    if times.duration > MAX_DURATION {
        return Err(LeaseError::DurationTooLong);
    }
    Ok(times)
}

/// Tag rules: at most `max_tags`; keys are simple label names (no `/`, not reserved
/// prefixes); keys and values are valid label syntax.
pub fn check_tags(
    tags: &BTreeMap<String, String>,
    max_tags: usize,
) -> Result<BTreeMap<String, String>, LeaseError> {
    if tags.len() > max_tags {
        return Err(LeaseError::TooManyTags {
            count: tags.len(),
            max: max_tags,
        });
    }
    for (key, value) in tags {
        if key.starts_with(TAG_LABEL_PREFIX) || key.starts_with(RESERVED_PREFIX) {
            return Err(LeaseError::ReservedTagKey { key: key.clone() });
        }
        if key.contains('/') {
            return Err(LeaseError::TagKeyWithSlash { key: key.clone() });
        }
        let probe = LabelSelector {
            match_labels: BTreeMap::from([(key.clone(), value.clone())]),
            match_expressions: Vec::new(),
        };
        selector::validate(&probe).map_err(LeaseError::InvalidTag)?;
    }
    Ok(tags.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::LeaseTimesError;

    fn request(selector: &str) -> LeaseRequest {
        LeaseRequest {
            selector: selector.to_owned(),
            duration: Some(Duration::minutes(10)),
            ..LeaseRequest::default()
        }
    }

    #[test]
    fn requires_a_target() {
        assert_eq!(check(&request(""), 10), Err(LeaseError::TargetRequired));
        let mut pinned = request("");
        pinned.exporter_name = Some("exp1".into());
        assert_eq!(
            check(&pinned, 10).unwrap().exporter_name.as_deref(),
            Some("exp1")
        );
        pinned.exporter_name = Some("namespaces/lab/exporters/exp2".into());
        assert_eq!(
            check(&pinned, 10).unwrap().exporter_name.as_deref(),
            Some("exp2")
        );
        pinned.exporter_name = Some("Exp".into());
        assert_eq!(
            check(&pinned, 10).unwrap_err().to_string(),
            "invalid exporter_name \"Exp\": not a valid object name"
        );
        pinned.exporter_name = Some("a/b".into());
        assert!(matches!(
            check(&pinned, 10),
            Err(LeaseError::ExporterResourceName(_))
        ));
    }

    #[test]
    fn rejects_bad_tags() {
        for (k, v) in [
            ("jumpstarter.dev/x", "a"),
            ("metadata.jumpstarter.dev/x", "a"),
            ("a/b", "c"),
            ("bad key", "v"),
            ("k", "bad value!"),
        ] {
            let mut lease = request("a=b");
            lease.tags = BTreeMap::from([(k.to_owned(), v.to_owned())]);
            assert!(check(&lease, 10).is_err(), "{k}");
        }
        let mut lease = request("a=b");
        lease.tags = BTreeMap::from([("metadata.jumpstarter.dev/x".into(), "a".into())]);
        assert_eq!(
            check(&lease, 10).unwrap_err().to_string(),
            "tag key \"metadata.jumpstarter.dev/x\" uses a reserved prefix"
        );
        lease.tags = (0..3).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert_eq!(
            check(&lease, 2),
            Err(LeaseError::TooManyTags { count: 3, max: 2 })
        );
    }

    #[test]
    fn rejects_bad_selectors_and_durations() {
        assert!(matches!(
            check(&request("a in ("), 10),
            Err(LeaseError::InvalidSelector(_))
        ));
        let mut lease = request("a=b");
        lease.duration = None;
        assert_eq!(
            check(&lease, 10),
            Err(LeaseError::Times(LeaseTimesError::Missing))
        );
        lease.duration = Some(Duration::ZERO);
        assert_eq!(
            check(&lease, 10),
            Err(LeaseError::Times(LeaseTimesError::Missing))
        );
        lease.duration = Some(Duration::seconds(-5));
        assert!(matches!(
            check(&lease, 10),
            Err(LeaseError::Times(LeaseTimesError::NotPositive(_)))
        ));
    }

    #[test]
    fn begin_and_end_give_the_duration_within_go_range() {
        let mut lease = request("a=b");
        lease.duration = None;
        lease.begin_time = Some(OffsetDateTime::from_unix_timestamp(1_000).unwrap());
        lease.end_time = Some(OffsetDateTime::from_unix_timestamp(4_600).unwrap());
        assert_eq!(check(&lease, 10).unwrap().duration, Duration::hours(1));
        lease.begin_time = Some(OffsetDateTime::from_unix_timestamp(0).unwrap());
        lease.end_time = Some(OffsetDateTime::from_unix_timestamp(10_000_000_000).unwrap());
        assert_eq!(check(&lease, 10), Err(LeaseError::DurationTooLong));
    }

    #[test]
    fn legacy_requests_need_a_selector_and_a_duration() {
        assert_eq!(
            check_legacy(LabelSelector::default(), Some(Duration::hours(1))),
            Err(LeaseError::SelectorRequired)
        );
        let selector = selector::parse("a=b").unwrap();
        assert_eq!(
            check_legacy(selector.clone(), Some(Duration::ZERO)),
            Err(LeaseError::Times(LeaseTimesError::Missing))
        );
        let checked = check_legacy(selector, Some(Duration::hours(1))).unwrap();
        assert_eq!(checked.duration, Duration::hours(1));
    }

    #[test]
    fn lease_ids_are_object_names() {
        assert_eq!(check_lease_id(""), Ok(None));
        assert_eq!(check_lease_id("l-1"), Ok(Some("l-1".into())));
        assert_eq!(
            check_lease_id("L_1").unwrap_err().to_string(),
            "invalid lease_id \"L_1\": must be a lowercase RFC 1123 name"
        );
    }
}
