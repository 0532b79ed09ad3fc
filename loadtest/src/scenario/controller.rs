//! Scenario 7: the controller. Lease create → Ready latency (p50/p99) and grants per second
//! with thousands of registered, online exporters: on the standalone store (`jumpstarter
//! serve`, embedded redb), and on a real kube-apiserver with one or several
//! `jumpstarter-controller` replicas, where it also counts the API server's writes while
//! every exporter is online and idle. Driven over the gRPC API like 0.9.0 clients and
//! exporters ([`Fleet`]).

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use tonic::transport::Channel;

use crate::fleet::Fleet;
use crate::harness::{Harness, KubeRun};
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
/// number of passes from growing with `n`.
fn populating(n: usize) -> usize {
    (n / 40).clamp(POPULATING, 256)
}

/// How often a waiting client asks whether its lease is ready.
const POLL: Duration = Duration::from_millis(2);
/// The lease selector: every simulated exporter matches it.
const SELECTOR: &str = "pool=bench";

/// The mixed-priority run: this many exporters (the first ones) also carry
/// [`CONTENDED_SELECTOR`], and [`MIXED_PER_CLASS`] leases of each priority class compete for
/// them at once, each holding its exporter for [`MIXED_HOLD`].
const CONTENDED: usize = 8;
const CONTENDED_SELECTOR: &str = "contended=yes";
const MIXED_PER_CLASS: usize = 24;
const MIXED_HOLD: Duration = Duration::from_secs(2);
/// Longest wait for one lease of the mixed run (six rounds of [`MIXED_HOLD`] plus slack).
const MIXED_LIMIT: Duration = Duration::from_secs(120);
/// How often a lease of the mixed run is polled (48 of them wait at once).
const MIXED_POLL: Duration = Duration::from_millis(100);
/// The policy of the mixed run: every client may use the bench pool at priority 0, clients
/// labelled `tier=high` at priority 10. Applied after the other measurements of a row.
const MIXED_POLICY: &str = "apiVersion: jumpstarter.dev/v1alpha1
kind: ExporterAccessPolicy
metadata:
  name: loadtest-mixed-priorities
spec:
  exporterSelector:
    matchLabels:
      pool: bench
  policies:
  - description: every client
    priority: 0
    from:
    - clientSelector: {}
  - description: high tier
    priority: 10
    from:
    - clientSelector:
        matchLabels:
          tier: high
";

/// Longest time to create one size's exporters, and again to bring them online, so that
/// the suite stays bounded: 4 minutes, 40 ms per exporter beyond 6,000.
fn populate_limit(n: usize) -> Duration {
    Duration::from_secs(240).max(Duration::from_millis(40) * u32::try_from(n).unwrap_or(u32::MAX))
}

/// Longest time spent on one-at-a-time leases per size (fewer samples when slow).
const SAMPLING_LIMIT: Duration = Duration::from_secs(30);

/// After this, the grant burst starts no more leases (the ones in flight complete): slow
/// sizes give a rate from fewer leases instead of stretching the suite.
const BURST_LIMIT: Duration = Duration::from_secs(30);

/// Longest wait for every exporter to show online before the idle window (counted from
/// when the last Status stream opened); the window is measured anyway afterwards, and
/// the note says how many were online.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);
/// How often the exporters' online state is listed while settling (at most once per idle
/// window, for the smoke preset's short one).
const SETTLE_POLL: Duration = Duration::from_secs(2);

/// Row name of the standalone service with `n` exporters.
pub(crate) fn row_name(n: usize) -> String {
    format!("{n} exporters")
}

/// Prefix of the rows measured on Kubernetes.
const KUBE_ROW: &str = "kube-apiserver";

/// Row name of `replicas` controllers on Kubernetes with `n` exporters.
pub(crate) fn kube_row_name(n: usize, replicas: usize) -> String {
    format!("{KUBE_ROW}, {}: {n} exporters", replicas_text(replicas))
}

/// Whether row `name` was measured on Kubernetes.
pub(crate) fn is_kube_row(name: &str) -> bool {
    name.starts_with(KUBE_ROW)
}

fn replicas_text(replicas: usize) -> String {
    if replicas == 1 {
        "1 replica".to_owned()
    } else {
        format!("{replicas} replicas")
    }
}

/// Column of the API server's writes per second at idle steady state.
pub(crate) const IDLE_WRITES: &str = "idle API writes/s";

/// The plot of Ready latency by exporter count.
const PLOT: &str = "ready";

/// Where and how the controller under test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `jumpstarter serve`, embedded store.
    Standalone,
    /// `replicas` × `jumpstarter-controller run` on the Kubernetes API server of the run
    /// (with leader election when more than one).
    Kube { replicas: usize },
}

impl Mode {
    fn row(self, n: usize) -> String {
        match self {
            Mode::Standalone => row_name(n),
            Mode::Kube { replicas } => kube_row_name(n, replicas),
        }
    }

    /// The line of the plot.
    fn line(self) -> String {
        match self {
            Mode::Standalone => "standalone".to_owned(),
            Mode::Kube { replicas } => format!("kube, {}", replicas_text(replicas)),
        }
    }
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
        "`jumpstarter serve` on a fresh data directory per size. Exporters are created \
         through the admin API ({} in flight at 1,000, up to 256 at 10,000), then behave \
         like 0.9.0's `jmp run`: Register (one device), ReportStatus(Available) once, and a \
         ControllerService.Status stream kept open (up to {} exporters share one HTTP/2 \
         connection, each call with its own token). Latency: {} leases one at a time (or \
         as many as fit in {}s), CreateLease (selector `{SELECTOR}`, every exporter \
         matches) then GetLease every {} ms until Ready=True, then DeleteLease. Grants/s: a \
         burst of leases created with {POPULATING} in flight (no new ones after {}s), timed \
         until all are Ready. Mixed priorities: then an ExporterAccessPolicy gives clients \
         labelled tier=high priority 10 and every other client 0, and {MIXED_PER_CLASS} \
         leases of each class (created alternately, all at once, {}s each) compete for the \
         {CONTENDED} exporters labelled `{CONTENDED_SELECTOR}`; the wait from CreateLease \
         to Ready=True, polled every {} ms, per class. RSS: the controller processes' \
         resident memory after the leases (summed over the replicas).",
        populating(1_000),
        crate::fleet::STREAMS_PER_CONNECTION,
        h.sizes.lease_samples,
        SAMPLING_LIMIT.as_secs(),
        POLL.as_millis(),
        BURST_LIMIT.as_secs(),
        MIXED_HOLD.as_secs(),
        MIXED_POLL.as_millis(),
    ));
    let mut runs: Vec<(Mode, usize)> = h
        .sizes
        .exporters
        .iter()
        .map(|&n| (Mode::Standalone, n))
        .collect();
    match &h.kube {
        Some(kube) => {
            s.note(format!(
                "Rows \"{KUBE_ROW}, …\": `jumpstarter-controller run` on a real kube-apiserver \
                 (kubeconfig {}; API server, etcd, controllers and load generator share this \
                 machine's CPUs), a fresh namespace per row; with several replicas, each runs \
                 with `--leader-elect` and its own identity and ports, and clients and \
                 exporters are spread over them round-robin. Exporters and clients are \
                 created through the Kubernetes API with the admin code `jmp admin` uses, \
                 the rest as above. {IDLE_WRITES}: once every exporter shows online in \
                 ListExporters (what `jmp get exporters` shows), a quiet {:.1}s and then {:.1}s in \
                 which the API server's own `apiserver_request_total` (its /metrics) counts \
                 POST, PUT, PATCH, APPLY, DELETE and DELETECOLLECTION requests, from anyone.",
                shown_path(&kube.target.kubeconfig),
                quiet(h).as_secs_f64(),
                h.sizes.idle_window.as_secs_f64(),
            ));
            for &n in &h.sizes.kube_exporters {
                for &replicas in &h.sizes.kube_replicas {
                    runs.push((Mode::Kube { replicas }, n));
                }
            }
        }
        None => s.note(
            "Not measured in this run: the controller on a real kube-apiserver (no --kubeconfig).",
        ),
    }
    let mut failed = None;
    // Ctrl-C (SIGINT) ends the scenario early: the row in progress is abandoned (its
    // processes killed, its namespace cleaned up), the rows measured so far are reported.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    for (mode, n) in runs {
        let name = mode.row(n);
        let outcome = tokio::select! {
            outcome = size(h, s, mode, n) => Some(outcome),
            _ = &mut interrupted => None,
        };
        let Some(outcome) = outcome else {
            step(format!("controller: interrupted during {name}"));
            if let (Mode::Kube { replicas }, Some(kube)) = (mode, &h.kube) {
                kube.target
                    .delete_namespace(&namespace_of(n, replicas))
                    .await;
            }
            s.note(format!(
                "Interrupted (SIGINT) during \"{name}\": it and the rows after it were not measured."
            ));
            return Err(failed.unwrap_or_else(|| anyhow::anyhow!("interrupted during {name}")));
        };
        match outcome {
            Ok(measured) => {
                step(format!("controller: {name}: {}", measured.summary()));
                s.point(
                    PLOT,
                    &format!("{} p50", mode.line()),
                    (n as f64, measured.p50_ms),
                );
                s.point(
                    PLOT,
                    &format!("{} p99", mode.line()),
                    (n as f64, measured.p99_ms),
                );
                s.row(measured.row);
            }
            Err(e) => {
                step(format!("controller: {name} failed: {e:#}"));
                s.note(format!("{name}: failed: {e:#}"));
                failed.get_or_insert(e.context(name));
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The pause between "every exporter online" and the idle window: a sixth of the window.
fn quiet(h: &Harness) -> Duration {
    h.sizes.idle_window / 6
}

/// One row's figures.
struct Measured {
    row: Row,
    p50_ms: f64,
    p99_ms: f64,
}

impl Measured {
    /// The row as one progress line.
    fn summary(&self) -> String {
        let cells: Vec<String> = self
            .row
            .values
            .iter()
            .map(|c| format!("{} {}", c.key, c.value))
            .collect();
        cells.join(", ")
    }
}

/// One row: starts its controllers (one `jumpstarter serve`, or the replicas on
/// Kubernetes in a fresh namespace), measures, stops them and cleans the namespace up.
async fn size(h: &Harness, s: &mut Scenario, mode: Mode, n: usize) -> anyhow::Result<Measured> {
    let row = mode.row(n);
    match mode {
        Mode::Standalone => {
            step(format!(
                "controller: {row}: starting the service, creating exporters"
            ));
            let mut service =
                Service::start(&h.standalone_bin, &h.work, &format!("controller-{n}")).await?;
            let mut controllers = vec![&mut service];
            let (measured, fleet) =
                populate_and_lease(h, s, &mut controllers, None, &row, n).await?;
            // The service first, so that it does not react to every stream closing.
            drop(service);
            drop(fleet);
            Ok(measured)
        }
        Mode::Kube { replicas } => {
            let kube = h
                .kube
                .as_ref()
                .context("no Kubernetes API server in this run")?;
            step(format!(
                "controller: {row}: starting {} on Kubernetes, creating exporters",
                replicas_text(replicas)
            ));
            let namespace = namespace_of(n, replicas);
            kube.target.create_namespace(&namespace).await?;
            let measured = async {
                let mut started = start_replicas(h, kube, &namespace, replicas).await?;
                let mut controllers: Vec<&mut Service> = started.iter_mut().collect();
                let (measured, fleet) =
                    populate_and_lease(h, s, &mut controllers, Some(kube), &row, n).await?;
                // The controllers first, so that they do not write for every stream
                // closing.
                drop(started);
                drop(fleet);
                anyhow::Ok(measured)
            }
            .await;
            kube.target.delete_namespace(&namespace).await;
            measured
        }
    }
}

/// The namespace of the Kubernetes row with `n` exporters and `replicas` replicas.
fn namespace_of(n: usize, replicas: usize) -> String {
    format!(
        "loadtest-{}-{n}-r{replicas}{}",
        std::process::id(),
        crate::repetition::name_suffix()
    )
}

/// Starts `replicas` controllers for `namespace` at once, like a Deployment's pods (the
/// first to start creates the shared keys, the others read them); with more than one,
/// each under leader election with an identity of its own.
async fn start_replicas(
    h: &Harness,
    kube: &KubeRun,
    namespace: &str,
    replicas: usize,
) -> anyhow::Result<Vec<Service>> {
    anyhow::ensure!(replicas >= 1, "--kube-replicas: at least 1 replica");
    let started: Vec<anyhow::Result<Service>> =
        futures::future::join_all((0..replicas).map(|r| async move {
            let identity = (replicas > 1).then(|| format!("replica-{r}"));
            Service::start_kube(
                &kube.controller_bin,
                &h.work,
                &kube.target,
                namespace,
                identity.as_deref(),
            )
            .await
        }))
        .await;
    started.into_iter().collect()
}

async fn populate_and_lease(
    h: &Harness,
    s: &mut Scenario,
    controllers: &mut [&mut Service],
    kube: Option<&KubeRun>,
    row: &str,
    n: usize,
) -> anyhow::Result<(Measured, Fleet)> {
    let replicas = controllers.len();
    // One client per replica, each talking to its own (round-robin).
    let mut clients: Vec<Identity> = Vec::with_capacity(replicas);
    for r in 0..replicas {
        clients.push(
            controllers[0]
                .create("clients", &format!("bench-{r}"), &[])
                .await?,
        );
    }
    let mut tiers = Vec::with_capacity(2);
    for tier in ["low", "high"] {
        tiers.push(
            controllers[0]
                .create("clients", &format!("mixed-{tier}"), &[("tier", tier)])
                .await?,
        );
    }
    let ca = controllers[0].ca_pem.clone();
    for c in controllers.iter_mut() {
        c.ca_pem.clone_from(&ca);
    }
    let controllers: Vec<&Service> = controllers.iter().map(|c| &**c).collect();
    let start = Instant::now();
    let names: Vec<String> = (0..n).map(|i| format!("board-{i:05}")).collect();
    let admin = controllers[0];
    let creating = futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| async move { create_exporter(admin, name, i < CONTENDED).await })
        .buffer_unordered(populating(n))
        .collect::<Vec<anyhow::Result<Identity>>>();
    let limit = populate_limit(n);
    let created = tokio::time::timeout(limit, creating)
        .await
        .with_context(|| {
            format!(
                "creating {n} exporters through the admin API took longer than {}s",
                limit.as_secs()
            )
        })?;
    let exporters = created.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let created_s = start.elapsed().as_secs_f64();

    step(format!("controller: {row}: bringing the exporters online"));
    let start = Instant::now();
    let fleet = Fleet::start(&controllers, &exporters, populating(n), limit).await?;
    let online_s = start.elapsed().as_secs_f64();
    let mut channels = Vec::with_capacity(replicas);
    for c in &controllers {
        channels.push(c.channel().await?);
    }
    let callers: Vec<(Channel, Identity)> = channels.into_iter().zip(clients).collect();

    let idle = match kube {
        Some(kube) => Some(idle_writes(h, kube, &callers[0], row, n).await?),
        None => None,
    };

    let passes_before = reconcile_passes(&controllers).await;
    let result = leases(h, &callers, row, n).await;
    let mixed = match &result {
        Ok(_) => Some(mixed_priorities(controllers[0], &callers[0].0, &tiers, row).await),
        Err(_) => None,
    };
    let passes_after = reconcile_passes(&controllers).await;
    let rss: Vec<Option<u64>> = controllers
        .iter()
        .map(|c| {
            c.pid()
                .and_then(|pid| crate::router_process::rss_of(pid).ok())
        })
        .collect();
    let (open, reopened, connections) = (fleet.open(), fleet.reopened(), fleet.connections);
    let (latency, grants) = result?;
    let [low, high] = mixed.context("no mixed-priority run")??;
    let summary = latency.summary();
    let (before, after) = (passes_before?, passes_after?);
    let passes = after.0 - before.0;
    let pass_ms = 1000.0 * (after.1 - before.1) / passes.max(1.0);
    let mib = |b: u64| b as f64 / 1_048_576.0;
    let rss_total: Option<u64> = rss.iter().copied().sum();
    let per_replica = if replicas > 1 {
        let each: Vec<String> = rss
            .iter()
            .map(|r| r.map_or_else(|| "?".to_owned(), |b| format!("{:.0}", mib(b))))
            .collect();
        format!(" ({} MiB per replica)", each.join(" + "))
    } else {
        String::new()
    };
    s.note(format!(
        "{row}: created in {created_s:.1} s, online (every Status stream open; \
         HTTP/2 connections: {connections}) in {online_s:.1} s; {open} streams still open after the \
         leases, {reopened} reopened; while leasing, {passes:.0} reconcile passes of \
         {pass_ms:.1} ms on average{}{per_replica}.{}",
        rss_total.map_or_else(String::new, |r| format!("; RSS {:.0} MiB", mib(r))),
        idle.as_ref()
            .map_or_else(String::new, |i| format!(" {}", i.note)),
    ));
    let mut row = Row::new(row)
        .num("exporters", n as f64)
        .num("replicas", replicas as f64)
        .num("Ready p50 ms", summary.p50_us / 1000.0)
        .num("Ready p99 ms", summary.p99_us / 1000.0)
        .num("grants/s", grants)
        .num("high-priority wait p50 ms", high.p50_us / 1000.0)
        .num("high-priority wait p99 ms", high.p99_us / 1000.0)
        .num("low-priority wait p50 ms", low.p50_us / 1000.0)
        .num("low-priority wait p99 ms", low.p99_us / 1000.0);
    if let Some(idle) = &idle {
        row = row.num(IDLE_WRITES, idle.per_second);
    }
    if let Some(total) = rss_total {
        row = row.num("RSS MiB", mib(total));
    }
    let measured = Measured {
        row: row.num("samples", summary.count as f64),
        p50_ms: summary.p50_us / 1000.0,
        p99_ms: summary.p99_us / 1000.0,
    };
    Ok((measured, fleet))
}

/// Reconcile passes and their seconds, summed over the replicas (only the leader runs
/// passes).
async fn reconcile_passes(controllers: &[&Service]) -> anyhow::Result<(f64, f64)> {
    let mut total = (0.0, 0.0);
    for c in controllers {
        let (passes, seconds) = c.reconcile_passes().await?;
        total = (total.0 + passes, total.1 + seconds);
    }
    Ok(total)
}

/// The API server's writes at idle steady state.
struct Idle {
    per_second: f64,
    note: String,
}

/// Waits until every exporter shows online (at most [`SETTLE_LIMIT`]), pauses
/// [`quiet`], then counts the API server's writes over the idle window.
async fn idle_writes(
    h: &Harness,
    kube: &KubeRun,
    (channel, client): &(Channel, Identity),
    row: &str,
    n: usize,
) -> anyhow::Result<Idle> {
    step(format!(
        "controller: {row}: waiting for every exporter to show online"
    ));
    let pages = n / 1000 + 2;
    let start = Instant::now();
    let mut online = 0;
    while start.elapsed() < SETTLE_LIMIT {
        online = service::online_exporters(channel, client, pages).await?.1;
        if online >= n {
            break;
        }
        tokio::time::sleep(SETTLE_POLL.min(h.sizes.idle_window)).await;
    }
    let settled_s = start.elapsed().as_secs_f64();
    tokio::time::sleep(quiet(h)).await;
    let window = h.sizes.idle_window;
    step(format!(
        "controller: {row}: counting API writes for {}s",
        window.as_secs_f64()
    ));
    let before = kube.target.writes().await?;
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let after = kube.target.writes().await?;
    let seconds = start.elapsed().as_secs_f64();
    let (total, by) = after.since(&before);
    let per_second = total / seconds;
    let top: Vec<String> = by
        .iter()
        .take(5)
        .map(|(what, count)| format!("{what} {:.2}/s", count / seconds))
        .collect();
    let online_text = if online >= n {
        format!("every exporter online after {settled_s:.0} s")
    } else {
        format!("only {online} of {n} exporters online after {settled_s:.0} s (measured anyway)")
    };
    Ok(Idle {
        per_second,
        note: format!(
            "Idle: {online_text}; {total:.0} API writes in {seconds:.1} s ({per_second:.2}/s){}.",
            if top.is_empty() {
                String::new()
            } else {
                format!(": {}", top.join(", "))
            }
        ),
    })
}

async fn create_exporter(
    service: &Service,
    name: &str,
    contended: bool,
) -> anyhow::Result<Identity> {
    let labels: &[(&str, &str)] = if contended {
        &[("pool", "bench"), ("contended", "yes")]
    } else {
        &[("pool", "bench")]
    };
    service
        .create_exporter(name, labels)
        .await
        .with_context(|| format!("creating exporter {name}"))
}

/// The mixed-priority run (see [`MIXED_POLICY`]): the waits of the low and the high class.
async fn mixed_priorities(
    admin: &Service,
    channel: &Channel,
    tiers: &[Identity],
    row: &str,
) -> anyhow::Result<[crate::latency::Summary; 2]> {
    step(format!(
        "controller: {row}: mixed priorities, {} leases on {CONTENDED} exporters",
        2 * MIXED_PER_CLASS
    ));
    admin
        .apply(MIXED_POLICY)
        .await
        .context("applying the mixed-priority policy")?;
    let waits: Vec<anyhow::Result<(usize, Duration)>> =
        futures::stream::iter(0..2 * MIXED_PER_CLASS)
            .map(|i| async move {
                let class = i % 2;
                let client = &tiers[class];
                let start = Instant::now();
                let lease =
                    service::create_lease_for(channel, client, CONTENDED_SELECTOR, MIXED_HOLD)
                        .await?;
                service::wait_ready(channel, client, &lease, MIXED_POLL, MIXED_LIMIT).await?;
                anyhow::Ok((class, start.elapsed()))
            })
            .buffer_unordered(2 * MIXED_PER_CLASS)
            .collect()
            .await;
    let mut samples = [Samples::new(), Samples::new()];
    for wait in waits {
        let (class, elapsed) = wait?;
        samples[class].record(elapsed);
    }
    Ok(samples.map(|s| s.summary()))
}

/// Latency samples and the grant rate; lease `i` is created, polled and released by
/// client `i % callers.len()` on its own replica.
async fn leases(
    h: &Harness,
    callers: &[(Channel, Identity)],
    row: &str,
    n: usize,
) -> anyhow::Result<(Samples, f64)> {
    let samples_wanted = h.sizes.lease_samples;
    step(format!(
        "controller: {row}: {samples_wanted} leases one at a time"
    ));
    let mut samples = Samples::new();
    let sampling_ends = Instant::now() + SAMPLING_LIMIT;
    for i in 0..samples_wanted {
        if Instant::now() > sampling_ends {
            break;
        }
        let (channel, client) = &callers[usize::try_from(i).unwrap_or(0) % callers.len()];
        let start = Instant::now();
        let lease = service::create_lease(channel, client, SELECTOR).await?;
        service::wait_ready(channel, client, &lease, POLL, Duration::from_secs(30)).await?;
        samples.record(start.elapsed());
        service::delete_lease(channel, client, &lease).await?;
    }
    let burst = h.sizes.grant_burst.min(n / 2).max(1);
    step(format!("controller: {row}: burst of {burst} leases"));
    // Let the releases settle so the burst finds free exporters.
    tokio::time::sleep(h.sizes.burst_pause).await;
    let start = Instant::now();
    let stop_starting = start + BURST_LIMIT;
    let granted: Vec<anyhow::Result<(usize, String)>> = futures::stream::iter(0..burst)
        .take_while(|_| std::future::ready(Instant::now() < stop_starting))
        .map(|i| async move {
            let (channel, client) = &callers[i % callers.len()];
            let lease = service::create_lease(channel, client, SELECTOR).await?;
            service::wait_ready(channel, client, &lease, POLL * 5, Duration::from_secs(120))
                .await?;
            anyhow::Ok((i, lease))
        })
        .buffer_unordered(POPULATING)
        .collect()
        .await;
    let elapsed = start.elapsed();
    let granted: Vec<(usize, String)> = granted.into_iter().collect::<anyhow::Result<_>>()?;
    let rate = granted.len() as f64 / elapsed.as_secs_f64();
    for (i, lease) in &granted {
        let (channel, client) = &callers[i % callers.len()];
        service::delete_lease(channel, client, lease).await?;
    }
    Ok((samples, rate))
}

/// How a report names a local file: relative to the working directory when under it,
/// otherwise by its file name only (a report is committed; machine paths stay out of it).
fn shown_path(path: &std::path::Path) -> String {
    let relative = std::env::current_dir().ok().and_then(|dir| {
        path.strip_prefix(dir)
            .ok()
            .map(std::path::Path::to_path_buf)
    });
    match relative {
        Some(relative) => relative.display().to_string(),
        None => path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod shown_path_tests {
    use super::shown_path;

    #[test]
    fn a_report_names_files_without_machine_paths() {
        let here = std::env::current_dir().expect("cwd");
        assert_eq!(
            shown_path(&here.join("target/k8s-testenv/admin.kubeconfig")),
            "target/k8s-testenv/admin.kubeconfig"
        );
        assert_eq!(
            shown_path(std::path::Path::new("/elsewhere/kte/admin.kubeconfig")),
            "admin.kubeconfig"
        );
    }
}
