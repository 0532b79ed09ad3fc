//! `Client`: an identity that may request leases and dial exporters.

use std::borrow::Cow;

use k8s_openapi::api::core::v1::LocalObjectReference;
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use super::schema;

/// Desired state of a Client.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "jumpstarter.dev",
    version = "v1alpha1",
    kind = "Client",
    namespaced,
    status = "ClientStatus",
    schema = "manual",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct ClientSpec {
    /// Identity of the client (OIDC user name) for authentication and authorization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// Observed state of a Client.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientStatus {
    /// Secret that holds the client's token (key `token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::local_object_reference")]
    pub credential: Option<LocalObjectReference>,
    /// Controller gRPC endpoint the client should use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

impl JsonSchema for Client {
    fn schema_name() -> Cow<'static, str> {
        "Client".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        schema::resource::<ClientSpec, ClientStatus>(
            generator,
            "A user or program that leases exporters.",
        )
    }
}
