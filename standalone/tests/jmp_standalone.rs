//! Standalone mode with the real jumpstarter 0.9.0 tools: configurations written by
//! `jumpstarter admin create` are used unchanged (apart from the exporter's driver tree)
//! by `jmp run` and `jmp shell … -- j power on`.

use std::path::Path;
use std::time::{Duration, Instant};

use jumpstarter_e2e::{Proc, free_port, stdout_of, venv};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_jumpstarter");
const WAIT: Duration = Duration::from_secs(90);

fn jumpstarter(data_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).arg("--data-dir").arg(data_dir);
    cmd
}

/// The words of the command line `line`, with `path` where `{}` stands.
fn words<'a>(line: &'a str, path: &'a str) -> Vec<&'a str> {
    line.split_whitespace()
        .map(|word| if word == "{}" { path } else { word })
        .collect()
}

fn jmp(home: &Path, args: &[&str]) -> Command {
    let venv = venv();
    let mut cmd = Command::new(venv.join("bin/jmp"));
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    cmd.args(args)
        .env("PATH", path)
        .env("HOME", home)
        .env("JMP_CLIENT_CONFIG_HOME", home.join("jumpstarter"))
        .env("NONINTERACTIVE", "1")
        .env_remove("JMP_LEASE")
        .current_dir(home);
    cmd
}

async fn run_ok(mut cmd: Command, what: &str) -> String {
    let out = tokio::time::timeout(WAIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} timed out"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    stdout_of(what, &out)
}

#[tokio::test(flavor = "multi_thread")]
async fn jmp_run_and_jmp_shell_work_with_the_standalone_service() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).expect("home");

    let (grpc, router, http) = (free_port(), free_port(), free_port());
    let mut serve = jumpstarter(&data_dir, &["serve"]);
    serve.args([
        "--grpc-listen",
        &format!("127.0.0.1:{grpc}"),
        "--router-listen",
        &format!("127.0.0.1:{router}"),
        "--http-listen",
        &format!("127.0.0.1:{http}"),
    ]);
    let mut service =
        Proc::spawn("jumpstarter serve", serve, tmp.path().join("serve.log")).expect("serve");
    let deadline = Instant::now() + WAIT;
    while std::os::unix::net::UnixStream::connect(data_dir.join("admin.sock")).is_err() {
        assert!(service.running(), "serve exited:\n{}", service.output());
        assert!(
            Instant::now() < deadline,
            "serve not ready:\n{}",
            service.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The exporter: its configuration plus a driver tree, run by the real `jmp run`.
    let board = tmp.path().join("board-1.yaml");
    run_ok(
        jumpstarter(
            &data_dir,
            &words(
                "admin create exporter board-1 -l board=mock --out {}",
                &board.to_string_lossy(),
            ),
        ),
        "create exporter",
    )
    .await;
    let mut config: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(&board).expect("read")).expect("YAML");
    config["export"] =
        serde_norway::from_str("power: {type: jumpstarter_driver_power.driver.MockPower}")
            .expect("export");
    std::fs::write(&board, serde_norway::to_string(&config).expect("YAML")).expect("write");
    let mut exporter = Proc::spawn(
        "jmp run",
        jmp(
            &home,
            &["run", "--exporter-config", &board.to_string_lossy()],
        ),
        tmp.path().join("exporter.log"),
    )
    .expect("jmp run");

    let alice = tmp.path().join("alice.yaml");
    run_ok(
        jumpstarter(
            &data_dir,
            &words(
                "admin create client alice --out {}",
                &alice.to_string_lossy(),
            ),
        ),
        "create client",
    )
    .await;

    // Wait until the exporter has registered and reported itself available.
    let deadline = Instant::now() + WAIT;
    loop {
        let json = run_ok(
            jumpstarter(
                &data_dir,
                &["admin", "get", "exporter", "board-1", "-o", "json"],
            ),
            "get exporter",
        )
        .await;
        let value: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        if value["status"]["exporterStatus"] == "Available" {
            break;
        }
        assert!(exporter.running(), "jmp run exited:\n{}", exporter.output());
        assert!(
            Instant::now() < deadline,
            "exporter not available: {json}\n{}",
            exporter.output()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let listed = run_ok(
        jmp(
            &home,
            &words("get exporters --client-config {}", &alice.to_string_lossy()),
        ),
        "jmp get exporters",
    )
    .await;
    assert!(listed.contains("board-1"), "{listed}");
    run_ok(
        jmp(
            &home,
            &words(
                "shell --client-config {} -l board=mock -- j power on",
                &alice.to_string_lossy(),
            ),
        ),
        "jmp shell -- j power on",
    )
    .await;

    // The shell's lease is over and visible to the admin.
    let leases = run_ok(
        jumpstarter(&data_dir, &["admin", "list", "leases", "-o", "json"]),
        "list leases",
    )
    .await;
    let leases: serde_json::Value = serde_json::from_str(&leases).expect("JSON");
    let items = leases["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{leases}");
    assert_eq!(items[0]["spec"]["clientRef"]["name"], "alice");
    assert_eq!(items[0]["status"]["exporterRef"]["name"], "board-1");

    exporter.stop(Duration::from_secs(20)).await;
    let status = service.stop(Duration::from_secs(40)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "serve did not stop cleanly: {status:?}\n{}",
        service.output()
    );
}
