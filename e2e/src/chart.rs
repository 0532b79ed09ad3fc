//! The Helm chart under test: `helm` and `kubectl` from the test environment's binaries,
//! run against its real kube-apiserver, with the chart in `helm/` of this repository.
//!
//! Every command is bounded by [`COMMAND_TIMEOUT`]; a missing binary fails the test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use jumpstarter_testenv::{TestEnv, repo_root};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::Output;

/// Kubernetes version `helm template` renders for: the chart's minimum (`kubeVersion` in
/// Chart.yaml). Offline, a `helm` built from source assumes 1.20, which the chart refuses.
pub const KUBE_VERSION: &str = "1.26.0";

/// Longest a single `helm` or `kubectl` call may take against the loopback API server.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// `helm` and `kubectl` pointed at the test API server as cluster admin.
#[derive(Debug, Clone)]
pub struct Chart {
    pub helm: PathBuf,
    pub kubectl: PathBuf,
    pub kubeconfig: PathBuf,
    /// The chart directory (`helm/`).
    pub dir: PathBuf,
}

impl Chart {
    /// The chart of this repository with the test environment's binaries.
    ///
    /// # Panics
    /// When `helm` or `kubectl` is missing from the test environment's binaries.
    pub fn new(env: &TestEnv) -> Chart {
        let bin = |name: &str| {
            let path = env.bin_dir.join(name);
            assert!(
                path.is_file(),
                "{} is missing; build it with tools/k8s-testenv/build-bins.sh",
                path.display()
            );
            path
        };
        Chart {
            helm: bin("helm"),
            kubectl: bin("kubectl"),
            kubeconfig: env.admin_kubeconfig.clone(),
            dir: repo_root().join("helm"),
        }
    }

    /// Runs `helm args...`.
    pub async fn helm(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut cmd = Command::new(&self.helm);
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", self.scratch("cache"))
            .env("HELM_CONFIG_HOME", self.scratch("config"))
            .env("HELM_DATA_HOME", self.scratch("data"));
        run(cmd, None, &format!("helm {}", args.join(" "))).await
    }

    /// Runs `kubectl args...`, with `stdin` as its input when given.
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
        let mut cmd = Command::new(&self.kubectl);
        cmd.args(args).arg("--kubeconfig").arg(&self.kubeconfig);
        run(cmd, stdin, &format!("kubectl {}", args.join(" "))).await
    }

    /// [`Chart::render`] with one values file.
    pub async fn template(
        &self,
        release: &str,
        namespace: &str,
        values: &Path,
    ) -> anyhow::Result<String> {
        self.render(release, namespace, &[values]).await
    }

    /// `helm template RELEASE CHART -n NAMESPACE --kube-version KUBE_VERSION --skip-tests
    /// -f V1 -f V2 ...` (later files win), failing on a non-zero exit: what `helm install`
    /// applies (`helm test` creates the test pod later, once its ServiceAccount exists).
    pub async fn render(
        &self,
        release: &str,
        namespace: &str,
        values: &[&Path],
    ) -> anyhow::Result<String> {
        let chart_dir = self.dir.to_string_lossy();
        let mut args = vec![
            "template",
            release,
            &chart_dir,
            "-n",
            namespace,
            "--kube-version",
            KUBE_VERSION,
            "--skip-tests",
        ];
        let files: Vec<String> = values
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        for file in &files {
            args.extend(["-f", file.as_str()]);
        }
        let out = self.helm(&args).await?;
        if !out.ok() {
            bail!("helm template with {files:?} failed: {out}");
        }
        Ok(out.stdout)
    }

    /// Names (`kind/name`) of every object in `namespace`, over every listable namespaced
    /// resource type the API server serves, except events.
    pub async fn objects_in(&self, namespace: &str) -> anyhow::Result<Vec<String>> {
        let types = self
            .kubectl(
                &[
                    "api-resources",
                    "--namespaced=true",
                    "--verbs=list",
                    "-o",
                    "name",
                ],
                None,
            )
            .await?;
        if !types.ok() {
            bail!("kubectl api-resources failed: {types}");
        }
        let types: Vec<&str> = types
            .stdout
            .lines()
            .map(str::trim)
            .filter(|t| !t.is_empty() && *t != "events" && *t != "events.events.k8s.io")
            .collect();
        let out = self
            .kubectl(
                &["get", &types.join(","), "-n", namespace, "-o", "name"],
                None,
            )
            .await?;
        if !out.ok() {
            bail!("listing the objects of {namespace} failed: {out}");
        }
        Ok(out.stdout.lines().map(str::to_owned).collect())
    }

    fn scratch(&self, what: &str) -> PathBuf {
        std::env::temp_dir().join(format!("jumpstarter-helm-test-{what}"))
    }
}

/// Writes to `path` a kubeconfig for ServiceAccount `namespace/name` of the API server of
/// `env`: a real token from the TokenRequest API (one hour), with the admin kubeconfig's
/// cluster section. For proving what an identity the chart creates may do.
pub async fn service_account_kubeconfig(
    env: &TestEnv,
    namespace: &str,
    name: &str,
    path: &Path,
) -> anyhow::Result<()> {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    use kube::api::{Api, PostParams};

    let accounts: Api<ServiceAccount> = Api::namespaced(env.admin_client().await, namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let token = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for {namespace}/{name}"))?
        .status
        .context("TokenRequest without status")?
        .token;
    let admin: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(&env.admin_kubeconfig)?)
            .context("admin kubeconfig YAML")?;
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testenv", "cluster": admin["clusters"][0]["cluster"].clone()}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "testenv", "user": name}}],
        "current-context": name,
    });
    std::fs::write(path, serde_norway::to_string(&config)?)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// Writes what a router pod of the chart mounts into `dir`, for running the router binary
/// on the host with the chart's arguments: `dir/tls` with the router certificate Secret's
/// `tls.crt`, `tls.key` and `ca.crt`, and `dir/router-token-keys/keys.pem` from the
/// controller's ConfigMap in `namespace`. Returns both directories.
pub async fn write_router_mounts(
    client: &kube::Client,
    namespace: &str,
    secret: &k8s_openapi::api::core::v1::Secret,
    dir: &Path,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::Api;

    let tls_dir = dir.join("tls");
    std::fs::create_dir_all(&tls_dir)?;
    let data = secret.data.clone().unwrap_or_default();
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        let value = data
            .get(key)
            .with_context(|| format!("router Secret without {key}"))?;
        std::fs::write(tls_dir.join(key), &value.0)?;
    }
    let keys_dir = dir.join("router-token-keys");
    std::fs::create_dir_all(&keys_dir)?;
    let keys = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get("jumpstarter-router-token-keys")
        .await
        .context("router token keys ConfigMap")?;
    let pem = keys
        .data
        .unwrap_or_default()
        .remove("keys.pem")
        .context("router token keys ConfigMap without keys.pem")?;
    std::fs::write(keys_dir.join("keys.pem"), pem)?;
    Ok((tls_dir, keys_dir))
}

async fn run(mut cmd: Command, stdin: Option<&str>, what: &str) -> anyhow::Result<Output> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("spawn {what}"))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("stdin pipe")?;
        pipe.write_all(input.as_bytes()).await?;
        drop(pipe);
    }
    let out = match tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output()).await {
        Ok(out) => out?,
        Err(_) => bail!("`{what}` did not finish within {COMMAND_TIMEOUT:?}"),
    };
    Ok(Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
