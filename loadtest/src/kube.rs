//! A real Kubernetes API server for scenario 7: the jumpstarter CRDs applied to it and a
//! fresh namespace per controller run. Needs permission to apply CustomResourceDefinitions
//! and create namespaces (the project's test API server gives it).

use std::path::{Path, PathBuf};

use anyhow::Context;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};

/// An API server reached with a kubeconfig.
#[derive(Clone)]
pub(crate) struct KubeTarget {
    pub(crate) kubeconfig: PathBuf,
    pub(crate) client: kube::Client,
}

impl std::fmt::Debug for KubeTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeTarget")
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl KubeTarget {
    /// Connects with `kubeconfig` and applies the jumpstarter CRDs (server-side apply,
    /// so an installed chart's CRDs are left as they are when identical).
    pub(crate) async fn connect(kubeconfig: &Path) -> anyhow::Result<KubeTarget> {
        let client = jumpstarter_shell::kube_client::connect(Some(kubeconfig)).await?;
        let target = KubeTarget {
            kubeconfig: kubeconfig.to_owned(),
            client,
        };
        jumpstarter_testenv::apply_crds(
            target.client.clone(),
            "jumpstarter-loadtest",
            &jumpstarter_controller::crd::definitions(),
        )
        .await?;
        Ok(target)
    }

    /// Creates namespace `name`.
    pub(crate) async fn create_namespace(&self, name: &str) -> anyhow::Result<()> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(name.to_owned());
        api.create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(())
    }

    /// Asks for namespace `name` to be deleted (with everything in it, where the cluster
    /// runs a namespace controller; the bare test API server keeps it).
    pub(crate) async fn delete_namespace(&self, name: &str) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        if let Err(e) = api.delete(name, &DeleteParams::background()).await {
            crate::progress::step(format!("could not delete namespace {name}: {e}"));
        }
    }
}
