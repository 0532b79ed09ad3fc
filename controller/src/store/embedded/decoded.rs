//! The objects the embedded store has already decoded, so that reading an unchanged object
//! again is a clone rather than a JSON decode (a reconcile pass lists every Exporter and
//! Secret of its namespace, and most of them have not changed since the last pass).
//!
//! Validity rests on the store's resourceVersion counter: the cache is at the version of the
//! latest commit, and every commit removes the key it wrote while moving the cache to its
//! version (under the store's writer lock, see [`Decoded::committed`]). A read uses the
//! cache only when its snapshot is at the cache's version, and adds what it decoded only
//! if no commit happened since its snapshot. So a cached object is always the one stored
//! at the cache's version.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::store::Object;

type Entry = Arc<dyn Any + Send + Sync>;

/// Decoded objects by storage key, valid at one resourceVersion.
pub(super) struct Decoded {
    state: Mutex<State>,
}

struct State {
    /// The version of the latest commit the cache reflects.
    version: u64,
    objects: HashMap<String, Entry>,
}

impl Decoded {
    /// An empty cache for a store whose latest commit is `version`.
    pub(super) fn new(version: u64) -> Decoded {
        Decoded {
            state: Mutex::new(State {
                version,
                objects: HashMap::new(),
            }),
        }
    }

    /// Records the commit of `version`, which wrote (or removed) the object at `key`.
    pub(super) fn committed(&self, version: u64, key: &str) {
        let mut state = self.lock();
        state.version = version;
        state.objects.remove(key);
    }

    /// Forgets everything: the store was reopened at `version`, and a commit that failed
    /// with an I/O error may have reached the file all the same.
    pub(super) fn reset(&self, version: u64) {
        let mut state = self.lock();
        state.version = version;
        state.objects.clear();
    }

    /// A view of the cache for a read whose snapshot is at `version`; it finds nothing if
    /// the cache is at another version. Hold it briefly: commits wait for it.
    pub(super) fn reader(&self, version: u64) -> Reader<'_> {
        let state = self.lock();
        let current = state.version == version;
        Reader { state, current }
    }

    /// Adds objects decoded from a snapshot at `version`, unless a commit happened since.
    pub(super) fn remember<K: Object>(
        &self,
        version: u64,
        decoded: impl IntoIterator<Item = (String, Arc<K>)>,
    ) {
        let mut state = self.lock();
        if state.version != version {
            return;
        }
        for (key, object) in decoded {
            state.objects.insert(key, object);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update of the state is a single insert/remove/assignment: a panic elsewhere
        // cannot leave it half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The cache as seen by one read.
pub(super) struct Reader<'a> {
    state: MutexGuard<'a, State>,
    current: bool,
}

impl Reader<'_> {
    /// The decoded object stored at `key`, if cached.
    pub(super) fn get<K: Object>(&self, key: &str) -> Option<Arc<K>> {
        if !self.current {
            return None;
        }
        Arc::clone(self.state.objects.get(key)?)
            .downcast::<K>()
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn config_map(name: &str) -> Arc<ConfigMap> {
        let mut object = ConfigMap::default();
        object.metadata.name = Some(name.to_owned());
        Arc::new(object)
    }

    #[test]
    fn a_read_at_the_current_version_finds_what_was_remembered_at_it() {
        let cache = Decoded::new(7);
        cache.remember(7, [("k".to_owned(), config_map("a"))]);
        let found = cache.reader(7).get::<ConfigMap>("k").expect("cached");
        assert_eq!(found.metadata.name.as_deref(), Some("a"));
    }

    #[test]
    fn a_commit_removes_its_key_and_hides_the_cache_from_older_reads() {
        let cache = Decoded::new(7);
        cache.remember(7, [("k".to_owned(), config_map("a"))]);
        cache.remember(7, [("other".to_owned(), config_map("b"))]);
        cache.committed(8, "k");
        assert!(cache.reader(8).get::<ConfigMap>("k").is_none());
        assert!(cache.reader(8).get::<ConfigMap>("other").is_some());
        // A read whose snapshot predates the commit must decode for itself.
        assert!(cache.reader(7).get::<ConfigMap>("other").is_none());
    }

    #[test]
    fn objects_decoded_from_an_older_snapshot_are_not_remembered() {
        let cache = Decoded::new(7);
        cache.committed(8, "k");
        cache.remember(7, [("k".to_owned(), config_map("stale"))]);
        assert!(cache.reader(8).get::<ConfigMap>("k").is_none());
    }

    #[test]
    fn an_entry_of_another_type_is_not_returned() {
        let cache = Decoded::new(1);
        cache.remember(1, [("k".to_owned(), config_map("a"))]);
        assert!(
            cache
                .reader(1)
                .get::<k8s_openapi::api::core::v1::Secret>("k")
                .is_none()
        );
    }
}
