//! `jumpstarter-controller run` against a real kube-apiserver with the 0.9.0 ConfigMap
//! `jumpstarter-controller` in its namespace: an invalid one stops the start with the
//! offending key's path; a valid one is read (its routers replace the missing --router);
//! a named one (--config-map) is the one read.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use jumpstarter_controller::keys::CA_CONFIG_MAP;
use jumpstarter_controller::store::Store;
use jumpstarter_controller::store::kube::KubeStore;
use jumpstarter_testenv::TestEnv;
use k8s_openapi::api::core::v1::ConfigMap;

/// Bound of every wait for the controller (start, exit).
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
        let child = Command::new(env!("CARGO_BIN_EXE_jumpstarter-controller"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--namespace", namespace])
            .args(["--grpc-listen", "127.0.0.1:0"])
            .args(["--grpc-endpoint", "127.0.0.1:8082"])
            .args(["--probe-listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("JUMPSTARTER_CONFIG")
            .env_remove("JUMPSTARTER_CONFIG_MAP")
            .env_remove("JUMPSTARTER_ROUTERS")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn the controller");
        Controller { child, log }
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

    /// Waits (bounded) until the controller has loaded its keys (the CA ConfigMap exists).
    async fn started(&mut self, store: &KubeStore, namespace: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let ca: Option<ConfigMap> = store.get(namespace, CA_CONFIG_MAP).await.expect("get");
            if ca.is_some() {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!("controller exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "controller not started:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then waits for a clean exit.
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

async fn write_config_map(store: &KubeStore, namespace: &str, name: &str, data: &[(&str, &str)]) {
    let config_map = ConfigMap {
        metadata: support::object_meta(namespace, name, &[]),
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..ConfigMap::default()
    };
    store.create(&config_map).await.expect("create ConfigMap");
}

#[tokio::test]
async fn an_invalid_config_map_stops_the_start_with_the_key_path() {
    let (namespace, store) = support::kube_namespace("upstream-bad").await;
    let env = TestEnv::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    write_config_map(
        &store,
        &namespace,
        "jumpstarter-controller",
        &[("config", "grpc:\n  keepalive:\n    minTim: 1s\n")],
    )
    .await;
    let mut controller = Controller::spawn(
        &env.admin_kubeconfig,
        &namespace,
        &[],
        dir.path().join("bad.log"),
    );
    let status = controller.exited().await;
    assert!(!status.success(), "{}", controller.log());
    let log = controller.log();
    assert!(
        log.contains("config: grpc.keepalive: unknown field `minTim`, expected one of"),
        "{log}"
    );
    // It stopped before loading (and so creating) its keys.
    let ca: Option<ConfigMap> = store.get(&namespace, CA_CONFIG_MAP).await.expect("get");
    assert!(ca.is_none());
}

#[tokio::test]
async fn the_named_config_map_is_read_and_its_routers_are_used() {
    let (namespace, store) = support::kube_namespace("upstream-run").await;
    let env = TestEnv::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    // The default name holds something invalid: only the named one may be read.
    write_config_map(
        &store,
        &namespace,
        "jumpstarter-controller",
        &[("config", "bogus: 1\n")],
    )
    .await;
    write_config_map(
        &store,
        &namespace,
        "lab-config",
        &[
            (
                "config",
                "grpc:\n  keepalive:\n    minTime: 3s\n    permitWithoutStream: true\n",
            ),
            ("router", "default:\n  endpoint: router.example.test:443\n"),
        ],
    )
    .await;
    let mut controller = Controller::spawn(
        &env.admin_kubeconfig,
        &namespace,
        &["--config-map", "lab-config"],
        dir.path().join("run.log"),
    );
    controller.started(&store, &namespace).await;
    let log = controller.log();
    assert!(log.contains("configuration read"), "{log}");
    assert!(log.contains("lab-config"), "{log}");
    assert!(
        !log.contains("no router"),
        "the ConfigMap's router key names a router:\n{log}"
    );
    assert!(log.contains("not applied: grpc.keepalive.minTime"), "{log}");
    controller.stop().await;
}
