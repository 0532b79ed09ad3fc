//! The build script of every binary crate (`build = "../shell/build/version.rs"` in its
//! manifest): sets `JUMPSTARTER_GIT_COMMIT`, the short commit the binary is built from,
//! which `--version` prints after the crate version.
//!
//! The commit is, in order: `$JUMPSTARTER_GIT_COMMIT` when set (an image build that copies
//! no `.git` can pass it), `git rev-parse --short HEAD`, else `unknown` (no git, or no
//! repository). A build never fails for want of git.
//!
//! It reruns only when HEAD or the branch it names moves (or the variable changes), not
//! on every build: cargo is told exactly those files.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The variable the binaries read with `env!`, and the override of the build.
const VARIABLE: &str = "JUMPSTARTER_GIT_COMMIT";

fn main() {
    println!("cargo:rerun-if-env-changed={VARIABLE}");
    let commit = match std::env::var(VARIABLE) {
        Ok(commit) if !commit.trim().is_empty() => commit.trim().to_owned(),
        _ => {
            watch_head();
            git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
        }
    };
    println!("cargo:rustc-env={VARIABLE}={commit}");
}

/// Asks cargo to rerun when HEAD, the branch it points to, or the packed refs change.
/// Only files that exist are named (cargo reruns every time for a missing one); without
/// git nothing is named but this script, so the build does not rerun either.
fn watch_head() {
    let mut watched = Vec::new();
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]).map(PathBuf::from) {
        watched.push(git_dir.join("HEAD"));
        let common = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"])
            .map_or_else(|| git_dir.clone(), PathBuf::from);
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(git_dir.join(&branch));
            watched.push(common.join(&branch));
        }
        watched.push(common.join("packed-refs"));
    }
    watched.retain(|path| Path::new(path).exists());
    watched.dedup();
    if watched.is_empty() {
        println!("cargo:rerun-if-changed=../shell/build/version.rs");
    }
    for path in watched {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// The trimmed output of a successful `git ARGS` in the crate's directory.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(std::env::var_os("CARGO_MANIFEST_DIR")?)
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (output.status.success() && !text.is_empty()).then(|| text.to_owned())
}
