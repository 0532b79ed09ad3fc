//! Incremental planning: an [`Index`] keeps one namespace's exporters (sorted by name),
//! clients, policies and leases between plans, updated by deltas, and plans only the leases
//! whose status can change: every pending lease (not ended, no exporter), every lease that
//! changed since it was last planned (or whose planned status was not stored yet), and every
//! lease whose own wake-up (expiry, begin time) has come.
//!
//! The rules are the planner's ([`plan`](super::plan) is the reference): a lease holding an
//! exporter is planned by its own spec, status and `now` alone, so one that neither changed
//! nor is due plans to its current status; pending leases depend on everything and are
//! always planned, oldest first, exactly as a full plan orders them. The property test in
//! `simulation` checks that both reach the same plan over random change sequences.

use std::collections::{BTreeMap, BTreeSet};

use time::OffsetDateTime;

use super::planner::{Namespace, Plan, plan_leases};
use super::snapshot::{AccessPolicy, Client, Exporter, Lease, Settings, Snapshot};

/// One namespace as the planner sees it, kept between plans.
#[derive(Clone, Debug, Default)]
pub struct Index {
    exporters: BTreeMap<String, Exporter>,
    clients: BTreeMap<String, Client>,
    policies: Vec<AccessPolicy>,
    settings: Settings,
    leases: BTreeMap<String, Lease>,
    /// Non-ended leases without an exporter (planned at every plan).
    pending: BTreeSet<String>,
    /// Exporter → lease → spot access, for every non-ended lease holding an exporter.
    holders: BTreeMap<String, BTreeMap<String, bool>>,
    /// Leases to plan next time: changed since last planned, or planned to another status.
    dirty: BTreeSet<String>,
    /// Each lease's own wake-up as of its last plan, and the same ordered by time.
    wakeup_of: BTreeMap<String, OffsetDateTime>,
    wakeups: BTreeSet<(OffsetDateTime, String)>,
}

impl Index {
    pub fn new() -> Self {
        Index::default()
    }

    /// An index of every object of `snapshot` (every lease to be planned).
    pub fn from_snapshot(snapshot: &Snapshot) -> Self {
        let mut index = Index::new();
        for exporter in &snapshot.exporters {
            index.put_exporter(exporter.clone());
        }
        for client in &snapshot.clients {
            index.put_client(client.clone());
        }
        index.set_policies(snapshot.policies.clone());
        index.set_settings(snapshot.settings);
        for lease in &snapshot.leases {
            index.put_lease(lease.clone());
        }
        index
    }

    /// Adds or replaces an exporter (by name).
    pub fn put_exporter(&mut self, exporter: Exporter) {
        if self.exporters.get(&exporter.name) != Some(&exporter) {
            self.exporters.insert(exporter.name.clone(), exporter);
        }
    }

    pub fn remove_exporter(&mut self, name: &str) {
        self.exporters.remove(name);
    }

    /// Adds or replaces a client (by name).
    pub fn put_client(&mut self, client: Client) {
        self.clients.insert(client.name.clone(), client);
    }

    pub fn remove_client(&mut self, name: &str) {
        self.clients.remove(name);
    }

    pub fn set_policies(&mut self, policies: Vec<AccessPolicy>) {
        self.policies = policies;
    }

    pub fn set_settings(&mut self, settings: Settings) {
        self.settings = settings;
    }

    /// The lease named `name` as the index has it.
    pub fn lease(&self, name: &str) -> Option<&Lease> {
        self.leases.get(name)
    }

    /// Non-ended leases holding `exporter`, by name.
    pub fn holders(&self, exporter: &str) -> impl Iterator<Item = &str> {
        self.holders
            .get(exporter)
            .into_iter()
            .flat_map(|leases| leases.keys().map(String::as_str))
    }

    /// How many leases are pending (no exporter), holding an exporter, and ended.
    pub fn counts(&self) -> (usize, usize, usize) {
        let holding = self.holders.values().map(BTreeMap::len).sum::<usize>();
        let pending = self.pending.len();
        let ended = self.leases.len() - pending - holding;
        (pending, holding, ended)
    }

    /// Adds or replaces a lease (by name); a lease that differs from the indexed one is
    /// planned next time.
    pub fn put_lease(&mut self, lease: Lease) {
        if self.leases.get(&lease.name) == Some(&lease) {
            return;
        }
        self.unindex(&lease.name);
        let name = lease.name.clone();
        if !lease.status.ended {
            match &lease.status.exporter {
                None => {
                    self.pending.insert(name.clone());
                }
                Some(exporter) => {
                    self.holders
                        .entry(exporter.clone())
                        .or_default()
                        .insert(name.clone(), lease.status.spot_access);
                }
            }
        }
        self.dirty.insert(name.clone());
        self.leases.insert(name, lease);
    }

    pub fn remove_lease(&mut self, name: &str) {
        self.unindex(name);
        self.leases.remove(name);
        self.dirty.remove(name);
    }

    /// Removes `name` from everything derived from it.
    fn unindex(&mut self, name: &str) {
        let Some(old) = self.leases.get(name) else {
            return;
        };
        self.pending.remove(name);
        if let Some(exporter) = &old.status.exporter
            && let Some(holding) = self.holders.get_mut(exporter)
        {
            holding.remove(name);
            if holding.is_empty() {
                self.holders.remove(exporter);
            }
        }
        if let Some(at) = self.wakeup_of.remove(name) {
            self.wakeups.remove(&(at, name.to_owned()));
        }
    }

    /// Plans at `now` the leases whose status may change (see the module documentation).
    /// The result equals [`plan`](super::plan) of the same objects; `next_wakeup` covers
    /// every lease, planned now or before. A lease whose update is not put back (a failed
    /// write) is planned again next time.
    pub fn plan(&mut self, now: OffsetDateTime) -> Plan {
        let mut names: BTreeSet<&str> = self.pending.iter().map(String::as_str).collect();
        names.extend(self.dirty.iter().map(String::as_str));
        names.extend(
            self.wakeups
                .iter()
                .take_while(|(at, _)| *at <= now)
                .map(|(_, name)| name.as_str()),
        );
        let leases: Vec<&Lease> = names.iter().filter_map(|n| self.leases.get(*n)).collect();
        let (mut plan, wakeups) = plan_leases(&*self, leases, now);
        // Every lease the plan looked at: those asked for, and spot holders given notice.
        let wakeups: Vec<(String, Option<OffsetDateTime>)> = wakeups
            .into_iter()
            .map(|(name, at)| (name.to_owned(), at))
            .collect();

        // Planned leases (ended ones included) get their new wake-ups; those with an
        // update stay to be planned until it is put back.
        self.dirty.clear();
        for (name, _) in &wakeups {
            if let Some(at) = self.wakeup_of.remove(name) {
                self.wakeups.remove(&(at, name.clone()));
            }
        }
        for (name, at) in wakeups {
            if let Some(at) = at {
                self.wakeups.insert((at, name.clone()));
                self.wakeup_of.insert(name, at);
            }
        }
        self.dirty
            .extend(plan.updates.iter().map(|update| update.name.clone()));
        plan.next_wakeup = self.wakeups.first().map(|(at, _)| *at);
        plan
    }
}

impl Namespace for Index {
    fn exporters(&self) -> impl Iterator<Item = &Exporter> {
        self.exporters.values()
    }

    fn exporter(&self, name: &str) -> Option<&Exporter> {
        self.exporters.get(name)
    }

    fn client(&self, name: &str) -> Option<&Client> {
        self.clients.get(name)
    }

    fn policies(&self) -> &[AccessPolicy] {
        &self.policies
    }

    fn settings(&self) -> Settings {
        self.settings
    }

    fn holders(&self, exporter: &str) -> impl Iterator<Item = &Lease> {
        self.holders
            .get(exporter)
            .into_iter()
            .flat_map(|holding| holding.keys())
            .filter_map(|name| self.leases.get(name))
    }

    fn holdings(&self) -> impl Iterator<Item = (&str, Vec<&Lease>)> {
        self.holders.iter().map(|(exporter, holding)| {
            let leases = holding
                .keys()
                .filter_map(|name| self.leases.get(name))
                .collect();
            (exporter.as_str(), leases)
        })
    }
}
