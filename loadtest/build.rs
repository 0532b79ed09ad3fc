//! Records the compiler's version (`rustc -V`) for the report's environment block.

use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = Command::new(&rustc)
        .arg("-V")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|| format!("unknown ({rustc} -V failed)"));
    println!("cargo:rustc-env=JUMPSTARTER_LOADTEST_RUSTC={version}");
    println!("cargo:rerun-if-env-changed=RUSTC");
}
