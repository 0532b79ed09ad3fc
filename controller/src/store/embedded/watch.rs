//! Watches on the embedded store.
//!
//! A watch subscribes to the broadcast of committed changes first, then reads a snapshot
//! (the matching objects and the resourceVersion they were read at) and reports each object
//! as `Applied`. From then on it reports each broadcast change newer than the snapshot, in
//! commit order. If it falls so far behind that the broadcast dropped changes for it, it
//! reads a new snapshot, reports every object again as `Applied` and every object it had
//! reported that is gone as `Deleted`, and continues: nothing is silently lost.
//!
//! The stream holds the store weakly: it ends once every [`EmbeddedStore`] handle is
//! dropped, so that an open watch does not keep the database file locked.
//!
//! [`EmbeddedStore`]: super::EmbeddedStore

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::Value;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use super::{Change, Inner, from_json};
use crate::store::{Object, StoreError, WatchEvent};

/// How long a watch waits before retrying a snapshot that failed to read.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Which objects a watch reports.
#[derive(Debug, Clone)]
pub(super) struct Filter {
    pub(super) type_key: String,
    pub(super) namespace: String,
    pub(super) name: Option<String>,
}

impl Filter {
    fn matches(&self, change: &Change) -> bool {
        change.type_key == self.type_key
            && change.namespace == self.namespace
            && self.name.as_ref().is_none_or(|name| *name == change.name)
    }
}

struct State {
    inner: Weak<Inner>,
    changes: Receiver<Arc<Change>>,
    filter: Filter,
    /// Objects reported as present, by name (to report deletions missed while lagging).
    known: BTreeMap<String, Arc<Value>>,
    /// Events decided but not yet yielded.
    pending: VecDeque<Pending>,
    /// The resourceVersion reported up to; `None` until a snapshot is read.
    seen: Option<u64>,
    /// A snapshot failed: wait before the next attempt.
    backoff: bool,
}

/// The watch stream of objects of type `K` matching `filter`.
pub(super) fn stream<K: Object>(
    inner: Weak<Inner>,
    changes: Receiver<Arc<Change>>,
    filter: Filter,
) -> BoxStream<'static, Result<WatchEvent<K>, StoreError>> {
    let state = State {
        inner,
        changes,
        filter,
        known: BTreeMap::new(),
        pending: VecDeque::new(),
        seen: None,
        backoff: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        let event = state.next().await?;
        let event = event.and_then(|pending| {
            Ok(match pending {
                Pending::Object(true, value) => WatchEvent::Deleted(from_json::<K>(&value)?),
                Pending::Object(false, value) => WatchEvent::Applied(from_json::<K>(&value)?),
                Pending::Listed => WatchEvent::Listed,
            })
        });
        Some((event, state))
    })
    .boxed()
}

/// An event decided but not yet yielded.
enum Pending {
    /// `(deleted, object)`.
    Object(bool, Arc<Value>),
    /// The end of a snapshot's events.
    Listed,
}

impl State {
    /// The next event; `None` once the store is gone.
    async fn next(&mut self) -> Option<Result<Pending, StoreError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            let Some(seen) = self.seen else {
                if self.backoff {
                    tokio::time::sleep(RETRY_DELAY).await;
                }
                if let Err(err) = self.resync().await? {
                    self.backoff = true;
                    return Some(Err(err));
                }
                self.backoff = false;
                continue;
            };
            match self.changes.recv().await {
                Ok(change) => {
                    if change.resource_version <= seen || !self.filter.matches(&change) {
                        continue;
                    }
                    self.seen = Some(change.resource_version);
                    if change.deleted {
                        self.known.remove(&change.name);
                    } else {
                        self.known
                            .insert(change.name.clone(), change.object.clone());
                    }
                    return Some(Ok(Pending::Object(change.deleted, change.object.clone())));
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(
                        missed,
                        kind = %self.filter.type_key,
                        namespace = %self.filter.namespace,
                        "watch fell behind; re-listing"
                    );
                    self.seen = None;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// Reads a snapshot and queues the events that bring the consumer up to it. The outer
    /// `None` means the store is gone.
    async fn resync(&mut self) -> Option<Result<(), StoreError>> {
        let inner = self.inner.upgrade()?;
        let filter = self.filter.clone();
        let snapshot = tokio::task::spawn_blocking(move || {
            inner.snapshot(&filter.type_key, &filter.namespace, filter.name.as_deref())
        })
        .await
        .map_err(|e| StoreError::Other(format!("watch snapshot task failed: {e}")))
        .and_then(|result| result);
        let (version, objects) = match snapshot {
            Ok(snapshot) => snapshot,
            Err(err) => return Some(Err(err)),
        };
        let known = std::mem::take(&mut self.known);
        for (name, object) in known {
            if !objects.contains_key(&name) {
                self.pending.push_back(Pending::Object(true, object));
            }
        }
        for object in objects.values() {
            self.pending
                .push_back(Pending::Object(false, object.clone()));
        }
        // Deletions are reported above, so no `Relisting` precedes the snapshot's events.
        self.pending.push_back(Pending::Listed);
        self.known = objects;
        self.seen = Some(version);
        Some(Ok(()))
    }
}
