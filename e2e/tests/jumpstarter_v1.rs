//! The real jumpstarter 0.9.0 client and exporter against this service in Kubernetes mode
//! (controller + h2 router processes, real kube-apiserver).
//!
//! Tests run one at a time (each starts Python processes that need the CPU).
#![allow(clippy::await_holding_lock)]

use std::time::{Duration, Instant};

use jumpstarter_e2e::lease::{exporter_of, is_ended, is_ready};
use jumpstarter_e2e::{Lab, Mode, RawClient, serial};
use jumpstarter_proto::jumpstarter::v1::DialRequest;
use jumpstarter_proto::jumpstarter::v1::controller_service_client::ControllerServiceClient;

const SHELL_TIMEOUT: Duration = Duration::from_secs(180);
const ONLINE_TIMEOUT: Duration = Duration::from_secs(90);

/// `jmp shell --client-config C <target...> -- <cmd...>`, asserting success.
async fn shell(lab: &Lab, client: &std::path::Path, target: &[&str], cmd: &[&str]) -> String {
    let mut args = vec!["shell", "--client-config"];
    let client = client.to_string_lossy().into_owned();
    args.push(&client);
    args.extend_from_slice(target);
    args.push("--");
    args.extend_from_slice(cmd);
    let out = lab.jmp(&args, SHELL_TIMEOUT).await.expect("run jmp shell");
    assert!(
        out.ok(),
        "jmp {} failed: {out}\n{}",
        args.join(" "),
        lab.logs()
    );
    out.stdout + &out.stderr
}

async fn create_lease(
    lab: &Lab,
    client: &std::path::Path,
    target: &[&str],
    duration: &str,
) -> String {
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

/// A lab with exporter `board-1` (`board=mock`) running and Online.
async fn lab_with_online_board(mode: Mode, prefix: &str) -> Lab {
    let mut lab = Lab::start(mode, prefix).await.expect("start lab");
    lab.start_exporter("board-1", &["board=mock"])
        .await
        .expect("exporter");
    lab.wait_exporter_condition("board-1", "Online", "True", ONLINE_TIMEOUT)
        .await
        .expect("online");
    lab
}

async fn exporter_online_and_shell_drives_power_and_shell_drivers(mode: Mode) {
    let mut lab = Lab::start(mode, "e2e-basic").await.expect("start lab");
    lab.start_exporter("board-1", &["board=mock", "site=lab"])
        .await
        .expect("exporter");
    lab.wait_exporter_condition("board-1", "Registered", "True", ONLINE_TIMEOUT)
        .await
        .expect("registered");
    lab.wait_exporter_condition("board-1", "Online", "True", ONLINE_TIMEOUT)
        .await
        .expect("online");
    let c1 = lab.create_client("c1").await.expect("client c1");

    let out = lab
        .jmp(
            &[
                "get",
                "exporters",
                "--client-config",
                &c1.to_string_lossy(),
                "-o",
                "yaml",
            ],
            Duration::from_secs(60),
        )
        .await
        .expect("jmp get exporters");
    assert!(out.ok() && out.stdout.contains("board-1"), "{out}");

    // Lease by selector: power on, streaming power read, shell driver.
    let output = shell(
        &lab,
        &c1,
        &["-l", "board=mock", "--duration", "10m"],
        &["j", "power", "on"],
    )
    .await;
    assert!(!output.contains("Traceback"), "{output}");
    let output = shell(&lab, &c1, &["-l", "board=mock"], &["j", "power", "read"]).await;
    assert!(
        output.to_lowercase().contains("v"),
        "power read printed nothing useful: {output}"
    );
    let output = shell(
        &lab,
        &c1,
        &["-l", "site=lab"],
        &["j", "sh", "hello", "world"],
    )
    .await;
    assert!(output.contains("hello-from-exporter world"), "{output}");

    // Lease by exporter name.
    shell(&lab, &c1, &["-n", "board-1"], &["j", "power", "off"]).await;

    // Every one-shot shell deleted (released) its lease: no active lease remains.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leases = lab.leases().await.expect("list leases");
        assert_eq!(leases.len(), 4, "one lease per shell");
        if leases.iter().all(is_ended) {
            for l in &leases {
                let labels = l.metadata.labels.clone().unwrap_or_default();
                assert_eq!(
                    labels
                        .get("jumpstarter.dev/lease-ended")
                        .map(String::as_str),
                    Some("true")
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "one-shot leases were not ended: {:?}\n{}",
            leases,
            lab.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // SIGTERM to `jmp run`: the exporter reports Offline and unregisters.
    let mut exporter = lab.exporters.remove("board-1").expect("exporter process");
    exporter.stop(Duration::from_secs(20)).await;
    let e = lab
        .wait_exporter_condition("board-1", "Online", "False", Duration::from_secs(30))
        .await
        .expect("offline");
    let status = e.status.expect("status");
    assert_eq!(
        serde_json::to_value(status.exporter_status).expect("json"),
        serde_json::json!("Offline"),
        "exporterStatus after shutdown"
    );
    lab.wait_exporter_condition("board-1", "Registered", "False", Duration::from_secs(30))
        .await
        .expect("unregistered");
}

async fn sixty_four_mib_echo_through_the_router_is_intact(mode: Mode) {
    let lab = lab_with_online_board(mode, "e2e-echo").await;
    let c1 = lab.create_client("c1").await.expect("client");
    let script = lab.path("echo.py");
    std::fs::write(&script, jumpstarter_e2e::ECHO_SCRIPT).expect("write script");
    let python = jumpstarter_e2e::venv().join("bin/python");
    let output = shell(
        &lab,
        &c1,
        &["-l", "board=mock"],
        &[&python.to_string_lossy(), &script.to_string_lossy()],
    )
    .await;
    assert!(output.contains("bytes 67108864"), "{output}");
}

async fn exclusive_lease_queues_second_client_until_release(mode: Mode) {
    let lab = lab_with_online_board(mode, "e2e-exclusive").await;
    let c1 = lab.create_client("c1").await.expect("c1");
    let c2 = lab.create_client("c2").await.expect("c2");

    let l1 = create_lease(&lab, &c1, &["-l", "board=mock"], "10m").await;
    let lease1 = lab
        .wait_lease(&l1, "Ready", Duration::from_secs(30), is_ready)
        .await;
    assert_eq!(exporter_of(&lease1).as_deref(), Some("board-1"));

    // Client 2 cannot Dial client 1's lease.
    let raw2 = RawClient::from_config(&c2).await.expect("raw c2");
    let err = ControllerServiceClient::new(raw2.channel.clone())
        .dial(raw2.request(DialRequest {
            lease_name: l1.clone(),
        }))
        .await
        .expect_err("c2 must not dial c1's lease");
    assert!(err.message().contains("permission denied"), "{err:?}");

    // Client 2's own lease waits while client 1 holds the exporter.
    let l2 = create_lease(&lab, &c2, &["-l", "board=mock"], "10m").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pending = lab.lease(&l2).await.expect("get l2");
    assert!(
        !is_ready(&pending) && exporter_of(&pending).is_none(),
        "l2 must wait: {:?}",
        pending.status
    );

    // Client 1 uses its lease, then releases it.
    shell(&lab, &c1, &["--lease", &l1], &["j", "power", "on"]).await;
    let out = lab
        .jmp(
            &[
                "delete",
                "leases",
                "--client-config",
                &c1.to_string_lossy(),
                &l1,
            ],
            Duration::from_secs(60),
        )
        .await
        .expect("jmp delete lease");
    assert!(out.ok(), "{out}");
    lab.wait_lease(&l1, "ended", Duration::from_secs(30), is_ended)
        .await;

    // Now client 2 gets the exporter and can use it.
    let lease2 = lab
        .wait_lease(&l2, "Ready", Duration::from_secs(30), is_ready)
        .await;
    assert_eq!(exporter_of(&lease2).as_deref(), Some("board-1"));
    shell(&lab, &c2, &["--lease", &l2], &["j", "power", "on"]).await;
}

async fn lease_expires_on_time(mode: Mode) {
    let lab = lab_with_online_board(mode, "e2e-expiry").await;
    let c1 = lab.create_client("c1").await.expect("c1");
    let l1 = create_lease(&lab, &c1, &["-l", "board=mock"], "8s").await;
    let ready = lab
        .wait_lease(&l1, "Ready", Duration::from_secs(30), is_ready)
        .await;
    let begin = ready
        .status
        .as_ref()
        .and_then(|s| s.begin_time.clone())
        .expect("beginTime")
        .0;
    let ended = lab
        .wait_lease(&l1, "ended", Duration::from_secs(30), is_ended)
        .await;
    let status = ended.status.expect("status");
    let end = status.end_time.expect("endTime").0;
    let lasted = (end.as_millisecond() - begin.as_millisecond()) as f64 / 1000.0;
    assert!(
        (8.0..=13.0).contains(&lasted),
        "8 s lease lasted {lasted} s"
    );
    let ready_false = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(
        (ready_false.status.as_str(), ready_false.reason.as_str()),
        ("False", "Expired")
    );
    // The exporter is free again: a new lease is served.
    shell(&lab, &c1, &["-l", "board=mock"], &["j", "power", "on"]).await;
}

async fn controller_restart_keeps_the_active_lease(mode: Mode) {
    let mut lab = lab_with_online_board(mode, "e2e-restart").await;
    let c1 = lab.create_client("c1").await.expect("c1");
    let l1 = create_lease(&lab, &c1, &["-l", "board=mock"], "10m").await;
    lab.wait_lease(&l1, "Ready", Duration::from_secs(30), is_ready)
        .await;
    shell(&lab, &c1, &["--lease", &l1], &["j", "power", "on"]).await;

    let mut controller = lab.controller.take().expect("controller");
    controller.stop(Duration::from_secs(20)).await;
    drop(controller);
    lab.start_controller().await.expect("restart controller");

    let lease = lab
        .wait_lease(&l1, "still Ready", Duration::from_secs(10), is_ready)
        .await;
    assert_eq!(exporter_of(&lease).as_deref(), Some("board-1"));
    lab.wait_exporter_condition("board-1", "Online", "True", ONLINE_TIMEOUT)
        .await
        .expect("online again");
    shell(&lab, &c1, &["--lease", &l1], &["j", "power", "off"]).await;
}

jumpstarter_e2e::in_both_modes!(
    exporter_online_and_shell_drives_power_and_shell_drivers,
    sixty_four_mib_echo_through_the_router_is_intact,
    exclusive_lease_queues_second_client_until_release,
    lease_expires_on_time,
    controller_restart_keeps_the_active_lease,
);
