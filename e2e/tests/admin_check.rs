//! `jumpstarter admin check` against the real kube-apiserver, with the controller and
//! routers running on loopback (real TLS over TCP, real QUIC over UDP):
//!
//! - everything up: exit 0 and every check ok in the JSON; then a closed router port and a
//!   router whose certificate names another host: non-zero exit, exactly their checks fail,
//!   with the reason;
//! - a CRD really missing (a private control plane with three of the four CRDs): its check
//!   fails, as admin (the CRD object) and as an identity that may not read CRDs (API
//!   discovery);
//! - the chart's test ServiceAccount: the `helm test` pod's own arguments, run with that
//!   ServiceAccount's token, read everything the check needs (no request is forbidden).
//!   No pod runs on this API server, so the controller Deployment is never ready: that
//!   check, and only that one, fails with the ready count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jumpstarter_e2e::chart::{Chart, service_account_kubeconfig, write_router_mounts};
use jumpstarter_e2e::control_plane::PrivateControlPlane;
use jumpstarter_e2e::{Lab, Output, Proc, bin_path, free_port, wait_http_ok};
use jumpstarter_testenv::TestEnv;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use tokio::process::Command;

/// Longest one `jumpstarter admin check` run may take (its own steps are bounded by
/// `--timeout`; this only stops a hung process).
const RUN_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest the controller may take to win the (free) leader election Lease.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);

const CRD_NAMES: [&str; 4] = [
    "crd/clients.jumpstarter.dev",
    "crd/exporters.jumpstarter.dev",
    "crd/leases.jumpstarter.dev",
    "crd/exporteraccesspolicies.jumpstarter.dev",
];

/// One run of `jumpstarter admin check`.
#[derive(Debug)]
struct Run {
    out: Output,
    /// `name -> (ok, detail)`, from `-o json`.
    checks: BTreeMap<String, (bool, String)>,
}

impl Run {
    fn failed(&self) -> BTreeSet<&str> {
        self.checks
            .iter()
            .filter(|(_, (ok, _))| !ok)
            .map(|(name, _)| name.as_str())
            .collect()
    }

    fn detail(&self, name: &str) -> &str {
        &self
            .checks
            .get(name)
            .unwrap_or_else(|| panic!("no check {name}: {}", self.out))
            .1
    }
}

/// `jumpstarter admin check --kubeconfig K [-n NS] -o json ARGS`.
async fn check(kubeconfig: &Path, namespace: Option<&str>, args: &[String]) -> Run {
    let mut cmd = Command::new(bin_path("jumpstarter"));
    cmd.arg("admin")
        .arg("check")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(namespace.map(|ns| format!("--namespace={ns}")))
        .arg("-o")
        .arg("json")
        .args(args)
        .kill_on_drop(true);
    let out = tokio::time::timeout(RUN_TIMEOUT, cmd.output())
        .await
        .expect("jumpstarter admin check finished")
        .expect("run jumpstarter admin check");
    let out = Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    // Shown with --nocapture, and with the failure of a test.
    eprintln!("jumpstarter admin check {}:\n{out}", args.join(" "));
    let report: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("JSON report ({e}): {out}"));
    let checks = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().expect("name").to_owned(),
                (
                    c["ok"].as_bool().expect("ok"),
                    c["detail"].as_str().expect("detail").to_owned(),
                ),
            )
        })
        .collect::<BTreeMap<_, _>>();
    assert_eq!(
        report["ok"].as_bool(),
        Some(checks.values().all(|(ok, _)| *ok)),
        "{out}"
    );
    assert_eq!(
        out.ok(),
        report["ok"].as_bool() == Some(true),
        "the exit status follows the report: {out}"
    );
    Run { out, checks }
}

/// A router on 127.0.0.1:`port` (TCP, and QUIC on UDP when `quic`) with a certificate the
/// lab's controller issues for `cert_host`.
async fn start_router(lab: &Lab, name: &str, cert_host: &str, port: u16, quic: bool) -> Proc {
    let dir = lab.path(&format!("router-{name}"));
    let minted = Command::new(bin_path("jumpstarter-controller"))
        .arg("router-cert")
        .arg("--namespace")
        .arg(&lab.namespace)
        .arg("--kubeconfig")
        .arg(&lab.kubeconfig)
        .arg("--endpoint")
        .arg(format!("{cert_host}:{port}"))
        .arg("--out-dir")
        .arg(&dir)
        .output()
        .await
        .expect("router-cert");
    assert!(
        minted.status.success(),
        "router-cert: {}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let metrics_port = free_port();
    let mut cmd = Command::new(bin_path("jumpstarter-router"));
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--tls-cert")
        .arg(dir.join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.join("tls.key"))
        .arg("--token-public-keys")
        .arg(dir.join("router-token-keys.pem"))
        .arg("--metrics-listen")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .arg("--log-format")
        .arg("text");
    if quic {
        cmd.arg("--quic-listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--client-ca")
            .arg(dir.join("ca.crt"));
    }
    let mut router = Proc::spawn(
        &format!("router {name}"),
        cmd,
        lab.path(&format!("router-{name}.log")),
    )
    .expect("spawn router");
    wait_http_ok(
        &format!("http://127.0.0.1:{metrics_port}/readyz"),
        Duration::from_secs(30),
        &mut router,
    )
    .await
    .expect("router ready");
    router
}

/// Waits until the leader election Lease of `namespace` has a holder.
async fn wait_leader(client: &kube::Client, namespace: &str) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        let held = leases
            .get_opt(jumpstarter_controller::leader::LEASE_NAME)
            .await
            .expect("read the election Lease")
            .and_then(|l| l.spec?.holder_identity)
            .is_some();
        if held {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no leader within {LEADER_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn check_passes_when_all_is_up_and_names_a_closed_or_misnamed_router() {
    let env = TestEnv::shared();
    let lab = Lab::start_kubernetes_on(env, "check", &["--leader-elect"])
        .await
        .expect("controller and router");
    wait_leader(&env.admin_client().await, &lab.namespace).await;
    let quic_port = free_port();
    let _quic_router = start_router(&lab, "quic", "127.0.0.1", quic_port, true).await;

    let mut args = vec![
        format!("--controller-endpoint={}", lab.grpc_endpoint()),
        format!("--router-endpoint=default={}", lab.router_endpoint()),
        format!("--router-endpoint=quic=127.0.0.1:{quic_port};quic=127.0.0.1:{quic_port}"),
    ];
    let run = check(&env.admin_kubeconfig, Some(&lab.namespace), &args).await;
    assert!(run.out.ok(), "{}\n{}", run.out, lab.logs());
    let mut expected: BTreeSet<&str> = CRD_NAMES.into_iter().collect();
    expected.extend([
        "controller/ca",
        "controller/leader",
        "controller/endpoints",
        "controller/tls",
        "controller/grpc",
        "router/default/tcp",
        "router/quic/tcp",
        "router/quic/udp",
    ]);
    assert_eq!(
        run.checks
            .keys()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        expected,
        "{}",
        run.out
    );
    assert!(
        run.detail("router/quic/udp")
            .contains("certificate valid for 127.0.0.1"),
        "{}",
        run.out
    );
    assert!(run.detail("controller/grpc").contains("SERVING"));

    // A closed port (TCP and UDP), and a router whose certificate names another host.
    let closed = free_port();
    let wrong_port = free_port();
    let _wrong = start_router(&lab, "wrong", "wrong.example", wrong_port, true).await;
    args.extend([
        format!("--router-endpoint=closed=127.0.0.1:{closed};quic=127.0.0.1:{closed}"),
        format!("--router-endpoint=wrong=127.0.0.1:{wrong_port};quic=127.0.0.1:{wrong_port}"),
        "--timeout=2s".to_owned(),
    ]);
    let run = check(&env.admin_kubeconfig, Some(&lab.namespace), &args).await;
    assert!(!run.out.ok(), "{}", run.out);
    assert_eq!(
        run.failed(),
        BTreeSet::from([
            "router/closed/tcp",
            "router/closed/udp",
            "router/wrong/tcp",
            "router/wrong/udp"
        ]),
        "{}",
        run.out
    );
    assert!(
        run.detail("router/closed/tcp").contains("refused"),
        "{}",
        run.out
    );
    assert!(
        run.detail("router/closed/udp").contains("no QUIC answer"),
        "{}",
        run.out
    );
    for name in ["router/wrong/tcp", "router/wrong/udp"] {
        assert!(
            run.detail(name)
                .contains("the certificate is not valid for 127.0.0.1: it names")
                && run.detail(name).contains("wrong.example"),
            "{name}: {}",
            run.out
        );
    }
    assert!(
        run.out.stderr.contains("4 of 16 checks failed"),
        "{}",
        run.out
    );

    // The same in text, for people.
    let text = Command::new(bin_path("jumpstarter"))
        .args(["admin", "check", "--kubeconfig"])
        .arg(&env.admin_kubeconfig)
        .arg(format!("--namespace={}", lab.namespace))
        .args(&args)
        .kill_on_drop(true)
        .output();
    let text = tokio::time::timeout(RUN_TIMEOUT, text)
        .await
        .expect("finished")
        .expect("run");
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(!text.status.success());
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("FAIL  router/wrong/tcp") && l.contains("wrong.example")),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("ok    controller/ca")),
        "{stdout}"
    );
    assert!(stdout.ends_with("4 of 16 checks failed\n"), "{stdout}");
}

#[tokio::test]
async fn a_missing_crd_fails_its_check_whoever_asks() {
    let plane = PrivateControlPlane::start("check-crd").expect("a private control plane");
    let env = &plane.env;
    let three: Vec<_> = jumpstarter_controller::crd::definitions()
        .into_iter()
        .filter(|c| c.metadata.name.as_deref() != Some("exporteraccesspolicies.jumpstarter.dev"))
        .collect();
    assert_eq!(three.len(), 3);
    env.install_crds(&three).await.expect("three CRDs");
    // Nothing else runs here; endpoints are given so the run stays short.
    let args = [
        "--controller-endpoint=127.0.0.1:1".to_owned(),
        "--router-endpoint=127.0.0.1:1".to_owned(),
        "--timeout=2s".to_owned(),
    ];
    // As admin: the CRD objects; as an identity without permissions: API discovery.
    for kubeconfig in [&env.admin_kubeconfig, &env.controller_kubeconfig] {
        let run = check(kubeconfig, Some("default"), &args).await;
        assert!(!run.out.ok());
        let missing = "crd/exporteraccesspolicies.jumpstarter.dev";
        assert!(run.failed().contains(missing), "{}", run.out);
        for name in &CRD_NAMES[..3] {
            assert!(run.checks[*name].0, "{name}: {}", run.out);
        }
        let detail = run.detail(missing);
        if kubeconfig == &env.admin_kubeconfig {
            assert!(
                detail.contains("exporteraccesspolicies.jumpstarter.dev does not exist"),
                "{detail}"
            );
        } else {
            assert!(
                detail.contains("does not serve exporteraccesspolicies (API discovery)"),
                "{detail}"
            );
            assert!(
                run.detail("crd/clients.jumpstarter.dev")
                    .contains("API discovery"),
                "{}",
                run.out
            );
        }
        assert!(run.out.stderr.contains(missing), "{}", run.out);
    }
}

/// The container arguments of the first `kind` in a rendered stream.
fn rendered_args(rendered: &str, kind: &str, name: &str) -> Vec<String> {
    let doc = rendered
        .split("\n---")
        .filter_map(|d| serde_norway::from_str::<serde_json::Value>(d).ok())
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"));
    let spec = if kind == "Pod" {
        doc["spec"].clone()
    } else {
        doc["spec"]["template"]["spec"].clone()
    };
    spec["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string").to_owned())
        .collect()
}

/// `args` with listeners on loopback, each `--flag=` in `replace` set anew, and the
/// chart's mount paths mapped to `mounts`.
fn on_host(args: &[String], replace: &[(&str, String)], mounts: &[(&str, &Path)]) -> Vec<String> {
    args.iter()
        .map(|arg| {
            let flag = arg.split_once('=').map_or(arg.as_str(), |(f, _)| f);
            if let Some((_, value)) = replace.iter().find(|(f, _)| *f == flag) {
                return format!("{flag}={value}");
            }
            mounts
                .iter()
                .fold(arg.replace("0.0.0.0:", "127.0.0.1:"), |arg, (from, to)| {
                    arg.replace(from, &to.to_string_lossy())
                })
        })
        .collect()
}

#[tokio::test]
async fn the_helm_test_pod_s_service_account_may_read_all_the_check_needs() {
    let env = TestEnv::shared();
    env.install_crds(&jumpstarter_controller::crd::definitions())
        .await
        .expect("CRDs");
    let chart = Chart::new(env);
    let namespace = env.namespace("check-rbac").await;
    let admin = env.admin_client().await;
    let dir = tempfile::Builder::new()
        .prefix("e2e-check-rbac-")
        .tempdir()
        .expect("tempdir");
    let (grpc_port, router_port, probe_port) = (free_port(), free_port(), free_port());
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        format!(
            r#"
image: {{repository: jumpstarter-service}}
controller:
  grpc: {{endpoint: "127.0.0.1:{grpc_port}", port: {grpc_port}}}
routers:
  replicas: 1
  port: {router_port}
  exposure: {{type: LoadBalancer, port: {router_port}, hosts: ["127.0.0.1"]}}
"#
        ),
    )
    .expect("values");
    let values = values.to_string_lossy().into_owned();
    let chart_dir = chart.dir.to_string_lossy().into_owned();
    let install = chart
        .helm(&["install", "js", &chart_dir, "-n", &namespace, "-f", &values])
        .await
        .expect("helm install");
    assert!(install.ok(), "{install}");
    let rendered = chart
        .template("js", &namespace, Path::new(&values))
        .await
        .expect("render");
    let hook = chart
        .helm(&[
            "template",
            "js",
            &chart_dir,
            "-n",
            &namespace,
            "-f",
            &values,
            "--kube-version",
            jumpstarter_e2e::chart::KUBE_VERSION,
            "--show-only",
            "templates/tests/check.yaml",
        ])
        .await
        .expect("render the test hook");
    assert!(hook.ok(), "{hook}");

    // The controller and the router with the chart's arguments, on loopback.
    let mut cmd = Command::new(bin_path("jumpstarter-controller"));
    cmd.args(on_host(
        &rendered_args(&rendered, "Deployment", "js-jumpstarter-controller"),
        &[
            ("--probe-listen", format!("127.0.0.1:{probe_port}")),
            ("--metrics-listen", format!("127.0.0.1:{probe_port}")),
        ],
        &[],
    ))
    .arg("--kubeconfig")
    .arg(&env.admin_kubeconfig)
    .env("JUMPSTARTER_IDENTITY", "controller-0");
    let mut controller = Proc::spawn("controller", cmd, dir.path().join("controller.log"))
        .expect("spawn controller");
    wait_http_ok(
        &format!("http://127.0.0.1:{probe_port}/readyz"),
        Duration::from_secs(60),
        &mut controller,
    )
    .await
    .expect("controller ready");
    wait_leader(&admin, &namespace).await;
    let secret = Api::<Secret>::namespaced(admin.clone(), &namespace)
        .get("js-jumpstarter-router-0-tls")
        .await
        .expect("router certificate Secret");
    let (tls_dir, keys_dir) = write_router_mounts(&admin, &namespace, &secret, dir.path())
        .await
        .expect("the router's mounts");
    let metrics_port = free_port();
    let router_args = on_host(
        &rendered_args(&rendered, "Deployment", "js-jumpstarter-router-0"),
        &[("--metrics-listen", format!("127.0.0.1:{metrics_port}"))],
        &[
            ("/etc/jumpstarter/tls", &tls_dir),
            ("/etc/jumpstarter/router-token-keys", &keys_dir),
        ],
    );
    assert!(
        router_args.iter().any(|a| a.starts_with("--quic-listen=")),
        "{router_args:?}"
    );
    let mut cmd = Command::new(bin_path("jumpstarter-router"));
    cmd.args(&router_args);
    let mut router =
        Proc::spawn("router", cmd, dir.path().join("router.log")).expect("spawn router");
    wait_http_ok(
        &format!("http://127.0.0.1:{metrics_port}/readyz"),
        Duration::from_secs(30),
        &mut router,
    )
    .await
    .expect("router ready");

    // The test pod's ServiceAccount token, and the pod's own arguments.
    let kubeconfig: PathBuf = dir.path().join("test-pod.kubeconfig");
    service_account_kubeconfig(env, &namespace, "js-jumpstarter-test", &kubeconfig)
        .await
        .expect("the test pod's kubeconfig");
    let pod_args = rendered_args(&hook.stdout, "Pod", "js-jumpstarter-test-check");
    assert_eq!(&pod_args[..2], ["admin", "check"], "{pod_args:?}");
    let run = check(&kubeconfig, None, &pod_args[2..]).await;

    assert!(
        !run.out.to_string().to_lowercase().contains("forbidden"),
        "the check met a forbidden request: {}",
        run.out
    );
    assert_eq!(
        run.failed(),
        BTreeSet::from(["controller/deployment"]),
        "{}\n{}\n{}",
        run.out,
        controller.output(),
        router.output()
    );
    assert_eq!(
        run.detail("controller/deployment"),
        format!("Deployment {namespace}/js-jumpstarter-controller: 0 of 1 pods ready")
    );
    for name in CRD_NAMES {
        assert!(run.detail(name).contains("API discovery"), "{}", run.out);
    }
    assert!(
        run.detail("controller/endpoints").contains(&format!(
            "js-jumpstarter-router-0 127.0.0.1:{router_port} (QUIC 127.0.0.1:{router_port})"
        )),
        "{}",
        run.out
    );
    for name in [
        "controller/ca",
        "controller/leader",
        "controller/tls",
        "controller/grpc",
        "router/js-jumpstarter-router-0/tcp",
        "router/js-jumpstarter-router-0/udp",
    ] {
        assert!(run.checks[name].0, "{name}: {}", run.out);
    }

    // By hand, as admin, without naming the Deployment: found by its labels.
    let by_hand = check(&env.admin_kubeconfig, Some(&namespace), &[]).await;
    assert_eq!(
        by_hand.failed(),
        BTreeSet::from(["controller/deployment"]),
        "{}",
        by_hand.out
    );
    assert_eq!(
        by_hand.detail("controller/endpoints"),
        run.detail("controller/endpoints")
    );

    let uninstall = chart
        .helm(&["uninstall", "js", "-n", &namespace])
        .await
        .expect("helm uninstall");
    assert!(uninstall.ok(), "{uninstall}");
}
