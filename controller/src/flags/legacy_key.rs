//! The flag group naming the key of a jumpstarter 0.9.0 controller whose client and
//! exporter tokens stay valid (see [`crate::keys::legacy`]). The value is a secret: it is
//! read from the environment by preference, hidden in `--help` and never printed, not even
//! by `Debug`.

/// The environment variable a 0.9.0 controller reads its key from; the binaries read it
/// too ([`LegacyKeyArgs::or_upstream`]) when neither the flag nor
/// `JUMPSTARTER_LEGACY_CONTROLLER_KEY` is given, so a 0.9.0 manifest works unchanged.
pub const UPSTREAM_ENV: &str = "CONTROLLER_KEY";

/// Where the `CONTROLLER_KEY` of a 0.9.0 controller comes from.
#[derive(Clone, Default, clap::Args)]
pub struct LegacyKeyArgs {
    /// The `CONTROLLER_KEY` of the jumpstarter 0.9.0 controller this one replaces: the
    /// credentials it issued keep working (new ones are signed with this controller's own
    /// key). A secret: prefer the environment variable (0.9.0's `CONTROLLER_KEY` is read
    /// too). In Kubernetes mode, when not given, the `key` of Secret
    /// `jumpstarter-controller-secret` is used if it exists.
    #[arg(
        long = "legacy-controller-key",
        env = "JUMPSTARTER_LEGACY_CONTROLLER_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub legacy_controller_key: Option<String>,
}

impl LegacyKeyArgs {
    /// These arguments, taking `upstream` (the value of 0.9.0's `CONTROLLER_KEY`, read by
    /// the binary) when no key was given otherwise.
    pub fn or_upstream(mut self, upstream: Option<String>) -> LegacyKeyArgs {
        if self.value().is_none() {
            self.legacy_controller_key = upstream.or(self.legacy_controller_key);
        }
        self
    }

    /// The key's bytes, as the 0.9.0 controller used them; an empty value (e.g. an unset
    /// variable in a manifest) counts as not given.
    pub fn value(&self) -> Option<&[u8]> {
        self.legacy_controller_key
            .as_deref()
            .filter(|key| !key.is_empty())
            .map(str::as_bytes)
    }
}

impl std::fmt::Debug for LegacyKeyArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyKeyArgs")
            .field(
                "legacy_controller_key",
                &self.legacy_controller_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        legacy: LegacyKeyArgs,
    }

    #[test]
    fn the_key_is_optional_and_never_printed() {
        let cli = Cli::try_parse_from(["x"]).expect("parse");
        assert_eq!(cli.legacy.value(), None);
        let cli =
            Cli::try_parse_from(["x", "--legacy-controller-key", "s3cr3t-value"]).expect("parse");
        assert_eq!(cli.legacy.value(), Some(&b"s3cr3t-value"[..]));
        assert!(!format!("{cli:?}").contains("s3cr3t"));
        let cli = Cli::try_parse_from(["x", "--legacy-controller-key", ""]).expect("parse");
        assert_eq!(cli.legacy.value(), None, "empty is not given");
        let upstream = cli.legacy.or_upstream(Some("k".into()));
        assert_eq!(
            upstream.value(),
            Some(&b"k"[..]),
            "0.9.0's variable fills in"
        );
        let given = Cli::try_parse_from(["x", "--legacy-controller-key", "mine"])
            .expect("parse")
            .legacy
            .or_upstream(Some("k".into()));
        assert_eq!(given.value(), Some(&b"mine"[..]), "a given key wins");
    }
}
