//! What the reconcile loop keeps between passes, so that a pass works on what changed:
//! the namespace as last seen ([`View`]), the planner's [`Index`], each exporter's desired
//! status and when it turns offline by the clock, exporter claims, and who holds each
//! exporter. Every part is derived from the view and re-derived for the names a pass is
//! told changed; a pass given everything as changed rebuilds all of it (the first pass, a
//! re-list, a periodic resync).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jumpstarter_lease::scheduler::{self, Index};
use jumpstarter_token::internal::CachedVerifier;
use time::OffsetDateTime;

use super::exporter::{OFFLINE_AFTER, is_active};
use super::view::{self, View};
use crate::crd;
use crate::crd::vocabulary::time_of;

/// A pass's state, kept for the next one.
#[derive(Debug)]
pub(crate) struct Memory {
    pub(crate) view: View,
    pub(crate) index: Index,
    /// Each exporter's status as the last pass wanted it (`leaseRef` as stored).
    pub(crate) desired: BTreeMap<String, crd::ExporterStatus>,
    /// The credential Secret of each exporter whose credential is in place.
    pub(crate) credentials: BTreeMap<String, String>,
    /// The verifier credentials were checked with (a new one means new keys).
    pub(crate) verifier: Option<Arc<CachedVerifier>>,
    /// When each exporter's `Online` condition turns by the clock alone.
    due: BTreeSet<(OffsetDateTime, String)>,
    due_of: BTreeMap<String, OffsetDateTime>,
    /// Exporter → the lease its `status.leaseRef` names, and the reverse.
    claim_of: BTreeMap<String, String>,
    claimants: BTreeMap<String, BTreeSet<String>>,
    /// Exporter → active leases whose `status.exporterRef` names it, and the reverse.
    ref_holders: BTreeMap<String, BTreeSet<String>>,
    holds: BTreeMap<String, String>,
    /// Lease → its state for the lease gauge, and leases by state.
    states: BTreeMap<String, &'static str>,
    tally: BTreeMap<&'static str, i64>,
    /// Waiting leases with a queue position (online exporters they may use).
    queued: BTreeSet<String>,
    /// Names written by the last pass (the view has them; derived parts are refreshed by
    /// the next pass).
    pub(crate) written: Dirty,
    /// When everything is re-derived next.
    pub(crate) resync_at: OffsetDateTime,
}

/// Names that changed, by kind.
#[derive(Debug, Default)]
pub(crate) struct Dirty {
    pub(crate) exporters: BTreeSet<String>,
    pub(crate) leases: BTreeSet<String>,
    pub(crate) clients: BTreeSet<String>,
    pub(crate) secrets: BTreeSet<String>,
    pub(crate) policies: bool,
}

impl Dirty {
    /// Every name of `view`.
    pub(crate) fn everything(view: &View) -> Dirty {
        Dirty {
            exporters: view.exporters.keys().cloned().collect(),
            leases: view.leases.keys().cloned().collect(),
            clients: view.clients.keys().cloned().collect(),
            secrets: view.secrets.keys().cloned().collect(),
            policies: true,
        }
    }

    pub(crate) fn extend(&mut self, other: Dirty) {
        self.exporters.extend(other.exporters);
        self.leases.extend(other.leases);
        self.clients.extend(other.clients);
        self.secrets.extend(other.secrets);
        self.policies |= other.policies;
    }
}

impl Memory {
    pub(crate) fn new(view: View, resync_at: OffsetDateTime) -> Memory {
        Memory {
            view,
            index: Index::new(),
            desired: BTreeMap::new(),
            credentials: BTreeMap::new(),
            verifier: None,
            due: BTreeSet::new(),
            due_of: BTreeMap::new(),
            claim_of: BTreeMap::new(),
            claimants: BTreeMap::new(),
            ref_holders: BTreeMap::new(),
            holds: BTreeMap::new(),
            states: BTreeMap::new(),
            tally: BTreeMap::new(),
            queued: BTreeSet::new(),
            written: Dirty::default(),
            resync_at,
        }
    }

    /// Exporters whose `Online` condition may have turned by the clock at `now`.
    pub(crate) fn due(&self, now: OffsetDateTime) -> impl Iterator<Item = &String> {
        self.due
            .iter()
            .take_while(move |(at, _)| *at <= now)
            .map(|(_, name)| name)
    }

    /// The next instant an exporter turns offline by the clock.
    pub(crate) fn next_due(&self) -> Option<OffsetDateTime> {
        self.due.first().map(|(at, _)| *at)
    }

    /// Records `status` as exporter `name`'s desired status and offers the exporter to the
    /// planner as it.
    pub(crate) fn set_desired(
        &mut self,
        name: &str,
        exporter: &crd::Exporter,
        status: crd::ExporterStatus,
        now: OffsetDateTime,
    ) {
        if let Some(at) = self.due_of.remove(name) {
            self.due.remove(&(at, name.to_owned()));
        }
        // Offline once `now - lastSeen > OFFLINE_AFTER`: passes run at whole seconds, so
        // the first one a second later sees it.
        let turns = status
            .last_seen
            .as_ref()
            .and_then(|seen| time_of(seen).checked_add(OFFLINE_AFTER + time::Duration::SECOND))
            .filter(|at| *at > now);
        if let Some(at) = turns {
            self.due.insert((at, name.to_owned()));
            self.due_of.insert(name.to_owned(), at);
        }
        self.index
            .put_exporter(view::exporter(exporter, Some(&status)));
        self.desired.insert(name.to_owned(), status);
    }

    /// Forgets exporter `name` (deleted).
    pub(crate) fn remove_exporter(&mut self, name: &str) {
        if let Some(at) = self.due_of.remove(name) {
            self.due.remove(&(at, name.to_owned()));
        }
        self.desired.remove(name);
        self.credentials.remove(name);
        self.index.remove_exporter(name);
    }

    /// Re-reads exporter `name`'s claim (`status.leaseRef`) from the view; returns the
    /// leases named before and now.
    pub(crate) fn refresh_claim(&mut self, name: &str) -> Vec<String> {
        let now = self
            .view
            .exporters
            .get(name)
            .and_then(|e| e.status.as_ref())
            .and_then(|s| s.lease_ref.as_ref())
            .map(|r| r.name.clone());
        let before = self.claim_of.remove(name);
        if let Some(lease) = &before
            && let Some(set) = self.claimants.get_mut(lease)
        {
            set.remove(name);
            if set.is_empty() {
                self.claimants.remove(lease);
            }
        }
        if let Some(lease) = &now {
            self.claim_of.insert(name.to_owned(), lease.clone());
            self.claimants
                .entry(lease.clone())
                .or_default()
                .insert(name.to_owned());
        }
        before.into_iter().chain(now).collect()
    }

    /// The lease exporter `name` claims, if any.
    pub(crate) fn claim_of(&self, exporter: &str) -> Option<&String> {
        self.claim_of.get(exporter)
    }

    /// Exporters claiming lease `name`.
    pub(crate) fn claimants(&self, lease: &str) -> impl Iterator<Item = &String> {
        self.claimants.get(lease).into_iter().flatten()
    }

    /// Re-reads lease `name` from the view into the planner's index (with the exporter it
    /// holds by a pending claim, see [`Memory::claimed`]), the holder index and the gauge;
    /// returns the exporters it held by `status.exporterRef` before and now.
    pub(crate) fn refresh_lease(&mut self, name: &str) -> Vec<String> {
        let before = self.holds.remove(name);
        if let Some(exporter) = &before
            && let Some(set) = self.ref_holders.get_mut(exporter)
        {
            set.remove(name);
            if set.is_empty() {
                self.ref_holders.remove(exporter);
            }
        }
        let Some(lease) = self.view.leases.get(name).cloned() else {
            self.index.remove_lease(name);
            self.set_state(name, None);
            self.queued.remove(name);
            return before.into_iter().collect();
        };
        let exporter_ref = lease
            .status
            .as_ref()
            .and_then(|s| s.exporter_ref.as_ref())
            .map(|r| r.name.clone());
        let active = is_active(&lease);
        if let (true, Some(exporter)) = (active, &exporter_ref) {
            self.holds.insert(name.to_owned(), exporter.clone());
            self.ref_holders
                .entry(exporter.clone())
                .or_default()
                .insert(name.to_owned());
        }
        let state = match (active, exporter_ref.is_some()) {
            (false, _) => "ended",
            (true, true) => "ready",
            (true, false) => "pending",
        };
        self.set_state(name, Some(state));
        let queued = lease
            .status
            .as_ref()
            .and_then(|s| s.queue_position)
            .is_some();
        if queued && state == "pending" {
            self.queued.insert(name.to_owned());
        } else {
            self.queued.remove(name);
        }
        let planned = self.claimed(view::lease(&lease));
        self.index.put_lease(planned);
        before.into_iter().chain(exporter_ref).collect()
    }

    /// `lease` as the planner must see it: a lease without an exporter that an exporter
    /// claims (`status.leaseRef`) holds that exporter when no other non-ended lease holds
    /// it, so no other lease can be given it and this pass completes the assignment (the
    /// claiming pass may still be writing the lease, or failed to). The first claimant by
    /// name wins. A claim is void when the lease is ended, released or holds another
    /// exporter, or another lease holds the exporter.
    fn claimed(&self, mut lease: scheduler::Lease) -> scheduler::Lease {
        if lease.status.ended || lease.spec.release || lease.status.exporter.is_some() {
            return lease;
        }
        let free = self.claimants(&lease.name).find(|exporter| {
            self.index
                .holders(exporter)
                .all(|holder| holder == lease.name)
        });
        lease.status.exporter = free.cloned();
        lease
    }

    /// The active lease holding exporter `name` by `status.exporterRef` (the first by name).
    pub(crate) fn holder(&self, exporter: &str) -> Option<&Arc<crd::Lease>> {
        let name = self.ref_holders.get(exporter)?.first()?;
        self.view.leases.get(name)
    }

    /// Leases holding exporter `name` by `status.exporterRef`.
    pub(crate) fn ref_holders(&self, exporter: &str) -> impl Iterator<Item = &String> {
        self.ref_holders.get(exporter).into_iter().flatten()
    }

    fn set_state(&mut self, lease: &str, state: Option<&'static str>) {
        let before = match state {
            Some(state) => self.states.insert(lease.to_owned(), state),
            None => self.states.remove(lease),
        };
        for (state, change) in [(before, -1), (state, 1)] {
            if let Some(state) = state {
                *self.tally.entry(state).or_default() += change;
            }
        }
    }

    /// Leases in gauge state `state` (`pending`, `ready`, `ended`).
    pub(crate) fn count(&self, state: &str) -> i64 {
        self.tally.get(state).copied().unwrap_or(0)
    }

    /// Waiting leases with a queue position.
    pub(crate) fn queue_depth(&self) -> i64 {
        i64::try_from(self.queued.len()).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jumpstarter_lease::scheduler::plan;
    use k8s_openapi::api::core::v1::LocalObjectReference;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    use crate::crd::Device;
    use crate::crd::vocabulary::stored_time;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + seconds).expect("valid")
    }

    fn exporter(name: &str, claim: Option<&str>) -> Arc<crd::Exporter> {
        let mut e = crd::Exporter::new(name, crd::ExporterSpec::default());
        e.metadata.labels = Some(BTreeMap::from([("board".into(), "x".into())]));
        e.status = Some(crd::ExporterStatus {
            devices: Some(vec![Device::default()]),
            last_seen: Some(stored_time(at(0))),
            exporter_status: Some(crd::ExporterStatusValue::Available),
            lease_ref: claim.map(|name| LocalObjectReference { name: name.into() }),
            ..Default::default()
        });
        Arc::new(e)
    }

    fn lease(name: &str, created: i64, holds: Option<&str>) -> Arc<crd::Lease> {
        let mut l = crd::Lease::new(
            name,
            crd::LeaseSpec {
                client_ref: LocalObjectReference { name: "c".into() },
                duration: Some("1h".into()),
                selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([("board".into(), "x".into())])),
                    match_expressions: None,
                },
                ..Default::default()
            },
        );
        l.metadata.creation_timestamp = Some(stored_time(at(created)));
        l.status = holds.map(|e| crd::LeaseStatus {
            exporter_ref: Some(LocalObjectReference { name: e.into() }),
            begin_time: Some(stored_time(at(created))),
            ..Default::default()
        });
        Arc::new(l)
    }

    /// Re-derives what a pass derives for these names.
    fn refresh(memory: &mut Memory, exporters: &[&str], leases: &[&str], now: OffsetDateTime) {
        let mut claimed = BTreeSet::new();
        for name in exporters {
            match memory.view.exporters.get(*name).cloned() {
                Some(e) => {
                    let status =
                        super::super::exporter::desired_status(&e, None, "ctl", false, now);
                    memory.set_desired(name, &e, status, now);
                }
                None => memory.remove_exporter(name),
            }
            claimed.extend(memory.refresh_claim(name));
        }
        for name in leases {
            for exporter in memory.refresh_lease(name) {
                claimed.extend(memory.claim_of(&exporter).cloned());
            }
        }
        claimed.extend(leases.iter().map(|l| (*l).to_owned()));
        for _ in 0..2 {
            for name in &claimed {
                memory.refresh_lease(name);
            }
        }
    }

    fn assert_same_plan(memory: &mut Memory, now: OffsetDateTime) {
        let full = plan(&memory.view.snapshot(&memory.desired), now);
        let incremental = memory.index.plan(now);
        assert_eq!(incremental, full);
    }

    #[test]
    fn claims_and_holders_reach_the_planner_as_a_full_snapshot_has_them() {
        let now = at(10);
        let mut view = View::default();
        for (name, claim) in [("e1", Some("l2")), ("e2", None), ("e3", Some("l1"))] {
            view.exporters.insert(name.into(), exporter(name, claim));
        }
        // l1 holds e1 (whose claim on l2 is void); l2 waits; e3 claims l1 (void: l1 holds
        // another); l3 is pending.
        view.leases.insert("l1".into(), lease("l1", 0, Some("e1")));
        view.leases.insert("l2".into(), lease("l2", 1, None));
        view.leases.insert("l3".into(), lease("l3", 2, None));
        let mut memory = Memory::new(view, now);
        refresh(&mut memory, &["e1", "e2", "e3"], &["l1", "l2", "l3"], now);
        assert_same_plan(&mut memory, now);

        // l1 ends: e1's claim on l2 becomes a hold.
        let mut ended = crd::Lease::clone(&memory.view.leases["l1"]);
        if let Some(s) = ended.status.as_mut() {
            s.ended = true;
        }
        memory.view.leases.insert("l1".into(), Arc::new(ended));
        refresh(&mut memory, &[], &["l1"], now);
        assert_eq!(
            memory
                .index
                .lease("l2")
                .and_then(|l| l.status.exporter.as_deref()),
            Some("e1")
        );
        assert_same_plan(&mut memory, now);

        // e2 claims l3, then goes away.
        memory
            .view
            .exporters
            .insert("e2".into(), exporter("e2", Some("l3")));
        refresh(&mut memory, &["e2"], &[], now);
        assert_same_plan(&mut memory, now);
        memory.view.exporters.remove("e2");
        refresh(&mut memory, &["e2"], &[], now);
        assert_same_plan(&mut memory, now);
        assert_eq!(memory.count("ended"), 1);
        assert_eq!(memory.count("pending"), 2);
    }
}
