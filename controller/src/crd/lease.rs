//! `Lease`: a client's claim on one exporter for a span of time.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::LocalObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use kube::core::{Rule, validate};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use super::schema;

/// Most tags a lease may carry (CRD `maxProperties`).
pub(crate) const MAX_LEASE_TAGS: u32 = 10;

/// Desired state of a Lease.
// Several printer columns share `type_ = "string"`, which clippy mistakes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "jumpstarter.dev",
    version = "v1alpha1",
    kind = "Lease",
    namespaced,
    status = "LeaseStatus",
    schema = "manual",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(name = "Ended", type_ = "boolean", json_path = ".status.ended"),
    printcolumn(name = "Client", type_ = "string", json_path = ".spec.clientRef.name"),
    printcolumn(
        name = "Exporter",
        type_ = "string",
        json_path = ".status.exporterRef.name"
    )
)]
#[schemars(transform = lease_spec_rules)]
#[serde(rename_all = "camelCase")]
pub struct LeaseSpec {
    /// Client that requests the lease.
    #[schemars(schema_with = "schema::local_object_reference")]
    pub client_ref: LocalObjectReference,
    /// Length of the lease as a Go duration string (e.g. `"1h30m"`); may be left out when both
    /// `beginTime` and `endTime` are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Which exporters may serve the lease.
    #[schemars(schema_with = "schema::label_selector", extend("default" = {}))]
    pub selector: LabelSelector,
    /// Pins the lease to one exporter by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::local_object_reference")]
    pub exporter_ref: Option<LocalObjectReference>,
    /// User tags, immutable once created; keys are simple label names without a prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = MAX_LEASE_TAGS))]
    pub tags: Option<BTreeMap<String, String>>,
    /// Allows `exporterRef` to name a disabled exporter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_disabled: Option<bool>,
    /// Asks the controller to end the lease now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<bool>,
    /// Requested start; absent means as soon as an exporter is acquired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub begin_time: Option<Time>,
    /// Requested end; may be moved to extend or shorten an active lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
}

/// Observed state of a Lease.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaseStatus {
    /// Actual start of the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub begin_time: Option<Time>,
    /// Actual end of the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// Exporter assigned to the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::local_object_reference")]
    pub exporter_ref: Option<LocalObjectReference>,
    /// Whether the lease is over; always serialised.
    pub ended: bool,
    /// Effective priority from the matching access policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::go_int")]
    pub priority: Option<i64>,
    /// Whether the lease was granted as spot (preemptible) access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot_access: Option<bool>,
    /// While waiting: the lease's place among the waiting leases that compete for the same
    /// exporters (1 is next). Not in 0.9.0; it ignores the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::go_int")]
    pub queue_position: Option<i64>,
    /// While waiting: when the lease is expected to get an exporter, from the end times of the
    /// leases holding or queued for the exporters it may use. Not in 0.9.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_start: Option<Time>,
    /// A spot lease that another lease needs ends at this time (its notice). Not in 0.9.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preemption_time: Option<Time>,
    /// The idle timeout of the rule that granted the exporter, as a Go duration string: the
    /// lease ends after this long without a session. Not in 0.9.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// The last sign of a session on the lease the controller recorded (a Dial, the holder
    /// checking the lease, a session open in a router it hears from), written only for
    /// leases with an idle timeout. Not in 0.9.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_time: Option<Time>,
    /// Latest observations (`Pending`, `Ready`, `Unsatisfiable`, `Invalid`, `Preempted`);
    /// order matters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::conditions")]
    pub conditions: Option<Vec<Condition>>,
}

/// CEL rule: a lease names its exporter either by selector or by `exporterRef.name`.
pub(crate) const RULE_SELECTOR_OR_EXPORTER: &str = "((has(self.selector.matchLabels) && size(self.selector.matchLabels) > 0) \
     || (has(self.selector.matchExpressions) && size(self.selector.matchExpressions) > 0)) \
     || (has(self.exporterRef) && has(self.exporterRef.name) && size(self.exporterRef.name) > 0)";

/// CEL transition rule: tags cannot change once set.
pub(crate) const RULE_TAGS_IMMUTABLE: &str = "!has(oldSelf.tags) || self.tags == oldSelf.tags";

/// Adds the spec-level CEL rules (`x-kubernetes-validations`) to the `LeaseSpec` schema.
fn lease_spec_rules(schema: &mut Schema) {
    let rules = [
        Rule::new(RULE_SELECTOR_OR_EXPORTER)
            .message("one of selector or exporterRef.name is required"),
        Rule::new(RULE_TAGS_IMMUTABLE).message("tags are immutable after creation"),
    ];
    for rule in rules {
        // Invariant: a Rule holds only strings and booleans, so it always converts to JSON.
        validate(schema, rule).expect("a CEL rule serializes to JSON");
    }
}

impl JsonSchema for Lease {
    fn schema_name() -> Cow<'static, str> {
        "Lease".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        schema::resource::<LeaseSpec, LeaseStatus>(generator, "A client's claim on one exporter.")
    }
}
