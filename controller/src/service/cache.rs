//! The services' read cache: a watch-fed copy of the Exporters, Leases and Clients of each
//! namespace the services are called in, so that the calls clients and exporters repeat
//! (authentication, GetLease polling, ListExporters, Dial, the Status streams) read memory
//! instead of the API server. Every replica keeps its own copy, whether or not it leads.
//!
//! - One watch per kind and namespace, started at the first call in that namespace and run
//!   until shutdown; each keeps a [`Reflection`]. The Exporter watch also feeds the Status
//!   streams and Dial's wait for readiness ([`ReadCache::exporter_events`]), so one watch
//!   serves them all.
//! - A read is answered from the copy once it has seen a full listing; before that, and for
//!   a name the copy does not have (an object created a moment ago, whose event has not
//!   arrived yet, e.g. a lease created through another replica), the store answers.
//!   [`ServiceMetrics::reads`] counts both.
//! - What the services write is [`put`](ReadCache::put) into the copy as the store returned
//!   it, so a caller reads its own writes (e.g. GetLease right after CreateLease, on the same
//!   replica) even before the watch reports them.
//!
//! A copy trails the store by the watch's delay. Writes stay correct whatever the copy says:
//! every write is conditional on the resourceVersion read, and a stale read only costs a
//! conflict and a re-read from the store ([`super::write::modify_cached`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::metrics::{ServiceMetrics, WatchKindLabels};
use crate::crd::{Client, Exporter, Lease};
use crate::store::reflection::Reflection;
use crate::store::warning_throttle::WarningThrottle;
use crate::store::{self, Object, Store, StoreError, WatchEvent};

/// Changes of one exporter the feed may hold for a slow Status stream (or Dial) before that
/// reader misses some; a reader that missed changes re-reads its exporter, so this only
/// needs to cover a burst of one exporter's changes (kept small: one channel per exporter
/// waited on, 10,000 of them with every exporter connected).
pub(crate) const EXPORTER_EVENTS_BUFFER: usize = 16;
/// Pause before a watch is opened again after it ended (watches restart themselves after
/// errors; ending is unexpected).
const WATCH_RESTART: std::time::Duration = std::time::Duration::from_secs(1);

/// One Exporter change as the feed passes it on.
pub(crate) type ExporterEvent = Arc<WatchEvent<Exporter>>;

/// A kind the cache keeps.
pub(crate) trait Cached: Object {
    /// The kind's name (metric label).
    const KIND: &'static str;

    /// This kind's copy among a namespace's copies.
    fn reflection(copies: &Copies) -> &Reflection<Self>;

    /// Takes one watch event into the copies.
    fn take(copies: &Copies, event: WatchEvent<Self>) {
        Self::reflection(copies).apply(event);
    }
}

impl Cached for Exporter {
    const KIND: &'static str = "Exporter";

    fn reflection(copies: &Copies) -> &Reflection<Self> {
        &copies.exporters
    }

    /// Applies the event, then passes it on: a reader that subscribed before reading the
    /// copy misses nothing after its read.
    fn take(copies: &Copies, event: WatchEvent<Self>) {
        copies.exporters.apply(event.clone());
        copies.route(Arc::new(event));
    }
}

impl Cached for Lease {
    const KIND: &'static str = "Lease";

    fn reflection(copies: &Copies) -> &Reflection<Self> {
        &copies.leases
    }
}

impl Cached for Client {
    const KIND: &'static str = "Client";

    fn reflection(copies: &Copies) -> &Reflection<Self> {
        &copies.clients
    }
}

/// The copies of one namespace.
#[derive(Debug)]
pub(crate) struct Copies {
    exporters: Reflection<Exporter>,
    leases: Reflection<Lease>,
    clients: Reflection<Client>,
    /// The Exporter events of each exporter someone waits on (a Status stream, a Dial),
    /// after they are applied to `exporters`: an event wakes only the waiters of its
    /// exporter, not every open stream of the namespace.
    exporter_events: Mutex<HashMap<String, broadcast::Sender<ExporterEvent>>>,
}

impl Copies {
    /// Passes `event` on to the waiters of its exporter; the markers of a listing go to
    /// every waiter. Channels nobody listens to any more are dropped on the way.
    fn route(&self, event: ExporterEvent) {
        // Each critical section is map operations only: a panic cannot leave it half done.
        let mut channels = self
            .exporter_events
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let name = match &*event {
            WatchEvent::Applied(e) | WatchEvent::Deleted(e) => e.metadata.name.clone(),
            WatchEvent::Relisting | WatchEvent::Listed => None,
        };
        match name {
            Some(name) => {
                if let Some(sender) = channels.get(&name)
                    && sender.send(event).is_err()
                {
                    channels.remove(&name);
                }
            }
            None => channels.retain(|_, sender| sender.send(Arc::clone(&event)).is_ok()),
        }
    }

    /// A receiver of the events of exporter `name`.
    fn subscribe(&self, name: &str) -> broadcast::Receiver<ExporterEvent> {
        let mut channels = self
            .exporter_events
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match channels.get(name) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = broadcast::channel(EXPORTER_EVENTS_BUFFER);
                channels.insert(name.to_owned(), sender);
                receiver
            }
        }
    }
}

/// The copies per namespace, and the store behind them.
#[derive(Debug)]
pub(crate) struct ReadCache<S> {
    store: S,
    metrics: Arc<ServiceMetrics>,
    shutdown: CancellationToken,
    namespaces: Mutex<HashMap<String, Arc<Copies>>>,
}

impl<S: Store> ReadCache<S> {
    pub(crate) fn new(store: S, metrics: Arc<ServiceMetrics>, shutdown: CancellationToken) -> Self {
        ReadCache {
            store,
            metrics,
            shutdown,
            namespaces: Mutex::new(HashMap::new()),
        }
    }

    /// The store behind the copies.
    pub(crate) fn store(&self) -> &S {
        &self.store
    }

    /// The copies of `namespace`; their watches start at the first call.
    fn copies(&self, namespace: &str) -> Arc<Copies> {
        // Each critical section is one map operation: a panic cannot leave it half done.
        let mut namespaces = self.namespaces.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(copies) = namespaces.get(namespace) {
            return Arc::clone(copies);
        }
        let copies = Arc::new(Copies {
            exporters: Reflection::new(),
            leases: Reflection::new(),
            clients: Reflection::new(),
            exporter_events: Mutex::new(HashMap::new()),
        });
        namespaces.insert(namespace.to_owned(), Arc::clone(&copies));
        self.spawn_feed::<Exporter>(namespace, &copies);
        self.spawn_feed::<Lease>(namespace, &copies);
        self.spawn_feed::<Client>(namespace, &copies);
        copies
    }

    fn spawn_feed<K: Cached>(&self, namespace: &str, copies: &Arc<Copies>) {
        let span = tracing::info_span!("read_cache", %namespace, kind = K::KIND);
        tokio::spawn(
            feed::<S, K>(
                self.store.clone(),
                namespace.to_owned(),
                Arc::clone(copies),
                Arc::clone(&self.metrics),
                self.shutdown.clone(),
            )
            .instrument(span),
        );
    }

    /// The object `namespace/name`: from the copy when it has it, else from the store.
    pub(crate) async fn get<K: Cached>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<K>, StoreError> {
        let copies = self.copies(namespace);
        if let Ok(Some(object)) = K::reflection(&copies).get(name) {
            self.metrics.read(K::KIND, "cache");
            return Ok(Some(K::clone(&object)));
        }
        self.metrics.read(K::KIND, "store");
        self.store.get::<K>(namespace, name).await
    }

    /// Every object of `namespace`, sorted by name: from the copy once it is complete, else
    /// from the store.
    pub(crate) async fn list<K: Cached>(&self, namespace: &str) -> Result<Vec<Arc<K>>, StoreError> {
        let copies = self.copies(namespace);
        if let Some(objects) = K::reflection(&copies).objects() {
            self.metrics.read(K::KIND, "cache");
            return Ok(objects.into_values().collect());
        }
        self.metrics.read(K::KIND, "store");
        let mut objects: Vec<K> = store::list_all(&self.store, namespace, None).await?;
        objects.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
        Ok(objects.into_iter().map(Arc::new).collect())
    }

    /// Puts an object the services just wrote (as the store returned it) into the copy.
    pub(crate) fn put<K: Cached>(&self, object: &K) {
        let Some(namespace) = object.meta().namespace.as_deref() else {
            return;
        };
        K::reflection(&self.copies(namespace)).put(object);
    }

    /// Whether the copy of `object`'s kind has caught up with `object` (the watch has
    /// reported its version or a newer one); `true` for kinds the cache does not keep.
    pub(crate) fn has_seen<K: Object>(&self, object: &K) -> bool {
        let (Some(namespace), Some(version)) = (
            object.meta().namespace.as_deref(),
            object.meta().resource_version.as_deref(),
        ) else {
            return true;
        };
        let Ok(version) = version.parse::<u64>() else {
            return true;
        };
        let copies = self.copies(namespace);
        let seen = match K::kind(&()).as_ref() {
            Exporter::KIND => copies.exporters.seen(),
            Lease::KIND => copies.leases.seen(),
            Client::KIND => copies.clients.seen(),
            _ => return true,
        };
        seen >= version
    }

    /// The store's copy of `namespace/name`, which is also put into the cache: for the
    /// answers that refuse a call, so that a copy trailing the store never refuses what the
    /// store allows.
    pub(crate) async fn get_fresh<K: Cached>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<K>, StoreError> {
        self.metrics.read(K::KIND, "store");
        let object = self.store.get::<K>(namespace, name).await?;
        if let Some(object) = &object {
            self.put(object);
        }
        Ok(object)
    }

    /// Changes of exporter `namespace/name` from now on, and the markers of the namespace's
    /// listings (each applied to the copy before it is passed on: subscribe, then read).
    pub(crate) fn exporter_events(
        &self,
        namespace: &str,
        name: &str,
    ) -> broadcast::Receiver<ExporterEvent> {
        self.copies(namespace).subscribe(name)
    }
}

/// Keeps `K`'s copy of `namespace` current until shutdown, opening the watch again if it
/// ever ends.
async fn feed<S: Store, K: Cached>(
    store: S,
    namespace: String,
    copies: Arc<Copies>,
    metrics: Arc<ServiceMetrics>,
    shutdown: CancellationToken,
) {
    let mut throttle = WarningThrottle::default();
    let errors = metrics
        .cache_watch_errors
        .get_or_create(&WatchKindLabels { kind: K::KIND })
        .clone();
    loop {
        // A new watch reports everything again; objects it no longer reports are gone.
        K::take(&copies, WatchEvent::Relisting);
        let mut watch = store.watch::<K>(&namespace, None);
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return,
                event = watch.next() => event,
            };
            match event {
                Some(Ok(event)) => K::take(&copies, event),
                Some(Err(err)) => {
                    errors.inc();
                    match throttle.check(Instant::now()) {
                        Some(suppressed) => tracing::warn!(
                            suppressed,
                            "watch error (it restarts with backoff): {err}"
                        ),
                        None => tracing::debug!("watch error: {err}"),
                    }
                }
                None => break,
            }
        }
        // Reads go to the store until the new watch has listed everything.
        K::reflection(&copies).abandon();
        tracing::warn!("watch ended; opening it again");
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(WATCH_RESTART) => {}
        }
    }
}
