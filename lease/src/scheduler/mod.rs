//! The pure lease scheduler: which lease gets which exporter, and when leases end.
//!
//! Sans-IO: the caller builds a [`Snapshot`] of one namespace, calls [`plan`] with the
//! current time, writes the returned statuses and plans again at [`Plan::next_wakeup`] or
//! when something changes. Behaviour, condition types, reasons and messages follow
//! jumpstarter 0.9.0, strengthened so that no exporter is ever held by two non-ended leases
//! and the oldest waiting lease is served first.
//!
//! - [`snapshot`]: the input types.
//! - [`booking`]: bookings checked against each other when they are created.
//! - [`planner`]: [`plan`] and its output.
//! - [`index`]: incremental planning, [`Index`]: only the leases whose status may change,
//!   against exporters kept between plans.
//! - [`condition`]: `metav1.Condition`, `SetStatusCondition`, lease condition types and reasons.
//! - [`lease_times`]: the begin/end/duration rules `CreateLease` applies.
//! - [`duration`]: Go duration strings, the CRDs' storage form for durations.

pub mod booking;
pub mod condition;
pub mod duration;
pub mod index;
pub mod lease_times;
pub mod planner;
pub(crate) mod queue;
pub mod snapshot;

#[cfg(test)]
mod simulation;

pub use condition::{Condition, ConditionStatus};
pub use index::Index;
pub use lease_times::{LeaseTimes, LeaseTimesError};
pub use planner::{LeaseUpdate, PENDING_RETRY, Plan, plan};
pub use snapshot::{
    AccessPolicy, AccessRule, Client, DEFAULT_AGING_INTERVAL, DEFAULT_SPOT_GRACE_PERIOD, Exporter,
    FairShare, Lease, LeaseSpec, LeaseStatus, MIN_IDLE_TIMEOUT, Settings, Snapshot,
    activity_interval,
};
