//! `jumpstarter admin apply -f` and `get|delete policies` through a running service's admin
//! socket: a manifest with a policy, a client and an exporter is created, left unchanged,
//! updated in place; a manifest with one bad document changes nothing; policies are listed,
//! shown and deleted; lease tables show the queue columns.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use jumpstarter_e2e::{free_port, stdout_of};

use crate::support;

use support::{BIN, ServeProcess};

/// Upper bound of every wait; a start normally takes well under a second.
const WAIT: Duration = Duration::from_secs(60);
/// The policy, client and exporter both modes apply.
const LAB: &str = include_str!("fixtures/lab.yaml");

fn serve(data_dir: &Path) -> ServeProcess {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--no-quic", "--data-dir"])
        .arg(data_dir)
        .args(["--grpc-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--router-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
        .env_remove("JUMPSTARTER_NAMESPACE")
        .stdin(Stdio::null());
    let log = data_dir.with_file_name("serve.log");
    ServeProcess::spawn(cmd, data_dir, log, WAIT)
}

fn admin_command(data_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("admin")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("JUMPSTARTER_NAMESPACE")
        .env_remove("JUMPSTARTER_KUBECONFIG")
        .env_remove("JUMPSTARTER_KUBERNETES")
        .env_remove("JUMPSTARTER_OUTPUT")
        .stdin(Stdio::null());
    cmd
}

/// `jumpstarter admin ARGS --data-dir DIR`.
fn admin(data_dir: &Path, args: &[&str]) -> Output {
    admin_command(data_dir, args)
        .output()
        .expect("run jumpstarter admin")
}

/// `jumpstarter admin apply -f FILE` with `text` written to FILE.
fn apply(data_dir: &Path, text: &str) -> Output {
    let file = data_dir.with_file_name("manifest.yaml");
    std::fs::write(&file, text).expect("write the manifest");
    admin(
        data_dir,
        &["apply", "-f", file.to_str().expect("UTF-8 path")],
    )
}

/// `jumpstarter admin apply -f -` with `text` on stdin.
fn apply_stdin(data_dir: &Path, text: &str) -> Output {
    let mut child = admin_command(data_dir, &["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run jumpstarter admin apply");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for apply")
}

fn ok(output: Output) -> String {
    stdout_of("admin", &output)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
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

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).expect("JSON")
}

#[test]
fn apply_get_and_delete_policies_through_the_service() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let service = serve(&data_dir);

    assert_eq!(
        ok(apply(&data_dir, LAB)),
        "exporteraccesspolicy.jumpstarter.dev/lab-policy created\n\
         client.jumpstarter.dev/alice created\n\
         exporter.jumpstarter.dev/board-1 created\n",
        "{}",
        service.logs()
    );

    // The reconciler issues the credentials of what apply created.
    let deadline = Instant::now() + WAIT;
    for kind in ["client", "exporter"] {
        let name = if kind == "client" { "alice" } else { "board-1" };
        loop {
            let object = json(&ok(admin(&data_dir, &["get", kind, name, "-o", "json"])));
            if object["status"]["credential"]["name"].is_string() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{kind} {name} got no credential: {object}\n{}",
                service.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let alice = json(&ok(admin(
        &data_dir,
        &["get", "client", "alice", "-o", "json"],
    )));
    assert_eq!(alice["spec"]["username"], "dex:alice");
    assert_eq!(alice["metadata"]["labels"]["team"], "ci");

    // Table, YAML and names; every name of the kind works.
    let table = ok(admin(&data_dir, &["get", "policies"]));
    assert_eq!(
        without_age(&table),
        "NAME         EXPORTERS    RULES   PRIORITIES\n\
         lab-policy   board=mock   2       20,10(spot)\n"
    );
    for kind in ["policy", "exporteraccesspolicy", "exporteraccesspolicies"] {
        assert_eq!(
            without_age(&ok(admin(&data_dir, &["list", kind]))),
            without_age(&table),
            "{kind}"
        );
    }
    let policy: serde_norway::Value = serde_norway::from_str(&ok(admin(
        &data_dir,
        &["get", "policy", "lab-policy", "-o", "yaml"],
    )))
    .expect("YAML");
    assert_eq!(policy["kind"].as_str(), Some("ExporterAccessPolicy"));
    assert_eq!(policy["metadata"]["namespace"].as_str(), Some("default"));
    assert_eq!(
        policy["spec"]["policies"][0]["maximumDuration"].as_str(),
        Some("2h")
    );
    assert_eq!(
        ok(admin(&data_dir, &["get", "policies", "-o", "name"])),
        "exporteraccesspolicy.jumpstarter.dev/lab-policy\n"
    );
    let uid = |data_dir: &Path| {
        json(&ok(admin(
            data_dir,
            &["get", "policy", "lab-policy", "-o", "json"],
        )))["metadata"]["uid"]
            .clone()
    };
    let first_uid = uid(&data_dir);

    // The same file again changes nothing; a changed priority updates the policy in place.
    assert_eq!(
        ok(apply(&data_dir, LAB)),
        "exporteraccesspolicy.jumpstarter.dev/lab-policy unchanged\n\
         client.jumpstarter.dev/alice unchanged\n\
         exporter.jumpstarter.dev/board-1 unchanged\n"
    );
    let changed = LAB.replace("priority: 20", "priority: 30");
    assert_eq!(
        ok(apply(&data_dir, &changed)),
        "exporteraccesspolicy.jumpstarter.dev/lab-policy configured\n\
         client.jumpstarter.dev/alice unchanged\n\
         exporter.jumpstarter.dev/board-1 unchanged\n"
    );
    assert_eq!(uid(&data_dir), first_uid, "updated, not re-created");
    assert!(ok(admin(&data_dir, &["get", "policies"])).contains("30,10(spot)"));

    // One bad document: nothing at all is applied, and the error names document and field.
    let bad = format!(
        "{}---\n\
         apiVersion: jumpstarter.dev/v1alpha1\n\
         kind: Client\n\
         metadata: {{name: bob}}\n\
         ---\n\
         apiVersion: jumpstarter.dev/v1alpha1\n\
         kind: ExporterAccessPolicy\n\
         metadata: {{name: second}}\n\
         spec: {{policies: [{{priority: 1, maxDuration: 1h}}]}}\n",
        LAB.replace("priority: 30", "priority: 40")
    );
    let refused = apply(&data_dir, &bad);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains(
            "document 5 (ExporterAccessPolicy/second): unknown field \
             \"spec.policies[0].maxDuration\""
        ),
        "{}",
        stderr(&refused)
    );
    assert!(refused.stdout.is_empty());
    assert!(!admin(&data_dir, &["get", "client", "bob"]).status.success());
    assert!(ok(admin(&data_dir, &["get", "policies"])).contains("30,10(spot)"));

    // The service serves one namespace: a document naming another is refused.
    let elsewhere = apply(
        &data_dir,
        &changed.replace("name: lab-policy", "name: lab-policy\n  namespace: lab"),
    );
    assert!(
        stderr(&elsewhere).contains(
            "document 1 (ExporterAccessPolicy/lab-policy): metadata.namespace \"lab\" differs \
             from the namespace \"default\""
        ),
        "{}",
        stderr(&elsewhere)
    );

    // Stdin, and a lease: its table has the queue columns.
    let lease = "apiVersion: jumpstarter.dev/v1alpha1\n\
                 kind: Lease\n\
                 metadata: {name: l1}\n\
                 spec: {clientRef: {name: alice}, exporterRef: {name: board-1}, duration: 30m}\n";
    assert_eq!(
        ok(apply_stdin(&data_dir, lease)),
        "lease.jumpstarter.dev/l1 created\n"
    );
    let leases = ok(admin(&data_dir, &["get", "leases"]));
    let header = leases.lines().next().unwrap_or_default();
    assert!(
        header.ends_with("STATE     POSITION   ETA   AGE"),
        "{leases}"
    );
    assert!(leases.lines().nth(1).unwrap_or_default().starts_with("l1 "));

    let deleted = admin(&data_dir, &["delete", "policies", "lab-policy"]);
    assert_eq!(
        ok(deleted),
        "exporteraccesspolicy.jumpstarter.dev/lab-policy deleted\n"
    );
    let empty = admin(&data_dir, &["get", "policies"]);
    assert!(ok(empty.clone()).is_empty());
    assert!(stderr(&empty).contains("No policies found."));
    let gone = admin(&data_dir, &["get", "policy", "lab-policy"]);
    assert!(stderr(&gone).contains("not found"), "{}", stderr(&gone));
}

#[test]
fn apply_help_shows_examples() {
    let help = Command::new(BIN)
        .args(["admin", "apply", "--help"])
        .output()
        .expect("run jumpstarter");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("jumpstarter admin apply -f lab.yaml"),
        "{text}"
    );
    assert!(text.contains("create client|exporter"), "{text}");
    let help = Command::new(BIN)
        .args(["admin", "get", "--help"])
        .output()
        .expect("run jumpstarter");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("jumpstarter admin get policies"), "{text}");
}
