//! The limits of one public TLS gRPC port, as one flag group for a binary to flatten:
//! connections and handshakes ([`AcceptLimits`], enforced by the accept loop) and HTTP/2
//! ([`Http2Limits`], set on the tonic server). A binary with several ports (the standalone
//! service) applies the same limits to each.

use crate::accept_loop::AcceptLimits;
use crate::http2_limits::Http2Limits;

/// Every limit of a public port; `Default` equals the flags' defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::Args)]
#[command(next_help_heading = "Public port limits")]
pub struct PortLimits {
    #[command(flatten)]
    pub accept: AcceptLimits,
    #[command(flatten)]
    pub http2: Http2Limits,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        limits: PortLimits,
    }

    #[test]
    fn the_flag_defaults_are_the_defaults() {
        let cli = Cli::try_parse_from(["test"]).expect("parse");
        assert_eq!(cli.limits, PortLimits::default());
    }

    #[test]
    fn flags_set_every_limit() {
        let cli = Cli::try_parse_from([
            "test",
            "--max-connections=10",
            "--max-connections-per-source=5",
            "--max-handshakes=4",
            "--max-handshakes-per-source=2",
            "--handshake-timeout=3s",
            "--idle-timeout=0s",
            "--http2-max-concurrent-streams=7",
            "--http2-max-local-error-resets=8",
            "--http2-max-pending-accept-resets=9",
            "--http2-max-header-list-size=4096",
            "--http2-keepalive-interval=0s",
            "--http2-keepalive-timeout=1m",
        ])
        .expect("parse");
        let (accept, http2) = (cli.limits.accept, cli.limits.http2);
        assert_eq!(
            (
                accept.max_connections,
                accept.max_connections_per_source,
                accept.max_handshakes,
                accept.max_handshakes_per_source,
                accept.handshake_timeout.as_secs(),
                accept.idle_timeout.as_secs(),
            ),
            (10, 5, 4, 2, 3, 0)
        );
        assert_eq!(
            (
                http2.max_concurrent_streams,
                http2.max_local_error_resets,
                http2.max_pending_accept_resets,
                http2.max_header_list_size,
                http2.keepalive_interval.as_secs(),
                http2.keepalive_timeout.as_secs(),
            ),
            (7, 8, 9, 4096, 0, 60)
        );
    }
}
