//! The gRPC services of the controller, generic over the object [`Store`]: they never see
//! Kubernetes.
//!
//! - [`ControllerApi`] (`jumpstarter.v1.ControllerService`): exporter registration,
//!   status reports, the Status and Listen streams, Dial and the legacy lease calls.
//! - [`ClientApi`] (`jumpstarter.client.v1.ClientService`): exporters and leases as
//!   resources, and token rotation.
//! - [`LeaseCertificateApi`] (`jumpstarter.quic.v1.LeaseCertificateService`): per-lease
//!   certificates signed from a party's CSR; served when the services carry a CA
//!   ([`Services::with_lease_ca`]).
//! - [`PeerApi`] (`jumpstarter.peer.v1.PeerService`): Dial offers forwarded by peer
//!   replicas, for peers only (see [`crate::peer`]).
//!
//! Both share one [`Services`] context: store, the watch-fed [`cache::ReadCache`] they
//! read from, settings, token signers, the [`Authenticator`], the in-memory
//! [`listen::ListenRegistry`] and metrics.
//!
//! Helpers, one concept each: [`cache`] (the watch-fed read cache), [`paging`] (list
//! pages and their tokens), [`names`] (resource names), [`wire`] (object ↔ protobuf),
//! [`lease_request`] (wire ↔ lease domain ↔ Lease objects), [`lease_error`] (the one
//! `LeaseError` → status mapping), [`listen`] (Dial ↔ Listen queues),
//! [`router_choice`] (router scoring), [`reported_labels`] (what an exporter may label
//! itself with), [`write`] (read-modify-write with retry), [`status_stream`] (the exporter
//! Status stream), [`heartbeat`] (when `lastSeen` is refreshed), [`rate_limiter`]
//! (per-caller token buckets), [`metrics`].

pub(crate) mod activity;
pub(crate) mod cache;
pub(crate) mod client;
pub(crate) mod controller;
pub(crate) mod heartbeat;
pub(crate) mod lease_certificate;
pub(crate) mod lease_error;
pub(crate) mod lease_request;
pub(crate) mod listen;
pub(crate) mod metrics;
pub(crate) mod names;
pub(crate) mod paging;
pub(crate) mod peer;
pub(crate) mod rate_limiter;
pub(crate) mod reported_labels;
pub(crate) mod router_choice;
pub(crate) mod status_stream;
pub(crate) mod wire;
pub(crate) mod write;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tonic::Status;

use jumpstarter_certs::Ca;
use jumpstarter_token::SigningKey;
use jumpstarter_token::internal::Issuer;

pub(crate) use client::ClientApi;
pub(crate) use controller::ControllerApi;
pub(crate) use lease_certificate::LeaseCertificateApi;
pub use metrics::ServiceMetrics;
pub(crate) use peer::PeerApi;

use crate::auth::{AuthMetrics, Authenticator, store_code};
use crate::crd::Lease;
use crate::keys::live::{LiveKeys, TokenKeySet};
use crate::peer::{Forwarder, PeerMetrics};
use crate::replica::{ReplicaId, ReplicaRegistry};
use crate::settings::Settings;
use crate::store::{Store, StoreError};
use cache::ReadCache;
use listen::ListenRegistry;
use rate_limiter::RateLimiter;
use status_stream::StatusStreams;

/// Fixed signing keys for the services (tests, embedders); the controller passes its
/// [`LiveKeys`] instead, which follow the keys Secret.
#[derive(Debug, Clone)]
pub struct TokenSigners {
    /// Issues and verifies client and exporter tokens (RotateToken, authentication).
    pub issuer: Issuer,
    /// Signs router stream tokens at Dial.
    pub router_key: SigningKey,
}

impl From<TokenSigners> for LiveKeys {
    fn from(signers: TokenSigners) -> Self {
        LiveKeys::new(TokenKeySet::new(signers.issuer, signers.router_key))
    }
}

/// The shared context of both services. Cheap to clone.
#[derive(Debug)]
pub struct Services<S> {
    shared: Arc<Shared<S>>,
    /// The CA that signs per-lease certificates; without it that service is not offered.
    lease_ca: Option<Arc<Ca>>,
    /// The controller replicas ([`Services::with_replicas`]); one alone by default.
    replicas: Arc<ReplicaRegistry>,
    /// Offers Dials to peer replicas ([`Services::with_forwarder`]); `None`: never.
    forwarder: Option<Arc<Forwarder>>,
    /// Counts offers received from peers (the forwarder's, when there is one).
    peer_metrics: Arc<PeerMetrics>,
}

impl<S: Store> Services<S> {
    /// The watch-fed copies the services read (the dashboard reads them too).
    pub(crate) fn read_cache(&self) -> Arc<ReadCache<S>> {
        self.shared.cache.clone()
    }
}

impl<S> Clone for Services<S> {
    fn clone(&self) -> Self {
        Services {
            shared: self.shared.clone(),
            lease_ca: self.lease_ca.clone(),
            replicas: self.replicas.clone(),
            forwarder: self.forwarder.clone(),
            peer_metrics: self.peer_metrics.clone(),
        }
    }
}

#[derive(Debug)]
struct Shared<S> {
    store: S,
    /// The watch-fed copies the services read (and put their own writes into).
    cache: Arc<ReadCache<S>>,
    settings: Arc<Settings>,
    /// The token keys in use now (read at each use: they change with the keys Secret).
    signers: LiveKeys,
    auth: Authenticator<S>,
    listeners: ListenRegistry,
    status_streams: StatusStreams,
    /// Dials per client ([`crate::limits::Limits::dial`]).
    dial_limiter: RateLimiter,
    /// Leases whose session activity is being written ([`activity`]).
    activity: activity::InFlight,
    /// Token rotations per client ([`crate::limits::Limits::rotate_token`]).
    rotate_limiter: RateLimiter,
    metrics: Arc<ServiceMetrics>,
    /// Cancelled at shutdown: every open stream ends.
    shutdown: CancellationToken,
}

impl<S: Store> Services<S> {
    pub fn new(
        store: S,
        settings: Arc<Settings>,
        signers: impl Into<LiveKeys>,
        auth_metrics: Arc<AuthMetrics>,
        metrics: Arc<ServiceMetrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let signers = signers.into();
        let cache = Arc::new(ReadCache::new(
            store.clone(),
            Arc::clone(&metrics),
            shutdown.clone(),
        ));
        let policy = crate::auth::AuthPolicy {
            internal_prefix: settings.internal_prefix.clone(),
            provisioning: settings.provisioning,
        };
        let auth = Authenticator::new(Arc::clone(&cache), signers.clone(), auth_metrics, policy);
        Services {
            shared: Arc::new(Shared {
                dial_limiter: RateLimiter::new(settings.limits.dial),
                rotate_limiter: RateLimiter::new(settings.limits.rotate_token),
                store,
                cache,
                settings,
                signers,
                auth,
                listeners: ListenRegistry::default(),
                status_streams: StatusStreams::default(),
                activity: activity::InFlight::default(),
                metrics,
                shutdown,
            }),
            lease_ca: None,
            replicas: ReplicaRegistry::single(ReplicaId::new("controller")),
            forwarder: None,
            peer_metrics: Arc::default(),
        }
    }

    /// These services plus `LeaseCertificateService`, signing with `ca`.
    pub fn with_lease_ca(mut self, ca: Arc<Ca>) -> Self {
        self.lease_ca = Some(ca);
        self
    }

    /// These services accepting the tokens of the JWT authenticators `authenticators` too
    /// (identity providers, service accounts).
    pub fn with_jwt(self, authenticators: crate::jwt::Authenticators) -> Self {
        self.shared.auth.set_external(authenticators);
        self
    }

    /// These services as one replica of `replicas`.
    pub fn with_replicas(mut self, replicas: Arc<ReplicaRegistry>) -> Self {
        self.replicas = replicas;
        self
    }

    /// These services, offering Dials nobody listens to here to the peers `forwarder`
    /// knows.
    pub fn with_forwarder(mut self, forwarder: Arc<Forwarder>) -> Self {
        self.peer_metrics = forwarder.metrics().clone();
        self.forwarder = Some(forwarder);
        self
    }

    /// The `jumpstarter.peer.v1.PeerService` implementation.
    pub(crate) fn peer(&self) -> PeerApi<S> {
        PeerApi::new(self.clone())
    }

    fn peer_metrics(&self) -> &PeerMetrics {
        &self.peer_metrics
    }

    /// The controller replicas these services belong to.
    pub fn replicas(&self) -> &Arc<ReplicaRegistry> {
        &self.replicas
    }

    /// The `jumpstarter.v1.ControllerService` implementation.
    pub fn controller(&self) -> ControllerApi<S> {
        ControllerApi::new(self.clone())
    }

    /// The `jumpstarter.client.v1.ClientService` implementation.
    pub fn client(&self) -> ClientApi<S> {
        ClientApi::new(self.clone())
    }

    /// The `jumpstarter.quic.v1.LeaseCertificateService` implementation, when the
    /// services carry a CA.
    pub(crate) fn lease_certificates(&self) -> Option<LeaseCertificateApi<S>> {
        let ca = self.lease_ca.clone()?;
        Some(LeaseCertificateApi::new(self.clone(), ca))
    }

    /// Whether the services' read cache has caught up with `object` as written to the store
    /// by someone else (the watch has reported that version or a newer one). For tests and
    /// embedders that write behind the services' back and must know when the services
    /// read it.
    pub fn has_seen<K: crate::store::Object>(&self, object: &K) -> bool {
        self.shared.cache.has_seen(object)
    }

    /// The Dial ↔ Listen queues.
    pub fn listeners(&self) -> &ListenRegistry {
        &self.shared.listeners
    }
}

impl<S: Store> Shared<S> {
    /// Refuses a new lease of `client` (CreateLease, and the legacy RequestLease) when it
    /// already has `limits.max_pending_leases_per_client` leases waiting for an exporter.
    async fn check_pending_leases(&self, namespace: &str, client: &str) -> Result<(), Status> {
        let max = self.settings.limits.max_pending_leases_per_client;
        let leases = self
            .cache
            .list::<Lease>(namespace)
            .await
            .map_err(store_status)?;
        let pending = leases
            .iter()
            .filter(|l| l.spec.client_ref.name == client && is_pending(l))
            .count();
        if pending >= max {
            self.metrics.refused("pending_leases_per_client");
            return Err(Status::resource_exhausted(format!(
                "client {namespace}/{client} already has {pending} leases waiting for an \
                 exporter (the limit is {max}); release some or wait until they are ready"
            )));
        }
        Ok(())
    }
}

/// A lease that is neither ended nor released and has no exporter yet.
fn is_pending(lease: &Lease) -> bool {
    let status = lease.status.as_ref();
    !status.is_some_and(|s| s.ended)
        && !lease.spec.release.unwrap_or(false)
        && status.and_then(|s| s.exporter_ref.as_ref()).is_none()
}

/// RESOURCE_EXHAUSTED for a call over its rate: says which limit and when to retry, also as
/// the `retry-after-ms` metadata entry.
pub(crate) fn rate_limited(what: &str, retry_after: std::time::Duration) -> Status {
    let millis = retry_after.as_millis().max(1);
    let mut status = Status::resource_exhausted(format!(
        "too many {what} calls from this caller; retry in {millis} ms"
    ));
    if let Ok(value) = millis.to_string().parse() {
        status.metadata_mut().insert("retry-after-ms", value);
    }
    status
}

/// A store failure as a gRPC status (the message names the object).
pub(crate) fn store_status(err: StoreError) -> Status {
    Status::new(store_code(&err), err.to_string())
}
