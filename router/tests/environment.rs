//! The router's environment: `JUMPSTARTER_…` names only in `--help`; the `ROUTER_*` names
//! and integer seconds of earlier releases still work, with a deprecation warning.

use std::path::Path;
use std::process::Command;

const ROUTER: &str = env!("CARGO_BIN_EXE_jumpstarter-router");

#[test]
fn help_names_only_jumpstarter_variables() {
    let names = jumpstarter_shell::help_env::assert_prefixed(Path::new(ROUTER), &[]);
    for expected in ["JUMPSTARTER_ROUTER_LISTEN", "JUMPSTARTER_LOG_FORMAT"] {
        assert!(
            names.iter().any(|(_, name)| name == expected),
            "{expected} in {names:?}"
        );
    }
    // Old names in the environment are read but not shown.
    jumpstarter_shell::help_env::assert_prefixed(
        Path::new(ROUTER),
        &[
            ("ROUTER_LISTEN", "127.0.0.1:1"),
            ("ROUTER_LOG_FORMAT", "json"),
        ],
    );
}

#[test]
fn deprecated_names_and_integer_seconds_still_work_with_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing-cert.pem");
    let output = Command::new(ROUTER)
        .env("ROUTER_TLS_CERT", &missing)
        .env("ROUTER_TLS_KEY", dir.path().join("key.pem"))
        .env("ROUTER_TOKEN_PUBLIC_KEYS", dir.path().join("keys.pem"))
        .env("ROUTER_PAIR_TIMEOUT", "45")
        .env("RUST_LOG", "warn")
        .env_remove("JUMPSTARTER_ROUTER_TLS_CERT")
        .env_remove("JUMPSTARTER_ROUTER_TLS_KEY")
        .env_remove("JUMPSTARTER_ROUTER_TOKEN_PUBLIC_KEYS")
        .env_remove("JUMPSTARTER_ROUTER_PAIR_TIMEOUT")
        .env_remove("JUMPSTARTER_LOG_FORMAT")
        .output()
        .expect("run the router");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    // The flags were taken from the old names: the router got as far as reading the file.
    assert!(
        stderr.contains(&format!("reading {}", missing.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("ROUTER_TLS_CERT")
            && stderr.contains("rename it JUMPSTARTER_ROUTER_TLS_CERT"),
        "{stderr}"
    );
    assert!(stderr.contains("\"45\" in integer seconds"), "{stderr}");
    assert!(stderr.contains("WARN"), "{stderr}");
}
