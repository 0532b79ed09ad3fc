//! The upstream (0.9.0) configuration: ConfigMap `jumpstarter-controller` with its keys
//! `config` and `router`, and the legacy key `authentication`; in standalone mode the
//! same YAML as key `config` comes from a file (`--config FILE`).
//!
//! [`UpstreamConfig::parse`] is the pure core: it reads the key texts strictly (an unknown
//! key is an error naming its path, e.g. `config: grpc.keepalive: unknown field
//! `minTim`, expected one of …`), checks the Go durations and returns plain values.
//! [`UpstreamConfig::apply`] folds them into [`Settings`], and
//! [`UpstreamConfig::apply_keepalive`] into the gRPC port's limits, except for what a flag
//! (or its environment variable) gave explicitly: see [`GivenFlags`]. [`source`] reads the
//! ConfigMap or the file.
//!
//! What 0.9.0 does and this follows:
//! - key `config`: `authentication{internal{prefix, tokenLifetime}, k8s{enabled}, jwt[]}`,
//!   `provisioning{enabled}`, `grpc{keepalive{…}}`, `leasePolicy{maxTags}`,
//!   `hiddenLabels{keys[]}`, `deprecatedLabels{keys{label: message}}`;
//! - key `router`: a map from router name to `{endpoint: "host:port", labels: {…}}`;
//! - key `authentication` (a `jumpstarter.dev/v1alpha1` `AuthenticationConfiguration`
//!   with `internal.prefix` and `jwt`): when present it wins and key `config` is not used;
//!   provisioning is then off, `maxTags` 10, keepalive `minTime` 1 s with
//!   `permitWithoutStream`.
//!
//! The JWT authenticators are handed over raw ([`Authentication::jwt`]); their own schema is
//! checked where they are built. Field names are matched exactly (Go's JSON decoder would
//! also take other letter cases).

pub mod source;

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::settings::{RouterEntry, Settings};
use jumpstarter_lease::scheduler::duration as go_duration;
use jumpstarter_shell::port_limits::PortLimits;

/// The internal-token username prefix when the configuration names none (0.9.0's chart
/// and operator default; it is also what 0.9.0 hard-codes to recognise internal users).
pub const DEFAULT_INTERNAL_PREFIX: &str = "internal:";

/// 0.9.0's `grpc.keepalive.minTime` default, also the legacy `authentication` key's.
pub const DEFAULT_KEEPALIVE_MIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// 0.9.0's `leasePolicy.maxTags` when the legacy `authentication` key is used.
const LEGACY_MAX_TAGS: usize = 10;

/// `apiVersion` and `kind` of the legacy `authentication` key.
const LEGACY_API_VERSION: &str = "jumpstarter.dev/v1alpha1";
const LEGACY_KIND: &str = "AuthenticationConfiguration";

/// Why the upstream configuration was refused. Each message names the key and the path.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Not YAML of the expected shape (unknown field, wrong type, …).
    #[error("{key}: {message}")]
    Yaml { key: &'static str, message: String },
    /// A value of the right type but not allowed.
    #[error("{key}: {path}: {message}")]
    Invalid {
        key: &'static str,
        path: String,
        message: String,
    },
    /// The configuration file could not be read.
    #[error("read the configuration file {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The ConfigMap could not be read.
    #[error("read ConfigMap {namespace}/{name}: {source}")]
    ConfigMap {
        namespace: String,
        name: String,
        #[source]
        source: Box<crate::store::StoreError>,
    },
}

/// The upstream configuration, parsed. Every field is `None` (or empty) when not given, so
/// [`UpstreamConfig::apply`] changes only what the configuration sets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpstreamConfig {
    pub authentication: Authentication,
    /// `provisioning.enabled`: the first login of an unknown user creates its Client.
    pub provisioning: bool,
    pub keepalive: Keepalive,
    /// `leasePolicy.maxTags`; `None` when absent or 0 (Go's zero value: unset).
    pub max_tags: Option<usize>,
    /// `leasePolicy.agingInterval` (not in 0.9.0): `Some(None)` turns aging off (`0s`).
    pub aging_interval: Option<Option<time::Duration>>,
    /// `hiddenLabels.keys`; `None` when absent.
    pub hidden_labels: Option<Vec<String>>,
    /// `deprecatedLabels.keys`: label key -> message shown to users.
    pub deprecated_labels: BTreeMap<String, String>,
    /// Key `router`, sorted by name; `None` when the key is absent.
    pub routers: Option<Vec<RouterEntry>>,
    /// The legacy key `authentication` was used (and key `config` ignored).
    pub legacy_authentication: bool,
}

/// `authentication` of key `config` (or the legacy key).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Authentication {
    /// `internal.prefix`; `None` when absent (then [`DEFAULT_INTERNAL_PREFIX`]).
    pub internal_prefix: Option<String>,
    /// `internal.tokenLifetime` (a positive Go duration); `None` when absent.
    pub token_lifetime: Option<time::Duration>,
    /// `k8s.enabled`: parsed, unused (as in 0.9.0).
    pub k8s_enabled: bool,
    /// `jwt`: Kubernetes structured-authentication `JWTAuthenticator`s, raw.
    pub jwt: Vec<serde_json::Value>,
}

/// `grpc.keepalive`: grpc-go's server keepalive parameters and enforcement policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keepalive {
    /// `minTime`: least time between a client's PINGs (enforcement); `None` when absent.
    pub min_time: Option<std::time::Duration>,
    /// `permitWithoutStream`: PINGs allowed without calls in flight (enforcement).
    pub permit_without_stream: Option<bool>,
    /// `timeout`: how long a server PING may go unanswered.
    pub timeout: Option<std::time::Duration>,
    /// `intervalTime`: interval of the server's PINGs.
    pub interval: Option<std::time::Duration>,
    /// `maxConnectionIdle`: a connection without calls for that long is closed.
    pub max_connection_idle: Option<std::time::Duration>,
    /// `maxConnectionAge`: a connection is closed (GOAWAY) after that long.
    pub max_connection_age: Option<std::time::Duration>,
    /// `maxConnectionAgeGrace`: calls still running then get that long to finish.
    pub max_connection_age_grace: Option<std::time::Duration>,
}

/// Which settings the command line gave explicitly (a flag or its environment variable);
/// those win over the upstream configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GivenFlags {
    pub token_lifetime: bool,
    pub max_tags: bool,
    pub hidden_labels: bool,
    pub routers: bool,
    pub keepalive_interval: bool,
    pub keepalive_timeout: bool,
    pub idle_timeout: bool,
}

impl GivenFlags {
    /// Reads which of the flags exist in `matches` and were given on the command line or
    /// through the environment (not defaults). Argument ids are the flag groups' field
    /// names.
    pub fn from_matches(matches: &clap::ArgMatches) -> GivenFlags {
        let given = |id: &str| {
            matches.ids().any(|known| known.as_str() == id)
                && matches!(
                    matches.value_source(id),
                    Some(clap::parser::ValueSource::CommandLine)
                        | Some(clap::parser::ValueSource::EnvVariable)
                )
        };
        GivenFlags {
            token_lifetime: given("token_lifetime"),
            max_tags: given("max_tags"),
            hidden_labels: given("hidden_labels"),
            routers: given("routers"),
            keepalive_interval: given("keepalive_interval"),
            keepalive_timeout: given("keepalive_timeout"),
            idle_timeout: given("idle_timeout"),
        }
    }
}

impl UpstreamConfig {
    /// Parses the ConfigMap's keys (each `None` when absent). The legacy `authentication`
    /// key wins over `config`, as in 0.9.0.
    pub fn parse(
        config: Option<&str>,
        router: Option<&str>,
        authentication: Option<&str>,
    ) -> Result<UpstreamConfig, UpstreamError> {
        let routers = router.map(parse_routers).transpose()?;
        let mut parsed = match authentication {
            Some(text) => parse_legacy(text)?,
            None => match config {
                Some(text) => parse_config(text)?,
                None => UpstreamConfig::default(),
            },
        };
        parsed.routers = routers;
        Ok(parsed)
    }

    /// Folds what the configuration sets into `settings`, except what `given` says a flag
    /// gave.
    pub fn apply(&self, settings: &mut Settings, given: &GivenFlags) {
        let auth = &self.authentication;
        if let Some(prefix) = &auth.internal_prefix {
            settings.internal_prefix = prefix.clone();
        }
        if let (Some(lifetime), false) = (auth.token_lifetime, given.token_lifetime) {
            settings.token_lifetime = lifetime;
        }
        settings.jwt = auth.jwt.clone();
        settings.provisioning = self.provisioning;
        if let (Some(max_tags), false) = (self.max_tags, given.max_tags) {
            settings.max_tags = max_tags;
        }
        if let Some(aging) = self.aging_interval {
            settings.scheduling.aging_interval = aging;
        }
        if let (Some(hidden), false) = (&self.hidden_labels, given.hidden_labels) {
            settings.hidden_labels = hidden.clone();
        }
        settings.deprecated_labels = self.deprecated_labels.clone();
        if let (Some(routers), false) = (&self.routers, given.routers) {
            settings.routers = routers.clone();
        }
    }

    /// Folds the keepalive section into a gRPC port's limits, except what `given` says a
    /// flag gave. Returns what cannot be applied, for one log line at start.
    pub fn apply_keepalive(&self, limits: &mut PortLimits, given: &GivenFlags) -> Vec<String> {
        let keepalive = &self.keepalive;
        if let (Some(interval), false) = (keepalive.interval, given.keepalive_interval) {
            limits.http2.keepalive_interval = interval;
        }
        if let (Some(timeout), false) = (keepalive.timeout, given.keepalive_timeout) {
            limits.http2.keepalive_timeout = timeout;
        }
        if let (Some(idle), false) = (keepalive.max_connection_idle, given.idle_timeout) {
            limits.accept.idle_timeout = idle;
        }
        if keepalive.max_connection_age.is_some() {
            limits.http2.max_connection_age = keepalive.max_connection_age;
        }
        if keepalive.max_connection_age_grace.is_some() {
            limits.http2.max_connection_age_grace = keepalive.max_connection_age_grace;
        }
        let mut not_applied = Vec::new();
        if keepalive.min_time.is_some() || keepalive.permit_without_stream.is_some() {
            not_applied.push(
                "grpc.keepalive.minTime and permitWithoutStream (PINGs are answered at any \
                 rate, with or without calls in flight)"
                    .to_owned(),
            );
        }
        not_applied
    }
}

// The documents as written. `Option` everywhere: a key written with no value (YAML null)
// is the same as an absent key, as for Go's decoder.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConfigDocument {
    authentication: Option<AuthenticationDocument>,
    provisioning: Option<ProvisioningDocument>,
    grpc: Option<GrpcDocument>,
    lease_policy: Option<LeasePolicyDocument>,
    hidden_labels: Option<HiddenLabelsDocument>,
    deprecated_labels: Option<DeprecatedLabelsDocument>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AuthenticationDocument {
    internal: Option<InternalDocument>,
    k8s: Option<K8sDocument>,
    jwt: Option<Vec<serde_json::Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct InternalDocument {
    prefix: Option<String>,
    token_lifetime: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct K8sDocument {
    enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ProvisioningDocument {
    enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GrpcDocument {
    keepalive: Option<KeepaliveDocument>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KeepaliveDocument {
    min_time: Option<String>,
    permit_without_stream: Option<bool>,
    timeout: Option<String>,
    interval_time: Option<String>,
    max_connection_idle: Option<String>,
    max_connection_age: Option<String>,
    max_connection_age_grace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LeasePolicyDocument {
    max_tags: Option<i64>,
    aging_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HiddenLabelsDocument {
    keys: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DeprecatedLabelsDocument {
    keys: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LegacyAuthenticationDocument {
    api_version: Option<String>,
    kind: Option<String>,
    internal: Option<InternalDocument>,
    jwt: Option<Vec<serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouterDocument {
    endpoint: String,
    labels: Option<BTreeMap<String, String>>,
}

/// A key's YAML as `T`; an empty (or comment-only, or `null`) text is `T::default()`.
fn from_yaml<T: for<'de> Deserialize<'de> + Default>(
    key: &'static str,
    text: &str,
) -> Result<T, UpstreamError> {
    let value: Option<T> = serde_norway::from_str(text).map_err(|e| UpstreamError::Yaml {
        key,
        message: e.to_string(),
    })?;
    Ok(value.unwrap_or_default())
}

fn parse_config(text: &str) -> Result<UpstreamConfig, UpstreamError> {
    const KEY: &str = "config";
    let document: ConfigDocument = from_yaml(KEY, text)?;
    let auth = document.authentication.unwrap_or_default();
    let keepalive = document.grpc.and_then(|g| g.keepalive).unwrap_or_default();
    let lease_policy = document.lease_policy.unwrap_or_default();
    let aging_interval = match lease_policy.aging_interval.as_deref() {
        None | Some("") => None,
        Some(text) => {
            let invalid = |message: String| UpstreamError::Invalid {
                key: KEY,
                path: "leasePolicy.agingInterval".into(),
                message,
            };
            let interval = go_duration::parse(text).map_err(|e| invalid(e.to_string()))?;
            if interval.is_negative() {
                return Err(invalid(format!("{text:?} is negative")));
            }
            Some(interval.is_positive().then_some(interval))
        }
    };
    let max_tags = match lease_policy.max_tags {
        None | Some(0) => None,
        Some(n) => Some(usize::try_from(n).map_err(|_| UpstreamError::Invalid {
            key: KEY,
            path: "leasePolicy.maxTags".into(),
            message: format!("{n} is negative"),
        })?),
    };
    Ok(UpstreamConfig {
        authentication: authentication(
            KEY,
            "authentication",
            auth.internal,
            auth.k8s.and_then(|k| k.enabled).unwrap_or(false),
            auth.jwt,
        )?,
        provisioning: document
            .provisioning
            .and_then(|p| p.enabled)
            .unwrap_or(false),
        keepalive: Keepalive {
            min_time: keepalive_duration(&keepalive.min_time, "minTime")?,
            permit_without_stream: keepalive.permit_without_stream,
            timeout: keepalive_duration(&keepalive.timeout, "timeout")?,
            interval: keepalive_duration(&keepalive.interval_time, "intervalTime")?,
            max_connection_idle: keepalive_duration(
                &keepalive.max_connection_idle,
                "maxConnectionIdle",
            )?,
            max_connection_age: keepalive_duration(
                &keepalive.max_connection_age,
                "maxConnectionAge",
            )?,
            max_connection_age_grace: keepalive_duration(
                &keepalive.max_connection_age_grace,
                "maxConnectionAgeGrace",
            )?,
        },
        max_tags,
        aging_interval,
        hidden_labels: document.hidden_labels.and_then(|h| h.keys),
        deprecated_labels: document
            .deprecated_labels
            .and_then(|d| d.keys)
            .unwrap_or_default(),
        routers: None,
        legacy_authentication: false,
    })
}

fn parse_legacy(text: &str) -> Result<UpstreamConfig, UpstreamError> {
    const KEY: &str = "authentication";
    let document: LegacyAuthenticationDocument = from_yaml(KEY, text)?;
    let expect = |field: &str, value: &Option<String>, wanted: &str| match value {
        Some(value) if value != wanted => Err(UpstreamError::Invalid {
            key: KEY,
            path: field.to_owned(),
            message: format!("{value:?} is not {wanted:?}"),
        }),
        _ => Ok(()),
    };
    expect("apiVersion", &document.api_version, LEGACY_API_VERSION)?;
    expect("kind", &document.kind, LEGACY_KIND)?;
    Ok(UpstreamConfig {
        authentication: authentication(KEY, "", document.internal, false, document.jwt)?,
        provisioning: false,
        keepalive: Keepalive {
            min_time: Some(DEFAULT_KEEPALIVE_MIN_TIME),
            permit_without_stream: Some(true),
            ..Keepalive::default()
        },
        max_tags: Some(LEGACY_MAX_TAGS),
        aging_interval: None,
        hidden_labels: None,
        deprecated_labels: BTreeMap::new(),
        routers: None,
        legacy_authentication: true,
    })
}

fn authentication(
    key: &'static str,
    at: &str,
    internal: Option<InternalDocument>,
    k8s_enabled: bool,
    jwt: Option<Vec<serde_json::Value>>,
) -> Result<Authentication, UpstreamError> {
    let internal = internal.unwrap_or_default();
    let path = |field: &str| {
        if at.is_empty() {
            field.to_owned()
        } else {
            format!("{at}.{field}")
        }
    };
    let token_lifetime = match &internal.token_lifetime {
        None => None,
        Some(text) => {
            let lifetime = go_duration::parse(text).map_err(|e| UpstreamError::Invalid {
                key,
                path: path("internal.tokenLifetime"),
                message: e.to_string(),
            })?;
            if !lifetime.is_positive() {
                return Err(UpstreamError::Invalid {
                    key,
                    path: path("internal.tokenLifetime"),
                    message: format!("{text:?} must be positive"),
                });
            }
            Some(lifetime)
        }
    };
    Ok(Authentication {
        internal_prefix: internal.prefix,
        token_lifetime,
        k8s_enabled,
        jwt: jwt.unwrap_or_default(),
    })
}

/// A `grpc.keepalive` Go duration: not negative; `None` when absent or empty.
fn keepalive_duration(
    text: &Option<String>,
    field: &str,
) -> Result<Option<std::time::Duration>, UpstreamError> {
    let Some(text) = text.as_deref().filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let invalid = |message: String| UpstreamError::Invalid {
        key: "config",
        path: format!("grpc.keepalive.{field}"),
        message,
    };
    let duration = go_duration::parse(text).map_err(|e| invalid(e.to_string()))?;
    std::time::Duration::try_from(duration)
        .map(Some)
        .map_err(|_| invalid(format!("{text:?} is negative")))
}

fn parse_routers(text: &str) -> Result<Vec<RouterEntry>, UpstreamError> {
    const KEY: &str = "router";
    let document: BTreeMap<String, RouterDocument> = from_yaml(KEY, text)?;
    document
        .into_iter()
        .map(|(name, router)| {
            let endpoint = router.endpoint.trim();
            if endpoint.is_empty() || !endpoint.contains(':') || endpoint.contains("://") {
                return Err(UpstreamError::Invalid {
                    key: KEY,
                    path: format!("{name}.endpoint"),
                    message: format!("{endpoint:?} is not host:port (no scheme)"),
                });
            }
            Ok(RouterEntry {
                name,
                endpoint: endpoint.to_owned(),
                labels: router.labels.unwrap_or_default(),
                quic_endpoint: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
