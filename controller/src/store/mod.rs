//! The object store the controller runs on.
//!
//! The planner, the gRPC services and the reconcilers see only [`Store`]: get, list,
//! create, replace (full update with optimistic concurrency), replace_status, delete and
//! watch, for any namespaced object type (the four CRDs, Secrets, ConfigMaps). Backends:
//! - [`kube::KubeStore`]: the Kubernetes API (Kubernetes mode);
//! - [`embedded::EmbeddedStore`]: one local database file (standalone mode).
//!
//! Every write carries the object's `resourceVersion`; a stale one fails with
//! [`StoreError::Conflict`]. That is what keeps two writers from both assigning one
//! exporter: the loser re-reads and re-plans.

pub mod embedded;
pub mod kube;
pub(crate) mod reflection;
pub mod warning_throttle;

use std::fmt::Debug;
use std::future::Future;

use ::kube::Resource;
use ::kube::core::NamespaceResourceScope;
use futures::stream::BoxStream;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A namespaced API object the store can hold.
pub trait Object:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<T> Object for T where
    T: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// Why a store operation failed. Each variant names the object it was about.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        kind: String,
        namespace: String,
        name: String,
    },
    #[error("{kind} {namespace}/{name} already exists")]
    AlreadyExists {
        kind: String,
        namespace: String,
        name: String,
    },
    #[error("{kind} {namespace}/{name} was changed concurrently: {message}")]
    Conflict {
        kind: String,
        namespace: String,
        name: String,
        message: String,
    },
    #[error("{kind} {namespace}/{name} is invalid: {message}")]
    Invalid {
        kind: String,
        namespace: String,
        name: String,
        message: String,
    },
    #[error("access to {kind} in {namespace} is forbidden: {message}")]
    Forbidden {
        kind: String,
        namespace: String,
        message: String,
    },
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store error: {0}")]
    Other(String),
}

impl StoreError {
    /// A stable, low-cardinality label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            StoreError::NotFound { .. } => "not_found",
            StoreError::AlreadyExists { .. } => "already_exists",
            StoreError::Conflict { .. } => "conflict",
            StoreError::Invalid { .. } => "invalid",
            StoreError::Forbidden { .. } => "forbidden",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Other(_) => "other",
        }
    }
}

/// Options of a list call.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    /// Kubernetes label-selector syntax, e.g. `a=b,!jumpstarter.dev/lease-ended`.
    pub label_selector: Option<String>,
    /// Page size; `None` lists everything.
    pub limit: Option<u32>,
    /// Continue token from the previous page.
    pub continue_token: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ObjectList<K> {
    pub items: Vec<K>,
    /// Present when more pages follow.
    pub continue_token: Option<String>,
}

/// A change seen by a watch. After a (re)start, every existing object is reported as
/// `Applied` again, so consumers must be idempotent.
///
/// A consumer that keeps a copy of the objects (a reflector) uses the two markers: after
/// `Relisting`, the objects reported until the next `Listed` are all that exist (objects
/// deleted while the watch was down are not reported as `Deleted`); `Listed` also says that
/// the copy is complete. A store whose re-list reports those deletions itself sends only
/// `Listed`.
#[derive(Debug, Clone)]
pub enum WatchEvent<K> {
    Applied(K),
    Deleted(K),
    /// A full listing follows (replacing everything reported before).
    Relisting,
    /// Every object that exists has been reported.
    Listed,
}

/// The object store. Cheap to clone (a handle).
pub trait Store: Clone + Send + Sync + 'static {
    /// The object, or `None` when it does not exist.
    fn get<K: Object>(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<K>, StoreError>> + Send;

    fn list<K: Object>(
        &self,
        namespace: &str,
        params: &ListParams,
    ) -> impl Future<Output = Result<ObjectList<K>, StoreError>> + Send;

    /// Creates the object (its namespace and name come from its metadata).
    fn create<K: Object>(&self, object: &K) -> impl Future<Output = Result<K, StoreError>> + Send;

    /// Replaces spec and metadata; fails with `Conflict` on a stale resourceVersion.
    fn replace<K: Object>(&self, object: &K) -> impl Future<Output = Result<K, StoreError>> + Send;

    /// Replaces the status subresource; fails with `Conflict` on a stale resourceVersion.
    fn replace_status<K: Object>(
        &self,
        object: &K,
    ) -> impl Future<Output = Result<K, StoreError>> + Send;

    /// Deletes the object; deleting a missing object is not an error.
    fn delete<K: Object>(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Changes of the objects of one type in a namespace (or of one object, by name).
    /// The stream restarts itself after transient errors and reports every object again.
    fn watch<K: Object>(
        &self,
        namespace: &str,
        name: Option<&str>,
    ) -> BoxStream<'static, Result<WatchEvent<K>, StoreError>>;
}

/// Reads every page of a list.
pub async fn list_all<S: Store, K: Object>(
    store: &S,
    namespace: &str,
    label_selector: Option<&str>,
) -> Result<Vec<K>, StoreError> {
    let mut params = ListParams {
        label_selector: label_selector.map(str::to_owned),
        limit: Some(500),
        continue_token: None,
    };
    let mut items = Vec::new();
    loop {
        let page = store.list::<K>(namespace, &params).await?;
        items.extend(page.items);
        match page.continue_token {
            Some(token) if !token.is_empty() => params.continue_token = Some(token),
            _ => return Ok(items),
        }
    }
}
