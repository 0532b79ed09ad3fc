//! One QUIC connection to the router per lease, authenticated by a per-lease certificate.
//!
//! The first session of a lease makes a new key, gets it certified by the controller
//! (`LeaseCertificateService`, with the tool's token) and connects to the router QUIC
//! endpoint the controller names. Later sessions reuse the connection. Lease certificates are
//! short-lived: half-way through each one, a task asks the controller for a new certificate
//! for the **same key** and presents it on the live connection, so sessions in progress go
//! on. When the controller refuses (the lease ended), the router closes the connection as the
//! last certificate ends. A connection that died is replaced by the next session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use jumpstarter_certs::{generate_csr, renewal_csr};
use jumpstarter_proto::jumpstarter::quic::v1::IssueLeaseCertificateRequest;
use jumpstarter_proto::jumpstarter::quic::v1::lease_certificate_service_client::LeaseCertificateServiceClient;
use jumpstarter_tunnel::{Congestion, Connection, QuicPeer, QuicTransport};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::Channel;

use crate::upstream::{Credentials, endpoint_host};

/// Retry a failed renewal after this long (while the certificate lasts).
const RETRY: Duration = Duration::from_secs(1);

/// How long obtaining a certificate and connecting may take.
const LINK_TIMEOUT: Duration = Duration::from_secs(30);

/// Why no connection to a lease's router could be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("cannot make a key for lease {lease}")]
    Key {
        lease: String,
        #[source]
        source: jumpstarter_certs::Error,
    },
    #[error("the controller issued no certificate for lease {lease}: {status}")]
    Issue {
        lease: String,
        status: tonic::Status,
    },
    #[error("the controller names no QUIC router for lease {lease}")]
    NoQuicRouter { lease: String },
    #[error("the QUIC router endpoint {endpoint:?} of lease {lease} is unusable: {reason}")]
    Endpoint {
        lease: String,
        endpoint: String,
        reason: String,
    },
    #[error("the certificate issued for lease {lease} is unusable: {reason}")]
    Certificate { lease: String, reason: String },
    #[error("cannot connect to the QUIC router of lease {lease}")]
    Connect {
        lease: String,
        #[source]
        source: jumpstarter_tunnel::ConnectError,
    },
    #[error("connecting to the router of lease {lease} took too long")]
    TimedOut { lease: String },
}

impl LinkError {
    /// The gRPC status the tool sees for this failure.
    pub(crate) fn status(&self) -> tonic::Status {
        match self {
            LinkError::Issue { status, .. } => tonic::Status::new(status.code(), self.to_string()),
            _ => tonic::Status::unavailable(self.to_string()),
        }
    }
}

/// The per-lease router connections of one edge.
#[derive(Debug)]
pub(crate) struct LeaseLinks {
    issuer: CertificateIssuer,
    /// Windows and congestion controller of the router connections.
    transport: QuicTransport,
    links: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Link>>>>>,
}

/// Asks the controller for lease certificates, with the tool's credentials.
#[derive(Debug, Clone)]
struct CertificateIssuer {
    controller: Channel,
    credentials: Credentials,
}

#[derive(Debug)]
struct Link {
    connection: Connection,
}

/// A certificate the controller issued: chain, CA roots, end, role, router endpoint.
struct Issued {
    chain: Vec<CertificateDer<'static>>,
    roots: Vec<CertificateDer<'static>>,
    not_after: SystemTime,
    role: String,
    endpoint: String,
}

impl LeaseLinks {
    pub(crate) fn new(
        controller: Channel,
        credentials: Credentials,
        transport: QuicTransport,
    ) -> LeaseLinks {
        LeaseLinks {
            transport,
            issuer: CertificateIssuer {
                controller,
                credentials,
            },
            links: Mutex::new(HashMap::new()),
        }
    }

    /// A live connection to the router of `lease` (a name in the tool's namespace).
    pub(crate) async fn connection(&self, lease: &str) -> Result<Connection, LinkError> {
        let slot = {
            // Invariant: no code panics while holding this lock.
            let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
            links.retain(|_, slot| {
                slot.try_lock()
                    .map(|link| {
                        link.as_ref()
                            .is_none_or(|l| l.connection.quic().close_reason().is_none())
                    })
                    .unwrap_or(true)
            });
            links.entry(lease.to_owned()).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if let Some(link) = slot.as_ref() {
            if link.connection.quic().close_reason().is_none() {
                return Ok(link.connection.clone());
            }
            tracing::info!(lease, "the router connection ended; connecting again");
        }
        let link = tokio::time::timeout(LINK_TIMEOUT, self.link(lease))
            .await
            .map_err(|_| LinkError::TimedOut {
                lease: lease.to_owned(),
            })??;
        let connection = link.connection.clone();
        *slot = Some(link);
        Ok(connection)
    }

    async fn link(&self, lease: &str) -> Result<Link, LinkError> {
        let request =
            generate_csr(self.issuer.credentials.name()).map_err(|source| LinkError::Key {
                lease: lease.to_owned(),
                source,
            })?;
        let issued_at = SystemTime::now();
        let issued = self.issuer.issue(lease, request.csr_der.clone()).await?;
        let key = PrivateKeyDer::from_pem_slice(request.key_pem.as_bytes()).map_err(|e| {
            LinkError::Certificate {
                lease: lease.to_owned(),
                reason: e.to_string(),
            }
        })?;
        let endpoint = issued.endpoint.clone();
        if endpoint.is_empty() {
            return Err(LinkError::NoQuicRouter {
                lease: lease.to_owned(),
            });
        }
        let endpoint_error = |reason: String| LinkError::Endpoint {
            lease: lease.to_owned(),
            endpoint: endpoint.clone(),
            reason,
        };
        let host = endpoint_host(&endpoint)
            .ok_or_else(|| endpoint_error("not host:port".to_owned()))?
            .to_owned();
        let addr = tokio::net::lookup_host(endpoint.as_str())
            .await
            .map_err(|e| endpoint_error(e.to_string()))?
            .next()
            .ok_or_else(|| endpoint_error("no address".to_owned()))?;
        let connection = QuicPeer::connect_with_transport(
            addr,
            &host,
            issued.roots,
            issued.chain,
            key,
            &self.transport,
        )
        .await
        .map_err(|source| LinkError::Connect {
            lease: lease.to_owned(),
            source,
        })?;
        let congestion = Congestion::in_force(connection.quic());
        tracing::info!(
            lease,
            router = %endpoint,
            role = %issued.role,
            valid_for_s = issued.not_after.duration_since(issued_at).unwrap_or_default().as_secs(),
            congestion = congestion.map_or("unknown", Congestion::name),
            "connected to the lease's QUIC router"
        );
        let renewer = Renewer {
            issuer: self.issuer.clone(),
        };
        tokio::spawn(renewer.keep_renewed(
            lease.to_owned(),
            connection.clone(),
            request.key_pem,
            issued_at,
            issued.not_after,
        ));
        Ok(Link { connection })
    }
}

impl CertificateIssuer {
    /// Asks the controller to certify the key of `csr` for `lease`.
    async fn issue(&self, lease: &str, csr: Vec<u8>) -> Result<Issued, LinkError> {
        let mut service = LeaseCertificateServiceClient::new(self.controller.clone());
        let issued = service
            .issue_lease_certificate(self.credentials.request(IssueLeaseCertificateRequest {
                lease_name: lease.to_owned(),
                csr,
            }))
            .await
            .map_err(|status| LinkError::Issue {
                lease: lease.to_owned(),
                status,
            })?
            .into_inner();
        let certificate_error = |reason: String| LinkError::Certificate {
            lease: lease.to_owned(),
            reason,
        };
        let pems = |pem: &str| {
            CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| certificate_error(e.to_string()))
        };
        let not_after = issued
            .not_after
            .and_then(|t| {
                let secs = u64::try_from(t.seconds).ok()?;
                Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            })
            .ok_or_else(|| certificate_error("no notAfter".to_owned()))?;
        Ok(Issued {
            chain: pems(&issued.chain_pem)?,
            roots: pems(&issued.ca_pem)?,
            not_after,
            role: issued.role,
            endpoint: issued.router_quic_endpoint,
        })
    }
}

/// Keeps one connection's certificate renewed.
struct Renewer {
    issuer: CertificateIssuer,
}

impl Renewer {
    /// Half-way through each certificate, gets a new one for `key_pem` and presents it on
    /// `connection`; stops when the connection ends or the controller refuses for good.
    async fn keep_renewed(
        self,
        lease: String,
        connection: Connection,
        key_pem: String,
        mut issued_at: SystemTime,
        mut not_after: SystemTime,
    ) {
        loop {
            let at = renewal_time(issued_at, not_after);
            let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = connection.quic().closed() => return,
            }
            let attempt_at = SystemTime::now();
            match self.renew_once(&lease, &connection, &key_pem).await {
                Ok(until) => {
                    tracing::debug!(lease, "lease certificate renewed");
                    issued_at = attempt_at;
                    not_after = until;
                }
                Err(RenewFailure::Final(reason)) => {
                    tracing::info!(
                        lease,
                        "no more certificates ({reason}); the router ends the connection with the current one"
                    );
                    return;
                }
                Err(RenewFailure::Retry(reason)) => {
                    tracing::warn!(lease, "renewal failed, retrying: {reason}");
                    if SystemTime::now() >= not_after {
                        return;
                    }
                    issued_at = SystemTime::now();
                    not_after = not_after.max(issued_at + RETRY * 2);
                }
            }
        }
    }

    async fn renew_once(
        &self,
        lease: &str,
        connection: &Connection,
        key_pem: &str,
    ) -> Result<SystemTime, RenewFailure> {
        let request = renewal_csr(key_pem, self.issuer.credentials.name())
            .map_err(|e| RenewFailure::Final(e.to_string()))?;
        let issued =
            self.issuer
                .issue(lease, request.csr_der)
                .await
                .map_err(|error| match &error {
                    LinkError::Issue { status, .. }
                        if matches!(
                            status.code(),
                            tonic::Code::FailedPrecondition
                                | tonic::Code::PermissionDenied
                                | tonic::Code::NotFound
                        ) =>
                    {
                        RenewFailure::Final(error.to_string())
                    }
                    _ => RenewFailure::Retry(error.to_string()),
                })?;
        connection
            .renew(&issued.chain)
            .await
            .map_err(|error| match error {
                jumpstarter_tunnel::RenewError::Refused(reason) => RenewFailure::Final(reason),
                other => RenewFailure::Retry(other.to_string()),
            })
    }
}

enum RenewFailure {
    /// Renewing again cannot help (the lease ended, the router refused the certificate).
    Final(String),
    /// Worth another try while the certificate lasts.
    Retry(String),
}

/// When to renew a certificate valid from `issued_at` until `not_after`: half-way, so a
/// failed attempt leaves time for another.
fn renewal_time(issued_at: SystemTime, not_after: SystemTime) -> SystemTime {
    let life = not_after.duration_since(issued_at).unwrap_or_default();
    issued_at + life / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_happens_half_way() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            renewal_time(t0, t0 + Duration::from_secs(10)),
            t0 + Duration::from_secs(5)
        );
        assert_eq!(renewal_time(t0, t0 - Duration::from_secs(5)), t0);
    }
}
