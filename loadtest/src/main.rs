//! `jumpstarter-loadtest`: the load test of the Jumpstarter data plane and controller.
//!
//! One subcommand per scenario (and `all`): synthetic clients and exporters drive a
//! `jumpstarter-router` process (QUIC with per-lease certificates through the `tunnel`
//! library, and h2 `RouterService.Stream` with router tokens, both minted here) and
//! `jumpstarter serve` (the controller, over its gRPC API), each scenario with its baseline
//! in the same run; with `--reference-router`, the h2 rows also run against the upstream Go
//! router. Every transfer is checked end to end. Progress goes to standard error;
//! the report (`results.json`, `report.md`, `*.svg`) to `--out`. Flags can be set through
//! `JUMPSTARTER_LOADTEST_*` environment variables (`LOADTEST_*` still work, deprecated).
//!
//! Map:
//! - [`lab`]: CA, certificates, router tokens; [`router_process`]: the router process and
//!   its memory; [`service`]: `jumpstarter serve`, its admin socket and gRPC calls;
//!   [`fleet`]: simulated exporters holding Status streams; [`kube`]: the Kubernetes API
//!   server of scenario 7 and its write counts;
//!   [`reference`]: the upstream Go router, its certificate and tokens.
//! - [`route`]: sessions through the router and on the baselines; [`swarm`]: many QUIC
//!   connections; [`pipe`]: one session end; [`impairment`]: the impaired network of
//!   scenario 8, made of [`netns`] (network namespaces, runtimes inside them) and
//!   [`delay_line`] (TUN devices joined with a delay), with nftables loss.
//! - [`payload`]: the integrity check; [`transfer`]: bulk transfers and round trips;
//!   [`latency`]: histograms.
//! - [`scenario`]: the nine scenarios; [`preset`]: their sizes; [`harness`]: what they
//!   share; [`targets`]: the targets.
//! - Output: [`repetition`] merges the runs of a scenario (`--repeat`), [`percentile`]
//!   leaves out tail percentiles too few samples support, [`environment`] says what the
//!   run was measured on, [`report`] writes JSON and Markdown, [`plot`] the SVG plots,
//!   [`readme_table`] the README's table from a written report; [`progress`]: progress
//!   lines.

mod affinity;
mod delay_line;
mod environment;
mod fleet;
mod harness;
mod impairment;
mod kube;
mod lab;
mod latency;
#[cfg(test)]
mod lease_storm;
mod netns;
mod payload;
mod percentile;
mod pipe;
mod plot;
mod preset;
mod progress;
mod readme_table;
mod reference;
mod repetition;
mod report;
mod route;
#[cfg(test)]
mod router_crash;
mod router_process;
mod scenario;
mod service;
mod swarm;
mod targets;
mod transfer;
#[cfg(test)]
mod workspace_binary;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use jumpstarter_shell::deprecation;
use jumpstarter_shell::env_alias::{self, EnvAlias};

use crate::harness::Harness;
use crate::preset::Sizes;
use crate::reference::ReferenceConfig;
use crate::report::{Integrity, Report, Scenario};

/// Load test of the Jumpstarter router (QUIC and h2) and controller.
#[derive(Debug, Parser)]
#[command(name = "jumpstarter-loadtest", version, arg_required_else_help = true)]
struct Cli {
    #[command(flatten)]
    options: Options,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Options {
    /// Tiny sizes: the whole suite runs in seconds (what CI runs).
    #[arg(long, env = "JUMPSTARTER_LOADTEST_SMOKE", global = true)]
    smoke: bool,
    /// Folder the report is written to (results.json, report.md, *.svg).
    #[arg(
        long,
        env = "JUMPSTARTER_LOADTEST_OUT",
        default_value = "loadtest/report",
        global = true
    )]
    out: PathBuf,
    /// The `jumpstarter-router` binary [default: next to this binary].
    #[arg(long, env = "JUMPSTARTER_LOADTEST_ROUTER_BIN", global = true)]
    router_bin: Option<PathBuf>,
    /// The `jumpstarter` (standalone) binary [default: next to this binary].
    #[arg(long, env = "JUMPSTARTER_LOADTEST_STANDALONE_BIN", global = true)]
    standalone_bin: Option<PathBuf>,
    /// Scratch folder for keys, state and logs, kept afterwards [default: a temporary
    /// folder, removed at the end].
    #[arg(long, env = "JUMPSTARTER_LOADTEST_WORK_DIR", global = true)]
    work_dir: Option<PathBuf>,
    /// Registered exporter counts of the controller scenario, comma-separated
    /// [default: 1000,5000; smoke: 10].
    #[arg(
        long,
        env = "JUMPSTARTER_LOADTEST_EXPORTERS",
        value_delimiter = ',',
        global = true
    )]
    exporters: Vec<usize>,
    /// Kubeconfig of a Kubernetes API server: the controller scenario also runs
    /// `jumpstarter-controller` against it, in a namespace of its own per size (it applies
    /// the jumpstarter CRDs and creates namespaces, so it needs those permissions).
    #[arg(long, env = "JUMPSTARTER_LOADTEST_KUBECONFIG", global = true)]
    kubeconfig: Option<PathBuf>,
    /// Registered exporter counts of the controller scenario on Kubernetes,
    /// comma-separated [default: 1000; smoke: 10]. Sizes of 10,000 take several minutes
    /// each.
    #[arg(
        long,
        env = "JUMPSTARTER_LOADTEST_KUBE_EXPORTERS",
        value_delimiter = ',',
        global = true
    )]
    kube_exporters: Vec<usize>,
    /// Controller replicas of the controller scenario on Kubernetes, comma-separated: each
    /// exporter count is measured with each replica count; with more than one, every
    /// replica runs with `--leader-elect` and clients and exporters are spread over them
    /// [default: 1].
    #[arg(
        long,
        env = "JUMPSTARTER_LOADTEST_KUBE_REPLICAS",
        value_delimiter = ',',
        value_parser = clap::value_parser!(u16).range(1..=16),
        global = true
    )]
    kube_replicas: Vec<u16>,
    /// How long the controller scenario on Kubernetes counts the API server's writes with
    /// every exporter online and idle, as a duration (`30s`) [default: 30s; smoke: 250ms].
    #[arg(
        long,
        env = "JUMPSTARTER_LOADTEST_IDLE_WINDOW",
        value_parser = jumpstarter_shell::duration_flag::parse,
        global = true
    )]
    idle_window: Option<std::time::Duration>,
    /// The `jumpstarter-controller` binary [default: next to this binary].
    #[arg(long, env = "JUMPSTARTER_LOADTEST_CONTROLLER_BIN", global = true)]
    controller_bin: Option<PathBuf>,
    /// The upstream Go router binary (`cmd/router` of jumpstarter-controller v0.7.1, as
    /// tools/reference-router.sh builds it): the h2 rows of scenarios 1–4 are repeated
    /// against it. It listens on TCP port 8083, which must be free.
    #[arg(
        long,
        env = "JUMPSTARTER_LOADTEST_REFERENCE_ROUTER",
        global = true,
        requires = "reference_kubeconfig"
    )]
    reference_router: Option<PathBuf>,
    /// Kubeconfig of the API server holding the Go router's ConfigMap
    /// `jumpstarter-controller` (entry `config` with `grpc.keepalive`).
    #[arg(long, env = "JUMPSTARTER_LOADTEST_REFERENCE_KUBECONFIG", global = true)]
    reference_kubeconfig: Option<PathBuf>,
    /// Namespace of that ConfigMap.
    #[arg(
        long,
        env = "JUMPSTARTER_LOADTEST_REFERENCE_NAMESPACE",
        default_value = "jumpstarter-loadtest",
        global = true
    )]
    reference_namespace: String,
    /// Why the Go router could not be prepared (said in the report instead of its rows).
    #[arg(long, global = true, conflicts_with = "reference_router")]
    reference_unavailable: Option<String>,
    /// Runs of every scenario: each figure of the report is their median, with the lowest
    /// and highest beside it [default: 3; smoke: 1].
    #[arg(
        long,
        env = "JUMPSTARTER_LOADTEST_REPEAT",
        value_parser = clap::value_parser!(u16).range(1..=100),
        global = true
    )]
    repeat: Option<u16>,
    #[command(flatten)]
    pin: affinity::PinArgs,
}

/// Runs of every scenario in the standard suite: the fewest that give a median and a
/// spread (the smoke preset runs once, to stay fast).
const DEFAULT_REPEAT: usize = 3;

/// The environment names of earlier releases, deprecated.
const ENV_ALIASES: &[EnvAlias] = &[
    EnvAlias::new("LOADTEST_SMOKE", "JUMPSTARTER_LOADTEST_SMOKE"),
    EnvAlias::new("LOADTEST_OUT", "JUMPSTARTER_LOADTEST_OUT"),
    EnvAlias::new("LOADTEST_ROUTER_BIN", "JUMPSTARTER_LOADTEST_ROUTER_BIN"),
    EnvAlias::new(
        "LOADTEST_STANDALONE_BIN",
        "JUMPSTARTER_LOADTEST_STANDALONE_BIN",
    ),
    EnvAlias::new("LOADTEST_WORK_DIR", "JUMPSTARTER_LOADTEST_WORK_DIR"),
    EnvAlias::new("LOADTEST_EXPORTERS", "JUMPSTARTER_LOADTEST_EXPORTERS"),
    EnvAlias::new("LOADTEST_KUBECONFIG", "JUMPSTARTER_LOADTEST_KUBECONFIG"),
    EnvAlias::new(
        "LOADTEST_KUBE_EXPORTERS",
        "JUMPSTARTER_LOADTEST_KUBE_EXPORTERS",
    ),
    EnvAlias::new(
        "LOADTEST_CONTROLLER_BIN",
        "JUMPSTARTER_LOADTEST_CONTROLLER_BIN",
    ),
    EnvAlias::new(
        "LOADTEST_REFERENCE_ROUTER",
        "JUMPSTARTER_LOADTEST_REFERENCE_ROUTER",
    ),
    EnvAlias::new(
        "LOADTEST_REFERENCE_KUBECONFIG",
        "JUMPSTARTER_LOADTEST_REFERENCE_KUBECONFIG",
    ),
    EnvAlias::new(
        "LOADTEST_REFERENCE_NAMESPACE",
        "JUMPSTARTER_LOADTEST_REFERENCE_NAMESPACE",
    ),
];

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
enum Command {
    /// 1: one session, bulk transfer, vs one direct quinn / TLS-over-TCP connection.
    Bulk,
    /// 2: aggregate throughput with 1, 10, 100 concurrent sessions.
    Throughput,
    /// 3: 64-byte round trips p50/p99/p999, unloaded and with the router saturated.
    Latency,
    /// 4: session setup: QUIC stream on a warm connection; h2 Dial → Listen → Streams.
    Setup,
    /// 5: idle connections and sessions one router holds, router memory per each.
    Idle,
    /// 6: router restart (SIGTERM, SIGKILL): time until 1,000 exporters are back.
    Restart,
    /// 7: controller: lease create → Ready latency and grants/s by exporter count.
    Controller,
    /// 8: throughput and round trips at 0/1/5 % loss with 50 ms RTT.
    Impairment,
    /// 9: QUIC congestion controllers vs TCP at 20/50/150 ms RTT and 0/1/5 % loss.
    Congestion,
    /// All nine scenarios, then the report.
    All,
    /// Prints the README's load-test table (the targets) from a written report, between
    /// the marker comments `tools/readme-table.sh` replaces; runs nothing.
    ReadmeTable(readme_table::ReadmeTableArgs),
}

fn main() -> ExitCode {
    let cli: Cli = env_alias::parse(ENV_ALIASES);
    deprecation::print_pending();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the scenarios and writes the report; true when every scenario completed and
/// every transfer arrived intact.
async fn run(cli: Cli) -> anyhow::Result<bool> {
    if let Command::ReadmeTable(args) = &cli.command {
        print!("{}", readme_table::from_file(&args.from)?);
        return Ok(true);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = cli.options;
    let mut sizes = if options.smoke {
        Sizes::smoke()
    } else {
        Sizes::standard()
    };
    if !options.exporters.is_empty() {
        sizes.exporters = options.exporters.clone();
    }
    if !options.kube_exporters.is_empty() {
        sizes.kube_exporters = options.kube_exporters.clone();
    }
    if !options.kube_replicas.is_empty() {
        sizes.kube_replicas = options
            .kube_replicas
            .iter()
            .map(|&r| usize::from(r))
            .collect();
    }
    if let Some(window) = options.idle_window {
        anyhow::ensure!(!window.is_zero(), "--idle-window must be longer than 0s");
        sizes.idle_window = window;
    }
    let (work, _temporary) = match &options.work_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let temporary = tempfile::Builder::new()
                .prefix("jumpstarter-loadtest-")
                .tempdir()
                .context("creating a scratch folder")?;
            (temporary.path().to_owned(), Some(temporary))
        }
    };
    std::fs::create_dir_all(&work)?;
    let router_bin = binary(options.router_bin.as_deref(), "jumpstarter-router")?;
    let standalone_bin = binary(options.standalone_bin.as_deref(), "jumpstarter")?;
    let started = Instant::now();
    progress::step(format!(
        "{} preset; router {}; scratch {}",
        sizes.name,
        router_bin.display(),
        work.display()
    ));
    let reference = match (&options.reference_router, &options.reference_kubeconfig) {
        (Some(binary), Some(kubeconfig)) => Some(ReferenceConfig {
            binary: binary.clone(),
            kubeconfig: kubeconfig.clone(),
            namespace: options.reference_namespace.clone(),
        }),
        _ => None,
    };
    let mut harness = Harness::start(
        sizes,
        work.clone(),
        router_bin,
        standalone_bin,
        reference.as_ref(),
        options.reference_unavailable.clone(),
    )
    .await?;
    harness.pinned = options.pin.pin;
    if let Some(kubeconfig) = &options.kubeconfig {
        let controller_bin = binary(options.controller_bin.as_deref(), "jumpstarter-controller")?;
        let target = kube::KubeTarget::connect(kubeconfig)
            .await
            .context("preparing the Kubernetes API server for the controller scenario")?;
        progress::step(format!("Kubernetes: {}", kubeconfig.display()));
        harness.kube = Some(harness::KubeRun {
            target,
            controller_bin,
        });
    }
    progress::step(format!("reference: {}", harness.reference.summary()));

    let all = cli.command == Command::All;
    let wanted = |c: Command| all || cli.command == c;
    let repeat = options
        .repeat
        .map_or(if options.smoke { 1 } else { DEFAULT_REPEAT }, usize::from);
    // Every run of every scenario, in scenario order; a scenario's runs follow each other.
    let mut runs: Vec<Vec<Scenario>> = Vec::new();
    for command in [
        Command::Bulk,
        Command::Throughput,
        Command::Latency,
        Command::Setup,
        Command::Idle,
        Command::Restart,
        Command::Controller,
        Command::Impairment,
        Command::Congestion,
    ] {
        if !wanted(command.clone()) {
            continue;
        }
        let mut scenario_runs = Vec::with_capacity(repeat);
        for run in 1..=repeat {
            repetition::set_current(run, repeat);
            // Scenarios keep state under the scratch folder by name (service data
            // directories, logs): each further run gets a folder of its own.
            harness.work = match run {
                1 => work.clone(),
                _ => work.join(format!("run-{run}")),
            };
            std::fs::create_dir_all(&harness.work)?;
            let s = run_scenario(&command, &harness).await;
            if let Some(error) = &s.error {
                progress::step(format!("{} failed: {error}", s.key));
            }
            scenario_runs.push(s);
        }
        repetition::set_current(1, 1);
        harness.work = work.clone();
        runs.push(scenario_runs);
    }

    // Each run as the report would show it, for the targets' spread over the runs.
    let run_targets: Vec<Vec<report::Target>> = (0..repeat)
        .map(|k| {
            let scenarios: Vec<Scenario> = runs
                .iter()
                .filter_map(|r| r.get(k))
                .filter(|s| s.error.is_none())
                .cloned()
                .map(|mut s| {
                    percentile::apply(&mut s);
                    s
                })
                .collect();
            targets::check(&scenarios)
        })
        .collect();
    let scenarios: Vec<Scenario> = runs
        .into_iter()
        .map(|r| {
            let mut s = repetition::merge(r);
            percentile::apply(&mut s);
            plot::lines_from_rows(&mut s);
            s
        })
        .collect();
    let mut targets = targets::check(&scenarios);
    if repeat > 1 {
        for (i, t) in targets.iter_mut().enumerate() {
            let measured: Vec<f64> = run_targets
                .iter()
                .filter_map(|run| run.get(i)?.measured)
                .collect();
            t.min = measured.iter().copied().reduce(f64::min);
            t.max = measured.iter().copied().reduce(f64::max);
        }
    }

    let (checked, failed) = payload::integrity_counts();
    let environment = environment::Environment::collect(&environment::RunFacts {
        go_router: harness
            .fabric
            .has_reference()
            .then_some(options.reference_router.as_deref())
            .flatten(),
        pinned: harness.pinned,
    });
    let report = Report {
        generated: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        preset: harness.sizes.name.to_owned(),
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        seconds: started.elapsed().as_secs_f64(),
        repeat,
        environment,
        integrity: Integrity { checked, failed },
        reference: harness.reference.summary(),
        targets,
        scenarios,
    };
    report.write(&options.out)?;
    let series: Vec<_> = report
        .scenarios
        .iter()
        .flat_map(|s| s.series.iter().cloned())
        .collect();
    let plots = plot::write_all(&options.out, &series)?;
    progress::step(format!(
        "report written to {} (report.md, results.json, {})",
        options.out.display(),
        plots.join(", ")
    ));
    for t in &report.targets {
        progress::step(format!("target: {} → {}", t.target, t.verdict));
    }
    Ok(failed == 0 && report.scenarios.iter().all(|s| s.error.is_none()))
}

/// One run of the scenario `command` names.
async fn run_scenario(command: &Command, harness: &Harness) -> Scenario {
    match command {
        Command::Bulk => scenario::bulk::run(harness).await,
        Command::Throughput => scenario::throughput::run(harness).await,
        Command::Latency => scenario::latency::run(harness).await,
        Command::Setup => scenario::setup::run(harness).await,
        Command::Idle => scenario::idle::run(harness).await,
        Command::Restart => scenario::restart::run(harness).await,
        Command::Controller => scenario::controller::run(harness).await,
        Command::Impairment => scenario::impairment::run(harness).await,
        Command::Congestion => scenario::congestion::run(harness).await,
        // Invariant: the caller passes the nine scenario commands only.
        Command::All | Command::ReadmeTable(_) => {
            unreachable!("{command:?} is not a scenario")
        }
    }
}

/// `given`, or `name` next to this executable.
fn binary(given: Option<&Path>, name: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_owned());
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    let path = exe
        .parent()
        .context("this executable has no folder")?
        .join(name);
    anyhow::ensure!(
        path.exists(),
        "{} not found: build it (cargo build -p {}) or pass its path",
        path.display(),
        if name == "jumpstarter" {
            "jumpstarter-standalone"
        } else {
            "jumpstarter-router"
        }
    );
    Ok(path)
}
