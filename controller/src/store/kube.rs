//! [`Store`] on the Kubernetes API (kube-rs).

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

use super::{ListParams, Object, ObjectList, Store, StoreError, WatchEvent};

/// The Kubernetes API as the object store.
#[derive(Clone)]
pub struct KubeStore {
    client: kube::Client,
}

impl std::fmt::Debug for KubeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStore").finish_non_exhaustive()
    }
}

impl KubeStore {
    pub fn new(client: kube::Client) -> KubeStore {
        KubeStore { client }
    }

    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    fn api<K: Object>(&self, namespace: &str) -> Api<K> {
        Api::namespaced(self.client.clone(), namespace)
    }
}

fn names<K: Object>(object: &K) -> (String, String) {
    let meta = object.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Maps a kube error to a store error about `kind namespace/name`.
fn map_err<K: Object>(err: kube::Error, namespace: &str, name: &str) -> StoreError {
    let kind = K::kind(&()).to_string();
    let (namespace, name) = (namespace.to_owned(), name.to_owned());
    match err {
        kube::Error::Api(status) => {
            let message = status.message.clone();
            match status.code {
                404 => StoreError::NotFound {
                    kind,
                    namespace,
                    name,
                },
                409 if status.reason == "AlreadyExists" => StoreError::AlreadyExists {
                    kind,
                    namespace,
                    name,
                },
                409 => StoreError::Conflict {
                    kind,
                    namespace,
                    name,
                    message,
                },
                422 | 400 => StoreError::Invalid {
                    kind,
                    namespace,
                    name,
                    message,
                },
                401 | 403 => StoreError::Forbidden {
                    kind,
                    namespace,
                    message,
                },
                500..=599 => StoreError::Unavailable(message),
                _ => StoreError::Other(format!("{} ({})", message, status.code)),
            }
        }
        other => StoreError::Unavailable(other.to_string()),
    }
}

impl Store for KubeStore {
    async fn get<K: Object>(&self, namespace: &str, name: &str) -> Result<Option<K>, StoreError> {
        self.api::<K>(namespace)
            .get_opt(name)
            .await
            .map_err(|e| map_err::<K>(e, namespace, name))
    }

    async fn list<K: Object>(
        &self,
        namespace: &str,
        params: &ListParams,
    ) -> Result<ObjectList<K>, StoreError> {
        let mut lp = kube::api::ListParams::default();
        if let Some(selector) = &params.label_selector {
            lp = lp.labels(selector);
        }
        if let Some(limit) = params.limit {
            lp = lp.limit(limit);
        }
        if let Some(token) = &params.continue_token {
            lp = lp.continue_token(token);
        }
        let list = self
            .api::<K>(namespace)
            .list(&lp)
            .await
            .map_err(|e| map_err::<K>(e, namespace, ""))?;
        Ok(ObjectList {
            continue_token: list.metadata.continue_.filter(|t| !t.is_empty()),
            items: list.items,
        })
    }

    async fn create<K: Object>(&self, object: &K) -> Result<K, StoreError> {
        let (namespace, name) = names(object);
        self.api::<K>(&namespace)
            .create(&PostParams::default(), object)
            .await
            .map_err(|e| map_err::<K>(e, &namespace, &name))
    }

    async fn replace<K: Object>(&self, object: &K) -> Result<K, StoreError> {
        let (namespace, name) = names(object);
        self.api::<K>(&namespace)
            .replace(&name, &PostParams::default(), object)
            .await
            .map_err(|e| map_err::<K>(e, &namespace, &name))
    }

    async fn replace_status<K: Object>(&self, object: &K) -> Result<K, StoreError> {
        let (namespace, name) = names(object);
        self.api::<K>(&namespace)
            .replace_status(&name, &PostParams::default(), object)
            .await
            .map_err(|e| map_err::<K>(e, &namespace, &name))
    }

    async fn delete<K: Object>(&self, namespace: &str, name: &str) -> Result<(), StoreError> {
        match self
            .api::<K>(namespace)
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match map_err::<K>(e, namespace, name) {
                StoreError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    fn watch<K: Object>(
        &self,
        namespace: &str,
        name: Option<&str>,
    ) -> BoxStream<'static, Result<WatchEvent<K>, StoreError>> {
        let mut config = watcher::Config::default();
        if let Some(name) = name {
            config = config.fields(&format!("metadata.name={name}"));
        }
        let namespace = namespace.to_owned();
        // Backs off after errors (kube-rs' default: exponential from 800 ms to 30 s, with
        // jitter), so an unreachable or failing API server is not hammered by reconnects.
        watcher::watcher(self.api::<K>(&namespace), config)
            .default_backoff()
            .filter_map(move |event| {
                let namespace = namespace.clone();
                async move {
                    match event {
                        Ok(watcher::Event::Apply(k) | watcher::Event::InitApply(k)) => {
                            Some(Ok(WatchEvent::Applied(k)))
                        }
                        Ok(watcher::Event::Delete(k)) => Some(Ok(WatchEvent::Deleted(k))),
                        Ok(watcher::Event::Init) => Some(Ok(WatchEvent::Relisting)),
                        Ok(watcher::Event::InitDone) => Some(Ok(WatchEvent::Listed)),
                        Err(e) => Some(Err(StoreError::Unavailable(format!(
                            "watch of {} in {namespace}: {e}",
                            K::kind(&())
                        )))),
                    }
                }
            })
            .boxed()
    }
}
