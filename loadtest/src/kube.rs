//! A real Kubernetes API server for scenario 7: the jumpstarter CRDs applied to it and a
//! fresh namespace per controller run. Needs permission to apply CustomResourceDefinitions
//! and create namespaces (the project's test API server gives it).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

/// How long the API server may take to establish the CRDs.
const ESTABLISH_WAIT: Duration = Duration::from_secs(60);

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
        let file = kube::config::Kubeconfig::read_from(kubeconfig)
            .with_context(|| format!("reading the kubeconfig {}", kubeconfig.display()))?;
        let config =
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .context("using the kubeconfig")?;
        let client = kube::Client::try_from(config).context("a Kubernetes client")?;
        let target = KubeTarget {
            kubeconfig: kubeconfig.to_owned(),
            client,
        };
        target.apply_crds().await?;
        Ok(target)
    }

    async fn apply_crds(&self) -> anyhow::Result<()> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let params = PatchParams::apply("jumpstarter-loadtest").force();
        let crds = jumpstarter_controller::crd::definitions();
        for crd in &crds {
            let name = crd.metadata.name.clone().context("a CRD without a name")?;
            let mut body = serde_json::to_value(crd)?;
            body["apiVersion"] = "apiextensions.k8s.io/v1".into();
            body["kind"] = "CustomResourceDefinition".into();
            api.patch(&name, &params, &Patch::Apply(&body))
                .await
                .with_context(|| format!("applying CRD {name}"))?;
        }
        let deadline = Instant::now() + ESTABLISH_WAIT;
        for crd in &crds {
            let name = crd.metadata.name.clone().unwrap_or_default();
            loop {
                let current = api.get(&name).await?;
                let established = current
                    .status
                    .and_then(|s| s.conditions)
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    });
                if established {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("CRD {name} not established within {ESTABLISH_WAIT:?}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
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
