//! The Kubernetes client of a binary: from a kubeconfig file when one is given, else the
//! usual inference (in-cluster, then `$KUBECONFIG` / `~/.kube/config`).

use std::path::{Path, PathBuf};

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum KubeClientError {
    #[error("read kubeconfig {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("load the kubeconfig {}", path.display())]
    Load {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("find a Kubernetes configuration (in-cluster or kubeconfig)")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("create the Kubernetes client")]
    Client(#[source] kube::Error),
}

/// A client for `kubeconfig`, or for the inferred configuration when `None`.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<kube::Client, KubeClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                KubeClientError::Read {
                    path: path.to_owned(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| KubeClientError::Load {
                    path: path.to_owned(),
                    source,
                })?
        }
        None => kube::Config::infer()
            .await
            .map_err(KubeClientError::Infer)?,
    };
    kube::Client::try_from(config).map_err(KubeClientError::Client)
}
