//! The admin API of a running standalone service: HTTP/1.1 with JSON bodies on a Unix
//! socket in the data directory (mode 0600 in a 0700 directory, and the peer's uid checked:
//! only the service's user and root can use it). The admin CLI
//! goes through it because the running service holds the lock on the data file.
//!
//! Routes (the namespace is the service's unless the `jumpstarter-namespace` header names
//! it; another namespace is refused, since nothing would reconcile it):
//! - `POST /v1/clients`, `POST /v1/exporters` with [`CreateRequest`] → the configuration
//!   ([`ClientConfig`](jumpstarter_controller::admin::ClientConfig) /
//!   [`ExporterConfig`](jumpstarter_controller::admin::ExporterConfig));
//! - `POST /v1/leases` with a [`LeaseOrder`](jumpstarter_controller::admin::LeaseOrder) →
//!   the created lease as [`Objects`](jumpstarter_controller::admin::Objects);
//! - `POST /v1/apply` with an [`ApplyRequest`] (the YAML text, checked and applied by
//!   [`Manifest`](jumpstarter_controller::admin::Manifest) in the service's namespace) →
//!   what happened to each document, a list of
//!   [`Applied`](jumpstarter_controller::admin::Applied);
//! - `GET /v1/{clients|exporters|leases|policies}` and `GET /v1/{kind}/{name}` →
//!   [`Objects`](jumpstarter_controller::admin::Objects);
//! - `DELETE /v1/{kind}/{name}` → 204.
//!
//! Failures answer with an HTTP status and an [`ErrorBody`].
//!
//! - [`server`]: the API on [`Admin`](jumpstarter_controller::admin::Admin) over the store.
//! - [`client`]: what the CLI calls.
//! - [`peer`]: who may connect.

pub(crate) mod client;
pub(crate) mod peer;
pub(crate) mod server;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Header naming the namespace a request is about.
pub(crate) const NAMESPACE_HEADER: &str = "jumpstarter-namespace";

/// Body of a create request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CreateRequest {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, String>,
    /// `spec.username`: the identity-provider user that may act as the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) username: Option<String>,
}

/// Body of an apply request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ApplyRequest {
    /// The YAML text, as `apply -f` read it.
    pub(crate) manifest: String,
}

/// Body of a failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ErrorBody {
    pub(crate) error: String,
}
