//! The lease planner: given a [`Snapshot`] and `now`, decide every lease's next status.
//!
//! It follows jumpstarter 0.9.0's lease reconciler step by step (assignment, begin time,
//! ending), but looks at the whole namespace at once. That makes two guarantees possible
//! that 0.9.0's one-lease-at-a-time reconciler lacks: an exporter is never held by two
//! non-ended leases, and among leases competing for exporters the oldest is served first.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use time::{Duration, OffsetDateTime};

use super::condition::reason;
use super::condition::{self, Condition, ConditionStatus, INVALID, PENDING, READY, UNSATISFIABLE};
use super::snapshot::{AccessPolicy, Client, Exporter, Lease, LeaseSpec, LeaseStatus, Snapshot};
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
    /// expiry, or pending retry.
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
/// Leases without an exporter are considered oldest first (creation time, then name); an
/// exporter held by any lease that is not ended in the snapshot, or assigned earlier in this
/// plan, counts as leased. An exporter freed by a lease ending in this plan is therefore only
/// offered again by the next plan, after the end has been written.
///
/// The reference: [`Index::plan`](super::Index::plan) plans fewer leases with the same rules
/// and reaches the same plan (proven by property test).
pub fn plan(snapshot: &Snapshot, now: OffsetDateTime) -> Plan {
    let whole = Whole::new(snapshot);
    let leases: Vec<&Lease> = snapshot.leases.iter().collect();
    let (plan, _) = plan_leases(&whole, leases, now);
    plan
}

/// What a plan reads besides the leases it plans: the exporters, clients and policies, and
/// which exporters non-ended leases hold.
pub(crate) trait Namespace {
    /// Every exporter, sorted by name (the order Kubernetes lists them in).
    fn exporters(&self) -> impl Iterator<Item = &Exporter>;
    /// The exporter named `name` (the first in name order).
    fn exporter(&self, name: &str) -> Option<&Exporter>;
    fn client(&self, name: &str) -> Option<&Client>;
    fn policies(&self) -> &[AccessPolicy];
    /// `Some(spot)` when a non-ended lease holds `exporter`; `spot` is whether every lease
    /// holding it holds it under spot access.
    fn held(&self, exporter: &str) -> Option<bool>;
}

/// Plans `leases` (ended ones are skipped) oldest first against `namespace`. Also returns
/// each planned lease's own next wake-up, by name.
pub(crate) fn plan_leases<'a, N: Namespace>(
    namespace: &'a N,
    leases: Vec<&'a Lease>,
    now: OffsetDateTime,
) -> (Plan, Vec<(&'a str, Option<OffsetDateTime>)>) {
    let mut planner = Planner::new(namespace, now);
    let mut order: Vec<&Lease> = leases.into_iter().filter(|l| !l.status.ended).collect();
    order.sort_by(|a, b| (a.creation_time, &a.name).cmp(&(b.creation_time, &b.name)));
    let mut updates = Vec::new();
    let mut wakeups = Vec::with_capacity(order.len());
    for lease in order {
        planner.lease_wakeup = None;
        let status = planner.lease(lease);
        wakeups.push((lease.name.as_str(), planner.lease_wakeup));
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
        next_wakeup: planner.next_wakeup,
    };
    (plan, wakeups)
}

/// A whole [`Snapshot`] as a [`Namespace`].
struct Whole<'a> {
    /// Exporters sorted by name (stable: equal names keep snapshot order).
    exporters: Vec<&'a Exporter>,
    clients: BTreeMap<&'a str, &'a Client>,
    policies: &'a [AccessPolicy],
    /// Exporter name → whether every lease holding it holds it under spot access.
    held: BTreeMap<&'a str, bool>,
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
        let mut held = BTreeMap::new();
        for lease in &snapshot.leases {
            if let (false, Some(exporter)) = (lease.status.ended, &lease.status.exporter) {
                held.entry(exporter.as_str())
                    .and_modify(|all_spot: &mut bool| *all_spot &= lease.status.spot_access)
                    .or_insert(lease.status.spot_access);
            }
        }
        Whole {
            exporters,
            clients,
            policies: &snapshot.policies,
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

    fn held(&self, exporter: &str) -> Option<bool> {
        self.held.get(exporter).copied()
    }
}

struct Planner<'a, N> {
    namespace: &'a N,
    now: OffsetDateTime,
    /// Exporters assigned earlier in this plan → whether every such assignment is spot.
    assigned: BTreeMap<String, bool>,
    next_wakeup: Option<OffsetDateTime>,
    /// The wake-up asked for by the lease being planned.
    lease_wakeup: Option<OffsetDateTime>,
}

/// An exporter a policy rule admits the lease's client to.
#[derive(Clone, Copy)]
struct Candidate<'a> {
    exporter: &'a Exporter,
    priority: i64,
    spot_access: bool,
    /// Some(spot) when another lease holds the exporter; `spot` is that lease's access.
    holder_spot: Option<bool>,
}

/// The outcome of looking for an exporter.
enum Search {
    /// Take this exporter under this rule.
    Assign {
        exporter: String,
        priority: i64,
        spot_access: bool,
    },
    /// Record why not; `retry` asks for another look after [`PENDING_RETRY`].
    Condition {
        type_: &'static str,
        reason: &'static str,
        message: String,
        retry: bool,
    },
    /// Leave the status alone and look again after [`PENDING_RETRY`].
    Retry,
}

impl<'a, N: Namespace> Planner<'a, N> {
    fn new(namespace: &'a N, now: OffsetDateTime) -> Self {
        Planner {
            namespace,
            now,
            assigned: BTreeMap::new(),
            next_wakeup: None,
            lease_wakeup: None,
        }
    }

    fn wake_at(&mut self, at: OffsetDateTime) {
        self.next_wakeup = Some(self.next_wakeup.map_or(at, |current| current.min(at)));
        self.lease_wakeup = Some(self.lease_wakeup.map_or(at, |current| current.min(at)));
    }

    fn retry(&mut self) {
        // Saturating: a `now` at the very end of the time range simply gets no retry.
        if let Some(at) = self.now.checked_add(PENDING_RETRY) {
            self.wake_at(at);
        }
    }

    /// Whether `exporter` is held, by a lease of the namespace or by an assignment of this
    /// plan; `Some(spot)` as [`Namespace::held`].
    fn holder_spot(&self, exporter: &str) -> Option<bool> {
        match (self.namespace.held(exporter), self.assigned.get(exporter)) {
            (Some(a), Some(b)) => Some(a && *b),
            (held, None) => held,
            (None, Some(b)) => Some(*b),
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

    /// The three 0.9.0 reconcile steps for one non-ended lease: exporter, begin time, end.
    fn lease(&mut self, lease: &Lease) -> LeaseStatus {
        let now = self.now;
        let spec = &lease.spec;
        let mut status = lease.status.clone();

        if status.exporter.is_none() {
            let scheduled_later = spec.begin_time.filter(|begin| *begin > now);
            if let Some(begin) = scheduled_later {
                self.wake_at(begin);
            } else if !spec.release && !window_closed(spec, now) {
                self.assign(lease, &mut status);
            }
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
            match expiry {
                Some(at) if at <= now => {
                    let message = "The lease has expired".to_owned();
                    self.set_condition(lease, &mut status, READY, false, reason::EXPIRED, message);
                    end(&mut status, now);
                }
                Some(at) if status.begin_time.is_some() => self.wake_at(at),
                _ => {}
            }
        }
        status
    }

    fn assign(&mut self, lease: &Lease, status: &mut LeaseStatus) {
        match self.search(lease) {
            Search::Assign {
                exporter,
                priority,
                spot_access,
            } => {
                self.assigned
                    .entry(exporter.clone())
                    .and_modify(|all_spot| *all_spot &= spot_access)
                    .or_insert(spot_access);
                status.exporter = Some(exporter);
                status.priority = priority;
                status.spot_access = spot_access;
            }
            Search::Condition {
                type_,
                reason,
                message,
                retry,
            } => {
                self.set_condition(lease, status, type_, true, reason, message);
                if retry {
                    self.retry();
                }
            }
            Search::Retry => self.retry(),
        }
    }

    /// 0.9.0 `reconcileStatusExporterRef` for a lease that may be assigned now.
    fn search(&self, lease: &Lease) -> Search {
        let spec = &lease.spec;
        let invalid = |message: String| Search::Condition {
            type_: INVALID,
            reason: reason::INVALID_SELECTOR,
            message,
            retry: false,
        };
        let unsatisfiable = |reason: &'static str, message: String| Search::Condition {
            type_: UNSATISFIABLE,
            reason,
            message,
            retry: false,
        };
        let pending = |reason: &'static str, message: String| Search::Condition {
            type_: PENDING,
            reason,
            message,
            retry: true,
        };

        if let Err(error) = selector::validate(&spec.selector) {
            return invalid(format!("The selector for the lease is invalid: {error}"));
        }
        if spec.selector.is_empty() && spec.exporter_ref.is_none() {
            return invalid(
                "The selector for the lease is empty, a selector is required".to_owned(),
            );
        }

        let matching: Vec<&Exporter> = match &spec.exporter_ref {
            Some(name) => {
                let Some(exporter) = self.namespace.exporter(name) else {
                    return unsatisfiable(
                        reason::EXPORTER_NOT_FOUND,
                        format!("Requested exporter {name} was not found"),
                    );
                };
                if !spec.selector.is_empty() && !selector::matches(&spec.selector, &exporter.labels)
                {
                    return unsatisfiable(
                        reason::SELECTOR_MISMATCH,
                        format!(
                            "Requested exporter {} does not match selector {}",
                            exporter.name,
                            selector::format(&spec.selector)
                        ),
                    );
                }
                if !exporter.enabled && !spec.allow_disabled {
                    return unsatisfiable(
                        reason::EXPORTER_DISABLED,
                        format!(
                            "Requested exporter {} is disabled. To lease a disabled exporter, set \
                             spec.allowDisabled: true on the Lease, or use --allow-disabled with \
                             jmp create lease",
                            exporter.name
                        ),
                    );
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
                    return unsatisfiable(
                        reason::ALL_DISABLED,
                        format!(
                            "All {} exporters matching the selector are disabled",
                            listed.len()
                        ),
                    );
                }
                enabled
            }
        };

        let Some(Approval {
            approved,
            unmatched,
        }) = self.approve(lease, &matching)
        else {
            return Search::Retry;
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
            return unsatisfiable(reason::NO_ACCESS, message);
        }

        let mut online: Vec<Candidate<'_>> = approved
            .iter()
            .copied()
            .filter(|c| c.exporter.registered && c.exporter.online)
            .collect();
        if online.is_empty() {
            return pending(
                reason::OFFLINE,
                format!(
                    "While there are {} available exporters (i.e. {}), none of them are online",
                    approved.len(),
                    approved[0].exporter.name
                ),
            );
        }

        for candidate in &mut online {
            candidate.holder_spot = self.holder_spot(&candidate.exporter.name);
        }
        // Not leased first, then non-spot, then higher priority, then name.
        online.sort_by_key(|c| {
            (
                c.holder_spot.is_some(),
                c.spot_access,
                Reverse(c.priority),
                c.exporter.name.as_str(),
            )
        });
        if online[0].spot_access {
            return unsatisfiable(
                reason::SPOT_ACCESS,
                format!(
                    "The only possible exporters are under spot access (i.e. {}), but spot \
                     access is still not implemented",
                    online[0].exporter.name
                ),
            );
        }

        let available: Vec<Candidate<'_>> = online
            .iter()
            .copied()
            .filter(|c| match c.holder_spot {
                None => true,
                // A spot holder could be evicted by a non-spot request (not implemented).
                Some(holder_spot) => holder_spot && !c.spot_access,
            })
            .collect();
        if available.is_empty() {
            return pending(
                reason::NOT_AVAILABLE,
                format!(
                    "There are {} approved exporters, (i.e. {}) but all of them are already leased",
                    online.len(),
                    online[0].exporter.name
                ),
            );
        }

        let ready: Vec<Candidate<'_>> = available
            .iter()
            .copied()
            .filter(|c| READY_EXPORTER_STATUSES.contains(&c.exporter.exporter_status.as_str()))
            .collect();
        let Some(selected) = ready.first() else {
            return pending(
                reason::NOT_READY,
                format!(
                    "There are {} online exporters, but none are ready (still cleaning up \
                     previous lease)",
                    available.len()
                ),
            );
        };
        if selected.holder_spot.is_some() {
            return pending(
                reason::NOT_AVAILABLE,
                format!(
                    "Exporter {} is already leased by another client under spot access, but spot \
                     access eviction still not implemented",
                    selected.exporter.name
                ),
            );
        }
        Search::Assign {
            exporter: selected.exporter.name.clone(),
            priority: selected.priority,
            spot_access: selected.spot_access,
        }
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
                    priority: 0,
                    spot_access: false,
                    holder_spot: None,
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
                            priority: rule.priority,
                            spot_access: rule.spot_access,
                            holder_spot: None,
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
            "There are 1 approved exporters, (i.e. exp1) but all of them are already leased"
        );
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

        // With `a` leased, the best free option is spot access: unsatisfiable.
        let mut holder = lease("holder", -5, "board=mock", 60);
        holder.status.exporter = Some("a".to_owned());
        holder.status.begin_time = Some(t(-5));
        snap.leases.push(holder);
        let p = plan(&snap, t(1));
        let c = only_condition(&p, "l1");
        assert_eq!(
            (c.type_.as_str(), c.reason.as_str()),
            (UNSATISFIABLE, "SpotAccess")
        );
        assert_eq!(
            c.message,
            "The only possible exporters are under spot access (i.e. b), but spot access is \
             still not implemented"
        );
        assert!(status(&p, "l1").ended);
    }

    #[test]
    fn spot_holder_is_not_evicted() {
        let mut snap = snapshot(
            vec![exporter("a", "board=mock")],
            vec![lease("l1", 0, "board=mock", 60)],
        );
        let mut holder = lease("holder", -5, "board=mock", 60);
        holder.status.exporter = Some("a".to_owned());
        holder.status.begin_time = Some(t(-5));
        holder.status.spot_access = true;
        snap.leases.push(holder);
        let p = plan(&snap, t(1));
        let c = only_condition(&p, "l1");
        assert_eq!(
            (c.type_.as_str(), c.reason.as_str()),
            (PENDING, "NotAvailable")
        );
        assert_eq!(
            c.message,
            "Exporter a is already leased by another client under spot access, but spot access \
             eviction still not implemented"
        );
        assert_eq!(status(&p, "l1").exporter, None);
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
            "There are 1 online exporters, but none are ready (still cleaning up previous lease)"
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
