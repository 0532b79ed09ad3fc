//! The Helm chart in `helm/`, against the real kube-apiserver of the test environment.
//!
//! - lint (`--strict`), render every documented option set and the values files shipped
//!   with the chart (`values-ha.yaml`, `values-node.yaml`), and the schema rejects a wrong
//!   type, unknown keys, a missing image and malformed escape hatches;
//! - every rendered set passes a server-side dry run;
//! - install, upgrade with changed values, uninstall: nothing left but the CRDs;
//! - with `values-node.yaml`, the controller run with the chart's arguments writes router
//!   certificates naming 127.0.0.1, the advertised node-port host;
//! - RBAC proof: the controller binary runs out of cluster with a token of the chart's
//!   ServiceAccount (not admin), with the arguments of the chart's Deployment; the router
//!   runs with the certificate Secret the controller wrote for it; the real 0.9.0 client and
//!   exporter complete a lease and `j power on`; SubjectAccessReviews show the
//!   ServiceAccount lacks sensitive permissions the chart does not need.
//!
//! No pods run here (no kubelet): images, probes, volume mounts, Services' data paths and
//! cert-manager itself are not exercised; see the chart's README.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jumpstarter_e2e::chart::{
    Chart, KUBE_VERSION, service_account_kubeconfig, write_router_mounts,
};
use jumpstarter_e2e::{Lab, Mode, Output, Proc, bin_path, free_port, wait_http_ok};
use jumpstarter_testenv::TestEnv;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role};
use kube::api::{Api, ListParams, PostParams};
use tokio::process::Command;

const RELEASE: &str = "js";
/// Prefix of every object of release [`RELEASE`].
const FULLNAME: &str = "js-jumpstarter";
const ONLINE_TIMEOUT: Duration = Duration::from_secs(90);
const SHELL_TIMEOUT: Duration = Duration::from_secs(180);
/// The image every render and install uses: the chart has no default (the project
/// publishes no image), and nothing here pulls it.
const IMAGE_REPOSITORY: &str = "registry.example.com/jumpstarter-service";
/// A well-formed image digest.
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The documented option sets: name and values file content.
fn option_sets() -> Vec<(&'static str, String)> {
    vec![
        ("default", String::new()),
        (
            "loadbalancer",
            r#"
controller:
  grpc: {quic: true}
routers:
  replicas: 3
  exposure:
    type: LoadBalancer
    port: 443
    hosts: [router-a.lab.example.com]
    hostTemplate: "router-{{ .index }}.lab.example.com"
    loadBalancer: {ips: [192.0.2.10]}
"#
            .to_owned(),
        ),
        (
            "nodeport",
            r#"
routers:
  exposure:
    type: NodePort
    nodePort: {host: lab-node.example.com, base: 31400}
"#
            .to_owned(),
        ),
        (
            "hostport",
            r#"
routers:
  replicas: 2
  exposure:
    type: HostPort
    hostPort: {nodeNames: [node-a, node-b]}
"#
            .to_owned(),
        ),
        (
            "certmanager-selfsigned",
            "certManager: {enabled: true}\n".to_owned(),
        ),
        (
            "certmanager-issuer",
            "certManager: {enabled: true, issuerRef: {name: lab-ca, kind: ClusterIssuer}}\n"
                .to_owned(),
        ),
        (
            "ingress",
            r#"
controller:
  replicas: 2
  ingress: {enabled: true, className: nginx, host: jumpstarter.lab.example.com}
"#
            .to_owned(),
        ),
        (
            "route",
            "controller: {route: {enabled: true, host: jumpstarter.apps.example.com}}\n".to_owned(),
        ),
        (
            "no-quic-servicemonitor-text-logs",
            r#"
logFormat: text
routers: {quic: {enabled: false}, podDisruptionBudget: {enabled: false}}
serviceMonitor: {enabled: true, labels: {release: prometheus}}
prometheusRule: {enabled: true, labels: {release: prometheus}}
grafanaDashboard: {enabled: true}
"#
            .to_owned(),
        ),
        (
            "escape-hatches",
            format!(
                r#"
image: {{tag: 0.1.0-rc1, digest: "{DIGEST}"}}
controller:
  service:
    type: LoadBalancer
    loadBalancerSourceRanges: [192.0.2.0/24, "2001:db8::/32"]
  extraArgs: [--hidden-label=internal.example.com/owner]
  extraEnv:
    - {{name: HTTPS_PROXY, value: "http://proxy.lab.example.com:3128"}}
    - {{name: NODE_NAME, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
  podLabels: {{team: lab-infra}}
  podAnnotations: {{example.com/owner: lab-infra}}
  priorityClassName: lab-high
  topologySpreadConstraints:
    - {{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}}
routers:
  exposure:
    type: LoadBalancer
    hostTemplate: "router-{{{{ .index }}}}.lab.example.com"
    loadBalancer: {{loadBalancerSourceRanges: [198.51.100.0/24]}}
  extraArgs: [--max-pending=20000]
  extraEnv: [{{name: RUST_BACKTRACE, value: "1"}}]
  podLabels: {{team: lab-infra}}
  priorityClassName: lab-high
  topologySpreadConstraints:
    - maxSkew: 1
      topologyKey: kubernetes.io/hostname
      whenUnsatisfiable: DoNotSchedule
      labelSelector: {{matchLabels: {{app.kubernetes.io/component: router}}}}
"#
            ),
        ),
        ("values-ha", chart_file("values-ha.yaml")),
        ("values-node", chart_file("values-node.yaml")),
        (
            "three-controllers",
            "controller: {replicas: 3}\n".to_owned(),
        ),
        ("upstream-config", UPSTREAM_CONFIG_VALUES.to_owned()),
    ]
}

/// Values with the 0.9.0 configuration under `config`, as the upstream chart takes it.
const UPSTREAM_CONFIG_VALUES: &str = r#"
config:
  authentication:
    internal: {prefix: "internal:"}
    jwt:
      - issuer:
          url: "https://dex.lab.example.com"
          audiences: [jumpstarter-cli, jumpstarter-dashboard]
          audienceMatchPolicy: MatchAny
        claimMappings: {username: {claim: email, prefix: "dex:"}}
  provisioning: {enabled: true}
  grpc: {keepalive: {minTime: 3s, permitWithoutStream: true}}
  deprecatedLabels: {keys: {pool: "use env instead"}}
controller:
  login: {enabled: true, host: login.lab.example.com}
  dashboard:
    enabled: true
    oidc:
      clientId: jumpstarter-dashboard
      clientSecretName: dashboard-oidc
      url: https://lab.example.com
      admins: ["dex:alice@example.com", "dex:bob@example.com"]
      adminGroups: [lab-admins]
      userGroups: [lab, ci]
"#;

/// A values file shipped with the chart.
fn chart_file(name: &str) -> String {
    let path = jumpstarter_testenv::repo_root().join("helm").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The values every render starts from: the required image repository.
fn image_values(dir: &Path) -> PathBuf {
    write_values(
        dir,
        "image",
        &format!("image: {{repository: {IMAGE_REPOSITORY}}}\n"),
    )
}

/// The named Service's ports as (name, port, protocol).
fn service_ports(svc: &serde_json::Value) -> Vec<(String, i64, String)> {
    svc["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["port"].as_i64().expect("port"),
                p["protocol"].as_str().unwrap_or("TCP").to_owned(),
            )
        })
        .collect()
}

/// The selector labels of a component's pods in release [`RELEASE`].
fn component_selector(component: &str) -> serde_json::Value {
    serde_json::json!({
        "app.kubernetes.io/name": "jumpstarter",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": component,
    })
}

fn write_values(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, content).expect("write values");
    path
}

/// Parses a multi-document YAML stream into its non-empty documents.
fn documents(rendered: &str) -> Vec<serde_json::Value> {
    rendered
        .split("\n---")
        .filter_map(|doc| serde_norway::from_str::<serde_json::Value>(doc).ok())
        .filter(|v| v.is_object())
        .collect()
}

/// The alerts every installation should have, by name.
const ALERTS: [&str; 4] = [
    "JumpstarterNoLeader",
    "JumpstarterReconcileErrorsRising",
    "JumpstarterTLSHandshakeFailures",
    "JumpstarterCertificateExpiresSoon",
];

/// The PrometheusRule and the Grafana dashboard of a render with both on: the four alerts,
/// the rules file accepted by `promtool check rules`, a dashboard the sidecar picks up.
fn monitoring(docs: &[serde_json::Value]) {
    let rule = find(docs, "PrometheusRule", FULLNAME);
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let alerts: Vec<&str> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter_map(|r| r["alert"].as_str())
        .collect();
    assert_eq!(alerts, ALERTS);
    promtool_check(&rule["spec"]);
    let config_map = find(docs, "ConfigMap", &format!("{FULLNAME}-dashboard"));
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
    let dashboard: serde_json::Value = serde_json::from_str(
        config_map["data"]["jumpstarter.json"]
            .as_str()
            .expect("dashboard JSON"),
    )
    .expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "jumpstarter");
    assert!(
        dashboard["panels"]
            .as_array()
            .is_some_and(|p| p.len() >= 10)
    );
}

/// `promtool check rules` on the rule groups `spec` (the binary from `$PROMTOOL`, built
/// from the Go module proxy by the test command).
fn promtool_check(spec: &serde_json::Value) {
    let promtool = std::env::var("PROMTOOL").expect(
        "PROMTOOL names the promtool binary (tools/promtool-bin/build.sh builds it; the test \
         command exports it)",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, serde_norway::to_string(spec).expect("rules YAML")).expect("write");
    let out = std::process::Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("{promtool}: {e}"));
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn find<'a>(docs: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// `helm <verb> RELEASE [<chart>] -n <namespace> <rest...>` (the chart for `install` and
/// `upgrade`), which must succeed; its output.
async fn release(chart: &Chart, verb: &str, namespace: &str, rest: &[&str]) -> Output {
    let chart_dir = chart.dir.to_string_lossy();
    let mut args = vec![verb, RELEASE];
    if verb != "uninstall" {
        args.push(&chart_dir);
    }
    args.extend(["-n", namespace]);
    let image = format!("image.repository={IMAGE_REPOSITORY}");
    if verb != "uninstall" {
        args.extend(["--set", &image]);
    }
    args.extend_from_slice(rest);
    let out = chart
        .helm(&args)
        .await
        .unwrap_or_else(|e| panic!("helm {verb}: {e:#}"));
    assert!(out.ok(), "helm {verb}: {out}");
    out
}

fn container_args(deployment: &serde_json::Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_owned())
        .collect()
}

/// The "escape-hatches" option set: each value reaches the objects it names.
fn escape_hatches(docs: &[serde_json::Value], controller_args: &[String]) {
    let controller = find(docs, "Deployment", &format!("{FULLNAME}-controller"));
    let pod = &controller["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"],
        format!("{IMAGE_REPOSITORY}:0.1.0-rc1@{DIGEST}")
    );
    assert_eq!(
        controller_args.last().map(String::as_str),
        Some("--hidden-label=internal.example.com/owner"),
        "extraArgs come last"
    );
    let env = container["env"].as_array().expect("env");
    assert_eq!(env[0]["name"], "RUST_LOG");
    assert_eq!(env[3]["name"], "HTTPS_PROXY");
    assert_eq!(env[3]["value"], "http://proxy.lab.example.com:3128");
    assert_eq!(
        env[4]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    let meta = &controller["spec"]["template"]["metadata"];
    assert_eq!(meta["labels"]["team"], "lab-infra");
    assert_eq!(meta["annotations"]["example.com/owner"], "lab-infra");
    assert_eq!(pod["priorityClassName"], "lab-high");
    let spread = &pod["topologySpreadConstraints"];
    assert_eq!(spread[0]["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(
        spread[0]["labelSelector"]["matchLabels"],
        component_selector("controller"),
        "a constraint without labelSelector counts the controller pods"
    );
    let svc = find(docs, "Service", &format!("{FULLNAME}-controller"));
    assert_eq!(svc["spec"]["type"], "LoadBalancer");
    assert_eq!(
        svc["spec"]["loadBalancerSourceRanges"],
        serde_json::json!(["192.0.2.0/24", "2001:db8::/32"])
    );
    for i in 0..2 {
        let router = find(docs, "Deployment", &format!("{FULLNAME}-router-{i}"));
        let pod = &router["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(
            container["image"],
            format!("{IMAGE_REPOSITORY}:0.1.0-rc1@{DIGEST}")
        );
        let args = container_args(router);
        assert_eq!(args.last().map(String::as_str), Some("--max-pending=20000"));
        let env = container["env"].as_array().expect("env");
        assert_eq!(
            env.last().map(|e| e["name"].clone()),
            Some("RUST_BACKTRACE".into())
        );
        assert_eq!(
            router["spec"]["template"]["metadata"]["labels"]["team"],
            "lab-infra"
        );
        assert_eq!(pod["priorityClassName"], "lab-high");
        assert_eq!(
            pod["topologySpreadConstraints"][0]["labelSelector"],
            serde_json::json!({"matchLabels": {"app.kubernetes.io/component": "router"}}),
            "a given labelSelector is kept"
        );
        let svc = find(docs, "Service", &format!("{FULLNAME}-router-{i}"));
        assert_eq!(svc["spec"]["type"], "LoadBalancer");
        assert_eq!(
            svc["spec"]["loadBalancerSourceRanges"],
            serde_json::json!(["198.51.100.0/24"])
        );
    }
}

/// The metric names a PromQL text uses (`jumpstarter_*`, `process_*`).
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        let starts = (rest.starts_with("jumpstarter_") || rest.starts_with("process_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if starts {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.push(rest[..len].to_owned());
            i += len;
        } else {
            i += 1;
        }
    }
    names
}

/// Whether the scraped `exposition` declares the metric a series `name` belongs to.
fn declares(exposition: &str, name: &str) -> bool {
    let base = ["_bucket", "_count", "_sum"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name);
    let declared = |n: &str| {
        exposition
            .lines()
            .any(|l| l.starts_with(&format!("# TYPE {n} ")))
    };
    declared(base) || base.strip_suffix("_total").is_some_and(declared)
}

/// Every metric the chart's alerts and dashboard use is one the controller or the router
/// binary exports (a renamed metric would silently blank a panel or never fire an alert).
#[tokio::test]
async fn the_alerts_and_the_dashboard_use_metrics_the_binaries_export() {
    let env = TestEnv::shared();
    let chart = Chart::new(env);
    let dir = tempfile::tempdir().expect("tempdir");
    let image = image_values(dir.path());
    let values = write_values(
        dir.path(),
        "monitoring",
        "prometheusRule: {enabled: true}\ngrafanaDashboard: {enabled: true}\n",
    );
    let docs = documents(
        &chart
            .render(RELEASE, "lab", &[&image, &values])
            .await
            .expect("render"),
    );
    let rule = find(&docs, "PrometheusRule", FULLNAME);
    let mut used: Vec<String> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .flat_map(|r| metric_names(r["expr"].as_str().unwrap_or_default()))
        .collect();
    let config_map = find(&docs, "ConfigMap", &format!("{FULLNAME}-dashboard"));
    used.extend(metric_names(
        config_map["data"]["jumpstarter.json"]
            .as_str()
            .expect("dashboard"),
    ));
    used.sort();
    used.dedup();
    assert!(used.len() >= 15, "{used:?}");

    // Both binaries, with traffic behind every family the chart uses: a session through
    // the router (gRPC calls, relayed bytes, pairing) and plaintext sent to both TLS ports
    // (handshake failures). QUIC metrics come from the standalone service, whose embedded
    // router serves QUIC.
    let mut lab = Lab::start(Mode::Kubernetes, "e2e-metric-names")
        .await
        .expect("start lab");
    lab.start_exporter("board-1", &["board=mock"])
        .await
        .expect("exporter");
    let client = lab.create_client("alice").await.expect("client");
    lab.wait_exporter_condition("board-1", "Online", "True", Duration::from_secs(90))
        .await
        .expect("online");
    let shell = lab
        .jmp(
            &[
                "shell",
                "--client-config",
                &client.to_string_lossy(),
                "-l",
                "board=mock",
                "--",
                "j",
                "power",
                "on",
            ],
            Duration::from_secs(180),
        )
        .await
        .expect("jmp shell");
    assert!(shell.ok(), "jmp shell: {shell}");
    for endpoint in [lab.grpc_endpoint(), lab.router_endpoint()] {
        let _ = std::process::Command::new("curl")
            .args(["-s", "--max-time", "5", "-o", "/dev/null"])
            .arg(format!("http://{endpoint}/"))
            .status();
    }
    let standalone = Lab::start(Mode::Standalone, "e2e-metric-names")
        .await
        .expect("start the standalone service");
    let scrape = |port: u16| {
        let out = std::process::Command::new("curl")
            .args(["-sf", "--max-time", "10"])
            .arg(format!("http://127.0.0.1:{port}/metrics"))
            .output()
            .expect("curl");
        assert!(out.status.success(), "scraping port {port} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The handshake failures are counted once the connections are dropped.
    let deadline = Instant::now() + Duration::from_secs(10);
    let exposition = loop {
        let text = format!(
            "{}\n{}\n{}",
            scrape(lab.probe_port),
            scrape(lab.router_metrics_port.expect("the router runs")),
            scrape(standalone.probe_port)
        );
        if text.contains("jumpstarter_router_tls_handshake_failures_total")
            || Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let missing: Vec<&String> = used.iter().filter(|n| !declares(&exposition, n)).collect();
    assert!(
        missing.is_empty(),
        "metrics the chart uses but no binary exports: {missing:?}"
    );
}

#[tokio::test]
async fn lint_render_and_schema() {
    let env = TestEnv::shared();
    let chart = Chart::new(env);
    let dir = tempfile::tempdir().expect("tempdir");
    let chart_dir = chart.dir.to_string_lossy().into_owned();
    let image = image_values(dir.path());

    for (name, values) in option_sets() {
        let file = write_values(dir.path(), name, &values);
        let lint = chart
            .helm(&[
                "lint",
                "--strict",
                &chart_dir,
                "-f",
                &image.to_string_lossy(),
                "-f",
                &file.to_string_lossy(),
            ])
            .await
            .expect("helm lint");
        assert!(lint.ok(), "helm lint --strict ({name}): {lint}");
        let docs = documents(
            &chart
                .render(RELEASE, "lab", &[&image, &file])
                .await
                .expect(name),
        );
        let controller = find(&docs, "Deployment", &format!("{FULLNAME}-controller"));
        let args = container_args(controller);
        assert!(
            args.contains(&"--leader-elect".to_owned()),
            "{name}: {args:?}"
        );
        assert!(args.contains(&"--router-cert-secrets".to_owned()));
        assert!(args.contains(&format!("--owner-deployment={FULLNAME}-controller")));
        // Peers reach each replica on its pod IP, from the downward API.
        let grpc_port =
            controller["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
                .as_i64()
                .expect("gRPC port");
        assert!(
            args.contains(&format!("--peer-endpoint=$(POD_IP):{grpc_port}")),
            "{name}: {args:?}"
        );
        let env = controller["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .expect("env");
        assert!(
            env.iter().any(|e| e["name"] == "POD_IP"
                && e["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"),
            "{name}: {env:?}"
        );
        // The 0.9.0 configuration: ConfigMap jumpstarter-controller (which the controller
        // reads by default) only when `config` is set.
        let upstream = docs.iter().find(|d| {
            d["kind"] == "ConfigMap" && d["metadata"]["name"] == "jumpstarter-controller"
        });
        if name != "upstream-config" {
            assert!(
                upstream.is_none(),
                "{name}: no upstream ConfigMap without `config`"
            );
        }
        let routers: Vec<&String> = args.iter().filter(|a| a.starts_with("--router=")).collect();
        let security = &controller["spec"]["template"]["spec"]["containers"][0]["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["capabilities"]["drop"][0], "ALL");
        assert_eq!(
            controller["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
            true
        );

        // Metrics only on in-cluster Services: the controller's gRPC Service (maybe a
        // LoadBalancer or NodePort) and the routers' client-facing Services carry none.
        let grpc_svc = find(&docs, "Service", &format!("{FULLNAME}-controller"));
        assert!(
            service_ports(grpc_svc)
                .iter()
                .all(|(port_name, port, _)| port_name != "metrics" && *port != 8080),
            "{name}: metrics on the controller's gRPC Service: {grpc_svc}"
        );
        let metrics = find(&docs, "Service", &format!("{FULLNAME}-controller-metrics"));
        assert_eq!(metrics["spec"]["type"], "ClusterIP", "{name}");
        assert_eq!(
            service_ports(metrics),
            [("metrics".to_owned(), 8080, "TCP".to_owned())]
        );
        assert_eq!(
            metrics["spec"]["selector"],
            component_selector("controller")
        );
        let router_metrics = find(&docs, "Service", &format!("{FULLNAME}-router-metrics"));
        assert_eq!(router_metrics["spec"]["type"], "ClusterIP");
        assert_eq!(
            router_metrics["spec"]["selector"],
            component_selector("router")
        );
        for svc in docs.iter().filter(|d| d["kind"] == "Service") {
            let is_metrics = svc["metadata"]["labels"]["jumpstarter.dev/metrics"] == "true";
            let has_metrics = service_ports(svc)
                .iter()
                .any(|(port_name, _, _)| port_name == "metrics");
            assert_eq!(is_metrics, has_metrics, "{name}: {svc}");
            assert!(
                !has_metrics || svc["spec"]["type"] == "ClusterIP",
                "{name}: {svc}"
            );
        }
        // Pod labels always hold the selector, whatever podLabels say.
        for deployment in docs.iter().filter(|d| d["kind"] == "Deployment") {
            let labels = &deployment["spec"]["template"]["metadata"]["labels"];
            let selector = deployment["spec"]["selector"]["matchLabels"]
                .as_object()
                .expect("matchLabels");
            for (key, value) in selector {
                assert_eq!(&labels[key], value, "{name}: {deployment}");
            }
        }

        match name {
            "default" => {
                assert_eq!(
                    controller["spec"]["template"]["spec"]["containers"][0]["image"],
                    format!("{IMAGE_REPOSITORY}:0.1.0"),
                    "the tag defaults to the appVersion"
                );
                let pod = &controller["spec"]["template"]["spec"];
                assert!(pod["priorityClassName"].is_null());
                assert!(pod["topologySpreadConstraints"].is_null());
                assert!(grpc_svc["spec"]["loadBalancerSourceRanges"].is_null());
                assert_eq!(routers.len(), 2);
                assert!(args.contains(&"--log-format=json".to_owned()));
                assert!(args.contains(&format!(
                    "--grpc-endpoint={FULLNAME}-controller.lab.svc:8082"
                )));
                assert_eq!(
                    routers[0],
                    &format!(
                        "--router={FULLNAME}-router-0={FULLNAME}-router-0.lab.svc:8083;quic={FULLNAME}-router-0.lab.svc:8083"
                    )
                );
                let router = find(&docs, "Deployment", &format!("{FULLNAME}-router-1"));
                assert_eq!(router["spec"]["strategy"]["type"], "Recreate");
                let spec = &router["spec"]["template"]["spec"];
                assert_eq!(spec["automountServiceAccountToken"], false);
                assert_eq!(spec["terminationGracePeriodSeconds"], 5 + 60 + 10);
                assert_eq!(
                    spec["volumes"][0]["secret"]["secretName"],
                    format!("{FULLNAME}-router-1-tls")
                );
                let rargs = container_args(router);
                assert!(rargs.contains(&"--shutdown-delay=5s".to_owned()));
                assert!(rargs.contains(&"--quic-listen=0.0.0.0:8083".to_owned()));
                let pdb = find(&docs, "PodDisruptionBudget", &format!("{FULLNAME}-router"));
                assert_eq!(pdb["spec"]["maxUnavailable"], 1);
                assert!(
                    !docs
                        .iter()
                        .any(|d| d["kind"] == "ClusterRole" || d["kind"] == "ClusterRoleBinding"),
                    "a namespaced install needs nothing cluster-wide"
                );
            }
            "loadbalancer" => {
                assert!(args.contains(&"--grpc-quic-listen=0.0.0.0:8082".to_owned()));
                let controller_svc = find(&docs, "Service", &format!("{FULLNAME}-controller"));
                assert!(
                    controller_svc["spec"]["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["protocol"] == "UDP" && p["port"] == 8082),
                    "the controller Service carries gRPC over QUIC on UDP"
                );
                assert_eq!(routers.len(), 3);
                assert!(
                    routers[0].ends_with(
                        "=router-a.lab.example.com:443;quic=router-a.lab.example.com:443"
                    )
                );
                assert!(
                    routers[2].ends_with(
                        "=router-2.lab.example.com:443;quic=router-2.lab.example.com:443"
                    )
                );
                for i in 0..3 {
                    let svc = find(&docs, "Service", &format!("{FULLNAME}-router-{i}"));
                    assert_eq!(svc["spec"]["type"], "LoadBalancer");
                    let protocols: Vec<&str> = svc["spec"]["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| p["protocol"].as_str().unwrap())
                        .collect();
                    assert_eq!(protocols, ["TCP", "UDP"]);
                    assert_eq!(
                        svc["spec"]["selector"]["jumpstarter.dev/router"],
                        format!("{FULLNAME}-router-{i}")
                    );
                }
                let svc0 = find(&docs, "Service", &format!("{FULLNAME}-router-0"));
                assert_eq!(svc0["spec"]["loadBalancerIP"], "192.0.2.10");
            }
            "nodeport" => {
                assert!(
                    routers[1]
                        .ends_with("=lab-node.example.com:31401;quic=lab-node.example.com:31401")
                );
                let svc = find(&docs, "Service", &format!("{FULLNAME}-router-1"));
                assert_eq!(svc["spec"]["type"], "NodePort");
                assert_eq!(svc["spec"]["ports"][0]["nodePort"], 31401);
                assert_eq!(svc["spec"]["ports"][1]["nodePort"], 31401);
            }
            "hostport" => {
                assert!(routers[1].ends_with("=node-b:8083;quic=node-b:8083"));
                let router = find(&docs, "Deployment", &format!("{FULLNAME}-router-1"));
                let spec = &router["spec"]["template"]["spec"];
                assert_eq!(spec["nodeSelector"]["kubernetes.io/hostname"], "node-b");
                assert_eq!(spec["containers"][0]["ports"][0]["hostPort"], 8083);
                assert_eq!(spec["containers"][0]["ports"][1]["protocol"], "UDP");
            }
            "certmanager-selfsigned" | "certmanager-issuer" => {
                assert!(args.contains(&format!("--ca-secret={FULLNAME}-ca")));
                let cert = find(&docs, "Certificate", &format!("{FULLNAME}-ca"));
                assert_eq!(cert["spec"]["isCA"], true);
                assert_eq!(cert["spec"]["privateKey"]["encoding"], "PKCS8");
                let self_signed = docs.iter().any(|d| d["kind"] == "Issuer");
                assert_eq!(self_signed, name == "certmanager-selfsigned");
                if name == "certmanager-issuer" {
                    assert_eq!(cert["spec"]["issuerRef"]["kind"], "ClusterIssuer");
                }
            }
            "ingress" => {
                assert!(
                    args.contains(&"--grpc-endpoint=jumpstarter.lab.example.com:443".to_owned())
                );
                let ingress = find(&docs, "Ingress", &format!("{FULLNAME}-controller"));
                assert_eq!(
                    ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/ssl-passthrough"],
                    "true"
                );
                find(
                    &docs,
                    "PodDisruptionBudget",
                    &format!("{FULLNAME}-controller"),
                );
            }
            "route" => {
                let route = find(&docs, "Route", &format!("{FULLNAME}-controller"));
                assert_eq!(route["spec"]["tls"]["termination"], "passthrough");
                assert!(
                    args.contains(&"--grpc-endpoint=jumpstarter.apps.example.com:443".to_owned())
                );
            }
            "no-quic-servicemonitor-text-logs" => {
                assert!(routers.iter().all(|r| !r.contains("quic=")));
                assert!(args.contains(&"--log-format=text".to_owned()));
                let monitor = find(&docs, "ServiceMonitor", FULLNAME);
                assert_eq!(
                    monitor["spec"]["selector"]["matchLabels"]["jumpstarter.dev/metrics"], "true",
                    "the ServiceMonitor selects only the metrics Services"
                );
                monitoring(&docs);
                let svc = find(&docs, "Service", &format!("{FULLNAME}-router-0"));
                assert_eq!(svc["spec"]["ports"].as_array().unwrap().len(), 1);
                assert!(!docs.iter().any(|d| d["kind"] == "PodDisruptionBudget"));
            }
            "escape-hatches" => escape_hatches(&docs, &args),
            "three-controllers" => {
                assert_eq!(controller["spec"]["replicas"], 3);
                let pdb = find(
                    &docs,
                    "PodDisruptionBudget",
                    &format!("{FULLNAME}-controller"),
                );
                assert_eq!(pdb["spec"]["maxUnavailable"], 1);
            }
            "values-ha" => {
                assert_eq!(controller["spec"]["replicas"], 2);
                let pod = &controller["spec"]["template"]["spec"];
                let spread = &pod["topologySpreadConstraints"];
                assert_eq!(spread.as_array().unwrap().len(), 1);
                assert_eq!(spread[0]["topologyKey"], "kubernetes.io/hostname");
                assert_eq!(spread[0]["whenUnsatisfiable"], "DoNotSchedule");
                assert_eq!(
                    spread[0]["labelSelector"]["matchLabels"],
                    component_selector("controller")
                );
                find(
                    &docs,
                    "PodDisruptionBudget",
                    &format!("{FULLNAME}-controller"),
                );
                let pdb = find(&docs, "PodDisruptionBudget", &format!("{FULLNAME}-router"));
                assert_eq!(pdb["spec"]["maxUnavailable"], 1);
                assert_eq!(
                    pdb["spec"]["selector"]["matchLabels"],
                    component_selector("router")
                );
                assert_eq!(routers.len(), 3);
                for i in 0..3 {
                    let router = find(&docs, "Deployment", &format!("{FULLNAME}-router-{i}"));
                    let spread = &router["spec"]["template"]["spec"]["topologySpreadConstraints"];
                    assert_eq!(spread[0]["topologyKey"], "kubernetes.io/hostname");
                    // Every router pod of the release, not only this Deployment's one.
                    assert_eq!(
                        spread[0]["labelSelector"]["matchLabels"],
                        component_selector("router"),
                        "router {i}"
                    );
                }
            }
            "values-node" => {
                let container = &controller["spec"]["template"]["spec"]["containers"][0];
                assert_eq!(container["imagePullPolicy"], "Never");
                assert_eq!(container["image"], format!("{IMAGE_REPOSITORY}:0.1.0"));
                for expected in [
                    "--grpc-endpoint=127.0.0.1:30082",
                    "--grpc-quic-listen=0.0.0.0:8082",
                    "--tls-san=127.0.0.1",
                ] {
                    assert!(args.contains(&expected.to_owned()), "{expected}: {args:?}");
                }
                assert_eq!(
                    routers,
                    [
                        &format!(
                            "--router={FULLNAME}-router-0=127.0.0.1:30083;quic=127.0.0.1:30083"
                        ),
                        &format!(
                            "--router={FULLNAME}-router-1=127.0.0.1:30084;quic=127.0.0.1:30084"
                        ),
                    ]
                );
                let svc = find(&docs, "Service", &format!("{FULLNAME}-controller"));
                assert_eq!(svc["spec"]["type"], "NodePort");
                let node_ports: Vec<(&str, i64)> = svc["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| {
                        (
                            p["protocol"].as_str().unwrap(),
                            p["nodePort"].as_i64().unwrap(),
                        )
                    })
                    .collect();
                assert_eq!(node_ports, [("TCP", 30082), ("UDP", 30082)]);
                for i in 0..2 {
                    let svc = find(&docs, "Service", &format!("{FULLNAME}-router-{i}"));
                    assert_eq!(svc["spec"]["type"], "NodePort");
                    for port in svc["spec"]["ports"].as_array().unwrap() {
                        assert_eq!(port["nodePort"], 30083 + i, "router {i}: {svc}");
                    }
                    assert_eq!(svc["spec"]["ports"].as_array().unwrap().len(), 2);
                    let router = find(&docs, "Deployment", &format!("{FULLNAME}-router-{i}"));
                    assert_eq!(
                        router["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
                        "Never"
                    );
                }
            }
            "upstream-config" => {
                // Rendered as the controller parses it.
                let text = upstream.expect("the upstream ConfigMap")["data"]["config"]
                    .as_str()
                    .expect("key config");
                let parsed =
                    jumpstarter_controller::upstream::UpstreamConfig::parse(Some(text), None, None)
                        .expect("the controller reads the rendered configuration");
                assert!(parsed.provisioning);
                assert_eq!(parsed.authentication.jwt.len(), 1);
                assert_eq!(
                    parsed.deprecated_labels.get("pool").map(String::as_str),
                    Some("use env instead")
                );
                assert!(
                    controller["spec"]["template"]["metadata"]["annotations"]
                        ["checksum/upstream-config"]
                        .is_string(),
                    "a changed configuration restarts the controller"
                );
                // The login service: its flag, its host among the certificate's names, and
                // port `login` on the controller's Service.
                assert!(
                    args.contains(&"--login-listen=0.0.0.0:8086".to_owned()),
                    "{args:?}"
                );
                assert!(
                    args.contains(&"--tls-san=login.lab.example.com".to_owned()),
                    "{args:?}"
                );
                let service = docs
                    .iter()
                    .find(|d| {
                        d["kind"] == "Service"
                            && d["metadata"]["name"] == controller["metadata"]["name"]
                    })
                    .expect("controller Service");
                let ports = service["spec"]["ports"].as_array().expect("ports");
                assert!(
                    ports
                        .iter()
                        .any(|p| p["name"] == "login" && p["port"] == 8086),
                    "{ports:?}"
                );
                // The dashboard: its flags, its credential from a generated Secret mounted
                // read-only, and port `dashboard` on the controller's Service.
                assert!(
                    args.contains(&"--dashboard-listen=0.0.0.0:8084".to_owned())
                        && args.contains(
                            &"--dashboard-token-file=/etc/jumpstarter/dashboard/token".to_owned()
                        ),
                    "{args:?}"
                );
                assert!(
                    ports
                        .iter()
                        .any(|p| p["name"] == "dashboard" && p["port"] == 8084),
                    "{ports:?}"
                );
                // Its single sign-on: the client, the URL, the admins, the default scopes
                // and session, and the client secret mounted read-only from its Secret.
                for flag in [
                    "--dashboard-oidc-client-id=jumpstarter-dashboard",
                    "--dashboard-url=https://lab.example.com",
                    "--dashboard-admin=dex:alice@example.com,dex:bob@example.com",
                    "--dashboard-admin-group=lab-admins",
                    "--dashboard-user-group=lab,ci",
                    "--dashboard-oidc-scopes=openid,profile,email",
                    "--dashboard-session-ttl=12h",
                    "--dashboard-oidc-client-secret-file=/etc/jumpstarter/dashboard-oidc/client-secret",
                ] {
                    assert!(args.contains(&flag.to_owned()), "{flag} not in {args:?}");
                }
                let pod_spec = &controller["spec"]["template"]["spec"];
                assert_eq!(
                    pod_spec["volumes"][1]["secret"]["secretName"], "dashboard-oidc",
                    "{pod_spec}"
                );
                assert_eq!(
                    pod_spec["containers"][0]["volumeMounts"][1]["mountPath"],
                    "/etc/jumpstarter/dashboard-oidc"
                );
                let pod = &controller["spec"]["template"]["spec"];
                let secret_name = pod["volumes"][0]["secret"]["secretName"]
                    .as_str()
                    .expect("the dashboard token volume");
                let secret = docs
                    .iter()
                    .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == secret_name)
                    .expect("the generated dashboard Secret");
                let token = secret["data"]["token"].as_str().expect("token");
                let token =
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, token)
                        .expect("base64");
                assert_eq!(token.len(), 48);
                assert_eq!(
                    pod["containers"][0]["volumeMounts"][0]["readOnly"],
                    serde_json::Value::Bool(true)
                );
                // The 0.9.0 configuration decides the tag limit and token lifetime unless
                // the chart's values set them.
                assert!(
                    !args.iter().any(|a| a.starts_with("--max-tags")),
                    "{args:?}"
                );
                assert!(
                    !args.iter().any(|a| a.starts_with("--token-lifetime")),
                    "{args:?}"
                );
            }
            other => panic!("unchecked option set {other}"),
        }
        if name != "ingress" {
            assert!(!docs.iter().any(|d| d["kind"] == "Ingress"), "{name}");
        }
        if name != "route" {
            assert!(!docs.iter().any(|d| d["kind"] == "Route"), "{name}");
        }
    }

    // The schema rejects a wrong type, an unknown top-level key, an unknown nested key, a
    // value outside an enum and malformed image and escape-hatch values; a missing required
    // host fails with a message naming it.
    let image_set = format!("image.repository={IMAGE_REPOSITORY}");
    for (set, expect) in [
        (
            "routers.replicas=many",
            "'/routers/replicas': got string, want integer",
        ),
        (
            "controller.replicas=true",
            "'/controller/replicas': got boolean",
        ),
        ("colour=blue", "additional properties 'colour' not allowed"),
        (
            "routers.exposure.portt=1",
            "additional properties 'portt' not allowed",
        ),
        (
            "routers.exposure.type=Ingress",
            "'/routers/exposure/type': value must be one of",
        ),
        ("logFormat=xml", "'/logFormat': value must be one of"),
        (
            "image.digest=sha256:0123",
            "'/image/digest': 'sha256:0123' does not match",
        ),
        (
            "image.repository=registry.example.com/js:0.1.0",
            "'/image/repository': 'registry.example.com/js:0.1.0' does not match",
        ),
        (
            "controller.podLabels.app\\.kubernetes\\.io/component=other",
            "invalid propertyName 'app.kubernetes.io/component'",
        ),
        (
            "routers.podLabels.jumpstarter\\.dev/router=other",
            "invalid propertyName 'jumpstarter.dev/router'",
        ),
        (
            "controller.podLabels.team=not a label value",
            "'/controller/podLabels/team': 'not a label value' does not match",
        ),
        (
            "routers.extraEnv[0].value=1",
            "'/routers/extraEnv/0': missing property 'name'",
        ),
        (
            "controller.extraArgs=--verbose",
            "'/controller/extraArgs': got string, want array",
        ),
        (
            "controller.service.loadBalancerSourceRanges[0]=10.0.0.1",
            "'/controller/service/loadBalancerSourceRanges/0': '10.0.0.1' does not match",
        ),
        (
            "routers.exposure.loadBalancer.loadBalancerSourceRanges[0]=any",
            "'/routers/exposure/loadBalancer/loadBalancerSourceRanges/0': 'any' does not match",
        ),
        (
            "routers.topologySpreadConstraints[0].maxSkew=1",
            "'/routers/topologySpreadConstraints/0': missing properties 'topologyKey', 'whenUnsatisfiable'",
        ),
        (
            "controller.priorityClassName=High_Priority",
            "'/controller/priorityClassName': 'High_Priority' does not match",
        ),
    ] {
        let out = chart
            .helm(&[
                "template", RELEASE, &chart_dir, "--set", &image_set, "--set", set,
            ])
            .await
            .expect("helm template");
        assert!(!out.ok(), "--set {set} was accepted");
        assert!(
            out.stderr.contains("schema") && out.stderr.contains(expect),
            "--set {set}: {out}"
        );
    }
    let out = chart
        .helm(&[
            "template",
            RELEASE,
            &chart_dir,
            "--kube-version",
            KUBE_VERSION,
            "--set",
            &image_set,
            "--set",
            "routers.exposure.type=LoadBalancer",
        ])
        .await
        .expect("helm template");
    assert!(
        !out.ok() && out.stderr.contains("hostTemplate"),
        "LoadBalancer without hosts: {out}"
    );

    // No image, no install: the schema says what to do, and so do the templates when the
    // schema is skipped.
    let out = chart
        .helm(&["template", RELEASE, &chart_dir])
        .await
        .expect("helm template");
    assert!(
        !out.ok()
            && out.stderr.contains(
                "'/image': missing property 'repository: set image.repository to the image built from this repository Dockerfile"
            ),
        "no image repository: {out}"
    );
    let out = chart
        .helm(&[
            "template",
            RELEASE,
            &chart_dir,
            "--kube-version",
            KUBE_VERSION,
            "--skip-schema-validation",
        ])
        .await
        .expect("helm template");
    assert!(
        !out.ok()
            && out.stderr.contains(
                "image.repository is required: build the image from this repository's Dockerfile"
            ),
        "no image repository, schema skipped: {out}"
    );
    // Even with the schema skipped, podLabels cannot change what the selectors match.
    let out = chart
        .helm(&[
            "template",
            RELEASE,
            &chart_dir,
            "--kube-version",
            KUBE_VERSION,
            "--skip-schema-validation",
            "--set",
            &image_set,
            "--set",
            "controller.podLabels.app\\.kubernetes\\.io/component=other",
            "--set",
            "routers.podLabels.jumpstarter\\.dev/router=other",
        ])
        .await
        .expect("helm template");
    assert!(out.ok(), "{out}");
    let docs = documents(&out.stdout);
    for deployment in ["controller", "router-0", "router-1"] {
        let deployment = find(&docs, "Deployment", &format!("{FULLNAME}-{deployment}"));
        let labels = &deployment["spec"]["template"]["metadata"]["labels"];
        for (key, value) in deployment["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
        {
            assert_eq!(&labels[key], value, "{deployment}");
        }
    }
    // An image by digest alone.
    let out = chart
        .helm(&[
            "template",
            RELEASE,
            &chart_dir,
            "--kube-version",
            KUBE_VERSION,
            "--set",
            &image_set,
            "--set",
            &format!("image.digest={DIGEST}"),
        ])
        .await
        .expect("helm template");
    assert!(out.ok(), "{out}");
    assert!(
        out.stdout
            .contains(&format!("image: {IMAGE_REPOSITORY}@{DIGEST}\n")),
        "{out}"
    );
    // The minimum Kubernetes version: mixed TCP/UDP LoadBalancer Services need 1.26.
    let out = chart
        .helm(&[
            "template",
            RELEASE,
            &chart_dir,
            "--kube-version",
            "1.25.9",
            "--set",
            &image_set,
        ])
        .await
        .expect("helm template");
    assert!(
        !out.ok() && out.stderr.contains("requires kubeVersion: >=1.26.0-0"),
        "rendered for Kubernetes 1.25: {out}"
    );
}

/// Minimal CRDs for the third-party kinds some option sets render (cert-manager,
/// Prometheus Operator, OpenShift routes), so the API server knows them; their schemas are
/// open, so only the generic object structure of those kinds is checked.
fn stub_crds() -> String {
    let stub = |group: &str, kind: &str, plural: &str| {
        format!(
            r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {plural}.{group}
  labels: {{jumpstarter.dev/test-stub: "true"}}
spec:
  group: {group}
  scope: Namespaced
  names: {{kind: {kind}, plural: {plural}, singular: {singular}, listKind: {kind}List}}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
---
"#,
            singular = kind.to_lowercase()
        )
    };
    [
        stub("cert-manager.io", "Certificate", "certificates"),
        stub("cert-manager.io", "Issuer", "issuers"),
        stub("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
        stub("monitoring.coreos.com", "PrometheusRule", "prometheusrules"),
        stub("route.openshift.io", "Route", "routes"),
    ]
    .concat()
}

#[tokio::test]
async fn every_rendered_set_passes_a_server_side_dry_run() {
    let env = TestEnv::shared();
    env.install_crds(&jumpstarter_controller::crd::definitions())
        .await
        .expect("CRDs");
    let chart = Chart::new(env);
    let dir = tempfile::tempdir().expect("tempdir");
    let stubs = chart
        .kubectl(&["apply", "--server-side", "-f", "-"], Some(&stub_crds()))
        .await
        .expect("kubectl");
    assert!(stubs.ok(), "stub CRDs: {stubs}");
    let established = chart
        .kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd",
                "-l",
                "jumpstarter.dev/test-stub=true",
            ],
            None,
        )
        .await
        .expect("kubectl wait");
    assert!(established.ok(), "{established}");

    let image = image_values(dir.path());
    for (name, values) in option_sets() {
        let namespace = env.namespace(&format!("helm-dry-{name}")).await;
        let file = write_values(dir.path(), name, &values);
        let rendered = chart
            .render(RELEASE, &namespace, &[&image, &file])
            .await
            .expect(name);
        let out = chart
            .kubectl(
                &["apply", "--dry-run=server", "-n", &namespace, "-f", "-"],
                Some(&rendered),
            )
            .await
            .expect("kubectl apply");
        assert!(out.ok(), "server-side dry run of {name}: {out}");
        let applied = out.stdout.lines().count();
        assert_eq!(
            applied,
            documents(&rendered).len(),
            "{name}: every object went through the dry run: {out}"
        );
        // The dry run created nothing.
        let left = chart.objects_in(&namespace).await.expect("list");
        assert!(left.is_empty(), "{name}: dry run left {left:?}");
    }
}

#[tokio::test]
async fn install_upgrade_uninstall_leaves_only_the_crds() {
    let env = TestEnv::shared();
    let chart = Chart::new(env);
    let namespace = env.namespace("helm-lifecycle").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = env.admin_client().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);

    let install = release(&chart, "install", &namespace, &["--timeout", "60s"]).await;
    assert!(
        install.stdout.contains("jmp admin create client"),
        "NOTES: {install}"
    );
    assert_crds_present(&chart, "after install").await;
    // The Deployments' names, sorted.
    let names = || async {
        let listed = deployments
            .list(&ListParams::default())
            .await
            .expect("list");
        let mut names: Vec<String> = listed
            .items
            .into_iter()
            .filter_map(|d: Deployment| d.metadata.name)
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        names().await,
        [
            format!("{FULLNAME}-controller"),
            format!("{FULLNAME}-router-0"),
            format!("{FULLNAME}-router-1")
        ]
    );

    // Upgrade: three routers on node ports, then back to one.
    let values = write_values(
        dir.path(),
        "upgrade",
        r#"
routers:
  replicas: 3
  exposure: {type: NodePort, nodePort: {host: 192.0.2.7, base: 31700}}
"#,
    );
    let values = values.to_string_lossy();
    release(&chart, "upgrade", &namespace, &["-f", &values]).await;
    let controller = deployments
        .get(&format!("{FULLNAME}-controller"))
        .await
        .expect("controller");
    let args = controller.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert!(
        args.contains(&format!(
            "--router={FULLNAME}-router-2=192.0.2.7:31702;quic=192.0.2.7:31702"
        )),
        "{args:?}"
    );
    let svc = chart
        .kubectl(
            &[
                "get",
                "service",
                &format!("{FULLNAME}-router-2"),
                "-n",
                &namespace,
                "-o",
                "jsonpath={.spec.type} {.spec.ports[*].nodePort}",
            ],
            None,
        )
        .await
        .expect("kubectl");
    assert_eq!(svc.stdout.trim(), "NodePort 31702 31702", "{svc}");

    let one_router = ["--reuse-values", "--set", "routers.replicas=1"];
    release(&chart, "upgrade", &namespace, &one_router).await;
    assert_eq!(
        names().await,
        [
            format!("{FULLNAME}-controller"),
            format!("{FULLNAME}-router-0")
        ]
    );

    release(&chart, "uninstall", &namespace, &["--timeout", "60s"]).await;
    let left = chart.objects_in(&namespace).await.expect("list");
    assert!(left.is_empty(), "left after uninstall: {left:?}");
    let cluster_wide = chart
        .kubectl(
            &[
                "get",
                "clusterroles,clusterrolebindings",
                "-l",
                &format!("app.kubernetes.io/instance={RELEASE}"),
                "-o",
                "name",
            ],
            None,
        )
        .await
        .expect("kubectl");
    assert!(
        cluster_wide.ok() && cluster_wide.stdout.trim().is_empty(),
        "{cluster_wide}"
    );
    assert_crds_present(&chart, "must stay after uninstall").await;
}

/// The rules the chart's Role must hold: exactly what the controller uses.
fn expected_rules() -> Vec<(Vec<&'static str>, Vec<&'static str>, Vec<&'static str>)> {
    vec![
        (
            vec![""],
            vec!["secrets"],
            vec!["get", "list", "watch", "create", "update"],
        ),
        (
            vec![""],
            vec!["configmaps"],
            vec!["get", "create", "update"],
        ),
        (
            vec!["coordination.k8s.io"],
            vec!["leases"],
            vec!["get", "list", "watch", "create", "update", "delete"],
        ),
        (vec!["apps"], vec!["deployments"], vec!["get"]),
        (
            vec!["jumpstarter.dev"],
            vec!["clients", "exporteraccesspolicies"],
            vec!["get", "list", "watch"],
        ),
        (
            vec!["jumpstarter.dev"],
            vec!["exporters", "leases"],
            vec!["get", "list", "watch", "update"],
        ),
        (vec!["jumpstarter.dev"], vec!["leases"], vec!["create"]),
        (
            vec!["jumpstarter.dev"],
            vec!["clients/status", "exporters/status", "leases/status"],
            vec!["update"],
        ),
        (
            vec!["jumpstarter.dev"],
            vec!["clients/finalizers", "exporters/finalizers"],
            vec!["update"],
        ),
    ]
}

/// `args` with each `--flag=...` in `replace` given the new value, and `0.0.0.0` listeners
/// on loopback.
fn rewrite_args(args: &[String], replace: &BTreeMap<&str, String>) -> Vec<String> {
    args.iter()
        .map(|arg| {
            let flag = arg.split_once('=').map_or(arg.as_str(), |(f, _)| f);
            match replace.get(flag) {
                Some(value) => format!("{flag}={value}"),
                None => arg.replace("0.0.0.0:", "127.0.0.1:"),
            }
        })
        .collect()
}

async fn access(
    client: &kube::Client,
    user: &str,
    groups: &[String],
    attributes: ResourceAttributes,
) -> bool {
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            groups: Some(groups.to_vec()),
            resource_attributes: Some(attributes),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview");
    answer.status.expect("status").allowed
}

fn attrs(namespace: &str, group: &str, resource: &str, verb: &str) -> ResourceAttributes {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_owned())),
        None => (resource, None),
    };
    ResourceAttributes {
        namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
        group: Some(group.to_owned()),
        resource: Some(resource.to_owned()),
        subresource,
        verb: Some(verb.to_owned()),
        ..ResourceAttributes::default()
    }
}

#[tokio::test]
async fn controller_with_the_chart_service_account_serves_a_lease() {
    let env = TestEnv::shared();
    env.install_crds(&jumpstarter_controller::crd::definitions())
        .await
        .expect("CRDs");
    let chart = Chart::new(env);
    let namespace = env.namespace("helm-rbac").await;
    let admin = env.admin_client().await;
    let dir = tempfile::Builder::new()
        .prefix("e2e-helm-rbac-")
        .tempdir()
        .expect("tempdir");
    let (grpc_port, router_port, probe_port) = (free_port(), free_port(), free_port());

    // Advertised endpoints on loopback, where this test runs the binaries.
    let values = write_values(
        dir.path(),
        "values",
        &format!(
            r#"
controller:
  grpc: {{endpoint: "127.0.0.1:{grpc_port}", port: {grpc_port}}}
routers:
  replicas: 1
  port: {router_port}
  exposure: {{type: LoadBalancer, port: {router_port}, hosts: ["127.0.0.1"]}}
"#
        ),
    );
    let values = values.to_string_lossy();
    release(&chart, "install", &namespace, &["-f", &values]).await;

    // The Role holds exactly the expected rules, and nothing cluster-wide names the SA.
    let sa_name = format!("{FULLNAME}-controller");
    let role = Api::<Role>::namespaced(admin.clone(), &namespace)
        .get(&sa_name)
        .await
        .expect("Role");
    let role_rules = role.rules.unwrap_or_default();
    // The one rule on Deployments reads only the controller's own.
    assert!(role_rules.iter().all(|r| {
        !r.resources.iter().flatten().any(|x| x == "deployments")
            || r.resource_names.as_deref() == Some(std::slice::from_ref(&sa_name))
    }));
    let rules: Vec<_> = role_rules
        .into_iter()
        .map(|r| {
            (
                r.api_groups.unwrap_or_default(),
                r.resources.unwrap_or_default(),
                r.verbs,
            )
        })
        .collect();
    let expected: Vec<(Vec<String>, Vec<String>, Vec<String>)> = expected_rules()
        .into_iter()
        .map(|(g, r, v)| {
            let owned = |x: Vec<&str>| x.into_iter().map(str::to_owned).collect();
            (owned(g), owned(r), owned(v))
        })
        .collect();
    assert_eq!(rules, expected);
    let bindings = Api::<ClusterRoleBinding>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .expect("ClusterRoleBindings");
    assert!(!bindings.items.iter().any(|b| {
        b.subjects
            .iter()
            .flatten()
            .any(|s| s.name == sa_name && s.namespace.as_deref() == Some(namespace.as_str()))
    }));

    // A real ServiceAccount token (TokenRequest), not admin.
    let sa_kubeconfig = dir.path().join("controller.kubeconfig");
    service_account_kubeconfig(env, &namespace, &sa_name, &sa_kubeconfig)
        .await
        .expect("the ServiceAccount's kubeconfig");

    // The controller with the chart's arguments (listeners on loopback).
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &namespace);
    let container = |d: Deployment| {
        d.spec.unwrap().template.spec.unwrap().containers[0]
            .args
            .clone()
            .unwrap()
    };
    let chart_args = container(deployments.get(&sa_name).await.expect("controller"));
    let args = rewrite_args(
        &chart_args,
        &BTreeMap::from([
            ("--probe-listen", format!("127.0.0.1:{probe_port}")),
            ("--metrics-listen", format!("127.0.0.1:{probe_port}")),
            ("--peer-endpoint", format!("127.0.0.1:{grpc_port}")),
        ]),
    );
    let mut cmd = Command::new(bin_path("jumpstarter-controller"));
    cmd.args(&args)
        .arg("--kubeconfig")
        .arg(&sa_kubeconfig)
        .env("JUMPSTARTER_IDENTITY", "controller-pod-0")
        .env("RUST_LOG", "info");
    let mut controller = Proc::spawn("controller", cmd, dir.path().join("controller.log"))
        .expect("spawn controller");
    wait_http_ok(
        &format!("http://127.0.0.1:{probe_port}/readyz"),
        Duration::from_secs(60),
        &mut controller,
    )
    .await
    .expect("controller ready with the chart's ServiceAccount");

    // The router with the certificate Secret the controller wrote for it, mounted the way
    // the chart mounts it.
    let router_name = format!("{FULLNAME}-router-0");
    let secret = Api::<Secret>::namespaced(admin.clone(), &namespace)
        .get(&format!("{router_name}-tls"))
        .await
        .expect("router certificate Secret");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    // Owned by the controller's Deployment, so `helm uninstall` removes it with it.
    let controller_uid = deployments
        .get(&sa_name)
        .await
        .expect("controller")
        .metadata
        .uid;
    let owners: Vec<_> = secret.metadata.owner_references.iter().flatten().collect();
    assert!(
        owners.len() == 1 && Some(&owners[0].uid) == controller_uid.as_ref(),
        "{owners:?}"
    );
    assert!(
        !secret
            .data
            .as_ref()
            .is_some_and(|d| d.contains_key("ca.key")),
        "router Secret holds no CA key"
    );
    let (tls_dir, keys_dir) = write_router_mounts(&admin, &namespace, &secret, dir.path())
        .await
        .expect("the router's mounts");
    let metrics_port = free_port();
    let router_args: Vec<String> = rewrite_args(
        &container(deployments.get(&router_name).await.expect("router")),
        &BTreeMap::from([("--metrics-listen", format!("127.0.0.1:{metrics_port}"))]),
    )
    .into_iter()
    .map(|a| {
        a.replace("/etc/jumpstarter/tls", &tls_dir.to_string_lossy())
            .replace(
                "/etc/jumpstarter/router-token-keys",
                &keys_dir.to_string_lossy(),
            )
    })
    .collect();
    let mut cmd = Command::new(bin_path("jumpstarter-router"));
    cmd.args(&router_args).env("RUST_LOG", "info");
    let mut router =
        Proc::spawn("router", cmd, dir.path().join("router.log")).expect("spawn router");
    let router_ready = format!("http://127.0.0.1:{metrics_port}/readyz");
    wait_http_ok(&router_ready, Duration::from_secs(30), &mut router)
        .await
        .expect("router ready");

    // The real 0.9.0 tools: an operator creates a client and an exporter (admin identity,
    // as a human would), the controller provisions them, a lease runs `j power on`.
    let mut lab = Lab {
        mode: Mode::Kubernetes,
        namespace: namespace.clone(),
        dir,
        controller: Some(controller),
        router: Some(router),
        grpc_port,
        router_port,
        probe_port,
        kubeconfig: env.admin_kubeconfig.clone(),
        exporters: BTreeMap::new(),
        serve_args: Vec::new(),
        kube_env: None,
        router_cert_args: Vec::new(),
        router_metrics_port: None,
    };
    lab.start_exporter("board-1", &["board=mock"])
        .await
        .expect("exporter");
    lab.wait_exporter_condition("board-1", "Online", "True", ONLINE_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.logs()));
    let alice = lab.create_client("alice").await.expect("client");
    let alice = alice.to_string_lossy().into_owned();
    let out = lab
        .jmp(
            &[
                "shell",
                "--client-config",
                &alice,
                "-l",
                "board=mock",
                "--",
                "j",
                "power",
                "on",
            ],
            SHELL_TIMEOUT,
        )
        .await
        .expect("jmp shell");
    assert!(out.ok(), "j power on: {out}\n{}", lab.logs());
    let controller_log = lab.controller.as_ref().unwrap().output();
    assert!(
        !controller_log.to_lowercase().contains("forbidden"),
        "the controller met a forbidden request:\n{controller_log}"
    );

    // What the ServiceAccount may not do.
    let user = format!("system:serviceaccount:{namespace}:{sa_name}");
    let groups = vec![
        "system:serviceaccounts".to_owned(),
        format!("system:serviceaccounts:{namespace}"),
    ];
    for (ns, group, resource, verb) in [
        ("", "", "secrets", "list"),
        ("default", "", "secrets", "get"),
        (namespace.as_str(), "", "secrets", "delete"),
        (
            "",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "delete",
        ),
        (
            "",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "create",
        ),
        (namespace.as_str(), "", "pods/exec", "create"),
        (namespace.as_str(), "", "pods", "list"),
        (namespace.as_str(), "", "serviceaccounts/token", "create"),
        (
            namespace.as_str(),
            "rbac.authorization.k8s.io",
            "roles",
            "update",
        ),
        (
            namespace.as_str(),
            "rbac.authorization.k8s.io",
            "rolebindings",
            "create",
        ),
        ("", "rbac.authorization.k8s.io", "clusterroles", "bind"),
        (namespace.as_str(), "jumpstarter.dev", "clients", "delete"),
        (namespace.as_str(), "jumpstarter.dev", "exporters", "create"),
        ("", "jumpstarter.dev", "leases", "list"),
    ] {
        assert!(
            !access(&admin, &user, &groups, attrs(ns, group, resource, verb)).await,
            "the controller may {verb} {group}/{resource} in {ns:?}"
        );
    }
    // The review does grant what the chart grants (so the denials above are meaningful).
    for (group, resource, verb) in [
        ("", "secrets", "watch"),
        ("coordination.k8s.io", "leases", "update"),
        // Replica records: watched, and deleted at shutdown or when long expired.
        ("coordination.k8s.io", "leases", "watch"),
        ("coordination.k8s.io", "leases", "delete"),
        ("jumpstarter.dev", "leases/status", "update"),
    ] {
        assert!(
            access(
                &admin,
                &user,
                &groups,
                attrs(&namespace, group, resource, verb)
            )
            .await,
            "the controller may not {verb} {group}/{resource}"
        );
    }

    // Graceful drain: on SIGTERM the router's readiness fails at once while it keeps
    // running for the chart's shutdown delay.
    let router = lab.router.as_mut().unwrap();
    router.signal(jumpstarter_e2e::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let code = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "1",
            ])
            .arg(&router_ready)
            .output()
            .expect("curl");
        if String::from_utf8_lossy(&code.stdout) == "503" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "router still ready after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(router.running(), "router exited before its shutdown delay");

    // Uninstall removes every chart object; what the controller made stays on purpose.
    release(&chart, "uninstall", &namespace, &[]).await;
    let left = chart.objects_in(&namespace).await.expect("list");
    let kept = [
        "secret/jumpstarter-controller-keys".to_owned(),
        format!("secret/{router_name}-tls"),
        "secret/alice-client".to_owned(),
        "secret/board-1-exporter".to_owned(),
        "configmap/jumpstarter-service-ca-cert".to_owned(),
        "configmap/jumpstarter-router-token-keys".to_owned(),
        "lease.coordination.k8s.io/jumpstarter-controller-leader".to_owned(),
        "client.jumpstarter.dev/alice".to_owned(),
        "exporter.jumpstarter.dev/board-1".to_owned(),
    ];
    for object in &left {
        // The running controller's replica record is owned by its Deployment: the
        // garbage collector (which the test API server lacks) removes it with it.
        assert!(
            kept.contains(object)
                || object.starts_with("lease.jumpstarter.dev/")
                || object.starts_with("lease.coordination.k8s.io/jumpstarter-controller-replica-"),
            "{object} left after uninstall"
        );
    }
    drop(lab);
}

/// With `values-node.yaml` (routers on node ports of 127.0.0.1), the controller run with the
/// chart's arguments writes router certificates that name 127.0.0.1, the address the host's
/// tools dial, and are signed by the CA it hands out.
#[tokio::test]
async fn values_node_router_certificates_name_the_advertised_host() {
    let env = TestEnv::shared();
    env.install_crds(&jumpstarter_controller::crd::definitions())
        .await
        .expect("CRDs");
    let chart = Chart::new(env);
    let namespace = env.namespace("helm-node-certs").await;
    let admin = env.admin_client().await;
    let dir = tempfile::Builder::new()
        .prefix("e2e-helm-node-certs-")
        .tempdir()
        .expect("tempdir");
    let image = image_values(dir.path());
    let node = jumpstarter_testenv::repo_root().join("helm/values-node.yaml");
    let docs = documents(
        &chart
            .render(RELEASE, &namespace, &[&image, &node])
            .await
            .expect("render values-node.yaml"),
    );
    let chart_args = container_args(find(&docs, "Deployment", &format!("{FULLNAME}-controller")));

    // The controller out of cluster with the chart's arguments, listeners on free loopback
    // ports (the advertised endpoints stay as rendered).
    let probe_port = free_port();
    let args = rewrite_args(
        &chart_args,
        &BTreeMap::from([
            ("--grpc-listen", format!("127.0.0.1:{}", free_port())),
            ("--grpc-quic-listen", format!("127.0.0.1:{}", free_port())),
            ("--probe-listen", format!("127.0.0.1:{probe_port}")),
            ("--metrics-listen", format!("127.0.0.1:{}", free_port())),
            ("--peer-endpoint", format!("127.0.0.1:{}", free_port())),
        ]),
    );
    // Only the templates are rendered here, so the Deployment the controller would take as
    // the owner of its runtime objects does not exist: run without it.
    let args: Vec<String> = args
        .into_iter()
        .filter(|a| !a.starts_with("--owner-deployment"))
        .collect();
    let mut cmd = Command::new(bin_path("jumpstarter-controller"));
    cmd.args(&args)
        .arg("--kubeconfig")
        .arg(&env.admin_kubeconfig)
        .env("JUMPSTARTER_IDENTITY", "controller-pod-0")
        .env("RUST_LOG", "info");
    let mut controller = Proc::spawn("controller", cmd, dir.path().join("controller.log"))
        .expect("spawn controller");
    wait_http_ok(
        &format!("http://127.0.0.1:{probe_port}/readyz"),
        Duration::from_secs(60),
        &mut controller,
    )
    .await
    .expect("controller ready");

    let secrets: Api<Secret> = Api::namespaced(admin, &namespace);
    for i in 0..2 {
        let name = format!("{FULLNAME}-router-{i}-tls");
        let deadline = Instant::now() + Duration::from_secs(30);
        let secret = loop {
            if let Some(secret) = secrets.get_opt(&name).await.expect("get Secret") {
                break secret;
            }
            assert!(
                Instant::now() < deadline,
                "no {name} within 30 s:\n{}",
                controller.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let data = secret.data.unwrap_or_default();
        let cert = dir.path().join(format!("router-{i}.crt"));
        let ca = dir.path().join(format!("router-{i}-ca.crt"));
        std::fs::write(&cert, &data["tls.crt"].0).expect("write cert");
        std::fs::write(&ca, &data["ca.crt"].0).expect("write CA");
        let sans = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
            .arg(&cert)
            .output()
            .expect("openssl x509");
        let sans = String::from_utf8_lossy(&sans.stdout);
        assert!(
            sans.contains("IP Address:127.0.0.1"),
            "router {i} certificate SANs: {sans}"
        );
        let verify = std::process::Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(&ca)
            .arg(&cert)
            .output()
            .expect("openssl verify");
        assert!(
            verify.status.success(),
            "router {i}: {}",
            String::from_utf8_lossy(&verify.stdout)
        );
    }
    drop(controller);
}

/// The four CRDs exist (`when` names the moment, for the failure message).
async fn assert_crds_present(chart: &Chart, when: &str) {
    for crd in ["clients", "exporters", "leases", "exporteraccesspolicies"] {
        let out = chart
            .kubectl(&["get", "crd", &format!("{crd}.jumpstarter.dev")], None)
            .await
            .expect("kubectl");
        assert!(out.ok(), "CRD {crd} {when}: {out}");
    }
}

#[tokio::test]
async fn the_test_hook_runs_the_check_unprivileged_with_read_only_rights() {
    let env = TestEnv::shared();
    let chart = Chart::new(env);
    let chart_dir = chart.dir.to_string_lossy().into_owned();
    let render = |extra: &'static [&'static str]| {
        let chart = chart.clone();
        let chart_dir = chart_dir.clone();
        async move {
            let mut args = vec!["template", RELEASE, &chart_dir, "-n", "lab"];
            args.extend(["--kube-version", KUBE_VERSION]);
            args.extend(["--set", "image.repository=registry.example/jumpstarter"]);
            args.extend_from_slice(extra);
            let out = chart.helm(&args).await.expect("helm template");
            assert!(out.ok(), "{out}");
            documents(&out.stdout)
        }
    };
    let lint = chart
        .helm(&[
            "lint",
            "--strict",
            &chart_dir,
            "--set",
            "image.repository=registry.example/jumpstarter",
            "--set",
            "tests.hostNetwork=true",
        ])
        .await
        .expect("helm lint");
    assert!(lint.ok(), "{lint}");

    let docs = render(&[
        "--set",
        "tests.hostNetwork=true",
        "--set",
        "tests.timeout=3s",
    ])
    .await;
    let pod = find(&docs, "Pod", &format!("{FULLNAME}-test-check"));
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["helm.sh/hook"], "test");
    assert_eq!(
        annotations["helm.sh/hook-delete-policy"],
        "before-hook-creation,hook-succeeded"
    );
    let spec = &pod["spec"];
    assert_eq!(spec["serviceAccountName"], format!("{FULLNAME}-test"));
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    let container = &spec["containers"][0];
    let controller = find(&docs, "Deployment", &format!("{FULLNAME}-controller"));
    assert_eq!(
        container["image"],
        controller["spec"]["template"]["spec"]["containers"][0]["image"]
    );
    assert_eq!(container["command"][0], "/usr/local/bin/jumpstarter");
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "admin",
            "check",
            "--namespace=lab",
            &format!("--controller-deployment={FULLNAME}-controller"),
            "--timeout=3s"
        ]
    );
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"][0], "ALL");
    // Read-only, object by object, in the namespace only.
    let role = find(&docs, "Role", &format!("{FULLNAME}-test"));
    for rule in role["rules"].as_array().unwrap() {
        assert_eq!(rule["verbs"], serde_json::json!(["get"]), "{rule}");
        assert_eq!(
            rule["resourceNames"].as_array().map(Vec::len),
            Some(1),
            "{rule}"
        );
    }
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "ClusterRole" || d["kind"] == "ClusterRoleBinding")
    );

    let default = render(&[]).await;
    let pod = find(&default, "Pod", &format!("{FULLNAME}-test-check"));
    assert!(pod["spec"].get("hostNetwork").is_none());
    let disabled = render(&["--set", "tests.enabled=false"]).await;
    assert!(
        !disabled.iter().any(|d| d["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .contains("-test")),
        "tests.enabled=false renders no test object"
    );
}
