//! The smoke preset of the whole suite, as CI runs it: every scenario completes, every
//! transfer arrives intact, and the report (JSON, Markdown, SVG) is complete. Nothing here
//! looks at how fast anything was.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn sibling(name: &str) -> PathBuf {
    let loadtest = Path::new(env!("CARGO_BIN_EXE_jumpstarter-loadtest"));
    let path = loadtest.parent().expect("bin folder").join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (cargo build -p jumpstarter-router -p jumpstarter-standalone)",
        path.display()
    );
    path
}

/// Runs `cmd` to completion within `limit`; `None` (after killing it) when it takes longer.
fn run_bounded(mut cmd: Command, limit: std::time::Duration) -> Option<std::process::Output> {
    let stderr = tempfile::NamedTempFile::new().expect("stderr file");
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(stderr.reopen().expect("stderr file"))
        .spawn()
        .expect("run the load test");
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(std::process::Output {
                status,
                stdout: Vec::new(),
                stderr: std::fs::read(stderr.path()).unwrap_or_default(),
            });
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("the smoke run took longer than {limit:?}; killed");
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn smoke_run_reports_every_scenario_intact() {
    let router = sibling("jumpstarter-router");
    let standalone = sibling("jumpstarter");
    let out = tempfile::tempdir().expect("out dir");
    let work = tempfile::tempdir().expect("work dir");
    // The controller scenario also runs on the project's real kube-apiserver.
    let kube = jumpstarter_testenv::TestEnv::shared();
    let controller = sibling("jumpstarter-controller");
    // Bounded: every step of the harness is bounded itself (a stalled session fails its
    // scenario by name), and the whole run too, so that nothing can hold CI.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jumpstarter-loadtest"));
    cmd.arg("--smoke")
        .arg("--out")
        .arg(out.path())
        .arg("--work-dir")
        .arg(work.path())
        .arg("--router-bin")
        .arg(&router)
        .arg("--standalone-bin")
        .arg(&standalone)
        .arg("--controller-bin")
        .arg(&controller)
        .arg("--kubeconfig")
        .arg(&kube.admin_kubeconfig)
        // Two replicas under leader election, clients and exporters spread over both.
        .args(["--kube-replicas", "2"])
        // The saturated round trips also with the router on its own CPU.
        .arg("--pin")
        .arg("all");
    let output = run_bounded(cmd, std::time::Duration::from_secs(300))
        .expect("the smoke run took longer than 300 s");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the smoke run failed:\n{stderr}");

    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("results.json")).expect("results.json"),
    )
    .expect("results.json is JSON");
    assert_eq!(json["preset"], "smoke");
    let scenarios = json["scenarios"].as_array().expect("scenarios");
    let numbers: Vec<u64> = scenarios
        .iter()
        .map(|s| s["number"].as_u64().expect("number"))
        .collect();
    assert_eq!(numbers, (1..=9).collect::<Vec<u64>>());
    for scenario in scenarios {
        assert_eq!(scenario["status"], "ok", "{scenario}");
        let rows = scenario["rows"].as_array().expect("rows");
        assert!(!rows.is_empty(), "no figures in {scenario}");
        for row in rows {
            for cell in row["values"].as_array().expect("values") {
                assert!(!cell["value"].is_null(), "a figure is missing in {row}");
            }
        }
    }
    let controller_rows: Vec<&str> = scenarios[6]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        controller_rows,
        ["10 exporters", "kube-apiserver, 2 replicas: 10 exporters"],
        "the controller scenario on the embedded store and on Kubernetes"
    );
    // Only the Kubernetes row counts the API server's writes at idle; both give memory.
    let controller_rows = scenarios[6]["rows"].as_array().expect("rows");
    let has = |row: &Value, key: &str| {
        row["values"]
            .as_array()
            .expect("values")
            .iter()
            .any(|c| c["key"] == key && c["value"].as_f64().is_some_and(|v| v >= 0.0))
    };
    assert!(!has(&controller_rows[0], "idle API writes/s"));
    assert!(
        has(&controller_rows[1], "idle API writes/s"),
        "{}",
        controller_rows[1]
    );
    assert!(has(&controller_rows[1], "replicas"));
    for row in controller_rows {
        assert!(has(row, "RSS MiB"), "{row}");
    }
    // Tail percentiles only where the row has the samples for them.
    for scenario in scenarios {
        for row in scenario["rows"].as_array().expect("rows") {
            let cells = row["values"].as_array().expect("values");
            let samples = cells
                .iter()
                .find(|c| c["key"] == "count" || c["key"] == "samples")
                .and_then(|c| c["value"].as_f64())
                .unwrap_or(0.0);
            for cell in cells {
                let key = cell["key"].as_str().expect("key");
                if key.split(' ').any(|w| w == "p99") {
                    assert!(samples >= 1000.0, "{key} from {samples} samples in {row}");
                }
                if key.split(' ').any(|w| w == "p99.9" || w == "p999") {
                    assert!(samples >= 10_000.0, "{key} from {samples} samples in {row}");
                }
            }
        }
    }
    let environment = &json["environment"];
    for key in [
        "cpu_model",
        "kernel",
        "tcp_congestion_control",
        "rustc",
        "git_commit",
    ] {
        assert!(
            environment[key].as_str().is_some_and(|v| !v.is_empty()),
            "environment.{key}: {environment}"
        );
    }
    assert_eq!(environment["go"], "not used");
    assert_eq!(json["repeat"], 1);
    // --pin: the latency scenario's saturated rows unpinned and pinned.
    let latency_rows: Vec<&str> = scenarios[2]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for route in ["QUIC via router", "h2 via router"] {
        for suffix in ["", ", pinned"] {
            let name = format!("{route}, router saturated{suffix}");
            assert!(
                latency_rows.contains(&name.as_str()),
                "{name}: {latency_rows:?}"
            );
        }
    }
    // Scenarios 1 and 2: the router's CPU time per GiB on the rows through a router.
    for n in [0, 1] {
        for row in scenarios[n]["rows"].as_array().expect("rows") {
            let name = row["name"].as_str().expect("name");
            assert_eq!(
                has(row, "router CPU s/GiB"),
                name.contains("via router"),
                "{name}"
            );
        }
    }
    // Scenario 9: TLS/TCP and QUIC with each congestion controller at every loss level of
    // the smoke preset (one round trip), each having moved data.
    let congestion = &scenarios[8];
    assert_eq!(congestion["key"], "congestion");
    let congestion_rows = congestion["rows"].as_array().expect("rows");
    let names: Vec<&str> = congestion_rows
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    let mut wanted = Vec::new();
    for loss in [0, 5] {
        for route in [
            "TLS/TCP direct",
            "QUIC direct bbr",
            "QUIC direct cubic",
            "QUIC direct new-reno",
        ] {
            wanted.push(format!("{route} at 50 ms, {loss} % loss"));
        }
    }
    assert_eq!(names, wanted);
    for row in congestion_rows {
        assert!(
            row["values"]
                .as_array()
                .expect("values")
                .iter()
                .any(|c| { c["key"] == "MiB/s" && c["value"].as_f64().is_some_and(|v| v > 0.0) }),
            "no data moved in {row}"
        );
        let controller = row["values"]
            .as_array()
            .expect("values")
            .iter()
            .find(|c| c["key"] == "congestion")
            .and_then(|c| c["value"].as_str())
            .expect("a congestion cell");
        let name = row["name"].as_str().expect("name");
        assert!(
            name.contains(&format!(" {controller} at ")) || name.starts_with("TLS/TCP"),
            "{name}: {controller}"
        );
    }
    // The impaired namespaces let TCP buffers grow to 32 MiB (their own sysctls).
    let notes: Vec<&str> = congestion["notes"]
        .as_array()
        .expect("notes")
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    for key in ["tcp_rmem", "tcp_wmem"] {
        let tag = format!("`net.ipv4.{key}` = ");
        let max: u64 = notes
            .iter()
            .find_map(|n| n.split(tag.as_str()).nth(1))
            .and_then(|rest| rest.split([',', '.']).next())
            .and_then(|fields| fields.split_whitespace().nth(2))
            .and_then(|max| max.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in the notes: {notes:?}"));
        assert!(max >= 32 * 1024 * 1024, "{key} max {max}");
    }
    let checked = json["integrity"]["checked"].as_u64().expect("checked");
    assert!(checked >= 50, "only {checked} transfers were checked");
    assert_eq!(json["integrity"]["failed"], 0);
    let targets = json["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 21);
    for t in targets {
        let verdict = t["verdict"].as_str().expect("verdict");
        assert!(["met", "missed", "not measured"].contains(&verdict), "{t}");
    }
    // Without --reference-router the Go router's rows and target are absent, and the
    // report says so.
    let go = targets
        .iter()
        .find(|t| {
            t["target"]
                .as_str()
                .is_some_and(|t| t.contains("Go router"))
        })
        .expect("the Go router target");
    assert_eq!(go["verdict"], "not measured");
    assert!(
        json["reference"]
            .as_str()
            .is_some_and(|r| r.contains("--reference-router")),
        "{}",
        json["reference"]
    );
    for scenario in scenarios {
        for row in scenario["rows"].as_array().expect("rows") {
            let name = row["name"].as_str().expect("row name");
            assert!(!name.contains("Go router"), "unexpected row {name}");
        }
    }

    let markdown = std::fs::read_to_string(out.path().join("report.md")).expect("report.md");
    assert!(markdown.contains("\n## Environment\n"));
    assert!(markdown.contains("(analysis.md)"));
    for n in 1..=9 {
        assert!(
            markdown.contains(&format!("\n## {n}. ")),
            "scenario {n} missing"
        );
    }
    for plot in ["throughput", "latency", "impairment", "ready", "congestion"] {
        let svg = std::fs::read_to_string(out.path().join(format!("{plot}.svg")))
            .unwrap_or_else(|e| panic!("{plot}.svg: {e}"));
        assert!(
            svg.contains("<svg") && svg.contains("<polyline"),
            "{plot}.svg has no line"
        );
        assert!(markdown.contains(&format!("({plot}.svg)")));
    }
}

/// Two runs of one scenario merge into medians with their spread, and the README table
/// comes from the report that makes.
#[test]
fn repeated_runs_merge_into_medians_and_the_readme_table() {
    let out = tempfile::tempdir().expect("out dir");
    let work = tempfile::tempdir().expect("work dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jumpstarter-loadtest"));
    cmd.args(["--smoke", "--repeat", "2", "--out"])
        .arg(out.path())
        .arg("--work-dir")
        .arg(work.path())
        .arg("--router-bin")
        .arg(sibling("jumpstarter-router"))
        .arg("--standalone-bin")
        .arg(sibling("jumpstarter"))
        .arg("bulk");
    let output = run_bounded(cmd, std::time::Duration::from_secs(90))
        .expect("two smoke runs of bulk took longer than 90 s");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the run failed:\n{stderr}");
    assert!(stderr.contains("[run 2/2]"), "{stderr}");
    let results = out.path().join("results.json");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(&results).expect("results.json"))
            .expect("JSON");
    assert_eq!(json["repeat"], 2);
    let bulk = &json["scenarios"][0];
    assert_eq!(bulk["runs"], 2);
    for row in bulk["rows"].as_array().expect("rows") {
        let speed = row["values"]
            .as_array()
            .expect("values")
            .iter()
            .find(|c| c["key"] == "MiB/s")
            .expect("MiB/s");
        let samples: Vec<f64> = speed["samples"]
            .as_array()
            .expect("samples")
            .iter()
            .map(|v| v.as_f64().expect("number"))
            .collect();
        assert_eq!(samples.len(), 2, "{row}");
        let (lo, hi) = (samples[0].min(samples[1]), samples[0].max(samples[1]));
        assert_eq!(speed["min"].as_f64(), Some(lo), "{row}");
        assert_eq!(speed["max"].as_f64(), Some(hi), "{row}");
        let median = speed["value"].as_f64().expect("median");
        assert!(lo <= median && median <= hi, "{row}");
    }
    let markdown = std::fs::read_to_string(out.path().join("report.md")).expect("report.md");
    assert!(
        markdown.contains("median of 2 runs (min–max)"),
        "{markdown}"
    );

    let table = Command::new(env!("CARGO_BIN_EXE_jumpstarter-loadtest"))
        .args(["readme-table", "--from"])
        .arg(&results)
        .output()
        .expect("readme-table");
    assert!(table.status.success(), "{table:?}");
    let table = String::from_utf8(table.stdout).expect("UTF-8");
    assert!(table.starts_with("<!-- loadtest:table -->\n| target | measured | verdict |\n"));
    assert!(table.ends_with("<!-- loadtest:end -->\n"), "{table}");
    assert_eq!(
        table.lines().count(),
        2 + 2 + json["targets"].as_array().expect("targets").len()
    );
    let missing = Command::new(env!("CARGO_BIN_EXE_jumpstarter-loadtest"))
        .args(["readme-table", "--from"])
        .arg(out.path().join("absent.json"))
        .output()
        .expect("readme-table");
    assert!(!missing.status.success());
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        "bulk",
        "throughput",
        "latency",
        "setup",
        "idle",
        "restart",
        "controller",
        "impairment",
        "congestion",
        "all",
        "readme-table",
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_jumpstarter-loadtest"))
            .args([sub, "--help"])
            .output()
            .expect("run --help");
        assert!(output.status.success(), "{sub} --help");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            text.contains("--smoke") && text.contains("--out"),
            "{sub}: {text}"
        );
    }
}
