//! Turning what the probes observed into checks: pure functions of the observations (and
//! of `now`), so every verdict and its wording is unit-tested without a cluster or a
//! network.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use rustls::{CertificateError, Error as TlsError};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;

use super::advertised::Advertised;
use super::report::Check;

/// An object read from the Kubernetes API.
#[derive(Debug, Clone)]
pub(crate) enum Fetched<T> {
    Found(T),
    /// The API answered 404.
    Missing,
    /// The API answered 403; the message says which permission is missing.
    Denied(String),
    /// Anything else: unreachable API server, timeout, unexpected answer.
    Failed(String),
}

/// What a TLS-over-TCP connection attempt to an endpoint came to.
#[derive(Debug, Clone)]
pub(crate) enum TlsOutcome {
    /// The endpoint is not `host:port`.
    BadEndpoint(String),
    /// The host did not resolve (or resolved to nothing).
    NoAddress(String),
    /// No TCP connection to `addr`.
    Unreachable { addr: String, error: String },
    /// `step` did not finish within the timeout.
    TimedOut { addr: String, step: &'static str },
    /// The TLS handshake failed: the server certificate was refused here, or the server
    /// refused us.
    Refused { addr: String, error: TlsError },
    /// The connection broke during the handshake for another reason.
    Broken { addr: String, error: String },
    /// Handshake complete: the server certificate names the host and chains to the CA.
    Secured { addr: String, alpn: Option<Vec<u8>> },
}

/// How a QUIC handshake attempt ended.
#[derive(Debug, Clone)]
pub(crate) enum QuicEnd {
    /// The handshake completed.
    Established,
    /// The server closed the connection (e.g. asking for a client certificate).
    ClosedByPeer(String),
    /// This side gave up (e.g. the server certificate was refused).
    Local(String),
    /// No answer within the timeout.
    TimedOut,
}

/// What a QUIC handshake attempt to an endpoint came to.
#[derive(Debug, Clone)]
pub(crate) enum QuicOutcome {
    BadEndpoint(String),
    NoAddress(String),
    /// No attempt could be made (no UDP socket).
    NotStarted(String),
    Attempted {
        addr: String,
        /// The verdict on the server certificate, if the server sent one.
        server_cert: Option<Result<(), TlsError>>,
        end: QuicEnd,
    },
}

/// `crd/<name>`: the CRD exists, is Established and serves `version`. From the object when
/// it may be read, else from API discovery, which lists exactly the served versions of
/// Established CRDs.
pub(crate) fn crd(
    name: &str,
    plural: &str,
    group_version: &str,
    version: &str,
    object: &Fetched<CustomResourceDefinition>,
    discovery: &Fetched<Vec<String>>,
) -> Check {
    let check = format!("crd/{name}");
    match object {
        Fetched::Found(crd) => {
            let established = crd
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Established"));
            match established {
                Some(c) if c.status == "True" => {}
                Some(c) => {
                    return Check::fail(
                        check,
                        format!(
                            "not Established ({}): {}",
                            c.reason.as_deref().unwrap_or("no reason"),
                            c.message.as_deref().unwrap_or("no message")
                        ),
                    );
                }
                None => return Check::fail(check, "not Established (no condition yet)"),
            }
            let versions: Vec<&str> = crd.spec.versions.iter().map(|v| v.name.as_str()).collect();
            match crd.spec.versions.iter().find(|v| v.name == version) {
                Some(v) if v.served => Check::pass(check, format!("Established, serves {version}")),
                Some(_) => Check::fail(check, format!("Established, but {version} is not served")),
                None => Check::fail(
                    check,
                    format!(
                        "has no version {version} (versions: {})",
                        versions.join(", ")
                    ),
                ),
            }
        }
        Fetched::Missing => Check::fail(
            check,
            format!(
                "CustomResourceDefinition {name} does not exist; install the chart's CRDs (helm/crds)"
            ),
        ),
        Fetched::Failed(error) => Check::fail(
            check,
            format!("reading CustomResourceDefinition {name} failed: {error}"),
        ),
        Fetched::Denied(denied) => match discovery {
            Fetched::Found(plurals) if plurals.iter().any(|p| p == plural) => Check::pass(
                check,
                format!(
                    "{group_version} serves {plural} (API discovery, which lists only Established CRDs; reading the CRD object is not permitted)"
                ),
            ),
            Fetched::Found(_) => Check::fail(
                check,
                format!(
                    "{group_version} does not serve {plural} (API discovery): the CRD is missing, not Established, or does not serve {version}"
                ),
            ),
            Fetched::Missing => Check::fail(
                check,
                format!(
                    "the API server serves no {group_version} at all (API discovery): no jumpstarter CRD is installed and Established"
                ),
            ),
            Fetched::Denied(error) | Fetched::Failed(error) => Check::fail(
                check,
                format!(
                    "cannot read CustomResourceDefinition {name} ({denied}) nor API discovery of {group_version} ({error})"
                ),
            ),
        },
    }
}

/// `controller/ca`: the CA certificate the controller publishes (ConfigMap `config_map`,
/// key `key`) parses and is valid at `now`. Returns the certificates to verify servers
/// against when it does.
pub(crate) fn ca(
    namespace: &str,
    config_map: &str,
    key: &str,
    fetched: &Fetched<ConfigMap>,
    now: OffsetDateTime,
) -> (Check, Option<Vec<CertificateDer<'static>>>) {
    const NAME: &str = "controller/ca";
    let object = format!("ConfigMap {namespace}/{config_map}");
    let map = match fetched {
        Fetched::Found(map) => map,
        Fetched::Missing => {
            return (
                Check::fail(
                    NAME,
                    format!(
                        "{object} does not exist: the controller has not started in this namespace"
                    ),
                ),
                None,
            );
        }
        Fetched::Denied(e) | Fetched::Failed(e) => {
            return (
                Check::fail(NAME, format!("reading {object} failed: {e}")),
                None,
            );
        }
    };
    let Some(pem) = map.data.as_ref().and_then(|d| d.get(key)) else {
        return (
            Check::fail(NAME, format!("{object} has no key {key:?}")),
            None,
        );
    };
    let certs: Vec<CertificateDer<'static>> =
        match CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>() {
            Ok(certs) if !certs.is_empty() => certs,
            Ok(_) => {
                return (
                    Check::fail(
                        NAME,
                        format!("{object} key {key:?} holds no PEM certificate"),
                    ),
                    None,
                );
            }
            Err(e) => {
                return (
                    Check::fail(NAME, format!("{object} key {key:?} is not PEM: {e}")),
                    None,
                );
            }
        };
    let mut described = Vec::new();
    for der in &certs {
        let cert = match x509_parser::parse_x509_certificate(der) {
            Ok((_, cert)) => cert,
            Err(e) => {
                return (
                    Check::fail(
                        NAME,
                        format!("{object} key {key:?}: unreadable certificate: {e}"),
                    ),
                    None,
                );
            }
        };
        let subject = cert.subject().to_string();
        let not_before = cert.validity().not_before.timestamp();
        let not_after = cert.validity().not_after.timestamp();
        let until = OffsetDateTime::from_unix_timestamp(not_after)
            .map(|t| t.date().to_string())
            .unwrap_or_else(|_| not_after.to_string());
        if now.unix_timestamp() > not_after {
            return (
                Check::fail(
                    NAME,
                    format!("{object}: the CA {subject} expired on {until}"),
                ),
                None,
            );
        }
        if now.unix_timestamp() < not_before {
            return (
                Check::fail(NAME, format!("{object}: the CA {subject} is not valid yet")),
                None,
            );
        }
        if !cert.is_ca() {
            return (
                Check::fail(NAME, format!("{object}: {subject} is not a CA certificate")),
                None,
            );
        }
        described.push(format!("{subject} (valid until {until})"));
    }
    (
        Check::pass(NAME, format!("{object}: {}", described.join(", "))),
        Some(certs),
    )
}

/// `controller/leader`: the leader election Lease is held and was renewed within its
/// duration, i.e. a controller runs its reconcile loop now.
pub(crate) fn leader(
    namespace: &str,
    name: &str,
    fetched: &Fetched<Lease>,
    now: OffsetDateTime,
) -> Check {
    const NAME: &str = "controller/leader";
    let object = format!("Lease {namespace}/{name}");
    let lease = match fetched {
        Fetched::Found(lease) => lease,
        Fetched::Missing => {
            return Check::fail(
                NAME,
                format!(
                    "{object} does not exist: no controller has run with --leader-elect in this namespace"
                ),
            );
        }
        Fetched::Denied(e) | Fetched::Failed(e) => {
            return Check::fail(NAME, format!("reading {object} failed: {e}"));
        }
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.filter(|h| !h.is_empty());
    let Some(holder) = holder else {
        return Check::fail(
            NAME,
            format!("{object} is not held: no controller is leading"),
        );
    };
    let Some(renewed) = spec.renew_time.map(|t| t.0.as_second()) else {
        return Check::fail(
            NAME,
            format!("{object} is held by {holder} but was never renewed"),
        );
    };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    let age = now.unix_timestamp() - renewed;
    if age > duration {
        return Check::fail(
            NAME,
            format!(
                "{object} is held by {holder} but was last renewed {age}s ago (lease duration {duration}s): the leader is gone or stuck"
            ),
        );
    }
    Check::pass(
        NAME,
        format!("{object} held by {holder}, renewed {}s ago", age.max(0)),
    )
}

/// `controller/deployment`: every desired pod of the controller Deployment is ready.
pub(crate) fn deployment(namespace: &str, what: &str, fetched: &Fetched<Deployment>) -> Check {
    const NAME: &str = "controller/deployment";
    let deployment = match fetched {
        Fetched::Found(d) => d,
        Fetched::Missing => {
            return Check::fail(NAME, format!("{what} not found in namespace {namespace}"));
        }
        Fetched::Denied(e) | Fetched::Failed(e) => {
            return Check::fail(NAME, format!("reading {what} failed: {e}"));
        }
    };
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let ready = deployment
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let detail = format!("Deployment {namespace}/{name}: {ready} of {desired} pods ready");
    if desired == 0 {
        Check::fail(NAME, format!("{detail} (scaled to zero)"))
    } else if ready < desired {
        Check::fail(NAME, detail)
    } else {
        Check::pass(NAME, detail)
    }
}

/// `controller/endpoints`: where clients and exporters are sent, and where that was read.
pub(crate) fn endpoints(source: &str, advertised: &Result<Advertised, String>) -> Check {
    const NAME: &str = "controller/endpoints";
    match advertised {
        Err(reason) => Check::fail(NAME, reason.clone()),
        Ok(a) if a.routers.is_empty() => Check::fail(
            NAME,
            format!(
                "controller {} advertises no router ({source}): every Dial fails with \"no router available\"",
                a.controller
            ),
        ),
        Ok(a) => {
            let routers: Vec<String> = a
                .routers
                .iter()
                .map(|r| match &r.quic_endpoint {
                    Some(quic) => format!("{} {} (QUIC {quic})", r.name, r.endpoint),
                    None => format!("{} {}", r.name, r.endpoint),
                })
                .collect();
            Check::pass(
                NAME,
                format!(
                    "controller {}; routers: {} ({source})",
                    a.controller,
                    routers.join(", ")
                ),
            )
        }
    }
}

/// A TLS-over-TCP check (`controller/tls`, `router/<name>/tcp`): reachable, and the
/// certificate names `host` and chains to the CA, and ALPN agreed on `alpn`.
pub(crate) fn tls(
    name: &str,
    endpoint: &str,
    host: &str,
    alpn: &[u8],
    outcome: &TlsOutcome,
) -> Check {
    let place = match outcome {
        TlsOutcome::Unreachable { addr, .. }
        | TlsOutcome::TimedOut { addr, .. }
        | TlsOutcome::Refused { addr, .. }
        | TlsOutcome::Broken { addr, .. }
        | TlsOutcome::Secured { addr, .. } => at(endpoint, addr),
        TlsOutcome::BadEndpoint(_) | TlsOutcome::NoAddress(_) => endpoint.to_owned(),
    };
    match outcome {
        TlsOutcome::BadEndpoint(e) => Check::fail(name, e.clone()),
        TlsOutcome::NoAddress(e) => Check::fail(name, format!("{endpoint}: {e}")),
        TlsOutcome::Unreachable { error, .. } => {
            Check::fail(name, format!("TCP connect to {place} failed: {error}"))
        }
        TlsOutcome::TimedOut { step, .. } => {
            Check::fail(name, format!("{step} with {place} timed out"))
        }
        TlsOutcome::Refused { error, .. } => Check::fail(
            name,
            format!("TLS with {place}: {}", describe_tls_error(host, error)),
        ),
        TlsOutcome::Broken { error, .. } => {
            Check::fail(name, format!("TLS with {place} failed: {error}"))
        }
        TlsOutcome::Secured { alpn: agreed, .. } => {
            let expected = String::from_utf8_lossy(alpn);
            match agreed {
                Some(p) if p == alpn => Check::pass(
                    name,
                    format!(
                        "TCP {place} reachable; certificate valid for {host}, chains to the CA; ALPN {expected}"
                    ),
                ),
                other => Check::fail(
                    name,
                    format!(
                        "TLS with {place} agreed on ALPN {} instead of {expected}",
                        other
                            .as_ref()
                            .map_or("none".to_owned(), |p| String::from_utf8_lossy(p)
                                .into_owned())
                    ),
                ),
            }
        }
    }
}

/// `router/<name>/udp`: a QUIC handshake reached the router over UDP and its certificate
/// names `host` and chains to the CA. The router asks peers for a lease certificate, which
/// this check does not hold: a server certificate that verified proves the UDP path and the
/// router's identity, whatever the router then does with the anonymous peer.
pub(crate) fn quic(name: &str, endpoint: &str, host: &str, outcome: &QuicOutcome) -> Check {
    let (addr, server_cert, end) = match outcome {
        QuicOutcome::BadEndpoint(e) => return Check::fail(name, e.clone()),
        QuicOutcome::NoAddress(e) => return Check::fail(name, format!("{endpoint}: {e}")),
        QuicOutcome::NotStarted(e) => {
            return Check::fail(name, format!("no QUIC attempt to {endpoint}: {e}"));
        }
        QuicOutcome::Attempted {
            addr,
            server_cert,
            end,
        } => (addr, server_cert, end),
    };
    let place = at(endpoint, addr);
    match server_cert {
        Some(Ok(())) => {
            let after = match end {
                QuicEnd::Established => "handshake complete".to_owned(),
                QuicEnd::ClosedByPeer(reason) => {
                    format!(
                        "then the router closed the anonymous connection ({reason}), as expected"
                    )
                }
                QuicEnd::Local(reason) => format!("then: {reason}"),
                QuicEnd::TimedOut => "then no further answer".to_owned(),
            };
            Check::pass(
                name,
                format!(
                    "QUIC {place} answered over UDP; certificate valid for {host}, chains to the CA; {after}"
                ),
            )
        }
        Some(Err(error)) => Check::fail(
            name,
            format!("QUIC {place}: {}", describe_tls_error(host, error)),
        ),
        None => match end {
            QuicEnd::TimedOut => Check::fail(
                name,
                format!(
                    "no QUIC answer from {place} over UDP: nothing listens, or UDP is filtered on the way"
                ),
            ),
            QuicEnd::ClosedByPeer(reason) => Check::fail(
                name,
                format!(
                    "QUIC {place} refused the handshake before showing a certificate: {reason}"
                ),
            ),
            QuicEnd::Local(reason) => Check::fail(name, format!("QUIC {place}: {reason}")),
            QuicEnd::Established => Check::fail(
                name,
                format!("QUIC {place}: handshake complete without a verified certificate"),
            ),
        },
    }
}

/// `controller/grpc`: the gRPC health service on the controller endpoint says SERVING.
pub(crate) fn health(endpoint: &str, answer: &Result<String, String>) -> Check {
    const NAME: &str = "controller/grpc";
    match answer {
        Ok(status) if status == "SERVING" => {
            Check::pass(NAME, format!("{endpoint}: grpc.health.v1 reports SERVING"))
        }
        Ok(status) => Check::fail(NAME, format!("{endpoint}: grpc.health.v1 reports {status}")),
        Err(e) => Check::fail(NAME, format!("{endpoint}: gRPC health check failed: {e}")),
    }
}

/// `endpoint`, and the address it resolved to when that says more.
fn at(endpoint: &str, addr: &str) -> String {
    if endpoint == addr {
        endpoint.to_owned()
    } else {
        format!("{endpoint} ({addr})")
    }
}

/// A server-facing reason for a TLS error.
fn describe_tls_error(host: &str, error: &TlsError) -> String {
    match error {
        TlsError::InvalidCertificate(CertificateError::NotValidForNameContext {
            presented,
            ..
        }) => {
            format!(
                "the certificate is not valid for {host}: it names {}",
                if presented.is_empty() {
                    "nothing".to_owned()
                } else {
                    presented
                        .iter()
                        .map(|name| bare_name(name))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )
        }
        TlsError::InvalidCertificate(CertificateError::NotValidForName) => {
            format!("the certificate is not valid for {host}")
        }
        TlsError::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the certificate does not chain to the published CA (unknown issuer)".to_owned()
        }
        TlsError::InvalidCertificate(CertificateError::BadSignature) => {
            "the certificate's signature does not verify against the published CA".to_owned()
        }
        TlsError::InvalidCertificate(other) => format!("certificate refused: {other}"),
        TlsError::AlertReceived(alert) => format!("the server refused the handshake ({alert:?})"),
        other => other.to_string(),
    }
}

/// `DnsName("a.example")` (how rustls shows a presented name) as `a.example`.
fn bare_name(presented: &str) -> &str {
    presented
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .map(|inner| inner.trim_matches('"'))
        .unwrap_or(presented)
}

/// Every check of an endpoint that could not be tried because the CA is unknown.
pub(crate) fn without_ca(name: &str) -> Check {
    Check::fail(
        name,
        "not checked: no CA to verify the certificate against (see controller/ca)",
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use rustls_pki_types::ServerName;

    use super::*;

    fn crds() -> Vec<CustomResourceDefinition> {
        jumpstarter_controller::crd::definitions()
    }

    fn established(mut crd: CustomResourceDefinition, status: &str) -> CustomResourceDefinition {
        crd.status = serde_json::from_value(serde_json::json!({
            "conditions": [{"type": "Established", "status": status, "reason": "InstallInProgress",
                            "message": "waiting", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
        }))
        .unwrap();
        crd
    }

    #[test]
    fn a_crd_passes_only_when_established_and_serving_the_version() {
        let crd = crds().remove(0);
        let name = crd.metadata.name.clone().unwrap();
        let plural = crd.spec.names.plural.clone();
        let none = Fetched::Missing;
        let verdict =
            |object: &Fetched<CustomResourceDefinition>| crd_check(&name, &plural, object, &none);
        assert!(verdict(&Fetched::Found(established(crd.clone(), "True"))).ok);
        let pending = verdict(&Fetched::Found(established(crd.clone(), "False")));
        assert!(!pending.ok);
        assert_eq!(
            pending.detail,
            "not Established (InstallInProgress): waiting"
        );
        let mut unserved = established(crd.clone(), "True");
        unserved.spec.versions[0].served = false;
        assert_eq!(
            verdict(&Fetched::Found(unserved)).detail,
            "Established, but v1alpha1 is not served"
        );
        let missing = verdict(&Fetched::Missing);
        assert!(!missing.ok);
        assert!(
            missing.detail.contains("does not exist"),
            "{}",
            missing.detail
        );
        assert_eq!(missing.name, format!("crd/{name}"));
    }

    fn crd_check(
        name: &str,
        plural: &str,
        object: &Fetched<CustomResourceDefinition>,
        discovery: &Fetched<Vec<String>>,
    ) -> Check {
        crd(
            name,
            plural,
            "jumpstarter.dev/v1alpha1",
            "v1alpha1",
            object,
            discovery,
        )
    }

    #[test]
    fn without_permission_to_read_crds_discovery_decides() {
        let denied = Fetched::Denied("forbidden".into());
        let served = Fetched::Found(vec!["clients".to_owned(), "leases".to_owned()]);
        assert!(crd_check("clients.jumpstarter.dev", "clients", &denied, &served).ok);
        let absent = crd_check("exporters.jumpstarter.dev", "exporters", &denied, &served);
        assert!(!absent.ok);
        assert!(
            absent.detail.contains("does not serve exporters"),
            "{}",
            absent.detail
        );
        let nothing = crd_check(
            "clients.jumpstarter.dev",
            "clients",
            &denied,
            &Fetched::Missing,
        );
        assert!(
            nothing
                .detail
                .contains("serves no jumpstarter.dev/v1alpha1")
        );
        let blind = crd_check(
            "clients.jumpstarter.dev",
            "clients",
            &denied,
            &Fetched::Failed("timed out".into()),
        );
        assert!(!blind.ok && blind.detail.contains("timed out"));
    }

    fn ca_map(pem: &str) -> Fetched<ConfigMap> {
        Fetched::Found(ConfigMap {
            data: Some(BTreeMap::from([("ca.crt".to_owned(), pem.to_owned())])),
            ..ConfigMap::default()
        })
    }

    #[test]
    fn the_ca_must_parse_be_a_ca_and_be_valid_now() {
        let now = OffsetDateTime::now_utc();
        let ca = jumpstarter_certs::Ca::generate("test-ca", now, time::Duration::days(1)).unwrap();
        let (check, roots) = super::ca("lab", "cm", "ca.crt", &ca_map(ca.cert_pem()), now);
        assert!(check.ok, "{check:?}");
        assert!(check.detail.contains("test-ca"), "{}", check.detail);
        assert_eq!(roots.unwrap().len(), 1);
        let later = now + time::Duration::days(3);
        let (expired, roots) = super::ca("lab", "cm", "ca.crt", &ca_map(ca.cert_pem()), later);
        assert!(
            !expired.ok && expired.detail.contains("expired"),
            "{expired:?}"
        );
        assert!(roots.is_none());
        let (garbage, _) = super::ca("lab", "cm", "ca.crt", &ca_map("nope"), now);
        assert!(
            !garbage.ok && garbage.detail.contains("no PEM certificate"),
            "{garbage:?}"
        );
        let (absent, _) = super::ca("lab", "cm", "ca.crt", &Fetched::Missing, now);
        assert!(absent.detail.contains("ConfigMap lab/cm does not exist"));
        let leaf = ca
            .issue_server_cert(
                &jumpstarter_certs::ServerCertParams {
                    dns_names: vec!["x.example".into()],
                    ip_addresses: vec![],
                    validity: time::Duration::hours(1),
                },
                now,
            )
            .unwrap();
        let (not_ca, _) = super::ca("lab", "cm", "ca.crt", &ca_map(&leaf.cert_pem), now);
        assert!(
            !not_ca.ok && not_ca.detail.contains("not a CA"),
            "{not_ca:?}"
        );
    }

    fn lease(holder: Option<&str>, renewed_ago: i64, now: OffsetDateTime) -> Fetched<Lease> {
        let renewed = jiff_at(now.unix_timestamp() - renewed_ago);
        Fetched::Found(Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(renewed)),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        })
    }

    fn jiff_at(seconds: i64) -> k8s_openapi::jiff::Timestamp {
        k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn the_leader_lease_must_be_held_and_fresh() {
        let now = OffsetDateTime::now_utc();
        let fresh = leader("lab", "l", &lease(Some("pod-a"), 3, now), now);
        assert!(fresh.ok);
        assert_eq!(fresh.detail, "Lease lab/l held by pod-a, renewed 3s ago");
        let stale = leader("lab", "l", &lease(Some("pod-a"), 60, now), now);
        assert!(
            !stale.ok && stale.detail.contains("last renewed 60s ago"),
            "{stale:?}"
        );
        assert!(!leader("lab", "l", &lease(None, 1, now), now).ok);
        assert!(!leader("lab", "l", &Fetched::Missing, now).ok);
    }

    #[test]
    fn the_deployment_passes_when_every_desired_pod_is_ready() {
        let deployment = |desired: i32, ready: Option<i32>| {
            Fetched::Found(Deployment {
                metadata: kube::api::ObjectMeta {
                    name: Some("js-controller".into()),
                    ..Default::default()
                },
                spec: Some(DeploymentSpec {
                    replicas: Some(desired),
                    ..DeploymentSpec::default()
                }),
                status: Some(DeploymentStatus {
                    ready_replicas: ready,
                    ..DeploymentStatus::default()
                }),
            })
        };
        let ok = super::deployment("lab", "x", &deployment(2, Some(2)));
        assert!(ok.ok);
        assert_eq!(ok.detail, "Deployment lab/js-controller: 2 of 2 pods ready");
        let none = super::deployment("lab", "x", &deployment(1, None));
        assert!(!none.ok);
        assert_eq!(
            none.detail,
            "Deployment lab/js-controller: 0 of 1 pods ready"
        );
        assert!(!super::deployment("lab", "x", &deployment(0, Some(0))).ok);
    }

    #[test]
    fn tls_failures_say_what_was_wrong() {
        let name_error = TlsError::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("127.0.0.1").unwrap(),
            presented: vec!["DnsName(\"wrong.example\")".to_owned()],
        });
        let refused = TlsOutcome::Refused {
            addr: "127.0.0.1:9".into(),
            error: name_error.clone(),
        };
        let check = tls("router/r/tcp", "127.0.0.1:9", "127.0.0.1", b"h2", &refused);
        assert!(!check.ok);
        assert!(
            check
                .detail
                .contains("not valid for 127.0.0.1: it names wrong.example"),
            "{}",
            check.detail
        );
        let unknown = TlsOutcome::Refused {
            addr: "a".into(),
            error: TlsError::InvalidCertificate(CertificateError::UnknownIssuer),
        };
        assert!(
            tls("c", "e", "h", b"h2", &unknown)
                .detail
                .contains("does not chain to the published CA")
        );
        let closed = TlsOutcome::Unreachable {
            addr: "127.0.0.1:9".into(),
            error: "Connection refused (os error 111)".into(),
        };
        assert!(
            tls("c", "127.0.0.1:9", "h", b"h2", &closed)
                .detail
                .starts_with("TCP connect to 127.0.0.1:9")
        );
        let good = TlsOutcome::Secured {
            addr: "a".into(),
            alpn: Some(b"h2".to_vec()),
        };
        assert!(tls("c", "e", "h", b"h2", &good).ok);
        let no_alpn = TlsOutcome::Secured {
            addr: "a".into(),
            alpn: None,
        };
        assert!(!tls("c", "e", "h", b"h2", &no_alpn).ok);

        let quic_bad = QuicOutcome::Attempted {
            addr: "a".into(),
            server_cert: Some(Err(name_error)),
            end: QuicEnd::Local("refused".into()),
        };
        assert!(
            quic("u", "e", "127.0.0.1", &quic_bad)
                .detail
                .contains("not valid for 127.0.0.1")
        );
        let quic_ok = QuicOutcome::Attempted {
            addr: "a".into(),
            server_cert: Some(Ok(())),
            end: QuicEnd::ClosedByPeer("certificate required".into()),
        };
        assert!(quic("u", "e", "h", &quic_ok).ok);
        let silent = QuicOutcome::Attempted {
            addr: "a".into(),
            server_cert: None,
            end: QuicEnd::TimedOut,
        };
        let silent = quic("u", "e", "h", &silent);
        assert!(!silent.ok && silent.detail.contains("no QUIC answer"));
    }

    #[test]
    fn only_serving_is_healthy() {
        assert!(health("e", &Ok("SERVING".into())).ok);
        assert!(!health("e", &Ok("NOT_SERVING".into())).ok);
        assert!(!health("e", &Err("unavailable".into())).ok);
    }
}
