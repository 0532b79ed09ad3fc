//! The Helm chart on the test environment's real node ([`TestEnv::shared_node`]): the
//! image built from the repository's Dockerfile by `tools/build-image.sh`, a release
//! installed with `helm/values-node.yaml`, and a [`Lab`] whose real jumpstarter 0.9.0
//! tools reach the release through its NodePort Services on 127.0.0.1.
//!
//! Each release gets its own namespace and its own node ports ([`NodePorts`]), so a
//! failed test leaves nothing in the way of the next one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use jumpstarter_testenv::{Node, TestEnv, repo_root};

use crate::chart::Chart;
use crate::{Lab, Mode, Output, free_port};

/// Longest a release may take to install or upgrade with every pod Ready (a cold node
/// unpacks the image first).
pub const INSTALL_TIMEOUT: &str = "300s";

/// The image under test, `repository:tag`: `JUMPSTARTER_IMAGE` when the test command built
/// it already, else built once per test process with `tools/build-image.sh --profile dev`.
pub fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        if let Some(image) = std::env::var("JUMPSTARTER_IMAGE")
            .ok()
            .filter(|i| !i.is_empty())
        {
            return image;
        }
        let script = repo_root().join("tools/build-image.sh");
        let out = std::process::Command::new(&script)
            .args(["--profile", "dev"])
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} --profile dev failed ({}); the chart's tests need the image",
            script.display(),
            out.status
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned()
    })
}

/// The node ports of one release: the controller's gRPC (TCP and UDP) and router `i` at
/// `router_base + i` (TCP and UDP).
#[derive(Debug, Clone, Copy)]
pub struct NodePorts {
    pub controller: u16,
    pub router_base: u16,
}

/// One release of the chart on the node, in a namespace of its own.
#[derive(Debug)]
pub struct Release {
    pub env: TestEnv,
    pub node: Node,
    pub chart: Chart,
    pub name: String,
    pub namespace: String,
    pub ports: NodePorts,
    /// The real tools, pointed at this release (no processes of the service: those run
    /// in pods).
    pub lab: Lab,
    /// Set once `helm uninstall` ran; otherwise dropping the release uninstalls it.
    pub uninstalled: bool,
}

impl Drop for Release {
    /// A test that failed half-way leaves no release behind: its node ports would refuse
    /// the next install. (Blocking, but `helm uninstall` without `--wait` returns as soon
    /// as the objects are deleted.)
    fn drop(&mut self) {
        if self.uninstalled {
            return;
        }
        let _ = std::process::Command::new(&self.chart.helm)
            .args([
                "uninstall",
                &self.name,
                "-n",
                &self.namespace,
                "--timeout",
                "60s",
            ])
            .env("KUBECONFIG", &self.chart.kubeconfig)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Release {
    /// `helm install` of the chart with the node's values and the image under test, waiting
    /// until every Deployment is available; extra `helm` arguments in `extra`.
    pub async fn install(
        prefix: &str,
        ports: NodePorts,
        extra: &[&str],
    ) -> anyhow::Result<Release> {
        let env = TestEnv::shared_node().clone();
        let node = env
            .node
            .clone()
            .context("the test environment has no node")?;
        let chart = Chart::new(&env);
        let namespace = env.namespace(prefix).await;
        let dir = tempfile::Builder::new()
            .prefix(&format!("node-{prefix}-"))
            .tempdir()?;
        let lab = Lab {
            mode: Mode::Kubernetes,
            namespace: namespace.clone(),
            dir,
            controller: None,
            router: None,
            grpc_port: ports.controller,
            router_port: ports.router_base,
            probe_port: free_port(),
            kubeconfig: env.admin_kubeconfig.clone(),
            exporters: BTreeMap::new(),
            serve_args: Vec::new(),
            kube_env: Some(env.clone()),
            router_cert_args: Vec::new(),
            router_metrics_port: None,
        };
        let release = Release {
            env,
            node,
            chart,
            name: "js".to_owned(),
            namespace,
            ports,
            lab,
            uninstalled: false,
        };
        let out = release.helm_release("install", extra).await?;
        if !out.ok() {
            bail!(
                "helm install failed: {out}\n{}",
                release.diagnostics().await
            );
        }
        Ok(release)
    }

    /// The `--set` arguments that place this release on its node ports with the image
    /// under test.
    fn placement(&self) -> Vec<String> {
        let (repository, tag) = image().rsplit_once(':').unwrap_or((image(), "latest"));
        vec![
            format!("image.repository={repository}"),
            format!("image.tag={tag}"),
            format!("controller.service.nodePort={}", self.ports.controller),
            format!(
                "controller.grpc.endpoint=127.0.0.1:{}",
                self.ports.controller
            ),
            format!("routers.exposure.nodePort.base={}", self.ports.router_base),
        ]
    }

    /// `helm <verb> RELEASE helm/ -n NS -f values-node.yaml --set <placement> <extra>
    /// --wait`.
    pub async fn helm_release(&self, verb: &str, extra: &[&str]) -> anyhow::Result<Output> {
        let dir = self.chart.dir.to_string_lossy().into_owned();
        let values = self
            .chart
            .dir
            .join("values-node.yaml")
            .to_string_lossy()
            .into_owned();
        let placement = self.placement();
        let mut args = vec![verb, &self.name, &dir, "-n", &self.namespace, "-f", &values];
        for set in &placement {
            args.extend(["--set", set]);
        }
        args.extend(extra);
        args.extend(["--wait", "--timeout", INSTALL_TIMEOUT]);
        self.chart.helm(&args).await
    }

    /// `kubectl -n NS args...`, failing on a non-zero exit; its stdout.
    pub async fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-n", &self.namespace];
        all.extend_from_slice(args);
        let out = self.chart.kubectl(&all, None).await?;
        if !out.ok() {
            bail!("kubectl {} failed: {out}", all.join(" "));
        }
        Ok(out.stdout)
    }

    /// The pods of this release, as JSON objects.
    pub async fn pods(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let out = self
            .kubectl(&[
                "get",
                "pods",
                "-l",
                &format!("app.kubernetes.io/instance={}", self.name),
                "-o",
                "json",
            ])
            .await?;
        let list: serde_json::Value = serde_json::from_str(&out)?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// Names of the running, Ready pods of `component` (controller, router).
    pub async fn ready_pods(&self, component: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .pods()
            .await?
            .iter()
            .filter(|p| p["metadata"]["labels"]["app.kubernetes.io/component"] == component)
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| pod_ready(p))
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
            .collect())
    }

    /// Waits until `component` has `count` Ready pods, none of them in `not`.
    pub async fn wait_ready_pods(
        &self,
        component: &str,
        count: usize,
        not: &[String],
        timeout: Duration,
    ) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let ready = self.ready_pods(component).await?;
            if ready.len() == count && ready.iter().all(|p| !not.contains(p)) {
                return Ok(ready);
            }
            if Instant::now() > deadline {
                bail!(
                    "{component}: {ready:?} Ready after {timeout:?}, wanted {count} new pods\n{}",
                    self.diagnostics().await
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The address of `pod` on the node's bridge (reachable from this machine).
    pub async fn pod_ip(&self, pod: &str) -> anyhow::Result<String> {
        let ip = self
            .kubectl(&["get", "pod", pod, "-o", "jsonpath={.status.podIP}"])
            .await?;
        Ok(ip.trim().to_owned())
    }

    /// `GET http://<pod>:<port>/metrics`, straight to the pod over the node's bridge.
    pub async fn pod_metrics(&self, pod: &str, port: u16) -> anyhow::Result<String> {
        let ip = self.pod_ip(pod).await?;
        let out = tokio::process::Command::new("curl")
            .args(["-sf", "--max-time", "5"])
            .arg(format!("http://{ip}:{port}/metrics"))
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "GET /metrics of {pod} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// What a failure message needs: the pods, their events and the last log lines of each
    /// container (also of the previous instance, after a restart), and the tools' logs.
    pub async fn diagnostics(&self) -> String {
        let mut s = String::new();
        let ns = self.namespace.as_str();
        for args in [
            vec!["-n", ns, "get", "pods,svc,deploy,rs", "-o", "wide"],
            vec!["-n", ns, "get", "events", "--sort-by=.lastTimestamp"],
        ] {
            if let Ok(out) = self.chart.kubectl(&args, None).await {
                s.push_str(&format!("\n===== kubectl {}\n{out}", args.join(" ")));
            }
        }
        if let Ok(pods) = self.pods().await {
            for pod in pods {
                let name = pod["metadata"]["name"].as_str().unwrap_or_default();
                for previous in ["false", "true"] {
                    let flag = format!("--previous={previous}");
                    let args = [
                        "-n",
                        ns,
                        "logs",
                        name,
                        "--all-containers",
                        "--tail=60",
                        &flag,
                    ];
                    if let Ok(out) = self.chart.kubectl(&args, None).await
                        && out.ok()
                        && !out.stdout.trim().is_empty()
                    {
                        s.push_str(&format!("\n===== logs {name} {flag}\n{}", out.stdout));
                    }
                }
            }
        }
        s.push_str(&self.lab.logs());
        s
    }

    /// `helm uninstall --wait`, then waits until no pod of the release is left.
    pub async fn uninstall(&mut self) -> anyhow::Result<()> {
        self.uninstalled = true;
        let out = self
            .chart
            .helm(&[
                "uninstall",
                &self.name,
                "-n",
                &self.namespace,
                "--wait",
                "--timeout",
                INSTALL_TIMEOUT,
            ])
            .await?;
        if !out.ok() {
            bail!("helm uninstall failed: {out}");
        }
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let pods = self.kubectl(&["get", "pods", "-o", "name"]).await?;
            if pods.trim().is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("pods left 180 s after uninstall: {pods}");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The process of each running container of the release, seen from this machine:
    /// `(pod/container, uid, read-only root)`, from containerd's task list and `/proc`.
    pub async fn container_processes(&self) -> anyhow::Result<Vec<(String, u32, bool)>> {
        let tasks = tokio::process::Command::new("ctr")
            .arg("--address")
            .arg(&self.node.containerd_address)
            .args(["-n", "k8s.io", "tasks", "ls"])
            .output()
            .await
            .context("ctr tasks ls")?;
        let tasks = String::from_utf8_lossy(&tasks.stdout).into_owned();
        let pid_of: BTreeMap<&str, u32> = tasks
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?, f.next()?.parse().ok()?))
            })
            .collect();
        let mut found = Vec::new();
        for pod in self.pods().await? {
            let name = pod["metadata"]["name"].as_str().unwrap_or_default();
            for status in pod["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let Some(id) = status["containerID"]
                    .as_str()
                    .and_then(|i| i.strip_prefix("containerd://"))
                else {
                    continue;
                };
                let pid = *pid_of
                    .get(id)
                    .with_context(|| format!("no containerd task for {name} ({id})"))?;
                let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
                let uid = proc_status
                    .lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|u| u.parse().ok())
                    .context("effective uid")?;
                let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
                let read_only_root = mountinfo.lines().any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.get(4) == Some(&"/")
                        && f.get(5).is_some_and(|o| o.split(',').any(|o| o == "ro"))
                });
                found.push((
                    format!("{name}/{}", status["name"].as_str().unwrap_or_default()),
                    uid,
                    read_only_root,
                ));
            }
        }
        Ok(found)
    }

    /// Path in the release's scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.lab.path(name)
    }
}

/// The pod is Running with every container Ready.
pub fn pod_ready(pod: &serde_json::Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Sum of `restartCount` over every container of `pods`.
pub fn restarts(pods: &[serde_json::Value]) -> u64 {
    pods.iter()
        .flat_map(|p| {
            p["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|c| c["restartCount"].as_u64().unwrap_or(0))
        .sum()
}
