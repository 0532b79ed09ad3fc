//! `jumpstarter`'s environment: `JUMPSTARTER_…` names only in the `--help` of every
//! subcommand, the shared log-format and TLS-SAN names among them.

use std::path::Path;

#[test]
fn help_names_only_jumpstarter_variables() {
    let names = jumpstarter_shell::help_env::assert_prefixed(
        Path::new(env!("CARGO_BIN_EXE_jumpstarter")),
        &[],
    );
    for expected in [
        "JUMPSTARTER_LOG_FORMAT",
        "JUMPSTARTER_TLS_SANS",
        "JUMPSTARTER_TOKEN_LIFETIME",
        "JUMPSTARTER_KUBECONFIG",
    ] {
        assert!(
            names.iter().any(|(_, name)| name == expected),
            "{expected} in {names:?}"
        );
    }
    assert!(
        names.iter().any(|(at, _)| at == "admin create lease"),
        "{names:?}"
    );
}
