//! The exporter status the controller maintains (0.9.0 exporter reconciler): credential,
//! endpoint, `leaseRef`, and the `Registered` and `Online` conditions. Pure functions.
//!
//! Liveness: an exporter is online while a live controller replica holds an open Status
//! stream of it (the replica names itself in the exporter's
//! [`STATUS_STREAM_ANNOTATION`]; see [`holds_stream`]), or within [`OFFLINE_AFTER`] of its
//! `lastSeen` (the time of its last connection event or status report), as in 0.9.0. So
//! online exporters cost no write per interval: a dead replica's exporters go offline when
//! its record expires, a disconnected exporter a minute after its stream ended. An Offline
//! report (graceful shutdown) wins over both.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::LocalObjectReference;
use kube::ResourceExt;
use time::{Duration, OffsetDateTime};

use crate::crd::vocabulary::exporter_condition::{ONLINE, REGISTERED, reason};
use crate::crd::vocabulary::{LEASE_ENDED_LABEL, STATUS_STREAM_ANNOTATION, set_condition, time_of};
use crate::crd::{self, ExporterStatusValue};
use crate::replica::Replicas;

/// An exporter with no Status stream held by a live replica and no connection event or
/// status report for longer than this is offline (0.9.0 value).
pub(crate) const OFFLINE_AFTER: Duration = Duration::minutes(1);
/// `statusMessage` written when an exporter is found offline (0.9.0 text).
pub(crate) const CONNECTION_LOST_MESSAGE: &str =
    "Connection lost - last seen more than 1 minute ago";

/// Whether a live controller replica holds an open Status stream of `exporter` at `now`,
/// by its [`STATUS_STREAM_ANNOTATION`] and the replicas' records (`replicas`; without
/// them, annotations are not trusted). Until the records have been listed once, a named
/// replica counts as live: a record missing then is not yet evidence of a death.
pub(crate) fn holds_stream(
    exporter: &crd::Exporter,
    replicas: Option<&Replicas>,
    now: OffsetDateTime,
) -> bool {
    let Some(holder) = exporter
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STATUS_STREAM_ANNOTATION))
    else {
        return false;
    };
    replicas.is_some_and(|r| !r.is_complete() || r.is_live(holder, now))
}

/// The status the controller wants for `exporter` at `now`, keeping `status.leaseRef` as it
/// is (see [`lease_ref`]). Everything the exporter reports (devices, lastSeen, ...) is kept.
/// `stream_held`: a live replica holds a Status stream of it ([`holds_stream`]).
pub(crate) fn desired_status(
    exporter: &crd::Exporter,
    credential: Option<&str>,
    endpoint: &str,
    stream_held: bool,
    now: OffsetDateTime,
) -> crd::ExporterStatus {
    let mut status = exporter.status.clone().unwrap_or_default();
    let generation = exporter.metadata.generation;
    if let Some(name) = credential {
        status.credential = Some(LocalObjectReference {
            name: name.to_owned(),
        });
    }
    status.endpoint = Some(endpoint.to_owned());
    let mut conditions = status.conditions.take().unwrap_or_default();

    let registered = status.devices.as_ref().is_some_and(|d| !d.is_empty());
    let (why, message) = if registered {
        (reason::REGISTER, "Exporter registered")
    } else {
        (reason::UNREGISTER, "Exporter unregistered")
    };
    set_condition(
        &mut conditions,
        REGISTERED,
        registered,
        why,
        message,
        generation,
        now,
    );

    let last_seen = status.last_seen.as_ref().map(time_of);
    // A held stream is evidence as of now; it also undoes an Offline that this reconciler
    // wrote (the connection was thought lost, e.g. while the holder's record was late),
    // which the exporter itself did not report.
    let last_seen = if stream_held {
        if status.exporter_status == Some(ExporterStatusValue::Offline)
            && status.status_message.as_deref() == Some(CONNECTION_LOST_MESSAGE)
        {
            status.exporter_status = None;
            status.status_message = None;
        }
        Some(now)
    } else {
        last_seen
    };
    match last_seen {
        None => {
            set_condition(
                &mut conditions,
                ONLINE,
                false,
                reason::SEEN,
                "Never seen",
                generation,
                now,
            );
        }
        Some(seen) if now - seen > OFFLINE_AFTER => {
            set_condition(
                &mut conditions,
                ONLINE,
                false,
                reason::SEEN,
                "Last seen more than 1 minute ago",
                generation,
                now,
            );
            status.exporter_status = Some(ExporterStatusValue::Offline);
            status.status_message = Some(CONNECTION_LOST_MESSAGE.to_owned());
        }
        Some(_) if status.exporter_status == Some(ExporterStatusValue::Offline) => {
            set_condition(
                &mut conditions,
                ONLINE,
                false,
                reason::OFFLINE,
                "Exporter reported offline status",
                generation,
                now,
            );
        }
        Some(_) => {
            set_condition(
                &mut conditions,
                ONLINE,
                true,
                reason::SEEN,
                "Last seen less than 1 minute ago",
                generation,
                now,
            );
        }
    }
    status.conditions = Some(conditions);
    status
}

/// `status.leaseRef` of an exporter: `holder`, the active lease whose `status.exporterRef`
/// is this exporter (the first by name if several); else a claim still pending (the named
/// lease exists, is not ended or released, and has no exporter yet); else none.
pub(crate) fn lease_ref(
    holder: Option<&crd::Lease>,
    current: Option<&LocalObjectReference>,
    leases: &BTreeMap<String, Arc<crd::Lease>>,
) -> Option<LocalObjectReference> {
    if let Some(lease) = holder {
        return Some(LocalObjectReference {
            name: lease.name_any(),
        });
    }
    let claim = current?;
    let lease = leases.get(&claim.name)?;
    let pending = is_active(lease)
        && !lease.spec.release.unwrap_or(false)
        && lease
            .status
            .as_ref()
            .and_then(|s| s.exporter_ref.as_ref())
            .is_none();
    pending.then(|| claim.clone())
}

/// Not ended (neither in status nor by label).
pub(crate) fn is_active(lease: &crd::Lease) -> bool {
    !lease.status.as_ref().is_some_and(|s| s.ended)
        && !lease.labels().contains_key(LEASE_ENDED_LABEL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Device;
    use crate::crd::vocabulary::stored_time;
    use crate::replica::ReplicaId;
    use crate::store::WatchEvent;
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

    fn exporter(status: crd::ExporterStatus) -> crd::Exporter {
        let mut e = crd::Exporter::new("e1", crd::ExporterSpec::default());
        e.metadata.generation = Some(1);
        e.status = Some(status);
        e
    }

    fn condition<'a>(s: &'a crd::ExporterStatus, type_: &str) -> &'a meta::Condition {
        s.conditions
            .as_ref()
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
            .expect("condition present")
    }

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + seconds).expect("valid")
    }

    #[test]
    fn never_seen_and_unregistered() {
        let s = desired_status(
            &exporter(Default::default()),
            Some("e1-exporter"),
            "ctl:8082",
            false,
            at(0),
        );
        assert_eq!(condition(&s, REGISTERED).status, "False");
        assert_eq!(condition(&s, REGISTERED).reason, "Unregister");
        assert_eq!(condition(&s, ONLINE).status, "False");
        assert_eq!(condition(&s, ONLINE).message, "Never seen");
        assert_eq!(
            s.credential.as_ref().map(|c| c.name.as_str()),
            Some("e1-exporter")
        );
        assert_eq!(s.endpoint.as_deref(), Some("ctl:8082"));
        assert_eq!(s.exporter_status, None);
    }

    #[test]
    fn online_then_lost_then_graceful_offline() {
        let mut status = crd::ExporterStatus {
            devices: Some(vec![Device {
                uuid: Some("d".into()),
                ..Default::default()
            }]),
            last_seen: Some(stored_time(at(0))),
            exporter_status: Some(ExporterStatusValue::Available),
            ..Default::default()
        };
        let s = desired_status(&exporter(status.clone()), None, "ctl:8082", false, at(30));
        assert_eq!(condition(&s, REGISTERED).reason, "Register");
        assert_eq!(condition(&s, ONLINE).status, "True");
        assert_eq!(condition(&s, ONLINE).reason, "Seen");
        // Idempotent: applying again to its own output changes nothing.
        let again = desired_status(&exporter(s.clone()), None, "ctl:8082", false, at(40));
        assert_eq!(again, s);

        status = s;
        let lost = desired_status(&exporter(status.clone()), None, "ctl:8082", false, at(61));
        assert_eq!(condition(&lost, ONLINE).status, "False");
        assert_eq!(lost.exporter_status, Some(ExporterStatusValue::Offline));
        assert_eq!(
            lost.status_message.as_deref(),
            Some(CONNECTION_LOST_MESSAGE)
        );
        assert_eq!(
            condition(&lost, ONLINE).last_transition_time,
            stored_time(at(61))
        );

        status.exporter_status = Some(ExporterStatusValue::Offline);
        let graceful = desired_status(&exporter(status), None, "ctl:8082", false, at(10));
        assert_eq!(condition(&graceful, ONLINE).status, "False");
        assert_eq!(condition(&graceful, ONLINE).reason, "Offline");
    }

    fn record(identity: &str, incarnation: &str, renewed: OffsetDateTime) -> WatchEvent<Lease> {
        let mut lease = Lease::default();
        lease.metadata.name = Some(crate::replica::record_name(identity));
        lease.metadata.annotations = Some(
            [(
                crate::replica::INCARNATION_ANNOTATION.to_owned(),
                incarnation.to_owned(),
            )]
            .into(),
        );
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(identity.to_owned()),
            lease_duration_seconds: Some(20),
            renew_time: Some(meta::MicroTime(
                k8s_openapi::jiff::Timestamp::from_second(renewed.unix_timestamp())
                    .expect("in range"),
            )),
            ..LeaseSpec::default()
        });
        WatchEvent::Applied(lease)
    }

    fn held_by(mut e: crd::Exporter, holder: &str) -> crd::Exporter {
        e.metadata.annotations =
            Some([(STATUS_STREAM_ANNOTATION.to_owned(), holder.to_owned())].into());
        e
    }

    #[test]
    fn a_stream_counts_while_its_replica_is_live_and_only_then() {
        let mut replicas = Replicas::new(ReplicaId::new("leader"));
        let e = held_by(exporter(Default::default()), "r2/0000beef");
        // Before the records are listed, a named replica is given the benefit of the doubt.
        assert!(holds_stream(&e, Some(&replicas), at(0)));
        replicas.apply(record("r2", "0000beef", at(0)), at(0));
        replicas.apply(WatchEvent::Listed, at(0));
        assert!(holds_stream(&e, Some(&replicas), at(24)));
        // Expired (20 s + 5 s grace after the last renewal): the replica is dead.
        assert!(!holds_stream(&e, Some(&replicas), at(26)));
        // Another incarnation of the same pod (restarted): the stream died with the old.
        replicas.apply(record("r2", "0000cafe", at(30)), at(30));
        assert!(!holds_stream(&e, Some(&replicas), at(31)));
        // No annotation, or no replica view: no stream.
        assert!(!holds_stream(
            &exporter(Default::default()),
            Some(&replicas),
            at(31)
        ));
        assert!(!holds_stream(&e, None, at(0)));
        // The leader's own streams are live as long as it runs.
        let mine = held_by(exporter(Default::default()), &replicas.me().text());
        assert!(holds_stream(&mine, Some(&replicas), at(1000)));
    }

    #[test]
    fn a_held_stream_keeps_an_exporter_online_however_old_its_last_seen() {
        let status = crd::ExporterStatus {
            last_seen: Some(stored_time(at(0))),
            exporter_status: Some(ExporterStatusValue::Available),
            ..Default::default()
        };
        let e = exporter(status);
        let held = desired_status(&e, None, "ctl:8082", true, at(3600));
        assert_eq!(condition(&held, ONLINE).status, "True");
        assert_eq!(condition(&held, ONLINE).reason, "Seen");
        assert_eq!(held.exporter_status, Some(ExporterStatusValue::Available));
        // Idempotent while held.
        assert_eq!(
            desired_status(&exporter(held.clone()), None, "ctl:8082", true, at(3700)),
            held
        );
        // The stream is gone (or its replica died): the minute since lastSeen applies.
        let lost = desired_status(&exporter(held), None, "ctl:8082", false, at(3701));
        assert_eq!(condition(&lost, ONLINE).status, "False");
        assert_eq!(lost.exporter_status, Some(ExporterStatusValue::Offline));
        assert_eq!(
            lost.status_message.as_deref(),
            Some(CONNECTION_LOST_MESSAGE)
        );
        // Held again (the replica's record was only late): online again.
        let back = desired_status(&exporter(lost), None, "ctl:8082", true, at(3702));
        assert_eq!(condition(&back, ONLINE).status, "True");
        assert_eq!(back.exporter_status, None);
        assert_eq!(back.status_message, None);
    }

    #[test]
    fn an_offline_report_wins_over_a_held_stream() {
        let status = crd::ExporterStatus {
            last_seen: Some(stored_time(at(0))),
            exporter_status: Some(ExporterStatusValue::Offline),
            status_message: Some("Exporter shutdown".into()),
            ..Default::default()
        };
        let s = desired_status(&exporter(status), None, "ctl:8082", true, at(5));
        assert_eq!(condition(&s, ONLINE).status, "False");
        assert_eq!(condition(&s, ONLINE).reason, "Offline");
        assert_eq!(s.exporter_status, Some(ExporterStatusValue::Offline));
    }
}
