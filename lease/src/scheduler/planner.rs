//! The lease planner: given a [`Snapshot`] and `now`, decide every lease's next status.
//!
//! It follows jumpstarter 0.9.0's lease reconciler step by step (assignment, begin time,
//! ending), but looks at the whole namespace at once. That makes guarantees possible that
//! 0.9.0's one-lease-at-a-time reconciler lacks:
//!
//! - an exporter is never held by two non-ended leases;
//! - waiting leases form one queue, served in [`queue`](super::queue) order: booked leases
//!   whose begin time has come, then effective priority (the admitting rule's priority,
//!   lowered by the request, raised by aging), then fair share, then age;
//! - a waiting lease is overtaken only by leases created less than
//!   `aging interval × (highest priority − its priority + 1)` after it (proven by property
//!   test in `simulation`);
//! - spot access is granted only on exporters no waiting non-spot lease may use, and a spot
//!   lease is the only kind ever preempted: a non-spot lease that finds nothing free gives
//!   one spot holder notice (`Preempted` condition, `preemptionTime` = now + grace period),
//!   and that lease ends with reason `Preempted` when the notice runs out;
//! - a booked lease (future `beginTime`) keeps an exporter for its window: no other lease
//!   gets that exporter if it would still hold it at the booking's begin time;
//! - every waiting lease carries its queue position and estimated start.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::condition::reason;
use super::condition::{
    self, Condition, ConditionStatus, INVALID, PENDING, PREEMPTED, READY, UNSATISFIABLE,
};
use super::duration;
use super::queue::{self, Estimate, Estimator};
use super::snapshot::{
    AccessPolicy, AccessRule, Client, DEFAULT_SPOT_GRACE_PERIOD, Exporter, FairShare, Lease,
    LeaseSpec, LeaseStatus, Settings, Snapshot, activity_interval,
};
use crate::selector;

/// How long a lease waiting for an exporter sleeps before it is looked at again; 0.9.0
/// requeues such leases after one second.
pub const PENDING_RETRY: Duration = Duration::SECOND;

/// Longest text of rule descriptions quoted in a `NoAccess` message, as in 0.9.0, so the
/// condition stays well below object size limits.
const MAX_DESCRIPTIONS_LEN: usize = 4096;

/// `exporterStatus` values that accept a new lease (the empty string is an old exporter).
const READY_EXPORTER_STATUSES: [&str; 3] = ["Available", "Unspecified", ""];

/// What the planner decided.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// New statuses, only for leases whose status changes, oldest lease first.
    pub updates: Vec<LeaseUpdate>,
    /// When to plan again even if nothing changes: the earliest future `beginTime`,
    /// expiry, notice end, or pending retry.
    pub next_wakeup: Option<OffsetDateTime>,
}

/// The status to write for one lease.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseUpdate {
    /// `metadata.name` of the lease.
    pub name: String,
    /// `metadata.uid` of the lease as it was in the snapshot.
    pub uid: Option<String>,
    /// The complete new status.
    pub status: LeaseStatus,
}

/// Plans every lease of `snapshot` at instant `now`.
///
/// An exporter held by any lease that is not ended in the snapshot, or assigned earlier in
/// this plan, counts as leased. An exporter freed by a lease ending in this plan is
/// therefore only offered again by the next plan, after the end has been written.
///
/// The reference: [`Index::plan`](super::Index::plan) plans fewer leases with the same rules
/// and reaches the same plan (proven by property test).
pub fn plan(snapshot: &Snapshot, now: OffsetDateTime) -> Plan {
    let whole = Whole::new(snapshot);
    let leases: Vec<&Lease> = snapshot.leases.iter().collect();
    let (plan, _) = plan_leases(&whole, leases, now);
    plan
}

/// What a plan reads besides the leases it plans: the exporters, clients, policies,
/// settings, and which non-ended leases hold which exporter.
pub(crate) trait Namespace {
    /// Every exporter, sorted by name (the order Kubernetes lists them in).
    fn exporters(&self) -> impl Iterator<Item = &Exporter>;
    /// The exporter named `name` (the first in name order).
    fn exporter(&self, name: &str) -> Option<&Exporter>;
    fn client(&self, name: &str) -> Option<&Client>;
    fn policies(&self) -> &[AccessPolicy];
    fn settings(&self) -> Settings;
    /// The non-ended leases holding `exporter`.
    fn holders(&self, exporter: &str) -> impl Iterator<Item = &Lease>;
    /// Every exporter held by a non-ended lease, with its holders.
    fn holdings(&self) -> impl Iterator<Item = (&str, Vec<&Lease>)>;
}

/// Plans `leases` (ended ones are skipped) against `namespace`. Leases holding an exporter
/// may also change when a planned lease gives them notice, so the result may name leases
/// beyond `leases`. Also returns the next wake-up of every lease it planned, by name.
pub(crate) fn plan_leases<'a, N: Namespace>(
    namespace: &'a N,
    leases: Vec<&'a Lease>,
    now: OffsetDateTime,
) -> (Plan, Vec<(&'a str, Option<OffsetDateTime>)>) {
    let mut planner = Planner::new(namespace, now);
    let mut order: Vec<&Lease> = leases.into_iter().filter(|l| !l.status.ended).collect();
    order.sort_by(|a, b| (a.creation_time, &a.name).cmp(&(b.creation_time, &b.name)));

    let mut waiting = Vec::new();
    let mut booked = Vec::new();
    for lease in order {
        if lease.status.exporter.is_none()
            && !lease.spec.release
            && !window_closed(&lease.spec, now)
        {
            if lease.spec.begin_time.is_some() {
                booked.push(lease);
            }
            if lease.spec.begin_time.is_none_or(|begin| begin <= now) {
                waiting.push(lease);
                continue;
            }
        }
        let status = planner.settle(lease, lease.status.clone());
        planner.planned.insert(lease.name.as_str(), (lease, status));
    }
    planner.claim_bookings(&booked);
    planner.serve(waiting);
    planner.give_notices();

    let mut planned: Vec<(&Lease, LeaseStatus)> = planner.planned.into_values().collect();
    planned.sort_by(|(a, _), (b, _)| (a.creation_time, &a.name).cmp(&(b.creation_time, &b.name)));
    let mut updates = Vec::new();
    let mut wakeups = Vec::with_capacity(planned.len());
    for (lease, status) in planned {
        wakeups.push((
            lease.name.as_str(),
            planner.wakeups.get(lease.name.as_str()).copied(),
        ));
        if status != lease.status {
            updates.push(LeaseUpdate {
                name: lease.name.clone(),
                uid: lease.uid.clone(),
                status,
            });
        }
    }
    let plan = Plan {
        updates,
        next_wakeup: planner.wakeups.values().min().copied(),
    };
    (plan, wakeups)
}

/// A whole [`Snapshot`] as a [`Namespace`].
struct Whole<'a> {
    /// Exporters sorted by name (stable: equal names keep snapshot order).
    exporters: Vec<&'a Exporter>,
    clients: BTreeMap<&'a str, &'a Client>,
    policies: &'a [AccessPolicy],
    settings: Settings,
    /// Exporter name → the non-ended leases holding it, by name.
    held: BTreeMap<&'a str, Vec<&'a Lease>>,
}

impl<'a> Whole<'a> {
    fn new(snapshot: &'a Snapshot) -> Self {
        let mut exporters: Vec<&Exporter> = snapshot.exporters.iter().collect();
        exporters.sort_by(|a, b| a.name.cmp(&b.name));
        let clients = snapshot
            .clients
            .iter()
            .map(|c| (c.name.as_str(), c))
            .collect();
        let mut held: BTreeMap<&str, Vec<&Lease>> = BTreeMap::new();
        for lease in &snapshot.leases {
            if let (false, Some(exporter)) = (lease.status.ended, &lease.status.exporter) {
                held.entry(exporter.as_str()).or_default().push(lease);
            }
        }
        for holders in held.values_mut() {
            holders.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Whole {
            exporters,
            clients,
            policies: &snapshot.policies,
            settings: snapshot.settings,
            held,
        }
    }
}

impl Namespace for Whole<'_> {
    fn exporters(&self) -> impl Iterator<Item = &Exporter> {
        self.exporters.iter().copied()
    }

    fn exporter(&self, name: &str) -> Option<&Exporter> {
        let first = self.exporters.partition_point(|e| e.name.as_str() < name);
        self.exporters
            .get(first)
            .copied()
            .filter(|e| e.name == name)
    }

    fn client(&self, name: &str) -> Option<&Client> {
        self.clients.get(name).copied()
    }

    fn policies(&self) -> &[AccessPolicy] {
        self.policies
    }

    fn settings(&self) -> Settings {
        self.settings
    }

    fn holders(&self, exporter: &str) -> impl Iterator<Item = &Lease> {
        self.held.get(exporter).into_iter().flatten().copied()
    }

    fn holdings(&self) -> impl Iterator<Item = (&str, Vec<&Lease>)> {
        self.held
            .iter()
            .map(|(name, leases)| (*name, leases.clone()))
    }
}

/// An exporter a policy rule admits the lease's client to.
#[derive(Clone, Copy, Debug)]
struct Candidate<'a> {
    exporter: &'a Exporter,
    rule: Option<&'a AccessRule>,
    priority: i64,
    spot_access: bool,
}

/// A waiting lease the planner may serve: what it may use, and where it ranks.
struct Entry<'a> {
    lease: &'a Lease,
    /// Every admitting (exporter, rule) pair.
    approved: Vec<Candidate<'a>>,
    /// The approved pairs whose exporter is registered and online.
    online: Vec<Candidate<'a>>,
    /// The admitting rules' highest priority, lowered to the requested one.
    priority: i64,
    /// The fair-share setting of the rule that gives `priority`.
    fair_share: Option<&'a FairShare>,
}

/// Why a lease cannot be served at all, or not now.
enum Refusal {
    /// Set this condition; `retry` asks for another look after [`PENDING_RETRY`].
    Condition {
        type_: &'static str,
        reason: &'static str,
        message: String,
        retry: bool,
    },
    /// Leave the status alone and look again after [`PENDING_RETRY`].
    Retry,
}

/// An exporter kept for a booked lease.
#[derive(Clone, Debug)]
struct Claim<'a> {
    lease: &'a str,
    begin: OffsetDateTime,
    /// `None`: the booking never ends.
    end: Option<OffsetDateTime>,
}

struct Planner<'a, N> {
    namespace: &'a N,
    now: OffsetDateTime,
    /// Every planned lease and its new status, by name.
    planned: BTreeMap<&'a str, (&'a Lease, LeaseStatus)>,
    /// Each planned lease's next wake-up, by name.
    wakeups: BTreeMap<&'a str, OffsetDateTime>,
    /// Exporters assigned in this plan → (spot access, expected end).
    assigned: BTreeMap<&'a str, (bool, Option<OffsetDateTime>)>,
    /// Exporters kept for booked leases.
    claims: BTreeMap<&'a str, Vec<Claim<'a>>>,
    /// Exporters a waiting non-spot lease is waiting for, after a spot holder: they go to
    /// that lease and no other.
    preempting: BTreeMap<&'a str, &'a str>,
    /// Spot holders to give notice, by name: (exporter, the lease that needs it).
    notices: BTreeMap<&'a str, (&'a str, &'a str)>,
}

impl<'a, N: Namespace> Planner<'a, N> {
    fn new(namespace: &'a N, now: OffsetDateTime) -> Self {
        Planner {
            namespace,
            now,
            planned: BTreeMap::new(),
            wakeups: BTreeMap::new(),
            assigned: BTreeMap::new(),
            claims: BTreeMap::new(),
            preempting: BTreeMap::new(),
            notices: BTreeMap::new(),
        }
    }

    fn wake_at(&mut self, lease: &'a str, at: OffsetDateTime) {
        self.wakeups
            .entry(lease)
            .and_modify(|current| *current = (*current).min(at))
            .or_insert(at);
    }

    fn retry(&mut self, lease: &'a str) {
        // Saturating: a `now` at the very end of the time range simply gets no retry.
        if let Some(at) = self.now.checked_add(PENDING_RETRY) {
            self.wake_at(lease, at);
        }
    }

    fn set_condition(
        &self,
        lease: &Lease,
        status: &mut LeaseStatus,
        type_: &str,
        value: bool,
        reason: &str,
        message: String,
    ) {
        condition::set(
            &mut status.conditions,
            Condition {
                type_: type_.to_owned(),
                status: ConditionStatus::from(value),
                observed_generation: lease.generation,
                last_transition_time: self.now,
                reason: reason.to_owned(),
                message,
            },
        );
    }

    /// 0.9.0's begin-time and ending steps for a lease whose assignment is decided: it holds
    /// an exporter, or it waits for its begin time, or it is released, failed or too late.
    fn settle(&mut self, lease: &'a Lease, mut status: LeaseStatus) -> LeaseStatus {
        let now = self.now;
        let spec = &lease.spec;
        let name = lease.name.as_str();

        if status.exporter.is_none()
            && let Some(begin) = spec.begin_time.filter(|begin| *begin > now)
        {
            self.wake_at(name, begin);
        }
        if status.exporter.is_some() {
            status.queue_position = None;
            status.estimated_start = None;
        }
        if status.begin_time.is_none() && status.exporter.is_some() {
            status.begin_time = Some(now);
            self.set_condition(
                lease,
                &mut status,
                READY,
                true,
                reason::READY,
                "An exporter has been acquired for the client".to_owned(),
            );
        }

        let failed = condition::is_true(&status.conditions, UNSATISFIABLE)
            || condition::is_true(&status.conditions, INVALID);
        if failed {
            end(&mut status, now);
        } else if spec.release {
            let message = "The lease was marked for release".to_owned();
            self.set_condition(lease, &mut status, READY, false, reason::RELEASED, message);
            end(&mut status, now);
        } else {
            let expiry = match status.begin_time {
                Some(begin) => started_expiry(spec, begin),
                // Not started: only an explicit window can run out (see `window_closed`).
                None => window_end(spec),
            };
            let notice = status
                .preemption_time
                .filter(|_| status.begin_time.is_some());
            // An idle end counts as an early notice: whichever comes first ends the lease.
            let idle = idle_end(&status);
            let (notice, why_notice) = match (notice, idle) {
                (Some(n), Some(i)) if i < n => (Some(i), reason::IDLE),
                (Some(n), _) => (Some(n), reason::PREEMPTED),
                (None, Some(i)) => (Some(i), reason::IDLE),
                (None, None) => (None, reason::PREEMPTED),
            };
            match (expiry, notice) {
                (_, Some(at)) if at <= now && expiry.is_none_or(|e| at < e) => {
                    let message = if why_notice == reason::IDLE {
                        let timeout = status.idle_timeout.unwrap_or(Duration::ZERO);
                        format!(
                            "The lease was released: no session for {} (the idle timeout of \
                             the access policy rule that granted it)",
                            duration::format(timeout)
                        )
                    } else {
                        "The lease was preempted: its exporter is needed by a lease that is \
                         not spot access"
                            .to_owned()
                    };
                    self.set_condition(lease, &mut status, READY, false, why_notice, message);
                    end(&mut status, now);
                }
                (Some(at), _) if at <= now => {
                    let message = "The lease has expired".to_owned();
                    self.set_condition(lease, &mut status, READY, false, reason::EXPIRED, message);
                    end(&mut status, now);
                }
                (expiry, notice) if status.begin_time.is_some() => {
                    for at in expiry.into_iter().chain(notice) {
                        self.wake_at(name, at);
                    }
                }
                _ => {}
            }
        }
        if status.ended {
            status.queue_position = None;
            status.estimated_start = None;
        }
        status
    }

    /// Keeps an exporter for every booked lease not yet served (its begin time to come, or
    /// come and waiting), earliest begin first: the first approved exporter not kept for an
    /// overlapping booking.
    fn claim_bookings(&mut self, booked: &[&'a Lease]) {
        let mut booked = booked.to_vec();
        booked.sort_by_key(|l| (l.spec.begin_time, l.creation_time, l.name.as_str()));
        for lease in booked {
            let Ok(entry) = self.evaluate(lease) else {
                continue;
            };
            let Some(begin) = lease.spec.begin_time else {
                continue;
            };
            let end = window_end(&lease.spec);
            let free = entry.approved.iter().find(|c| {
                self.claims
                    .get(c.exporter.name.as_str())
                    .is_none_or(|claims| {
                        claims
                            .iter()
                            .all(|claim| !overlaps(claim.begin, claim.end, begin, end))
                    })
            });
            if let Some(candidate) = free {
                self.claims
                    .entry(candidate.exporter.name.as_str())
                    .or_default()
                    .push(Claim {
                        lease: lease.name.as_str(),
                        begin,
                        end,
                    });
            }
        }
    }

    /// Serves the waiting leases in queue order; those left waiting get their position and
    /// estimated start.
    fn serve(&mut self, waiting: Vec<&'a Lease>) {
        let mut entries = Vec::new();
        for lease in waiting {
            match self.evaluate(lease) {
                Ok(entry) if entry.online.is_empty() => {
                    let message = format!(
                        "While there are {} available exporters (i.e. {}), none of them are \
                         online",
                        entry.approved.len(),
                        entry.approved[0].exporter.name
                    );
                    let refusal = Refusal::Condition {
                        type_: PENDING,
                        reason: reason::OFFLINE,
                        message,
                        retry: true,
                    };
                    self.refuse(lease, refusal, None);
                }
                Ok(entry) => entries.push(entry),
                Err(refusal) => self.refuse(lease, refusal, None),
            }
        }
        // Exporters a waiting lease may use without spot access: spot access is not
        // granted on them. Only needed when some lease may get spot access.
        let any_spot = entries
            .iter()
            .any(|e| e.online.iter().any(|c| c.spot_access));
        let wanted: BTreeSet<&str> = if any_spot {
            entries
                .iter()
                .flat_map(|e| e.online.iter().filter(|c| !c.spot_access))
                .map(|c| c.exporter.name.as_str())
                .collect()
        } else {
            BTreeSet::new()
        };

        let aging = self.namespace.settings().aging_interval;
        let mut holdings = BTreeMap::new();
        let mut counted = BTreeSet::new();
        let mut queued = Vec::with_capacity(entries.len());
        for entry in &entries {
            let group = entry.fair_share.map(|share| {
                if counted.insert(&share.group_label) {
                    for (_, holders) in self.namespace.holdings() {
                        for holder in holders {
                            *holdings.entry(self.group_of(holder, share)).or_insert(0) += 1;
                        }
                    }
                }
                self.group_of(entry.lease, share)
            });
            let lease = entry.lease;
            queued.push(queue::Queued {
                item: entry,
                rank: queue::Rank {
                    booked: lease.spec.begin_time.is_some(),
                    priority: queue::effective_priority(
                        entry.priority,
                        waiting_since(lease),
                        self.now,
                        aging,
                    ),
                    creation_time: lease.creation_time,
                    name: &lease.name,
                },
                group,
            });
        }
        let mut estimator = Estimator::new(self.now);
        for entry in queue::order(queued, holdings) {
            self.serve_one(entry, &wanted, &mut estimator);
        }
    }

    /// The fair-share group of `lease`'s client: its value of the group label, or the client.
    fn group_of(&self, lease: &Lease, share: &FairShare) -> String {
        let value = share.group_label.as_ref().and_then(|key| {
            self.namespace
                .client(&lease.client)
                .and_then(|c| c.labels.get(key))
                .map(|v| format!("{key}={v}"))
        });
        value.unwrap_or_else(|| format!("client {}", lease.client))
    }

    fn refuse(&mut self, lease: &'a Lease, refusal: Refusal, estimate: Option<Estimate>) {
        let mut status = lease.status.clone();
        match refusal {
            Refusal::Condition {
                type_,
                reason,
                message,
                retry,
            } => {
                let message = match &estimate {
                    Some(estimate) => format!("{message}; {}", estimate.describe(self.now)),
                    None => message,
                };
                self.set_condition(lease, &mut status, type_, true, reason, message);
                if retry {
                    self.retry(lease.name.as_str());
                }
            }
            Refusal::Retry => self.retry(lease.name.as_str()),
        }
        status.queue_position = estimate.as_ref().map(|e| e.position);
        status.estimated_start = estimate
            .and_then(|e| e.start)
            .filter(|start| *start > self.now);
        let status = self.settle(lease, status);
        self.planned.insert(lease.name.as_str(), (lease, status));
    }

    /// Assigns one waiting lease an exporter, or tells it why not and where it stands.
    fn serve_one(&mut self, entry: &Entry<'a>, wanted: &BTreeSet<&str>, estimator: &mut Estimator) {
        let lease = entry.lease;
        let name = lease.name.as_str();
        let expected_end = started_expiry(&lease.spec, self.now);
        let mut held = 0;
        let mut not_ready = 0;
        let mut kept_for: Option<Claim<'a>> = None;
        let mut spot_only_wanted = false;
        let mut usable: Vec<Candidate<'a>> = Vec::new();
        for c in &entry.online {
            let exporter = c.exporter.name.as_str();
            if self.is_held(exporter) || self.preempting.get(exporter).is_some_and(|l| *l != name) {
                held += 1;
                continue;
            }
            if let Some(claim) = self.claims.get(exporter).and_then(|claims| {
                claims.iter().find(|claim| {
                    claim.lease != name && overlaps(claim.begin, claim.end, self.now, expected_end)
                })
            }) {
                kept_for = Some(claim.clone());
                continue;
            }
            if c.spot_access && wanted.contains(exporter) {
                spot_only_wanted = true;
                continue;
            }
            if !READY_EXPORTER_STATUSES.contains(&c.exporter.exporter_status.as_str()) {
                not_ready += 1;
                continue;
            }
            usable.push(*c);
        }
        usable.sort_by_key(|c| (c.spot_access, Reverse(c.priority), c.exporter.name.as_str()));
        if let Some(chosen) = usable.first() {
            let exporter = chosen.exporter.name.as_str();
            self.assigned
                .entry(exporter)
                .and_modify(|(spot, _)| *spot &= chosen.spot_access)
                .or_insert((chosen.spot_access, expected_end));
            self.preempting.retain(|_, waiting| *waiting != name);
            let mut status = lease.status.clone();
            status.exporter = Some(exporter.to_owned());
            status.priority = chosen.priority;
            status.spot_access = chosen.spot_access;
            status.idle_timeout = chosen.rule.and_then(|rule| rule.idle_timeout);
            let status = self.settle(lease, status);
            self.planned.insert(name, (lease, status));
            return;
        }

        let preempt_at = self.preempt_for(entry);
        let free_at = |exporter: &str| self.free_at(exporter, name, preempt_at);
        let candidates: Vec<&str> = entry
            .online
            .iter()
            .map(|c| c.exporter.name.as_str())
            .collect();
        let estimate = estimator.place(&candidates, free_at, requested_duration(&lease.spec));

        let online = entry.online.len();
        let first = entry.online[0].exporter.name.as_str();
        let (why, message) = if let Some((exporter, at)) = preempt_at {
            (
                reason::NOT_AVAILABLE,
                format!(
                    "Exporter {exporter} is held under spot access; it ends at {} and goes to \
                     this lease",
                    rfc3339(at)
                ),
            )
        } else if held == online {
            (
                reason::NOT_AVAILABLE,
                format!(
                    "There are {online} approved exporters, (i.e. {first}) but all of them are \
                     already leased"
                ),
            )
        } else if let Some(claim) = kept_for {
            (
                reason::NOT_AVAILABLE,
                format!(
                    "The free exporters are kept for booked leases (i.e. {} from {})",
                    claim.lease,
                    rfc3339(claim.begin)
                ),
            )
        } else if spot_only_wanted && not_ready == 0 {
            (
                reason::NOT_AVAILABLE,
                format!(
                    "The free exporters (i.e. {first}) are under spot access, which is only \
                     granted on exporters no other lease waits for"
                ),
            )
        } else {
            (
                reason::NOT_READY,
                format!(
                    "There are {} online exporters, but none are ready (still cleaning up \
                     previous lease)",
                    online - held
                ),
            )
        };
        let refusal = Refusal::Condition {
            type_: PENDING,
            reason: why,
            message,
            retry: true,
        };
        self.refuse(lease, refusal, Some(estimate));
    }

    /// Whether a non-ended lease holds `exporter`, or this plan assigned it.
    fn is_held(&self, exporter: &str) -> bool {
        self.assigned.contains_key(exporter) || self.namespace.holders(exporter).next().is_some()
    }

    /// When `exporter` is expected to be free for the lease `for_lease`.
    fn free_at(
        &self,
        exporter: &str,
        for_lease: &str,
        preempt_at: Option<(&str, OffsetDateTime)>,
    ) -> Option<OffsetDateTime> {
        if let Some((preempted, at)) = preempt_at
            && preempted == exporter
        {
            return Some(at);
        }
        if let Some((_, end)) = self.assigned.get(exporter) {
            return *end;
        }
        if self
            .preempting
            .get(exporter)
            .is_some_and(|l| *l != for_lease)
        {
            return None;
        }
        let mut free = self.now;
        for holder in self.namespace.holders(exporter) {
            let begin = holder.status.begin_time.unwrap_or(self.now);
            let end = started_expiry(&holder.spec, begin);
            let end = match (end, holder.status.preemption_time) {
                (Some(end), Some(notice)) => Some(end.min(notice)),
                (None, notice) => notice,
                (end, None) => end,
            };
            free = free.max(end?);
        }
        Some(free)
    }

    /// For a non-spot lease that found nothing free: the exporter it waits for after a spot
    /// holder, and when that holder's notice ends. Gives notice if no holder has it yet.
    fn preempt_for(&mut self, entry: &Entry<'a>) -> Option<(&'a str, OffsetDateTime)> {
        let name = entry.lease.name.as_str();
        let mut options: Vec<(&'a str, bool)> = Vec::new();
        for c in entry.online.iter().filter(|c| !c.spot_access) {
            let exporter = c.exporter.name.as_str();
            if self.assigned.contains_key(exporter) || self.preempting.contains_key(exporter) {
                continue;
            }
            let holders: Vec<&Lease> = self.namespace.holders(exporter).collect();
            if holders.is_empty() || !holders.iter().all(|h| h.status.spot_access) {
                continue;
            }
            let noticed = holders.iter().all(|h| h.status.preemption_time.is_some());
            options.push((exporter, noticed));
        }
        // An exporter already under notice first, then by name.
        options.sort_by_key(|(exporter, noticed)| (!noticed, *exporter));
        let (exporter, _) = *options.first()?;
        self.preempting.insert(exporter, name);
        let holders: Vec<&'a Lease> = self.namespace.holders(exporter).collect();
        for holder in holders {
            if holder.status.preemption_time.is_none() {
                self.notices.insert(holder.name.as_str(), (exporter, name));
            }
        }
        self.notice_end(exporter).map(|at| (exporter, at))
    }

    /// When the spot holders of `exporter` end: their notice, or the one to give now.
    fn notice_end(&self, exporter: &str) -> Option<OffsetDateTime> {
        let mut end = None::<OffsetDateTime>;
        for holder in self.namespace.holders(exporter) {
            let at = match holder.status.preemption_time {
                Some(at) => at,
                None => self.now.checked_add(self.grace_period(holder, exporter))?,
            };
            end = Some(end.map_or(at, |e| e.max(at)));
        }
        end
    }

    /// The grace period of the spot rules that admit `holder`'s client to `exporter`: the
    /// longest, or [`DEFAULT_SPOT_GRACE_PERIOD`].
    fn grace_period(&self, holder: &Lease, exporter: &str) -> Duration {
        let client = self.namespace.client(&holder.client);
        let exporter = self.namespace.exporter(exporter);
        let (Some(client), Some(exporter)) = (client, exporter) else {
            return DEFAULT_SPOT_GRACE_PERIOD;
        };
        admitting_rules(self.namespace.policies(), &exporter.labels, &client.labels)
            .filter(|rule| rule.spot_access)
            .filter_map(|rule| rule.spot_grace_period)
            .max()
            .unwrap_or(DEFAULT_SPOT_GRACE_PERIOD)
    }

    /// Writes the notices decided in this plan into the spot holders' statuses.
    fn give_notices(&mut self) {
        let notices = std::mem::take(&mut self.notices);
        for (holder_name, (exporter, by)) in notices {
            let Some(holder) = self
                .namespace
                .holders(exporter)
                .find(|h| h.name == holder_name)
            else {
                continue;
            };
            let base = match self.planned.get(holder_name) {
                Some((_, status)) => status.clone(),
                None => self.settle(holder, holder.status.clone()),
            };
            if base.ended || base.preemption_time.is_some() {
                continue;
            }
            let Some(at) = self.now.checked_add(self.grace_period(holder, exporter)) else {
                continue;
            };
            let mut status = base;
            status.preemption_time = Some(at);
            let message = format!(
                "Exporter {exporter} is needed by lease {by}, which is not spot access; this \
                 lease ends at {}",
                rfc3339(at)
            );
            self.set_condition(
                holder,
                &mut status,
                PREEMPTED,
                true,
                reason::PREEMPTED,
                message,
            );
            self.wake_at(holder_name, at);
            self.planned.insert(holder_name, (holder, status));
        }
    }

    /// The lease's admitted exporters and rank, or why it cannot be served; 0.9.0
    /// `reconcileStatusExporterRef` up to the online check.
    fn evaluate(&self, lease: &'a Lease) -> Result<Entry<'a>, Refusal> {
        let spec = &lease.spec;
        let invalid = |message: String| Refusal::Condition {
            type_: INVALID,
            reason: reason::INVALID_SELECTOR,
            message,
            retry: false,
        };
        let unsatisfiable = |reason: &'static str, message: String| Refusal::Condition {
            type_: UNSATISFIABLE,
            reason,
            message,
            retry: false,
        };

        if let Err(error) = selector::validate(&spec.selector) {
            return Err(invalid(format!(
                "The selector for the lease is invalid: {error}"
            )));
        }
        if spec.selector.is_empty() && spec.exporter_ref.is_none() {
            return Err(invalid(
                "The selector for the lease is empty, a selector is required".to_owned(),
            ));
        }

        let matching: Vec<&'a Exporter> = match &spec.exporter_ref {
            Some(name) => {
                let Some(exporter) = self.namespace.exporter(name) else {
                    return Err(unsatisfiable(
                        reason::EXPORTER_NOT_FOUND,
                        format!("Requested exporter {name} was not found"),
                    ));
                };
                if !spec.selector.is_empty() && !selector::matches(&spec.selector, &exporter.labels)
                {
                    return Err(unsatisfiable(
                        reason::SELECTOR_MISMATCH,
                        format!(
                            "Requested exporter {} does not match selector {}",
                            exporter.name,
                            selector::format(&spec.selector)
                        ),
                    ));
                }
                if !exporter.enabled && !spec.allow_disabled {
                    return Err(unsatisfiable(
                        reason::EXPORTER_DISABLED,
                        format!(
                            "Requested exporter {} is disabled. To lease a disabled exporter, set \
                             spec.allowDisabled: true on the Lease, or use --allow-disabled with \
                             jmp create lease",
                            exporter.name
                        ),
                    ));
                }
                vec![exporter]
            }
            None => {
                let listed: Vec<&Exporter> = self
                    .namespace
                    .exporters()
                    .filter(|e| selector::matches(&spec.selector, &e.labels))
                    .collect();
                let enabled: Vec<&Exporter> =
                    listed.iter().copied().filter(|e| e.enabled).collect();
                if enabled.is_empty() && !listed.is_empty() {
                    return Err(unsatisfiable(
                        reason::ALL_DISABLED,
                        format!(
                            "All {} exporters matching the selector are disabled",
                            listed.len()
                        ),
                    ));
                }
                enabled
            }
        };

        let Some(Approval {
            approved,
            unmatched,
        }) = self.approve(lease, &matching)
        else {
            return Err(Refusal::Retry);
        };
        if approved.is_empty() {
            let mut message = format!(
                "While there are {} exporters matching the selector, none of them are approved \
                 by any policy for your client",
                matching.len()
            );
            if !unmatched.is_empty() {
                message.push_str(". Matching policies: ");
                message.push_str(&cap(&unmatched.join("; ")));
            }
            return Err(unsatisfiable(reason::NO_ACCESS, message));
        }
        let online: Vec<Candidate<'a>> = approved
            .iter()
            .copied()
            .filter(|c| c.exporter.registered && c.exporter.online)
            .collect();
        // The best admitting rule gives the rank; the first such rule its fair share.
        let best = approved
            .iter()
            .max_by_key(|c| (c.priority, Reverse(c.exporter.name.as_str())))
            .copied();
        let priority = best.map_or(0, |c| c.priority);
        let priority = spec.priority.map_or(priority, |asked| asked.min(priority));
        let fair_share = best
            .and_then(|c| c.rule)
            .and_then(|r| r.fair_share.as_ref());
        Ok(Entry {
            lease,
            approved,
            online,
            priority,
            fair_share,
        })
    }

    /// Access policies: which (exporter, rule) pairs admit the lease's client. `None` when
    /// policies exist but the client is not in the snapshot (0.9.0 retries in that case).
    fn approve(&self, lease: &Lease, matching: &[&'a Exporter]) -> Option<Approval<'a>> {
        let policies = self.namespace.policies();
        if policies.is_empty() {
            let approved = matching
                .iter()
                .map(|&exporter| Candidate {
                    exporter,
                    rule: None,
                    priority: 0,
                    spot_access: false,
                })
                .collect();
            return Some(Approval {
                approved,
                unmatched: Vec::new(),
            });
        }
        let client = self.namespace.client(&lease.client)?;
        let requested = requested_duration(&lease.spec);
        let mut approved = Vec::new();
        let mut seen = BTreeSet::new();
        let mut unmatched = Vec::new();
        for &exporter in matching {
            for policy in policies {
                // A policy whose selector is malformed governs nothing.
                if selector::validate(&policy.exporter_selector).is_err()
                    || !selector::matches(&policy.exporter_selector, &exporter.labels)
                {
                    continue;
                }
                for rule in &policy.rules {
                    let mut client_matched = false;
                    for from in &rule.from {
                        if selector::validate(from).is_err()
                            || !selector::matches(from, &client.labels)
                        {
                            continue;
                        }
                        client_matched = true;
                        if rule.maximum_duration.is_some_and(|max| requested > max) {
                            continue;
                        }
                        approved.push(Candidate {
                            exporter,
                            rule: Some(rule),
                            priority: rule.priority,
                            spot_access: rule.spot_access,
                        });
                    }
                    if !client_matched
                        && !rule.description.is_empty()
                        && seen.insert(rule.description.as_str())
                    {
                        unmatched.push(rule.description.clone());
                    }
                }
            }
        }
        Some(Approval {
            approved,
            unmatched,
        })
    }
}

struct Approval<'a> {
    /// Every admitting (exporter, rule) pair, in exporter, policy, rule order.
    approved: Vec<Candidate<'a>>,
    /// Descriptions of rules for matching exporters whose client selectors did not match.
    unmatched: Vec<String>,
}

/// The rules of `policies` that admit a client with `client_labels` to an exporter with
/// `exporter_labels` (duration limits aside).
fn admitting_rules<'p>(
    policies: &'p [AccessPolicy],
    exporter_labels: &'p BTreeMap<String, String>,
    client_labels: &'p BTreeMap<String, String>,
) -> impl Iterator<Item = &'p AccessRule> {
    policies
        .iter()
        .filter(|p| {
            selector::validate(&p.exporter_selector).is_ok()
                && selector::matches(&p.exporter_selector, exporter_labels)
        })
        .flat_map(|p| p.rules.iter())
        .filter(|rule| {
            rule.from.iter().any(|from| {
                selector::validate(from).is_ok() && selector::matches(from, client_labels)
            })
        })
}

/// Since when a waiting lease has been waiting, for aging: its creation, or its requested
/// begin time if later.
fn waiting_since(lease: &Lease) -> OffsetDateTime {
    match lease.spec.begin_time {
        Some(begin) if begin > lease.creation_time => begin,
        _ => lease.creation_time,
    }
}

/// Whether `[a_begin, a_end)` and `[b_begin, b_end)` overlap; `None` ends never.
fn overlaps(
    a_begin: OffsetDateTime,
    a_end: Option<OffsetDateTime>,
    b_begin: OffsetDateTime,
    b_end: Option<OffsetDateTime>,
) -> bool {
    a_end.is_none_or(|end| b_begin < end) && b_end.is_none_or(|end| a_begin < end)
}

/// RFC 3339, as Kubernetes writes times; the debug form if the year cannot be written.
pub(crate) fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_else(|_| format!("{at}"))
}

/// When a started lease under an idle timeout ends for want of activity: its last recorded
/// activity (or its start) plus the timeout plus the [`activity_interval`] the record may
/// lag by, so it never ends before the timeout has passed without activity.
fn idle_end(status: &LeaseStatus) -> Option<OffsetDateTime> {
    let timeout = status.idle_timeout?;
    let begin = status.begin_time?;
    let since = status.last_activity.map_or(begin, |last| last.max(begin));
    since.checked_add(timeout + activity_interval(timeout))
}

fn end(status: &mut LeaseStatus, now: OffsetDateTime) {
    status.ended = true;
    status.end_time = Some(now);
}

/// The duration a lease asks for, as policies measure it: `spec.duration`, else
/// `endTime - beginTime`, else zero.
fn requested_duration(spec: &LeaseSpec) -> Duration {
    match (spec.duration, spec.begin_time, spec.end_time) {
        (Some(duration), _, _) => duration,
        (None, Some(begin), Some(end)) => end - begin,
        _ => Duration::ZERO,
    }
}

/// When a started lease expires: `spec.endTime`, else `spec.beginTime + duration`, else
/// `status.beginTime + duration`. Without any of them it expires at once, as in 0.9.0.
/// `None` means never (the sum is beyond the representable range).
pub fn started_expiry(spec: &LeaseSpec, begin: OffsetDateTime) -> Option<OffsetDateTime> {
    match (spec.end_time, spec.begin_time, spec.duration) {
        (Some(end), _, _) => Some(end),
        (None, Some(requested_begin), Some(duration)) => requested_begin.checked_add(duration),
        (None, None, Some(duration)) => begin.checked_add(duration),
        (None, _, None) => Some(begin),
    }
}

/// The end of the window the spec asks for, if it asks for one explicitly.
fn window_end(spec: &LeaseSpec) -> Option<OffsetDateTime> {
    match (spec.end_time, spec.begin_time, spec.duration) {
        (Some(end), _, _) => Some(end),
        (None, Some(begin), Some(duration)) => begin.checked_add(duration),
        _ => None,
    }
}

/// A lease whose requested window has already passed is not given an exporter; it ends as
/// expired instead of being assigned and expired in the same breath as 0.9.0 would.
fn window_closed(spec: &LeaseSpec, now: OffsetDateTime) -> bool {
    window_end(spec).is_some_and(|end| end <= now)
}

/// Cuts `text` to [`MAX_DESCRIPTIONS_LEN`] bytes (on a character boundary) plus `...`.
fn cap(text: &str) -> String {
    if text.len() <= MAX_DESCRIPTIONS_LEN {
        return text.to_owned();
    }
    let mut cut = MAX_DESCRIPTIONS_LEN;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &text[..cut])
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use time::{Duration, OffsetDateTime};

    use super::*;
    use crate::scheduler::snapshot::{AccessPolicy, AccessRule};
    use crate::selector::{LabelSelector, parse};

    fn t(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + seconds).expect("valid")
    }

    fn labels(text: &str) -> BTreeMap<String, String> {
        parse(text).expect("labels").match_labels
    }

    fn exporter(name: &str, label_text: &str) -> Exporter {
        Exporter {
            name: name.to_owned(),
            labels: labels(label_text),
            enabled: true,
            registered: true,
            online: true,
            exporter_status: "Available".to_owned(),
        }
    }

    fn lease(name: &str, created: i64, selector: &str, seconds: i64) -> Lease {
        Lease {
            name: name.to_owned(),
            uid: Some(format!("uid-{name}")),
            generation: 1,
            creation_time: t(created),
            client: "c1".to_owned(),
            spec: LeaseSpec {
                selector: parse(selector).expect("selector"),
                duration: Some(Duration::seconds(seconds)),
                ..LeaseSpec::default()
            },
            status: LeaseStatus::default(),
        }
    }

    fn snapshot(exporters: Vec<Exporter>, leases: Vec<Lease>) -> Snapshot {
        Snapshot {
            exporters,
            clients: vec![Client {
                name: "c1".to_owned(),
                labels: labels("team=a"),
            }],
            leases,
            policies: Vec::new(),
            settings: Settings::default(),
        }
    }

    fn apply(snapshot: &mut Snapshot, plan: &Plan) {
        for update in &plan.updates {
            let lease = snapshot
                .leases
                .iter_mut()
                .find(|l| l.name == update.name)
                .expect("planned lease exists");
            lease.status = update.status.clone();
        }
    }

    fn status<'p>(plan: &'p Plan, name: &str) -> &'p LeaseStatus {
        &plan
            .updates
            .iter()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("no update for {name}"))
            .status
    }

    fn summary(status: &LeaseStatus) -> Vec<(String, ConditionStatus, String)> {
        status
            .conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status, c.reason.clone()))
            .collect()
    }

    fn only_condition(plan: &Plan, name: &str) -> Condition {
        let status = status(plan, name);
        assert_eq!(status.conditions.len(), 1, "{:?}", status.conditions);
        status.conditions[0].clone()
    }

    fn cond(type_: &str, value: bool, reason: &str) -> (String, ConditionStatus, String) {
        (type_.to_owned(), value.into(), reason.to_owned())
    }

    #[test]
    fn assigns_at_once_and_wakes_at_expiry() {
        let snap = snapshot(
            vec![exporter("exp1", "board=mock")],
            vec![lease("l1", 0, "board=mock", 8)],
        );
        let plan = plan(&snap, t(10));
        let s = status(&plan, "l1");
        assert_eq!(s.exporter.as_deref(), Some("exp1"));
        assert_eq!(s.begin_time, Some(t(10)));
        assert!(!s.ended);
        assert_eq!(s.priority, 0);
        assert!(!s.spot_access);
        let ready = &s.conditions[0];
        assert_eq!(summary(s), vec![cond(READY, true, "Ready")]);
        assert_eq!(
            ready.message,
            "An exporter has been acquired for the client"
        );
        assert_eq!(ready.last_transition_time, t(10));
        assert_eq!(ready.observed_generation, 1);
        assert_eq!(plan.next_wakeup, Some(t(18)));
    }

    #[test]
    fn queued_lease_gets_pending_then_ready_in_that_order() {
        let mut snap = snapshot(
            vec![exporter("exp1", "board=mock")],
            vec![
                lease("first", 0, "board=mock", 60),
                lease("second", 1, "board=mock", 60),
            ],
        );
        let p = plan(&snap, t(5));
        assert_eq!(status(&p, "first").exporter.as_deref(), Some("exp1"));
        let pending = only_condition(&p, "second");
        assert_eq!(pending.type_, PENDING);
        assert_eq!(pending.reason, "NotAvailable");
        assert_eq!(
            pending.message,
            "There are 1 approved exporters, (i.e. exp1) but all of them are already leased; \
             position 1 in the queue, estimated start 2023-11-14T22:14:25Z"
        );
        assert_eq!(status(&p, "second").queue_position, Some(1));
        assert_eq!(status(&p, "second").estimated_start, Some(t(65)));
        assert_eq!(p.next_wakeup, Some(t(6)));
        apply(&mut snap, &p);

        // Nothing changed: nothing to write.
        let p = plan(&snap, t(6));
        assert!(p.updates.is_empty(), "{:?}", p.updates);
        assert_eq!(p.next_wakeup, Some(t(7)));

        // The first lease is released; its exporter is only offered by the next plan.
        snap.leases[0].spec.release = true;
        let p = plan(&snap, t(7));
        let first = status(&p, "first");
        assert!(first.ended);
        assert_eq!(first.end_time, Some(t(7)));
        let ready = &first.conditions[0];
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            (ConditionStatus::False, "Released")
        );
        assert_eq!(ready.message, "The lease was marked for release");
        assert_eq!(ready.last_transition_time, t(7));
        assert!(p.updates.iter().all(|u| u.name != "second"));
        apply(&mut snap, &p);

        let p = plan(&snap, t(8));
        let second = status(&p, "second");
        assert_eq!(second.exporter.as_deref(), Some("exp1"));
        assert_eq!(
            summary(second),
            vec![
                cond(PENDING, true, "NotAvailable"),
                cond(READY, true, "Ready")
            ]
        );
        // Pending keeps its original transition time: it never flipped.
        assert_eq!(second.conditions[0].last_transition_time, t(5));
        assert_eq!(
            (second.queue_position, second.estimated_start),
            (None, None)
        );
        assert_eq!(p.next_wakeup, Some(t(68)));
    }

    #[test]
    fn oldest_lease_is_served_first() {
        // Listed youngest first; creation time decides, then the name.
        let snap = snapshot(
            vec![exporter("exp1", "board=mock")],
            vec![
                lease("young", 30, "board=mock", 60),
                lease("b-old", 10, "board=mock", 60),
                lease("a-old", 10, "board=mock", 60),
            ],
        );
        let p = plan(&snap, t(40));
        assert_eq!(status(&p, "a-old").exporter.as_deref(), Some("exp1"));
        assert_eq!(status(&p, "b-old").exporter, None);
        assert_eq!(status(&p, "young").exporter, None);
        let names: Vec<&str> = p.updates.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["a-old", "b-old", "young"]);
    }

    #[test]
    fn several_exporters_are_shared_out_in_name_order() {
        let snap = snapshot(
            vec![
                exporter("exp-b", "board=mock"),
                exporter("exp-a", "board=mock"),
            ],
            vec![
                lease("l1", 0, "board=mock", 60),
                lease("l2", 1, "board=mock", 60),
            ],
        );
        let p = plan(&snap, t(5));
        assert_eq!(status(&p, "l1").exporter.as_deref(), Some("exp-a"));
        assert_eq!(status(&p, "l2").exporter.as_deref(), Some("exp-b"));
    }

    fn policy(exporters: &str, rules: Vec<AccessRule>) -> AccessPolicy {
        AccessPolicy {
            exporter_selector: parse(exporters).expect("selector"),
            rules,
        }
    }

    fn rule(clients: &str, priority: i64, spot_access: bool) -> AccessRule {
        AccessRule {
            description: format!("rule for {clients}"),
            priority,
            from: vec![parse(clients).expect("selector")],
            maximum_duration: None,
            spot_access,
            ..AccessRule::default()
        }
    }

    #[test]
    fn higher_priority_beats_name() {
        let mut snap = snapshot(
            vec![
                exporter("a", "board=mock"),
                exporter("b", "board=mock,fast=yes"),
            ],
            vec![lease("l1", 0, "board=mock", 60)],
        );
        snap.policies = vec![
            policy("board=mock", vec![rule("team=a", 1, false)]),
            policy("fast=yes", vec![rule("team=a", 5, false)]),
        ];
        let p = plan(&snap, t(1));
        let s = status(&p, "l1");
        assert_eq!(s.exporter.as_deref(), Some("b"));
        assert_eq!(s.priority, 5);
    }

    #[test]
    fn free_exporters_come_before_leased_ones_and_non_spot_before_spot() {
        let mut snap = snapshot(
            vec![
                exporter("a", "board=mock"),
                exporter("b", "board=mock,spot=yes"),
            ],
            vec![lease("l1", 0, "board=mock", 60)],
        );
        snap.policies = vec![
            policy("spot!=yes", vec![rule("team=a", 0, false)]),
            policy("spot=yes", vec![rule("team=a", 9, true)]),
        ];
        // `a` is non-spot, so it wins over the higher-priority spot rule on `b`.
        let p = plan(&snap, t(1));
        assert_eq!(status(&p, "l1").exporter.as_deref(), Some("a"));

        // With `a` leased, the best free option is spot access on `b`, which no lease waits
        // for under regular access: granted as spot.
        let mut holder = lease("holder", -5, "board=mock", 60);
        holder.status.exporter = Some("a".to_owned());
        holder.status.begin_time = Some(t(-5));
        snap.leases.push(holder);
        let p = plan(&snap, t(1));
        let l1 = status(&p, "l1");
        assert_eq!(l1.exporter.as_deref(), Some("b"));
        assert!(l1.spot_access);
        assert_eq!(l1.priority, 9);
    }

    #[test]
    fn spot_access_is_not_granted_on_an_exporter_a_regular_lease_waits_for() {
        let mut snap = snapshot(
            vec![exporter("a", "board=mock"), exporter("b", "board=mock")],
            vec![
                lease("regular", 0, "board=mock", 60),
                lease("spot", 1, "board=mock", 60),
            ],
        );
        snap.clients.push(Client {
            name: "c2".to_owned(),
            labels: labels("team=spot"),
        });
        snap.leases[1].client = "c2".to_owned();
        snap.policies = vec![policy(
            "board=mock",
            vec![rule("team=a", 0, false), rule("team=spot", 0, true)],
        )];
        // `a` is held; the regular lease waits for it too and gets `b`... then the spot lease
        // finds nothing that no regular lease wants.
        let mut holder = lease("holder", -5, "board=mock", 600);
        holder.status.exporter = Some("a".to_owned());
        holder.status.begin_time = Some(t(-5));
        snap.leases.push(holder);
        let p = plan(&snap, t(1));
        assert_eq!(status(&p, "regular").exporter.as_deref(), Some("b"));
        let c = only_condition(&p, "spot");
        assert_eq!(
            (c.type_.as_str(), c.reason.as_str()),
            (PENDING, "NotAvailable")
        );
        assert_eq!(status(&p, "spot").exporter, None);
    }

    #[test]
    fn spot_holder_gets_notice_then_ends_as_preempted() {
        let mut snap = snapshot(
            vec![exporter("a", "board=mock")],
            vec![lease("l1", 0, "board=mock", 60)],
        );
        let mut holder = lease("holder", -5, "board=mock", 600);
        holder.status.exporter = Some("a".to_owned());
        holder.status.begin_time = Some(t(-5));
        holder.status.spot_access = true;
        holder.status.conditions = vec![Condition {
            type_: READY.to_owned(),
            status: ConditionStatus::True,
            observed_generation: 1,
            last_transition_time: t(-5),
            reason: "Ready".to_owned(),
            message: "An exporter has been acquired for the client".to_owned(),
        }];
        snap.leases.push(holder);
        let p = plan(&snap, t(1));
        let c = only_condition(&p, "l1");
        assert_eq!(
            (c.type_.as_str(), c.reason.as_str()),
            (PENDING, "NotAvailable")
        );
        assert_eq!(
            c.message,
            "Exporter a is held under spot access; it ends at 2023-11-14T22:14:21Z and goes to \
             this lease; position 1 in the queue, estimated start 2023-11-14T22:14:21Z"
        );
        let noticed = status(&p, "holder");
        assert_eq!(noticed.preemption_time, Some(t(61)));
        assert!(!noticed.ended);
        let notice = noticed.conditions.last().expect("notice");
        assert_eq!(
            (notice.type_.as_str(), notice.reason.as_str()),
            ("Preempted", "Preempted")
        );
        assert_eq!(
            notice.message,
            "Exporter a is needed by lease l1, which is not spot access; this lease ends at \
             2023-11-14T22:14:21Z"
        );
        assert_eq!(p.next_wakeup, Some(t(2)));
        apply(&mut snap, &p);

        // Later plans keep the notice as it is.
        let p = plan(&snap, t(30));
        assert!(p.updates.is_empty(), "{:?}", p.updates);
        // The notice runs out: the holder ends as preempted; the exporter goes to l1 next.
        let p = plan(&snap, t(61));
        let ended = status(&p, "holder");
        assert!(ended.ended);
        assert_eq!(ended.end_time, Some(t(61)));
        let ready = &ended.conditions[0];
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            (ConditionStatus::False, "Preempted")
        );
        apply(&mut snap, &p);
        let p = plan(&snap, t(62));
        assert_eq!(status(&p, "l1").exporter.as_deref(), Some("a"));
    }

    #[test]
    fn a_lease_without_activity_for_its_rules_idle_timeout_ends_as_idle() {
        let mut snap = snapshot(
            vec![exporter("a", "board=mock")],
            vec![lease("l1", 0, "board=mock", 3600)],
        );
        let mut idle = rule("team=a", 0, false);
        idle.idle_timeout = Some(Duration::minutes(2));
        snap.policies = vec![policy("board=mock", vec![idle])];
        let p = plan(&snap, t(0));
        let granted = status(&p, "l1");
        assert_eq!(granted.idle_timeout, Some(Duration::minutes(2)));
        // The timeout plus the 20 s the recorded activity may lag by.
        assert_eq!(p.next_wakeup, Some(t(140)));
        apply(&mut snap, &p);

        // Activity recorded at 100 s moves the end to 240 s.
        snap.leases[0].status.last_activity = Some(t(100));
        assert!(plan(&snap, t(139)).updates.is_empty());
        let p = plan(&snap, t(140));
        assert!(p.updates.is_empty(), "{:?}", p.updates);
        assert_eq!(p.next_wakeup, Some(t(240)));
        let p = plan(&snap, t(240));
        let ended = status(&p, "l1");
        assert!(ended.ended);
        assert_eq!(ended.end_time, Some(t(240)));
        let ready = &ended.conditions[0];
        assert_eq!(
            (ready.status, ready.reason.as_str(), ready.message.as_str()),
            (
                ConditionStatus::False,
                "Idle",
                "The lease was released: no session for 2m0s (the idle timeout of the access \
                 policy rule that granted it)"
            )
        );
    }

    #[test]
    fn without_an_idle_timeout_a_lease_runs_to_its_end() {
        let mut snap = snapshot(
            vec![exporter("a", "board=mock")],
            vec![lease("l1", 0, "board=mock", 3600)],
        );
        snap.policies = vec![policy("board=mock", vec![rule("team=a", 0, false)])];
        let p = plan(&snap, t(0));
        assert_eq!(status(&p, "l1").idle_timeout, None);
        assert_eq!(p.next_wakeup, Some(t(3600)));
    }

    #[test]
    fn a_rule_sets_the_grace_period() {
        let mut snap = snapshot(
            vec![exporter("a", "board=mock")],
            vec![lease("l1", 0, "board=mock", 60)],
        );
        snap.clients.push(Client {
            name: "c2".to_owned(),
            labels: labels("team=spot"),
        });
        let mut spot_rule = rule("team=spot", 0, true);
        spot_rule.spot_grace_period = Some(Duration::seconds(5));
        snap.policies = vec![policy(
            "board=mock",
            vec![rule("team=a", 0, false), spot_rule],
        )];
        let mut holder = lease("holder", -5, "board=mock", 600);
        holder.client = "c2".to_owned();
        holder.status.exporter = Some("a".to_owned());
        holder.status.begin_time = Some(t(-5));
        holder.status.spot_access = true;
        snap.leases.push(holder);
        let p = plan(&snap, t(1));
        assert_eq!(status(&p, "holder").preemption_time, Some(t(6)));
    }

    #[test]
    fn higher_priority_goes_first_and_a_request_can_only_lower_it() {
        let mut snap = snapshot(
            vec![exporter("a", "board=mock")],
            vec![
                lease("old-low", 0, "board=mock", 60),
                lease("new-high", 5, "board=mock", 60),
            ],
        );
        snap.clients.push(Client {
            name: "vip".to_owned(),
            labels: labels("team=vip"),
        });
        snap.leases[1].client = "vip".to_owned();
        snap.policies = vec![policy(
            "board=mock",
            vec![rule("team=a", 1, false), rule("team=vip", 10, false)],
        )];
        let p = plan(&snap, t(6));
        assert_eq!(status(&p, "new-high").exporter.as_deref(), Some("a"));
        assert_eq!(status(&p, "new-high").priority, 10);
        assert_eq!(status(&p, "old-low").exporter, None);

        // Asking for a priority above the rule's changes nothing; below it, it ranks lower.
        snap.leases[0].spec.priority = Some(50);
        assert_eq!(
            status(&plan(&snap, t(6)), "new-high").exporter.as_deref(),
            Some("a")
        );
        snap.leases[1].spec.priority = Some(0);
        assert_eq!(
            status(&plan(&snap, t(6)), "old-low").exporter.as_deref(),
            Some("a")
        );
    }

    #[test]
    fn aging_lets_an_old_low_priority_lease_overtake() {
        let mut snap = snapshot(
            vec![exporter("a", "board=mock")],
            vec![
                lease("old-low", 0, "board=mock", 60),
                lease("new-high", 100, "board=mock", 60),
            ],
        );
        snap.clients.push(Client {
            name: "vip".to_owned(),
            labels: labels("team=vip"),
        });
        snap.leases[1].client = "vip".to_owned();
        snap.policies = vec![policy(
            "board=mock",
            vec![rule("team=a", 0, false), rule("team=vip", 1, false)],
        )];
        snap.settings.aging_interval = Some(Duration::seconds(60));
        // At 110 s old-low has aged one step (1), new-high none (1): a tie, the older wins.
        let p = plan(&snap, t(110));
        assert_eq!(status(&p, "old-low").exporter.as_deref(), Some("a"));
        // Without aging the priority alone decides.
        snap.settings.aging_interval = None;
        let p = plan(&snap, t(110));
        assert_eq!(status(&p, "new-high").exporter.as_deref(), Some("a"));
    }

    #[test]
    fn a_booking_keeps_its_exporter_from_its_begin_time() {
        let mut booked = lease("booked", 0, "", 60);
        booked.spec.exporter_ref = Some("a".to_owned());
        booked.spec.begin_time = Some(t(100));
        let snap = snapshot(
            vec![exporter("a", "board=mock")],
            vec![
                booked,
                lease("long", 1, "board=mock", 200),
                lease("short", 2, "board=mock", 50),
            ],
        );
        // `long` would still hold `a` at 100; `short` (ending at 60) fits before.
        let p = plan(&snap, t(10));
        assert_eq!(status(&p, "short").exporter.as_deref(), Some("a"));
        let c = only_condition(&p, "long");
        assert_eq!(
            (c.type_.as_str(), c.reason.as_str()),
            (PENDING, "NotAvailable")
        );
        assert!(p.updates.iter().all(|u| u.name != "booked"));
        assert_eq!(p.next_wakeup, Some(t(11)));

        // With `a` free at the begin time, the booking gets it before the older `long`.
        let mut snap = snap;
        snap.leases.retain(|l| l.name != "short");
        let p = plan(&snap, t(100));
        assert_eq!(status(&p, "booked").exporter.as_deref(), Some("a"));
        assert_eq!(status(&p, "long").exporter, None);
    }

    #[test]
    fn fair_share_serves_the_client_holding_fewer_first() {
        let mut snap = snapshot(
            vec![exporter("a", "board=mock"), exporter("b", "board=mock")],
            vec![
                lease("c1-old", 0, "board=mock", 60),
                lease("c2-new", 5, "board=mock", 60),
            ],
        );
        snap.clients.push(Client {
            name: "c2".to_owned(),
            labels: labels("team=a"),
        });
        snap.leases[1].client = "c2".to_owned();
        let mut shared = rule("team=a", 0, false);
        shared.fair_share = Some(FairShare::default());
        snap.policies = vec![policy("board=mock", vec![shared])];
        // c1 already holds `b`: c2's newer lease goes first.
        let mut holder = lease("c1-holds", -5, "board=mock", 600);
        holder.status.exporter = Some("b".to_owned());
        holder.status.begin_time = Some(t(-5));
        snap.leases.push(holder);
        let p = plan(&snap, t(6));
        assert_eq!(status(&p, "c2-new").exporter.as_deref(), Some("a"));
        assert_eq!(status(&p, "c1-old").exporter, None);
        // Without fair share, the older lease goes first.
        snap.policies[0].rules[0].fair_share = None;
        let p = plan(&snap, t(6));
        assert_eq!(status(&p, "c1-old").exporter.as_deref(), Some("a"));
    }

    /// Plans one lease against `exporters` and returns its single condition.
    fn single(exporters: Vec<Exporter>, lease: Lease) -> (Condition, Plan) {
        let snap = snapshot(exporters, vec![lease]);
        let p = plan(&snap, t(1));
        (only_condition(&p, "l1"), p)
    }

    fn assert_final(p: &Plan, c: &Condition, type_: &str, reason: &str) {
        assert_eq!(
            (c.type_.as_str(), c.reason.as_str()),
            (type_, reason),
            "{}",
            c.message
        );
        assert_eq!(c.status, ConditionStatus::True);
        let s = status(p, "l1");
        assert!(s.ended);
        assert_eq!(s.end_time, Some(t(1)));
        assert_eq!(s.exporter, None);
        assert_eq!(p.next_wakeup, None);
    }

    fn pinned(to: &str, selector: &str) -> Lease {
        let mut l = lease("l1", 0, selector, 60);
        l.spec.exporter_ref = Some(to.to_owned());
        l
    }

    #[test]
    fn pinned_lease_reasons() {
        let (c, p) = single(vec![exporter("a", "board=mock")], pinned("missing", ""));
        assert_final(&p, &c, UNSATISFIABLE, "ExporterNotFound");
        assert_eq!(c.message, "Requested exporter missing was not found");

        let (c, p) = single(
            vec![exporter("a", "board=mock")],
            pinned("a", "board=rpi,x"),
        );
        assert_final(&p, &c, UNSATISFIABLE, "SelectorMismatch");
        assert_eq!(
            c.message,
            "Requested exporter a does not match selector board=rpi,x"
        );

        let mut disabled = exporter("a", "board=mock");
        disabled.enabled = false;
        let (c, p) = single(vec![disabled.clone()], pinned("a", ""));
        assert_final(&p, &c, UNSATISFIABLE, "ExporterDisabled");
        assert!(
            c.message
                .starts_with("Requested exporter a is disabled. To lease"),
            "{}",
            c.message
        );

        let mut allowed = pinned("a", "board=mock");
        allowed.spec.allow_disabled = true;
        let p = plan(&snapshot(vec![disabled], vec![allowed]), t(1));
        assert_eq!(status(&p, "l1").exporter.as_deref(), Some("a"));
    }

    #[test]
    fn selector_lease_reasons() {
        let mut disabled = exporter("a", "board=mock");
        disabled.enabled = false;
        let (c, p) = single(vec![disabled.clone()], lease("l1", 0, "board=mock", 60));
        assert_final(&p, &c, UNSATISFIABLE, "AllDisabled");
        assert_eq!(
            c.message,
            "All 1 exporters matching the selector are disabled"
        );

        // Nothing matches at all: 0.9.0 reports NoAccess with a count of zero.
        let (c, p) = single(vec![disabled], lease("l1", 0, "board=rpi", 60));
        assert_final(&p, &c, UNSATISFIABLE, "NoAccess");
        assert_eq!(
            c.message,
            "While there are 0 exporters matching the selector, none of them are approved by \
             any policy for your client"
        );

        let (c, p) = single(vec![exporter("a", "board=mock")], lease("l1", 0, "", 60));
        assert_final(&p, &c, INVALID, "InvalidSelector");
        assert_eq!(
            c.message,
            "The selector for the lease is empty, a selector is required"
        );

        let mut malformed = lease("l1", 0, "", 60);
        malformed.spec.selector = LabelSelector {
            match_labels: labels("board=mock"),
            match_expressions: vec![crate::selector::Requirement {
                key: "k".to_owned(),
                operator: crate::selector::Operator::In,
                values: Vec::new(),
            }],
        };
        let (c, p) = single(vec![exporter("a", "board=mock")], malformed);
        assert_final(&p, &c, INVALID, "InvalidSelector");
        assert!(
            c.message
                .starts_with("The selector for the lease is invalid: "),
            "{}",
            c.message
        );
    }

    #[test]
    fn access_policy_reasons() {
        let mut snap = snapshot(
            vec![exporter("a", "board=mock")],
            vec![lease("l1", 0, "board=mock", 7200)],
        );
        let mut other_team = rule("team=b", 0, false);
        other_team.description = "lab team only".to_owned();
        let mut short = rule("team=a", 0, false);
        short.description = "short leases".to_owned();
        short.maximum_duration = Some(Duration::hours(1));
        snap.policies = vec![policy("", vec![other_team.clone(), other_team, short])];
        let p = plan(&snap, t(1));
        let c = only_condition(&p, "l1");
        assert_final(&p, &c, UNSATISFIABLE, "NoAccess");
        // The over-long request matched `short`'s clients, so only the other rule is quoted,
        // once.
        assert_eq!(
            c.message,
            "While there are 1 exporters matching the selector, none of them are approved by \
             any policy for your client. Matching policies: lab team only"
        );

        // Within the maximum duration the rule admits the client.
        snap.leases[0].spec.duration = Some(Duration::minutes(30));
        let p = plan(&snap, t(1));
        assert_eq!(status(&p, "l1").exporter.as_deref(), Some("a"));

        // Policies exist but the client is unknown: retry without writing anything.
        snap.clients.clear();
        let p = plan(&snap, t(1));
        assert!(p.updates.is_empty());
        assert_eq!(p.next_wakeup, Some(t(2)));
    }

    #[test]
    fn pending_reasons() {
        let mut unregistered = exporter("a", "board=mock");
        unregistered.registered = false;
        let mut offline = exporter("b", "board=mock");
        offline.online = false;
        let (c, p) = single(
            vec![unregistered, offline],
            lease("l1", 0, "board=mock", 60),
        );
        assert_eq!((c.type_.as_str(), c.reason.as_str()), (PENDING, "Offline"));
        assert_eq!(
            c.message,
            "While there are 2 available exporters (i.e. a), none of them are online"
        );
        assert!(!status(&p, "l1").ended);
        assert_eq!(p.next_wakeup, Some(t(2)));

        let mut busy = exporter("a", "board=mock");
        busy.exporter_status = "AfterLeaseHook".to_owned();
        let (c, p) = single(vec![busy], lease("l1", 0, "board=mock", 60));
        assert_eq!((c.type_.as_str(), c.reason.as_str()), (PENDING, "NotReady"));
        assert_eq!(
            c.message,
            "There are 1 online exporters, but none are ready (still cleaning up previous \
             lease); position 1 in the queue"
        );
        assert_eq!(p.next_wakeup, Some(t(2)));

        for accepted in ["", "Unspecified", "Available"] {
            let mut e = exporter("a", "board=mock");
            e.exporter_status = accepted.to_owned();
            let p = plan(
                &snapshot(vec![e], vec![lease("l1", 0, "board=mock", 60)]),
                t(1),
            );
            assert_eq!(
                status(&p, "l1").exporter.as_deref(),
                Some("a"),
                "{accepted:?}"
            );
        }
    }

    #[test]
    fn pinned_lease_waits_for_a_held_exporter() {
        let mut holder = lease("holder", -5, "board=mock", 60);
        holder.status.exporter = Some("a".to_owned());
        holder.status.begin_time = Some(t(-5));
        // The pinned lease is older than the holder: it still must not share the exporter.
        let mut l = pinned("a", "");
        l.creation_time = t(-10);
        let snap = snapshot(vec![exporter("a", "board=mock")], vec![holder, l]);
        let p = plan(&snap, t(1));
        assert_eq!(status(&p, "l1").exporter, None);
        assert_eq!(only_condition(&p, "l1").reason, "NotAvailable");
    }

    #[test]
    fn expires_at_spec_end_time() {
        let mut l = lease("l1", 0, "board=mock", 0);
        l.spec.duration = Some(Duration::seconds(10));
        l.spec.begin_time = Some(t(0));
        l.spec.end_time = Some(t(10));
        let mut snap = snapshot(vec![exporter("a", "board=mock")], vec![l]);
        let p = plan(&snap, t(2));
        assert_eq!(p.next_wakeup, Some(t(10)));
        apply(&mut snap, &p);
        let p = plan(&snap, t(9));
        assert!(p.updates.is_empty());
        assert_eq!(p.next_wakeup, Some(t(10)));
        let p = plan(&snap, t(10));
        let s = status(&p, "l1");
        assert!(s.ended);
        assert_eq!(s.end_time, Some(t(10)));
        assert_eq!(s.exporter.as_deref(), Some("a"));
        assert_eq!(summary(s), vec![cond(READY, false, "Expired")]);
        assert_eq!(s.conditions[0].message, "The lease has expired");
        assert_eq!(s.conditions[0].last_transition_time, t(10));
        assert_eq!(p.next_wakeup, None);
    }

    #[test]
    fn scheduled_lease_waits_for_begin_and_expires_at_begin_plus_duration() {
        let mut l = lease("l1", 0, "board=mock", 30);
        l.spec.begin_time = Some(t(100));
        let mut snap = snapshot(vec![exporter("a", "board=mock")], vec![l]);
        let p = plan(&snap, t(1));
        assert!(p.updates.is_empty());
        assert_eq!(p.next_wakeup, Some(t(100)));
        // Assigned a little late: the expiry stays at the requested begin + duration.
        let p = plan(&snap, t(103));
        assert_eq!(status(&p, "l1").begin_time, Some(t(103)));
        assert_eq!(p.next_wakeup, Some(t(130)));
        apply(&mut snap, &p);
        let p = plan(&snap, t(130));
        assert!(status(&p, "l1").ended);
    }

    #[test]
    fn immediate_lease_expires_at_status_begin_plus_duration() {
        let mut snap = snapshot(
            vec![exporter("a", "board=mock")],
            vec![lease("l1", 0, "board=mock", 8)],
        );
        let p = plan(&snap, t(3));
        apply(&mut snap, &p);
        let p = plan(&snap, t(10));
        assert!(p.updates.is_empty());
        assert_eq!(p.next_wakeup, Some(t(11)));
        let p = plan(&snap, t(11));
        assert_eq!(
            summary(status(&p, "l1")),
            vec![cond(READY, false, "Expired")]
        );
    }

    #[test]
    fn window_that_passed_while_pending_ends_without_an_exporter() {
        let mut busy = exporter("a", "board=mock");
        busy.online = false;
        let mut l = lease("l1", 0, "board=mock", 10);
        l.spec.begin_time = Some(t(0));
        let mut snap = snapshot(vec![busy], vec![l]);
        let p = plan(&snap, t(1));
        apply(&mut snap, &p);
        snap.exporters[0].online = true;
        let p = plan(&snap, t(10));
        let s = status(&p, "l1");
        assert!(s.ended);
        assert_eq!(s.exporter, None);
        assert_eq!(
            summary(s),
            vec![
                cond(PENDING, true, "Offline"),
                cond(READY, false, "Expired")
            ]
        );
    }

    #[test]
    fn release_before_assignment_takes_no_exporter() {
        let mut l = lease("l1", 0, "board=mock", 60);
        l.spec.release = true;
        let snap = snapshot(
            vec![exporter("a", "board=mock")],
            vec![l, lease("l2", 1, "board=mock", 60)],
        );
        let p = plan(&snap, t(1));
        let s = status(&p, "l1");
        assert!(s.ended);
        assert_eq!(s.exporter, None);
        assert_eq!(summary(s), vec![cond(READY, false, "Released")]);
        assert_eq!(status(&p, "l2").exporter.as_deref(), Some("a"));
    }

    #[test]
    fn ended_leases_are_left_alone() {
        let mut l = lease("l1", 0, "board=mock", 60);
        l.status.ended = true;
        l.status.exporter = Some("a".to_owned());
        let snap = snapshot(
            vec![exporter("a", "board=mock")],
            vec![l, lease("l2", 1, "board=mock", 60)],
        );
        let p = plan(&snap, t(1));
        assert!(p.updates.iter().all(|u| u.name != "l1"));
        assert_eq!(status(&p, "l2").exporter.as_deref(), Some("a"));
    }

    #[test]
    fn no_duration_at_all_expires_at_once() {
        let mut l = lease("l1", 0, "board=mock", 0);
        l.spec.duration = None;
        let snap = snapshot(vec![exporter("a", "board=mock")], vec![l]);
        let p = plan(&snap, t(1));
        let s = status(&p, "l1");
        assert!(s.ended);
        assert_eq!(summary(s), vec![cond(READY, false, "Expired")]);
    }

    #[test]
    fn descriptions_are_capped() {
        let long = "é".repeat(3000);
        assert_eq!(cap("short"), "short");
        let capped = cap(&long);
        assert!(capped.ends_with("..."));
        assert!(capped.len() <= MAX_DESCRIPTIONS_LEN + 3);
    }
}
