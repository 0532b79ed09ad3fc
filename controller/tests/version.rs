//! `jumpstarter-controller --version` names the crate version and the commit it was built from.

use std::process::Command;

#[test]
fn version_names_the_commit() {
    let output = Command::new(env!("CARGO_BIN_EXE_jumpstarter-controller"))
        .arg("--version")
        .output()
        .expect("run jumpstarter-controller");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!(
            "jumpstarter-controller {} ({})\n",
            env!("CARGO_PKG_VERSION"),
            git_commit()
        )
    );
}

/// The short commit of the checkout, as the build script reads it; `unknown` without git.
fn git_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}
