//! The Helm chart on a real node: the image built from the repository's Dockerfile, the
//! controller and two routers in pods, and the real jumpstarter 0.9.0 tools on this
//! machine reaching them through their NodePort Services on 127.0.0.1 (TCP for gRPC and
//! h2, UDP for QUIC).
//!
//! Needs the test environment with its node (`testenv.sh start --node`, which the
//! repository's test command starts for this suite); built only with `--features node`.
//! Tests run one at a time (pods and Python tools share two cores), each release in its
//! own namespace on its own node ports.
#![allow(clippy::await_holding_lock)]

use std::path::Path;
use std::time::{Duration, Instant};

use jumpstarter_e2e::lease::{exporter_of, is_ready};
use jumpstarter_e2e::node::{NodePorts, Release, restarts};
use jumpstarter_e2e::{
    ECHO_SCRIPT, Proc, SESSION_SCRIPT, bin_path, metric_sum, serial, venv, wait_output,
};

const ONLINE_TIMEOUT: Duration = Duration::from_secs(120);
const SHELL_TIMEOUT: Duration = Duration::from_secs(240);
/// A pod replaced after a deletion or a rollout, Ready again (the image is on the node).
const REPLACE_TIMEOUT: Duration = Duration::from_secs(180);
/// The non-root user of the image and the chart's security context.
const NONROOT_UID: u32 = 65532;

/// `jmp shell --client-config C <target...> -- <cmd...>`, asserting success; its output.
async fn shell(release: &Release, client: &Path, target: &[&str], cmd: &[&str]) -> String {
    let client = client.to_string_lossy().into_owned();
    let mut args = vec!["shell", "--client-config", &client];
    args.extend_from_slice(target);
    args.push("--");
    args.extend_from_slice(cmd);
    let out = release
        .lab
        .jmp(&args, SHELL_TIMEOUT)
        .await
        .expect("run jmp shell");
    assert!(
        out.ok(),
        "jmp {} failed: {out}\n{}",
        args.join(" "),
        release.diagnostics().await
    );
    out.stdout + &out.stderr
}

/// `jmp create lease … -o name`; the lease's name.
async fn create_lease(release: &Release, client: &Path, selector: &str) -> String {
    let client = client.to_string_lossy().into_owned();
    let args = [
        "create",
        "lease",
        "--client-config",
        &client,
        "-l",
        selector,
        "--duration",
        "30m",
        "-o",
        "name",
    ];
    let out = release
        .lab
        .jmp(&args, Duration::from_secs(60))
        .await
        .expect("jmp create lease");
    assert!(
        out.ok(),
        "jmp create lease failed: {out}\n{}",
        release.diagnostics().await
    );
    out.lease_name()
}

/// A release with exporter `board-1` (`board=mock`, `jmp run` over h2) Online and client
/// `c1` created; the client's configuration path.
async fn release_with_board(prefix: &str, ports: NodePorts) -> (Release, std::path::PathBuf) {
    release_with_board_and(prefix, ports, &[]).await
}

/// [`release_with_board`] with extra `helm install` arguments.
async fn release_with_board_and(
    prefix: &str,
    ports: NodePorts,
    extra: &[&str],
) -> (Release, std::path::PathBuf) {
    let mut release = Release::install(prefix, ports, extra)
        .await
        .unwrap_or_else(|e| panic!("helm install: {e:#}"));
    release
        .lab
        .start_exporter("board-1", &["board=mock"])
        .await
        .expect("jmp admin create exporter + jmp run");
    if let Err(e) = release
        .lab
        .wait_exporter_condition("board-1", "Online", "True", ONLINE_TIMEOUT)
        .await
    {
        panic!("board-1 not Online: {e:#}\n{}", release.diagnostics().await);
    }
    let client = release
        .lab
        .create_client("c1")
        .await
        .expect("jmp admin create client");
    (release, client)
}

/// Starts `jmp shell --lease L -- python session.py SECONDS` (echo round trips, each
/// compared) and waits until it streams.
async fn start_session(release: &Release, client: &Path, lease: &str, seconds: u32) -> Proc {
    let script = release.path("session.py");
    std::fs::write(&script, SESSION_SCRIPT).expect("write the session script");
    let python = venv().join("bin/python");
    let client = client.to_string_lossy().into_owned();
    let seconds = seconds.to_string();
    let args = [
        "shell",
        "--client-config",
        &client,
        "--lease",
        lease,
        "--",
        &python.to_string_lossy(),
        &script.to_string_lossy(),
        &seconds,
    ];
    let mut session = Proc::spawn(
        "session (jmp shell)",
        release.lab.jmp_command(&args),
        release.path(&format!(
            "session-{lease}-{}.log",
            jumpstarter_e2e::free_port()
        )),
    )
    .expect("start the session");
    wait_output(
        &mut session,
        "streaming",
        Duration::from_secs(120),
        &release.lab.logs(),
    )
    .await;
    session
}

/// Waits for `session` to exit and asserts every message came back intact.
async fn assert_session_intact(release: &Release, mut session: Proc, within: Duration) {
    let deadline = Instant::now() + within;
    while session.running() {
        assert!(
            Instant::now() < deadline,
            "the session did not finish within {within:?}:\n{}\n{}",
            session.output(),
            release.diagnostics().await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let status = session.stop(Duration::from_secs(5)).await;
    let output = session.output();
    assert!(
        status.is_some_and(|s| s.success()) && output.contains("intact messages"),
        "the session broke ({status:?}):\n{output}\n{}",
        release.diagnostics().await
    );
}

/// [`jumpstarter_e2e::Lab::shell_behind_edge`] (controller calls and the session over QUIC,
/// UDP), asserting success; its output.
async fn shell_behind_edge(
    release: &Release,
    client: &Path,
    target: &[&str],
    cmd: &[&str],
) -> String {
    let edge = bin_path("jumpstarter-edge");
    let out = release
        .lab
        .shell_behind_edge(&edge, client, target, cmd, SHELL_TIMEOUT)
        .await
        .expect("jmp shell behind the edge");
    assert!(
        out.ok(),
        "jmp shell behind the edge failed: {out}\n{}",
        release.diagnostics().await
    );
    out.stdout + &out.stderr
}

/// Sum of `metric{label}` over the `/metrics` of every Ready router pod.
async fn router_metric(release: &Release, metric: &str, label: Option<&str>) -> f64 {
    let mut total = 0.0;
    for pod in release.ready_pods("router").await.expect("router pods") {
        let text = release
            .pod_metrics(&pod, 9090)
            .await
            .expect("router metrics");
        total += metric_sum(&text, metric, label);
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_chart_serves_the_real_tools_over_h2_and_quic_and_passes_helm_test() {
    let _serial = serial();
    let ports = NodePorts {
        controller: 30100,
        router_base: 30101,
    };
    let (mut release, c1) = release_with_board("node-tools", ports).await;

    // The controller and two routers are Ready through their own probes (helm --wait),
    // as user 65532 with a read-only root filesystem: checked on the real processes.
    assert_eq!(
        release.ready_pods("controller").await.expect("pods").len(),
        1
    );
    assert_eq!(release.ready_pods("router").await.expect("pods").len(), 2);
    let processes = release
        .container_processes()
        .await
        .expect("container processes");
    assert_eq!(processes.len(), 3, "{processes:?}");
    for (container, uid, read_only_root) in &processes {
        assert_eq!(*uid, NONROOT_UID, "{container} runs as uid {uid}");
        assert!(read_only_root, "{container} has a writable root filesystem");
    }

    // The tools were configured through the controller's Service (its NodePort).
    let config = std::fs::read_to_string(&c1).expect("client config");
    assert!(
        config.contains(&format!("127.0.0.1:{}", ports.controller)),
        "the client config does not name the controller's NodePort:\n{config}"
    );

    // h2: `j power on` and a 64 MiB echo through a router's TCP NodePort.
    let out = shell(&release, &c1, &["-l", "board=mock"], &["j", "power", "on"]).await;
    assert!(!out.contains("Traceback"), "{out}");
    let script = release.path("echo.py");
    std::fs::write(&script, ECHO_SCRIPT).expect("write the echo script");
    let python = venv().join("bin/python");
    let out = shell(
        &release,
        &c1,
        &["-l", "board=mock"],
        &[&python.to_string_lossy(), &script.to_string_lossy()],
    )
    .await;
    assert!(out.contains("bytes 67108864"), "{out}");
    assert!(
        router_metric(&release, "jumpstarter_router_streams_total", None).await >= 2.0,
        "no h2 stream went through the routers"
    );

    // QUIC: an exporter and a client behind edges; their controller calls and the
    // session go over UDP (the controller's and a router's UDP NodePorts).
    let exporter = release
        .lab
        .create_exporter_config("board-q", &["board=quic"])
        .await
        .expect("exporter config board-q");
    let edge_config = release
        .path("board-q.edge.yaml")
        .to_string_lossy()
        .into_owned();
    let jmp = venv().join("bin/jmp").to_string_lossy().into_owned();
    let mut command = release.lab.tool_command(
        bin_path("jumpstarter-edge"),
        &[
            "exporter",
            "--config",
            &exporter.to_string_lossy(),
            "--write-config",
            &edge_config,
            "--",
            &jmp,
            "run",
            "--exporter-config",
            &edge_config,
        ],
    );
    command.env("RUST_LOG", "info");
    let edge = Proc::spawn(
        "exporter edge board-q",
        command,
        release.path("edge-board-q.log"),
    )
    .expect("spawn the exporter edge");
    release.lab.exporters.insert("board-q".to_owned(), edge);
    if let Err(e) = release
        .lab
        .wait_exporter_condition("board-q", "Online", "True", ONLINE_TIMEOUT)
        .await
    {
        panic!(
            "board-q not Online through its edge: {e:#}\n{}",
            release.diagnostics().await
        );
    }
    let quic_before = router_metric(
        &release,
        "jumpstarter_router_quic_sessions_total",
        Some(r#"outcome="completed""#),
    )
    .await;
    let out = shell_behind_edge(
        &release,
        &c1,
        &["-l", "board=quic"],
        &[&python.to_string_lossy(), &script.to_string_lossy()],
    )
    .await;
    assert!(out.contains("bytes 67108864"), "{out}");
    let quic_after = router_metric(
        &release,
        "jumpstarter_router_quic_sessions_total",
        Some(r#"outcome="completed""#),
    )
    .await;
    assert!(
        quic_after >= quic_before + 2.0,
        "the session did not complete over QUIC ({quic_before} -> {quic_after})"
    );

    // `helm test`: `jumpstarter admin check` in a pod (deleted when it succeeds, so no
    // `--logs`: a failed one stays for its logs in the diagnostics).
    let out = release
        .chart
        .helm(&[
            "test",
            &release.name,
            "-n",
            &release.namespace,
            "--timeout",
            "180s",
        ])
        .await
        .expect("helm test");
    assert!(
        out.ok(),
        "helm test failed: {out}\n{}",
        release.diagnostics().await
    );

    // The same check by hand from this machine, as JSON: every check passed, among them
    // both routers over TCP and UDP.
    let out = tokio::process::Command::new(bin_path("jumpstarter"))
        .args(["admin", "check", "--kubeconfig"])
        .arg(&release.env.admin_kubeconfig)
        .args(["-n", &release.namespace, "-o", "json"])
        .output()
        .await
        .expect("run jumpstarter admin check");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "admin check printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success() && report["ok"] == true, "{report:#}");
    let names: Vec<&str> = report["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for router in ["js-jumpstarter-router-0", "js-jumpstarter-router-1"] {
        for transport in ["tcp", "udp"] {
            let name = format!("router/{router}/{transport}");
            assert!(
                names.contains(&name.as_str()),
                "{name} not checked: {report:#}"
            );
        }
    }

    // Nothing restarted along the way.
    let pods = release.pods().await.expect("pods");
    assert_eq!(restarts(&pods), 0, "{}", release.diagnostics().await);
    release.uninstall().await.expect("uninstall");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_controller_pods_leader_loss_and_router_restarts_keep_leases_and_sessions() {
    let _serial = serial();
    let ports = NodePorts {
        controller: 30110,
        router_base: 30111,
    };
    // Three controller pods behind one Service (active-active): the tools' connections are
    // spread over them, so Dial and Listen meet across pods.
    let (mut release, c1) =
        release_with_board_and("node-loss", ports, &["--set", "controller.replicas=3"]).await;
    let pods = release
        .wait_ready_pods("controller", 3, &[], REPLACE_TIMEOUT)
        .await
        .expect("three controller pods");
    let lease = create_lease(&release, &c1, "board=mock").await;
    let held = release
        .lab
        .wait_lease(&lease, "Ready", Duration::from_secs(60), is_ready)
        .await;
    assert_eq!(exporter_of(&held).as_deref(), Some("board-1"));
    for _ in 0..3 {
        let out = shell(&release, &c1, &["--lease", &lease], &["j", "power", "on"]).await;
        assert!(!out.contains("Traceback"), "{out}");
    }

    // The leader pod is deleted during the lease: another pod takes over and the
    // Deployment replaces the deleted one; the lease stays Ready on the same exporter, and
    // new sessions work.
    let leader = release
        .kubectl(&[
            "get",
            "lease",
            "jumpstarter-controller-leader",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
        .await
        .expect("the leader election Lease");
    let leader = leader.trim().to_owned();
    assert!(
        pods.contains(&leader),
        "leader {leader:?} is not one of {pods:?}"
    );
    release
        .kubectl(&["delete", "pod", &leader, "--wait=false"])
        .await
        .expect("delete the leader pod");
    release
        .wait_ready_pods(
            "controller",
            3,
            std::slice::from_ref(&leader),
            REPLACE_TIMEOUT,
        )
        .await
        .expect("a replacement controller pod");
    // Long enough for the new leader to reconcile every lease.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = release.lab.lease(&lease).await.expect("the lease");
    assert!(is_ready(&after), "the lease lost Ready: {:?}", after.status);
    assert_eq!(exporter_of(&after).as_deref(), Some("board-1"));
    for _ in 0..3 {
        let out = shell(&release, &c1, &["--lease", &lease], &["j", "power", "on"]).await;
        assert!(!out.contains("Traceback"), "{out}");
    }

    // Both routers restarted (`kubectl rollout restart`) during a live session shorter
    // than the drain grace: the session completes intact; new sessions work.
    let session = start_session(&release, &c1, &lease, 25).await;
    let old_routers = release.ready_pods("router").await.expect("router pods");
    for deployment in ["js-jumpstarter-router-0", "js-jumpstarter-router-1"] {
        release
            .kubectl(&["rollout", "restart", "deployment", deployment])
            .await
            .expect("rollout restart");
    }
    assert_session_intact(&release, session, Duration::from_secs(120)).await;
    release
        .wait_ready_pods("router", 2, &old_routers, REPLACE_TIMEOUT)
        .await
        .expect("new router pods");
    let out = shell(&release, &c1, &["--lease", &lease], &["j", "power", "on"]).await;
    assert!(!out.contains("Traceback"), "{out}");
    release.uninstall().await.expect("uninstall");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_during_a_live_session_then_uninstall_keeps_only_crds_and_user_objects() {
    let _serial = serial();
    let ports = NodePorts {
        controller: 30120,
        router_base: 30121,
    };
    let (mut release, c1) = release_with_board("node-upgrade", ports).await;
    let lease = create_lease(&release, &c1, "board=mock").await;
    release
        .lab
        .wait_lease(&lease, "Ready", Duration::from_secs(60), is_ready)
        .await;

    // `helm upgrade` with a changed value while a session streams: the controller rolls
    // out, the session completes intact.
    let session = start_session(&release, &c1, &lease, 20).await;
    let old = release
        .ready_pods("controller")
        .await
        .expect("controller pod");
    let out = release
        .helm_release("upgrade", &["--set", "controller.maxTags=11"])
        .await
        .expect("helm upgrade");
    assert!(
        out.ok(),
        "helm upgrade failed: {out}\n{}",
        release.diagnostics().await
    );
    let args = release
        .kubectl(&[
            "get",
            "deployment",
            "js-jumpstarter-controller",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].args}",
        ])
        .await
        .expect("controller args");
    assert!(args.contains("--max-tags=11"), "{args}");
    assert_session_intact(&release, session, Duration::from_secs(120)).await;
    release
        .wait_ready_pods("controller", 1, &old, REPLACE_TIMEOUT)
        .await
        .expect("the upgraded controller");
    let out = shell(&release, &c1, &["--lease", &lease], &["j", "power", "on"]).await;
    assert!(!out.contains("Traceback"), "{out}");

    // `helm uninstall`: the CRDs and the user's objects stay, nothing else does.
    release.uninstall().await.expect("uninstall");
    for crd in ["clients", "exporters", "leases", "exporteraccesspolicies"] {
        let out = release
            .chart
            .kubectl(&["get", "crd", &format!("{crd}.jumpstarter.dev")], None)
            .await
            .expect("kubectl");
        assert!(out.ok(), "CRD {crd} gone after uninstall: {out}");
    }
    let left = release
        .chart
        .objects_in(&release.namespace)
        .await
        .expect("objects");
    let user_objects = [
        "client.jumpstarter.dev/c1",
        "exporter.jumpstarter.dev/board-1",
    ];
    for object in user_objects {
        assert!(
            left.iter().any(|l| l == object),
            "{object} gone after uninstall: {left:?}"
        );
    }
    // What the cluster itself keeps in every namespace, the user's objects with the
    // credentials the controller issued to them, and the keys those credentials hang on
    // (the CA and token keys: a reinstall serves the same clients and exporters).
    let credentials = release
        .kubectl(&[
            "get",
            "secrets",
            "-o",
            "jsonpath={range .items[?(@.metadata.ownerReferences[0].apiVersion==\"jumpstarter.dev/v1alpha1\")]}secret/{.metadata.name} {end}",
        ])
        .await
        .expect("credential secrets");
    let credentials: Vec<&str> = credentials.split_whitespace().collect();
    let unexpected: Vec<&String> = left
        .iter()
        .filter(|l| !l.contains(".jumpstarter.dev/"))
        .filter(|l| {
            ![
                "configmap/kube-root-ca.crt",
                "serviceaccount/default",
                "secret/jumpstarter-controller-keys",
            ]
            .contains(&l.as_str())
        })
        .filter(|l| !credentials.contains(&l.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "left after uninstall: {unexpected:?}\nall: {left:?}"
    );
}
