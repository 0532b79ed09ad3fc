//! `jumpstarter admin --kubeconfig …` against a real kube-apiserver, with the controller's
//! reconcile loop running in this process to issue credentials.

use std::path::{Path, PathBuf};
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

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `jumpstarter admin ARGS --kubeconfig KUBECONFIG`: the namespace is the context's.
fn admin_with(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("admin")
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env_remove("JUMPSTARTER_NAMESPACE")
        .env_remove("JUMPSTARTER_CONTEXT")
        .stdin(Stdio::null())
        .output()
        .expect("run jumpstarter admin")
}

/// `table` without its last column (`AGE`, which changes from run to run).
fn without_age(table: &str) -> String {
    table
        .lines()
        .map(|l| {
            format!(
                "{}\n",
                l.rsplit_once("   ").map_or(l, |(rest, _)| rest).trim_end()
            )
        })
        .collect()
}

/// The last cell of each line of a table (the `AGE` column).
fn ages(table: &str) -> Vec<&str> {
    table
        .lines()
        .map(|l| l.rsplit_once("   ").map_or(l, |(_, age)| age))
        .collect()
}

/// An age a just-created object can have: whole seconds, under two minutes.
fn is_fresh_age(age: &str) -> bool {
    age.strip_suffix('s')
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n < 120)
}

/// A copy of the admin kubeconfig in `dir` with one more context, `lab`: the current
/// context's cluster and user, with namespace `ns`.
fn kubeconfig_with_lab_context(env: &TestEnv, dir: &Path, ns: &str) -> PathBuf {
    let mut kubeconfig =
        kube::config::Kubeconfig::read_from(&env.admin_kubeconfig).expect("read kubeconfig");
    let current = kubeconfig
        .current_context
        .clone()
        .expect("a current context");
    let mut lab = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == current)
        .expect("the current context")
        .clone();
    lab.name = "lab".to_owned();
    if let Some(context) = lab.context.as_mut() {
        context.namespace = Some(ns.to_owned());
    }
    kubeconfig.contexts.push(lab);
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_norway::to_string(&kubeconfig).expect("YAML")).expect("write");
    path
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
    assert_eq!(
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
        )),
        "exporter.jumpstarter.dev/board-1 created\n"
    );
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

    let created = admin(env, &ns, &["create", "client", "alice"]);
    assert!(
        stderr(&created).contains("client.jumpstarter.dev/alice created\n"),
        "{}",
        stderr(&created)
    );
    let client = ok(created);
    assert!(client.contains("kind: ClientConfig"), "{client}");
    let other = tmp.path().join("board-2.yaml");
    ok(admin(
        env,
        &ns,
        &[
            "create",
            "exporter",
            "board-2",
            "-l",
            "board=real",
            "--out",
            other.to_str().unwrap(),
        ],
    ));

    // Tables end with AGE; -o name; -l narrows by label.
    let table = ok(admin(env, &ns, &["list", "exporters"]));
    assert!(table.lines().any(|l| l.starts_with("board-1 ")), "{table}");
    let age = ages(&table);
    assert_eq!(age[0], "AGE", "{table}");
    assert!(age[1..].iter().all(|a| is_fresh_age(a)), "{table}");
    let clients = ok(admin(env, &ns, &["get", "clients"]));
    assert!(is_fresh_age(ages(&clients)[1]), "{clients}");
    assert_eq!(
        ok(admin(env, &ns, &["get", "exporters", "-o", "name"])),
        "exporter.jumpstarter.dev/board-1\nexporter.jumpstarter.dev/board-2\n"
    );
    assert_eq!(
        ok(admin(
            env,
            &ns,
            &["get", "exporters", "-l", "board=mock", "-o", "name"]
        )),
        "exporter.jumpstarter.dev/board-1\n"
    );
    assert_eq!(
        ok(admin(
            env,
            &ns,
            &[
                "get",
                "exporters",
                "--selector",
                "board notin (mock)",
                "-o",
                "name"
            ]
        )),
        "exporter.jumpstarter.dev/board-2\n"
    );
    let bad = admin(env, &ns, &["get", "exporters", "-l", "board in ("]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("invalid label selector"),
        "{}",
        stderr(&bad)
    );

    // --context picks a context of the kubeconfig, and with it the namespace; a missing
    // one is named with the ones there are.
    let kubeconfig = kubeconfig_with_lab_context(env, tmp.path(), &ns);
    assert_eq!(
        ok(admin_with(
            &kubeconfig,
            &["get", "clients", "-o", "name", "--context", "lab"]
        )),
        "client.jumpstarter.dev/alice\n"
    );
    let missing = admin_with(&kubeconfig, &["get", "clients", "--context", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    let message = stderr(&missing);
    assert!(
        message.contains(&format!(
            "context \"nope\" not found in the kubeconfig {}; available contexts: ",
            kubeconfig.display()
        )) && message.contains("lab"),
        "{message}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(admin(env, &ns, &["get", "clients", "-o", "json"]))).unwrap();
    assert_eq!(json["items"][0]["metadata"]["name"], "alice");
    assert_eq!(
        ok(admin(env, &ns, &["delete", "exporter", "board-1"])),
        "exporter.jumpstarter.dev/board-1 deleted\n"
    );
    let after = admin(env, &ns, &["get", "exporter", "board-1"]);
    assert!(!after.status.success());
    assert!(String::from_utf8_lossy(&after.stderr).contains("not found"));
    // Deleting it again is an error naming it, unless --ignore-not-found.
    let again = admin(env, &ns, &["delete", "exporter", "board-1"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains(&format!("exporter {ns}/board-1 not found")),
        "{}",
        stderr(&again)
    );
    let ignored = admin(
        env,
        &ns,
        &["delete", "exporter", "board-1", "--ignore-not-found"],
    );
    assert_eq!(ok(ignored), "");

    stop.cancel();
    loop_task.await.expect("loop task").expect("loop result");
}

/// The policy, client and exporter both modes apply.
const LAB: &str = include_str!("fixtures/lab.yaml");

/// `jumpstarter admin apply -f FILE --kubeconfig … --namespace NS` with `text` in FILE.
fn apply(env: &TestEnv, ns: &str, dir: &std::path::Path, text: &str) -> Output {
    let file = dir.join("manifest.yaml");
    std::fs::write(&file, text).expect("write the manifest");
    admin(
        env,
        ns,
        &["apply", "-f", file.to_str().expect("UTF-8 path")],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_and_policies_work_through_the_kubernetes_api() {
    let env = TestEnv::shared();
    env.install_crds(&jumpstarter_controller::crd::definitions())
        .await
        .expect("install CRDs");
    let ns = env.namespace("standalone-apply").await;
    let tmp = tempfile::tempdir().expect("tempdir");

    assert_eq!(
        ok(apply(env, &ns, tmp.path(), LAB)),
        "exporteraccesspolicy.jumpstarter.dev/lab-policy created\n\
         client.jumpstarter.dev/alice created\n\
         exporter.jumpstarter.dev/board-1 created\n"
    );
    assert_eq!(
        without_age(&ok(admin(env, &ns, &["get", "policies"]))),
        "NAME         EXPORTERS    RULES   PRIORITIES\n\
         lab-policy   board=mock   2       20,10(spot)\n"
    );
    let yaml: serde_norway::Value = serde_norway::from_str(&ok(admin(
        env,
        &ns,
        &["get", "exporteraccesspolicy", "lab-policy", "-o", "yaml"],
    )))
    .expect("YAML");
    assert_eq!(yaml["metadata"]["namespace"].as_str(), Some(ns.as_str()));
    let uid = yaml["metadata"]["uid"].clone();

    assert_eq!(
        ok(apply(env, &ns, tmp.path(), LAB)),
        "exporteraccesspolicy.jumpstarter.dev/lab-policy unchanged\n\
         client.jumpstarter.dev/alice unchanged\n\
         exporter.jumpstarter.dev/board-1 unchanged\n"
    );
    let changed = LAB.replace("priority: 20", "priority: 30");
    assert_eq!(
        ok(apply(env, &ns, tmp.path(), &changed)),
        "exporteraccesspolicy.jumpstarter.dev/lab-policy configured\n\
         client.jumpstarter.dev/alice unchanged\n\
         exporter.jumpstarter.dev/board-1 unchanged\n"
    );
    let yaml: serde_norway::Value = serde_norway::from_str(&ok(admin(
        env,
        &ns,
        &["get", "policy", "lab-policy", "-o", "yaml"],
    )))
    .expect("YAML");
    assert_eq!(yaml["metadata"]["uid"], uid, "updated, not re-created");

    // A document naming another namespace than --namespace refuses the whole file.
    let bad = format!(
        "{}---\napiVersion: jumpstarter.dev/v1alpha1\nkind: Client\n\
         metadata: {{name: bob, namespace: elsewhere}}\n",
        changed.replace("priority: 30", "priority: 40")
    );
    let refused = apply(env, &ns, tmp.path(), &bad);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("document 4 (Client/bob): metadata.namespace \"elsewhere\" differs"),
        "{stderr}"
    );
    assert!(ok(admin(env, &ns, &["get", "policies"])).contains("30,10(spot)"));

    ok(admin(env, &ns, &["delete", "policies", "lab-policy"]));
    let gone = admin(env, &ns, &["get", "policy", "lab-policy"]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("not found"));
}
