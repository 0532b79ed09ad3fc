//! The controller binaries' environment: `JUMPSTARTER_…` names only in `--help` (every
//! subcommand's too); crdgen's earlier `CRDGEN_*` names are deprecated aliases.

use std::path::Path;

#[test]
fn controller_help_names_only_jumpstarter_variables() {
    let names = jumpstarter_shell::help_env::assert_prefixed(
        Path::new(env!("CARGO_BIN_EXE_jumpstarter-controller")),
        &[],
    );
    for (at, expected) in [
        ("run", "JUMPSTARTER_LOG_FORMAT"),
        ("run", "JUMPSTARTER_TOKEN_LIFETIME"),
        ("run", "JUMPSTARTER_LEASE_CERT_MAX_VALIDITY"),
        ("router-cert", "JUMPSTARTER_TLS_SANS"),
    ] {
        assert!(
            names.iter().any(|(a, name)| a == at && name == expected),
            "{expected} under {at} in {names:?}"
        );
    }
}

#[test]
fn crdgen_help_names_only_jumpstarter_variables() {
    jumpstarter_shell::help_env::assert_prefixed(
        Path::new(env!("CARGO_BIN_EXE_crdgen")),
        &[("CRDGEN_OUT_DIR", "x")],
    );
}
