//! `jumpstarter admin --kubeconfig …` against a real kube-apiserver, with the controller's
//! reconcile loop running in this process to issue credentials.

use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use jumpstarter_controller::keys;
use jumpstarter_controller::reconcile::{self, ReconcileMetrics};
use jumpstarter_controller::settings::Settings;
use jumpstarter_controller::store::kube::KubeStore;
use jumpstarter_testenv::TestEnv;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_jumpstarter");

fn admin(env: &TestEnv, ns: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("admin")
        .args(args)
        .arg("--kubeconfig")
        .arg(&env.admin_kubeconfig)
        .args(["--namespace", ns])
        .stdin(Stdio::null())
        .output()
        .expect("run jumpstarter admin")
}

fn ok(output: Output) -> String {
    jumpstarter_e2e::stdout_of("admin", &output)
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_works_through_the_kubernetes_api() {
    let env = TestEnv::shared();
    env.install_crds(&jumpstarter_controller::crd::definitions())
        .await
        .expect("install CRDs");
    let ns = env.namespace("standalone-admin").await;
    let store = KubeStore::new(env.admin_client().await);
    let settings = Arc::new(Settings::example(&ns, "127.0.0.1:8082", "127.0.0.1:8083"));
    let keys = Arc::new(
        keys::bootstrap(&store, &settings, OffsetDateTime::now_utc())
            .await
            .expect("bootstrap keys"),
    );
    let stop = CancellationToken::new();
    let loop_task = tokio::spawn(reconcile::run(
        store,
        keys.clone(),
        settings,
        Arc::new(ReconcileMetrics::unregistered()),
        jumpstarter_controller::replica::ReplicaRegistry::single(
            jumpstarter_controller::replica::ReplicaId::new("test"),
        ),
        stop.clone(),
    ));

    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("board.yaml");
    ok(admin(
        env,
        &ns,
        &[
            "create",
            "exporter",
            "board-1",
            "-l",
            "board=mock",
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    let config: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(&out).expect("config")).expect("YAML");
    assert_eq!(config["kind"].as_str(), Some("ExporterConfig"));
    assert_eq!(config["metadata"]["namespace"].as_str(), Some(ns.as_str()));
    assert_eq!(config["endpoint"].as_str(), Some("127.0.0.1:8082"));
    let claims = keys
        .tokens
        .current()
        .verifier()
        .verify(
            config["token"].as_str().unwrap_or_default(),
            OffsetDateTime::now_utc(),
        )
        .expect("token verifies");
    assert!(
        claims.sub.starts_with(&format!("exporter:{ns}:board-1:")),
        "{}",
        claims.sub
    );

    let client = ok(admin(env, &ns, &["create", "client", "alice"]));
    assert!(client.contains("kind: ClientConfig"), "{client}");

    let table = ok(admin(env, &ns, &["list", "exporters"]));
    assert!(table.lines().any(|l| l.starts_with("board-1 ")), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(admin(env, &ns, &["get", "clients", "-o", "json"]))).unwrap();
    assert_eq!(json["items"][0]["metadata"]["name"], "alice");
    ok(admin(env, &ns, &["delete", "exporter", "board-1"]));
    let after = admin(env, &ns, &["get", "exporter", "board-1"]);
    assert!(!after.status.success());
    assert!(String::from_utf8_lossy(&after.stderr).contains("not found"));

    stop.cancel();
    loop_task.await.expect("loop task").expect("loop result");
}
