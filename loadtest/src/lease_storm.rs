//! Fault test: a seeded random storm on `jumpstarter serve`. Clients create leases (on
//! any exporter of the pool or on one named board), release some and let others expire;
//! simulated exporters restart (gracefully, reporting Offline first, or abruptly); the
//! service itself is restarted (SIGKILL or SIGTERM) on the same data directory. An
//! observer lists every lease several times a second and checks each snapshot:
//!
//! - never two active (`Ready=True`, not ended) leases on one exporter;
//! - an active lease names its exporter; a lease never moves to another exporter; an
//!   ended lease never comes back;
//!
//! and at the end, after a bounded drain: every created lease is still there (nothing
//! acknowledged was lost), all ended, and each one was Ready at some point unless the
//! test released it while it waited (every selector matches an exporter, so every lease
//! is satisfiable). The seed is printed; `JUMPSTARTER_STORM_SEED` replays a run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jumpstarter_controller::crd::Lease;
use jumpstarter_proto::jumpstarter::v1 as pb;
use jumpstarter_proto::jumpstarter::v1::controller_service_client::ControllerServiceClient;
use tokio::sync::Notify;
use tonic::transport::Channel;

use crate::service::{self, Identity, Service};

/// Simulated exporters, each with `pool=storm` and its own `board=e<k>`.
const EXPORTERS: usize = 4;
/// Clients creating leases.
const CLIENTS: usize = 3;
/// How long the storm blows.
const STORM: Duration = Duration::from_secs(50);
/// Service restarts during the storm (at seeded random times).
const SERVICE_RESTARTS: usize = 3;
/// Leases not yet ended, at most, before the storm creates more: the pool of four
/// exporters drains that many short leases in seconds.
const OUTSTANDING: usize = 10;
/// After the storm: how long the remaining leases may take to be served and end (the
/// longest lease is 20 s, at most [`OUTSTANDING`] wait for four exporters).
const DRAIN: Duration = Duration::from_secs(75);
/// How often the observer lists the leases.
const OBSERVE_EVERY: Duration = Duration::from_millis(150);
/// How often a simulated exporter reports its status (0.9.0 exporters keep a Status
/// stream open and report on every change; the controller calls an exporter silent for a
/// minute offline).
const HEARTBEAT: Duration = Duration::from_secs(3);
/// Longest wait for one gRPC call of the storm (a call to a restarting service fails).
const CALL_LIMIT: Duration = Duration::from_secs(5);

/// splitmix64: a small seeded generator, so a run can be replayed from its seed.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = u64::try_from((high - low).as_millis()).unwrap_or(0);
        low + Duration::from_millis(self.below(span + 1))
    }
}

fn seed() -> u64 {
    std::env::var("JUMPSTARTER_STORM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// What the observer learned about one lease over all snapshots.
#[derive(Debug, Default)]
struct Seen {
    ever_ready: bool,
    ended: bool,
    exporter: Option<String>,
    begun: bool,
}

/// Every observation and every broken invariant.
#[derive(Debug, Default)]
struct Ledger {
    snapshots: u64,
    failed_polls: u64,
    leases: BTreeMap<String, Seen>,
    violations: Vec<String>,
    most_active: usize,
    /// Leases not ended in the latest snapshot.
    not_ended: usize,
}

fn condition_true(lease: &Lease, kind: &str) -> bool {
    lease
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind && c.status == "True"))
}

impl Ledger {
    /// Checks one snapshot (one list call: a consistent view of the store).
    fn observe(&mut self, leases: &[Lease], at: Duration) {
        self.snapshots += 1;
        let mut active: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut not_ended = 0;
        for lease in leases {
            let name = lease.metadata.name.clone().unwrap_or_default();
            let status = lease.status.clone().unwrap_or_default();
            let ready = condition_true(lease, "Ready");
            let exporter = status.exporter_ref.as_ref().map(|r| r.name.clone());
            if !status.ended {
                not_ended += 1;
            }
            let mut violation = |what: String| {
                self.violations.push(format!(
                    "at {:.2} s, lease {name}: {what}",
                    at.as_secs_f64()
                ))
            };
            if ready && !status.ended {
                match &exporter {
                    Some(e) => active.entry(e.clone()).or_default().push(name.clone()),
                    None => violation("Ready without an exporter".to_owned()),
                }
            }
            let seen = self.leases.entry(name.clone()).or_default();
            if seen.ended && !status.ended {
                violation("ended, then not ended again".to_owned());
            }
            if let (Some(before), Some(now)) = (&seen.exporter, &exporter)
                && before != now
            {
                violation(format!("moved from exporter {before} to {now}"));
            }
            seen.ever_ready |= ready;
            seen.ended |= status.ended;
            seen.begun |= status.begin_time.is_some();
            if exporter.is_some() {
                seen.exporter = exporter;
            }
        }
        for (exporter, names) in &active {
            if names.len() > 1 {
                self.violations.push(format!(
                    "at {:.2} s, exporter {exporter} has {} active leases: {names:?}",
                    at.as_secs_f64(),
                    names.len()
                ));
            }
        }
        self.most_active = self.most_active.max(active.values().map(Vec::len).sum());
        self.not_ended = not_ended;
    }
}

/// A lease the storm created.
#[derive(Debug)]
struct Created {
    client: usize,
    /// `namespaces/<ns>/leases/<name>`, as the client API names it.
    full_name: String,
    /// Created to be released (else left to expire).
    to_release: bool,
    released: bool,
}

/// A simulated 0.9.0 exporter: registers, reports Available, holds its Status stream open
/// and reports again every [`HEARTBEAT`]; starts over when the stream breaks (a service
/// restart) or when told to restart (after reporting Offline when `graceful` is set).
async fn exporter(
    channel: Channel,
    who: Identity,
    restart: Arc<Notify>,
    graceful: Arc<AtomicBool>,
    starts: Arc<AtomicU64>,
) {
    let available = pb::ExporterStatus::Available;
    loop {
        let online =
            tokio::time::timeout(CALL_LIMIT, service::bring_online(&channel, &who, available))
                .await;
        let Ok(Ok(())) = online else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Ok(request) = service::authed(&who, pb::StatusRequest {}) else {
            return;
        };
        let opened = tokio::time::timeout(
            CALL_LIMIT,
            ControllerServiceClient::new(channel.clone()).status(request),
        )
        .await;
        let Ok(Ok(response)) = opened else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        starts.fetch_add(1, Ordering::Relaxed);
        let mut stream = response.into_inner();
        let mut beat = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                _ = beat.tick() => {
                    let _ = tokio::time::timeout(
                        CALL_LIMIT,
                        service::report_status(&channel, &who, available),
                    )
                    .await;
                }
                () = restart.notified() => {
                    if graceful.load(Ordering::Relaxed) {
                        let _ = tokio::time::timeout(
                            CALL_LIMIT,
                            service::report_status(&channel, &who, pb::ExporterStatus::Offline),
                        )
                        .await;
                    }
                    break;
                }
                message = stream.next() => {
                    if !matches!(message, Some(Ok(_))) {
                        break;
                    }
                }
            }
        }
        drop(stream);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Lists the leases every [`OBSERVE_EVERY`] into the ledger until `stop`.
async fn observer(
    socket: PathBuf,
    ledger: Arc<Mutex<Ledger>>,
    start: Instant,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let listed = service::list_leases(&socket).await;
        if let Ok(mut ledger) = ledger.lock() {
            match listed {
                Ok(leases) => ledger.observe(&leases, start.elapsed()),
                // The service is restarting.
                Err(_) => ledger.failed_polls += 1,
            }
        }
        tokio::time::sleep(OBSERVE_EVERY).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_storm_with_restarts_keeps_every_invariant() {
    let seed = seed();
    println!("storm seed {seed} (replay with JUMPSTARTER_STORM_SEED={seed})");
    let mut rng = Rng(seed);
    let work = tempfile::tempdir().expect("work dir");
    let binary = crate::workspace_binary::path("jumpstarter", "jumpstarter-standalone")
        .expect("the jumpstarter binary");
    let mut service = Service::start(&binary, work.path(), "storm")
        .await
        .expect("start jumpstarter serve");
    let log = work.path().join("storm.log");
    let log_tail = move || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let client = service
            .create("clients", &format!("storm-c{i}"), &[])
            .await
            .expect("create a client");
        clients.push(client);
    }
    let channel = service.channel().await.expect("a channel to the service");
    let socket = service.admin_socket().expect("the admin socket").to_owned();

    let starts = Arc::new(AtomicU64::new(0));
    let mut exporters = Vec::new();
    let mut tasks = Vec::new();
    for k in 0..EXPORTERS {
        let board = format!("e{k}");
        let who = service
            .create_exporter(
                &format!("storm-e{k}"),
                &[("pool", "storm"), ("board", board.as_str())],
            )
            .await
            .expect("create an exporter");
        let restart = Arc::new(Notify::new());
        let graceful = Arc::new(AtomicBool::new(false));
        tasks.push(tokio::spawn(exporter(
            channel.clone(),
            who,
            restart.clone(),
            graceful.clone(),
            starts.clone(),
        )));
        exporters.push((restart, graceful));
    }

    let start = Instant::now();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop_observer = Arc::new(AtomicBool::new(false));
    let observing = tokio::spawn(observer(
        socket,
        ledger.clone(),
        start,
        stop_observer.clone(),
    ));
    let mut restart_at: Vec<Duration> = (0..SERVICE_RESTARTS)
        .map(|_| rng.between(Duration::from_secs(5), STORM - Duration::from_secs(10)))
        .collect();
    restart_at.sort();
    let (mut kills, mut terms, mut exporter_restarts) = (0, 0, 0);
    let (mut failed_creates, mut failed_releases) = (0, 0);
    let mut created: BTreeMap<String, Created> = BTreeMap::new();

    while start.elapsed() < STORM {
        if restart_at.first().is_some_and(|&t| start.elapsed() >= t) {
            restart_at.remove(0);
            let kill = rng.percent(50);
            service
                .restart(kill)
                .await
                .unwrap_or_else(|e| panic!("restarting the service: {e:#}\n{}", log_tail()));
            if kill {
                kills += 1;
            } else {
                terms += 1;
            }
            continue;
        }
        let not_ended = ledger.lock().map(|l| l.not_ended).unwrap_or(0);
        match rng.below(100) {
            0..55 if not_ended < OUTSTANDING => {
                let client = rng.below(CLIENTS as u64) as usize;
                let selector = if rng.percent(60) {
                    "pool=storm".to_owned()
                } else {
                    format!("board=e{}", rng.below(EXPORTERS as u64))
                };
                let to_release = rng.percent(50);
                let duration = if to_release {
                    rng.between(Duration::from_secs(8), Duration::from_secs(20))
                } else {
                    rng.between(Duration::from_secs(2), Duration::from_secs(5))
                };
                let call =
                    service::create_lease_for(&channel, &clients[client], &selector, duration);
                match tokio::time::timeout(CALL_LIMIT, call).await {
                    Ok(Ok(full)) => {
                        created.insert(
                            service::short_name(&full).to_owned(),
                            Created {
                                client,
                                full_name: full.clone(),
                                to_release,
                                released: false,
                            },
                        );
                    }
                    _ => failed_creates += 1,
                }
            }
            55..85 => {
                let candidates: Vec<String> = created
                    .iter()
                    .filter(|(_, c)| c.to_release && !c.released)
                    .map(|(n, _)| n.clone())
                    .collect();
                if !candidates.is_empty() {
                    let name = &candidates[rng.below(candidates.len() as u64) as usize];
                    let record = created.get_mut(name).expect("a candidate exists");
                    let call =
                        service::delete_lease(&channel, &clients[record.client], &record.full_name);
                    match tokio::time::timeout(CALL_LIMIT, call).await {
                        Ok(Ok(())) => record.released = true,
                        _ => failed_releases += 1,
                    }
                }
            }
            85.. => {
                let (restart, graceful) = &exporters[rng.below(EXPORTERS as u64) as usize];
                graceful.store(rng.percent(50), Ordering::Relaxed);
                restart.notify_one();
                exporter_restarts += 1;
            }
            _ => {}
        }
        tokio::time::sleep(rng.between(Duration::from_millis(80), Duration::from_millis(300)))
            .await;
    }

    // The storm is over: release what was meant to be released; the rest must be served
    // and expire.
    let storm_end = start.elapsed();
    for record in created.values_mut().filter(|c| c.to_release && !c.released) {
        let call = service::delete_lease(&channel, &clients[record.client], &record.full_name);
        match tokio::time::timeout(CALL_LIMIT, call).await {
            Ok(Ok(())) => record.released = true,
            // An ended (expired) lease may refuse; the drain shows what is left.
            _ => failed_releases += 1,
        }
    }
    let drained_by = Instant::now() + DRAIN;
    let mut final_leases = Vec::new();
    loop {
        let listed = service::list_leases(service.admin_socket().expect("socket")).await;
        if let Ok(leases) = listed {
            let pending = leases
                .iter()
                .filter(|l| !l.status.as_ref().is_some_and(|s| s.ended))
                .count();
            final_leases = leases;
            if pending == 0 {
                break;
            }
        }
        if Instant::now() > drained_by {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drain = start.elapsed() - storm_end;
    stop_observer.store(true, Ordering::Relaxed);
    let _ = observing.await;
    for task in &tasks {
        task.abort();
    }

    let mut ledger = std::mem::take(&mut *ledger.lock().expect("ledger"));
    ledger.observe(&final_leases, start.elapsed());
    let listed: BTreeSet<&str> = final_leases
        .iter()
        .filter_map(|l| l.metadata.name.as_deref())
        .collect();
    let mut problems = ledger.violations.clone();
    for name in created.keys() {
        if !listed.contains(name.as_str()) {
            problems.push(format!(
                "lease {name} was created (acknowledged) but is gone"
            ));
        }
    }
    let mut expired_or_released_after_ready = 0;
    let mut released_waiting = 0;
    for (name, seen) in &ledger.leases {
        let released = created.get(name).is_some_and(|c| c.released);
        if !seen.ended {
            problems.push(format!(
                "lease {name} had not ended {DRAIN:?} after the storm (ever Ready: {})",
                seen.ever_ready
            ));
        } else if seen.ever_ready || seen.begun {
            expired_or_released_after_ready += 1;
        } else if released {
            released_waiting += 1;
        } else {
            problems.push(format!(
                "lease {name} ended without ever being Ready, and nobody released it"
            ));
        }
    }
    let released = created.values().filter(|c| c.released).count();
    println!(
        "figure: storm seed {seed}: {} s storm + {:.1} s drain; {} leases created ({released} released by clients, the rest left to expire), {expired_or_released_after_ready} served, {released_waiting} released while waiting; service restarts: {kills} SIGKILL, {terms} SIGTERM; {exporter_restarts} exporter restarts ({} exporter starts in all); {} snapshots checked ({} polls failed while the service restarted), at most {} leases active at once; {failed_creates} creations and {failed_releases} releases refused or failed; {} invariant violations",
        STORM.as_secs(),
        drain.as_secs_f64(),
        created.len(),
        starts.load(Ordering::Relaxed),
        ledger.snapshots,
        ledger.failed_polls,
        ledger.most_active,
        problems.len(),
    );
    assert!(
        ledger.snapshots > 100,
        "too few snapshots ({}) to check anything",
        ledger.snapshots
    );
    assert!(
        problems.is_empty(),
        "storm seed {seed}: {} problems:\n{}\n--- service log:\n{}",
        problems.len(),
        problems.join("\n"),
        log_tail()
    );
}

/// The checker itself: each invariant it claims to check is caught when broken.
#[test]
fn the_ledger_catches_every_broken_invariant() {
    let lease = |name: &str, exporter: Option<&str>, ready: bool, ended: bool| -> Lease {
        let mut status = serde_json::json!({
            "ended": ended,
            "conditions": [{
                "type": "Ready",
                "status": if ready { "True" } else { "False" },
                "reason": "Test",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }],
        });
        if let Some(e) = exporter {
            status["exporterRef"] = serde_json::json!({ "name": e });
            status["beginTime"] = serde_json::json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "jumpstarter.dev/v1alpha1",
            "kind": "Lease",
            "metadata": { "name": name, "namespace": "default" },
            "spec": { "clientRef": { "name": "c" }, "selector": {} },
            "status": status,
        }))
        .expect("a lease")
    };
    let at = Duration::ZERO;

    let mut fine = Ledger::default();
    fine.observe(
        &[
            lease("a", Some("e0"), true, false),
            lease("b", Some("e0"), false, true),
            lease("c", Some("e1"), true, false),
            lease("d", None, false, false),
        ],
        at,
    );
    assert!(fine.violations.is_empty(), "{:?}", fine.violations);
    assert_eq!((fine.most_active, fine.not_ended), (2, 3));

    let mut double = Ledger::default();
    double.observe(
        &[
            lease("a", Some("e0"), true, false),
            lease("b", Some("e0"), true, false),
        ],
        at,
    );
    assert!(
        double.violations[0].contains("2 active leases"),
        "{:?}",
        double.violations
    );

    let mut orphan = Ledger::default();
    orphan.observe(&[lease("a", None, true, false)], at);
    assert!(orphan.violations[0].contains("without an exporter"));

    let mut moved = Ledger::default();
    moved.observe(&[lease("a", Some("e0"), true, false)], at);
    moved.observe(&[lease("a", Some("e1"), true, false)], at);
    assert!(moved.violations[0].contains("moved"));

    let mut revived = Ledger::default();
    revived.observe(&[lease("a", Some("e0"), false, true)], at);
    revived.observe(&[lease("a", Some("e0"), true, false)], at);
    assert!(revived.violations[0].contains("not ended again"));
}
