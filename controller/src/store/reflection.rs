//! A copy of the objects of one type, kept current by a watch (a reflector), so that the
//! reconcile loop's passes and the gRPC services read memory instead of the store (on
//! Kubernetes, a list of every Exporter and Secret per pass is most of a pass).
//!
//! Sans-IO: [`Reflection::apply`] takes the watch's events; [`Reflection::objects`] is the
//! copy once a full listing has been seen. A copy may trail the store by the watch's delay;
//! passes stay correct because every write is conditional on the resourceVersion read (a
//! stale object makes its write conflict, and the pass runs again), exactly as with a list
//! that raced a write.
//!
//! A reader that writes may also [`put`](Reflection::put) what it wrote, so that it reads its
//! own write before the watch reports it: a resourceVersion is a store-wide counter (etcd's
//! revision on Kubernetes, the database's commit counter in standalone mode), so an object
//! newer than every event seen so far is one the watch has yet to report, and an event
//! older than the object in the copy is one the copy has already gone past.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Object, WatchEvent};

/// The objects of one type in one namespace, by name.
#[derive(Debug)]
pub(crate) struct Reflection<K> {
    state: Mutex<State<K>>,
}

#[derive(Debug)]
struct State<K> {
    objects: BTreeMap<String, Arc<K>>,
    /// A listing in progress (after `Relisting`), replacing `objects` when it completes.
    listing: Option<BTreeMap<String, Arc<K>>>,
    /// A full listing has completed: `objects` is everything (as of the watch's delay).
    complete: bool,
    /// The newest resourceVersion the watch has reported (0 before any).
    seen: u64,
    /// Names changed since [`Reflection::take_changes`] last ran, unless `all_changed`.
    changed: BTreeSet<String>,
    /// Everything may have changed (a re-listing, an abandoned copy, nobody took any yet).
    all_changed: bool,
}

/// What changed in a copy since the last look: everything, or these names (with the
/// object now, `None` when deleted).
#[derive(Debug)]
pub(crate) enum Changes<K> {
    All(BTreeMap<String, Arc<K>>),
    Names(Vec<(String, Option<Arc<K>>)>),
}

/// A resourceVersion as the number it is in both stores; `None` if it is not one.
fn version_of<K: Object>(object: &K) -> Option<u64> {
    object.meta().resource_version.as_deref()?.parse().ok()
}

/// Whether `object` may replace `current`: not when `current` is known to be newer.
fn supersedes<K: Object>(object: &K, current: Option<&Arc<K>>) -> bool {
    match (
        version_of(object),
        current.and_then(|c| version_of(c.as_ref())),
    ) {
        (Some(new), Some(old)) => new >= old,
        _ => true,
    }
}

impl<K> State<K> {
    /// Where changes go: the listing in progress, if any, else the copy itself.
    fn receiving(&mut self) -> &mut BTreeMap<String, Arc<K>> {
        self.listing.as_mut().unwrap_or(&mut self.objects)
    }
}

/// The copy has not seen a full listing (or was abandoned): read the store instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotComplete;

impl<K: Object> Reflection<K> {
    pub(crate) fn new() -> Self {
        Reflection {
            state: Mutex::new(State {
                objects: BTreeMap::new(),
                listing: None,
                complete: false,
                seen: 0,
                changed: BTreeSet::new(),
                all_changed: true,
            }),
        }
    }

    /// Takes one watch event.
    pub(crate) fn apply(&self, event: WatchEvent<K>) {
        let mut state = self.lock();
        match event {
            WatchEvent::Applied(object) => {
                state.seen = state.seen.max(version_of(&object).unwrap_or(0));
                let name = object.meta().name.clone().unwrap_or_default();
                state.changed.insert(name.clone());
                let receiving = state.receiving();
                // Only a `put` of this reader's own write can be newer than an event.
                if supersedes(&object, receiving.get(&name)) {
                    receiving.insert(name, Arc::new(object));
                }
            }
            WatchEvent::Deleted(object) => {
                state.seen = state.seen.max(version_of(&object).unwrap_or(0));
                let name = object.meta().name.as_deref().unwrap_or_default();
                state.changed.insert(name.to_owned());
                state.receiving().remove(name);
            }
            WatchEvent::Relisting => state.listing = Some(BTreeMap::new()),
            WatchEvent::Listed => {
                if let Some(listing) = state.listing.take() {
                    state.objects = listing;
                }
                state.complete = true;
                state.all_changed = true;
            }
        }
    }

    /// Gives up the copy (its watch ended): [`objects`](Self::objects) is `None` from now
    /// on, so passes read the store instead of a copy nothing updates any more.
    pub(crate) fn abandon(&self) {
        let mut state = self.lock();
        state.complete = false;
        state.listing = None;
        state.all_changed = true;
    }

    /// What changed since the last call (everything at the first call, after a re-listing,
    /// or when `all` asks for it), or `None` before the first full listing.
    pub(crate) fn take_changes(&self, all: bool) -> Option<Changes<K>> {
        let mut state = self.lock();
        if !state.complete {
            return None;
        }
        let changed = std::mem::take(&mut state.changed);
        if all || std::mem::take(&mut state.all_changed) {
            state.all_changed = false;
            return Some(Changes::All(state.objects.clone()));
        }
        let names = changed
            .into_iter()
            .map(|name| {
                let object = state.objects.get(&name).cloned();
                (name, object)
            })
            .collect();
        Some(Changes::Names(names))
    }

    /// Puts an object this reader has just written (as the store returned it) into the copy,
    /// unless the watch has already reported it or something newer. Objects whose version
    /// is not a number are left to the watch.
    pub(crate) fn put(&self, object: &K) {
        let Some(version) = version_of(object) else {
            return;
        };
        let mut state = self.lock();
        if version <= state.seen {
            return;
        }
        let name = object.meta().name.clone().unwrap_or_default();
        let object = Arc::new(object.clone());
        if let Some(listing) = state.listing.as_mut()
            && supersedes(object.as_ref(), listing.get(&name))
        {
            listing.insert(name.clone(), Arc::clone(&object));
        }
        if supersedes(object.as_ref(), state.objects.get(&name)) {
            state.objects.insert(name, object);
        }
    }

    /// The object named `name`: `Ok(None)` when the complete copy has no such object,
    /// `Err(NotComplete)` before the first full listing (or after the copy was abandoned).
    pub(crate) fn get(&self, name: &str) -> Result<Option<Arc<K>>, NotComplete> {
        let state = self.lock();
        if !state.complete {
            return Err(NotComplete);
        }
        Ok(state.objects.get(name).cloned())
    }

    /// The newest resourceVersion the watch has reported (0 before any).
    pub(crate) fn seen(&self) -> u64 {
        self.lock().seen
    }

    /// Every object (shared, not copied), or `None` before the first full listing.
    pub(crate) fn objects(&self) -> Option<BTreeMap<String, Arc<K>>> {
        let state = self.lock();
        state.complete.then(|| state.objects.clone())
    }

    fn lock(&self) -> MutexGuard<'_, State<K>> {
        // Each event is applied by single map operations: a panic cannot leave a torn state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn object(name: &str, version: &str) -> ConfigMap {
        let mut object = ConfigMap::default();
        object.metadata.name = Some(name.to_owned());
        object.metadata.resource_version = Some(version.to_owned());
        object
    }

    fn names(reflection: &Reflection<ConfigMap>) -> Option<Vec<(String, String)>> {
        reflection.objects().map(|objects| {
            objects
                .into_iter()
                .map(|(name, o)| {
                    (
                        name,
                        o.metadata.resource_version.clone().unwrap_or_default(),
                    )
                })
                .collect()
        })
    }

    fn pairs(items: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            items
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn a_put_is_read_at_once_and_older_events_do_not_undo_it() {
        let reflection = Reflection::new();
        reflection.apply(WatchEvent::Applied(object("a", "5")));
        reflection.apply(WatchEvent::Listed);
        // This reader wrote "a" (version 7) and "b" (version 8).
        reflection.put(&object("a", "7"));
        reflection.put(&object("b", "8"));
        assert_eq!(names(&reflection), pairs(&[("a", "7"), ("b", "8")]));
        // The watch catches up: an intermediate version of "a" does not replace the newer.
        reflection.apply(WatchEvent::Applied(object("a", "6")));
        reflection.apply(WatchEvent::Applied(object("a", "7")));
        assert_eq!(names(&reflection), pairs(&[("a", "7"), ("b", "8")]));
        reflection.apply(WatchEvent::Applied(object("a", "9")));
        assert_eq!(names(&reflection), pairs(&[("a", "9"), ("b", "8")]));
    }

    #[test]
    fn a_put_the_watch_has_gone_past_is_ignored() {
        let reflection = Reflection::new();
        reflection.apply(WatchEvent::Applied(object("a", "1")));
        reflection.apply(WatchEvent::Listed);
        // Written at 2, then deleted at 3 by someone else, and the watch reported both
        // before the writer got round to its put.
        reflection.apply(WatchEvent::Applied(object("b", "2")));
        reflection.apply(WatchEvent::Deleted(object("b", "3")));
        reflection.put(&object("b", "2"));
        assert_eq!(names(&reflection), pairs(&[("a", "1")]));
        assert_eq!(reflection.get("b"), Ok(None));
        assert!(reflection.get("a").is_ok_and(|a| a.is_some()));
    }

    #[test]
    fn get_says_when_the_copy_cannot_answer() {
        let reflection: Reflection<ConfigMap> = Reflection::new();
        assert_eq!(reflection.get("a"), Err(NotComplete));
        reflection.apply(WatchEvent::Listed);
        assert_eq!(reflection.get("a"), Ok(None));
    }

    #[test]
    fn an_abandoned_copy_is_not_offered() {
        let reflection = Reflection::new();
        reflection.apply(WatchEvent::Applied(object("a", "1")));
        reflection.apply(WatchEvent::Listed);
        reflection.abandon();
        assert_eq!(names(&reflection), None);
    }

    #[test]
    fn nothing_is_offered_before_the_first_full_listing() {
        let reflection = Reflection::new();
        reflection.apply(WatchEvent::Relisting);
        reflection.apply(WatchEvent::Applied(object("a", "1")));
        assert_eq!(names(&reflection), None);
        reflection.apply(WatchEvent::Listed);
        assert_eq!(names(&reflection), pairs(&[("a", "1")]));
    }

    #[test]
    fn changes_after_the_listing_are_applied_in_place() {
        let reflection = Reflection::new();
        reflection.apply(WatchEvent::Applied(object("a", "1")));
        reflection.apply(WatchEvent::Applied(object("b", "2")));
        reflection.apply(WatchEvent::Listed);
        reflection.apply(WatchEvent::Applied(object("a", "3")));
        reflection.apply(WatchEvent::Deleted(object("b", "4")));
        assert_eq!(names(&reflection), pairs(&[("a", "3")]));
    }

    #[test]
    fn a_relisting_drops_what_it_no_longer_reports_and_keeps_serving_the_old_copy_meanwhile() {
        let reflection = Reflection::new();
        reflection.apply(WatchEvent::Relisting);
        reflection.apply(WatchEvent::Applied(object("a", "1")));
        reflection.apply(WatchEvent::Applied(object("gone", "2")));
        reflection.apply(WatchEvent::Listed);
        // The watch restarts; "gone" was deleted while it was down.
        reflection.apply(WatchEvent::Relisting);
        reflection.apply(WatchEvent::Applied(object("a", "5")));
        assert_eq!(names(&reflection), pairs(&[("a", "1"), ("gone", "2")]));
        reflection.apply(WatchEvent::Listed);
        assert_eq!(names(&reflection), pairs(&[("a", "5")]));
    }

    fn changed(reflection: &Reflection<ConfigMap>) -> Option<Vec<(String, bool)>> {
        match reflection.take_changes(false)? {
            Changes::All(objects) => Some(objects.into_keys().map(|n| (n, true)).collect()),
            Changes::Names(names) => {
                Some(names.into_iter().map(|(n, o)| (n, o.is_some())).collect())
            }
        }
    }

    #[test]
    fn changes_are_everything_at_first_and_after_a_relisting_then_the_changed_names() {
        let reflection = Reflection::new();
        reflection.apply(WatchEvent::Applied(object("a", "1")));
        assert_eq!(changed(&reflection), None, "nothing before the listing");
        reflection.apply(WatchEvent::Applied(object("b", "2")));
        reflection.apply(WatchEvent::Listed);
        let all = Some(vec![("a".to_owned(), true), ("b".to_owned(), true)]);
        assert_eq!(changed(&reflection), all);
        assert_eq!(changed(&reflection), Some(vec![]));
        reflection.apply(WatchEvent::Applied(object("a", "3")));
        reflection.apply(WatchEvent::Deleted(object("b", "4")));
        let some = Some(vec![("a".to_owned(), true), ("b".to_owned(), false)]);
        assert_eq!(changed(&reflection), some);
        reflection.apply(WatchEvent::Relisting);
        reflection.apply(WatchEvent::Applied(object("c", "5")));
        reflection.apply(WatchEvent::Listed);
        assert_eq!(changed(&reflection), Some(vec![("c".to_owned(), true)]));
    }
}
