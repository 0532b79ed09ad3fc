//! Controller settings, parsed from flags and environment at the edge (the binary) and
//! passed down as plain values. Nothing below this layer reads the environment.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use time::Duration;

use crate::limits::Limits;

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
            lease_cert_max_validity: DEFAULT_LEASE_CERT_MAX_VALIDITY,
            limits: Limits::default(),
            exporter_label_prefixes: Vec::new(),
            owner: None,
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
