//! Leader election over a `coordination.k8s.io/v1` Lease, so that exactly one replica runs
//! the reconcile loop and the gRPC services that keep in-memory state.
//!
//! The protocol is client-go's: the holder renews `spec.renewTime` every
//! [`RENEW_INTERVAL`]; a contender takes over when the record has not changed for
//! [`LEASE_DURATION`] *as measured by its own clock since it last saw the record change*
//! (so clock skew between replicas does not matter), or at once when the holder released
//! it. Every write is conditional on the resourceVersion read, so two contenders never both
//! win. A holder that cannot renew for [`RENEW_DEADLINE`] stops its work before anybody
//! else may take over.
//!
//! Given an owner ([`Election::owner`], see [`crate::owner`]) the Lease carries a reference
//! to it from its creation, or from the next renewal when it was created without one.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use kube::api::ObjectMeta;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::kube::KubeStore;
use crate::store::{Store, StoreError};

/// Name of the election Lease in the controller's namespace.
pub const LEASE_NAME: &str = "jumpstarter-controller-leader";
/// How long a silent holder keeps the lease (client-go / controller-runtime default).
pub(crate) const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews: three chances before the lease runs out.
pub(crate) const RENEW_INTERVAL: Duration = Duration::from_secs(5);
/// A holder that has not renewed for this long stops its work: comfortably before
/// [`LEASE_DURATION`], so its work has ended before a contender can take over.
pub(crate) const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often a contender looks at the lease.
pub(crate) const RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// Timing and naming of an election; [`Election::default`] is what the controller uses.
#[derive(Debug, Clone)]
pub struct Election {
    pub lease_name: String,
    pub lease_duration: Duration,
    pub renew_interval: Duration,
    pub renew_deadline: Duration,
    pub retry_interval: Duration,
    /// Owner of the Lease, which is deleted with it; `None`: no owner.
    pub owner: Option<OwnerReference>,
}

impl Default for Election {
    fn default() -> Self {
        Election {
            lease_name: LEASE_NAME.to_owned(),
            lease_duration: LEASE_DURATION,
            renew_interval: RENEW_INTERVAL,
            renew_deadline: RENEW_DEADLINE,
            retry_interval: RETRY_INTERVAL,
            owner: None,
        }
    }
}

/// Why the election gave up.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The API refuses access to the election Lease; retrying would not help.
    #[error(
        "access to Lease {namespace}/{name} is forbidden (check the controller's RBAC for coordination.k8s.io leases)"
    )]
    Forbidden {
        namespace: String,
        name: String,
        #[source]
        source: StoreError,
    },
}

/// Runs `work` only while holding the election Lease [`LEASE_NAME`] in `namespace`, owned
/// by `owner`.
///
/// `work` receives a token that is cancelled when leadership is lost or `shutdown` is
/// cancelled, and must then return promptly. After a loss this replica contends again and
/// calls `work` anew when it wins. Returns when `shutdown` is cancelled or when `work`
/// returns on its own; either way the Lease is released so another replica takes over at
/// once.
pub async fn run_elected<F, Fut>(
    client: kube::Client,
    namespace: &str,
    identity: &str,
    owner: Option<OwnerReference>,
    shutdown: CancellationToken,
    work: F,
) -> Result<(), LeaderError>
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    run_elected_with(
        KubeStore::new(client),
        namespace,
        identity,
        &Election {
            owner,
            ..Election::default()
        },
        shutdown,
        work,
    )
    .await
}

/// [`run_elected`] on any store, with explicit timing.
pub async fn run_elected_with<S, F, Fut>(
    store: S,
    namespace: &str,
    identity: &str,
    election: &Election,
    shutdown: CancellationToken,
    mut work: F,
) -> Result<(), LeaderError>
where
    S: Store,
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut elector = Elector {
        store,
        namespace,
        identity,
        election,
        observed: None,
    };
    loop {
        // Contend until we hold the lease.
        loop {
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                attempt = elector.try_acquire() => attempt,
            };
            match attempt {
                Ok(true) => break,
                Ok(false) => {}
                Err(source @ StoreError::Forbidden { .. }) => return Err(elector.forbidden(source)),
                Err(error) => tracing::warn!(%error, "reading the leader election lease failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(election.retry_interval) => {}
            }
        }

        tracing::info!(identity, lease = %election.lease_name, "became leader");
        let token = shutdown.child_token();
        let running = work(token.clone());
        tokio::pin!(running);
        let mut renewed = Instant::now();
        let lost = loop {
            tokio::select! {
                () = &mut running => break false,
                _ = tokio::time::sleep(election.renew_interval) => {}
            }
            // The work goes on while the renewal runs, but only until the renew deadline: a
            // renewal that has not succeeded by then (failed, or hung on an API server that
            // does not answer) ends the work before a contender may take over.
            let deadline = renewed + election.renew_deadline;
            let renewal = tokio::time::timeout_at(deadline, elector.try_acquire());
            let result = tokio::select! {
                () = &mut running => break false,
                result = renewal => result,
            };
            match result {
                Ok(Ok(true)) => renewed = Instant::now(),
                Ok(Ok(false)) => break true,
                Ok(Err(error)) if Instant::now() >= deadline => {
                    tracing::warn!(%error, "could not renew the leader lease in time");
                    break true;
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "renewing the leader lease failed; retrying")
                }
                Err(_) => {
                    tracing::warn!(
                        deadline = ?election.renew_deadline,
                        "renewing the leader lease did not finish within the renew deadline"
                    );
                    break true;
                }
            }
        };
        if !lost {
            // Bounded: an API server that does not answer must not keep the process up.
            if tokio::time::timeout(election.renew_deadline, elector.release())
                .await
                .is_err()
            {
                tracing::warn!("releasing the leader lease timed out; it will expire");
            }
            tracing::info!(identity, "work finished; leadership released");
            return Ok(());
        }
        tracing::warn!(identity, "lost leadership; stopping work");
        token.cancel();
        running.await;
    }
}

struct Elector<'a, S> {
    store: S,
    namespace: &'a str,
    identity: &'a str,
    election: &'a Election,
    /// The resourceVersion last seen and when (by our clock) it was first seen.
    observed: Option<(String, Instant)>,
}

impl<S: Store> Elector<'_, S> {
    /// Acquires or renews the lease; `false` when someone else holds it.
    async fn try_acquire(&mut self) -> Result<bool, StoreError> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let name = self.election.lease_name.as_str();
        let duration_seconds =
            i32::try_from(self.election.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let owner = self.election.owner.as_ref();
        let Some(mut lease) = self.store.get::<Lease>(self.namespace, name).await? else {
            let mut lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some(self.namespace.to_owned()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.to_owned()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            crate::owner::adopt_if(&mut lease.metadata, owner);
            return match self.store.create(&lease).await {
                Ok(_) => Ok(true),
                Err(StoreError::AlreadyExists { .. }) => Ok(false),
                Err(error) => Err(error),
            };
        };

        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        if self
            .observed
            .as_ref()
            .is_none_or(|(seen, _)| *seen != version)
        {
            self.observed = Some((version, Instant::now()));
        }
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        let mine = holder == Some(self.identity);
        if !mine {
            let lease_duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.election.lease_duration, Duration::from_secs);
            let unchanged_for = self
                .observed
                .as_ref()
                .map_or(Duration::ZERO, |(_, at)| at.elapsed());
            if holder.is_some() && unchanged_for < lease_duration {
                return Ok(false);
            }
            tracing::info!(
                previous = holder.unwrap_or(""),
                identity = self.identity,
                "taking over the leader lease"
            );
            spec.holder_identity = Some(self.identity.to_owned());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.lease_duration_seconds = Some(duration_seconds);
        spec.renew_time = Some(now);
        crate::owner::adopt_if(&mut lease.metadata, owner);
        match self.store.replace(&lease).await {
            Ok(written) => {
                self.observed = written
                    .metadata
                    .resource_version
                    .map(|v| (v, Instant::now()));
                Ok(true)
            }
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Gives the lease up if we still hold it, so a contender need not wait for expiry.
    async fn release(&mut self) {
        let name = self.election.lease_name.as_str();
        let Ok(Some(mut lease)) = self.store.get::<Lease>(self.namespace, name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        if let Err(error) = self.store.replace(&lease).await {
            tracing::warn!(%error, "releasing the leader lease failed; it will expire");
        }
    }

    fn forbidden(&self, source: StoreError) -> LeaderError {
        LeaderError::Forbidden {
            namespace: self.namespace.to_owned(),
            name: self.election.lease_name.clone(),
            source,
        }
    }
}
