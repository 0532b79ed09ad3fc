//! [`ReplicaRegistry`]: the shared handle on this process's view of the replicas.
//!
//! The record shell ([`super::record`]) feeds it; the services (Dial forwarding) and the
//! reconcile loop (exporter liveness) read it. Readers that derive state from liveness
//! subscribe to [`ReplicaRegistry::subscribe`], which ticks when the set of live replicas
//! or their endpoints changes through a watch event, and wake at
//! [`ReplicaRegistry::next_expiry`] for expiries, which are no events.

use std::sync::{Arc, RwLock, RwLockReadGuard};

use k8s_openapi::api::coordination::v1::Lease;
use time::OffsetDateTime;
use tokio::sync::watch;

use super::{Peer, ReplicaId, Replicas};
use crate::store::WatchEvent;

/// This replica's view of all replicas, shared. Create it with [`ReplicaRegistry::new`]
/// (Kubernetes mode, fed by the records' watch) or [`ReplicaRegistry::single`].
#[derive(Debug)]
pub struct ReplicaRegistry {
    view: RwLock<Replicas>,
    /// Bumped at every change of the live set; the value counts changes.
    changed: watch::Sender<u64>,
}

impl ReplicaRegistry {
    /// The registry of replica `me`, before any record has been seen.
    pub fn new(me: ReplicaId) -> Arc<ReplicaRegistry> {
        Arc::new(ReplicaRegistry {
            view: RwLock::new(Replicas::new(me)),
            changed: watch::channel(0).0,
        })
    }

    /// One replica alone (standalone mode): it is live, it has no peers, nothing expires,
    /// and no record is kept. Its view counts as complete.
    pub fn single(me: ReplicaId) -> Arc<ReplicaRegistry> {
        let registry = ReplicaRegistry::new(me);
        registry.apply(WatchEvent::Listed, OffsetDateTime::now_utc());
        registry
    }

    /// This replica.
    pub fn me(&self) -> ReplicaId {
        self.read().me().clone()
    }

    /// See [`Replicas::is_live`]: `holder_text` is `<identity>/<incarnation>`.
    pub fn is_live(&self, holder_text: &str, now: OffsetDateTime) -> bool {
        self.read().is_live(holder_text, now)
    }

    /// See [`Replicas::live_peers`].
    pub fn live_peers(&self, now: OffsetDateTime) -> Vec<Peer> {
        self.read().live_peers(now)
    }

    /// See [`Replicas::next_expiry`].
    pub fn next_expiry(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.read().next_expiry(now)
    }

    /// A copy of the current view.
    pub fn view(&self) -> Replicas {
        self.read().clone()
    }

    /// A receiver that sees a new value whenever the live replicas or their endpoints
    /// change through a record event (not when a record merely expires: see
    /// [`ReplicaRegistry::next_expiry`]).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Feeds one watch event of the namespace's Leases; notifies on a change.
    pub fn apply(&self, event: WatchEvent<Lease>, now: OffsetDateTime) {
        let changed = self
            .view
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply(event, now);
        if changed {
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Forgets a listing the watch abandoned half-way.
    pub(crate) fn abandon_listing(&self) {
        self.view
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .abandon_listing();
    }

    fn read(&self) -> RwLockReadGuard<'_, Replicas> {
        // Every mutation is one call on the view, which leaves it whole even if it
        // panicked half-way through a map update; a poisoned lock is still usable.
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_single_replica_is_live_alone_and_complete() {
        let me = ReplicaId::new("standalone");
        let registry = ReplicaRegistry::single(me.clone());
        let now = OffsetDateTime::now_utc();
        assert!(registry.is_live(&me.text(), now));
        assert!(!registry.is_live("other/00000000", now));
        assert!(registry.live_peers(now).is_empty());
        assert_eq!(registry.next_expiry(now), None);
        assert!(registry.view().is_complete());
        assert_eq!(registry.me(), me);
    }
}
