//! Where the tests inside this crate find the workspace's other binaries (the router,
//! `jumpstarter serve`): next to the test executable's profile folder, or in the target
//! directory when Cargo keeps its intermediate files in a separate build directory.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The path of workspace binary `name`, or an error naming the build command.
pub(crate) fn path(name: &str, package: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    // <dir>/<profile>/deps/<test> -> <dir>/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test executable's profile folder")?;
    let beside = profile_dir.join(name);
    if beside.is_file() {
        return Ok(beside);
    }
    let profile = profile_dir.file_name().context("profile folder name")?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join(profile).join(name);
    anyhow::ensure!(
        path.is_file(),
        "{name} is missing (looked in {} and {}): cargo build -p {package}",
        profile_dir.display(),
        path.display()
    );
    Ok(path)
}
