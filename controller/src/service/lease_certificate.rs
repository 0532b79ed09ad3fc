//! `jumpstarter.quic.v1.LeaseCertificateService`: per-lease certificates for the QUIC
//! data plane.
//!
//! A party to a lease — the client that holds it (`spec.clientRef`) or the exporter
//! assigned to it (`status.exporterRef`) — authenticates with its token (the
//! `jumpstarter-kind` metadata says which) and sends a CSR. The controller's CA signs it
//! for that lease and role; the private key never leaves the requester. The certificate
//! ends no later than the lease's expiry (as the scheduler computes it), never lasts
//! longer than `lease_cert_max_validity`, and starts [`BACKDATE`] before now to absorb
//! clock skew. The response names the QUIC endpoint of the router chosen for the lease
//! the same way Dial chooses it.
//!
//! Refusals: NOT_FOUND (unknown lease), PERMISSION_DENIED (not a party),
//! FAILED_PRECONDITION (ended or not yet assigned), INVALID_ARGUMENT (malformed CSR or a
//! CSR whose signature does not verify).

use std::sync::Arc;

use time::{Duration, OffsetDateTime};
use tonic::{Request, Status};

use jumpstarter_certs::{Ca, LeaseCertPolicy, LeaseIdentity, Role};
use jumpstarter_proto::jumpstarter::quic::v1 as pb;
use jumpstarter_proto::jumpstarter::quic::v1::lease_certificate_service_server::LeaseCertificateService;
use jumpstarter_token::internal::ObjectKind;

use jumpstarter_lease::scheduler;

use super::metrics::observed_service;
use super::{Services, router_choice, store_status};
use crate::auth::{CallMetadata, Caller};
use crate::crd::vocabulary::time_of;
use crate::crd::{Exporter, Lease};
use crate::store::Store;

/// How far a certificate's `notBefore` lies before the time it is issued.
pub(crate) const BACKDATE: Duration = Duration::seconds(30);

/// The `LeaseCertificateService` implementation.
#[derive(Debug)]
pub(crate) struct LeaseCertificateApi<S> {
    services: Services<S>,
    ca: Arc<Ca>,
}

impl<S> Clone for LeaseCertificateApi<S> {
    fn clone(&self) -> Self {
        LeaseCertificateApi {
            services: self.services.clone(),
            ca: self.ca.clone(),
        }
    }
}

/// Why a lease cannot get certificates now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inactive {
    Ended,
    NotAssigned,
}

impl Inactive {
    fn status(self, lease: &str) -> Status {
        let why = match self {
            Inactive::Ended => "ended",
            Inactive::NotAssigned => "not assigned yet",
        };
        Status::failed_precondition(format!("lease {lease} is not active ({why})"))
    }
}

/// The facts about a lease this service decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseFacts {
    pub client: String,
    pub exporter: Option<String>,
    pub ended: bool,
    /// When the lease expires; `None` when it never does (or cannot be told yet).
    pub expiry: Option<OffsetDateTime>,
}

impl LeaseFacts {
    /// Reads the stored lease. The expiry follows the scheduler: `spec.endTime`, else
    /// `spec.beginTime + duration`, else `status.beginTime + duration`.
    pub(crate) fn of(lease: &Lease) -> LeaseFacts {
        let status = lease.status.clone().unwrap_or_default();
        let spec = scheduler::LeaseSpec {
            duration: lease
                .spec
                .duration
                .as_deref()
                .and_then(|text| scheduler::duration::parse(text).ok()),
            begin_time: lease.spec.begin_time.as_ref().map(time_of),
            end_time: lease.spec.end_time.as_ref().map(time_of),
            ..scheduler::LeaseSpec::default()
        };
        let expiry = status
            .begin_time
            .as_ref()
            .map(time_of)
            .and_then(|begin| scheduler::planner::started_expiry(&spec, begin));
        LeaseFacts {
            client: lease.spec.client_ref.name.clone(),
            exporter: status
                .exporter_ref
                .map(|r| r.name)
                .filter(|name| !name.is_empty()),
            // A release the reconciler has not acted on yet ends the lease for certificates
            // already: the client gave it up.
            ended: status.ended || lease.spec.release == Some(true),
            expiry,
        }
    }

    /// The role `caller` plays in this lease, or `None` when it is not a party.
    pub(crate) fn role_of(&self, kind: ObjectKind, name: &str) -> Option<Role> {
        match kind {
            ObjectKind::Client if self.client == name => Some(Role::Client),
            ObjectKind::Exporter if self.exporter.as_deref() == Some(name) => Some(Role::Exporter),
            _ => None,
        }
    }

    /// Fails unless the lease is assigned and not ended.
    pub(crate) fn check_active(&self) -> Result<&str, Inactive> {
        if self.ended {
            return Err(Inactive::Ended);
        }
        self.exporter.as_deref().ok_or(Inactive::NotAssigned)
    }
}

/// The gRPC status for a failure to sign: the requester's mistakes are INVALID_ARGUMENT.
fn signing_status(lease: &str, err: jumpstarter_certs::Error) -> Status {
    use jumpstarter_certs::Error;
    match err {
        Error::CsrParse { .. } | Error::CsrSignature | Error::CsrKeyAlgorithm(_) => {
            Status::invalid_argument(err.to_string())
        }
        Error::LeaseEnded { .. } => Inactive::Ended.status(lease),
        other => Status::internal(format!("cannot sign the certificate: {other}")),
    }
}

impl<S: Store> LeaseCertificateApi<S> {
    pub(crate) fn new(services: Services<S>, ca: Arc<Ca>) -> Self {
        LeaseCertificateApi { services, ca }
    }

    async fn authenticate(
        &self,
        request: &Request<pb::IssueLeaseCertificateRequest>,
    ) -> Result<(Caller, Option<Exporter>), Status> {
        let auth = &self.services.shared.auth;
        let call = CallMetadata::from_metadata(request.metadata());
        let wants_exporter = call.kind.len() == 1
            && call.kind.first().map(String::as_str) == Some(ObjectKind::Exporter.as_str());
        if wants_exporter {
            let (caller, exporter) = auth.exporter(request.metadata()).await?;
            Ok((caller, Some(exporter)))
        } else {
            // Also the path for a missing or unknown kind: the authenticator refuses it.
            let (caller, _) = auth.client(request.metadata()).await?;
            Ok((caller, None))
        }
    }

    async fn issue(
        &self,
        request: Request<pb::IssueLeaseCertificateRequest>,
    ) -> Result<pb::IssueLeaseCertificateResponse, Status> {
        let (caller, own_exporter) = self.authenticate(&request).await?;
        let pb::IssueLeaseCertificateRequest { lease_name, csr } = request.into_inner();
        if !jumpstarter_lease::name::is_object_name(&lease_name) {
            return Err(Status::invalid_argument(format!(
                "invalid lease name {}",
                jumpstarter_lease::name::quoted(&lease_name)
            )));
        }
        let namespace = caller.namespace.clone();
        let store = &self.services.shared.store;
        let lease = store
            .get::<Lease>(&namespace, &lease_name)
            .await
            .map_err(store_status)?
            .ok_or_else(|| {
                Status::not_found(format!("lease {namespace}/{lease_name} not found"))
            })?;
        let facts = LeaseFacts::of(&lease);
        let Some(role) = facts.role_of(caller.kind, &caller.name) else {
            return Err(Status::permission_denied(format!(
                "not a party to lease {lease_name}"
            )));
        };
        let exporter_name = facts
            .check_active()
            .map_err(|why| why.status(&lease_name))?
            .to_owned();

        let now = OffsetDateTime::now_utc();
        // The client asking for a certificate is about to open QUIC sessions.
        if role == Role::Client {
            self.services.record_activity(&lease, now);
        }
        let settings = &self.services.shared.settings;
        let identity = LeaseIdentity {
            namespace: namespace.clone(),
            lease_name: lease_name.clone(),
            lease_uid: lease.metadata.uid.clone().unwrap_or_default(),
            role,
            holder: caller.name.clone(),
        };
        let policy = LeaseCertPolicy {
            // A lease that never expires is bounded by the maximum validity alone.
            lease_end: facts
                .expiry
                .unwrap_or_else(|| now.saturating_add(settings.lease_cert_max_validity)),
            max_validity: settings.lease_cert_max_validity,
            backdate: BACKDATE,
        };
        let issued = self
            .ca
            .sign_lease_csr(&csr, &identity, &policy, now)
            .map_err(|err| signing_status(&lease_name, err))?;

        let exporter = match own_exporter {
            Some(exporter) => Some(exporter),
            None => store
                .get::<Exporter>(&namespace, &exporter_name)
                .await
                .map_err(store_status)?,
        };
        let labels = exporter.and_then(|e| e.metadata.labels).unwrap_or_default();
        let key = format!("{namespace}/{lease_name}");
        let router_quic_endpoint = router_choice::choose(&settings.routers, &labels, &key)
            .and_then(|router| router.quic_endpoint.clone())
            .unwrap_or_default();

        Ok(pb::IssueLeaseCertificateResponse {
            certificate_pem: issued.cert_pem,
            chain_pem: issued.chain_pem,
            ca_pem: self.ca.cert_pem().to_owned(),
            not_after: Some(prost_types::Timestamp {
                seconds: issued.not_after.unix_timestamp(),
                nanos: 0,
            }),
            router_quic_endpoint,
            role: role.as_str().to_owned(),
        })
    }
}

observed_service! {
    LeaseCertificateService for LeaseCertificateApi, "LeaseCertificateService";
    "IssueLeaseCertificate": issue_lease_certificate,
        issue(pb::IssueLeaseCertificateRequest) -> pb::IssueLeaseCertificateResponse;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(exporter: Option<&str>, ended: bool) -> LeaseFacts {
        LeaseFacts {
            client: "alice".into(),
            exporter: exporter.map(str::to_owned),
            ended,
            expiry: None,
        }
    }

    #[test]
    fn parties_get_their_role_and_others_none() {
        let f = facts(Some("board"), false);
        assert_eq!(f.role_of(ObjectKind::Client, "alice"), Some(Role::Client));
        assert_eq!(
            f.role_of(ObjectKind::Exporter, "board"),
            Some(Role::Exporter)
        );
        assert_eq!(f.role_of(ObjectKind::Client, "bob"), None);
        assert_eq!(f.role_of(ObjectKind::Client, "board"), None);
        assert_eq!(f.role_of(ObjectKind::Exporter, "alice"), None);
        assert_eq!(
            facts(None, false).role_of(ObjectKind::Exporter, "board"),
            None
        );
    }

    #[test]
    fn only_assigned_open_leases_are_active() {
        assert_eq!(facts(Some("board"), false).check_active(), Ok("board"));
        assert_eq!(
            facts(Some("board"), true).check_active(),
            Err(Inactive::Ended)
        );
        assert_eq!(
            facts(None, false).check_active(),
            Err(Inactive::NotAssigned)
        );
        assert_eq!(
            Inactive::NotAssigned.status("l1").message(),
            "lease l1 is not active (not assigned yet)"
        );
    }

    #[test]
    fn requester_mistakes_are_invalid_arguments() {
        let status = signing_status("l1", jumpstarter_certs::Error::CsrSignature);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("signature"), "{status:?}");
        let status = signing_status("l1", jumpstarter_certs::Error::SerialNumber);
        assert_eq!(status.code(), tonic::Code::Internal);
    }
}
