//! Test fixture for a real Kubernetes API server.
//!
//! Tests of Kubernetes mode run against a real etcd and kube-apiserver on loopback, built
//! from Go modules by `tools/k8s-testenv/build-bins.sh` and run by
//! `tools/k8s-testenv/testenv.sh`. [`TestEnv::shared`] starts that control plane once per
//! test process, or reuses one that is already answering (the repository's test command
//! starts it before the tests and stops it afterwards).
//!
//! There is no skip: when the binaries are missing or the server does not come up, the
//! fixture panics with the reason and the command that fixes it.
//!
//! Each test should work in its own namespace ([`TestEnv::namespace`]): without a node
//! there is no kube-controller-manager, so namespaces are never really deleted and nothing
//! is garbage-collected.
//!
//! [`TestEnv::shared_node`] is the same control plane with a real single node (containerd,
//! kubelet, kube-proxy, scheduler, controller-manager), for the Helm chart's tests.
//!
//! [`oidc::Dex`] is a real OpenID Connect provider (Dex) on loopback, for the SSO tests.
//! [`legacy_key`] makes the key and tokens of a jumpstarter 0.9.0 Go controller with the
//! real Go code, for the tests of credentials carried over from such an installation.

pub mod legacy_key;
pub mod oidc;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// How long a CRD may take to become `Established` before the fixture gives up.
const CRD_ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// A running control plane, as described by the `env` file `testenv.sh` writes.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// State directory (certificates, kubeconfigs, logs).
    pub dir: PathBuf,
    /// Port of the API server on 127.0.0.1.
    pub api_port: u16,
    /// Kubeconfig of a `system:masters` user.
    pub admin_kubeconfig: PathBuf,
    /// Kubeconfig of `system:serviceaccount:jumpstarter-system:controller`, which has no
    /// permissions until a test grants them with RBAC.
    pub controller_kubeconfig: PathBuf,
    /// Directory of the built binaries (etcd, kube-apiserver, kubectl, helm).
    pub bin_dir: PathBuf,
    /// The single-node cluster, when the control plane was started with `--node`.
    pub node: Option<Node>,
}

/// The real node of a control plane started with `testenv.sh start --node`: containerd,
/// kubelet, kube-proxy, kube-scheduler and kube-controller-manager on this machine.
#[derive(Debug, Clone)]
pub struct Node {
    /// The Node object's name.
    pub name: String,
    /// The node's address (the gateway of its pod bridge); NodePorts answer on it and on
    /// 127.0.0.1.
    pub ip: String,
    /// containerd's socket, for loading locally built images (`ctr -n k8s.io images import`).
    pub containerd_address: PathBuf,
    /// Directory of the node components' logs.
    pub logs: PathBuf,
}

static SHARED: OnceLock<TestEnv> = OnceLock::new();
static SHARED_NODE: OnceLock<TestEnv> = OnceLock::new();

impl TestEnv {
    /// The control plane of this test process: started (or found running) on first use.
    ///
    /// # Panics
    /// When the control plane cannot be started; the message says why.
    pub fn shared() -> &'static TestEnv {
        SHARED.get_or_init(|| match ensure_running() {
            Ok(env) => env,
            Err(err) => panic!(
                "the real Kubernetes API server for this test is not available: {err:#}\n\
                 build it with `tools/k8s-testenv/build-bins.sh` (or run the repository's test \
                 command, which builds and starts it)"
            ),
        })
    }

    /// The control plane with its node, started (or found running) on first use. When a
    /// control plane without a node is already running, it is restarted with one.
    ///
    /// # Panics
    /// When the node cannot be started; the message says why.
    pub fn shared_node() -> &'static TestEnv {
        SHARED_NODE.get_or_init(|| match ensure_running_with(&["--node"]) {
            Ok(env) if env.node.is_some() => env,
            Ok(env) => panic!(
                "the test environment in {} runs without a node; restart it with \
                 `tools/k8s-testenv/testenv.sh start --node`",
                env.dir.display()
            ),
            Err(err) => panic!(
                "the real Kubernetes node for this test is not available: {err:#}\n\
                 build its parts with `tools/k8s-testenv/build-bins.sh` and start it with \
                 `tools/k8s-testenv/testenv.sh start --node` (the repository's test command \
                 does both)"
            ),
        })
    }

    /// The control plane `testenv.sh start` started with `KTE_DIR=dir` (for a test that
    /// runs a private one, e.g. to stop its API server without disturbing other tests).
    pub fn from_dir(dir: &Path) -> anyhow::Result<TestEnv> {
        read_env(dir)
    }

    /// A client authenticated as cluster admin.
    pub async fn admin_client(&self) -> kube::Client {
        client_from(&self.admin_kubeconfig)
            .await
            .expect("admin kube client")
    }

    /// A client authenticated as the RBAC-only controller identity.
    pub async fn controller_client(&self) -> kube::Client {
        client_from(&self.controller_kubeconfig)
            .await
            .expect("controller kube client")
    }

    /// Creates a fresh namespace named `<prefix>-<random suffix>` and returns its name.
    pub async fn namespace(&self, prefix: &str) -> String {
        let api: Api<Namespace> = Api::all(self.admin_client().await);
        let ns = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                labels: Some(BTreeMap::from([(
                    "jumpstarter.dev/test".to_owned(),
                    "true".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let created = api
            .create(&PostParams::default(), &ns)
            .await
            .expect("create test namespace");
        created.metadata.name.expect("namespace has a name")
    }

    /// Installs (server-side applies) the CRDs and waits until each is `Established`.
    pub async fn install_crds(&self, crds: &[CustomResourceDefinition]) -> anyhow::Result<()> {
        apply_crds(self.admin_client().await, "jumpstarter-testenv", crds).await
    }
}

/// Server-side applies `crds` as `field_manager` with `client`, then waits until each is
/// `Established`. Shared with the load-test harness, which applies them to any cluster.
pub async fn apply_crds(
    client: kube::Client,
    field_manager: &str,
    crds: &[CustomResourceDefinition],
) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let params = PatchParams::apply(field_manager).force();
    for crd in crds {
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        let mut body = serde_json::to_value(crd)?;
        body["apiVersion"] = "apiextensions.k8s.io/v1".into();
        body["kind"] = "CustomResourceDefinition".into();
        api.patch(&name, &params, &Patch::Apply(&body))
            .await
            .with_context(|| format!("apply CRD {name}"))?;
    }
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let deadline = Instant::now() + CRD_ESTABLISH_TIMEOUT;
        loop {
            let current = api.get(&name).await?;
            let established = current
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if established {
                break;
            }
            if Instant::now() > deadline {
                bail!("CRD {name} not Established after {CRD_ESTABLISH_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// The cached venv with jumpstarter 0.9.0 (see `tools/python-venv.sh`).
pub fn venv() -> PathBuf {
    let path = std::env::var_os("JUMPSTARTER_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                });
            cache.join("jumpstarter-rs/venv-jumpstarter-0.9.0")
        });
    assert!(
        path.join("bin/jmp").is_file(),
        "jumpstarter 0.9.0 is not installed in {}; run tools/python-venv.sh (or the repository's test command)",
        path.display()
    );
    path
}

/// Asserts that `binary --version` prints `<name> <version> (<commit>)`: the crate version
/// and the short commit of the checkout, as the build script reads it (`unknown` without
/// git).
pub fn assert_version_names_the_commit(binary: &Path, name: &str, version: &str) {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()));
    assert!(output.status.success(), "{output:?}");
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(repo_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{name} {version} ({commit})\n")
    );
}

/// Root of the repository (the parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate lives in the repository")
        .to_path_buf()
}

async fn client_from(path: &Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(path)
        .with_context(|| format!("read kubeconfig {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("kubeconfig to client config")?;
    Ok(kube::Client::try_from(config)?)
}

fn ensure_running() -> anyhow::Result<TestEnv> {
    ensure_running_with(&[])
}

fn ensure_running_with(args: &[&str]) -> anyhow::Result<TestEnv> {
    let script = repo_root().join("tools/k8s-testenv/testenv.sh");
    let output = Command::new(&script)
        .arg("ensure")
        .args(args)
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} ensure failed ({}):\n{}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ready: "))
        .context("testenv.sh did not say where it is ready")?;
    read_env(Path::new(dir.trim()))
}

fn read_env(dir: &Path) -> anyhow::Result<TestEnv> {
    let text = std::fs::read_to_string(dir.join("env"))
        .with_context(|| format!("read {}", dir.join("env").display()))?;
    let vars: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let var = |k: &str| {
        vars.get(k)
            .map(|v| v.to_string())
            .with_context(|| format!("{k} missing in testenv env file"))
    };
    Ok(TestEnv {
        dir: dir.to_path_buf(),
        api_port: var("KTE_API_PORT")?.parse().context("KTE_API_PORT")?,
        admin_kubeconfig: var("KTE_ADMIN_KUBECONFIG")?.into(),
        controller_kubeconfig: var("KTE_CONTROLLER_KUBECONFIG")?.into(),
        bin_dir: var("KTE_BIN_DIR")?.into(),
        node: match vars.get("KTE_NODE") {
            Some(&"1") => Some(Node {
                name: var("KTE_NODE_NAME")?,
                ip: var("KTE_NODE_IP")?,
                containerd_address: var("KTE_CONTAINERD_ADDRESS")?.into(),
                logs: var("KTE_NODE_LOGS")?.into(),
            }),
            _ => None,
        },
    })
}
