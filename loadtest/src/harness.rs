//! What every scenario runs against: the lab's keys, a router process, the baseline
//! servers, the sizes, and where the binaries and scratch files are.

use std::path::PathBuf;
use std::sync::Arc;

use crate::lab::Lab;
use crate::preset::Sizes;
use crate::route::Fabric;
use crate::router_process::RouterProcess;

/// Shared state of a run.
#[derive(Debug)]
pub(crate) struct Harness {
    pub(crate) lab: Arc<Lab>,
    /// The shared router process; kept running for the whole run.
    _router: RouterProcess,
    pub(crate) fabric: Fabric,
    pub(crate) sizes: Sizes,
    pub(crate) work: PathBuf,
    pub(crate) router_bin: PathBuf,
    pub(crate) standalone_bin: PathBuf,
}

impl Harness {
    pub(crate) async fn start(
        sizes: Sizes,
        work: PathBuf,
        router_bin: PathBuf,
        standalone_bin: PathBuf,
    ) -> anyhow::Result<Harness> {
        let lab = Arc::new(Lab::new(&work.join("pki"))?);
        let router = RouterProcess::start(&router_bin, &lab, &work).await?;
        let fabric = Fabric::new(lab.clone(), router.h2).await?;
        Ok(Harness {
            lab,
            _router: router,
            fabric,
            sizes,
            work,
            router_bin,
            standalone_bin,
        })
    }

    /// Another router process with the same keys (for memory and restart figures that
    /// must not inherit the history of the shared one).
    pub(crate) async fn fresh_router(&self) -> anyhow::Result<RouterProcess> {
        RouterProcess::start(&self.router_bin, &self.lab, &self.work).await
    }
}
