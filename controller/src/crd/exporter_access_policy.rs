//! `ExporterAccessPolicy`: which clients may lease which exporters, with what priority and limits.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use super::schema;

/// Desired state of an ExporterAccessPolicy.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "jumpstarter.dev",
    version = "v1alpha1",
    kind = "ExporterAccessPolicy",
    plural = "exporteraccesspolicies",
    namespaced,
    status = "ExporterAccessPolicyStatus",
    schema = "manual",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct ExporterAccessPolicySpec {
    /// Exporters this policy applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::label_selector")]
    pub exporter_selector: Option<LabelSelector>,
    /// Access rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<Policy>>,
}

/// One access rule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Human-readable explanation of the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Priority of the rule; higher wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::go_int")]
    pub priority: Option<i64>,
    /// Clients the rule applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<PolicyFrom>>,
    /// Longest lease the rule allows, as a Go duration string (e.g. `"1h30m"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_duration: Option<String>,
    /// Whether the rule grants only spot (preemptible) access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot_access: Option<bool>,
    /// Spot access: how long a spot lease keeps its exporter once another lease needs it, as a
    /// Go duration string (default `"60s"`). Not in 0.9.0, which ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot_grace_period: Option<String>,
    /// Among waiting leases of equal effective priority admitted by this rule, serve first
    /// the client (or client group) that holds the fewest exporters. Not in 0.9.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fair_share: Option<FairShare>,
    /// A lease this rule grants ends after this long without a session, as a Go duration
    /// string of at least `"1m"` (absent: never for idleness). Not in 0.9.0, which ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
}

/// Fair share between the clients a rule admits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FairShare {
    /// Clients whose value of this label is the same count as one group; absent means each
    /// client is its own group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_label: Option<String>,
}

/// A set of clients, as a label selector over Client objects.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyFrom {
    /// Clients this entry matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::label_selector")]
    pub client_selector: Option<LabelSelector>,
}

/// Observed state of an ExporterAccessPolicy (always empty).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ExporterAccessPolicyStatus {}

impl JsonSchema for ExporterAccessPolicy {
    fn schema_name() -> Cow<'static, str> {
        "ExporterAccessPolicy".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        schema::resource::<ExporterAccessPolicySpec, ExporterAccessPolicyStatus>(
            generator,
            "Rules that decide which clients may lease which exporters.",
        )
    }
}
