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
//!
//! Both share one [`Services`] context: store, settings, token signers, the
//! [`Authenticator`], the in-memory [`listen::ListenRegistry`] and metrics.
//!
//! Helpers, one concept each: [`names`] (resource names), [`wire`] (object ↔ protobuf),
//! [`lease_request`] (wire ↔ lease domain ↔ Lease objects), [`lease_error`] (the one
//! `LeaseError` → status mapping), [`listen`] (Dial ↔ Listen queues),
//! [`router_choice`] (router scoring), [`reported_labels`] (what an exporter may label
//! itself with), [`write`] (read-modify-write with retry),
//! [`status_stream`] (the exporter Status stream), [`metrics`].

pub(crate) mod client;
pub(crate) mod controller;
pub(crate) mod lease_certificate;
pub(crate) mod lease_error;
pub(crate) mod lease_request;
pub(crate) mod listen;
pub(crate) mod metrics;
pub(crate) mod names;
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

use crate::auth::{AuthMetrics, Authenticator, store_code};
use crate::settings::Settings;
use crate::store::{Store, StoreError};
use listen::ListenRegistry;

/// The signing keys the services use.
#[derive(Debug, Clone)]
pub struct TokenSigners {
    /// Issues and verifies client and exporter tokens (RotateToken, authentication).
    pub issuer: Issuer,
    /// Signs router stream tokens at Dial.
    pub router_key: SigningKey,
}

/// The shared context of both services. Cheap to clone.
#[derive(Debug)]
pub struct Services<S> {
    shared: Arc<Shared<S>>,
    /// The CA that signs per-lease certificates; without it that service is not offered.
    lease_ca: Option<Arc<Ca>>,
}

impl<S> Clone for Services<S> {
    fn clone(&self) -> Self {
        Services {
            shared: self.shared.clone(),
            lease_ca: self.lease_ca.clone(),
        }
    }
}

#[derive(Debug)]
struct Shared<S> {
    store: S,
    settings: Arc<Settings>,
    signers: TokenSigners,
    auth: Authenticator<S>,
    listeners: ListenRegistry,
    metrics: Arc<ServiceMetrics>,
    /// Cancelled at shutdown: every open stream ends.
    shutdown: CancellationToken,
}

impl<S: Store> Services<S> {
    pub fn new(
        store: S,
        settings: Arc<Settings>,
        signers: TokenSigners,
        auth_metrics: Arc<AuthMetrics>,
        metrics: Arc<ServiceMetrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let auth = Authenticator::new(store.clone(), signers.issuer.verifier(), auth_metrics);
        Services {
            shared: Arc::new(Shared {
                store,
                settings,
                signers,
                auth,
                listeners: ListenRegistry::default(),
                metrics,
                shutdown,
            }),
            lease_ca: None,
        }
    }

    /// These services plus `LeaseCertificateService`, signing with `ca`.
    pub fn with_lease_ca(mut self, ca: Arc<Ca>) -> Self {
        self.lease_ca = Some(ca);
        self
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

    /// The Dial ↔ Listen queues.
    pub fn listeners(&self) -> &ListenRegistry {
        &self.shared.listeners
    }
}

/// A store failure as a gRPC status (the message names the object).
pub(crate) fn store_status(err: StoreError) -> Status {
    Status::new(store_code(&err), err.to_string())
}
