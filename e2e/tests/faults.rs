//! Fault tests: the service's real binaries and the real jumpstarter 0.9.0 tools under
//! faults a lab meets in the field, each bounded in time and printing its figures.
//!
//! - [`exporter_cut_off_goes_offline_and_back`]: the exporter's network cable is pulled
//!   (nftables drops every packet of its namespace's veth: no FIN, no RST), then plugged
//!   back in.
//! - [`api_server_down_for_a_minute`]: the kube-apiserver of a private control plane is
//!   stopped for 60 s while a session streams through the router and leases wait and
//!   expire.
//!
//! The router crash and the lease storm are fault tests of the load test crate, built
//! from its session and service parts (`loadtest/src/router_crash.rs`,
//! `loadtest/src/lease_storm.rs`).
//!
//! Tests run one at a time (each starts Python processes that need the CPU).
#![allow(clippy::await_holding_lock)]

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use jumpstarter_e2e::control_plane::PrivateControlPlane;
use jumpstarter_e2e::lease::{exporter_of, is_ended, is_ready};
use jumpstarter_e2e::netns::Netns;
use jumpstarter_e2e::{Lab, Proc, SESSION_SCRIPT, serial, venv, wait_output};

/// How long a started exporter may take to come online (a cold Python start on a busy
/// machine).
const ONLINE_TIMEOUT: Duration = Duration::from_secs(90);

/// The bound: an exporter cut off without a FIN is Offline within two minutes.
const OFFLINE_BOUND: Duration = Duration::from_secs(120);

/// After the cable is back: the 0.9.0 exporter pings its connection every 20 s and
/// reconnects with backoff; two minutes covers a ping, the reset it provokes and a
/// reconnect of the exporter's child process.
const BACK_ONLINE_BOUND: Duration = Duration::from_secs(120);

/// How long a lease created while the exporter is offline is watched for a (wrong)
/// assignment.
const UNASSIGNED_WATCH: Duration = Duration::from_secs(8);

/// A lease's state as the tests read it.
/// `jmp create lease --client-config C <target> --duration D -o name`; the lease's name.
async fn create_lease(lab: &Lab, client: &Path, target: &[&str], duration: &str) -> String {
    let client = client.to_string_lossy().into_owned();
    let mut args = vec!["create", "lease", "--client-config", &client];
    args.extend_from_slice(target);
    args.extend(["--duration", duration, "-o", "name"]);
    let out = lab
        .jmp(&args, Duration::from_secs(60))
        .await
        .expect("jmp create lease");
    assert!(out.ok(), "jmp create lease failed: {out}\n{}", lab.logs());
    out.lease_name()
}

/// The exporter cut off without a FIN: `jmp run` in its own network namespace reaches
/// `jumpstarter serve` over a veth; nftables then drops every packet of that veth in both
/// directions. The exporter must go Offline within two minutes, a lease created meanwhile
/// must not be given to it, and once the rule is gone the exporter must come back Online
/// and get that lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_cut_off_goes_offline_and_back() {
    let _serial = serial();
    // Field order of the drop: processes (in the lab) end before their namespace goes.
    let netns = Netns::create_open("cut").expect("the exporter's namespace");
    let mut lab = Lab::start_standalone_on("fault-cut", IpAddr::V4(netns.host_addr()), &[])
        .await
        .expect("start the service");
    let config = lab
        .create_exporter_config("board-1", &["board=mock"])
        .await
        .expect("exporter config");
    let jmp = venv().join("bin/jmp");
    let jmp = jmp.to_string_lossy();
    let config_arg = config.to_string_lossy();
    let args = netns.exec_args(&jmp, &["run", "--exporter-config", &config_arg]);
    let exporter = Proc::spawn(
        "exporter board-1 (in its namespace)",
        lab.tool_command("ip", &args),
        lab.path("exporter-board-1.log"),
    )
    .expect("spawn jmp run");
    lab.exporters.insert("board-1".to_owned(), exporter);
    lab.wait_exporter_condition("board-1", "Online", "True", ONLINE_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("exporter not online: {e:#}\n{}", lab.logs()));
    let c1 = lab.create_client("c1").await.expect("client c1");

    // Pull the cable.
    netns.cut().expect("cut the exporter's link");
    let cut_at = Instant::now();
    let offline = lab
        .wait_exporter_condition("board-1", "Online", "False", OFFLINE_BOUND)
        .await;
    let to_offline = cut_at.elapsed();
    if let Err(e) = offline {
        let _ = netns.heal();
        panic!(
            "an exporter cut off without a FIN stayed Online for {to_offline:.0?} (bound {OFFLINE_BOUND:?}): {e:#}\n{}",
            lab.logs()
        );
    }
    println!("figure: cut → Offline in {:.1} s", to_offline.as_secs_f64());

    // While it is offline, a lease that only it could serve waits.
    let lease = create_lease(&lab, &c1, &["-l", "board=mock"], "10m").await;
    let watch_until = Instant::now() + UNASSIGNED_WATCH;
    while Instant::now() < watch_until {
        let l = lab.lease(&lease).await.expect("get lease");
        assert!(
            exporter_of(&l).is_none() && !is_ready(&l),
            "lease {lease} was given to an offline exporter: {}\n{}",
            serde_json::to_string(&l.status).unwrap_or_default(),
            lab.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let dropped = netns.cut_dropped_packets().expect("cut counter");
    assert!(
        dropped > 0,
        "the cut dropped no packet: the exporter's traffic did not use the veth"
    );

    // Plug it back in.
    netns.heal().expect("heal the exporter's link");
    let healed_at = Instant::now();
    lab.wait_exporter_condition("board-1", "Online", "True", BACK_ONLINE_BOUND)
        .await
        .unwrap_or_else(|e| panic!("exporter not back online: {e:#}\n{}", lab.logs()));
    let to_online = healed_at.elapsed();
    let ready = lab
        .wait_lease(&lease, "Ready", Duration::from_secs(60), is_ready)
        .await;
    assert_eq!(exporter_of(&ready).as_deref(), Some("board-1"));
    println!(
        "figure: cut → Offline {:.1} s; {dropped} packets dropped while cut; heal → Online {:.1} s; the waiting lease then Ready on board-1",
        to_offline.as_secs_f64(),
        to_online.as_secs_f64()
    );
}

/// The outage: the API server is gone for a minute.
const API_OUTAGE: Duration = Duration::from_secs(60);

/// How long the session streams once it started: longer than the outage and the API
/// server's restart, so it spans both.
const SESSION_SECONDS: u32 = 100;

/// The kube-apiserver stopped for a minute under a Kubernetes-mode controller (with leader
/// election, as the Helm chart runs it) on a private control plane: a session that
/// streams through the router meanwhile must go on intact; a lease that expires during
/// the outage must be ended afterwards and the lease queued behind it served; the
/// controller must recover without a restart and serve leases created after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_down_for_a_minute() {
    let _serial = serial();
    let mut plane = PrivateControlPlane::start("apidown").expect("a private control plane");
    let mut lab = Lab::start_kubernetes_on(&plane.env, "fault-api", &["--leader-elect"])
        .await
        .expect("start the lab");
    lab.start_exporter("board-1", &["board=one"])
        .await
        .expect("exporter board-1");
    lab.start_exporter("board-2", &["board=two"])
        .await
        .expect("exporter board-2");
    for board in ["board-1", "board-2"] {
        lab.wait_exporter_condition(board, "Online", "True", ONLINE_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{board} not online: {e:#}\n{}", lab.logs()));
    }
    let controller_pid = lab.controller.as_ref().map(Proc::pid);
    let c1 = lab.create_client("c1").await.expect("client c1");

    // A live session on board-1.
    let live = create_lease(&lab, &c1, &["-l", "board=one"], "10m").await;
    lab.wait_lease(&live, "Ready", Duration::from_secs(60), is_ready)
        .await;
    let script = lab.path("session.py");
    std::fs::write(&script, SESSION_SCRIPT).expect("write the session script");
    let python = venv().join("bin/python");
    let c1_arg = c1.to_string_lossy().into_owned();
    let seconds = SESSION_SECONDS.to_string();
    let shell_args = [
        "shell",
        "--client-config",
        &c1_arg,
        "--lease",
        &live,
        "--",
        &python.to_string_lossy(),
        &script.to_string_lossy(),
        &seconds,
    ];
    let mut session = Proc::spawn(
        "session (jmp shell)",
        lab.jmp_command(&shell_args),
        lab.path("session.log"),
    )
    .expect("start the session");
    wait_output(
        &mut session,
        "streaming",
        Duration::from_secs(120),
        &lab.logs(),
    )
    .await;

    // On board-2: a short lease that will expire during the outage, and one queued
    // behind it.
    let short = create_lease(&lab, &c1, &["-l", "board=two"], "20s").await;
    lab.wait_lease(&short, "Ready", Duration::from_secs(60), is_ready)
        .await;
    let queued = create_lease(&lab, &c1, &["-l", "board=two"], "10m").await;
    let waiting = lab.lease(&queued).await.expect("get the queued lease");
    assert!(
        exporter_of(&waiting).is_none(),
        "the queued lease got an exporter while board-2 was leased: {:?}",
        waiting.status
    );

    plane.stop_api_server().expect("stop the API server");
    let stopped_at = Instant::now();
    while stopped_at.elapsed() < API_OUTAGE {
        assert!(
            session.running(),
            "the session ended during the API outage ({:.0?} in):\n{}\n{}",
            stopped_at.elapsed(),
            session.output(),
            lab.logs()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let restarting_at = Instant::now();
    plane
        .start_api_server()
        .await
        .expect("start the API server again");
    let api_restart = restarting_at.elapsed();

    // The controller is the same process.
    let controller = lab.controller.as_mut().expect("controller");
    assert!(
        controller.running(),
        "the controller exited during the API outage:\n{}",
        controller.output()
    );
    assert_eq!(controller_pid, lab.controller.as_ref().map(Proc::pid));

    // The expiry that fell into the outage is recorded, and the queue moves on.
    let ended = lab
        .wait_lease(&short, "ended", Duration::from_secs(90), is_ended)
        .await;
    let reason = ended
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.reason.clone());
    assert_eq!(reason.as_deref(), Some("Expired"), "{:?}", ended.status);
    let served = lab
        .wait_lease(&queued, "Ready", Duration::from_secs(90), is_ready)
        .await;
    assert_eq!(exporter_of(&served).as_deref(), Some("board-2"));
    let queue_moved = restarting_at.elapsed();

    // The session went through the outage intact.
    let deadline = Instant::now() + Duration::from_secs(u64::from(SESSION_SECONDS) + 60);
    let status = loop {
        if let Ok(Some(status)) = session.child.try_wait() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the session did not finish:\n{}",
            session.output()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let output = session.output();
    assert!(
        status.success() && output.contains("intact messages"),
        "the session failed ({status}):\n{output}\n{}",
        lab.logs()
    );

    // A lease created after the outage is served once board-1 is released.
    let fresh = create_lease(&lab, &c1, &["-l", "board=one"], "1m").await;
    let out = lab
        .jmp(
            &["delete", "leases", "--client-config", &c1_arg, &live],
            Duration::from_secs(60),
        )
        .await
        .expect("jmp delete lease");
    assert!(out.ok(), "{out}");
    lab.wait_lease(&fresh, "Ready", Duration::from_secs(60), is_ready)
        .await;

    let summary = output
        .lines()
        .find(|l| l.starts_with("intact messages"))
        .unwrap_or_default();
    println!(
        "figure: API server down {:.0} s (restart took {:.1} s more); session through the outage: {summary}; expired lease ended and queued lease Ready {:.1} s after the restart began; controller PID unchanged",
        API_OUTAGE.as_secs_f64(),
        api_restart.as_secs_f64(),
        queue_moved.as_secs_f64()
    );
}
