//! Parsing a binary's flags with deprecated environment names.
//!
//! Every flag's environment name is `JUMPSTARTER_…`. Names that worked before (the
//! router's `ROUTER_*`, the load test's `LOADTEST_*`, …) are listed per binary as
//! [`EnvAlias`]es: when only the old name is set, the flag reads it, and a deprecation
//! notice is logged once logging is up. When both are set, the new name wins. `--help`
//! names only the new ones.

use clap::{Command, Parser};

/// An old environment name and the `JUMPSTARTER_…` name that replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvAlias {
    pub old: &'static str,
    pub new: &'static str,
}

impl EnvAlias {
    /// `old` read as a deprecated alias of `new`.
    pub const fn new(old: &'static str, new: &'static str) -> EnvAlias {
        EnvAlias { old, new }
    }
}

/// Parses the process's arguments into `P` like [`Parser::parse`] (printing help or the
/// error and exiting when they call for it), reading `aliases` where only the old name is
/// set.
pub fn parse<P: Parser>(aliases: &[EnvAlias]) -> P {
    let mut command = with_aliases(P::command(), aliases);
    let parsed = command
        .try_get_matches_from_mut(std::env::args_os())
        .and_then(|mut matches| P::from_arg_matches_mut(&mut matches));
    match parsed {
        Ok(parsed) => parsed,
        Err(error) => error.format(&mut command).exit(),
    }
}

/// `command` (and its subcommands) with every flag whose environment name has an alias
/// reading the old name instead, when only the old name is set.
pub fn with_aliases(command: Command, aliases: &[EnvAlias]) -> Command {
    with_aliases_in(command, aliases, &|name| std::env::var_os(name).is_some())
}

fn with_aliases_in(
    command: Command,
    aliases: &[EnvAlias],
    is_set: &dyn Fn(&str) -> bool,
) -> Command {
    let command = command.mut_args(|arg| {
        let Some(alias) = arg
            .get_env()
            .and_then(|env| aliases.iter().find(|alias| env == alias.new))
        else {
            return arg;
        };
        if is_set(alias.new) || !is_set(alias.old) {
            return arg;
        }
        crate::deprecation::note(format!(
            "environment variable {} is read; rename it {}",
            alias.old, alias.new
        ));
        // `--help` keeps naming only `JUMPSTARTER_…` names.
        arg.env(alias.old).hide_env(true)
    });
    command.mut_subcommands(|sub| with_aliases_in(sub, aliases, is_set))
}

#[cfg(test)]
mod tests {
    use clap::{Arg, ArgAction};

    use super::*;

    const ALIASES: &[EnvAlias] = &[EnvAlias {
        old: "OLD_LISTEN",
        new: "JUMPSTARTER_LISTEN",
    }];

    fn command() -> Command {
        Command::new("t").subcommand(
            Command::new("run").arg(
                Arg::new("listen")
                    .long("listen")
                    .env("JUMPSTARTER_LISTEN")
                    .action(ArgAction::Set),
            ),
        )
    }

    fn env_of(command: &mut Command) -> Option<String> {
        let run = command.find_subcommand_mut("run").expect("run");
        run.get_arguments()
            .find(|a| a.get_id() == "listen")
            .and_then(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
    }

    #[test]
    fn only_the_old_name_set_reads_it_with_a_notice() {
        let mut command = with_aliases_in(command(), ALIASES, &|name| name == "OLD_LISTEN");
        assert_eq!(env_of(&mut command).as_deref(), Some("OLD_LISTEN"));
        assert!(crate::deprecation::pending_any(|n| n
            .contains("OLD_LISTEN")
            && n.contains("JUMPSTARTER_LISTEN")));
    }

    #[test]
    fn the_new_name_wins_and_unset_names_change_nothing() {
        let mut both = with_aliases_in(command(), ALIASES, &|_| true);
        assert_eq!(env_of(&mut both).as_deref(), Some("JUMPSTARTER_LISTEN"));
        let mut neither = with_aliases_in(command(), ALIASES, &|_| false);
        assert_eq!(env_of(&mut neither).as_deref(), Some("JUMPSTARTER_LISTEN"));
    }
}
