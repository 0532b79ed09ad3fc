//! Scenario 7: the controller. Lease create → Ready latency (p50/p99) and grants per second,
//! with 1,000 and 10,000 registered, online exporters on the standalone store
//! (`jumpstarter serve`, embedded redb), driven over its gRPC API like 0.9.0 clients.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use jumpstarter_proto::jumpstarter::v1 as pb;
use tonic::transport::Channel;

use crate::harness::Harness;
use crate::latency::Samples;
use crate::progress::step;
use crate::report::{Row, Scenario};
use crate::service::{self, Identity, Service};

pub(crate) const KEY: &str = "controller";

/// Leases in flight in the grant burst.
const POPULATING: usize = 32;

/// Admin and gRPC calls in flight while populating the store with `n` exporters. An
/// exporter's creation returns once a reconcile pass has issued its credential, and one
/// pass serves every creation waiting for it: more in flight at larger sizes keeps the
/// number of passes (each one reads the whole namespace) from growing with `n`.
fn populating(n: usize) -> usize {
    (n / 40).clamp(POPULATING, 256)
}

/// How often a waiting client asks whether its lease is ready.
const POLL: Duration = Duration::from_millis(2);
/// The lease selector: every simulated exporter matches it.
const SELECTOR: &str = "pool=bench";
/// Simulated exporters report their status again this often, so they stay online (the
/// controller considers an exporter silent for a minute offline).
const HEARTBEAT: Duration = Duration::from_secs(30);

/// Longest time to create one size's exporters, so that the suite stays bounded.
const POPULATE_LIMIT: Duration = Duration::from_secs(240);

/// Longest time spent on one-at-a-time leases per size (fewer samples when slow).
const SAMPLING_LIMIT: Duration = Duration::from_secs(30);

/// After this, the grant burst starts no more leases (the ones in flight complete): slow
/// sizes give a rate from fewer leases instead of stretching the suite.
const BURST_LIMIT: Duration = Duration::from_secs(30);

/// Row name of the latency and rate with `n` exporters.
pub(crate) fn row_name(n: usize) -> String {
    format!("{n} exporters")
}

pub(crate) async fn run(h: &Harness) -> Scenario {
    let mut s = Scenario::new(7, KEY, "Controller: lease create → Ready, grants/s");
    if let Err(e) = measure(h, &mut s).await {
        s.fail(&e);
    }
    s
}

async fn measure(h: &Harness, s: &mut Scenario) -> anyhow::Result<()> {
    s.note(format!(
        "`jumpstarter serve` on a fresh data directory per size. Exporters are created through \
         the admin socket ({} in flight at 1,000, up to 256 at 10,000), then Register (one \
         device) and ReportStatus(Available) over gRPC, and report again every {}s to stay online. Latency: {} leases one at a time (or as many as fit in {}s), \
         CreateLease (selector `{SELECTOR}`, every exporter matches) then GetLease every \
         {} ms until Ready=True, then DeleteLease. Grants/s: a burst of leases created with \
         {POPULATING} in flight (no new ones after {}s), timed until all are Ready.",
        populating(1_000),
        HEARTBEAT.as_secs(),
        h.sizes.lease_samples,
        SAMPLING_LIMIT.as_secs(),
        POLL.as_millis(),
        BURST_LIMIT.as_secs()
    ));
    let kube_sizes: &[usize] = match &h.kube {
        Some(kube) => {
            s.note(format!(
                "Rows \"{KUBE_ROW} …\": `jumpstarter-controller run` on a real kube-apiserver \
                 (kubeconfig {}), a fresh namespace per size; exporters and the client are \
                 created through the Kubernetes API with the admin code `jmp admin` uses, the \
                 rest as above.",
                kube.target.kubeconfig.display()
            ));
            &h.sizes.kube_exporters
        }
        None => {
            s.note(
                "Not measured in this run: the controller on a real kube-apiserver (no --kubeconfig).",
            );
            &[]
        }
    };
    let runs = (h.sizes.exporters.iter().map(|&n| (Backend::Embedded, n)))
        .chain(kube_sizes.iter().map(|&n| (Backend::Kube, n)));
    for (backend, n) in runs {
        match size(h, s, backend, n).await {
            Ok(row) => s.row(row),
            Err(e) => {
                let name = match backend {
                    Backend::Embedded => row_name(n),
                    Backend::Kube => kube_row_name(n),
                };
                s.note(format!("{name}: {e:#}"));
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Prefix of the rows measured on Kubernetes.
const KUBE_ROW: &str = "kube-apiserver:";

fn kube_row_name(n: usize) -> String {
    format!("{KUBE_ROW} {n} exporters")
}

/// Where the controller under test keeps its objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// `jumpstarter serve`, embedded store.
    Embedded,
    /// `jumpstarter-controller run` on the Kubernetes API server of the run.
    Kube,
}

async fn size(h: &Harness, s: &mut Scenario, backend: Backend, n: usize) -> anyhow::Result<Row> {
    let (mut service, row, namespace) = match (backend, &h.kube) {
        (Backend::Kube, Some(kube)) => {
            step(format!(
                "controller: starting jumpstarter-controller on Kubernetes, creating {n} exporters"
            ));
            let namespace = format!("loadtest-{}-{n}", std::process::id());
            kube.target.create_namespace(&namespace).await?;
            let service =
                Service::start_kube(&kube.controller_bin, &h.work, &kube.target, &namespace)
                    .await?;
            (service, kube_row_name(n), Some(namespace))
        }
        (Backend::Kube, None) => anyhow::bail!("no Kubernetes API server in this run"),
        (Backend::Embedded, _) => {
            step(format!(
                "controller: starting the service, creating {n} exporters"
            ));
            let service =
                Service::start(&h.standalone_bin, &h.work, &format!("controller-{n}")).await?;
            (service, row_name(n), None)
        }
    };
    let measured = populate_and_lease(h, s, &mut service, &row, n).await;
    drop(service);
    if let (Some(namespace), Some(kube)) = (namespace, &h.kube) {
        kube.target.delete_namespace(&namespace).await;
    }
    measured
}

async fn populate_and_lease(
    h: &Harness,
    s: &mut Scenario,
    service: &mut Service,
    row: &str,
    n: usize,
) -> anyhow::Result<Row> {
    let client = service.create("clients", "bench", &[]).await?;
    let start = Instant::now();
    let mut exporters = Vec::with_capacity(n);
    let names: Vec<String> = (0..n).map(|i| format!("board-{i:05}")).collect();
    let service_ref = &*service;
    let creating = futures::stream::iter(names.iter())
        .map(|name| async move { create_exporter(service_ref, name).await })
        .buffer_unordered(populating(n))
        .collect::<Vec<anyhow::Result<Identity>>>();
    let created = tokio::time::timeout(POPULATE_LIMIT, creating)
        .await
        .with_context(|| {
            format!(
                "creating {n} exporters through the admin socket took longer than {}s",
                POPULATE_LIMIT.as_secs()
            )
        })?;
    for exporter in created {
        exporters.push(exporter?);
    }
    let created_s = start.elapsed().as_secs_f64();
    let channel = service.channel().await?;
    step(format!("controller: bringing {n} exporters online"));
    let start = Instant::now();
    online(&channel, &exporters, pb::ExporterStatus::Available).await?;
    let online_s = start.elapsed().as_secs_f64();
    let heartbeat = tokio::spawn({
        let channel = channel.clone();
        let exporters = exporters.clone();
        async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                let _ = online(&channel, &exporters, pb::ExporterStatus::Available).await;
            }
        }
    });
    let passes_before = service.reconcile_passes().await;
    let result = leases(h, &channel, &client, n).await;
    let passes_after = service.reconcile_passes().await;
    heartbeat.abort();
    let rss = service
        .pid()
        .and_then(|pid| crate::router_process::rss_of(pid).ok());
    let (latency, grants) = result?;
    let summary = latency.summary();
    let (before, after) = (passes_before?, passes_after?);
    let passes = after.0 - before.0;
    let pass_ms = 1000.0 * (after.1 - before.1) / passes.max(1.0);
    s.note(format!(
        "{row}: created in {created_s:.1} s, online in {online_s:.1} s; while \
         leasing, {passes:.0} reconcile passes of {pass_ms:.1} ms on average{}.",
        rss.map_or_else(String::new, |r| format!(
            "; service RSS {:.0} MiB",
            r as f64 / 1048576.0
        ))
    ));
    Ok(Row::new(row)
        .num("exporters", n as f64)
        .num("Ready p50 ms", summary.p50_us / 1000.0)
        .num("Ready p99 ms", summary.p99_us / 1000.0)
        .num("grants/s", grants)
        .num("samples", summary.count as f64))
}

async fn create_exporter(service: &Service, name: &str) -> anyhow::Result<Identity> {
    service
        .create_exporter(name, &[("pool", "bench")])
        .await
        .with_context(|| format!("creating exporter {name}"))
}

async fn online(
    channel: &Channel,
    exporters: &[Identity],
    status: pb::ExporterStatus,
) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(exporters.to_vec())
        .map(|e| {
            let channel = channel.clone();
            async move { service::bring_online(&channel, &e, status).await }
        })
        .buffer_unordered(populating(exporters.len()))
        .collect()
        .await;
    results.into_iter().collect()
}

/// Latency samples and the grant rate.
async fn leases(
    h: &Harness,
    channel: &Channel,
    client: &Identity,
    n: usize,
) -> anyhow::Result<(Samples, f64)> {
    let samples_wanted = h.sizes.lease_samples;
    step(format!(
        "controller: {samples_wanted} leases one at a time ({n} exporters)"
    ));
    let mut samples = Samples::new();
    let sampling_ends = Instant::now() + SAMPLING_LIMIT;
    for _ in 0..samples_wanted {
        if Instant::now() > sampling_ends {
            break;
        }
        let start = Instant::now();
        let lease = service::create_lease(channel, client, SELECTOR).await?;
        service::wait_ready(channel, client, &lease, POLL, Duration::from_secs(30)).await?;
        samples.record(start.elapsed());
        service::delete_lease(channel, client, &lease).await?;
    }
    let burst = h.sizes.grant_burst.min(n / 2).max(1);
    step(format!(
        "controller: burst of {burst} leases ({n} exporters)"
    ));
    // Let the releases settle so the burst finds free exporters.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let stop_starting = start + BURST_LIMIT;
    let granted: Vec<anyhow::Result<String>> = futures::stream::iter(0..burst)
        .take_while(|_| std::future::ready(Instant::now() < stop_starting))
        .map(|_| async move {
            let lease = service::create_lease(channel, client, SELECTOR).await?;
            service::wait_ready(channel, client, &lease, POLL * 5, Duration::from_secs(120))
                .await?;
            anyhow::Ok(lease)
        })
        .buffer_unordered(POPULATING)
        .collect()
        .await;
    let elapsed = start.elapsed();
    let granted: Vec<String> = granted.into_iter().collect::<anyhow::Result<_>>()?;
    let rate = granted.len() as f64 / elapsed.as_secs_f64();
    for lease in &granted {
        service::delete_lease(channel, client, lease).await?;
    }
    Ok((samples, rate))
}
