//! The reconcile loop's copy of the objects of one type, kept current by a watch (a
//! reflector), so that a pass reads memory instead of listing the namespace from the store
//! (on Kubernetes, a list of every Exporter and Secret per pass is most of a pass).
//!
//! Sans-IO: [`Reflection::apply`] takes the watch's events; [`Reflection::objects`] is the
//! copy once a full listing has been seen. A copy may trail the store by the watch's delay;
//! passes stay correct because every write is conditional on the resourceVersion read (a
//! stale object makes its write conflict, and the pass runs again), exactly as with a list
//! that raced a write.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use k8s_openapi::api::core::v1::Secret;

use super::view::View;
use crate::crd;
use crate::store::{Object, WatchEvent};

/// The copies of every type a pass reads.
#[derive(Debug)]
pub(crate) struct Reflections {
    pub(crate) clients: Reflection<crd::Client>,
    pub(crate) exporters: Reflection<crd::Exporter>,
    pub(crate) leases: Reflection<crd::Lease>,
    pub(crate) policies: Reflection<crd::ExporterAccessPolicy>,
    pub(crate) secrets: Reflection<Secret>,
}

impl Reflections {
    pub(crate) fn new() -> Self {
        Reflections {
            clients: Reflection::new(),
            exporters: Reflection::new(),
            leases: Reflection::new(),
            policies: Reflection::new(),
            secrets: Reflection::new(),
        }
    }

    /// The namespace as the copies have it, once every copy is complete.
    #[allow(dead_code)] // Passes take the changes instead; kept for readers of the whole copy.
    pub(crate) fn view(&self) -> Option<View> {
        Some(View {
            exporters: self.exporters.objects()?,
            leases: self.leases.objects()?,
            clients: self.clients.objects()?,
            policies: self.policies.objects()?.into_values().collect(),
            secrets: self.secrets.objects()?,
        })
    }
}

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

impl<K> State<K> {
    /// Where changes go: the listing in progress, if any, else the copy itself.
    fn receiving(&mut self) -> &mut BTreeMap<String, Arc<K>> {
        self.listing.as_mut().unwrap_or(&mut self.objects)
    }
}

impl<K: Object> Reflection<K> {
    pub(crate) fn new() -> Self {
        Reflection {
            state: Mutex::new(State {
                objects: BTreeMap::new(),
                listing: None,
                complete: false,
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
                let name = object.meta().name.clone().unwrap_or_default();
                state.changed.insert(name.clone());
                state.receiving().insert(name, Arc::new(object));
            }
            WatchEvent::Deleted(object) => {
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
