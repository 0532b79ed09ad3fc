//! What the binaries' tests check in `--help`: every environment name a binary shows,
//! in its own help and in every subcommand's.

use std::path::Path;
use std::process::Command;

/// The `[env: NAME]` names in the `--help` of `binary` and of each of its subcommands
/// (recursively), with the subcommand path they were found under. `env` is set on each run
/// (give the old names here to check they stay hidden).
pub fn env_names(binary: &Path, env: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut pending = vec![Vec::<String>::new()];
    while let Some(path) = pending.pop() {
        let output = Command::new(binary)
            .args(&path)
            .arg("--help")
            .envs(env.iter().copied())
            .output()
            .unwrap_or_else(|e| panic!("run {} --help: {e}", binary.display()));
        let help = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{path:?} --help failed: {help}");
        let at = path.join(" ");
        for piece in help.split("[env: ").skip(1) {
            let name: String = piece
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.push((at.clone(), name));
        }
        for sub in subcommands(&help) {
            let mut deeper = path.clone();
            deeper.push(sub);
            pending.push(deeper);
        }
    }
    found
}

/// The environment names of [`env_names`], after checking that there are some and that
/// every one is `JUMPSTARTER_…` (panics otherwise, naming the culprits).
pub fn assert_prefixed(binary: &Path, env: &[(&str, &str)]) -> Vec<(String, String)> {
    let names = env_names(binary, env);
    assert!(
        !names.is_empty(),
        "{} --help names no environment variable",
        binary.display()
    );
    let foreign: Vec<_> = names
        .iter()
        .filter(|(_, name)| !name.starts_with("JUMPSTARTER_"))
        .collect();
    assert!(
        foreign.is_empty(),
        "{} --help names environment variables without the JUMPSTARTER_ prefix: {foreign:?}",
        binary.display()
    );
    names
}

/// The names listed under `Commands:` (but `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| line.trim() != "Commands:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter(|line| line.starts_with("  ") && !line.starts_with("        "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(|name| name.trim_end_matches(',').to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subcommands_are_read_from_the_commands_section() {
        let help = "About\n\nUsage: x <COMMAND>\n\nCommands:\n  run          Run it\n  router-cert  Write\n  help         Print this\n\nOptions:\n  -h, --help  Print help\n";
        assert_eq!(subcommands(help), ["run", "router-cert"]);
    }
}
