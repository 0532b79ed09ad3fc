//! One reconcile pass over a namespace: read everything, then credentials, exporter
//! statuses, the lease plan and lease metadata. Level-triggered: a pass looks only at what
//! is stored now, so it can run at any time, any number of times.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;

use jumpstarter_token::internal::ObjectKind;
use k8s_openapi::api::core::v1::LocalObjectReference;
use kube::ResourceExt;
use kube::api::ObjectMeta;
use time::OffsetDateTime;

use jumpstarter_lease::scheduler;

use super::credential::{self, Holder};
use super::exporter::{desired_status, holds_stream, is_active};
use super::lease::{Applied, WRITES_IN_FLIGHT, apply_plan, exporter_updates, reconcile_metadata};
use super::metrics::LeaseStateLabels;
use super::reflections::Reflections;
use super::view::View;
use super::{ReconcileError, ReconcileMetrics};
use crate::crd;
use crate::keys::Keys;
use crate::keys::live::LiveVerifier;
use crate::replica::ReplicaRegistry;
use crate::settings::Settings;
use crate::store::{Store, StoreError};

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
        }
    }

    /// Exporters whose Status stream a live replica holds are online ([`holds_stream`]).
    pub fn with_replicas(self, replicas: Arc<ReplicaRegistry>) -> Self {
        Reconciler {
            replicas: Some(replicas),
            ..self
        }
    }

    /// Passes read `reflections` (once complete) instead of listing the store.
    pub(crate) fn with_reflections(self, reflections: Arc<Reflections>) -> Self {
        Reconciler {
            reflections: Some(reflections),
            ..self
        }
    }

    /// One pass at `now`.
    pub async fn pass(&self, now: OffsetDateTime) -> Result<Outcome, ReconcileError> {
        self.metrics.passes.inc();
        let writes_before = self.metrics.writes.get();
        let namespace = self.settings.namespace.as_str();
        let reflected = self.reflections.as_ref().and_then(|r| r.view());
        let mut view =
            match reflected {
                Some(view) => view,
                None => View::read(&self.store, namespace).await.map_err(|source| {
                    ReconcileError::Read {
                        namespace: namespace.to_owned(),
                        source,
                    }
                })?,
            };
        let mut again = false;

        again |= self.clients(&mut view, now).await?;
        let credentials = self.exporter_credentials(&view, now).await?;
        again |= credentials.again;

        // What this pass wants each exporter's status to be (leaseRef aside); the planner
        // sees these, so an exporter found offline now is not assigned now.
        let replicas = self.replicas.as_ref().map(|r| r.view());
        let desired: BTreeMap<String, crd::ExporterStatus> = view
            .exporters
            .iter()
            .map(|(name, e)| {
                let secret = credentials.secrets.get(name).map(String::as_str);
                let held = holds_stream(e, replicas.as_ref(), now);
                (
                    name.clone(),
                    desired_status(e, secret, &self.settings.grpc_endpoint, held, now),
                )
            })
            .collect();
        let plan = scheduler::plan(&view.snapshot(&desired), now);
        let applied =
            apply_plan(&self.store, &mut view, &desired, &plan, &self.metrics, now).await?;
        if applied == Applied::Stale {
            return Ok(self.outcome(plan.next_wakeup, true, writes_before));
        }
        again |= reconcile_metadata(&self.store, &mut view, &self.metrics).await?;

        let updates = exporter_updates(&view, &desired);
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
                    view.exporters.insert(name, Arc::new(written));
                }
                Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {
                    self.metrics.error("conflict");
                    again = true;
                }
                Err(source) => return Err(write_error("Exporter", namespace, &name, source)),
            }
        }

        self.count_leases(&view);
        Ok(self.outcome(plan.next_wakeup, again, writes_before))
    }

    fn outcome(
        &self,
        next_wakeup: Option<OffsetDateTime>,
        again: bool,
        writes_before: u64,
    ) -> Outcome {
        Outcome {
            next_wakeup,
            again,
            writes: self.metrics.writes.get().saturating_sub(writes_before),
        }
    }

    /// Credentials and status (`credential`, `endpoint`) of every Client. Returns whether a
    /// write conflicted.
    async fn clients(&self, view: &mut View, now: OffsetDateTime) -> Result<bool, ReconcileError> {
        let namespace = self.settings.namespace.as_str();
        let mut again = false;
        let names: Vec<String> = view.clients.keys().cloned().collect();
        for name in names {
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

    /// Credential Secrets of every Exporter; returns the Secret name of each exporter whose
    /// credential is in place.
    async fn exporter_credentials(
        &self,
        view: &View,
        now: OffsetDateTime,
    ) -> Result<ExporterCredentials, ReconcileError> {
        let namespace = self.settings.namespace.as_str();
        let mut result = ExporterCredentials::default();
        let holders: Vec<(&String, Holder)> = view
            .exporters
            .iter()
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

    fn count_leases(&self, view: &View) {
        let (mut pending, mut ready, mut ended) = (0, 0, 0);
        for lease in view.leases.values() {
            let assigned = lease
                .status
                .as_ref()
                .is_some_and(|s| s.exporter_ref.is_some());
            match (is_active(lease), assigned) {
                (false, _) => ended += 1,
                (true, true) => ready += 1,
                (true, false) => pending += 1,
            }
        }
        for (state, count) in [("pending", pending), ("ready", ready), ("ended", ended)] {
            self.metrics
                .leases
                .get_or_create(&LeaseStateLabels { state })
                .set(count);
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
    Some(Holder {
        kind,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid: meta.uid.clone()?,
        generation: crate::auth::revocation::generation(meta).unwrap_or(0),
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
