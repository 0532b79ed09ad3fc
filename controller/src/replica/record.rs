//! The I/O shell of the replica registry: this replica's record and the watch of all.
//!
//! [`spawn`] starts two tasks. The keeper creates this replica's record (a
//! `coordination.k8s.io/v1` Lease, see [`super`]) and renews it every
//! [`super::RENEW_INTERVAL`]; every write is conditional on the resourceVersion it read, and
//! a conflict or a missing record makes it read again. Each round it also deletes records
//! that expired long ago. At shutdown it deletes its record (if it still names this
//! incarnation), so peers stop counting it at once instead of at expiry. The watcher
//! feeds every Lease event of the namespace into the [`ReplicaRegistry`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use kube::api::ObjectMeta;
use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{
    ENDPOINT_ANNOTATION, INCARNATION_ANNOTATION, RECORD_DURATION, RENEW_INTERVAL, ReplicaId,
    ReplicaRegistry, record_name,
};
use crate::store::{Store, StoreError};

/// How long the record's deletion at shutdown may take: an API server that does not answer
/// must not hold the process up (the record then expires).
const DELETE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before a watch that ended is started again.
const WATCH_RESTART: Duration = Duration::from_secs(1);

/// Where and how this replica keeps its record.
#[derive(Debug, Clone)]
pub struct RecordConfig {
    /// The controller's namespace.
    pub namespace: String,
    /// `host:port` where peers reach this replica's gRPC port; `None`: peers cannot.
    pub endpoint: Option<String>,
    /// Owner of the record (the controller's Deployment), like the election Lease's.
    pub owner: Option<OwnerReference>,
    /// How often the record is renewed ([`RENEW_INTERVAL`]).
    pub renew_interval: Duration,
    /// How long a renewal keeps it valid ([`RECORD_DURATION`]).
    pub duration: Duration,
}

impl RecordConfig {
    /// The controller's timing.
    pub fn new(
        namespace: &str,
        endpoint: Option<String>,
        owner: Option<OwnerReference>,
    ) -> RecordConfig {
        RecordConfig {
            namespace: namespace.to_owned(),
            endpoint,
            owner,
            renew_interval: RENEW_INTERVAL,
            duration: RECORD_DURATION,
        }
    }
}

/// Keeps this replica's record and watches all records into `registry` until `shutdown`.
/// The handle ends once the record is deleted (or its deletion gave up): await it before
/// the process exits.
pub fn spawn<S: Store>(
    store: S,
    registry: Arc<ReplicaRegistry>,
    config: RecordConfig,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(watch(
        store.clone(),
        registry.clone(),
        config.namespace.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(keep(store, registry, config, shutdown))
}

/// Feeds the namespace's Lease events into `registry` until `shutdown`.
async fn watch<S: Store>(
    store: S,
    registry: Arc<ReplicaRegistry>,
    namespace: String,
    shutdown: CancellationToken,
) {
    loop {
        let mut events = store.watch::<Lease>(&namespace, None);
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                next = events.next() => next,
            };
            match next {
                Some(Ok(event)) => registry.apply(event, OffsetDateTime::now_utc()),
                Some(Err(error)) => {
                    tracing::warn!(%error, "watching the replica records failed; retrying")
                }
                None => break,
            }
        }
        registry.abandon_listing();
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(WATCH_RESTART) => {}
        }
    }
}

/// Creates and renews the record; deletes it at shutdown.
async fn keep<S: Store>(
    store: S,
    registry: Arc<ReplicaRegistry>,
    config: RecordConfig,
    shutdown: CancellationToken,
) {
    let me = registry.me();
    let name = record_name(&me.identity);
    let mut keeper = Keeper {
        store,
        config: &config,
        me: &me,
        name: &name,
        written: None,
    };
    tracing::info!(replica = %me, record = %name, endpoint = ?config.endpoint, "keeping the replica record");
    loop {
        if let Err(error) = keeper.renew().await {
            tracing::warn!(%error, record = %name, "renewing the replica record failed");
        }
        for stale in registry.view().stale_records(OffsetDateTime::now_utc()) {
            tracing::info!(record = %stale, "deleting a replica record expired long ago");
            if let Err(error) = keeper
                .store
                .delete::<Lease>(&config.namespace, &stale)
                .await
            {
                tracing::warn!(%error, record = %stale, "deleting a stale replica record failed");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(config.renew_interval) => {}
        }
    }
    match tokio::time::timeout(DELETE_TIMEOUT, keeper.delete()).await {
        Ok(Ok(())) => tracing::info!(record = %name, "replica record deleted"),
        Ok(Err(error)) => {
            tracing::warn!(%error, record = %name, "deleting the replica record failed; it will expire")
        }
        Err(_) => {
            tracing::warn!(record = %name, "deleting the replica record timed out; it will expire")
        }
    }
}

struct Keeper<'a, S> {
    store: S,
    config: &'a RecordConfig,
    me: &'a ReplicaId,
    name: &'a str,
    /// The record as last written (its resourceVersion makes the next write conditional).
    written: Option<Lease>,
}

impl<S: Store> Keeper<'_, S> {
    /// One renewal: from the record last written, else from a fresh read (or a create).
    async fn renew(&mut self) -> Result<(), StoreError> {
        if let Some(mut lease) = self.written.take() {
            self.fill(&mut lease);
            match self.store.replace(&lease).await {
                Ok(written) => {
                    self.written = Some(written);
                    return Ok(());
                }
                // Someone else wrote it, or it was deleted: read it again.
                Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        let namespace = &self.config.namespace;
        let written = match self.store.get::<Lease>(namespace, self.name).await? {
            Some(mut lease) => {
                let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.clone());
                let incarnation = lease
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(INCARNATION_ANNOTATION).cloned());
                if holder.as_deref() == Some(self.me.identity.as_str())
                    && incarnation.as_deref() != Some(self.me.incarnation.as_str())
                {
                    tracing::info!(
                        previous = incarnation.unwrap_or_default(),
                        "taking over the record of an earlier incarnation"
                    );
                }
                self.fill(&mut lease);
                self.store.replace(&lease).await?
            }
            None => {
                let mut lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.to_owned()),
                        namespace: Some(namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: None,
                };
                self.fill(&mut lease);
                self.store.create(&lease).await?
            }
        };
        self.written = Some(written);
        Ok(())
    }

    /// Writes what the record says into `lease`, renewed now.
    fn fill(&self, lease: &mut Lease) {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.me.identity.as_str())
            || spec.acquire_time.is_none()
        {
            spec.acquire_time = Some(now.clone());
        }
        spec.holder_identity = Some(self.me.identity.clone());
        spec.lease_duration_seconds =
            Some(i32::try_from(self.config.duration.as_secs()).unwrap_or(i32::MAX));
        spec.renew_time = Some(now);
        let annotations = lease.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(
            INCARNATION_ANNOTATION.to_owned(),
            self.me.incarnation.clone(),
        );
        match &self.config.endpoint {
            Some(endpoint) => {
                annotations.insert(ENDPOINT_ANNOTATION.to_owned(), endpoint.clone());
            }
            None => {
                annotations.remove(ENDPOINT_ANNOTATION);
            }
        }
        crate::owner::adopt_if(&mut lease.metadata, self.config.owner.as_ref());
    }

    /// Deletes the record if it still names this incarnation.
    async fn delete(&mut self) -> Result<(), StoreError> {
        let namespace = &self.config.namespace;
        let Some(lease) = self.store.get::<Lease>(namespace, self.name).await? else {
            return Ok(());
        };
        let mine = lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(INCARNATION_ANNOTATION))
            == Some(&self.me.incarnation);
        if mine {
            self.store.delete::<Lease>(namespace, self.name).await?;
        }
        Ok(())
    }
}
