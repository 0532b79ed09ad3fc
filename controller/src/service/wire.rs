//! Conversions between the stored objects and their protobuf forms (0.9.0 `ToProtobuf`),
//! plus the protobuf time, duration and selector conversions they need. The stored forms
//! themselves (keys, conditions, `metav1` times and selectors) are spelled in
//! [`crate::crd::vocabulary`].

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use time::{Duration, OffsetDateTime};
use tonic::Status;

use jumpstarter_proto::jumpstarter::client::v1 as client_pb;
use jumpstarter_proto::jumpstarter::v1 as pb;

use super::names;
use crate::crd::vocabulary::{
    self, TAG_LABEL_PREFIX, exporter_condition, operator_of, selector_from_k8s, time_of,
};
use crate::crd::{Exporter, ExporterStatusValue, Lease};
use jumpstarter_lease::scheduler::duration as go_duration;
use jumpstarter_lease::selector::{self, Requirement};

/// A lease as the client API shows it. `deprecated` (label key -> message) reports which
/// keys of its selector are deprecated (0.9.0 `deprecatedLabels`).
pub(crate) fn lease_to_proto(
    lease: &Lease,
    deprecated: &BTreeMap<String, String>,
    now: OffsetDateTime,
) -> client_pb::Lease {
    let namespace = lease.metadata.namespace.clone().unwrap_or_default();
    let name = lease.metadata.name.clone().unwrap_or_default();
    let spec = &lease.spec;
    let status = lease.status.clone().unwrap_or_default();
    let begin = status.begin_time.as_ref().map(time_of);
    let end = status.end_time.as_ref().map(time_of);
    let effective_duration = begin.map(|begin| {
        let elapsed = end.unwrap_or(now) - begin;
        proto_duration(elapsed.max(Duration::ZERO))
    });
    // A spot lease under notice shows its end pulled in to the notice's end: 0.9.0 clients
    // read the end as `effective_begin_time + duration` and look again then.
    let notice = status
        .preemption_time
        .as_ref()
        .filter(|_| !status.ended)
        .map(time_of);
    let duration = spec
        .duration
        .as_deref()
        .and_then(|d| go_duration::parse(d).ok());
    let duration = match (notice, begin) {
        (Some(at), Some(begin)) => Some((at - begin).max(Duration::ZERO)),
        _ => duration,
    };
    let end_time = match notice {
        Some(at) => Some(vocabulary::stored_time(at)),
        None => spec.end_time.clone(),
    };
    client_pb::Lease {
        name: names::format(&namespace, names::LEASES, &name),
        selector: selector::format(&selector_from_k8s(&spec.selector)),
        duration: duration.map(proto_duration),
        effective_duration,
        begin_time: spec.begin_time.as_ref().map(timestamp_of),
        effective_begin_time: status.begin_time.as_ref().map(timestamp_of),
        end_time: end_time.as_ref().map(timestamp_of),
        effective_end_time: status.end_time.as_ref().map(timestamp_of),
        client: Some(names::format(
            &namespace,
            names::CLIENTS,
            &spec.client_ref.name,
        )),
        exporter: status
            .exporter_ref
            .as_ref()
            .filter(|r| !r.name.is_empty())
            .map(|r| names::format(&namespace, names::EXPORTERS, &r.name)),
        conditions: status
            .conditions
            .iter()
            .flatten()
            .map(condition_to_proto)
            .collect(),
        exporter_name: spec
            .exporter_ref
            .as_ref()
            .filter(|r| !r.name.is_empty())
            .map(|r| r.name.clone()),
        tags: spec
            .tags
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        allow_disabled: spec.allow_disabled.unwrap_or(false),
        deprecated_labels: selector_deprecations(&spec.selector, deprecated),
    }
}

/// An exporter as the client API shows it. Its labels whose keys are `deprecated` (label
/// key -> message) are reported in `deprecated_labels` with their messages; unless
/// `show_hidden` is set, those and the `hidden` keys are dropped from `labels` (as 0.9.0
/// does).
pub(crate) fn exporter_to_proto(
    exporter: &Exporter,
    hidden: &[String],
    deprecated: &BTreeMap<String, String>,
    show_hidden: bool,
) -> client_pb::Exporter {
    let namespace = exporter.metadata.namespace.clone().unwrap_or_default();
    let name = exporter.metadata.name.clone().unwrap_or_default();
    let all_labels = exporter.metadata.labels.iter().flatten();
    let labels = all_labels
        .clone()
        .filter(|(k, _)| show_hidden || !(hidden.contains(k) || deprecated.contains_key(*k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let deprecated_labels = all_labels
        .filter_map(|(k, _)| {
            deprecated
                .get(k)
                .map(|message| (k.clone(), message.clone()))
        })
        .collect();
    let status = exporter.status.clone().unwrap_or_default();
    let online = vocabulary::is_true(
        status.conditions.as_deref().unwrap_or_default(),
        exporter_condition::ONLINE,
    );
    client_pb::Exporter {
        name: names::format(&namespace, names::EXPORTERS, &name),
        labels,
        online,
        status: status
            .exporter_status
            .map(status_to_proto)
            .unwrap_or(pb::ExporterStatus::Unspecified) as i32,
        status_message: status.status_message.unwrap_or_default(),
        enabled: Some(exporter.spec.is_enabled()),
        deprecated_labels,
    }
}

/// The keys of a stored selector (`matchLabels` and `matchExpressions`) that are
/// `deprecated`, with their messages.
fn selector_deprecations(
    selector: &meta::LabelSelector,
    deprecated: &BTreeMap<String, String>,
) -> HashMap<String, String> {
    if deprecated.is_empty() {
        return HashMap::new();
    }
    let label_keys = selector.match_labels.iter().flatten().map(|(k, _)| k);
    let expression_keys = selector.match_expressions.iter().flatten().map(|r| &r.key);
    label_keys
        .chain(expression_keys)
        .filter_map(|k| {
            deprecated
                .get(k)
                .map(|message| (k.clone(), message.clone()))
        })
        .collect()
}

/// A stored condition as a protobuf condition.
pub(crate) fn condition_to_proto(condition: &meta::Condition) -> pb::Condition {
    let ts = &condition.last_transition_time.0;
    pb::Condition {
        r#type: Some(condition.type_.clone()),
        status: Some(condition.status.clone()),
        observed_generation: condition.observed_generation,
        last_transition_time: Some(pb::Time {
            seconds: Some(ts.as_second()),
            nanos: Some(ts.subsec_nanosecond()),
        }),
        reason: Some(condition.reason.clone()),
        message: Some(condition.message.clone()),
    }
}

/// The CRD's PascalCase status as the protobuf enum.
pub(crate) fn status_to_proto(value: ExporterStatusValue) -> pb::ExporterStatus {
    match value {
        ExporterStatusValue::Unspecified => pb::ExporterStatus::Unspecified,
        ExporterStatusValue::Offline => pb::ExporterStatus::Offline,
        ExporterStatusValue::Available => pb::ExporterStatus::Available,
        ExporterStatusValue::BeforeLeaseHook => pb::ExporterStatus::BeforeLeaseHook,
        ExporterStatusValue::LeaseReady => pb::ExporterStatus::LeaseReady,
        ExporterStatusValue::AfterLeaseHook => pb::ExporterStatus::AfterLeaseHook,
        ExporterStatusValue::BeforeLeaseHookFailed => pb::ExporterStatus::BeforeLeaseHookFailed,
        ExporterStatusValue::AfterLeaseHookFailed => pb::ExporterStatus::AfterLeaseHookFailed,
    }
}

/// The protobuf enum (as sent, an `i32`) as the CRD's PascalCase status.
pub(crate) fn status_from_proto(value: i32) -> Result<ExporterStatusValue, Status> {
    let status = pb::ExporterStatus::try_from(value)
        .map_err(|_| Status::invalid_argument(format!("unknown exporter status {value}")))?;
    Ok(match status {
        pb::ExporterStatus::Unspecified => ExporterStatusValue::Unspecified,
        pb::ExporterStatus::Offline => ExporterStatusValue::Offline,
        pb::ExporterStatus::Available => ExporterStatusValue::Available,
        pb::ExporterStatus::BeforeLeaseHook => ExporterStatusValue::BeforeLeaseHook,
        pb::ExporterStatus::LeaseReady => ExporterStatusValue::LeaseReady,
        pb::ExporterStatus::AfterLeaseHook => ExporterStatusValue::AfterLeaseHook,
        pb::ExporterStatus::BeforeLeaseHookFailed => ExporterStatusValue::BeforeLeaseHookFailed,
        pb::ExporterStatus::AfterLeaseHookFailed => ExporterStatusValue::AfterLeaseHookFailed,
    })
}

/// A protobuf selector (legacy `RequestLease`), validated.
pub(crate) fn selector_from_proto(
    proto: &pb::LabelSelector,
) -> Result<selector::LabelSelector, Status> {
    let mut out = selector::LabelSelector {
        match_labels: proto
            .match_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        match_expressions: Vec::new(),
    };
    for requirement in &proto.match_expressions {
        out.match_expressions.push(Requirement {
            key: requirement.key.clone(),
            operator: operator_of(&requirement.operator).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "unknown label selector operator {}",
                    jumpstarter_lease::name::quoted(&requirement.operator)
                ))
            })?,
            values: requirement.values.clone(),
        });
    }
    selector::validate(&out).map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(out)
}

/// A stored selector as a protobuf selector (legacy `GetLease`).
pub(crate) fn selector_to_proto(stored: &meta::LabelSelector) -> pb::LabelSelector {
    pb::LabelSelector {
        match_expressions: stored
            .match_expressions
            .iter()
            .flatten()
            .map(|r| pb::LabelSelectorRequirement {
                key: r.key.clone(),
                operator: r.operator.clone(),
                values: r.values.clone().unwrap_or_default(),
            })
            .collect(),
        match_labels: stored
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// A time a caller asked for, in stored form; `InvalidArgument` when it is out of range.
pub(crate) fn k8s_time(time: OffsetDateTime) -> Result<meta::Time, Status> {
    vocabulary::checked_time(time).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// A stored time as a protobuf timestamp.
pub(crate) fn timestamp_of(time: &meta::Time) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.0.as_second(),
        nanos: time.0.subsec_nanosecond(),
    }
}

/// A protobuf timestamp as an `OffsetDateTime`, validated.
pub(crate) fn time_from_proto(
    ts: &prost_types::Timestamp,
    field: &str,
) -> Result<OffsetDateTime, Status> {
    let bad = || Status::invalid_argument(format!("{field} is not a valid timestamp"));
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(bad());
    }
    let nanos = i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos);
    let time = OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| bad())?;
    // Must also fit the stored form.
    k8s_time(time).map_err(|_| bad())?;
    Ok(time)
}

/// A protobuf duration as a `time::Duration`, validated against Go's range.
pub(crate) fn duration_from_proto(
    d: &prost_types::Duration,
    field: &str,
) -> Result<Duration, Status> {
    let bad = || Status::invalid_argument(format!("{field} is not a valid duration"));
    if d.nanos <= -1_000_000_000 || d.nanos >= 1_000_000_000 {
        return Err(bad());
    }
    if (d.seconds > 0 && d.nanos < 0) || (d.seconds < 0 && d.nanos > 0) {
        return Err(bad());
    }
    let total = i128::from(d.seconds) * 1_000_000_000 + i128::from(d.nanos);
    if total.abs() > i128::from(i64::MAX) {
        return Err(Status::invalid_argument(format!(
            "{field} is too long (at most {})",
            go_duration::format(jumpstarter_lease::request::MAX_DURATION)
        )));
    }
    Ok(Duration::nanoseconds_i128(total))
}

/// A `time::Duration` as a protobuf duration.
pub(crate) fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.whole_seconds(),
        nanos: d.subsec_nanoseconds(),
    }
}

/// Lease labels from a selector's `matchLabels` (minus tag keys) and the tags.
pub(crate) fn lease_labels(
    selector: &selector::LabelSelector,
    tags: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = selector
        .match_labels
        .iter()
        .filter(|(k, _)| !k.starts_with(TAG_LABEL_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, value) in tags {
        labels.insert(format!("{TAG_LABEL_PREFIX}{key}"), value.clone());
    }
    labels
}

#[cfg(test)]
mod tests;
