//! The router's memory and connection bounds as command-line flags (`JUMPSTARTER_ROUTER_*`
//! environment names), for the binaries that run a router: what one lease, one pair and one
//! QUIC connection may hold, how many QUIC connections there may be, and when QUIC peers
//! must validate their address, the QUIC transport (windows, congestion controller; the
//! `--quic-…` flags of every QUIC endpoint) and the budget of full windows. Sizes are in
//! bytes.

use crate::pairing::{DEFAULT_MAX_PENDING_PER_LEASE, DEFAULT_PAIR_QUEUE_BYTES, PairLimits};
use jumpstarter_shell::duration_flag::DurationArg;
use jumpstarter_shell::env_alias::EnvAlias;
use jumpstarter_tunnel::QuicTransportArgs;

use crate::quic::{
    DEFAULT_MAX_CONNECTIONS, DEFAULT_RETRY_THRESHOLD, DEFAULT_WINDOW_BUDGET, QuicRouterConfig,
};

/// The router's own names of the window flags' environment variables, before every QUIC
/// endpoint shared them; deprecated.
pub const ENV_ALIASES: &[EnvAlias] = &[
    EnvAlias::new(
        "JUMPSTARTER_ROUTER_QUIC_STREAM_RECEIVE_WINDOW",
        "JUMPSTARTER_QUIC_STREAM_RECEIVE_WINDOW",
    ),
    EnvAlias::new(
        "JUMPSTARTER_ROUTER_QUIC_RECEIVE_WINDOW",
        "JUMPSTARTER_QUIC_RECEIVE_WINDOW",
    ),
];

/// Per-lease, per-pair and QUIC bounds.
#[derive(Debug, Clone, clap::Args)]
pub struct BoundsArgs {
    /// Streams (h2 or QUIC) of one lease that may wait for a peer at once; beyond,
    /// RESOURCE_EXHAUSTED (QUIC: reset with TOO_MANY_PENDING).
    #[arg(
        long,
        env = "JUMPSTARTER_ROUTER_MAX_PENDING_PER_LEASE",
        default_value_t = DEFAULT_MAX_PENDING_PER_LEASE,
        value_parser = clap::value_parser!(usize)
    )]
    pub max_pending_per_lease: usize,
    /// Payload bytes queued per direction of an h2 pair for a reader that does not keep up.
    #[arg(
        long,
        env = "JUMPSTARTER_ROUTER_PAIR_QUEUE_BYTES",
        default_value_t = DEFAULT_PAIR_QUEUE_BYTES
    )]
    pub pair_queue_bytes: usize,
    #[command(flatten)]
    pub quic_transport: QuicTransportArgs,
    /// Flow-control window bytes (receive + send) the router grants in full over all its
    /// QUIC connections; beyond, new connections get 1 MiB stream / 2 MiB connection /
    /// 2 MiB send windows. Worst case: this + max connections × 4 MiB.
    #[arg(
        long,
        env = "JUMPSTARTER_ROUTER_QUIC_WINDOW_BUDGET",
        default_value_t = DEFAULT_WINDOW_BUDGET
    )]
    pub quic_window_budget: u64,
    /// Round-trip time from which a QUIC connection keeps its full send window; a nearer
    /// peer's is scaled down in proportion (512 KiB at least), so that the router keeps no
    /// more in flight than the path needs (clients and exporters do the same toward the
    /// router). `0s`: never scaled.
    #[arg(
        long,
        env = "JUMPSTARTER_ROUTER_QUIC_FULL_WINDOW_RTT",
        default_value_t = DurationArg(jumpstarter_tunnel::send_window::DEFAULT_FULL_WINDOW_RTT)
    )]
    pub quic_full_window_rtt: DurationArg,
    /// Concurrent session streams per QUIC connection.
    #[arg(
        long,
        env = "JUMPSTARTER_ROUTER_QUIC_MAX_STREAMS_PER_CONNECTION",
        default_value_t = 256,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub quic_max_streams_per_connection: u32,
    /// QUIC connections (handshaking or established) at most; beyond, new attempts are
    /// refused (CONNECTION_REFUSED).
    #[arg(
        long,
        env = "JUMPSTARTER_ROUTER_QUIC_MAX_CONNECTIONS",
        default_value_t = DEFAULT_MAX_CONNECTIONS
    )]
    pub quic_max_connections: usize,
    /// QUIC handshakes from unvalidated addresses in flight beyond which new peers must
    /// validate their address with a Retry first (0: always).
    #[arg(
        long,
        env = "JUMPSTARTER_ROUTER_QUIC_RETRY_THRESHOLD",
        default_value_t = DEFAULT_RETRY_THRESHOLD
    )]
    pub quic_retry_threshold: usize,
}

impl BoundsArgs {
    /// The limits of h2 pairs (see [`crate::Router::set_pair_limits`]).
    pub fn pair_limits(&self) -> PairLimits {
        PairLimits {
            max_pending_per_lease: self.max_pending_per_lease,
            pair_queue_bytes: self.pair_queue_bytes,
        }
    }

    /// Sets the QUIC bounds of `config`.
    pub fn apply_quic(&self, config: &mut QuicRouterConfig) {
        config.max_pending_per_lease = self.max_pending_per_lease;
        config.transport = self.quic_transport.transport();
        config.window_budget = self.quic_window_budget;
        config.full_window_rtt = self.quic_full_window_rtt.0;
        config.max_sessions_per_connection = self.quic_max_streams_per_connection;
        config.max_connections = self.quic_max_connections;
        config.retry_threshold = self.quic_retry_threshold;
    }
}
