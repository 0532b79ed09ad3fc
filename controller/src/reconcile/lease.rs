//! Writing a [`Plan`]: lease statuses, exporter claims, and lease metadata.
//!
//! Exclusivity across concurrent writers (two replicas during a leader hand-over, a pass
//! racing a restart) rests on conditional writes, never on in-memory state:
//! 1. Before a lease is given exporter `E`, the pass *claims* `E`: it writes `E`'s
//!    `status.leaseRef` = the lease, conditional on the resourceVersion of `E` it planned
//!    with. Of two passes claiming `E` from the same read, one fails with a conflict; a
//!    pass that read `E` after a claim sees it and treats the claimed lease as holding `E`
//!    (see [`Memory`](super::memory::Memory): claims).
//! 2. Then it writes the lease status, conditional on the lease's resourceVersion.
//!
//! The updates of one plan are written concurrently (they touch distinct objects). A
//! conflict makes the pass end stale once the writes in flight are done; the next pass
//! plans again from a fresh read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;

use k8s_openapi::api::core::v1::LocalObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{self as meta, OwnerReference};
use kube::ResourceExt;
use time::OffsetDateTime;

use super::exporter::lease_ref;
use super::view::View;
use super::{ReconcileError, ReconcileMetrics};
use crate::crd;
use crate::crd::vocabulary::{self, LEASE_ENDED_LABEL, stored_time, time_of};
use crate::store::{Store, StoreError};
use jumpstarter_lease::scheduler::{self, Plan};

/// How a plan's application ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Every update was written.
    Complete,
    /// A write found its object changed (or gone); the rest was not written.
    Stale,
}

/// Writes the updates of `plan`, each claiming its exporter first. Updates are independent
/// (distinct leases, distinct exporters, each write conditional), so up to
/// [`WRITES_IN_FLIGHT`] run at once: on Kubernetes a write is a round trip to the API
/// server and its etcd commit. `desired` holds the exporter statuses this pass wants
/// (without `leaseRef`); `view` is kept current with what was written.
pub(crate) async fn apply_plan<S: Store>(
    store: &S,
    view: &mut View,
    desired: &BTreeMap<String, crd::ExporterStatus>,
    plan: &Plan,
    metrics: &ReconcileMetrics,
    now: OffsetDateTime,
) -> Result<Applied, ReconcileError> {
    let mut work = Vec::new();
    for update in &plan.updates {
        let Some(stored) = view.leases.get(&update.name) else {
            continue;
        };
        if update.uid.is_some() && stored.metadata.uid != update.uid {
            return Ok(Applied::Stale);
        }
        let stored_status = stored.status.clone().unwrap_or_default();
        let newly_assigned = stored_status.exporter_ref.is_none() && !update.status.ended;
        let claim = match (newly_assigned, update.status.exporter.as_deref()) {
            (true, Some(exporter)) => match claim_of(view, desired, exporter, &update.name) {
                Some(object) => Some(object),
                // Planned from a view that no longer has it: plan again.
                None => return Ok(Applied::Stale),
            },
            _ => None,
        };
        let mut lease = crd::Lease::clone(stored);
        lease.status = Some(stored_lease_status(&update.status));
        work.push((update, stored_status, claim, lease));
    }
    let writes: Vec<_> = work
        .iter()
        .map(|(_, _, claim, lease)| write_update(store, claim.as_ref(), lease, metrics))
        .collect();
    let outcomes: Vec<_> = futures::stream::iter(writes)
        .buffered(WRITES_IN_FLIGHT)
        .collect()
        .await;
    let mut applied = Applied::Complete;
    for ((update, stored_status, _, lease), outcome) in work.into_iter().zip(outcomes) {
        match outcome {
            Ok(Written {
                exporter,
                lease: written,
            }) => {
                if let Some(exporter) = exporter {
                    view.exporters
                        .insert(exporter.name_any(), Arc::new(exporter));
                }
                log_transition(&update.name, &stored_status, &update.status);
                if stored_status.preemption_time.is_none()
                    && update.status.preemption_time.is_some()
                {
                    metrics.preemptions.inc();
                }
                if stored_status.begin_time.is_none() && update.status.begin_time.is_some() {
                    let created = lease.metadata.creation_timestamp.as_ref().map(time_of);
                    if let Some(created) = created {
                        metrics
                            .scheduling_latency
                            .observe((now - created).as_seconds_f64().max(0.0));
                    }
                }
                view.leases.insert(update.name.clone(), Arc::new(written));
            }
            Err(error) if is_stale(&error) => {
                metrics.error(error.reason());
                tracing::debug!(lease = %update.name, error = %error, "an object changed while planning; planning again");
                applied = Applied::Stale;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(applied)
}

/// Writes in flight at once within one pass.
pub(crate) const WRITES_IN_FLIGHT: usize = 16;

/// What one update wrote: the claimed exporter (if it claimed one) and the lease.
struct Written {
    exporter: Option<crd::Exporter>,
    lease: crd::Lease,
}

/// Claims the exporter (if any), then writes the lease status; stops at the first failure.
async fn write_update<S: Store>(
    store: &S,
    claim: Option<&crd::Exporter>,
    lease: &crd::Lease,
    metrics: &ReconcileMetrics,
) -> Result<Written, ReconcileError> {
    let name = lease.name_any();
    let exporter = match claim {
        Some(object) => {
            let written =
                store
                    .replace_status(object)
                    .await
                    .map_err(|source| ReconcileError::Write {
                        kind: "Exporter",
                        namespace: object.namespace().unwrap_or_default(),
                        name: object.name_any(),
                        source,
                    })?;
            metrics.writes.inc();
            Some(written)
        }
        None => None,
    };
    let written = store
        .replace_status(lease)
        .await
        .map_err(|source| ReconcileError::Write {
            kind: "Lease",
            namespace: lease.namespace().unwrap_or_default(),
            name,
            source,
        })?;
    metrics.writes.inc();
    Ok(Written {
        exporter,
        lease: written,
    })
}

/// Brings the metadata of leases `names` in line with their status: the `lease-ended`
/// label once ended and a controller reference to the assigned exporter (up to
/// [`WRITES_IN_FLIGHT`] writes at once). Returns whether a write conflicted, and the leases
/// written.
pub(crate) async fn reconcile_metadata<S: Store>(
    store: &S,
    view: &mut View,
    names: &BTreeSet<String>,
    metrics: &ReconcileMetrics,
) -> Result<(bool, Vec<String>), ReconcileError> {
    let updates: Vec<crd::Lease> = names
        .iter()
        .filter_map(|name| view.leases.get(name))
        .filter_map(|lease| desired_metadata(lease, &view.exporters))
        .collect();
    let writes: Vec<_> = updates
        .iter()
        .map(|updated| store.replace(updated))
        .collect();
    let outcomes: Vec<_> = futures::stream::iter(writes)
        .buffered(WRITES_IN_FLIGHT)
        .collect()
        .await;
    let mut stale = false;
    let mut written_names = Vec::new();
    for (updated, outcome) in updates.into_iter().zip(outcomes) {
        let name = updated.name_any();
        match outcome {
            Ok(written) => {
                metrics.writes.inc();
                view.leases.insert(name.clone(), Arc::new(written));
                written_names.push(name);
            }
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {
                metrics.error("conflict");
                stale = true;
            }
            Err(source) => {
                return Err(ReconcileError::Write {
                    kind: "Lease",
                    namespace: updated.namespace().unwrap_or_default(),
                    name,
                    source,
                });
            }
        }
    }
    Ok((stale, written_names))
}

/// `exporter` with `status.leaseRef` = `lease` and the rest of its status as this pass
/// wants it (written conditional on the exporter's resourceVersion in `view`); `None` if
/// `view` has no such exporter.
fn claim_of(
    view: &View,
    desired: &BTreeMap<String, crd::ExporterStatus>,
    exporter: &str,
    lease: &str,
) -> Option<crd::Exporter> {
    let stored = view.exporters.get(exporter)?;
    let mut object = crd::Exporter::clone(stored);
    let mut status = desired
        .get(exporter)
        .cloned()
        .unwrap_or_else(|| stored.status.clone().unwrap_or_default());
    status.lease_ref = Some(LocalObjectReference {
        name: lease.to_owned(),
    });
    object.status = Some(status);
    Some(object)
}

/// The statuses to write for exporters `names` after the leases: `desired` plus the
/// `leaseRef` that the leases in `view` call for (`holder` gives the active lease holding
/// an exporter). Only exporters whose status changes are returned.
pub(crate) fn exporter_updates<'a>(
    view: &View,
    desired: &BTreeMap<String, crd::ExporterStatus>,
    names: impl Iterator<Item = &'a String>,
    holder: impl Fn(&str) -> Option<&'a crd::Lease>,
) -> Vec<crd::Exporter> {
    let mut updates = Vec::new();
    for name in names {
        let Some(stored) = view.exporters.get(name) else {
            continue;
        };
        let stored_ref = stored.status.as_ref().and_then(|s| s.lease_ref.as_ref());
        let lease_ref_now = lease_ref(holder(name), stored_ref, &view.leases);
        // The desired status carries the stored leaseRef: equal to the stored status and
        // the leaseRef unchanged means nothing to write (the common case, without clones).
        if let (Some(wanted), Some(current)) = (desired.get(name), stored.status.as_ref())
            && wanted == current
            && lease_ref_now.as_ref() == stored_ref
        {
            continue;
        }
        let current = stored.status.clone().unwrap_or_default();
        let mut status = desired
            .get(name)
            .cloned()
            .unwrap_or_else(|| current.clone());
        status.lease_ref = lease_ref_now;
        if stored.status.as_ref() != Some(&status) {
            let mut object = crd::Exporter::clone(stored);
            object.status = Some(status);
            updates.push(object);
        }
    }
    updates
}

fn is_stale(error: &ReconcileError) -> bool {
    matches!(
        error,
        ReconcileError::Write {
            source: StoreError::Conflict { .. } | StoreError::NotFound { .. },
            ..
        }
    )
}

/// The lease with the metadata its status calls for, or `None` when it already has it.
fn desired_metadata(
    lease: &crd::Lease,
    exporters: &BTreeMap<String, Arc<crd::Exporter>>,
) -> Option<crd::Lease> {
    let status = lease.status.as_ref();
    let mut updated = lease.clone();
    let mut changed = false;
    if status.is_some_and(|s| s.ended)
        && lease.labels().get(LEASE_ENDED_LABEL).map(String::as_str) != Some("true")
    {
        updated
            .labels_mut()
            .insert(LEASE_ENDED_LABEL.to_owned(), "true".to_owned());
        changed = true;
    }
    let exporter = status
        .and_then(|s| s.exporter_ref.as_ref())
        .and_then(|r| exporters.get(&r.name));
    if let Some(exporter) = exporter
        && let Some(uid) = exporter.metadata.uid.clone()
    {
        let refs = updated
            .metadata
            .owner_references
            .get_or_insert_with(Vec::new);
        if !refs.iter().any(|r| r.uid == uid) {
            refs.retain(|r| r.controller != Some(true));
            refs.push(OwnerReference {
                api_version: vocabulary::API_VERSION.to_owned(),
                kind: "Exporter".to_owned(),
                name: exporter.name_any(),
                uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            });
            changed = true;
        }
    }
    changed.then_some(updated)
}

/// The planner's status in stored form; zero priority and `false` spot access are left out
/// as 0.9.0 (Go `omitempty`) does.
fn stored_lease_status(s: &scheduler::LeaseStatus) -> crd::LeaseStatus {
    crd::LeaseStatus {
        begin_time: s.begin_time.map(stored_time),
        end_time: s.end_time.map(stored_time),
        exporter_ref: s
            .exporter
            .as_ref()
            .map(|name| LocalObjectReference { name: name.clone() }),
        ended: s.ended,
        priority: (s.priority != 0).then_some(s.priority),
        spot_access: s.spot_access.then_some(true),
        queue_position: s.queue_position,
        estimated_start: s.estimated_start.map(stored_time),
        preemption_time: s.preemption_time.map(stored_time),
        idle_timeout: s.idle_timeout.map(scheduler::duration::format),
        last_activity_time: s.last_activity.map(stored_time),
        conditions: (!s.conditions.is_empty()).then(|| {
            s.conditions
                .iter()
                .map(|c| meta::Condition {
                    type_: c.type_.clone(),
                    status: c.status.as_str().to_owned(),
                    observed_generation: Some(c.observed_generation),
                    last_transition_time: stored_time(c.last_transition_time),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                })
                .collect()
        }),
    }
}

fn log_transition(name: &str, before: &crd::LeaseStatus, after: &scheduler::LeaseStatus) {
    if before.exporter_ref.is_none()
        && let Some(exporter) = &after.exporter
    {
        tracing::info!(lease = name, exporter = %exporter, "lease assigned");
    }
    if before.preemption_time.is_none()
        && let Some(at) = after.preemption_time
    {
        tracing::info!(lease = name, ends_at = %at, "spot lease preempted: notice given");
    }
    if !before.ended && after.ended {
        let reason = after
            .conditions
            .last()
            .map(|c| c.reason.as_str())
            .unwrap_or_default();
        tracing::info!(lease = name, reason, "lease ended");
    }
}
