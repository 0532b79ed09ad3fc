//! The words the stored objects are written in, each spelled once: the API group and its
//! `jumpstarter.dev/` prefix, label and annotation keys, condition types and reasons, the
//! `metav1.Condition` update rule, and the conversions between the Kubernetes forms
//! (`metav1.Time`, `metav1.LabelSelector`) and the domain forms (`OffsetDateTime`,
//! [`selector::LabelSelector`]).
//!
//! Every value here is what jumpstarter 0.9.0 writes and reads, so `jmp admin`, `kubectl`
//! and a 0.9.0 controller see the same objects.

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::jiff;
use time::OffsetDateTime;

use jumpstarter_lease::scheduler::condition::ConditionStatus;
use jumpstarter_lease::selector::{self, Operator, Requirement};

/// The API group, as a literal so the keys below can be built from it with `concat!`.
macro_rules! group {
    () => {
        "jumpstarter.dev"
    };
}

/// The API version, as a literal for the same reason.
macro_rules! version {
    () => {
        "v1alpha1"
    };
}

/// API group of every custom resource.
pub const GROUP: &str = group!();
/// API version of every custom resource.
pub const VERSION: &str = version!();
/// `apiVersion` of the custom resources and of the 0.9.0 configuration files.
pub(crate) const API_VERSION: &str = concat!(group!(), "/", version!());
/// Prefix of the label and annotation keys that belong to jumpstarter: users may not set
/// them as lease tags, and an exporter may not set them on itself at Register (the lease
/// domain and the Register rules check it by their own constants; the tests tie them).
#[cfg(test)]
pub(crate) const PREFIX: &str = concat!(group!(), "/");

/// Label (value `"true"`) that marks an ended lease, so listings can leave ended leases out
/// with a label selector.
pub const LEASE_ENDED_LABEL: &str = concat!(group!(), "/lease-ended");
/// Prefix of the lease labels that hold the lease's tags (`metadata.jumpstarter.dev/<key>`):
/// the lease domain's, whose tag rules reserve it.
pub use jumpstarter_lease::request::TAG_LABEL_PREFIX;

/// Annotation that overrides the namespace of an object's internal token subject (set on
/// objects migrated from another namespace, so their tokens stay valid).
pub(crate) const MIGRATED_NAMESPACE_ANNOTATION: &str = concat!(group!(), "/migrated-namespace");
/// Annotation that overrides the UID of an object's internal token subject.
pub(crate) const MIGRATED_UID_ANNOTATION: &str = concat!(group!(), "/migrated-uid");

/// The `(namespace, uid)` an object's internal token subject names instead of its own
/// (the non-empty migration annotations).
pub(crate) fn migrated_subject(object: &meta::ObjectMeta) -> (Option<String>, Option<String>) {
    let annotation = |key: &str| {
        object
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    (
        annotation(MIGRATED_NAMESPACE_ANNOTATION),
        annotation(MIGRATED_UID_ANNOTATION),
    )
}
/// Annotation of a Client or Exporter: its credential generation (decimal). Rotating the
/// credential raises it; tokens carrying a lower generation (claim `gen`, 0 when absent)
/// are refused, so a rotated token stops working at once, on every replica.
pub(crate) const TOKEN_GENERATION_ANNOTATION: &str = concat!(group!(), "/token-generation");
/// Annotation of an Exporter: the labels the exporter itself set at Register (a JSON object
/// of keys and values), so that it may later change or remove those and no others.
pub(crate) const REPORTED_LABELS_ANNOTATION: &str = concat!(group!(), "/reported-labels");
/// Annotation of an Exporter: the controller replica (`<identity>/<incarnation>`) that holds
/// an open Status stream of the exporter. While that replica is live, the exporter is
/// online without any `lastSeen` refresh; the replica removes it when its last stream of
/// the exporter ends.
pub(crate) const STATUS_STREAM_ANNOTATION: &str = concat!(group!(), "/status-stream");
/// Annotation of the router Secret: the endpoints (`endpoint;quic-endpoint`) its
/// certificate was minted for.
pub(crate) const ROUTER_ENDPOINTS_ANNOTATION: &str = concat!(group!(), "/router-endpoints");
/// Annotation of the router Secret: its certificate's `notAfter`, Unix seconds.
pub(crate) const NOT_AFTER_ANNOTATION: &str = concat!(group!(), "/not-after");

/// The conditions of an exporter's status.
pub mod exporter_condition {
    /// Condition type: the exporter has reported its devices.
    pub(crate) const REGISTERED: &str = "Registered";
    /// Condition type: the exporter talked to the controller recently.
    pub(crate) const ONLINE: &str = "Online";

    /// Reason strings, exactly as jumpstarter 0.9.0 writes them.
    pub mod reason {
        /// `Registered=True`: the exporter has devices.
        pub(crate) const REGISTER: &str = "Register";
        /// `Registered=False`: the exporter has no devices.
        pub(crate) const UNREGISTER: &str = "Unregister";
        /// `Online`: decided by when the exporter was last seen.
        pub(crate) const SEEN: &str = "Seen";
        /// `Online=False`: the exporter reported itself offline.
        pub(crate) const OFFLINE: &str = "Offline";
        /// `Online=True`: the exporter reported a status.
        pub(crate) const STATUS_REPORTED: &str = "StatusReported";
    }
}

/// The conditions of a lease's status. The planner writes them, so they are defined with
/// it; they are named here so that readers of stored leases find every condition in one
/// place.
pub mod lease_condition {
    pub use jumpstarter_lease::scheduler::condition::{
        INVALID, PENDING, READY, UNSATISFIABLE, reason,
    };
}

/// True when `conditions` has one of `type_` whose status is `True`.
pub(crate) fn is_true(conditions: &[meta::Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == ConditionStatus::True.as_str())
}

/// Sets a condition as Kubernetes `meta.SetStatusCondition` does: a new type is appended,
/// an existing one updated in place, and `lastTransitionTime` moves (to `now`) only when the
/// status flips. Returns whether anything changed.
pub(crate) fn set_condition(
    conditions: &mut Vec<meta::Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: OffsetDateTime,
) -> bool {
    let status = ConditionStatus::from(status).as_str();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        None => {
            conditions.push(meta::Condition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                observed_generation: generation,
                last_transition_time: stored_time(now),
                reason: reason.to_owned(),
                message: message.to_owned(),
            });
            true
        }
        Some(existing) => {
            let before = existing.clone();
            if existing.status != status {
                existing.status = status.to_owned();
                existing.last_transition_time = stored_time(now);
            }
            existing.reason = reason.to_owned();
            existing.message = message.to_owned();
            existing.observed_generation = generation;
            *existing != before
        }
    }
}

/// A time that cannot be stored (`metav1.Time` reaches from year -9999 to 9999).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("time {0} is out of range")]
pub(crate) struct TimeOutOfRange(pub OffsetDateTime);

/// A stored time as an `OffsetDateTime`.
pub(crate) fn time_of(time: &meta::Time) -> OffsetDateTime {
    // jiff's range (years -9999..=9999) fits inside time's; UNIX_EPOCH is only a fallback.
    OffsetDateTime::from_unix_timestamp_nanos(time.0.as_nanosecond())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `time` in stored form, truncated to whole seconds as Kubernetes stores it; for times
/// from the clock or derived from stored times, which are always in range.
pub(crate) fn stored_time(time: OffsetDateTime) -> meta::Time {
    // Out-of-range times (beyond year 9999) cannot come from the clock or the API.
    meta::Time(
        jiff::Timestamp::from_second(time.unix_timestamp()).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
    )
}

/// `time` in stored form, exactly; for times a caller asked for, which may be out of range.
pub(crate) fn checked_time(time: OffsetDateTime) -> Result<meta::Time, TimeOutOfRange> {
    jiff::Timestamp::from_nanosecond(time.unix_timestamp_nanos())
        .map(meta::Time)
        .map_err(|_| TimeOutOfRange(time))
}

/// The current time, in stored form.
pub fn now_time() -> meta::Time {
    meta::Time(jiff::Timestamp::now())
}

/// A stored selector in the domain form. An operator Kubernetes does not define becomes a
/// requirement whose key (`"<key> <operator>"`) is invalid, so [`selector::validate`]
/// rejects the selector and names the operator, and [`selector::format`] shows `<error>`.
pub(crate) fn selector_from_k8s(stored: &meta::LabelSelector) -> selector::LabelSelector {
    selector::LabelSelector {
        match_labels: stored.match_labels.clone().unwrap_or_default(),
        match_expressions: stored
            .match_expressions
            .iter()
            .flatten()
            .map(|e| match operator_of(&e.operator) {
                Some(operator) => Requirement {
                    key: e.key.clone(),
                    operator,
                    values: e.values.clone().unwrap_or_default(),
                },
                None => Requirement {
                    key: format!("{} {}", e.key, e.operator),
                    operator: Operator::Exists,
                    values: Vec::new(),
                },
            })
            .collect(),
    }
}

/// A domain selector in the stored (`metav1.LabelSelector`) form; empty parts are left out.
pub(crate) fn selector_to_k8s(selector: &selector::LabelSelector) -> meta::LabelSelector {
    meta::LabelSelector {
        match_labels: (!selector.match_labels.is_empty()).then(|| selector.match_labels.clone()),
        match_expressions: (!selector.match_expressions.is_empty()).then(|| {
            selector
                .match_expressions
                .iter()
                .map(|r| meta::LabelSelectorRequirement {
                    key: r.key.clone(),
                    operator: operator_name(r.operator).to_owned(),
                    values: (!r.values.is_empty()).then(|| r.values.clone()),
                })
                .collect()
        }),
    }
}

/// A `metav1.LabelSelectorOperator` by its Kubernetes name (`In`, `NotIn`, `Exists`,
/// `DoesNotExist`); `None` for any other name.
pub(crate) fn operator_of(name: &str) -> Option<Operator> {
    match name {
        "In" => Some(Operator::In),
        "NotIn" => Some(Operator::NotIn),
        "Exists" => Some(Operator::Exists),
        "DoesNotExist" => Some(Operator::DoesNotExist),
        _ => None,
    }
}

/// The Kubernetes name of an operator.
pub(crate) fn operator_name(operator: Operator) -> &'static str {
    match operator {
        Operator::In => "In",
        Operator::NotIn => "NotIn",
        Operator::Exists => "Exists",
        Operator::DoesNotExist => "DoesNotExist",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use exporter_condition::ONLINE;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + seconds).expect("valid")
    }

    #[test]
    fn keys_carry_the_prefix() {
        assert_eq!(PREFIX, "jumpstarter.dev/");
        // The lease domain reserves the same prefix for lease tags.
        assert_eq!(PREFIX, jumpstarter_lease::request::RESERVED_PREFIX);
        assert_eq!(API_VERSION, format!("{GROUP}/{VERSION}"));
        for key in [
            LEASE_ENDED_LABEL,
            MIGRATED_NAMESPACE_ANNOTATION,
            MIGRATED_UID_ANNOTATION,
            TOKEN_GENERATION_ANNOTATION,
            ROUTER_ENDPOINTS_ANNOTATION,
            NOT_AFTER_ANNOTATION,
            STATUS_STREAM_ANNOTATION,
        ] {
            assert!(key.starts_with(PREFIX), "{key}");
        }
        assert_eq!(LEASE_ENDED_LABEL, "jumpstarter.dev/lease-ended");
        // The derive needs the group as a literal; it must be this one.
        fn api_version<K: kube::Resource<DynamicType = ()>>() -> String {
            assert_eq!(K::group(&()), GROUP);
            K::api_version(&()).into_owned()
        }
        for version in [
            api_version::<crate::crd::Client>(),
            api_version::<crate::crd::Exporter>(),
            api_version::<crate::crd::ExporterAccessPolicy>(),
            api_version::<crate::crd::Lease>(),
        ] {
            assert_eq!(version, API_VERSION);
        }
        assert_eq!(TAG_LABEL_PREFIX, "metadata.jumpstarter.dev/");
    }

    /// [`set_condition`] without a generation, `seconds` after [`at`]`(0)`.
    fn set(
        conditions: &mut Vec<meta::Condition>,
        type_: &str,
        status: bool,
        reason: &str,
        message: &str,
        seconds: i64,
    ) -> bool {
        set_condition(
            conditions,
            type_,
            status,
            reason,
            message,
            None,
            at(seconds),
        )
    }

    #[test]
    fn set_condition_appends_then_updates_in_place() {
        let mut conditions = Vec::new();
        assert!(set(
            &mut conditions,
            exporter_condition::REGISTERED,
            true,
            "Register",
            "",
            0
        ));
        assert!(set(&mut conditions, ONLINE, true, "Seen", "", 0));
        let first_time = conditions[1].last_transition_time.clone();
        assert!(!set(&mut conditions, ONLINE, true, "Seen", "", 1));
        assert!(set(&mut conditions, ONLINE, true, "StatusReported", "m", 2));
        assert_eq!(conditions[1].last_transition_time, first_time);
        assert!(set(&mut conditions, ONLINE, false, "Offline", "", 3));
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[1].type_, "Online");
        assert_eq!(conditions[1].status, "False");
        assert_eq!(conditions[1].last_transition_time, stored_time(at(3)));
        assert!(is_true(&conditions, "Registered"));
        assert!(!is_true(&conditions, ONLINE));
    }

    #[test]
    fn times_round_trip() {
        let t = at(0) + time::Duration::milliseconds(250);
        assert_eq!(time_of(&checked_time(t).expect("in range")), t);
        assert_eq!(time_of(&stored_time(t)), at(0));
        // jiff leaves out the last day of year 9999 (so every offset fits); time does not.
        let far = time::macros::datetime!(9999-12-31 23:00 UTC);
        assert_eq!(
            checked_time(far).unwrap_err().to_string(),
            format!("time {far} is out of range")
        );
    }

    #[test]
    fn selectors_round_trip() {
        let domain = selector::parse("board=mock,env notin (a,b),!gone").expect("valid");
        let stored = selector_to_k8s(&domain);
        assert_eq!(selector_from_k8s(&stored), domain);
        assert_eq!(
            selector_to_k8s(&selector::LabelSelector::default()),
            meta::LabelSelector::default()
        );
    }

    #[test]
    fn unknown_operators_fail_validation() {
        let stored = meta::LabelSelector {
            match_expressions: Some(vec![meta::LabelSelectorRequirement {
                key: "size".into(),
                operator: "Gt".into(),
                values: Some(vec!["3".into()]),
            }]),
            match_labels: Some(BTreeMap::from([("a".into(), "b".into())])),
        };
        let s = selector_from_k8s(&stored);
        assert_eq!(s.match_labels.get("a").map(String::as_str), Some("b"));
        assert!(selector::validate(&s).is_err());
        assert_eq!(selector::format(&s), "<error>");
    }
}
