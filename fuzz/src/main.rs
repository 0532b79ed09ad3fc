//! The coverage-guided fuzzer's entry point (AFL++ through afl.rs):
//! `jumpstarter-fuzz <target>`, run by `afl-fuzz`; `tools/fuzz.sh` runs every target.

use std::process::ExitCode;

use jumpstarter_fuzz::Target;

fn main() -> ExitCode {
    let Some(target) = std::env::args()
        .nth(1)
        .as_deref()
        .and_then(Target::from_name)
    else {
        let names: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
        eprintln!(
            "usage: jumpstarter-fuzz <target>; targets: {}",
            names.join(", ")
        );
        return ExitCode::from(2);
    };
    afl::fuzz!(|data: &[u8]| target.check(data));
    ExitCode::SUCCESS
}
