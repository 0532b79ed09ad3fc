//! Lease requests and commands between the wire, the domain and the store: a `CreateLease`
//! body decoded into a [`LeaseRequest`], a stored Lease seen as a [`LeaseState`], and the
//! domain's answers ([`CheckedLease`], [`Change`]) written as Lease objects. The rules
//! themselves are `jumpstarter_lease`'s.

use std::borrow::Borrow;

use k8s_openapi::api::core::v1::LocalObjectReference;
use kube::api::ObjectMeta;
use time::{Duration, OffsetDateTime};
use tonic::Status;

use jumpstarter_lease::request::{self, CheckedLease, LeaseRequest};
use jumpstarter_lease::scheduler::duration as go_duration;
use jumpstarter_lease::scheduler::{self, booking};
use jumpstarter_lease::{Change, LeaseState};
use jumpstarter_proto::jumpstarter::client::v1 as client_pb;

use super::{lease_error, wire};
use crate::crd::vocabulary;
use crate::crd::{Exporter, Lease, LeaseSpec};
use crate::reconcile::view;

/// A `CreateLease` body as a domain request (times and durations decoded and range-checked).
/// A body whose time fields do not decode is refused by the domain's target rules first,
/// when they refuse it (0.9.0's order).
pub(crate) fn from_proto(
    lease: &client_pb::Lease,
    max_tags: usize,
) -> Result<LeaseRequest, Status> {
    let mut request = LeaseRequest {
        selector: lease.selector.clone(),
        exporter_name: lease.exporter_name.clone(),
        tags: lease
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        allow_disabled: lease.allow_disabled,
        ..LeaseRequest::default()
    };
    let times = decode_times(lease);
    if times.is_err() {
        request::check_target(&request, max_tags).map_err(lease_error::status)?;
    }
    (request.begin_time, request.end_time, request.duration) = times?;
    Ok(request)
}

type DecodedTimes = (
    Option<OffsetDateTime>,
    Option<OffsetDateTime>,
    Option<Duration>,
);

/// Begin time, end time and duration of a `CreateLease` body.
fn decode_times(lease: &client_pb::Lease) -> Result<DecodedTimes, Status> {
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
    let duration = duration_from_proto(lease.duration.as_ref())?;
    Ok((begin_time, end_time, duration))
}

/// A requested duration, decoded and range-checked (zero stays zero: the domain reads it as
/// absent).
pub(crate) fn duration_from_proto(
    d: Option<&prost_types::Duration>,
) -> Result<Option<Duration>, Status> {
    d.map(|d| wire::duration_from_proto(d, "duration"))
        .transpose()
}

/// The name of a new lease: the one asked for, else a fresh UUIDv7.
pub(crate) fn name_or_new(name: Option<String>) -> String {
    name.unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// The Lease object for a checked request.
pub(crate) fn build(
    request: &CheckedLease,
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
            selector: vocabulary::selector_to_k8s(&request.selector),
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

/// What the lease commands need to know about a stored lease.
pub(crate) fn state_of(lease: &Lease) -> LeaseState {
    let status = lease.status.as_ref();
    LeaseState {
        name: lease.metadata.name.clone().unwrap_or_default(),
        client: lease.spec.client_ref.name.clone(),
        exporter: status
            .and_then(|s| s.exporter_ref.as_ref())
            .map(|r| r.name.clone())
            .filter(|name| !name.is_empty()),
        release_requested: lease.spec.release == Some(true),
        ended: status.is_some_and(|s| s.ended),
        begin_time: lease.spec.begin_time.as_ref().map(vocabulary::time_of),
        end_time: lease.spec.end_time.as_ref().map(vocabulary::time_of),
        duration: lease
            .spec
            .duration
            .as_deref()
            .and_then(|d| go_duration::parse(d).ok()),
    }
}

/// Writes `change` into `lease`; whether the stored object changes.
pub(crate) fn apply(change: &Change, lease: &mut Lease) -> Result<bool, Status> {
    let before = lease.spec.clone();
    match change {
        Change::Nothing => {}
        Change::Release => lease.spec.release = Some(true),
        Change::Update { times, client } => {
            if let Some(times) = times {
                lease.spec.begin_time = times.begin_time.map(wire::k8s_time).transpose()?;
                lease.spec.end_time = times.end_time.map(wire::k8s_time).transpose()?;
                lease.spec.duration = Some(go_duration::format(times.duration));
            }
            if let Some(client) = client {
                lease.spec.client_ref = LocalObjectReference {
                    name: client.clone(),
                };
            }
        }
    }
    Ok(lease.spec != before)
}

/// A lease with a future begin time must not overlap the bookings and leases that hold its
/// exporters then, unless its tags ask to queue ([`booking::QUEUE_TAG`]). `leases` and
/// `exporters` are the namespace's; the same rule for `CreateLease` and `jumpstarter admin
/// create lease`.
pub(crate) fn check_booking<L: Borrow<Lease>, E: Borrow<Exporter>>(
    object: &Lease,
    leases: &[L],
    exporters: &[E],
    now: OffsetDateTime,
) -> Result<(), booking::Conflict> {
    let (key, value) = booking::QUEUE_TAG;
    let queue = object
        .spec
        .tags
        .as_ref()
        .is_some_and(|tags| tags.get(key).is_some_and(|v| v == value));
    if object.spec.begin_time.is_none() || queue {
        return Ok(());
    }
    let leases: Vec<scheduler::Lease> = leases.iter().map(|l| view::lease(l.borrow())).collect();
    let exporters: Vec<scheduler::Exporter> = exporters
        .iter()
        .map(|e| {
            let e = e.borrow();
            view::exporter(e, e.status.as_ref())
        })
        .collect();
    booking::check(&view::lease(object).spec, &leases, &exporters, now)
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

    /// Decoding and the domain rules, as `CreateLease` applies them.
    fn validate(lease: &client_pb::Lease, max_tags: usize) -> Result<CheckedLease, Status> {
        request::check(&from_proto(lease, max_tags)?, max_tags).map_err(lease_error::status)
    }

    #[test]
    fn builds_a_lease_with_labels_and_tags() {
        let mut lease = request("board=mock,metadata.jumpstarter.dev/x=y,env in (a,b)");
        lease.tags = HashMap::from([("team".to_owned(), "qa".to_owned())]);
        let checked = validate(&lease, 10).unwrap();
        let built = build(&checked, "lab", "l1", "alice").unwrap();
        // The selector's labels and the tags, never a tag-prefixed selector label.
        let labels = built.metadata.labels.clone().unwrap();
        let expected = [("board", "mock"), ("metadata.jumpstarter.dev/team", "qa")];
        assert_eq!(
            labels,
            expected.map(|(k, v)| (k.to_owned(), v.to_owned())).into()
        );
        assert_eq!(built.spec.client_ref.name, "alice");
        assert_eq!(built.spec.duration.as_deref(), Some("10m0s"));
        let exprs = built.spec.selector.match_expressions.clone().unwrap();
        assert_eq!(exprs[0].operator, "In");
        let state = state_of(&built);
        assert_eq!(state.name, "l1");
        assert_eq!(state.client, "alice");
        assert_eq!(state.duration, Some(Duration::minutes(10)));
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
        // Which tags are refused is the lease domain's test; here: how a refusal answers.
        let mut lease = request("a=b");
        lease.tags = HashMap::from([("bad key".to_owned(), "v".to_owned())]);
        assert_eq!(
            validate(&lease, 10).unwrap_err().code(),
            Code::InvalidArgument
        );
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
    fn target_rules_come_before_undecodable_times() {
        let mut lease = request("");
        lease.begin_time = Some(prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        });
        let err = validate(&lease, 10).unwrap_err();
        assert_eq!(
            err.message(),
            "one of selector or exporter_name is required"
        );
        lease.selector = "a=b".into();
        let err = validate(&lease, 10).unwrap_err();
        assert_eq!(err.message(), "begin_time is not a valid timestamp");
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

    #[test]
    fn changes_are_written_to_the_spec() {
        let checked = validate(&request("a=b"), 10).unwrap();
        let mut lease = build(&checked, "lab", "l1", "alice").unwrap();
        assert!(!apply(&Change::Nothing, &mut lease).unwrap());
        assert!(apply(&Change::Release, &mut lease).unwrap());
        assert_eq!(lease.spec.release, Some(true));
        assert!(!apply(&Change::Release, &mut lease).unwrap());
        let begin = OffsetDateTime::from_unix_timestamp(1_000).unwrap();
        let change = Change::Update {
            times: Some(jumpstarter_lease::scheduler::LeaseTimes {
                begin_time: Some(begin),
                end_time: None,
                duration: Duration::hours(2),
            }),
            client: Some("bob".into()),
        };
        assert!(apply(&change, &mut lease).unwrap());
        let state = state_of(&lease);
        assert_eq!(state.begin_time, Some(begin));
        assert_eq!(state.duration, Some(Duration::hours(2)));
        assert_eq!(state.client, "bob");
    }
}
