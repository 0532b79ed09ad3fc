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
use crate::router_process::{RouterProcess, cpu_seconds_of};

/// Shared state of a run.
#[derive(Debug)]
pub(crate) struct Harness {
    pub(crate) lab: Arc<Lab>,
    /// The shared router process; kept running for the whole run.
    pub(crate) router: RouterProcess,
    pub(crate) fabric: Fabric,
    /// The upstream Go router (kept running for the whole run), or why it is missing.
    pub(crate) reference: Reference,
    pub(crate) sizes: Sizes,
    pub(crate) work: PathBuf,
    pub(crate) router_bin: PathBuf,
    pub(crate) standalone_bin: PathBuf,
    /// A Kubernetes API server for the controller scenario, when given.
    pub(crate) kube: Option<KubeRun>,
    /// `--pin`: the latency scenario also measures its saturated rows with the router on
    /// its own CPU ([`crate::affinity`]); everything else runs unpinned.
    pub(crate) pinned: bool,
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
            router,
            fabric,
            reference,
            sizes,
            work,
            router_bin,
            standalone_bin,
            kube: None,
            pinned: false,
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

    /// The process id of the router that `route` goes through: ours, or the Go
    /// router's; none for the direct baselines (or a router that is not running).
    pub(crate) fn router_pid(&self, route: Route) -> Option<u32> {
        match route {
            Route::QuicRouter | Route::H2Router => self.router.pid(),
            Route::H2Reference => self.reference.pid(),
            Route::QuicDirect | Route::H2Direct => None,
        }
    }

    /// Another router process with the same keys (for memory and restart figures that
    /// must not inherit the history of the shared one).
    pub(crate) async fn fresh_router(&self) -> anyhow::Result<RouterProcess> {
        RouterProcess::start(&self.router_bin, &self.lab, &self.work).await
    }
}

/// Column of the router's CPU time per GiB a transfer moved.
pub(crate) const ROUTER_CPU: &str = "router CPU s/GiB";

/// The CPU time of the router a route goes through, read before a transfer (none for
/// the direct baselines).
#[derive(Debug)]
pub(crate) struct RouterCpu {
    start: Option<(u32, f64)>,
}

impl RouterCpu {
    /// What the column means, for the scenario's notes.
    pub(crate) const NOTE: &str = "router CPU s/GiB: user + system CPU time of the router \
         process (ours, or the Go router for its rows; /proc/<pid>/stat, clock-tick \
         resolution) during the transfer, divided by the GiB the transfer moved (each byte \
         counted once, though the router receives and sends it).";

    pub(crate) fn start(h: &Harness, route: Route) -> anyhow::Result<RouterCpu> {
        let start = match h.router_pid(route) {
            Some(pid) => Some((pid, cpu_seconds_of(pid)?)),
            None => None,
        };
        Ok(RouterCpu { start })
    }

    /// The router's CPU seconds since [`RouterCpu::start`] per GiB of `bytes`.
    pub(crate) fn per_gib(self, bytes: u64) -> anyhow::Result<Option<f64>> {
        let Some((pid, before)) = self.start else {
            return Ok(None);
        };
        let used = cpu_seconds_of(pid)? - before;
        Ok(Some(used / (bytes.max(1) as f64 / (1u64 << 30) as f64)))
    }
}
