//! The key and tokens of a jumpstarter 0.9.0 Go controller, made by the real Go code.
//!
//! `tools/legacy-key` is a small Go program built on the libraries the 0.9.0 controller
//! uses (`math/rand`, `filippo.io/keygen`, `golang-jwt/jwt/v5`, pinned in its go.mod).
//! [`binary`] builds it once per test process (with `go` from `PATH`, modules from the Go
//! module proxy, into `target/legacy-key/`) unless `JUMPSTARTER_LEGACY_KEY_BIN` names a
//! built one. There is no skip: without `go` the helper panics saying so.
//!
//! - [`pubkey`]: the SPKI PEM of the key derived from a `CONTROLLER_KEY`;
//! - [`mint`] / [`mint_at`]: an internal token exactly as a 0.9.0 controller signs it;
//! - [`rand_bytes`]: the byte stream of Go's `rand.New(rand.NewSource(seed)).Read`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::repo_root;

/// Environment variable naming an already built legacy-key binary.
pub const BIN_ENV: &str = "JUMPSTARTER_LEGACY_KEY_BIN";

/// The legacy-key binary, built at the first call of the process.
///
/// # Panics
/// When `go` is missing or the build fails, with the reason.
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os(BIN_ENV) {
        Some(path) => PathBuf::from(path),
        None => build().unwrap_or_else(|e| {
            panic!(
                "cannot build tools/legacy-key (needs `go` >= 1.24 on PATH and the Go module proxy, or {BIN_ENV}=<built binary>): {e:#}"
            )
        }),
    })
}

fn build() -> anyhow::Result<PathBuf> {
    let root = repo_root();
    let out_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("legacy-key");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    let bin = out_dir.join("legacy-key");
    // Built under a name of this process and renamed, so that test processes building at
    // the same time never run a half-written binary.
    let tmp = out_dir.join(format!("legacy-key.{}", std::process::id()));
    let output = Command::new("go")
        .args(["build", "-trimpath", "-mod=readonly", "-o"])
        .arg(&tmp)
        .arg(".")
        .current_dir(root.join("tools/legacy-key"))
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .output()
        .context("run `go build` (is Go installed and on PATH?)")?;
    if !output.status.success() {
        bail!(
            "go build failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::rename(&tmp, &bin).with_context(|| format!("rename to {}", bin.display()))?;
    Ok(bin)
}

/// Runs the binary with `args` and returns its standard output.
///
/// # Panics
/// When the program fails, with its error output.
fn run(args: &[&str]) -> String {
    let output = Command::new(binary())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", binary().display()));
    assert!(
        output.status.success(),
        "legacy-key {} failed ({}): {}",
        args.first().copied().unwrap_or_default(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("legacy-key prints text")
}

/// The SPKI ("PUBLIC KEY") PEM of the key a 0.9.0 controller derives from `controller_key`.
pub fn pubkey(controller_key: &str) -> String {
    run(&["pubkey", controller_key])
}

/// An internal token for `sub` (e.g. `client:<ns>:<name>:<uid>`) issued now and valid for
/// `lifetime`, signed as a 0.9.0 controller with `controller_key` signs it.
pub fn mint(controller_key: &str, sub: &str, lifetime: Duration) -> String {
    mint_args(controller_key, sub, lifetime, None)
}

/// [`mint`] with `iat` given as Unix seconds.
pub fn mint_at(controller_key: &str, sub: &str, lifetime: Duration, iat: i64) -> String {
    mint_args(controller_key, sub, lifetime, Some(iat))
}

fn mint_args(controller_key: &str, sub: &str, lifetime: Duration, iat: Option<i64>) -> String {
    let lifetime = format!("{}s", lifetime.as_secs());
    let iat = iat.map(|i| i.to_string());
    let mut args = vec![
        "mint",
        "--key",
        controller_key,
        "--sub",
        sub,
        "--lifetime",
        &lifetime,
    ];
    if let Some(iat) = iat.as_deref() {
        args.extend(["--iat", iat]);
    }
    run(&args).trim().to_owned()
}

/// The first `n` bytes Go's `rand.New(rand.NewSource(seed)).Read` produces.
pub fn rand_bytes(seed: i64, n: usize) -> Vec<u8> {
    let hex = run(&["rand-bytes", &seed.to_string(), &n.to_string()]);
    let hex = hex.trim();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("legacy-key prints hex"))
        .collect()
}
