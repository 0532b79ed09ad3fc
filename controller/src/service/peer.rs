//! `jumpstarter.peer.v1.PeerService`: offers forwarded by peer replicas (see
//! [`crate::peer`]). Only peer tokens are accepted: the bearer token must verify with the
//! internal keys for the peer audience; client and exporter credentials are refused with
//! UNAUTHENTICATED. An offer goes into this replica's Listen queue of the lease, without
//! waiting, and the outcome is answered.

use time::OffsetDateTime;
use tonic::{Request, Status};

use jumpstarter_proto::jumpstarter::peer::v1::peer_service_server::PeerService;
use jumpstarter_proto::jumpstarter::peer::v1::{OfferRequest, OfferResponse, Outcome};
use jumpstarter_proto::jumpstarter::v1::ListenResponse;

use super::Services;
use super::listen::OfferError;
use super::metrics::observed_service;
use crate::auth::{CallMetadata, bearer_token};
use crate::store::Store;

/// The PeerService over a [`crate::store::Store`].
#[derive(Debug)]
pub(crate) struct PeerApi<S> {
    services: Services<S>,
}

impl<S: Store> PeerApi<S> {
    pub(crate) fn new(services: Services<S>) -> Self {
        PeerApi { services }
    }

    /// The replica the call's peer token names, or UNAUTHENTICATED.
    fn peer_caller<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let metadata = CallMetadata::from_metadata(request.metadata());
        let token = bearer_token(&metadata).map_err(|e| Status::unauthenticated(e.to_string()))?;
        let keys = self.services.shared.signers.current();
        let verifier = keys.verifier();
        jumpstarter_token::peer::verify(
            &verifier.keys,
            &verifier.issuer,
            token,
            OffsetDateTime::now_utc(),
        )
        .map_err(|e| Status::unauthenticated(format!("not a peer token: {e}")))
    }

    async fn offer_inner(&self, request: Request<OfferRequest>) -> Result<OfferResponse, Status> {
        let metrics = self.services.peer_metrics();
        let peer = match self.peer_caller(&request) {
            Ok(peer) => peer,
            Err(status) => {
                metrics.received("refused");
                return Err(status);
            }
        };
        let request = request.into_inner();
        let namespace = &self.services.shared.settings.namespace;
        let in_namespace = request
            .lease
            .split_once('/')
            .is_some_and(|(ns, name)| ns == namespace && !name.is_empty());
        if !in_namespace {
            metrics.received("refused");
            return Err(Status::invalid_argument(format!(
                "lease {} is not <namespace>/<name> in {namespace}",
                jumpstarter_lease::name::quoted(&request.lease)
            )));
        }
        let offered = self.services.shared.listeners.offer(
            &request.lease,
            ListenResponse {
                router_endpoint: request.router_endpoint,
                router_token: request.router_token,
            },
        );
        let (outcome, label) = match offered {
            Ok(()) => (Outcome::Queued, "queued"),
            Err(OfferError::NotListening) => (Outcome::NotListening, "not_listening"),
            Err(OfferError::Full) => (Outcome::Full, "full"),
        };
        metrics.received(label);
        tracing::debug!(%peer, lease = %request.lease, outcome = label, "offer from a peer");
        Ok(OfferResponse {
            outcome: outcome.into(),
        })
    }
}

observed_service! {
    PeerService for PeerApi, "PeerService";
    "Offer": offer, offer_inner(OfferRequest) -> OfferResponse;
}
