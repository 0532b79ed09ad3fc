//! `Exporter`: a host that exposes lab hardware through drivers and can be leased.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::LocalObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use super::schema;

/// Desired state of an Exporter.
// Several printer columns share `type_ = "string"`, which clippy mistakes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "jumpstarter.dev",
    version = "v1alpha1",
    kind = "Exporter",
    namespaced,
    status = "ExporterStatus",
    schema = "manual",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(name = "Enabled", type_ = "boolean", json_path = ".spec.enabled"),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.exporterStatus"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.statusMessage",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ExporterSpec {
    /// Identity of the exporter (OIDC user name) for authentication and authorization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Whether new leases may be assigned to this exporter; absent means enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = true))]
    pub enabled: Option<bool>,
}

impl ExporterSpec {
    /// `spec.enabled`, with the CRD default (`true`) applied when it is absent.
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }
}

/// Observed state of an Exporter.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExporterStatus {
    /// Latest observations (`Registered`, `Online`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::conditions")]
    pub conditions: Option<Vec<Condition>>,
    /// Secret that holds the exporter's token (key `token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::local_object_reference")]
    pub credential: Option<LocalObjectReference>,
    /// Driver instances the exporter reported when it registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<Device>>,
    /// Lease currently assigned to this exporter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::local_object_reference")]
    pub lease_ref: Option<LocalObjectReference>,
    /// Last time the exporter talked to the controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,
    /// Controller gRPC endpoint the exporter should use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Operational status the exporter reported; absent means unknown (or an old exporter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter_status: Option<ExporterStatusValue>,
    /// Human-readable detail for `exporterStatus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
}

/// One driver instance of an exporter.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Device {
    /// Identifier of the device within its exporter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Identifier of the parent device, for child devices (the key is snake_case on the wire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_uuid: Option<String>,
    /// Labels of the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// `status.exporterStatus`: the PascalCase names of the protobuf `ExporterStatus` values.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ExporterStatusValue {
    /// The exporter did not say.
    Unspecified,
    /// Not connected.
    Offline,
    /// Connected and ready for a lease.
    Available,
    /// Running its before-lease hook.
    BeforeLeaseHook,
    /// Leased and ready for the client.
    LeaseReady,
    /// Running its after-lease hook.
    AfterLeaseHook,
    /// The before-lease hook failed.
    BeforeLeaseHookFailed,
    /// The after-lease hook failed.
    AfterLeaseHookFailed,
}

impl ExporterStatusValue {
    /// The PascalCase name stored in `status.exporterStatus`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExporterStatusValue::Unspecified => "Unspecified",
            ExporterStatusValue::Offline => "Offline",
            ExporterStatusValue::Available => "Available",
            ExporterStatusValue::BeforeLeaseHook => "BeforeLeaseHook",
            ExporterStatusValue::LeaseReady => "LeaseReady",
            ExporterStatusValue::AfterLeaseHook => "AfterLeaseHook",
            ExporterStatusValue::BeforeLeaseHookFailed => "BeforeLeaseHookFailed",
            ExporterStatusValue::AfterLeaseHookFailed => "AfterLeaseHookFailed",
        }
    }
}

impl JsonSchema for Exporter {
    fn schema_name() -> Cow<'static, str> {
        "Exporter".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        schema::resource::<ExporterSpec, ExporterStatus>(
            generator,
            "A host that exposes lab hardware and can be leased.",
        )
    }
}
