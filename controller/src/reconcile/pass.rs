//! One reconcile pass over a namespace: credentials, exporter statuses, the lease plan,
//! lease metadata and exporter statuses written, each for what changed. Level-triggered:
//! what a pass writes depends only on what is stored now, so it can run at any time, any
//! number of times.
//!
//! Incremental: a pass fed by the loop's watch copies takes the names they report changed
//! and keeps its state for the next pass ([`Memory`]); credentials are checked for changed
//! Clients, Exporters and Secrets (all after a key change), exporter statuses computed for
//! changed exporters and those whose `Online` condition turns by the clock (all when told
//! liveness changed), the planner plans pending, changed and due leases only
//! ([`scheduler::Index`]), and only what differs is written. A pass with everything
//! changed (the first, after a re-list or a failed pass, every [`RESYNC`], and every pass
//! without watch copies) does all of it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;

#[cfg(doc)]
use jumpstarter_lease::scheduler;
use jumpstarter_token::internal::ObjectKind;
use k8s_openapi::api::core::v1::{LocalObjectReference, Secret};
use kube::ResourceExt;
use kube::api::ObjectMeta;
use time::OffsetDateTime;

use super::credential::{self, Holder};
use super::exporter::{desired_status, holds_stream};
use super::lease::{Applied, WRITES_IN_FLIGHT, apply_plan, exporter_updates, reconcile_metadata};
use super::memory::{Dirty, Memory};
use super::metrics::LeaseStateLabels;
use super::reflections::Reflections;
use super::view::{self, View};
use super::{ReconcileError, ReconcileMetrics};
use crate::crd;
use crate::keys::Keys;
use crate::keys::live::LiveVerifier;
use crate::replica::ReplicaRegistry;
use crate::settings::Settings;
use crate::store::reflection::Changes;
use crate::store::{Store, StoreError};

/// How often a pass re-derives everything instead of only what changed: a safety net
/// (e.g. for a token that expires with nothing changing), cheap at this rate.
pub(crate) const RESYNC: time::Duration = time::Duration::minutes(10);

/// Credential tokens whose verification a [`Reconciler`] remembers (one per Client and
/// Exporter; re-signed tokens replace old ones when it starts over).
const VERIFIED_CREDENTIALS: usize = 65_536;

/// What a pass asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The planner's next wake-up, if any.
    pub next_wakeup: Option<OffsetDateTime>,
    /// A write met a concurrent change: run again right away from a fresh read.
    pub again: bool,
    /// Objects written in this pass.
    pub writes: u64,
}

/// Runs passes for one namespace.
#[derive(Debug, Clone)]
pub struct Reconciler<S> {
    store: S,
    keys: Arc<Keys>,
    settings: Arc<Settings>,
    metrics: Arc<ReconcileMetrics>,
    /// Every pass checks every credential token; after the first, a check is a lookup
    /// (until the token keys change).
    credentials: Arc<LiveVerifier>,
    /// Watch-fed copies of the namespace, read instead of the store once complete.
    reflections: Option<Arc<Reflections>>,
    /// The controller replicas, whose Status streams keep exporters online; without them,
    /// only `lastSeen` does.
    replicas: Option<Arc<ReplicaRegistry>>,
    /// With `reflections`: what the last pass left for the next (see [`Memory`]).
    memory: Arc<tokio::sync::Mutex<Option<Memory>>>,
    /// Set when exporter liveness may have changed for reasons outside the exporters
    /// themselves: the next pass recomputes every exporter's status.
    liveness_changed: Arc<AtomicBool>,
}

impl<S: Store> Reconciler<S> {
    pub fn new(
        store: S,
        keys: Arc<Keys>,
        settings: Arc<Settings>,
        metrics: Arc<ReconcileMetrics>,
    ) -> Self {
        let credentials = Arc::new(LiveVerifier::new(keys.tokens.clone(), VERIFIED_CREDENTIALS));
        Reconciler {
            store,
            keys,
            settings,
            metrics,
            credentials,
            reflections: None,
            replicas: None,
            memory: Arc::default(),
            liveness_changed: Arc::default(),
        }
    }

    /// Exporters whose Status stream a live replica holds are online ([`holds_stream`]).
    pub fn with_replicas(self, replicas: Arc<ReplicaRegistry>) -> Self {
        Reconciler {
            replicas: Some(replicas),
            ..self
        }
    }

    /// Passes read `reflections` (once complete) instead of listing the store, and work on
    /// what changed since the last pass.
    pub(crate) fn with_reflections(self, reflections: Arc<Reflections>) -> Self {
        Reconciler {
            reflections: Some(reflections),
            ..self
        }
    }

    /// Has the next pass recompute every exporter's status (e.g. a replica whose streams
    /// made exporters online went away).
    pub(crate) fn recheck_liveness(&self) {
        self.liveness_changed.store(true, Ordering::Relaxed);
    }

    /// One pass at `now`.
    ///
    /// Without reflections (or before they are complete) a pass reads the whole namespace
    /// and treats everything as changed. With them, a pass takes what changed from the
    /// copies and keeps its state for the next; everything is treated as changed at the
    /// first pass, after a re-list, after a failed pass and every [`RESYNC`].
    pub async fn pass(&self, now: OffsetDateTime) -> Result<Outcome, ReconcileError> {
        self.metrics.passes.inc();
        let writes_before = self.metrics.writes.get();
        let Some(reflections) = &self.reflections else {
            let mut memory = Memory::new(self.read().await?, now);
            let dirty = Dirty::everything(&memory.view);
            return self.run(&mut memory, dirty, now, writes_before).await;
        };
        let mut slot = self.memory.lock().await;
        let kept = slot.take().filter(|m| now < m.resync_at);
        let (mut memory, dirty) = match changes(reflections, kept.is_none()) {
            Some(changes) => match kept {
                Some(mut memory) => {
                    let dirty = changes.apply(&mut memory.view);
                    (memory, dirty)
                }
                None => {
                    let memory = Memory::new(changes.into_view(), resync_after(now));
                    let dirty = Dirty::everything(&memory.view);
                    (memory, dirty)
                }
            },
            None => {
                let memory = Memory::new(self.read().await?, now);
                let dirty = Dirty::everything(&memory.view);
                (memory, dirty)
            }
        };
        let outcome = self.run(&mut memory, dirty, now, writes_before).await?;
        // A failed pass leaves nothing behind: the next one starts over.
        *slot = Some(memory);
        Ok(outcome)
    }

    async fn read(&self) -> Result<View, ReconcileError> {
        let namespace = self.settings.namespace.as_str();
        View::read(&self.store, namespace)
            .await
            .map_err(|source| ReconcileError::Read {
                namespace: namespace.to_owned(),
                source,
            })
    }

    /// The pass proper, over `memory` with the names in `dirty` changed.
    async fn run(
        &self,
        memory: &mut Memory,
        mut dirty: Dirty,
        now: OffsetDateTime,
        writes_before: u64,
    ) -> Result<Outcome, ReconcileError> {
        let namespace = self.settings.namespace.as_str();
        let mut again = false;
        dirty.extend(std::mem::take(&mut memory.written));
        let verifier = self.credentials.current();
        let new_keys = !memory
            .verifier
            .as_ref()
            .is_some_and(|v| Arc::ptr_eq(v, &verifier));
        memory.verifier = Some(verifier);
        let recheck = self.liveness_changed.swap(false, Ordering::Relaxed);

        // Credentials: of changed objects and of objects whose Secret changed.
        let (clients, exporters) = if new_keys {
            (
                memory.view.clients.keys().cloned().collect(),
                memory.view.exporters.keys().cloned().collect(),
            )
        } else {
            (
                owners(
                    "-client",
                    &memory.view.clients,
                    &dirty.clients,
                    &dirty.secrets,
                ),
                owners(
                    "-exporter",
                    &memory.view.exporters,
                    &dirty.exporters,
                    &dirty.secrets,
                ),
            )
        };
        again |= self.clients(&mut memory.view, &clients, now).await?;
        let credentials = self
            .exporter_credentials(&memory.view, &exporters, now)
            .await?;
        again |= credentials.again;
        for name in &exporters {
            match credentials.secrets.get(name) {
                Some(secret) => memory.credentials.insert(name.clone(), secret.clone()),
                None => memory.credentials.remove(name),
            };
        }

        // What this pass wants each exporter's status to be (leaseRef aside); the planner
        // sees these, so an exporter found offline now is not assigned now.
        let replicas = self.replicas.as_ref().map(|r| r.view());
        let mut recompute: BTreeSet<String> = if recheck {
            memory.view.exporters.keys().cloned().collect()
        } else {
            let mut names = exporters;
            names.extend(dirty.exporters.iter().cloned());
            names.extend(memory.due(now).cloned());
            names
        };
        recompute.extend(dirty.exporters.iter().cloned());
        for name in &recompute {
            let Some(exporter) = memory.view.exporters.get(name).cloned() else {
                memory.remove_exporter(name);
                continue;
            };
            let secret = memory.credentials.get(name).map(String::as_str);
            let held = holds_stream(&exporter, replicas.as_ref(), now);
            let status = desired_status(&exporter, secret, &self.settings.grpc_endpoint, held, now);
            self.metrics.exporter_statuses.inc();
            memory.set_desired(name, &exporter, status, now);
        }
        for name in &dirty.clients {
            match memory.view.clients.get(name) {
                Some(client) => memory.index.put_client(view::client(client)),
                None => memory.index.remove_client(name),
            }
        }
        if dirty.policies {
            let policies = memory
                .view
                .policies
                .iter()
                .map(|p| view::policy(p))
                .collect();
            memory.index.set_policies(policies);
        }

        // Leases to re-read into the planner: changed ones, and those whose exporter claim
        // may have changed (claims of changed exporters, claims on exporters whose holders
        // changed). Exporters whose leaseRef may change go to `touched`.
        let mut leases: BTreeSet<String> = dirty.leases.clone();
        let mut touched: BTreeSet<String> = recompute;
        for name in &dirty.exporters {
            leases.extend(memory.refresh_claim(name));
        }
        for name in &dirty.leases {
            touched.extend(memory.claimants(name).cloned());
            for exporter in memory.refresh_lease(name) {
                leases.extend(memory.claim_of(&exporter).cloned());
                touched.insert(exporter);
            }
        }
        // Claims read the holders of other leases: a second round settles them.
        for _ in 0..2 {
            for name in &leases {
                memory.refresh_lease(name);
            }
        }

        memory.index.set_settings(self.settings.scheduling);
        let plan = memory.index.plan(now);
        let applied = apply_plan(
            &self.store,
            &mut memory.view,
            &memory.desired,
            &plan,
            &self.metrics,
            now,
        )
        .await?;
        for update in &plan.updates {
            leases.insert(update.name.clone());
            memory.written.leases.insert(update.name.clone());
            if let Some(exporter) = &update.status.exporter {
                memory.written.exporters.insert(exporter.clone());
            }
            for exporter in memory.refresh_lease(&update.name) {
                touched.insert(exporter);
            }
            touched.extend(memory.claimants(&update.name).cloned());
        }
        if applied == Applied::Stale {
            // What this pass did not get to is the next one's to do.
            memory.written.leases.extend(leases);
            memory.written.exporters.extend(touched);
            return Ok(self.outcome(memory, plan.next_wakeup, true, writes_before));
        }

        // Lease metadata: of re-read and planned leases, and of leases on changed exporters.
        let mut metadata = leases;
        for name in &dirty.exporters {
            metadata.extend(memory.ref_holders(name).cloned());
        }
        let (stale, written) =
            reconcile_metadata(&self.store, &mut memory.view, &metadata, &self.metrics).await?;
        again |= stale;
        for name in written {
            memory.refresh_lease(&name);
            memory.written.leases.insert(name);
        }

        let updates = exporter_updates(&memory.view, &memory.desired, touched.iter(), |name| {
            memory.holder(name).map(Arc::as_ref)
        });
        let writes: Vec<_> = updates
            .iter()
            .map(|exporter| self.store.replace_status(exporter))
            .collect();
        let outcomes: Vec<_> = futures::stream::iter(writes)
            .buffered(WRITES_IN_FLIGHT)
            .collect()
            .await;
        for (exporter, outcome) in updates.iter().zip(outcomes) {
            let name = exporter.name_any();
            match outcome {
                Ok(written) => {
                    self.metrics.writes.inc();
                    memory
                        .view
                        .exporters
                        .insert(name.clone(), Arc::new(written));
                    memory.written.exporters.insert(name);
                }
                Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {
                    // Someone changed or deleted it since this pass's copy: the watch
                    // reports that change, which makes the exporter dirty again. Retrying
                    // from the copy now would only repeat the stale write (at 10,000
                    // exporters, a storm of refused writes while the watch catches up).
                    self.metrics.error("conflict");
                    again = true;
                }
                Err(source) => return Err(write_error("Exporter", namespace, &name, source)),
            }
        }

        for state in ["pending", "ready", "ended"] {
            self.metrics
                .leases
                .get_or_create(&LeaseStateLabels { state })
                .set(memory.count(state));
        }
        self.metrics.queue_depth.set(memory.queue_depth());
        Ok(self.outcome(memory, plan.next_wakeup, again, writes_before))
    }

    fn outcome(
        &self,
        memory: &Memory,
        next_wakeup: Option<OffsetDateTime>,
        again: bool,
        writes_before: u64,
    ) -> Outcome {
        // Also when an exporter turns offline by the clock.
        let next_wakeup = match (next_wakeup, memory.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Outcome {
            next_wakeup,
            again,
            writes: self.metrics.writes.get().saturating_sub(writes_before),
        }
    }

    /// Credentials and status (`credential`, `endpoint`) of Clients `names`. Returns whether a
    /// write conflicted.
    async fn clients(
        &self,
        view: &mut View,
        names: &BTreeSet<String>,
        now: OffsetDateTime,
    ) -> Result<bool, ReconcileError> {
        let namespace = self.settings.namespace.as_str();
        let mut again = false;
        for name in names.iter().cloned() {
            let Some(client) = view.clients.get(&name) else {
                continue;
            };
            let Some(holder) = holder(ObjectKind::Client, namespace, &client.metadata, &name)
            else {
                continue;
            };
            let secret_name = holder.secret_name();
            match self.credential(&holder, view, now).await? {
                CredentialState::Ready => {}
                CredentialState::Conflict => {
                    again = true;
                    continue;
                }
            }
            let mut status = client.status.clone().unwrap_or_default();
            status.credential = Some(LocalObjectReference { name: secret_name });
            status.endpoint = Some(self.settings.grpc_endpoint.clone());
            if client.status.as_ref() == Some(&status) {
                continue;
            }
            let mut object = crd::Client::clone(client);
            object.status = Some(status);
            match self.store.replace_status(&object).await {
                Ok(written) => {
                    self.metrics.writes.inc();
                    view.clients.insert(name, Arc::new(written));
                }
                Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {
                    self.metrics.error("conflict");
                    again = true;
                }
                Err(source) => return Err(write_error("Client", namespace, &name, source)),
            }
        }
        Ok(again)
    }

    /// Credential Secrets of Exporters `names`; returns the Secret name of each of them
    /// whose credential is in place.
    async fn exporter_credentials(
        &self,
        view: &View,
        names: &BTreeSet<String>,
        now: OffsetDateTime,
    ) -> Result<ExporterCredentials, ReconcileError> {
        let namespace = self.settings.namespace.as_str();
        let mut result = ExporterCredentials::default();
        let holders: Vec<(&String, Holder)> = names
            .iter()
            .filter_map(|name| Some((name, view.exporters.get(name)?)))
            .filter_map(|(name, exporter)| {
                Some((
                    name,
                    holder(ObjectKind::Exporter, namespace, &exporter.metadata, name)?,
                ))
            })
            .collect();
        // Most are in place (a lookup); the others need a Secret written, concurrently.
        let (ready, missing): (Vec<_>, Vec<_>) = holders.iter().partition(|(_, holder)| {
            let existing = view.secrets.get(&holder.secret_name()).map(Arc::as_ref);
            credential::in_place(holder, existing, &self.credentials.current(), now)
        });
        for (name, holder) in ready {
            result.secrets.insert((*name).clone(), holder.secret_name());
        }
        let writes: Vec<_> = missing
            .iter()
            .map(|(_, holder)| self.credential(holder, view, now))
            .collect();
        let states: Vec<_> = futures::stream::iter(writes)
            .buffered(WRITES_IN_FLIGHT)
            .collect()
            .await;
        for ((name, holder), state) in missing.into_iter().zip(states) {
            match state? {
                CredentialState::Ready => {
                    result.secrets.insert((*name).clone(), holder.secret_name());
                }
                CredentialState::Conflict => result.again = true,
            }
        }
        Ok(result)
    }

    async fn credential(
        &self,
        holder: &Holder,
        view: &View,
        now: OffsetDateTime,
    ) -> Result<CredentialState, ReconcileError> {
        let existing = view.secrets.get(&holder.secret_name()).map(Arc::as_ref);
        match credential::ensure(
            &self.store,
            holder,
            existing,
            &self.keys.tokens.current().issuer,
            &self.credentials.current(),
            now,
        )
        .await
        {
            Ok(wrote) => {
                if wrote {
                    self.metrics.writes.inc();
                }
                Ok(CredentialState::Ready)
            }
            Err(ReconcileError::Write {
                source: StoreError::Conflict { .. } | StoreError::AlreadyExists { .. },
                ..
            }) => {
                self.metrics.error("conflict");
                Ok(CredentialState::Conflict)
            }
            Err(error) => Err(error),
        }
    }
}

#[derive(Debug, Default)]
struct ExporterCredentials {
    secrets: BTreeMap<String, String>,
    again: bool,
}

enum CredentialState {
    Ready,
    Conflict,
}

/// The credential holder of an object with `meta`; `None` without a UID. A malformed
/// generation annotation counts as 0: authentication refuses every token of that object
/// until it is fixed, and the Secret is re-signed at the fixed generation then.
fn holder(kind: ObjectKind, namespace: &str, meta: &ObjectMeta, name: &str) -> Option<Holder> {
    let (migrated_namespace, migrated_uid) = crate::crd::vocabulary::migrated_subject(meta);
    Some(Holder {
        kind,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid: meta.uid.clone()?,
        generation: crate::auth::revocation::generation(meta).unwrap_or(0),
        migrated_namespace,
        migrated_uid,
    })
}

fn write_error(
    kind: &'static str,
    namespace: &str,
    name: &str,
    source: StoreError,
) -> ReconcileError {
    ReconcileError::Write {
        kind,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source,
    }
}

/// `names`, and the objects of `all` whose credential Secret (`<name><suffix>`) is among
/// `secrets`.
fn owners<K>(
    suffix: &str,
    all: &BTreeMap<String, K>,
    names: &BTreeSet<String>,
    secrets: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut owners = names.clone();
    owners.extend(
        secrets
            .iter()
            .filter_map(|secret| secret.strip_suffix(suffix))
            .filter(|name| all.contains_key(*name))
            .map(str::to_owned),
    );
    owners
}

/// When a pass starting at `now` re-derives everything next.
fn resync_after(now: OffsetDateTime) -> OffsetDateTime {
    now.checked_add(RESYNC).unwrap_or(now)
}

/// What changed in every copy since the last pass.
struct Changeset {
    exporters: Changes<crd::Exporter>,
    leases: Changes<crd::Lease>,
    clients: Changes<crd::Client>,
    /// Every policy when any changed (there are few).
    policies: Option<BTreeMap<String, Arc<crd::ExporterAccessPolicy>>>,
    secrets: Changes<Secret>,
}

/// What changed in the copies (everything when `all`), or `None` while one is incomplete
/// (the changes of the others are then lost: the caller starts over from a fresh read).
fn changes(reflections: &Reflections, all: bool) -> Option<Changeset> {
    let policies = match reflections.policies.take_changes(all)? {
        Changes::All(objects) => Some(objects),
        Changes::Names(names) if names.is_empty() => None,
        Changes::Names(_) => Some(reflections.policies.objects()?),
    };
    Some(Changeset {
        exporters: reflections.exporters.take_changes(all)?,
        leases: reflections.leases.take_changes(all)?,
        clients: reflections.clients.take_changes(all)?,
        policies,
        secrets: reflections.secrets.take_changes(all)?,
    })
}

impl Changeset {
    /// The view of a changeset of everything (objects left out of a partial one are not
    /// in it).
    fn into_view(self) -> View {
        let mut view = View::default();
        self.apply(&mut view);
        view
    }

    /// Applies the changes to `view`; returns the names changed.
    fn apply(self, view: &mut View) -> Dirty {
        let mut dirty = Dirty::default();
        apply_changes(&mut view.exporters, self.exporters, &mut dirty.exporters);
        apply_changes(&mut view.leases, self.leases, &mut dirty.leases);
        apply_changes(&mut view.clients, self.clients, &mut dirty.clients);
        apply_changes(&mut view.secrets, self.secrets, &mut dirty.secrets);
        if let Some(policies) = self.policies {
            view.policies = policies.into_values().collect();
            dirty.policies = true;
        }
        dirty
    }
}

fn apply_changes<K>(
    objects: &mut BTreeMap<String, Arc<K>>,
    changes: Changes<K>,
    dirty: &mut BTreeSet<String>,
) {
    match changes {
        Changes::All(all) => {
            dirty.extend(objects.keys().cloned());
            dirty.extend(all.keys().cloned());
            *objects = all;
        }
        Changes::Names(names) => {
            for (name, object) in names {
                match object {
                    Some(object) => objects.insert(name.clone(), object),
                    None => objects.remove(&name),
                };
                dirty.insert(name);
            }
        }
    }
}
