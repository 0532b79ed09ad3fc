//! The namespace as passes see it (read fresh, or kept current from the watches), and the
//! planner's view of each object (`exporter`, `lease`, `client`, `policy`; a whole
//! `Snapshot` in tests, the reference the incremental index is checked against).
//!
//! Exporters are read before leases. Together with exporter claims (see the
//! [`lease`](super::lease) module) this is what keeps two concurrent passes from giving one
//! exporter to two leases: a pass that sees a claim on an exporter in its exporter read
//! treats the claimed lease as holding it.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use kube::ResourceExt;
use time::OffsetDateTime;

use crate::crd;
use crate::crd::vocabulary::exporter_condition::{ONLINE, REGISTERED};
use crate::crd::vocabulary::{is_true, selector_from_k8s, time_of};
use crate::store::{Store, StoreError, list_all};
use jumpstarter_lease::scheduler;
#[cfg(test)]
use jumpstarter_lease::scheduler::Snapshot;

/// Every object of one namespace the reconciler looks at, keyed by name.
#[derive(Debug, Clone, Default)]
pub(crate) struct View {
    pub(crate) exporters: BTreeMap<String, Arc<crd::Exporter>>,
    pub(crate) leases: BTreeMap<String, Arc<crd::Lease>>,
    pub(crate) clients: BTreeMap<String, Arc<crd::Client>>,
    pub(crate) policies: Vec<Arc<crd::ExporterAccessPolicy>>,
    pub(crate) secrets: BTreeMap<String, Arc<Secret>>,
}

impl View {
    /// Reads the namespace: exporters first, then leases, clients, policies and Secrets.
    pub(crate) async fn read<S: Store>(store: &S, namespace: &str) -> Result<View, StoreError> {
        let exporters = list_all::<S, crd::Exporter>(store, namespace, None).await?;
        let leases = list_all::<S, crd::Lease>(store, namespace, None).await?;
        let clients = list_all::<S, crd::Client>(store, namespace, None).await?;
        let policies = list_all::<S, crd::ExporterAccessPolicy>(store, namespace, None).await?;
        let secrets = list_all::<S, Secret>(store, namespace, None).await?;
        Ok(View {
            exporters: by_name(exporters),
            leases: by_name(leases),
            clients: by_name(clients),
            policies: policies.into_iter().map(Arc::new).collect(),
            secrets: by_name(secrets),
        })
    }

    /// The planner's input, with each exporter's status as `desired` has it where it has
    /// one (the statuses this pass is about to write, e.g. an exporter found offline just
    /// now; their `leaseRef` is the stored one).
    #[cfg(test)]
    pub(crate) fn snapshot(&self, desired: &BTreeMap<String, crd::ExporterStatus>) -> Snapshot {
        let statuses: Vec<(&String, &crd::Exporter, Option<&crd::ExporterStatus>)> = self
            .exporters
            .iter()
            .map(|(name, e)| (name, &**e, desired.get(name).or(e.status.as_ref())))
            .collect();
        let mut leases: Vec<scheduler::Lease> = self.leases.values().map(|l| lease(l)).collect();
        inject_claims(
            statuses.iter().map(|(name, _, status)| (*name, *status)),
            &mut leases,
        );
        Snapshot {
            exporters: statuses
                .iter()
                .map(|(_, e, status)| exporter(e, *status))
                .collect(),
            clients: self
                .clients
                .values()
                .map(|c| scheduler::Client {
                    name: c.name_any(),
                    labels: c.labels().clone(),
                })
                .collect(),
            leases,
            policies: self.policies.iter().map(|p| policy(p)).collect(),
            settings: scheduler::Settings::default(),
        }
    }
}

pub(crate) fn client(c: &crd::Client) -> scheduler::Client {
    scheduler::Client {
        name: c.name_any(),
        labels: c.labels().clone(),
    }
}

fn by_name<K: kube::Resource>(items: Vec<K>) -> BTreeMap<String, Arc<K>> {
    items
        .into_iter()
        .map(|k| (k.meta().name.clone().unwrap_or_default(), Arc::new(k)))
        .collect()
}

/// An exporter's `status.leaseRef` names a lease that has no exporter yet when a pass
/// claimed the exporter for it and may still be writing (or failed to write) the lease.
/// Such a lease is treated as holding the exporter, so no other lease can be given it and
/// this pass completes the assignment. A claim is void when the lease is gone, ended,
/// released, holds another exporter, or another lease holds the exporter: the claiming
/// write of the lease can then no longer succeed.
#[cfg(test)]
fn inject_claims<'a>(
    exporters: impl Iterator<Item = (&'a String, Option<&'a crd::ExporterStatus>)>,
    leases: &mut [scheduler::Lease],
) {
    for (name, status) in exporters {
        let Some(claimant) = status
            .and_then(|s| s.lease_ref.as_ref())
            .map(|r| r.name.as_str())
        else {
            continue;
        };
        let held = leases
            .iter()
            .any(|l| !l.status.ended && l.status.exporter.as_deref() == Some(name.as_str()));
        if held {
            continue;
        }
        if let Some(lease) = leases.iter_mut().find(|l| l.name == claimant)
            && !lease.status.ended
            && !lease.spec.release
            && lease.status.exporter.is_none()
        {
            lease.status.exporter = Some(name.clone());
        }
    }
}

/// The `Online`/`Registered` conditions decide what the planner may use.
pub(crate) fn exporter(
    e: &crd::Exporter,
    status: Option<&crd::ExporterStatus>,
) -> scheduler::Exporter {
    let conditions = status
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    scheduler::Exporter {
        name: e.name_any(),
        labels: e.labels().clone(),
        enabled: e.spec.is_enabled(),
        registered: is_true(conditions, REGISTERED),
        online: is_true(conditions, ONLINE),
        exporter_status: status
            .and_then(|s| s.exporter_status)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default(),
    }
}

pub(crate) fn lease(l: &crd::Lease) -> scheduler::Lease {
    let spec = &l.spec;
    let status = l.status.clone().unwrap_or_default();
    let duration = spec.duration.as_deref().and_then(|text| match scheduler::duration::parse(text) {
        Ok(d) => Some(d),
        Err(error) => {
            tracing::warn!(lease = %l.name_any(), %error, "lease has an unreadable spec.duration");
            None
        }
    });
    scheduler::Lease {
        name: l.name_any(),
        uid: l.metadata.uid.clone(),
        generation: l.metadata.generation.unwrap_or(0),
        creation_time: l
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(OffsetDateTime::UNIX_EPOCH, time_of),
        client: spec.client_ref.name.clone(),
        spec: scheduler::LeaseSpec {
            selector: selector_from_k8s(&spec.selector),
            exporter_ref: spec
                .exporter_ref
                .as_ref()
                .map(|r| r.name.clone())
                .filter(|n| !n.is_empty()),
            allow_disabled: spec.allow_disabled.unwrap_or(false),
            duration,
            begin_time: spec.begin_time.as_ref().map(time_of),
            end_time: spec.end_time.as_ref().map(time_of),
            release: spec.release.unwrap_or(false),
            priority: requested_priority(l),
        },
        status: scheduler::LeaseStatus {
            exporter: status
                .exporter_ref
                .map(|r| r.name)
                .filter(|n| !n.is_empty()),
            begin_time: status.begin_time.as_ref().map(time_of),
            end_time: status.end_time.as_ref().map(time_of),
            ended: status.ended,
            conditions: status
                .conditions
                .unwrap_or_default()
                .iter()
                .map(condition)
                .collect(),
            priority: status.priority.unwrap_or(0),
            spot_access: status.spot_access.unwrap_or(false),
            queue_position: status.queue_position,
            estimated_start: status.estimated_start.as_ref().map(time_of),
            preemption_time: status.preemption_time.as_ref().map(time_of),
            idle_timeout: status
                .idle_timeout
                .as_deref()
                .and_then(|text| scheduler::duration::parse(text).ok())
                .filter(|timeout| timeout.is_positive()),
            last_activity: status.last_activity_time.as_ref().map(time_of),
        },
    }
}

/// The tag a client sets to ask for a lower priority than its policy rule gives
/// (`jmp create lease --tag priority=-5`, or `spec.tags` directly).
pub(crate) const PRIORITY_TAG: &str = "priority";

/// The priority the lease's `priority` tag asks for; an unreadable value is ignored (the
/// rule's priority applies) and logged.
fn requested_priority(l: &crd::Lease) -> Option<i64> {
    let text = l.spec.tags.as_ref()?.get(PRIORITY_TAG)?;
    match text.trim().parse::<i64>() {
        Ok(priority) => Some(priority),
        Err(_) => {
            tracing::warn!(lease = %l.name_any(), tag = %text, "lease has an unreadable priority tag; the policy's priority applies");
            None
        }
    }
}

pub(crate) fn policy(p: &crd::ExporterAccessPolicy) -> scheduler::AccessPolicy {
    let spec = &p.spec;
    scheduler::AccessPolicy {
        exporter_selector: spec
            .exporter_selector
            .as_ref()
            .map(selector_from_k8s)
            .unwrap_or_default(),
        rules: spec
            .policies
            .iter()
            .flatten()
            .map(|rule| scheduler::AccessRule {
                description: rule.description.clone().unwrap_or_default(),
                priority: rule.priority.unwrap_or(0),
                from: rule
                    .from
                    .iter()
                    .flatten()
                    .map(|f| {
                        f.client_selector
                            .as_ref()
                            .map(selector_from_k8s)
                            .unwrap_or_default()
                    })
                    .collect(),
                maximum_duration: rule
                    .maximum_duration
                    .as_deref()
                    .and_then(|text| scheduler::duration::parse(text).ok()),
                spot_access: rule.spot_access.unwrap_or(false),
                spot_grace_period: rule
                    .spot_grace_period
                    .as_deref()
                    .and_then(|text| scheduler::duration::parse(text).ok())
                    .filter(|grace| !grace.is_negative()),
                fair_share: rule.fair_share.as_ref().map(|share| scheduler::FairShare {
                    group_label: share.group_label.clone().filter(|label| !label.is_empty()),
                }),
                // Below the minimum (which `admin apply` refuses) it is raised to it.
                idle_timeout: rule
                    .idle_timeout
                    .as_deref()
                    .and_then(|text| scheduler::duration::parse(text).ok())
                    .filter(|timeout| timeout.is_positive())
                    .map(|timeout| timeout.max(scheduler::MIN_IDLE_TIMEOUT)),
            })
            .collect(),
    }
}

fn condition(c: &meta::Condition) -> scheduler::Condition {
    scheduler::Condition {
        type_: c.type_.clone(),
        status: scheduler::ConditionStatus::from_k8s(&c.status),
        observed_generation: c.observed_generation.unwrap_or(0),
        last_transition_time: time_of(&c.last_transition_time),
        reason: c.reason.clone(),
        message: c.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::LocalObjectReference;

    fn lease_named(name: &str, exporter: Option<&str>) -> scheduler::Lease {
        scheduler::Lease {
            name: name.into(),
            uid: None,
            generation: 1,
            creation_time: OffsetDateTime::UNIX_EPOCH,
            client: "c".into(),
            spec: scheduler::LeaseSpec::default(),
            status: scheduler::LeaseStatus {
                exporter: exporter.map(str::to_owned),
                ..Default::default()
            },
        }
    }

    fn statuses(
        exporters: &BTreeMap<String, crd::Exporter>,
    ) -> impl Iterator<Item = (&String, Option<&crd::ExporterStatus>)> {
        exporters.iter().map(|(name, e)| (name, e.status.as_ref()))
    }

    fn claimed(by: &str) -> crd::Exporter {
        let mut e = crd::Exporter::new("e1", crd::ExporterSpec::default());
        e.status = Some(crd::ExporterStatus {
            lease_ref: Some(LocalObjectReference { name: by.into() }),
            ..Default::default()
        });
        e
    }

    #[test]
    fn a_pending_claim_holds_the_exporter() {
        let exporters = BTreeMap::from([("e1".to_owned(), claimed("l1"))]);
        let mut leases = vec![lease_named("l0", None), lease_named("l1", None)];
        inject_claims(statuses(&exporters), &mut leases);
        assert_eq!(leases[0].status.exporter, None);
        assert_eq!(leases[1].status.exporter.as_deref(), Some("e1"));
    }

    #[test]
    fn void_claims_are_ignored() {
        let exporters = BTreeMap::from([("e1".to_owned(), claimed("l1"))]);
        // Another lease holds the exporter.
        let mut leases = vec![lease_named("l0", Some("e1")), lease_named("l1", None)];
        inject_claims(statuses(&exporters), &mut leases);
        assert_eq!(leases[1].status.exporter, None);
        // The claimant was released.
        let mut leases = vec![lease_named("l1", None)];
        leases[0].spec.release = true;
        inject_claims(statuses(&exporters), &mut leases);
        assert_eq!(leases[0].status.exporter, None);
        // The claimant ended.
        let mut leases = vec![lease_named("l1", None)];
        leases[0].status.ended = true;
        inject_claims(statuses(&exporters), &mut leases);
        assert_eq!(leases[0].status.exporter, None);
    }
}
