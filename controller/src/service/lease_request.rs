//! Turning a client's `CreateLease`/`UpdateLease` request into a Lease object: tag rules,
//! selector parsing, time fields and labels (0.9.0 `CreateLease` validation), pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::LocalObjectReference;
use kube::api::ObjectMeta;
use time::{Duration, OffsetDateTime};
use tonic::Status;

use jumpstarter_proto::jumpstarter::client::v1 as client_pb;

use super::names;
use super::wire;
use crate::crd::vocabulary::TAG_LABEL_PREFIX;
use crate::crd::{Lease, LeaseSpec};
use crate::scheduler::{duration as go_duration, lease_times};
use crate::selector;

/// Label key prefix reserved for the controller.
pub const RESERVED_PREFIX: &str = "jumpstarter.dev/";

/// What the caller asked for, checked, before a name is chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseRequest {
    pub selector: selector::LabelSelector,
    pub exporter_name: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub allow_disabled: bool,
    pub begin_time: Option<OffsetDateTime>,
    pub end_time: Option<OffsetDateTime>,
    pub duration: Duration,
}

/// Checks a requested lease: target, tags, selector and time fields.
pub fn validate(lease: &client_pb::Lease, max_tags: usize) -> Result<LeaseRequest, Status> {
    let exporter_name = match lease.exporter_name.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(name) if name.contains('/') => Some(names::parse(name, names::EXPORTERS)?.1),
        Some(name) if names::is_object_name(name) => Some(name.to_owned()),
        Some(name) => {
            return Err(Status::invalid_argument(format!(
                "invalid exporter_name {}: not a valid object name",
                names::quoted(name)
            )));
        }
    };
    let selector_text = lease.selector.trim();
    if selector_text.is_empty() && exporter_name.is_none() {
        return Err(Status::invalid_argument(
            "one of selector or exporter_name is required",
        ));
    }
    let tags = validate_tags(&lease.tags, max_tags)?;
    let selector = if selector_text.is_empty() {
        selector::LabelSelector::default()
    } else {
        selector::parse(selector_text).map_err(|e| Status::invalid_argument(e.to_string()))?
    };
    let begin_time = lease
        .begin_time
        .as_ref()
        .map(|t| wire::time_from_proto(t, "begin_time"))
        .transpose()?;
    let end_time = lease
        .end_time
        .as_ref()
        .map(|t| wire::time_from_proto(t, "end_time"))
        .transpose()?;
    let duration = requested_duration(lease.duration.as_ref())?;
    let times = reconcile_times(begin_time, end_time, duration)?;
    Ok(LeaseRequest {
        selector,
        exporter_name,
        tags,
        allow_disabled: lease.allow_disabled,
        begin_time: times.begin_time,
        end_time: times.end_time,
        duration: times.duration,
    })
}

/// The name of a new lease: `lease_id` when given (it must be a lowercase RFC 1123 name),
/// else a fresh UUIDv7.
pub fn lease_name(lease_id: &str) -> Result<String, Status> {
    if lease_id.is_empty() {
        Ok(uuid::Uuid::now_v7().to_string())
    } else if names::is_object_name(lease_id) {
        Ok(lease_id.to_owned())
    } else {
        Err(Status::invalid_argument(format!(
            "invalid lease_id {}: must be a lowercase RFC 1123 name",
            names::quoted(lease_id)
        )))
    }
}

/// The Lease object for a checked request.
pub fn build(
    request: &LeaseRequest,
    namespace: &str,
    name: &str,
    client: &str,
) -> Result<Lease, Status> {
    let labels = wire::lease_labels(&request.selector, &request.tags);
    Ok(Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: (!labels.is_empty()).then_some(labels),
            ..ObjectMeta::default()
        },
        spec: LeaseSpec {
            client_ref: LocalObjectReference {
                name: client.to_owned(),
            },
            duration: Some(go_duration::format(request.duration)),
            selector: wire::selector_to_k8s(&request.selector),
            exporter_ref: request
                .exporter_name
                .as_ref()
                .map(|name| LocalObjectReference { name: name.clone() }),
            tags: (!request.tags.is_empty()).then(|| request.tags.clone()),
            allow_disabled: request.allow_disabled.then_some(true),
            release: None,
            begin_time: request.begin_time.map(wire::k8s_time).transpose()?,
            end_time: request.end_time.map(wire::k8s_time).transpose()?,
        },
        status: None,
    })
}

/// A requested duration; zero counts as absent (proto3 sends 0 for "not given").
pub fn requested_duration(d: Option<&prost_types::Duration>) -> Result<Option<Duration>, Status> {
    let Some(d) = d else { return Ok(None) };
    let d = wire::duration_from_proto(d, "duration")?;
    Ok((!d.is_zero()).then_some(d))
}

/// `lease_times::reconcile` with its errors as INVALID_ARGUMENT.
pub fn reconcile_times(
    begin: Option<OffsetDateTime>,
    end: Option<OffsetDateTime>,
    duration: Option<Duration>,
) -> Result<lease_times::LeaseTimes, Status> {
    let times = lease_times::reconcile(begin, end, duration)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    if times.duration > wire::MAX_DURATION {
        return Err(Status::invalid_argument("duration is too long"));
    }
    Ok(times)
}

/// Tag rules: at most `max_tags`; keys are simple label names (no `/`, not reserved
/// prefixes); keys and values are valid label syntax.
pub fn validate_tags(
    tags: &std::collections::HashMap<String, String>,
    max_tags: usize,
) -> Result<BTreeMap<String, String>, Status> {
    if tags.len() > max_tags {
        return Err(Status::invalid_argument(format!(
            "too many tags: {} (at most {max_tags})",
            tags.len()
        )));
    }
    let mut out = BTreeMap::new();
    for (key, value) in tags {
        if key.starts_with(TAG_LABEL_PREFIX) || key.starts_with(RESERVED_PREFIX) {
            return Err(Status::invalid_argument(format!(
                "tag key {} uses a reserved prefix",
                names::quoted(key)
            )));
        }
        if key.contains('/') {
            return Err(Status::invalid_argument(format!(
                "tag key {} must not contain '/'",
                names::quoted(key)
            )));
        }
        let probe = selector::LabelSelector {
            match_labels: BTreeMap::from([(key.clone(), value.clone())]),
            match_expressions: Vec::new(),
        };
        selector::validate(&probe)
            .map_err(|e| Status::invalid_argument(format!("invalid tag: {e}")))?;
        out.insert(key.clone(), value.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tonic::Code;

    use super::*;

    fn request(selector: &str) -> client_pb::Lease {
        client_pb::Lease {
            selector: selector.to_owned(),
            duration: Some(prost_types::Duration {
                seconds: 600,
                nanos: 0,
            }),
            ..client_pb::Lease::default()
        }
    }

    #[test]
    fn builds_a_lease_with_labels_and_tags() {
        let mut lease = request("board=mock,metadata.jumpstarter.dev/x=y,env in (a,b)");
        lease.tags = HashMap::from([("team".to_owned(), "qa".to_owned())]);
        let checked = validate(&lease, 10).unwrap();
        let built = build(&checked, "lab", "l1", "alice").unwrap();
        let labels = built.metadata.labels.unwrap();
        assert_eq!(labels.get("board").map(String::as_str), Some("mock"));
        assert_eq!(
            labels
                .get("metadata.jumpstarter.dev/team")
                .map(String::as_str),
            Some("qa")
        );
        assert!(!labels.contains_key("metadata.jumpstarter.dev/x"));
        assert_eq!(built.spec.client_ref.name, "alice");
        assert_eq!(built.spec.duration.as_deref(), Some("10m0s"));
        let exprs = built.spec.selector.match_expressions.unwrap();
        assert_eq!(exprs[0].operator, "In");
    }

    #[test]
    fn requires_a_target() {
        let err = validate(&request(""), 10).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let mut pinned = request("");
        pinned.exporter_name = Some("exp1".into());
        assert_eq!(
            validate(&pinned, 10).unwrap().exporter_name.as_deref(),
            Some("exp1")
        );
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
            lease.tags = HashMap::from([(k.to_owned(), v.to_owned())]);
            assert_eq!(
                validate(&lease, 10).unwrap_err().code(),
                Code::InvalidArgument,
                "{k}"
            );
        }
        let mut lease = request("a=b");
        lease.tags = (0..3).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert!(validate(&lease, 2).is_err());
    }

    #[test]
    fn rejects_bad_selectors_and_durations() {
        assert_eq!(
            validate(&request("a in ("), 10).unwrap_err().code(),
            Code::InvalidArgument
        );
        let mut lease = request("a=b");
        lease.duration = None;
        let err = validate(&lease, 10).unwrap_err();
        assert!(
            err.message().contains("duration is required"),
            "{}",
            err.message()
        );
        lease.duration = Some(prost_types::Duration {
            seconds: -5,
            nanos: 0,
        });
        assert_eq!(
            validate(&lease, 10).unwrap_err().code(),
            Code::InvalidArgument
        );
        lease.duration = Some(prost_types::Duration {
            seconds: i64::MAX,
            nanos: 0,
        });
        assert_eq!(
            validate(&lease, 10).unwrap_err().code(),
            Code::InvalidArgument
        );
        lease.duration = Some(prost_types::Duration {
            seconds: 1,
            nanos: 2_000_000_000,
        });
        assert_eq!(
            validate(&lease, 10).unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn begin_and_end_give_the_duration() {
        let mut lease = request("a=b");
        lease.duration = None;
        lease.begin_time = Some(prost_types::Timestamp {
            seconds: 1_000,
            nanos: 0,
        });
        lease.end_time = Some(prost_types::Timestamp {
            seconds: 4_600,
            nanos: 0,
        });
        assert_eq!(validate(&lease, 10).unwrap().duration, Duration::hours(1));
    }
}
