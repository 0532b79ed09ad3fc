//! In-memory pairing of Dial with Listen: one bounded queue per lease.
//!
//! An exporter's `Listen(lease)` subscribes; a newer subscription for the same lease
//! supersedes the older one, which drains what it already holds and then ends. `Dial`
//! offers the router endpoint and token without waiting: no listener means UNAVAILABLE,
//! a full queue means RESOURCE_EXHAUSTED (as 0.9.0).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;

use jumpstarter_proto::jumpstarter::v1::ListenResponse;

/// Buffered responses per lease (0.9.0 value).
pub(crate) const QUEUE_SIZE: usize = 8;

/// Why an offer was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("no listener")]
    NotListening,
    #[error("listen queue is full")]
    Full,
}

/// The listen queues of all leases, keyed by `<namespace>/<lease>`.
#[derive(Debug, Default)]
pub struct ListenRegistry {
    queues: Mutex<HashMap<String, Entry>>,
    next_id: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    sender: mpsc::Sender<ListenResponse>,
}

/// One Listen call's end of a queue.
#[derive(Debug)]
pub struct Subscription {
    pub key: String,
    pub id: u64,
    pub receiver: mpsc::Receiver<ListenResponse>,
}

impl ListenRegistry {
    /// Subscribes to `key`, superseding any earlier subscriber.
    pub fn subscribe(&self, key: &str) -> Subscription {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (sender, receiver) = mpsc::channel(QUEUE_SIZE);
        // Dropping the previous sender lets the old receiver drain and then end.
        self.lock().insert(key.to_owned(), Entry { id, sender });
        Subscription {
            key: key.to_owned(),
            id,
            receiver,
        }
    }

    /// Removes the subscription if it is still the current one.
    pub fn unsubscribe(&self, key: &str, id: u64) {
        let mut queues = self.lock();
        if queues.get(key).is_some_and(|e| e.id == id) {
            queues.remove(key);
        }
    }

    /// Queues `response` for the current subscriber of `key` without waiting.
    pub fn offer(&self, key: &str, response: ListenResponse) -> Result<(), OfferError> {
        let mut queues = self.lock();
        let Some(entry) = queues.get(key) else {
            return Err(OfferError::NotListening);
        };
        match entry.sender.try_send(response) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(OfferError::Full),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                queues.remove(key);
                Err(OfferError::NotListening)
            }
        }
    }

    /// Number of leases with a listener.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no lease has a listener.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent (each
        // operation is a single insert/remove), so a poisoned lock is still usable.
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(token: &str) -> ListenResponse {
        ListenResponse {
            router_endpoint: "r:1".into(),
            router_token: token.into(),
        }
    }

    #[test]
    fn offer_without_listener_fails() {
        let registry = ListenRegistry::default();
        assert_eq!(
            registry.offer("ns/l", response("t")),
            Err(OfferError::NotListening)
        );
    }

    #[tokio::test]
    async fn newest_listener_supersedes_and_old_one_drains() {
        let registry = ListenRegistry::default();
        let mut first = registry.subscribe("ns/l");
        registry.offer("ns/l", response("a")).unwrap();
        let mut second = registry.subscribe("ns/l");
        registry.offer("ns/l", response("b")).unwrap();
        assert_eq!(first.receiver.recv().await.unwrap().router_token, "a");
        assert!(first.receiver.recv().await.is_none());
        assert_eq!(second.receiver.recv().await.unwrap().router_token, "b");
        // The superseded listener's cleanup must not remove the new one.
        registry.unsubscribe("ns/l", first.id);
        assert_eq!(registry.len(), 1);
        registry.unsubscribe("ns/l", second.id);
        assert!(registry.is_empty());
    }

    #[test]
    fn full_queue_is_reported() {
        let registry = ListenRegistry::default();
        let _sub = registry.subscribe("ns/l");
        for i in 0..QUEUE_SIZE {
            registry.offer("ns/l", response(&i.to_string())).unwrap();
        }
        assert_eq!(registry.offer("ns/l", response("x")), Err(OfferError::Full));
    }

    #[test]
    fn dropped_listener_counts_as_absent() {
        let registry = ListenRegistry::default();
        drop(registry.subscribe("ns/l"));
        assert_eq!(
            registry.offer("ns/l", response("t")),
            Err(OfferError::NotListening)
        );
        assert!(registry.is_empty());
    }
}
