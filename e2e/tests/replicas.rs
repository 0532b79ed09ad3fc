//! Three controller replicas on one namespace (active-active), driven by the real
//! jumpstarter 0.9.0 tools: every replica serves every call, whichever replica the client
//! and the exporter reach, and the lab survives the SIGKILL of the leader or of a replica
//! holding exporters' Listen streams.
//!
//! Replicas are processes of `jumpstarter-controller run --leader-elect` against the real
//! test kube-apiserver; a TCP balancer stands in for the Service in front of them.
//! Tests run one at a time (each starts Python processes that need the CPU).
#![allow(clippy::await_holding_lock)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jumpstarter_controller::crd::Lease;
use jumpstarter_e2e::lease::{exporter_of, is_ended, is_ready};
use jumpstarter_e2e::replicas::{
    Balancer, Replica, leader, point_config_at, replica_args, start_replica, wait_leader,
};
use jumpstarter_e2e::{Lab, Proc, RawClient, SESSION_SCRIPT, Signal, serial, venv, wait_output};
use jumpstarter_proto::jumpstarter::client::v1 as client_pb;
use jumpstarter_proto::jumpstarter::client::v1::client_service_client::ClientServiceClient;
use jumpstarter_proto::jumpstarter::v1::DialRequest;
use jumpstarter_proto::jumpstarter::v1::controller_service_client::ControllerServiceClient;
use jumpstarter_testenv::TestEnv;

const SHELL_TIMEOUT: Duration = Duration::from_secs(180);
const ONLINE_TIMEOUT: Duration = Duration::from_secs(90);
/// Leader election: a contender takes over 15 s after the holder's last renewal.
const LEADER_LEASE_DURATION: Duration = Duration::from_secs(15);

/// A lab whose own controller is replica `a` (the leader), plus replicas `b` and `c`.
struct Replicated {
    lab: Lab,
    b: Replica,
    c: Replica,
}

impl Replicated {
    async fn start(prefix: &str) -> Replicated {
        let lab = Lab::start_kubernetes_with(TestEnv::shared(), prefix, |lab| {
            replica_args(&format!("{}-a", lab.namespace), lab.grpc_port)
        })
        .await
        .expect("start lab with replica a");
        let a = format!("{}-a", lab.namespace);
        wait_leader(&lab, &a, Duration::from_secs(30))
            .await
            .expect("replica a leads");
        let b = start_replica(&lab, &format!("{}-b", lab.namespace))
            .await
            .expect("start replica b");
        let c = start_replica(&lab, &format!("{}-c", lab.namespace))
            .await
            .expect("start replica c");
        Replicated { lab, b, c }
    }

    fn a_identity(&self) -> String {
        format!("{}-a", self.lab.namespace)
    }

    fn logs(&self) -> String {
        let mut s = self.lab.logs();
        for r in [&self.b, &self.c] {
            let out = r.proc.output();
            let tail: Vec<&str> = out.lines().rev().take(40).collect();
            s.push_str(&format!("\n===== {} last lines:\n", r.proc.name));
            for l in tail.iter().rev() {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    /// Client `name`, configured to reach the replica at `endpoint`.
    async fn client_at(&self, name: &str, endpoint: &str, tag: &str) -> PathBuf {
        let config = self.lab.create_client(name).await.expect("create client");
        point_config_at(&config, endpoint, tag).expect("point client config")
    }

    /// Exporter `name` (`labels`), run by `jmp run` reaching the controller at `endpoint`.
    async fn exporter_at(&mut self, name: &str, labels: &[&str], endpoint: &str) {
        let config = self
            .lab
            .create_exporter_config(name, labels)
            .await
            .expect("exporter config");
        let config = point_config_at(&config, endpoint, "run").expect("point exporter config");
        self.lab.run_exporter(name, &config).expect("jmp run");
        self.lab
            .wait_exporter_condition(name, "Online", "True", ONLINE_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{name} online: {e}\n{}", self.logs()));
    }

    /// `jmp shell --client-config C <target> -- <cmd>`: its output, asserting success.
    async fn shell(&self, client: &Path, target: &[&str], cmd: &[&str]) -> String {
        let out = self.try_shell(client, target, cmd).await;
        assert!(
            out.0,
            "jmp shell {target:?} -- {cmd:?} failed: {}\n{}",
            out.1,
            self.logs()
        );
        out.1
    }

    async fn try_shell(&self, client: &Path, target: &[&str], cmd: &[&str]) -> (bool, String) {
        let client = client.to_string_lossy().into_owned();
        let mut args = vec!["shell", "--client-config", &client];
        args.extend_from_slice(target);
        args.push("--");
        args.extend_from_slice(cmd);
        let out = self
            .lab
            .jmp(&args, SHELL_TIMEOUT)
            .await
            .expect("run jmp shell");
        (out.ok(), format!("{}{}", out.stdout, out.stderr))
    }

    async fn create_lease(&self, client: &Path, target: &[&str], duration: &str) -> String {
        let client = client.to_string_lossy().into_owned();
        let mut args = vec!["create", "lease", "--client-config", &client];
        args.extend_from_slice(target);
        args.extend(["--duration", duration, "-o", "name"]);
        let out = self
            .lab
            .jmp(&args, Duration::from_secs(60))
            .await
            .expect("jmp create lease");
        assert!(out.ok(), "jmp create lease failed: {out}\n{}", self.logs());
        out.lease_name()
    }
}

/// Panics when two non-ended leases hold one exporter.
fn assert_exclusive(leases: &[Lease], context: &str) {
    let mut holders: BTreeMap<String, String> = BTreeMap::new();
    for lease in leases.iter().filter(|l| !is_ended(l)) {
        let Some(exporter) = exporter_of(lease).filter(|n| !n.is_empty()) else {
            continue;
        };
        let name = lease.metadata.name.clone().unwrap_or_default();
        if let Some(other) = holders.insert(exporter.clone(), name.clone()) {
            panic!("leases {other} and {name} both hold {exporter} ({context})");
        }
    }
}

fn python() -> String {
    venv().join("bin/python").to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_serves_sessions_exclusivity_and_expiry() {
    let _serial = serial();
    let mut r = Replicated::start("e2e-repl").await;
    let a = r.lab.grpc_endpoint();
    let (b, c) = (r.b.grpc_endpoint(), r.c.grpc_endpoint());
    // The exporter's Listen and Status streams are on replica a.
    r.exporter_at("board-1", &["board=mock"], &a).await;
    let c1 = r.client_at("c1", &b, "b").await;
    let c2 = r.client_at("c2", &c, "c").await;

    // A Dial on b reaches the Listen stream on a.
    let out = r
        .shell(&c1, &["-l", "board=mock"], &["j", "power", "on"])
        .await;
    // 0.9.0 may warn "stream copy interrupted (BrokenResourceError)" when a session
    // closes; that is not an error of the session.
    let failed = out
        .lines()
        .any(|line| line.contains("Error") && !line.contains("BrokenResourceError"));
    assert!(!failed, "{out}");
    // 64 MiB through the router, leased and dialled through c.
    let script = r.lab.path("echo.py");
    std::fs::write(&script, jumpstarter_e2e::ECHO_SCRIPT).expect("write echo script");
    let out = r
        .shell(
            &c2,
            &["-l", "board=mock"],
            &[&python(), &script.to_string_lossy()],
        )
        .await;
    assert!(out.contains("bytes 67108864"), "{out}");

    // Exclusivity across replicas: c1 (on b) holds the board for 20 s; c2 (on c) waits.
    let l1 = r.create_lease(&c1, &["-l", "board=mock"], "20s").await;
    let lease1 = r
        .lab
        .wait_lease(&l1, "Ready", Duration::from_secs(30), is_ready)
        .await;
    assert_eq!(exporter_of(&lease1).as_deref(), Some("board-1"));
    let raw2 = RawClient::from_config(&c2).await.expect("raw c2");
    let err = ControllerServiceClient::new(raw2.channel.clone())
        .dial(raw2.request(DialRequest {
            lease_name: l1.clone(),
        }))
        .await
        .expect_err("c2 must not dial c1's lease");
    assert!(err.message().contains("permission denied"), "{err:?}");
    let l2 = r.create_lease(&c2, &["-l", "board=mock"], "5m").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pending = r.lab.lease(&l2).await.expect("get l2");
    assert!(
        !is_ready(&pending) && exporter_of(&pending).is_none_or(|n| n.is_empty()),
        "l2 must wait while l1 holds the board: {:?}",
        pending.status
    );
    assert_exclusive(&r.lab.leases().await.expect("leases"), "while l1 holds");

    // Expiry: l1 ends by the clock, then l2 gets the board and c2 uses it through c.
    r.lab
        .wait_lease(&l1, "ended by expiry", Duration::from_secs(60), is_ended)
        .await;
    let lease2 = r
        .lab
        .wait_lease(&l2, "Ready", Duration::from_secs(30), is_ready)
        .await;
    assert_eq!(exporter_of(&lease2).as_deref(), Some("board-1"));
    r.shell(&c2, &["--lease", &l2], &["j", "power", "off"])
        .await;
    assert_exclusive(&r.lab.leases().await.expect("leases"), "after expiry");

    // GetLease and ListExporters answer the same on every replica.
    for endpoint in [&a, &b, &c] {
        let config = point_config_at(&c2, endpoint, "probe").expect("point");
        let raw = RawClient::from_config(&config).await.expect("raw client");
        let mut api = ClientServiceClient::new(raw.channel.clone());
        let lease = api
            .get_lease(raw.request(client_pb::GetLeaseRequest {
                name: format!("namespaces/{}/leases/{l2}", r.lab.namespace),
            }))
            .await
            .unwrap_or_else(|e| panic!("GetLease on {endpoint}: {e:?}"))
            .into_inner();
        assert_eq!(
            lease.exporter.as_deref(),
            Some(format!("namespaces/{}/exporters/board-1", r.lab.namespace).as_str()),
            "GetLease on {endpoint}"
        );
        let exporters = api
            .list_exporters(raw.request(client_pb::ListExportersRequest {
                parent: format!("namespaces/{}", r.lab.namespace),
                ..Default::default()
            }))
            .await
            .unwrap_or_else(|e| panic!("ListExporters on {endpoint}: {e:?}"))
            .into_inner();
        assert_eq!(exporters.exporters.len(), 1, "ListExporters on {endpoint}");
    }
}

/// Records every lease of the lab every 250 ms until stopped, asserting at each look that
/// no exporter is held twice; returns every lease name seen and the looks taken.
async fn watch_exclusivity(lab: &Lab, stop: &AtomicBool) -> (Vec<String>, usize) {
    let mut seen = std::collections::BTreeSet::new();
    let mut looks = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        if let Ok(leases) = lab.leases().await {
            assert_exclusive(&leases, &format!("look {looks}"));
            seen.extend(leases.iter().filter_map(|l| l.metadata.name.clone()));
            looks += 1;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    (seen.into_iter().collect(), looks)
}

/// Leases of `raw` on exporters labelled `selector`, one after another (create, wait for
/// Ready, delete) until `stop`; the names created. Each grant's instant goes into `granted`.
async fn lease_churn(
    raw: &RawClient,
    namespace: &str,
    selector: &str,
    stop: &AtomicBool,
    granted: &Mutex<Vec<Instant>>,
) -> Vec<String> {
    let mut api = ClientServiceClient::new(raw.channel.clone());
    let parent = format!("namespaces/{namespace}");
    let mut created = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let lease = client_pb::Lease {
            selector: selector.to_owned(),
            duration: Some(prost_types_duration(60)),
            ..Default::default()
        };
        let Ok(made) = api
            .create_lease(raw.request(client_pb::CreateLeaseRequest {
                parent: parent.clone(),
                lease: Some(lease),
                ..Default::default()
            }))
            .await
        else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let name = made.into_inner().name;
        created.push(name.rsplit('/').next().unwrap_or_default().to_owned());
        let ready_by = Instant::now() + Duration::from_secs(120);
        while Instant::now() < ready_by {
            let got = api
                .get_lease(raw.request(client_pb::GetLeaseRequest { name: name.clone() }))
                .await;
            if let Ok(got) = got
                && got.into_inner().exporter.is_some()
            {
                granted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Instant::now());
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = api
            .delete_lease(raw.request(client_pb::DeleteLeaseRequest { name }))
            .await;
    }
    created
}

fn prost_types_duration(seconds: i64) -> prost_types::Duration {
    prost_types::Duration { seconds, nanos: 0 }
}

/// A `jmp shell` running [`SESSION_SCRIPT`] for `seconds` in the background.
fn start_session(r: &Replicated, client: &Path, target: &[&str], seconds: u32, tag: &str) -> Proc {
    let script = r.lab.path("session.py");
    std::fs::write(&script, SESSION_SCRIPT).expect("write session script");
    let client = client.to_string_lossy().into_owned();
    let mut args = vec!["shell", "--client-config", &client];
    args.extend_from_slice(target);
    let python = python();
    let script = script.to_string_lossy().into_owned();
    let seconds = seconds.to_string();
    args.extend(["--", &python, &script, &seconds]);
    Proc::spawn(
        &format!("session {tag}"),
        r.lab.jmp_command(&args),
        r.lab.path(&format!("session-{tag}.log")),
    )
    .expect("start session")
}

/// Retries `jmp shell ... -- j power on` until it succeeds; the time it took.
async fn first_session_after(
    r: &Replicated,
    client: &Path,
    target: &[&str],
    bound: Duration,
) -> Duration {
    let started = Instant::now();
    let mut last = String::new();
    for _ in 0..20 {
        if started.elapsed() > bound {
            break;
        }
        let (ok, out) = r.try_shell(client, target, &["j", "power", "on"]).await;
        if ok {
            return started.elapsed();
        }
        last = out;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!(
        "no session succeeded within {bound:?} after the kill; last attempt:\n{last}\n{}",
        r.logs()
    );
}

async fn wait_exit_ok(proc: &mut Proc, timeout: Duration, context: &str) {
    match tokio::time::timeout(timeout, proc.child.wait()).await {
        Ok(Ok(status)) => assert!(
            status.success(),
            "{} failed ({status}):\n{}\n{context}",
            proc.name,
            proc.output()
        ),
        Ok(Err(e)) => panic!("wait for {}: {e}", proc.name),
        Err(_) => panic!(
            "{} still running after {timeout:?}:\n{}\n{context}",
            proc.name,
            proc.output()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_mid_load_loses_nothing() {
    let _serial = serial();
    let mut r = Replicated::start("e2e-repl-leader").await;
    let (a, b, c) = (
        r.lab.grpc_endpoint(),
        r.b.grpc_endpoint(),
        r.c.grpc_endpoint(),
    );
    // The exporters reach the replicas through the balancer: a (the leader) first.
    let balancer = Balancer::start(
        [&a, &b, &c]
            .iter()
            .map(|e| e.parse().expect("socket address"))
            .collect(),
    )
    .await
    .expect("balancer");
    r.exporter_at("board-1", &["board=mock", "unit=1"], &balancer.endpoint())
        .await;
    r.exporter_at("board-2", &["board=mock", "unit=2"], &balancer.endpoint())
        .await;
    let c1 = r.client_at("c1", &b, "b").await;
    let c2 = r.client_at("c2", &c, "c").await;

    // In progress when the leader dies: a session on board-1 (via b and the router) and
    // lease churn on board-2 (via c).
    let mut session = start_session(&r, &c1, &["-l", "unit=1"], 40, "during-kill");
    wait_output(
        &mut session,
        "streaming",
        Duration::from_secs(120),
        &r.logs(),
    )
    .await;
    let raw2 = RawClient::from_config(&c2).await.expect("raw c2");
    let stop = AtomicBool::new(false);
    let namespace = r.lab.namespace.clone();
    let lab = &r.lab;
    let granted = Mutex::new(Vec::new());
    let churn = lease_churn(&raw2, &namespace, "unit=2", &stop, &granted);
    let watch = watch_exclusivity(lab, &stop);
    let kill_and_check = async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before = lab.leases().await.expect("leases before the kill");
        assert_eq!(
            leader(lab).await.expect("leader").as_deref(),
            Some(r.a_identity().as_str())
        );
        lab.controller
            .as_ref()
            .expect("replica a")
            .signal(Signal::SIGKILL);
        let killed = Instant::now();
        // The churn goes on: its next grant comes from the new leader.
        let deadline = killed + Duration::from_secs(90);
        let resumed = loop {
            let first = granted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .copied()
                .find(|at| *at > killed);
            if let Some(at) = first {
                break Some(at - killed);
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // A few more grants under the new leader.
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop.store(true, Ordering::Relaxed);
        (before, killed, resumed)
    };
    let (created, (seen, looks), (before, killed, resumed)) =
        tokio::join!(churn, watch, kill_and_check);
    assert!(looks >= 20, "only {looks} looks at the leases");
    let resumed = resumed.unwrap_or_else(|| {
        panic!(
            "no lease was granted within 90 s of the leader's death\n{}",
            r.logs()
        )
    });
    println!("first grant {resumed:?} after the leader was killed");
    // The new leader takes over when the election Lease has gone unrenewed for its
    // duration (the last renewal was at most one renew interval before the kill), then
    // grants at its first pass; one retry interval and a pass of slack on a loaded machine.
    assert!(
        resumed <= LEADER_LEASE_DURATION + Duration::from_secs(15),
        "grants resumed only {resumed:?} after the leader was killed"
    );

    // The session that was streaming through the router went on to the end, intact.
    wait_exit_ok(&mut session, Duration::from_secs(120), &r.logs()).await;
    assert!(
        session.output().contains("intact messages"),
        "{}",
        session.output()
    );

    // No lease lost: every lease that existed or was created is still there.
    let after = r.lab.leases().await.expect("leases after");
    let names: std::collections::BTreeSet<String> = after
        .iter()
        .filter_map(|l| l.metadata.name.clone())
        .collect();
    for lease in before.iter().filter_map(|l| l.metadata.name.as_ref()) {
        assert!(names.contains(lease), "lease {lease} lost in the failover");
    }
    for lease in created.iter().chain(seen.iter()) {
        assert!(names.contains(lease), "lease {lease} lost in the failover");
    }
    assert!(created.len() >= 2, "churn created only {created:?}");
    assert_exclusive(&after, "after the failover");
    let new_leader = leader(&r.lab).await.expect("leader");
    assert!(
        new_leader.as_deref() == Some(r.b.identity.as_str())
            || new_leader.as_deref() == Some(r.c.identity.as_str()),
        "leader after the kill: {new_leader:?}"
    );

    // New sessions: board-2's exporter had its streams on a and reconnected (through the
    // balancer) to b.
    let took = first_session_after(&r, &c2, &["-l", "unit=2"], Duration::from_secs(90)).await;
    println!(
        "first new session {:?} after the kill ({:?} after the churn stopped)",
        killed.elapsed(),
        took
    );
    r.shell(&c1, &["-l", "unit=1"], &["j", "power", "on"]).await;
    drop(balancer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_holding_listen_streams_killed() {
    let _serial = serial();
    let mut r = Replicated::start("e2e-repl-listen").await;
    let a = r.lab.grpc_endpoint();
    let (b, c) = (r.b.grpc_endpoint(), r.c.grpc_endpoint());
    // The exporter's streams are on b (not the leader); c takes over when b dies.
    let balancer = Balancer::start(
        [&b, &c]
            .iter()
            .map(|e| e.parse().expect("socket address"))
            .collect(),
    )
    .await
    .expect("balancer");
    r.exporter_at("board-1", &["board=mock"], &balancer.endpoint())
        .await;
    let c1 = r.client_at("c1", &a, "a").await;
    r.shell(&c1, &["-l", "board=mock"], &["j", "power", "on"])
        .await;

    r.b.proc.signal(Signal::SIGKILL);
    let _ = tokio::time::timeout(Duration::from_secs(10), r.b.proc.child.wait()).await;
    let took = first_session_after(&r, &c1, &["-l", "board=mock"], Duration::from_secs(90)).await;
    println!("first session {took:?} after replica b was killed");
    r.lab
        .wait_exporter_condition("board-1", "Online", "True", Duration::from_secs(10))
        .await
        .expect("board-1 online after its replica died");
    drop(balancer);
}
