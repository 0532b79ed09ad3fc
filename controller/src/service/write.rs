//! Read-modify-write of stored objects with a bounded retry on `Conflict`, and the
//! `SetStatusCondition` rule for status conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::wire;
use crate::store::{Object, Store, StoreError};

/// Attempts of one read-modify-write before a conflict is given up on. Conflicts come
/// from the reconciler and the heartbeat writing the same object; a handful of re-reads
/// always settles them.
pub const CONFLICT_ATTEMPTS: usize = 5;

/// Which part of the object a write replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Metadata and spec.
    Object,
    /// The status subresource.
    Status,
}

/// Reads `namespace/name`, lets `change` edit it (returning whether it changed anything)
/// and writes `part` back, re-reading on conflict. Returns the stored object.
pub async fn modify<S, K, F>(
    store: &S,
    namespace: &str,
    name: &str,
    part: Part,
    mut change: F,
) -> Result<K, StoreError>
where
    S: Store,
    K: Object,
    F: FnMut(&mut K) -> bool,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some(mut object) = store.get::<K>(namespace, name).await? else {
            return Err(StoreError::NotFound {
                kind: K::kind(&()).to_string(),
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            });
        };
        if !change(&mut object) {
            return Ok(object);
        }
        let written = match part {
            Part::Object => store.replace(&object).await,
            Part::Status => store.replace_status(&object).await,
        };
        match written {
            Err(StoreError::Conflict { .. }) if attempt < CONFLICT_ATTEMPTS => continue,
            other => return other,
        }
    }
}

/// Sets a condition as Kubernetes `SetStatusCondition` does: new types are appended,
/// existing ones updated in place, and `lastTransitionTime` moves only when the status
/// flips. Returns whether anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> bool {
    let status = if status { "True" } else { "False" };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        None => {
            conditions.push(Condition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                reason: reason.to_owned(),
                message: message.to_owned(),
                observed_generation: generation,
                last_transition_time: wire::now_time(),
            });
            true
        }
        Some(existing) => {
            let before = existing.clone();
            if existing.status != status {
                existing.status = status.to_owned();
                existing.last_transition_time = wire::now_time();
            }
            existing.reason = reason.to_owned();
            existing.message = message.to_owned();
            existing.observed_generation = generation;
            *existing != before
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_condition_appends_then_updates_in_place() {
        let mut conditions = Vec::new();
        assert!(set_condition(
            &mut conditions,
            "Registered",
            true,
            "Register",
            "",
            None
        ));
        assert!(set_condition(
            &mut conditions,
            "Online",
            true,
            "Seen",
            "",
            None
        ));
        let first_time = conditions[1].last_transition_time.clone();
        assert!(!set_condition(
            &mut conditions,
            "Online",
            true,
            "Seen",
            "",
            None
        ));
        assert!(set_condition(
            &mut conditions,
            "Online",
            true,
            "StatusReported",
            "m",
            None
        ));
        assert_eq!(conditions[1].last_transition_time, first_time);
        assert!(set_condition(
            &mut conditions,
            "Online",
            false,
            "Offline",
            "",
            None
        ));
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[1].type_, "Online");
        assert_eq!(conditions[1].status, "False");
    }
}
