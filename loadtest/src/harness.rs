//! What every scenario runs against: the lab's keys, a router process, the baseline
//! servers, the upstream Go router when asked for, the sizes, and where the binaries and
//! scratch files are.

use std::path::PathBuf;
use std::sync::Arc;

use crate::kube::KubeTarget;
use crate::lab::Lab;
use crate::preset::Sizes;
use crate::reference::{Reference, ReferenceConfig};
use crate::route::{Fabric, Route};
use crate::router_process::RouterProcess;

/// Shared state of a run.
#[derive(Debug)]
pub(crate) struct Harness {
    pub(crate) lab: Arc<Lab>,
    /// The shared router process; kept running for the whole run.
    _router: RouterProcess,
    pub(crate) fabric: Fabric,
    /// The upstream Go router (kept running for the whole run), or why it is missing.
    pub(crate) reference: Reference,
    pub(crate) sizes: Sizes,
    pub(crate) work: PathBuf,
    pub(crate) router_bin: PathBuf,
    pub(crate) standalone_bin: PathBuf,
    /// A Kubernetes API server for the controller scenario, when given.
    pub(crate) kube: Option<KubeRun>,
}

/// The controller scenario on Kubernetes: the API server and the controller binary.
#[derive(Debug)]
pub(crate) struct KubeRun {
    pub(crate) target: KubeTarget,
    pub(crate) controller_bin: PathBuf,
}

impl Harness {
    pub(crate) async fn start(
        sizes: Sizes,
        work: PathBuf,
        router_bin: PathBuf,
        standalone_bin: PathBuf,
        reference: Option<&ReferenceConfig>,
        reference_unavailable: Option<String>,
    ) -> anyhow::Result<Harness> {
        let lab = Arc::new(Lab::new(&work.join("pki"))?);
        let router = RouterProcess::start(&router_bin, &lab, &work).await?;
        let mut fabric = Fabric::new(lab.clone(), router.h2).await?;
        let reference = Reference::start(reference, reference_unavailable, &work).await;
        if let Some(target) = reference.target() {
            fabric = fabric.with_reference(target);
        }
        Ok(Harness {
            lab,
            _router: router,
            fabric,
            reference,
            sizes,
            work,
            router_bin,
            standalone_bin,
            kube: None,
        })
    }

    /// The paths of scenarios 1–3: QUIC and h2 through our router with their baselines,
    /// then h2 through the Go router when it runs.
    pub(crate) fn routes(&self) -> Vec<Route> {
        let mut routes = vec![
            Route::QuicDirect,
            Route::QuicRouter,
            Route::H2Direct,
            Route::H2Router,
        ];
        if self.fabric.has_reference() {
            routes.push(Route::H2Reference);
        }
        routes
    }

    /// Another router process with the same keys (for memory and restart figures that
    /// must not inherit the history of the shared one).
    pub(crate) async fn fresh_router(&self) -> anyhow::Result<RouterProcess> {
        RouterProcess::start(&self.router_bin, &self.lab, &self.work).await
    }
}
