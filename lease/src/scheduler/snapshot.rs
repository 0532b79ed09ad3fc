//! The planner's input: a plain picture of one namespace's exporters, clients, leases and
//! access policies. The I/O shell builds it from the CRD objects.

use std::collections::BTreeMap;

use time::{Duration, OffsetDateTime};

use super::condition::Condition;
use crate::selector::LabelSelector;

/// Everything the planner looks at, for one namespace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// All exporters, in any order.
    pub exporters: Vec<Exporter>,
    /// All clients, in any order (only their labels matter, for access policies).
    pub clients: Vec<Client>,
    /// All leases, ended ones included, in any order.
    pub leases: Vec<Lease>,
    /// All `ExporterAccessPolicy` objects; none at all means "everyone may use everything".
    pub policies: Vec<AccessPolicy>,
}

/// An exporter as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exporter {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.enabled`, with an absent value already read as `true`.
    pub enabled: bool,
    /// The `Registered` condition is `True`.
    pub registered: bool,
    /// The `Online` condition is `True`.
    pub online: bool,
    /// `status.exporterStatus` (`Available`, `LeaseReady`, ..., or empty).
    pub exporter_status: String,
}

/// A client as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
}

/// A lease: identity, spec and current status.
#[derive(Clone, Debug, PartialEq)]
pub struct Lease {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`, passed through to the plan so the writer can use it as a precondition.
    pub uid: Option<String>,
    /// `metadata.generation`; written into each condition's `observedGeneration`.
    pub generation: i64,
    /// `metadata.creationTimestamp`; older leases are served first.
    pub creation_time: OffsetDateTime,
    /// `spec.clientRef.name`.
    pub client: String,
    /// What the client asked for.
    pub spec: LeaseSpec,
    /// What the controller has decided so far.
    pub status: LeaseStatus,
}

/// `Lease.spec`, minus the tags (they play no part in scheduling).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseSpec {
    /// `spec.selector`.
    pub selector: LabelSelector,
    /// `spec.exporterRef.name`: a pinned exporter.
    pub exporter_ref: Option<String>,
    /// `spec.allowDisabled`: a pinned exporter may be disabled.
    pub allow_disabled: bool,
    /// `spec.duration`.
    pub duration: Option<Duration>,
    /// `spec.beginTime`: do not assign before this instant.
    pub begin_time: Option<OffsetDateTime>,
    /// `spec.endTime`: the lease expires at this instant.
    pub end_time: Option<OffsetDateTime>,
    /// `spec.release`: the client or exporter asked to end the lease.
    pub release: bool,
}

/// `Lease.status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseStatus {
    /// `status.exporterRef.name`: the exporter this lease holds (or held).
    pub exporter: Option<String>,
    /// `status.beginTime`: when the exporter was acquired.
    pub begin_time: Option<OffsetDateTime>,
    /// `status.endTime`: when the lease ended.
    pub end_time: Option<OffsetDateTime>,
    /// `status.ended`.
    pub ended: bool,
    /// `status.conditions`, in stored order (the order is visible to clients).
    pub conditions: Vec<Condition>,
    /// `status.priority`: the priority of the policy rule that granted the exporter.
    pub priority: i64,
    /// `status.spotAccess`: the granting rule was spot access.
    pub spot_access: bool,
}

/// One `ExporterAccessPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    /// `spec.exporterSelector`: which exporters the rules govern.
    pub exporter_selector: LabelSelector,
    /// `spec.policies`.
    pub rules: Vec<AccessRule>,
}

/// One entry of `ExporterAccessPolicy.spec.policies`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessRule {
    /// `description`, quoted back to clients that no rule admits.
    pub description: String,
    /// `priority`: higher is preferred.
    pub priority: i64,
    /// `from[].clientSelector`: clients admitted by this rule.
    pub from: Vec<LabelSelector>,
    /// `maximumDuration`: longer requests are not admitted by this rule.
    pub maximum_duration: Option<Duration>,
    /// `spotAccess`.
    pub spot_access: bool,
}
