//! Controller settings, parsed from flags and environment at the edge (the binary) and
//! passed down as plain values. Nothing below this layer reads the environment.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use time::Duration;

use crate::limits::Limits;
use jumpstarter_lease::scheduler;

/// A router the controller can hand sessions to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterEntry {
    /// Stable name, e.g. `default` or `router-1`.
    pub name: String,
    /// Advertised gRPC endpoint, bare `host:port` (no scheme), as clients must reach it.
    pub endpoint: String,
    /// Labels used to prefer a router for an exporter (0.9.0 label matching).
    pub labels: BTreeMap<String, String>,
    /// Advertised QUIC data-plane endpoint, bare `host:port`, if the router has one;
    /// handed out with per-lease certificates.
    pub quic_endpoint: Option<String>,
}

impl RouterEntry {
    /// Parses the controller's `--router` value `name=host:port[;key=value...]`, where the
    /// key `quic` gives the QUIC endpoint `host:port` and every other key is a label.
    pub fn parse(text: &str) -> Result<RouterEntry, String> {
        let mut parts = text.split(';');
        let head = parts.next().unwrap_or_default();
        let Some((name, endpoint)) = head.split_once('=') else {
            return Err(format!("router {text:?}: expected name=host:port"));
        };
        let (name, endpoint) = (name.trim(), endpoint.trim());
        if name.is_empty()
            || endpoint.is_empty()
            || !endpoint.contains(':')
            || endpoint.contains("://")
        {
            return Err(format!(
                "router {text:?}: expected name=host:port (no scheme)"
            ));
        }
        let mut labels = BTreeMap::new();
        let mut quic_endpoint = None;
        for label in parts {
            let Some((key, value)) = label.split_once('=') else {
                return Err(format!("router {text:?}: label {label:?} is not key=value"));
            };
            let (key, value) = (key.trim(), value.trim());
            if key == "quic" {
                if value.is_empty() || !value.contains(':') || value.contains("://") {
                    return Err(format!(
                        "router {text:?}: expected quic=host:port (no scheme)"
                    ));
                }
                quic_endpoint = Some(value.to_owned());
            } else {
                labels.insert(key.to_owned(), value.to_owned());
            }
        }
        Ok(RouterEntry {
            name: name.to_owned(),
            endpoint: endpoint.to_owned(),
            labels,
            quic_endpoint,
        })
    }
}

/// Everything the services and reconcilers need to know about their deployment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The one namespace this controller serves.
    pub namespace: String,
    /// Advertised controller gRPC endpoint, bare `host:port`; written into
    /// Client/Exporter `status.endpoint` and used as a SAN of the serving certificate.
    pub grpc_endpoint: String,
    /// Routers to pick from at Dial.
    pub routers: Vec<RouterEntry>,
    /// Lifetime of client and exporter credentials (internal tokens).
    pub token_lifetime: Duration,
    /// Lifetime of router stream tokens (checked when a stream opens).
    pub router_token_lifetime: Duration,
    /// Maximum number of tags on a lease (0.9.0 `leasePolicy.maxTags`).
    pub max_tags: usize,
    /// Label keys hidden from ListExporters/GetExporter unless asked for.
    pub hidden_labels: Vec<String>,
    /// Deprecated label keys and the message shown for each (0.9.0 `deprecatedLabels`):
    /// reported in `deprecated_labels` of exporters and leases.
    pub deprecated_labels: BTreeMap<String, String>,
    /// The first login of an unknown user creates its Client (0.9.0 `provisioning.enabled`).
    pub provisioning: bool,
    /// Prefix of the usernames of internal tokens (0.9.0 `authentication.internal.prefix`).
    pub internal_prefix: String,
    /// JWT authenticators (0.9.0 `authentication.jwt`): Kubernetes structured-authentication
    /// `JWTAuthenticator`s as written, checked where they are built.
    pub jwt: Vec<serde_json::Value>,
    /// Longest validity of one per-lease certificate (it never outlives the lease either).
    pub lease_cert_max_validity: Duration,
    /// What one client or exporter may ask of the services.
    pub limits: Limits,
    /// Label key prefixes under which exporters may set labels on themselves at Register
    /// (never reserved keys, keys policies or routers read, or keys an admin set).
    pub exporter_label_prefixes: Vec<String>,
    /// Owner of the objects the controller creates while it runs (router certificate
    /// Secrets, the public ConfigMaps, the election Lease), so they are deleted with it;
    /// see [`crate::owner`]. `None`: no owner.
    pub owner: Option<OwnerReference>,
    /// How the lease queue is ordered (0.9.0 has no such settings; `leasePolicy.agingInterval`
    /// of the configuration).
    pub scheduling: scheduler::Settings,
}

impl Settings {
    /// Defaults for tests and examples: one router, 0.9.0 limits.
    pub fn example(namespace: &str, grpc_endpoint: &str, router_endpoint: &str) -> Settings {
        Settings {
            namespace: namespace.to_owned(),
            grpc_endpoint: grpc_endpoint.to_owned(),
            routers: vec![RouterEntry {
                name: "default".into(),
                endpoint: router_endpoint.to_owned(),
                labels: BTreeMap::new(),
                quic_endpoint: None,
            }],
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            router_token_lifetime: DEFAULT_ROUTER_TOKEN_LIFETIME,
            max_tags: DEFAULT_MAX_TAGS,
            hidden_labels: Vec::new(),
            deprecated_labels: BTreeMap::new(),
            provisioning: false,
            internal_prefix: crate::upstream::DEFAULT_INTERNAL_PREFIX.to_owned(),
            jwt: Vec::new(),
            lease_cert_max_validity: DEFAULT_LEASE_CERT_MAX_VALIDITY,
            limits: Limits::default(),
            exporter_label_prefixes: Vec::new(),
            owner: None,
            scheduling: scheduler::Settings::default(),
        }
    }
}

/// 0.9.0's operator default for internal tokens (43800 h = 5 years).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::hours(43_800);
/// Router tokens only need to live from Dial until both peers have opened their
/// streams; two minutes covers a slow exporter while keeping replays short-lived.
pub const DEFAULT_ROUTER_TOKEN_LIFETIME: Duration = Duration::minutes(2);
/// 0.9.0 `leasePolicy.maxTags` default.
pub const DEFAULT_MAX_TAGS: usize = 10;
/// Per-lease certificates last at most 10 s; peers renew them on their live connection
/// (same key) while the lease goes on. Routers close a connection when its certificate ends,
/// so this bounds how long traffic of a released lease can go on, without router state. The
/// price is one CSR signature per peer every few seconds, and sessions that end if the
/// controller is unreachable for longer than this.
pub const DEFAULT_LEASE_CERT_MAX_VALIDITY: Duration = Duration::seconds(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routers_parse() {
        let r = RouterEntry::parse("router-1=r1.example.com:443;router-index=1").unwrap();
        assert_eq!(r.name, "router-1");
        assert_eq!(r.endpoint, "r1.example.com:443");
        assert_eq!(r.labels.get("router-index").map(String::as_str), Some("1"));
        assert!(RouterEntry::parse("r1.example.com:443").is_err());
        assert!(RouterEntry::parse("r=https://x:1").is_err());
        assert_eq!(r.quic_endpoint, None);
        let q =
            RouterEntry::parse("r2=r2.example.com:443;quic=r2.example.com:4433;zone=a").unwrap();
        assert_eq!(q.quic_endpoint.as_deref(), Some("r2.example.com:4433"));
        assert_eq!(q.labels.len(), 1);
        assert!(RouterEntry::parse("r=x:1;quic=nope").is_err());
    }
}
