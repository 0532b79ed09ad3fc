//! A [`Store`] around another that counts the reads it passes on (gets and lists, by kind)
//! and the watches it opens, and can hold back watch events (a watch that lags, as one on
//! another replica may), so that tests can tell what a caller read from the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::stream::BoxStream;
use jumpstarter_controller::store::{
    ListParams, Object, ObjectList, Store, StoreError, WatchEvent,
};
use tokio::sync::watch;

/// `inner` with counters and a gate on its watches. Cheap to clone (shared counters).
#[derive(Clone)]
pub struct CountingStore<S> {
    pub inner: S,
    reads: Arc<Mutex<HashMap<String, usize>>>,
    pub watches: Arc<AtomicUsize>,
    /// `true` while watch events are held back.
    held: Arc<watch::Sender<bool>>,
}

impl<S: Store> CountingStore<S> {
    pub fn new(inner: S) -> Self {
        CountingStore {
            inner,
            reads: Arc::default(),
            watches: Arc::default(),
            held: Arc::new(watch::channel(false).0),
        }
    }

    /// Reads (get or list) of `kind` (e.g. `Lease`) passed on to the store so far.
    pub fn reads(&self, kind: &str) -> usize {
        self.reads
            .lock()
            .expect("counters")
            .get(kind)
            .copied()
            .unwrap_or(0)
    }

    /// Reads of every kind passed on so far.
    pub fn all_reads(&self) -> usize {
        self.reads.lock().expect("counters").values().sum()
    }

    /// Holds back (`true`) or releases (`false`) the events of every watch.
    pub fn hold_watches(&self, held: bool) {
        self.held.send_replace(held);
    }

    fn count<K: Object>(&self) {
        *self
            .reads
            .lock()
            .expect("counters")
            .entry(K::kind(&()).to_string())
            .or_default() += 1;
    }
}

impl<S: Store> Store for CountingStore<S> {
    async fn get<K: Object>(&self, namespace: &str, name: &str) -> Result<Option<K>, StoreError> {
        self.count::<K>();
        self.inner.get(namespace, name).await
    }

    async fn list<K: Object>(
        &self,
        namespace: &str,
        params: &ListParams,
    ) -> Result<ObjectList<K>, StoreError> {
        self.count::<K>();
        self.inner.list(namespace, params).await
    }

    async fn create<K: Object>(&self, object: &K) -> Result<K, StoreError> {
        self.inner.create(object).await
    }

    async fn replace<K: Object>(&self, object: &K) -> Result<K, StoreError> {
        self.inner.replace(object).await
    }

    async fn replace_status<K: Object>(&self, object: &K) -> Result<K, StoreError> {
        self.inner.replace_status(object).await
    }

    async fn delete<K: Object>(&self, namespace: &str, name: &str) -> Result<(), StoreError> {
        self.inner.delete::<K>(namespace, name).await
    }

    fn watch<K: Object>(
        &self,
        namespace: &str,
        name: Option<&str>,
    ) -> BoxStream<'static, Result<WatchEvent<K>, StoreError>> {
        self.watches.fetch_add(1, Ordering::SeqCst);
        let held = self.held.subscribe();
        self.inner
            .watch(namespace, name)
            .then(move |event| {
                let mut held = held.clone();
                async move {
                    // The sender lives as long as the store: waiting cannot fail for it.
                    let _ = held.wait_for(|held| !*held).await;
                    event
                }
            })
            .boxed()
    }
}
