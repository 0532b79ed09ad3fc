//! `jumpstarter-router --version` names the crate version and the commit it was built from.

#[test]
fn version_names_the_commit() {
    jumpstarter_testenv::assert_version_names_the_commit(
        std::path::Path::new(env!("CARGO_BIN_EXE_jumpstarter-router")),
        "jumpstarter-router",
        env!("CARGO_PKG_VERSION"),
    );
}
