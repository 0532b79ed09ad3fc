//! The edge's environment: `JUMPSTARTER_…` names only in `--help`, the shared
//! `JUMPSTARTER_LOG_FORMAT`, and the earlier `JUMPSTARTER_EDGE_LOG_FORMAT` still working
//! with a deprecation warning.

use std::path::Path;
use std::process::Command;

const EDGE: &str = env!("CARGO_BIN_EXE_jumpstarter-edge");

#[test]
fn help_names_only_jumpstarter_variables_and_the_shared_log_format() {
    let names = jumpstarter_shell::help_env::assert_prefixed(Path::new(EDGE), &[]);
    assert!(
        names
            .iter()
            .any(|(_, name)| name == "JUMPSTARTER_LOG_FORMAT"),
        "{names:?}"
    );
    // The old name, when set, is read but not shown.
    let names = jumpstarter_shell::help_env::assert_prefixed(
        Path::new(EDGE),
        &[("JUMPSTARTER_EDGE_LOG_FORMAT", "json")],
    );
    assert!(
        !names
            .iter()
            .any(|(_, name)| name.starts_with("JUMPSTARTER_EDGE_LOG")),
        "{names:?}"
    );
}

#[test]
fn the_deprecated_log_format_name_still_works_with_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(EDGE)
        .args(["exporter", "--config"])
        .arg(dir.path().join("missing.yaml"))
        .env("JUMPSTARTER_EDGE_LOG_FORMAT", "json")
        .env_remove("JUMPSTARTER_LOG_FORMAT")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run the edge");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    // JSON log lines: the old name set the format.
    let warning = stderr
        .lines()
        .find(|line| line.contains("JUMPSTARTER_EDGE_LOG_FORMAT"))
        .unwrap_or_else(|| panic!("no deprecation warning in {stderr}"));
    assert!(
        warning.starts_with('{') && warning.contains("\"WARN\""),
        "{warning}"
    );
}
