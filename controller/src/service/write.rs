//! Read-modify-write of stored objects with a bounded retry on `Conflict`.

use super::cache::{Cached, ReadCache};
use crate::store::{Object, Store, StoreError};

/// Attempts of one read-modify-write before a conflict is given up on. Conflicts come
/// from the reconciler and the heartbeat writing the same object; a handful of re-reads
/// always settles them.
pub(crate) const CONFLICT_ATTEMPTS: usize = 5;

/// Which part of the object a write replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// Metadata and spec.
    Object,
    /// The status subresource.
    Status,
}

/// Reads `namespace/name`, lets `change` edit it (returning whether it changed anything)
/// and writes `part` back, re-reading on conflict. Returns the stored object.
pub(crate) async fn modify<S, K, F>(
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
            return Err(not_found::<K>(namespace, name));
        };
        if !change(&mut object) {
            return Ok(object);
        }
        match write(store, &object, part).await {
            Err(StoreError::Conflict { .. }) if attempt < CONFLICT_ATTEMPTS => continue,
            other => return other,
        }
    }
}

/// [`modify`] whose first read is from the services' copy (so a change that turns out to be
/// needless costs no API call), and whose result is put into the copy (so the caller reads
/// its own write). A stale copy only costs a conflict: the attempts after it re-read the
/// store, as [`modify`] does.
pub(crate) async fn modify_cached<S, K, F>(
    cache: &ReadCache<S>,
    namespace: &str,
    name: &str,
    part: Part,
    mut change: F,
) -> Result<K, StoreError>
where
    S: Store,
    K: Cached,
    F: FnMut(&mut K) -> bool,
{
    let Some(mut object) = cache.get::<K>(namespace, name).await? else {
        return Err(not_found::<K>(namespace, name));
    };
    if !change(&mut object) {
        return Ok(object);
    }
    let store = cache.store();
    let written = match write(store, &object, part).await {
        Err(StoreError::Conflict { .. }) => modify(store, namespace, name, part, change).await,
        other => other,
    };
    if let Ok(object) = &written {
        cache.put(object);
    }
    written
}

/// Writes `part` of `object` (conditional on its resourceVersion).
async fn write<S: Store, K: Object>(store: &S, object: &K, part: Part) -> Result<K, StoreError> {
    match part {
        Part::Object => store.replace(object).await,
        Part::Status => store.replace_status(object).await,
    }
}

/// The error of a read-modify-write whose object does not exist.
fn not_found<K: Object>(namespace: &str, name: &str) -> StoreError {
    StoreError::NotFound {
        kind: K::kind(&()).to_string(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}
