//! The kubectl habits of `jumpstarter admin`, through a running service's admin socket:
//! `created`/`deleted` lines, the `AGE` column, `-o name`, `get -l SELECTOR`,
//! `delete --ignore-not-found`; and `completion`, `--version` of the binary.
//! (`admin_kubernetes.rs` checks the same habits, and `--context`, in Kubernetes mode.)

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use jumpstarter_e2e::{free_port, stdout_of};

use crate::support;

use support::{BIN, ServeProcess};

/// Upper bound of the wait for the service to start.
const WAIT: Duration = Duration::from_secs(60);

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

/// `jumpstarter ARGS` with no `JUMPSTARTER_*` setting from the environment.
fn jumpstarter(args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("JUMPSTARTER_") {
            cmd.env_remove(key);
        }
    }
    cmd.output().expect("run jumpstarter")
}

/// `jumpstarter admin ARGS --data-dir DIR`.
fn admin(data_dir: &Path, args: &[&str]) -> Output {
    let mut all = vec!["admin"];
    all.extend_from_slice(args);
    all.extend(["--data-dir", data_dir.to_str().expect("UTF-8 path")]);
    jumpstarter(&all)
}

fn ok(output: Output) -> String {
    stdout_of("admin", &output)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The last cell of each line of a table (the `AGE` column).
fn last_column(table: &str) -> Vec<&str> {
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

#[test]
fn admin_follows_kubectl_habits_through_the_service() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let service = serve(&data_dir);

    // create: the `created` line on stdout when the configuration goes to a file; on
    // stderr when the configuration is stdout.
    let file = tmp.path().join("alice.yaml");
    let created = admin(
        &data_dir,
        &[
            "create",
            "client",
            "alice",
            "--out",
            file.to_str().expect("UTF-8"),
        ],
    );
    assert_eq!(
        stderr(&created),
        format!("configuration written to {}\n", file.display())
    );
    assert_eq!(
        ok(created),
        "client.jumpstarter.dev/alice created\n",
        "{}",
        service.logs()
    );
    let board = admin(
        &data_dir,
        &["create", "exporter", "board-1", "-l", "board=mock"],
    );
    assert_eq!(stderr(&board), "exporter.jumpstarter.dev/board-1 created\n");
    let config: serde_norway::Value = serde_norway::from_str(&ok(board)).expect("YAML");
    assert_eq!(config["kind"].as_str(), Some("ExporterConfig"));
    let other = tmp.path().join("board-2.yaml");
    ok(admin(
        &data_dir,
        &[
            "create",
            "exporter",
            "board-2",
            "-l",
            "board=real",
            "--out",
            other.to_str().expect("UTF-8"),
        ],
    ));

    // Every table ends with AGE; the objects are seconds old.
    for kind in ["clients", "exporters", "policies"] {
        if kind == "policies" {
            let policy = tmp.path().join("policy.yaml");
            std::fs::write(&policy, include_str!("fixtures/lab.yaml")).expect("write");
            ok(admin(
                &data_dir,
                &["apply", "-f", policy.to_str().expect("UTF-8")],
            ));
        }
        let table = ok(admin(&data_dir, &["get", kind]));
        let ages = last_column(&table);
        assert_eq!(ages[0], "AGE", "{table}");
        assert!(ages.len() > 1, "{table}");
        assert!(ages[1..].iter().all(|a| is_fresh_age(a)), "{table}");
    }

    // -o name, and -l narrowing it.
    assert_eq!(
        ok(admin(&data_dir, &["get", "exporters", "-o", "name"])),
        "exporter.jumpstarter.dev/board-1\nexporter.jumpstarter.dev/board-2\n"
    );
    let name_of = |selector: &str| {
        ok(admin(
            &data_dir,
            &["get", "exporters", "-l", selector, "-o", "name"],
        ))
    };
    assert_eq!(name_of("board=mock"), "exporter.jumpstarter.dev/board-1\n");
    assert_eq!(name_of("board!=mock"), "exporter.jumpstarter.dev/board-2\n");
    assert_eq!(
        name_of("board in (mock,real)"),
        "exporter.jumpstarter.dev/board-1\nexporter.jumpstarter.dev/board-2\n"
    );
    let table = ok(admin(
        &data_dir,
        &["get", "clients", "--selector", "team=ci"],
    ));
    assert_eq!(
        table.lines().count(),
        2,
        "header and the applied alice: {table}"
    );
    let none = admin(&data_dir, &["get", "exporters", "-l", "!board"]);
    assert_eq!(stderr(&none), "No exporters found.\n");
    assert_eq!(ok(none), "");
    // An invalid selector: a usage error naming it, nothing sent.
    let bad = admin(&data_dir, &["get", "exporters", "-l", "board in ("]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("invalid label selector \"board in (\""),
        "{}",
        stderr(&bad)
    );

    // create lease: the `created` line by default, the table with -o.
    let lease = ok(admin(
        &data_dir,
        &["create", "lease", "--client", "alice", "-l", "board=mock"],
    ));
    let name = lease
        .strip_prefix("lease.jumpstarter.dev/")
        .and_then(|rest| rest.strip_suffix(" created\n"))
        .unwrap_or_else(|| panic!("a created line: {lease:?}"));
    assert_eq!(name.len(), 36, "a UUID: {name}");
    assert_eq!(
        ok(admin(&data_dir, &["get", "leases", "-o", "name"])),
        format!("lease.jumpstarter.dev/{name}\n")
    );

    // delete: the `deleted` line; a missing object is an error naming it, unless
    // --ignore-not-found.
    assert_eq!(
        ok(admin(&data_dir, &["delete", "exporter", "board-2"])),
        "exporter.jumpstarter.dev/board-2 deleted\n"
    );
    let again = admin(&data_dir, &["delete", "exporter", "board-2"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("exporter default/board-2 not found"),
        "{}",
        stderr(&again)
    );
    let ignored = admin(
        &data_dir,
        &["delete", "exporter", "board-2", "--ignore-not-found"],
    );
    assert_eq!(stderr(&ignored), "");
    assert_eq!(ok(ignored), "");
    // It only ignores absence: an existing object is still deleted.
    assert_eq!(
        ok(admin(
            &data_dir,
            &["delete", "lease", name, "--ignore-not-found"]
        )),
        format!("lease.jumpstarter.dev/{name} deleted\n")
    );
    drop(service);
}

#[test]
fn completion_prints_a_script_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _jumpstarter"),
        ("zsh", "#compdef jumpstarter"),
        ("fish", "complete -c jumpstarter"),
    ] {
        let script = stdout_of("completion", &jumpstarter(&["completion", shell]));
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("ignore-not-found"), "{shell}");
    }
    let unknown = jumpstarter(&["completion", "tcsh"]);
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn version_names_the_commit() {
    jumpstarter_testenv::assert_version_names_the_commit(
        std::path::Path::new(env!("CARGO_BIN_EXE_jumpstarter")),
        "jumpstarter",
        env!("CARGO_PKG_VERSION"),
    );
}
