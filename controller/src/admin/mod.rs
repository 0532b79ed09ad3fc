//! Administration of clients, exporters and leases, on any [`Store`]: what `jmp admin`
//! does, independent of where the objects live (the Kubernetes API, or the embedded store
//! of a standalone service reached through its admin socket).
//!
//! Creating a client or exporter follows the 0.9.0 flow: create the object, wait (at most
//! [`CREDENTIAL_WAIT`]) until the reconciler has set `status.credential`, then read the
//! token from that Secret, the CA from ConfigMap [`keys::CA_CONFIG_MAP`] and the endpoint
//! from `status.endpoint`, and build the configuration file the real `jmp` reads.
//!
//! Creating a lease ([`lease`]) goes through the checks of `ClientService.CreateLease`
//! on behalf of an existing client; the reconcile loop schedules it as usual.
//!
//! Applying a YAML manifest ([`apply`]) creates or updates objects of any of the four kinds,
//! ExporterAccessPolicies included, as `kubectl apply -f` would.
//!
//! - [`apply`]: [`Manifest`], what `apply -f` reads, checks and writes.
//! - [`config`]: the 0.9.0 `ClientConfig` / `ExporterConfig` files.
//! - [`lease`]: [`LeaseOrder`], what `create lease` asks for.
//! - [`listing`]: [`Objects`] (the result of get and list) as a table, YAML, JSON or names.

pub mod apply;
pub(crate) mod config;
pub mod lease;
pub(crate) mod listing;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, LocalObjectReference, Secret};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::crd::{Client, ClientSpec, Exporter, ExporterAccessPolicy, ExporterSpec, GROUP, Lease};
use crate::keys;
use crate::reconcile::credential::TOKEN_KEY;
use crate::settings::DEFAULT_MAX_TAGS;
use crate::store::{Object, Store, StoreError, list_all};

pub use apply::{Applied, DocumentError, Manifest, Outcome};
pub use config::{ClientConfig, Credentials, ExporterConfig};
pub use lease::LeaseOrder;
pub use listing::{Objects, OutputFormat};

/// How long `create` waits for the reconciler to issue the credential (0.9.0: 10 s).
pub(crate) const CREDENTIAL_WAIT: Duration = Duration::from_secs(10);
/// Interval between two looks at the object while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Longest object name: the credential Secret `<name>-exporter` must stay a valid name.
const MAX_NAME_LEN: usize = 253 - "-exporter".len();

/// The kinds of object the admin commands handle. Serialized as the object's `kind`
/// (`Client`, …, `ExporterAccessPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    Client,
    Exporter,
    Lease,
    #[serde(rename = "ExporterAccessPolicy")]
    Policy,
}

impl Kind {
    /// Every kind, in the order help texts list them.
    pub const ALL: [Kind; 4] = [Kind::Client, Kind::Exporter, Kind::Lease, Kind::Policy];

    /// `client`, `exporter`, `lease`, `policy`.
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Client => "client",
            Kind::Exporter => "exporter",
            Kind::Lease => "lease",
            Kind::Policy => "policy",
        }
    }

    /// `clients`, `exporters`, `leases`, `policies`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Client => "clients",
            Kind::Exporter => "exporters",
            Kind::Lease => "leases",
            Kind::Policy => "policies",
        }
    }

    /// The object's `kind`: `Client`, `Exporter`, `Lease`, `ExporterAccessPolicy`.
    pub fn object_kind(self) -> &'static str {
        match self {
            Kind::Client => "Client",
            Kind::Exporter => "Exporter",
            Kind::Lease => "Lease",
            Kind::Policy => "ExporterAccessPolicy",
        }
    }

    /// The resource as kubectl names it in its output: the lowercase kind and the group,
    /// e.g. `exporteraccesspolicy.jumpstarter.dev`.
    pub fn resource(self) -> String {
        format!("{}.{GROUP}", self.object_kind().to_ascii_lowercase())
    }

    /// The kind named by its singular or plural form, or (for policies) by the singular or
    /// plural of its object kind, lowercase (`exporteraccesspolicies`).
    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| {
            text == k.singular()
                || text == k.plural()
                || (*k == Kind::Policy
                    && matches!(text, "exporteraccesspolicy" | "exporteraccesspolicies"))
        })
    }
}

/// Why an admin operation failed; each variant says about which object.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("invalid lease: {0}")]
    InvalidLease(String),
    #[error("invalid label {label:?}: {reason}")]
    InvalidLabel { label: String, reason: String },
    #[error("invalid username {username:?}: {reason}")]
    InvalidUsername {
        username: String,
        reason: &'static str,
    },
    #[error("{kind} {namespace}/{name} already exists")]
    AlreadyExists {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error(
        "{kind} {namespace}/{name} got no credential within {waited:?}: is the controller running and serving namespace {namespace}?"
    )]
    CredentialTimeout {
        kind: &'static str,
        namespace: String,
        name: String,
        waited: Duration,
    },
    #[error("{kind} {namespace}/{name} has no status.endpoint")]
    MissingEndpoint {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error(
        "ConfigMap {namespace}/{} has no {}: has the controller started in this namespace?",
        keys::CA_CONFIG_MAP,
        keys::CA_CERT_KEY
    )]
    MissingCa { namespace: String },
    #[error("{operation}: {source}")]
    Store {
        operation: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("cannot render the output: {0}")]
    Render(String),
    #[error("invalid manifest, nothing applied:\n{}", apply::describe(.errors))]
    InvalidManifest { errors: Vec<DocumentError> },
    #[error("no objects passed to apply")]
    EmptyManifest,
}

/// The admin operations on one namespace of a store.
#[derive(Debug, Clone)]
pub struct Admin<S> {
    store: S,
    namespace: String,
    credential_wait: Duration,
    max_tags: usize,
}

impl<S: Store> Admin<S> {
    pub fn new(store: S, namespace: impl Into<String>) -> Admin<S> {
        Admin {
            store,
            namespace: namespace.into(),
            credential_wait: CREDENTIAL_WAIT,
            max_tags: DEFAULT_MAX_TAGS,
        }
    }

    /// Changes how long `create_*` waits for the credential.
    pub fn with_credential_wait(mut self, wait: Duration) -> Admin<S> {
        self.credential_wait = wait;
        self
    }

    /// Changes how many tags `create_lease` accepts (the controller's `--max-tags`).
    pub fn with_max_tags(mut self, max_tags: usize) -> Admin<S> {
        self.max_tags = max_tags;
        self
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Creates Client `name` with `labels` and returns its configuration.
    pub async fn create_client(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<ClientConfig, AdminError> {
        self.create_client_for(name, labels, None).await
    }

    /// Creates Client `name` with `labels` that the identity-provider user `username`
    /// (`spec.username`, e.g. `dex:alice`) may also act as, and returns its configuration.
    pub async fn create_client_for(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        username: Option<&str>,
    ) -> Result<ClientConfig, AdminError> {
        let username = checked_username(username)?;
        let mut client = Client::new(name, ClientSpec { username });
        let credentials = self.create_with_credential(&mut client, labels).await?;
        Ok(ClientConfig::new(&credentials))
    }

    /// Creates Exporter `name` with `labels` (what lease selectors match) and returns its
    /// configuration, with an empty driver tree.
    pub async fn create_exporter(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<ExporterConfig, AdminError> {
        self.create_exporter_for(name, labels, None).await
    }

    /// [`Admin::create_exporter`], for an exporter that may also log in as `username`
    /// (`jmp login --exporter-config`).
    pub async fn create_exporter_for(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        username: Option<&str>,
    ) -> Result<ExporterConfig, AdminError> {
        let username = checked_username(username)?;
        let mut exporter = Exporter::new(
            name,
            ExporterSpec {
                username,
                ..ExporterSpec::default()
            },
        );
        let credentials = self.create_with_credential(&mut exporter, labels).await?;
        Ok(ExporterConfig::new(&credentials))
    }

    /// The one object `name` of `kind`.
    pub async fn get(&self, kind: Kind, name: &str) -> Result<Objects, AdminError> {
        check_object_name(name)?;
        let not_found = || self.not_found(kind, name);
        Ok(match kind {
            Kind::Client => Objects::Clients(vec![
                self.read::<Client>(name).await?.ok_or_else(not_found)?,
            ]),
            Kind::Exporter => Objects::Exporters(vec![
                self.read::<Exporter>(name).await?.ok_or_else(not_found)?,
            ]),
            Kind::Lease => {
                Objects::Leases(vec![self.read::<Lease>(name).await?.ok_or_else(not_found)?])
            }
            Kind::Policy => Objects::Policies(vec![
                self.read::<ExporterAccessPolicy>(name)
                    .await?
                    .ok_or_else(not_found)?,
            ]),
        })
    }

    /// Every object of `kind` in the namespace, sorted by name.
    pub async fn list(&self, kind: Kind) -> Result<Objects, AdminError> {
        Ok(match kind {
            Kind::Client => Objects::Clients(self.list_sorted().await?),
            Kind::Exporter => Objects::Exporters(self.list_sorted().await?),
            Kind::Lease => Objects::Leases(self.list_sorted().await?),
            Kind::Policy => Objects::Policies(self.list_sorted().await?),
        })
    }

    /// Deletes object `name` of `kind` (and the credential Secret of a client or
    /// exporter); a missing object is [`AdminError::NotFound`].
    pub async fn delete(&self, kind: Kind, name: &str) -> Result<(), AdminError> {
        check_object_name(name)?;
        let exists = match kind {
            Kind::Client => self.read::<Client>(name).await?.is_some(),
            Kind::Exporter => self.read::<Exporter>(name).await?.is_some(),
            Kind::Lease => self.read::<Lease>(name).await?.is_some(),
            Kind::Policy => self.read::<ExporterAccessPolicy>(name).await?.is_some(),
        };
        if !exists {
            return Err(self.not_found(kind, name));
        }
        match kind {
            Kind::Client => self.remove::<Client>(name).await?,
            Kind::Exporter => self.remove::<Exporter>(name).await?,
            Kind::Lease => self.remove::<Lease>(name).await?,
            Kind::Policy => self.remove::<ExporterAccessPolicy>(name).await?,
        }
        // Kubernetes garbage-collects the Secret through its owner reference; stores
        // without a garbage collector need it removed here. Removing it twice is harmless.
        let secret = match kind {
            Kind::Client => Some(format!("{name}-client")),
            Kind::Exporter => Some(format!("{name}-exporter")),
            Kind::Lease | Kind::Policy => None,
        };
        if let Some(secret) = secret {
            self.remove::<Secret>(&secret).await?;
        }
        Ok(())
    }

    /// Creates `object` (a Client or an Exporter) and waits for its credential.
    async fn create_with_credential<K>(
        &self,
        object: &mut K,
        labels: &BTreeMap<String, String>,
    ) -> Result<Credentials, AdminError>
    where
        K: Object + Credentialed,
    {
        let name = object.meta().name.clone().unwrap_or_default();
        validate_name(&name)?;
        for (key, value) in labels {
            validate_label(key, value)?;
        }
        let meta = object.meta_mut();
        meta.namespace = Some(self.namespace.clone());
        if !labels.is_empty() {
            meta.labels = Some(labels.clone());
        }
        let kind = K::KIND;
        match self.store.create(object).await {
            Ok(_) => {}
            Err(StoreError::AlreadyExists { .. }) => {
                return Err(AdminError::AlreadyExists {
                    kind: kind.singular(),
                    namespace: self.namespace.clone(),
                    name,
                });
            }
            Err(source) => return Err(self.store_error("create", kind, &name, source)),
        }

        let deadline = Instant::now() + self.credential_wait;
        let (token, endpoint) = loop {
            if let Some(found) = self.issued_credential::<K>(&name).await? {
                break found;
            }
            if Instant::now() >= deadline {
                return Err(AdminError::CredentialTimeout {
                    kind: kind.singular(),
                    namespace: self.namespace.clone(),
                    name,
                    waited: self.credential_wait,
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        };
        let endpoint = endpoint.ok_or_else(|| AdminError::MissingEndpoint {
            kind: kind.singular(),
            namespace: self.namespace.clone(),
            name: name.clone(),
        })?;
        let ca_pem = self.ca_pem().await?;
        Ok(Credentials {
            namespace: self.namespace.clone(),
            name,
            endpoint,
            ca_pem,
            token,
        })
    }

    /// The token and `status.endpoint`, once `status.credential` names a Secret that holds
    /// a token.
    async fn issued_credential<K: Object + Credentialed>(
        &self,
        name: &str,
    ) -> Result<Option<(String, Option<String>)>, AdminError> {
        let Some(object) = self.read::<K>(name).await? else {
            return Ok(None);
        };
        let Some(secret_name) = object.credential().map(|r| r.name.clone()) else {
            return Ok(None);
        };
        let secret = self
            .store
            .get::<Secret>(&self.namespace, &secret_name)
            .await
            .map_err(|source| AdminError::Store {
                operation: format!("read Secret {}/{secret_name}", self.namespace),
                source: Box::new(source),
            })?;
        let token = secret
            .and_then(|s| s.data)
            .and_then(|mut data| data.remove(TOKEN_KEY))
            .and_then(|bytes| String::from_utf8(bytes.0).ok())
            .filter(|t| !t.is_empty());
        Ok(token.map(|token| (token, object.endpoint())))
    }

    async fn ca_pem(&self) -> Result<String, AdminError> {
        let config_map = self
            .store
            .get::<ConfigMap>(&self.namespace, keys::CA_CONFIG_MAP)
            .await
            .map_err(|source| AdminError::Store {
                operation: format!("read ConfigMap {}/{}", self.namespace, keys::CA_CONFIG_MAP),
                source: Box::new(source),
            })?;
        config_map
            .and_then(|c| c.data)
            .and_then(|mut data| data.remove(keys::CA_CERT_KEY))
            .filter(|pem| !pem.is_empty())
            .ok_or_else(|| AdminError::MissingCa {
                namespace: self.namespace.clone(),
            })
    }

    async fn read<K: Object>(&self, name: &str) -> Result<Option<K>, AdminError> {
        self.store
            .get::<K>(&self.namespace, name)
            .await
            .map_err(|source| AdminError::Store {
                operation: format!("read {} {}/{name}", K::kind(&()), self.namespace),
                source: Box::new(source),
            })
    }

    async fn remove<K: Object>(&self, name: &str) -> Result<(), AdminError> {
        self.store
            .delete::<K>(&self.namespace, name)
            .await
            .map_err(|source| AdminError::Store {
                operation: format!("delete {} {}/{name}", K::kind(&()), self.namespace),
                source: Box::new(source),
            })
    }

    async fn list_sorted<K: Object>(&self) -> Result<Vec<K>, AdminError> {
        let mut items: Vec<K> =
            list_all(&self.store, &self.namespace, None)
                .await
                .map_err(|source| AdminError::Store {
                    operation: format!("list {} in {}", K::plural(&()), self.namespace),
                    source: Box::new(source),
                })?;
        items.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
        Ok(items)
    }

    fn not_found(&self, kind: Kind, name: &str) -> AdminError {
        AdminError::NotFound {
            kind: kind.singular(),
            namespace: self.namespace.clone(),
            name: name.to_owned(),
        }
    }

    fn store_error(
        &self,
        operation: &str,
        kind: Kind,
        name: &str,
        source: StoreError,
    ) -> AdminError {
        AdminError::Store {
            operation: format!("{operation} {} {}/{name}", kind.singular(), self.namespace),
            source: Box::new(source),
        }
    }
}

/// A Client or an Exporter: something that holds a credential.
trait Credentialed {
    const KIND: Kind;
    fn credential(&self) -> Option<&LocalObjectReference>;
    fn endpoint(&self) -> Option<String>;
}

/// Implements [`Credentialed`] for objects whose status has `credential` and `endpoint`.
macro_rules! credentialed {
    ($($kind:ident),+) => {$(
        impl Credentialed for $kind {
            const KIND: Kind = Kind::$kind;

            fn credential(&self) -> Option<&LocalObjectReference> {
                self.status.as_ref()?.credential.as_ref()
            }

            fn endpoint(&self) -> Option<String> {
                let endpoint = self.status.as_ref()?.endpoint.clone();
                endpoint.filter(|e| !e.is_empty())
            }
        }
    )+};
}

credentialed!(Client, Exporter);

/// A name that can name a stored object (RFC 1123 subdomain), checked before any store
/// call. Names of new clients and exporters are held to [`validate_name`] instead.
fn check_object_name(name: &str) -> Result<(), AdminError> {
    if jumpstarter_lease::name::is_object_name(name) {
        Ok(())
    } else {
        Err(AdminError::InvalidName {
            name: name.to_owned(),
            reason: "must be an object name (RFC 1123 subdomain: lowercase letters, digits, \
                     '-' and '.', at most 253)"
                .to_owned(),
        })
    }
}

/// A DNS subdomain name (RFC 1123), short enough for the credential Secret's name.
pub fn validate_name(name: &str) -> Result<(), AdminError> {
    let fail = |reason: &str| AdminError::InvalidName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() {
        return Err(fail("must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(fail(&format!("must be at most {MAX_NAME_LEN} characters")));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !name.chars().all(allowed)
        || !name.starts_with(alnum)
        || !name.ends_with(alnum)
        || name.split('.').any(|part| part.is_empty())
    {
        return Err(fail(
            "use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
        ));
    }
    Ok(())
}

/// A Kubernetes label: key `[prefix/]name`, value of at most 63 characters.
pub fn validate_label(key: &str, value: &str) -> Result<(), AdminError> {
    let fail = |reason: &str| AdminError::InvalidLabel {
        label: format!("{key}={value}"),
        reason: reason.to_owned(),
    };
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && (prefix.len() > 253 || validate_name(prefix).is_err())
    {
        return Err(fail("the key's prefix must be a DNS subdomain"));
    }
    if !label_segment(name, false) {
        return Err(fail(
            "the key's name must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        ));
    }
    if !label_segment(value, true) {
        return Err(fail(
            "the value must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        ));
    }
    Ok(())
}

fn label_segment(text: &str, may_be_empty: bool) -> bool {
    if text.is_empty() {
        return may_be_empty;
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    text.len() <= 63
        && text.starts_with(alnum)
        && text.ends_with(alnum)
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Longest `spec.username` accepted (far above any identity provider's usernames; keeps
/// objects small).
const MAX_USERNAME: usize = 512;

/// A `spec.username` as given: `None` stays `None`; an empty, overlong or multi-line one is
/// refused (it could never match a token's username).
fn checked_username(username: Option<&str>) -> Result<Option<String>, AdminError> {
    let Some(username) = username else {
        return Ok(None);
    };
    let refuse = |reason| {
        Err(AdminError::InvalidUsername {
            username: username.to_owned(),
            reason,
        })
    };
    if username.trim().is_empty() {
        return refuse("it is empty");
    }
    if username.len() > MAX_USERNAME {
        return refuse("it is longer than 512 bytes");
    }
    if username.chars().any(char::is_control) {
        return refuse("it contains control characters");
    }
    Ok(Some(username.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rfc_1123() {
        for ok in ["a", "board-1", "lab.board-2", "0x"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "-a", "a-", "a..b", "a_b", "a/b", &"x".repeat(245)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_follow_kubernetes_rules() {
        for (k, v) in [("board", "mock"), ("example.com/board", ""), ("a_b", "A.1")] {
            assert!(validate_label(k, v).is_ok(), "{k}={v}");
        }
        for (k, v) in [
            ("", "x"),
            ("-a", "x"),
            ("Bad_Prefix/a", "x"),
            ("a", "-x"),
            ("a", "has space"),
        ] {
            assert!(validate_label(k, v).is_err(), "{k}={v}");
        }
        assert!(validate_label("a", &"v".repeat(64)).is_err());
    }

    #[test]
    fn kinds_parse_from_either_form() {
        assert_eq!(Kind::parse("clients"), Some(Kind::Client));
        assert_eq!(Kind::parse("lease"), Some(Kind::Lease));
        assert_eq!(Kind::parse("pods"), None);
        for policy in [
            "policy",
            "policies",
            "exporteraccesspolicy",
            "exporteraccesspolicies",
        ] {
            assert_eq!(Kind::parse(policy), Some(Kind::Policy), "{policy}");
        }
        assert_eq!(Kind::parse("exporteraccesspolicys"), None);
        assert_eq!(
            Kind::Policy.resource(),
            "exporteraccesspolicy.jumpstarter.dev"
        );
        assert_eq!(Kind::Client.resource(), "client.jumpstarter.dev");
    }

    #[test]
    fn usernames_are_kept_as_given_unless_unusable() {
        assert_eq!(checked_username(None).unwrap(), None);
        assert_eq!(
            checked_username(Some("dex:alice@example.com")).unwrap(),
            Some("dex:alice@example.com".to_owned())
        );
        for bad in ["", "  ", "a\nb"] {
            let err = checked_username(Some(bad)).unwrap_err();
            assert!(err.to_string().starts_with("invalid username"), "{err}");
        }
        assert!(checked_username(Some(&"u".repeat(513))).is_err());
    }
}
