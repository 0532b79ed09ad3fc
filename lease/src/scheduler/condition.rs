//! `metav1.Condition` and Kubernetes `SetStatusCondition` semantics, plus the lease
//! condition types and reasons jumpstarter 0.9.0 uses.

use std::fmt;

use time::OffsetDateTime;

/// Condition type: the lease is waiting for an exporter. Never set back to `False`.
pub const PENDING: &str = "Pending";
/// Condition type: the lease holds an exporter (`True`), or has ended (`False`).
pub const READY: &str = "Ready";
/// Condition type: the lease can never be satisfied; it ends at once.
pub const UNSATISFIABLE: &str = "Unsatisfiable";
/// Condition type: the lease is malformed; it ends at once.
pub const INVALID: &str = "Invalid";
/// Condition type (not in 0.9.0): a spot lease has notice; another lease needs its exporter
/// and it ends at `status.preemptionTime`.
pub const PREEMPTED: &str = "Preempted";

/// Reason strings, exactly as jumpstarter 0.9.0 writes them.
pub mod reason {
    /// `Ready=True`: an exporter was acquired.
    pub const READY: &str = "Ready";
    /// `Ready=False`: `spec.release` was set.
    pub const RELEASED: &str = "Released";
    /// `Ready=False`: the lease ran past its end.
    pub const EXPIRED: &str = "Expired";
    /// `Pending`: the admitted exporters are all offline or unregistered.
    pub const OFFLINE: &str = "Offline";
    /// `Pending`: the admitted exporters are all leased.
    pub const NOT_AVAILABLE: &str = "NotAvailable";
    /// `Pending`: the free exporters are still busy with a previous lease.
    pub const NOT_READY: &str = "NotReady";
    /// `Unsatisfiable`: the pinned exporter does not exist.
    pub const EXPORTER_NOT_FOUND: &str = "ExporterNotFound";
    /// `Unsatisfiable`: the pinned exporter does not match the selector.
    pub const SELECTOR_MISMATCH: &str = "SelectorMismatch";
    /// `Unsatisfiable`: the pinned exporter is disabled.
    pub const EXPORTER_DISABLED: &str = "ExporterDisabled";
    /// `Unsatisfiable`: every exporter matching the selector is disabled.
    pub const ALL_DISABLED: &str = "AllDisabled";
    /// `Unsatisfiable`: no access policy admits this client to a matching exporter.
    pub const NO_ACCESS: &str = "NoAccess";
    /// `Preempted=True`: notice given; `Ready=False`: a spot lease ended for another lease.
    pub const PREEMPTED: &str = "Preempted";
    /// `Ready=False` (not in 0.9.0): the lease had no session for its rule's idle timeout.
    pub const IDLE: &str = "Idle";
    /// `Invalid`: the selector is empty (and nothing is pinned) or malformed.
    pub const INVALID_SELECTOR: &str = "InvalidSelector";
}

/// `metav1.ConditionStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    /// `"True"`.
    True,
    /// `"False"`.
    False,
    /// `"Unknown"`.
    Unknown,
}

impl ConditionStatus {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }

    /// Reads the Kubernetes spelling; anything unrecognised is `Unknown`.
    pub fn from_k8s(text: &str) -> Self {
        match text {
            "True" => ConditionStatus::True,
            "False" => ConditionStatus::False,
            _ => ConditionStatus::Unknown,
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(value: bool) -> Self {
        if value {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

impl fmt::Display for ConditionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `metav1.Condition`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    /// `type`.
    pub type_: String,
    /// `status`.
    pub status: ConditionStatus,
    /// `observedGeneration`.
    pub observed_generation: i64,
    /// `lastTransitionTime`: when `status` last changed.
    pub last_transition_time: OffsetDateTime,
    /// `reason`: a CamelCase word.
    pub reason: String,
    /// `message`: for humans.
    pub message: String,
}

/// True when a condition of `type_` exists with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == ConditionStatus::True)
}

/// Kubernetes `meta.SetStatusCondition`: a new type is appended; an existing one is updated
/// in place, and its `last_transition_time` moves only when the status flips.
pub fn set(conditions: &mut Vec<Condition>, new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        None => conditions.push(new),
        Some(existing) => {
            if existing.status != new.status {
                existing.status = new.status;
                existing.last_transition_time = new.last_transition_time;
            }
            existing.reason = new.reason;
            existing.message = new.message;
            existing.observed_generation = new.observed_generation;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(type_: &str, status: bool, reason: &str, at: i64) -> Condition {
        Condition {
            type_: type_.to_owned(),
            status: status.into(),
            observed_generation: 1,
            last_transition_time: OffsetDateTime::from_unix_timestamp(at).expect("valid"),
            reason: reason.to_owned(),
            message: format!("{reason} message"),
        }
    }

    #[test]
    fn set_status_condition_semantics() {
        let mut list = Vec::new();
        set(&mut list, cond(PENDING, true, "Offline", 10));
        set(&mut list, cond(READY, true, "Ready", 20));
        // Same status, new reason: updated in place, transition time kept.
        set(&mut list, cond(PENDING, true, "NotAvailable", 30));
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].type_, PENDING);
        assert_eq!(list[0].reason, "NotAvailable");
        assert_eq!(list[0].message, "NotAvailable message");
        assert_eq!(list[0].last_transition_time.unix_timestamp(), 10);
        // Status flip: transition time moves, position kept.
        set(&mut list, cond(READY, false, "Expired", 40));
        assert_eq!(list[1].status, ConditionStatus::False);
        assert_eq!(list[1].last_transition_time.unix_timestamp(), 40);
        assert!(is_true(&list, PENDING));
        assert!(!is_true(&list, READY));
        assert!(!is_true(&list, INVALID));
    }

    #[test]
    fn status_spelling() {
        for status in [
            ConditionStatus::True,
            ConditionStatus::False,
            ConditionStatus::Unknown,
        ] {
            assert_eq!(ConditionStatus::from_k8s(status.as_str()), status);
        }
        assert_eq!(ConditionStatus::from_k8s("yes"), ConditionStatus::Unknown);
    }
}
