//! The load test's environment: `JUMPSTARTER_LOADTEST_…` names only in `--help` (every
//! scenario's too); the `LOADTEST_*` names of earlier releases are deprecated aliases.

use std::path::Path;

#[test]
fn help_names_only_jumpstarter_variables() {
    let names = jumpstarter_shell::help_env::assert_prefixed(
        Path::new(env!("CARGO_BIN_EXE_jumpstarter-loadtest")),
        &[("LOADTEST_SMOKE", "true")],
    );
    assert!(
        names
            .iter()
            .any(|(at, name)| at == "bulk" && name == "JUMPSTARTER_LOADTEST_OUT"),
        "{names:?}"
    );
}
