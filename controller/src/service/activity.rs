//! Session activity on leases with an idle timeout, kept in `status.lastActivityTime` for
//! the planner, which ends such a lease after its timeout without activity (reason `Idle`).
//!
//! Signs of a session, all seen by the controller: a Dial of the lease (every 0.9.0 session
//! and every `j` run starts with one), the holder reading the lease (an open 0.9.0
//! `jmp shell` does so at least every 30 s), a lease certificate for it (QUIC sessions), and
//! a session open in a router embedded in this process ([`Services::record_sessions`]).
//!
//! Writes are bounded whatever the callers do: only leases whose status carries an idle
//! timeout are written, only when the stored time is older than
//! [`activity_interval`] of that timeout (so at most one write per interval per lease), and
//! one write per lease is in flight at a time. They never hold up the call that saw the
//! activity. The stored time lags the truth by less than the interval, and the planner
//! allows for that lag, so a lease never ends idle early.

use std::collections::HashSet;
use std::sync::Mutex;

use kube::ResourceExt;
use time::OffsetDateTime;

use jumpstarter_lease::scheduler::{activity_interval, duration};

use super::Services;
use super::write::{Part, modify_cached};
use crate::crd::Lease;
use crate::crd::vocabulary::{stored_time, time_of};
use crate::store::Store;

/// Whether activity at `now` on a lease with `status` should be written: it is held, not
/// ended, has an idle timeout, and its stored activity (or start) is older than the
/// interval of that timeout.
pub(crate) fn is_due(lease: &Lease, now: OffsetDateTime) -> bool {
    let Some(status) = &lease.status else {
        return false;
    };
    if status.ended || status.exporter_ref.is_none() {
        return false;
    }
    let Some(timeout) = status
        .idle_timeout
        .as_deref()
        .and_then(|text| duration::parse(text).ok())
        .filter(|timeout| timeout.is_positive())
    else {
        return false;
    };
    let last = status
        .last_activity_time
        .as_ref()
        .or(status.begin_time.as_ref())
        .map(time_of);
    last.is_none_or(|last| now - last >= activity_interval(timeout))
}

/// The leases whose activity write is in flight, so that a burst of Dials writes once.
#[derive(Debug, Default)]
pub(crate) struct InFlight(Mutex<HashSet<String>>);

impl InFlight {
    /// Marks `key`; `false` when it already was.
    fn start(&self, key: &str) -> bool {
        self.0
            .lock()
            .map(|mut keys| keys.insert(key.to_owned()))
            .unwrap_or(false)
    }

    fn finish(&self, key: &str) {
        if let Ok(mut keys) = self.0.lock() {
            keys.remove(key);
        }
    }
}

impl<S: Store> Services<S> {
    /// Records activity at `now` on `lease` (as this process last read it), in the
    /// background, if [`is_due`].
    pub(crate) fn record_activity(&self, lease: &Lease, now: OffsetDateTime) {
        if !is_due(lease, now) {
            return;
        }
        let namespace = lease.namespace().unwrap_or_default();
        let name = lease.name_any();
        let key = format!("{namespace}/{name}");
        let shared = self.shared.clone();
        if !shared.activity.start(&key) {
            return;
        }
        let uid = lease.metadata.uid.clone();
        tokio::spawn(async move {
            let written = modify_cached::<_, Lease, _>(
                &shared.cache,
                &namespace,
                &name,
                Part::Status,
                |lease| {
                    if lease.metadata.uid != uid || !is_due(lease, now) {
                        return false;
                    }
                    if let Some(status) = lease.status.as_mut() {
                        status.last_activity_time = Some(stored_time(now));
                    }
                    true
                },
            )
            .await;
            shared.activity.finish(&key);
            match written {
                Ok(_) => tracing::debug!(lease = %key, "session activity recorded"),
                Err(error) => {
                    tracing::debug!(lease = %key, %error, "session activity not recorded")
                }
            }
        });
    }

    /// Records activity at `now` on every lease with a session open in a router embedded
    /// in this process; `leases` are `namespace/name` keys. Called periodically.
    pub async fn record_sessions(&self, leases: impl IntoIterator<Item = String>) {
        let now = OffsetDateTime::now_utc();
        for key in leases {
            let Some((namespace, name)) = key.split_once('/') else {
                continue;
            };
            if let Ok(Some(lease)) = self.shared.cache.get::<Lease>(namespace, name).await {
                self.record_activity(&lease, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{LeaseSpec, LeaseStatus};
    use k8s_openapi::api::core::v1::LocalObjectReference;
    use time::Duration;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + seconds).expect("valid")
    }

    fn held(idle_timeout: Option<&str>, last: Option<i64>) -> Lease {
        let mut lease = Lease::new("l1", LeaseSpec::default());
        lease.status = Some(LeaseStatus {
            exporter_ref: Some(LocalObjectReference {
                name: "e1".to_owned(),
            }),
            begin_time: Some(stored_time(at(0))),
            idle_timeout: idle_timeout.map(str::to_owned),
            last_activity_time: last.map(|s| stored_time(at(s))),
            ..LeaseStatus::default()
        });
        lease
    }

    #[test]
    fn written_once_per_interval_and_only_under_an_idle_timeout() {
        // 10m: the interval is 100 s.
        assert!(!is_due(&held(None, None), at(1000)));
        assert!(!is_due(&held(Some("10m"), None), at(99)));
        assert!(is_due(&held(Some("10m"), None), at(100)));
        assert!(!is_due(&held(Some("10m"), Some(500)), at(599)));
        assert!(is_due(&held(Some("10m"), Some(500)), at(600)));
        assert_eq!(
            activity_interval(Duration::minutes(10)),
            Duration::seconds(100)
        );
    }

    #[test]
    fn ended_or_waiting_leases_are_never_written() {
        let mut ended = held(Some("1m"), None);
        if let Some(status) = ended.status.as_mut() {
            status.ended = true;
        }
        assert!(!is_due(&ended, at(1000)));
        let mut waiting = held(Some("1m"), None);
        if let Some(status) = waiting.status.as_mut() {
            status.exporter_ref = None;
        }
        assert!(!is_due(&waiting, at(1000)));
        assert!(!is_due(&Lease::new("l2", LeaseSpec::default()), at(1000)));
    }
}
