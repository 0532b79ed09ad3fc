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
    /// The controller's scheduling settings.
    pub settings: Settings,
}

/// Scheduling settings of the controller (not of any one policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Aging: a waiting lease's effective priority rises by one for every full interval it
    /// has waited. `None` turns aging off (and with it the bound on waiting).
    pub aging_interval: Option<Duration>,
}

/// The default aging interval: one priority point per minute of waiting.
pub const DEFAULT_AGING_INTERVAL: Duration = Duration::MINUTE;

/// How long a spot lease keeps its exporter after its notice, unless its rule says otherwise.
pub const DEFAULT_SPOT_GRACE_PERIOD: Duration = Duration::seconds(60);

/// The shortest `idleTimeout` a rule may set. 0.9.0's `jmp shell` checks its lease every
/// 30 s while it is open, and that check is one of the signs of life the controller counts,
/// so a shorter timeout could end a lease under an open shell.
pub const MIN_IDLE_TIMEOUT: Duration = Duration::MINUTE;

/// How stale a lease's stored `lastActivityTime` may be before new activity is written:
/// a sixth of its idle timeout, between 1 s and 5 min. Activity newer than the stored time
/// by less than this is not written, so an idle lease ends between its timeout and the
/// timeout plus this after its last activity, never before.
pub fn activity_interval(idle_timeout: Duration) -> Duration {
    let sixth: Duration = idle_timeout / 6_i32;
    sixth.clamp(Duration::SECOND, Duration::minutes(5))
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            aging_interval: Some(DEFAULT_AGING_INTERVAL),
        }
    }
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
    /// The priority the client asked for (the `priority` tag); it can lower the priority
    /// the admitting rule gives, never raise it.
    pub priority: Option<i64>,
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
    /// `status.queuePosition`: while waiting, the place among the waiting leases that
    /// compete for the same exporters (1 is next).
    pub queue_position: Option<i64>,
    /// `status.estimatedStart`: while waiting, when an exporter is expected to be free for
    /// this lease; absent when it cannot be estimated or is now.
    pub estimated_start: Option<OffsetDateTime>,
    /// `status.preemptionTime`: a spot lease another lease needs ends at this instant.
    pub preemption_time: Option<OffsetDateTime>,
    /// `status.idleTimeout`: the idle timeout of the rule that granted the exporter; the
    /// lease ends after this long without activity.
    pub idle_timeout: Option<Duration>,
    /// `status.lastActivityTime`: the last sign of a session on this lease the controller
    /// recorded (a Dial, the holder checking the lease, a session open in a router it
    /// hears from), at most [`activity_interval`] stale.
    pub last_activity: Option<OffsetDateTime>,
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
    /// `spotGracePeriod`: how long a spot lease of this rule keeps its exporter after its
    /// notice; `None` is [`DEFAULT_SPOT_GRACE_PERIOD`].
    pub spot_grace_period: Option<Duration>,
    /// `fairShare`: among waiting leases of equal effective priority admitted by this rule,
    /// the client or group holding the fewest exporters goes first.
    pub fair_share: Option<FairShare>,
    /// `idleTimeout`: a lease this rule grants ends after this long without a session
    /// (see [`LeaseStatus::last_activity`]); `None`: never for idleness.
    pub idle_timeout: Option<Duration>,
}

/// `fairShare` of an access rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FairShare {
    /// Clients with the same value of this label form one group; `None`: each client alone.
    pub group_label: Option<String>,
}
