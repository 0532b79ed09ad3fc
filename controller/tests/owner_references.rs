//! `jumpstarter-controller run --owner-deployment` against a real kube-apiserver: the
//! objects the controller creates while it runs (router certificate Secrets, the CA and
//! router-token ConfigMaps, the election Lease) carry an ownerReference to the named
//! Deployment, also when an earlier run without the flag created them; the keys Secret and
//! the credential Secrets never do. A Deployment that is missing or that the controller may
//! not read stops the start with an error naming it.
//!
//! The test API server runs no garbage collector, so the deletion itself is not observed
//! here; only the references it acts on are.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use jumpstarter_controller::crd::{Client, ClientSpec};
use jumpstarter_controller::keys::{CA_CONFIG_MAP, KEYS_SECRET, ROUTER_KEYS_CONFIG_MAP};
use jumpstarter_controller::leader::LEASE_NAME;
use jumpstarter_controller::store::Store;
use jumpstarter_controller::store::kube::KubeStore;
use jumpstarter_testenv::TestEnv;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, PodTemplateSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::ObjectMeta;

const DEPLOYMENT: &str = "lab-controller";
const ROUTERS: [&str; 2] = ["lab-router-0", "lab-router-1"];
const IDENTITY: &str = "owner-test-replica";
/// Bound of every wait for the controller (start, objects written, exit).
const WAIT: Duration = Duration::from_secs(60);

/// A controller process of this test, killed (by its PID) if the test ends early.
struct Controller {
    child: Child,
    log: PathBuf,
}

impl Controller {
    fn spawn(kubeconfig: &Path, namespace: &str, extra: &[&str], log: PathBuf) -> Controller {
        let out = std::fs::File::create(&log).expect("controller log");
        let err = out.try_clone().expect("controller log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_jumpstarter-controller"));
        cmd.arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--namespace", namespace])
            .args(["--grpc-listen", "127.0.0.1:0"])
            .args(["--grpc-endpoint", "127.0.0.1:8082"])
            .args(["--probe-listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(["--identity", IDENTITY])
            .args(["--leader-elect", "--router-cert-secrets"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (i, router) in ROUTERS.iter().enumerate() {
            cmd.arg("--router")
                .arg(format!("{router}=127.0.0.1:{};zone=a", 18083 + i));
        }
        Controller {
            child: cmd.spawn().expect("spawn the controller"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) for the process to exit on its own.
    async fn exited(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "controller still running:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, so it releases the election Lease, then waits for the exit.
    async fn stop(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
        let status = self.exited().await;
        assert!(status.success(), "{status}\n{}", self.log());
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `check` returns `Some` for the object `name` of type `K`, while the
/// controller runs.
async fn wait_for<K, T>(
    store: &KubeStore,
    namespace: &str,
    name: &str,
    controller: &mut Controller,
    check: impl Fn(&K) -> Option<T>,
) -> T
where
    K: jumpstarter_controller::store::Object,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(object) = store.get::<K>(namespace, name).await.expect("get")
            && let Some(found) = check(&object)
        {
            return found;
        }
        if let Some(status) = controller.child.try_wait().expect("wait") {
            panic!("controller exited ({status}):\n{}", controller.log());
        }
        assert!(
            Instant::now() < deadline,
            "{name} not as expected in time; controller log:\n{}",
            controller.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn owners(meta: &ObjectMeta) -> Vec<OwnerReference> {
    meta.owner_references.clone().unwrap_or_default()
}

/// Whether `meta` names the Deployment with `uid` as its one Deployment owner, neither as
/// controller nor blocking its deletion.
fn owned_by_deployment(meta: &ObjectMeta, uid: &str) -> bool {
    let deployments: Vec<_> = owners(meta)
        .into_iter()
        .filter(|r| r.kind == "Deployment")
        .collect();
    matches!(deployments.as_slice(), [r] if r.uid == uid
        && r.api_version == "apps/v1"
        && r.name == DEPLOYMENT
        && r.controller == Some(false)
        && r.block_owner_deletion == Some(false))
}

async fn create_deployment(namespace: &str) -> String {
    let store = KubeStore::new(TestEnv::shared().admin_client().await);
    let labels = std::collections::BTreeMap::from([("app".to_owned(), "controller".to_owned())]);
    let deployment = Deployment {
        metadata: ObjectMeta {
            name: Some(DEPLOYMENT.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            // Nothing runs pods here: only the object and its uid matter.
            replicas: Some(0),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "controller".to_owned(),
                        image: Some("jumpstarter-controller:test".to_owned()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    let created = store.create(&deployment).await.expect("create Deployment");
    created.metadata.uid.expect("uid")
}

#[tokio::test]
async fn runtime_objects_are_owned_by_the_deployment_and_user_material_is_not() {
    let (namespace, store) = support::kube_namespace("owner").await;
    let env = TestEnv::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let uid = create_deployment(&namespace).await;
    store
        .create(&Client {
            metadata: support::object_meta(&namespace, "c1", &[]),
            spec: ClientSpec::default(),
            status: None,
        })
        .await
        .expect("create client");
    let router_secrets: Vec<String> = ROUTERS.iter().map(|r| format!("{r}-tls")).collect();

    // A release without the flag: the objects are written without an owner.
    let mut before = Controller::spawn(
        &env.admin_kubeconfig,
        &namespace,
        &[],
        dir.path().join("before.log"),
    );
    let mut minted = Vec::new();
    for name in &router_secrets {
        minted.push(
            wait_for(&store, &namespace, name, &mut before, |s: &Secret| {
                assert!(owners(&s.metadata).is_empty(), "{name}: {s:?}");
                s.data.as_ref().and_then(|d| d.get("tls.crt")).cloned()
            })
            .await,
        );
    }
    wait_for(&store, &namespace, LEASE_NAME, &mut before, |l: &Lease| {
        assert!(owners(&l.metadata).is_empty());
        l.spec
            .as_ref()
            .filter(|s| s.holder_identity.as_deref() == Some(IDENTITY))
            .map(|_| ())
    })
    .await;
    for name in [CA_CONFIG_MAP, ROUTER_KEYS_CONFIG_MAP] {
        wait_for(&store, &namespace, name, &mut before, |c: &ConfigMap| {
            assert!(owners(&c.metadata).is_empty());
            Some(())
        })
        .await;
    }
    wait_for(
        &store,
        &namespace,
        "c1-client",
        &mut before,
        |_: &Secret| Some(()),
    )
    .await;
    before.stop().await;

    // The upgrade passes --owner-deployment: every one of them is adopted.
    let mut after = Controller::spawn(
        &env.admin_kubeconfig,
        &namespace,
        &["--owner-deployment", DEPLOYMENT],
        dir.path().join("after.log"),
    );
    for (name, old_cert) in router_secrets.iter().zip(&minted) {
        let cert = wait_for(&store, &namespace, name, &mut after, |s: &Secret| {
            owned_by_deployment(&s.metadata, &uid)
                .then(|| s.data.as_ref().and_then(|d| d.get("tls.crt")).cloned())
                .flatten()
        })
        .await;
        assert_eq!(&cert, old_cert, "{name}: adopted, not re-minted");
    }
    for name in [CA_CONFIG_MAP, ROUTER_KEYS_CONFIG_MAP] {
        wait_for(&store, &namespace, name, &mut after, |c: &ConfigMap| {
            owned_by_deployment(&c.metadata, &uid).then_some(())
        })
        .await;
    }
    wait_for(&store, &namespace, LEASE_NAME, &mut after, |l: &Lease| {
        owned_by_deployment(&l.metadata, &uid).then_some(())
    })
    .await;

    // What belongs to the users outlives the release: no Deployment owns it.
    let keys: Secret = store
        .get(&namespace, KEYS_SECRET)
        .await
        .expect("get")
        .expect("keys Secret");
    assert!(owners(&keys.metadata).is_empty(), "{:?}", keys.metadata);
    let credential: Secret = store
        .get(&namespace, "c1-client")
        .await
        .expect("get")
        .expect("credential Secret");
    let credential_owners = owners(&credential.metadata);
    assert!(
        credential_owners.len() == 1 && credential_owners[0].kind == "Client",
        "{credential_owners:?}"
    );
    after.stop().await;

    // A fresh namespace: objects are created owned from the start.
    let (fresh, store) = support::kube_namespace("owner-fresh").await;
    let uid = create_deployment(&fresh).await;
    let mut first = Controller::spawn(
        &env.admin_kubeconfig,
        &fresh,
        &["--owner-deployment", DEPLOYMENT],
        dir.path().join("fresh.log"),
    );
    for name in &router_secrets {
        wait_for(&store, &fresh, name, &mut first, |s: &Secret| {
            assert!(owned_by_deployment(&s.metadata, &uid), "{name}: {s:?}");
            Some(())
        })
        .await;
    }
    for name in [CA_CONFIG_MAP, ROUTER_KEYS_CONFIG_MAP] {
        wait_for(&store, &fresh, name, &mut first, |c: &ConfigMap| {
            assert!(owned_by_deployment(&c.metadata, &uid), "{name}: {c:?}");
            Some(())
        })
        .await;
    }
    wait_for(&store, &fresh, LEASE_NAME, &mut first, |l: &Lease| {
        assert!(owned_by_deployment(&l.metadata, &uid), "{l:?}");
        Some(())
    })
    .await;
    let keys: Secret = store
        .get(&fresh, KEYS_SECRET)
        .await
        .expect("get")
        .expect("keys Secret");
    assert!(owners(&keys.metadata).is_empty(), "{:?}", keys.metadata);
    first.stop().await;
}

#[tokio::test]
async fn an_owner_deployment_that_cannot_be_read_stops_the_start_with_its_name() {
    let (namespace, store) = support::kube_namespace("owner-missing").await;
    let env = TestEnv::shared();
    let dir = tempfile::tempdir().expect("tempdir");

    let mut missing = Controller::spawn(
        &env.admin_kubeconfig,
        &namespace,
        &["--owner-deployment", "no-such-controller"],
        dir.path().join("missing.log"),
    );
    let status = missing.exited().await;
    let log = missing.log();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "owner Deployment {namespace}/no-such-controller (--owner-deployment) does not exist"
        )),
        "{log}"
    );

    // An identity without `get` on the Deployment: the error names the permission.
    create_deployment(&namespace).await;
    let mut forbidden = Controller::spawn(
        &env.controller_kubeconfig,
        &namespace,
        &["--owner-deployment", DEPLOYMENT],
        dir.path().join("forbidden.log"),
    );
    let status = forbidden.exited().await;
    let log = forbidden.log();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "the controller needs `get` on deployments (apps) named {DEPLOYMENT} in {namespace}"
        )),
        "{log}"
    );

    // Nothing was written before the start stopped.
    for name in [CA_CONFIG_MAP, ROUTER_KEYS_CONFIG_MAP] {
        let found: Option<ConfigMap> = store.get(&namespace, name).await.expect("get");
        assert!(found.is_none(), "{name} written");
    }
    let found: Option<Secret> = store.get(&namespace, KEYS_SECRET).await.expect("get");
    assert!(found.is_none(), "keys Secret written");
}
