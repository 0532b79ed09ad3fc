//! The Kubernetes client of a binary: from a kubeconfig file when one is given, else the
//! usual inference (in-cluster, then `$KUBECONFIG` / `~/.kube/config`); a named context of
//! the kubeconfig when one is asked for, as `kubectl --context` selects it.

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
    #[error("read the kubeconfig ($KUBECONFIG or ~/.kube/config)")]
    ReadDefault(#[source] kube::config::KubeconfigError),
    #[error(
        "context {context:?} not found in the kubeconfig{}; available contexts: {}",
        path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default(),
        if available.is_empty() { "none".to_owned() } else { available.join(", ") }
    )]
    NoContext {
        context: String,
        /// The file, when one was given.
        path: Option<PathBuf>,
        available: Vec<String>,
    },
    #[error("find a Kubernetes configuration (in-cluster or kubeconfig)")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("create the Kubernetes client")]
    Client(#[source] kube::Error),
}

/// A client for `kubeconfig`, or for the inferred configuration when `None`.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<kube::Client, KubeClientError> {
    connect_to(kubeconfig, None).await
}

/// A client for context `context` (else the current one) of `kubeconfig` (else of
/// `$KUBECONFIG` / `~/.kube/config`); with neither, the inferred configuration (in-cluster
/// first). A context the kubeconfig does not have is [`KubeClientError::NoContext`],
/// which lists the ones it has.
pub async fn connect_to(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<kube::Client, KubeClientError> {
    let config = match (kubeconfig, context) {
        (None, None) => kube::Config::infer()
            .await
            .map_err(KubeClientError::Infer)?,
        (path, context) => {
            let file = match path {
                Some(path) => kube::config::Kubeconfig::read_from(path).map_err(|source| {
                    KubeClientError::Read {
                        path: path.to_owned(),
                        source,
                    }
                })?,
                None => kube::config::Kubeconfig::read().map_err(KubeClientError::ReadDefault)?,
            };
            if let Some(context) = context {
                check_context(&file, context, path)?;
            }
            let options = kube::config::KubeConfigOptions {
                context: context.map(str::to_owned),
                ..kube::config::KubeConfigOptions::default()
            };
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|source| KubeClientError::Load {
                    path: path.map_or_else(|| PathBuf::from("$KUBECONFIG"), Path::to_owned),
                    source,
                })?
        }
    };
    kube::Client::try_from(config).map_err(KubeClientError::Client)
}

/// Refuses a `context` that `file` does not name, listing the ones it does.
fn check_context(
    file: &kube::config::Kubeconfig,
    context: &str,
    path: Option<&Path>,
) -> Result<(), KubeClientError> {
    if file.contexts.iter().any(|c| c.name == context) {
        return Ok(());
    }
    Err(KubeClientError::NoContext {
        context: context.to_owned(),
        path: path.map(Path::to_owned),
        available: file.contexts.iter().map(|c| c.name.clone()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_CONTEXTS: &str = "\
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: https://127.0.0.1:6443}
users:
- name: u
  user: {token: t}
contexts:
- name: lab
  context: {cluster: c, user: u, namespace: lab}
- name: prod
  context: {cluster: c, user: u}
current-context: lab
";

    #[test]
    fn a_missing_context_is_named_with_the_available_ones() {
        let file = kube::config::Kubeconfig::from_yaml(TWO_CONTEXTS).expect("kubeconfig");
        assert!(check_context(&file, "prod", None).is_ok());
        let err = check_context(&file, "staging", Some(Path::new("/k"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "context \"staging\" not found in the kubeconfig /k; available contexts: lab, prod"
        );
    }

    #[tokio::test]
    async fn the_chosen_context_sets_the_default_namespace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config");
        std::fs::write(&path, TWO_CONTEXTS).expect("write");
        let lab = connect_to(Some(&path), None)
            .await
            .expect("current context");
        assert_eq!(lab.default_namespace(), "lab");
        let prod = connect_to(Some(&path), Some("prod")).await.expect("prod");
        assert_eq!(prod.default_namespace(), "default");
        let Err(missing) = connect_to(Some(&path), Some("nope")).await else {
            panic!("a context the kubeconfig does not have")
        };
        assert!(
            matches!(missing, KubeClientError::NoContext { .. }),
            "{missing}"
        );
    }
}
