//! Per-caller limits of the gRPC services: how much one authenticated client or exporter
//! may ask of the controller (open Status streams, pending leases, Dial and RotateToken
//! rates). [`Limits`] is the plain value the services read; [`LimitArgs`] is its flag group,
//! flattened into each controller binary.

use std::time::Duration as StdDuration;

use clap::Args;

use crate::flags::GoDuration;

/// Open Status streams one exporter may hold. An exporter keeps one; after a reconnect the
/// old one lingers until HTTP/2 keepalive finds its connection dead (about 30 s), so a few
/// quick reconnects must still fit.
pub const DEFAULT_MAX_STATUS_STREAMS_PER_EXPORTER: usize = 8;
/// Leases one client may have waiting for an exporter (not ended, none assigned). A CI
/// pipeline fanning out over a board farm stays far below it; a runaway loop creating
/// leases is stopped long before the reconciler's passes (which read every lease) slow
/// down.
pub const DEFAULT_MAX_PENDING_LEASES_PER_CLIENT: usize = 100;
/// Dials one client may make at once: a session opens one per connection, a script that
/// opens a few connections in a row fits.
pub const DEFAULT_DIAL_BURST: u32 = 20;
/// One more Dial per this interval after the burst (10 per second per client).
pub const DEFAULT_DIAL_INTERVAL: StdDuration = StdDuration::from_millis(100);
/// Token rotations one client may make at once (each one writes its credential Secret).
pub const DEFAULT_ROTATE_TOKEN_BURST: u32 = 3;
/// One more rotation per this interval after the burst.
pub const DEFAULT_ROTATE_TOKEN_INTERVAL: StdDuration = StdDuration::from_secs(10);

/// A token bucket: `burst` calls at once, then one per `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub interval: StdDuration,
}

/// The per-caller limits of the services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_status_streams_per_exporter: usize,
    pub max_pending_leases_per_client: usize,
    pub dial: Rate,
    pub rotate_token: Rate,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_status_streams_per_exporter: DEFAULT_MAX_STATUS_STREAMS_PER_EXPORTER,
            max_pending_leases_per_client: DEFAULT_MAX_PENDING_LEASES_PER_CLIENT,
            dial: Rate {
                burst: DEFAULT_DIAL_BURST,
                interval: DEFAULT_DIAL_INTERVAL,
            },
            rotate_token: Rate {
                burst: DEFAULT_ROTATE_TOKEN_BURST,
                interval: DEFAULT_ROTATE_TOKEN_INTERVAL,
            },
        }
    }
}

fn go(duration: StdDuration) -> GoDuration {
    // The defaults above are a few seconds at most: they fit.
    GoDuration(time::Duration::try_from(duration).unwrap_or(time::Duration::SECOND))
}

fn std(duration: GoDuration) -> StdDuration {
    // GoDuration is positive by construction.
    StdDuration::try_from(duration.0).unwrap_or(StdDuration::from_secs(1))
}

/// The flags of [`Limits`].
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Status streams one exporter may hold open; more are refused with RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "JUMPSTARTER_MAX_STATUS_STREAMS_PER_EXPORTER",
        default_value_t = DEFAULT_MAX_STATUS_STREAMS_PER_EXPORTER as u32,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_status_streams_per_exporter: u32,
    /// Leases one client may have waiting for an exporter; CreateLease beyond it is refused
    /// with RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "JUMPSTARTER_MAX_PENDING_LEASES_PER_CLIENT",
        default_value_t = DEFAULT_MAX_PENDING_LEASES_PER_CLIENT as u32,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_pending_leases_per_client: u32,
    /// Dials one client may make at once (then one per --dial-interval).
    #[arg(
        long,
        env = "JUMPSTARTER_DIAL_BURST",
        default_value_t = DEFAULT_DIAL_BURST,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub dial_burst: u32,
    /// After the burst, one more Dial per client per this interval, as a Go duration.
    #[arg(long, env = "JUMPSTARTER_DIAL_INTERVAL", default_value_t = go(DEFAULT_DIAL_INTERVAL))]
    pub dial_interval: GoDuration,
    /// Token rotations one client may make at once (then one per --rotate-token-interval).
    #[arg(
        long,
        env = "JUMPSTARTER_ROTATE_TOKEN_BURST",
        default_value_t = DEFAULT_ROTATE_TOKEN_BURST,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub rotate_token_burst: u32,
    /// After the burst, one more rotation per client per this interval, as a Go duration.
    #[arg(
        long,
        env = "JUMPSTARTER_ROTATE_TOKEN_INTERVAL",
        default_value_t = go(DEFAULT_ROTATE_TOKEN_INTERVAL)
    )]
    pub rotate_token_interval: GoDuration,
}

impl LimitArgs {
    /// The limits the flags give.
    pub fn limits(&self) -> Limits {
        Limits {
            max_status_streams_per_exporter: usize::try_from(self.max_status_streams_per_exporter)
                .unwrap_or(usize::MAX),
            max_pending_leases_per_client: usize::try_from(self.max_pending_leases_per_client)
                .unwrap_or(usize::MAX),
            dial: Rate {
                burst: self.dial_burst,
                interval: std(self.dial_interval),
            },
            rotate_token: Rate {
                burst: self.rotate_token_burst,
                interval: std(self.rotate_token_interval),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        limits: LimitArgs,
    }

    #[test]
    fn defaults_are_the_constants() {
        let flags = Flags::try_parse_from(["t"]).expect("parse");
        assert_eq!(flags.limits.limits(), Limits::default());
    }

    #[test]
    fn flags_set_each_limit_and_refuse_zero() {
        let flags = Flags::try_parse_from([
            "t",
            "--max-status-streams-per-exporter",
            "2",
            "--max-pending-leases-per-client",
            "5",
            "--dial-burst",
            "1",
            "--dial-interval",
            "1s",
            "--rotate-token-burst",
            "2",
            "--rotate-token-interval",
            "1m",
        ])
        .expect("parse");
        let limits = flags.limits.limits();
        assert_eq!(limits.max_status_streams_per_exporter, 2);
        assert_eq!(limits.max_pending_leases_per_client, 5);
        assert_eq!(
            limits.dial,
            Rate {
                burst: 1,
                interval: StdDuration::from_secs(1)
            }
        );
        assert_eq!(limits.rotate_token.interval, StdDuration::from_secs(60));
        assert!(Flags::try_parse_from(["t", "--dial-burst", "0"]).is_err());
        assert!(Flags::try_parse_from(["t", "--max-pending-leases-per-client", "0"]).is_err());
    }
}
