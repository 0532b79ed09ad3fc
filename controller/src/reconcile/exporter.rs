//! The exporter status the controller maintains (0.9.0 exporter reconciler): credential,
//! endpoint, `leaseRef`, and the `Registered` and `Online` conditions. Pure functions.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::LocalObjectReference;
use kube::ResourceExt;
use time::{Duration, OffsetDateTime};

use crate::crd::vocabulary::exporter_condition::{ONLINE, REGISTERED, reason};
use crate::crd::vocabulary::{LEASE_ENDED_LABEL, set_condition, time_of};
use crate::crd::{self, ExporterStatusValue};

/// An exporter silent for longer than this is offline (0.9.0 value; its Status stream
/// heartbeat runs every 10 s, so this tolerates several missed beats).
pub(crate) const OFFLINE_AFTER: Duration = Duration::minutes(1);
/// `statusMessage` written when an exporter is found offline (0.9.0 text).
pub(crate) const CONNECTION_LOST_MESSAGE: &str =
    "Connection lost - last seen more than 1 minute ago";

/// The status the controller wants for `exporter` at `now`, keeping `status.leaseRef` as it
/// is (see [`lease_ref`]). Everything the exporter reports (devices, lastSeen, ...) is kept.
pub(crate) fn desired_status(
    exporter: &crd::Exporter,
    credential: Option<&str>,
    endpoint: &str,
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
        let s = desired_status(&exporter(status.clone()), None, "ctl:8082", at(30));
        assert_eq!(condition(&s, REGISTERED).reason, "Register");
        assert_eq!(condition(&s, ONLINE).status, "True");
        assert_eq!(condition(&s, ONLINE).reason, "Seen");
        // Idempotent: applying again to its own output changes nothing.
        let again = desired_status(&exporter(s.clone()), None, "ctl:8082", at(40));
        assert_eq!(again, s);

        status = s;
        let lost = desired_status(&exporter(status.clone()), None, "ctl:8082", at(61));
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
        let graceful = desired_status(&exporter(status), None, "ctl:8082", at(10));
        assert_eq!(condition(&graceful, ONLINE).status, "False");
        assert_eq!(condition(&graceful, ONLINE).reason, "Offline");
    }
}
