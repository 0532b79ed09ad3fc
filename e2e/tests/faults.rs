//! Fault tests: the service's real binaries and the real jumpstarter 0.9.0 tools under
//! faults a lab meets in the field, each bounded in time and printing its figures.
//!
//! - [`exporter_cut_off_goes_offline_and_back`]: the exporter's network cable is pulled
//!   (nftables drops every packet of its namespace's veth: no FIN, no RST), then plugged
//!   back in.
//!
//! Tests run one at a time (each starts Python processes that need the CPU).
#![allow(clippy::await_holding_lock)]

use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jumpstarter_controller::crd::Lease;
use jumpstarter_e2e::netns::Netns;
use jumpstarter_e2e::{Lab, Proc, venv};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

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
fn is_ready(lease: &Lease) -> bool {
    lease
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        && !is_ended(lease)
}

fn is_ended(lease: &Lease) -> bool {
    lease.status.as_ref().is_some_and(|s| s.ended)
}

fn exporter_of(lease: &Lease) -> Option<String> {
    lease
        .status
        .as_ref()?
        .exporter_ref
        .as_ref()
        .map(|r| r.name.clone())
}

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

/// Polls lease `name` until `pred` holds; panics with the lab's logs after `timeout`.
async fn wait_lease(
    lab: &Lab,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Lease) -> bool,
) -> Lease {
    let deadline = Instant::now() + timeout;
    loop {
        let lease = lab.lease(name).await.expect("get lease");
        if pred(&lease) {
            return lease;
        }
        assert!(
            Instant::now() < deadline,
            "lease {name}: {what} not reached within {timeout:?}; status: {}\n{}",
            serde_json::to_string(&lease.status).unwrap_or_default(),
            lab.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
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
    let ready = wait_lease(&lab, &lease, "Ready", Duration::from_secs(60), is_ready).await;
    assert_eq!(exporter_of(&ready).as_deref(), Some("board-1"));
    println!(
        "figure: cut → Offline {:.1} s; {dropped} packets dropped while cut; heal → Online {:.1} s; the waiting lease then Ready on board-1",
        to_offline.as_secs_f64(),
        to_online.as_secs_f64()
    );
}
