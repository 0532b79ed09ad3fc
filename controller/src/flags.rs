//! Flag groups of the controller binaries (`jumpstarter-controller` and
//! `jumpstarter serve`), flattened into each; their defaults are the [`settings`]
//! constants. Durations are Go durations (`43800h`, `10s`; integer seconds still work,
//! deprecated). The log-format group is every server's, in `jumpstarter_shell::logging`.

pub mod dashboard;
pub mod exporter_labels;
pub mod legacy_key;
pub mod login;
pub mod upstream;

use clap::Args;

use crate::settings;
use jumpstarter_lease::scheduler::duration as go_duration;

/// A positive Go duration given as a flag; shown in `--help` as Go writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration(pub time::Duration);

impl std::fmt::Display for GoDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&go_duration::format(self.0))
    }
}

/// The flags' value parser (clap's default for a `FromStr` type).
impl std::str::FromStr for GoDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<GoDuration, String> {
        GoDuration::parse(text)
    }
}

impl GoDuration {
    /// A positive Go duration, or (deprecated) integer seconds.
    pub fn parse(text: &str) -> Result<GoDuration, String> {
        let duration = match jumpstarter_shell::duration_flag::legacy_seconds(text) {
            Some(seconds) => i64::try_from(seconds)
                .map(time::Duration::seconds)
                .map_err(|_| format!("duration {text:?} is too long"))?,
            None => go_duration::parse(text).map_err(|e| e.to_string())?,
        };
        if !duration.is_positive() {
            return Err(format!("duration {text:?} must be positive"));
        }
        Ok(GoDuration(duration))
    }
}

/// How long the credentials the controller issues live.
#[derive(Debug, Clone, Args)]
pub struct LifetimeArgs {
    /// Lifetime of client and exporter credentials, as a Go duration.
    #[arg(
        long,
        env = "JUMPSTARTER_TOKEN_LIFETIME",
        default_value_t = GoDuration(settings::DEFAULT_TOKEN_LIFETIME)
    )]
    pub token_lifetime: GoDuration,
    /// Longest validity of one per-lease certificate, as a Go duration. Peers renew before it
    /// ends; a released lease's QUIC traffic stops within it.
    #[arg(
        long,
        env = "JUMPSTARTER_LEASE_CERT_MAX_VALIDITY",
        default_value_t = GoDuration(settings::DEFAULT_LEASE_CERT_MAX_VALIDITY)
    )]
    pub lease_cert_max_validity: GoDuration,
}

/// Extra names of the serving certificates.
#[derive(Debug, Clone, Args)]
pub struct TlsSanArgs {
    /// Extra subject alternative names (DNS names or IPs) of the serving certificates.
    #[arg(long = "tls-san", env = "JUMPSTARTER_TLS_SANS", value_delimiter = ',')]
    pub tls_sans: Vec<String>,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        lifetimes: LifetimeArgs,
        #[command(flatten)]
        sans: TlsSanArgs,
    }

    #[test]
    fn defaults_are_the_settings_constants() {
        let flags = Flags::try_parse_from(["t"]).expect("parse");
        assert_eq!(
            flags.lifetimes.token_lifetime.0,
            settings::DEFAULT_TOKEN_LIFETIME
        );
        assert_eq!(
            flags.lifetimes.lease_cert_max_validity.0,
            settings::DEFAULT_LEASE_CERT_MAX_VALIDITY
        );
        assert!(flags.sans.tls_sans.is_empty());
    }

    #[test]
    fn go_durations_and_deprecated_seconds_parse() {
        let flags = Flags::try_parse_from([
            "t",
            "--token-lifetime",
            "1h30m",
            "--lease-cert-max-validity",
            "20",
            "--tls-san",
            "a.example,10.0.0.1",
        ])
        .expect("parse");
        assert_eq!(
            flags.lifetimes.token_lifetime.0,
            time::Duration::minutes(90)
        );
        assert_eq!(
            flags.lifetimes.lease_cert_max_validity.0,
            time::Duration::seconds(20)
        );
        assert_eq!(flags.sans.tls_sans, ["a.example", "10.0.0.1"]);
        assert!(Flags::try_parse_from(["t", "--token-lifetime", "0s"]).is_err());
        assert!(Flags::try_parse_from(["t", "--token-lifetime", "soon"]).is_err());
    }
}
