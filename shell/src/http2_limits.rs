//! The HTTP/2 limits of a public gRPC port, a flag group (`--http2-…`) with safe
//! defaults, and [`Http2Limits::apply`], which sets them on a tonic server builder.
//!
//! tonic's builder leaves `SETTINGS_MAX_CONCURRENT_STREAMS` unlimited and passes "no
//! limit" for locally reset streams, replacing hyper's safe defaults; every server of the
//! workspace applies these limits instead. What each limit bounds:
//! - concurrent streams: calls (and their tasks) one connection may run at once; streams
//!   over it are refused with REFUSED_STREAM (and count as local resets);
//! - local error resets: streams the server had to reset for the peer's protocol errors
//!   (or refuse) on one connection, before it closes the connection with GOAWAY
//!   ENHANCE_YOUR_CALM (RUSTSEC-2024-0003);
//! - pending-accept resets: streams the peer opened and reset before the server picked
//!   them up, at once (the "rapid reset" attack, CVE-2023-44487), before the same GOAWAY;
//! - header list size: bytes of one request's decoded headers (metadata);
//! - keepalive: the server PINGs every interval and closes a connection whose peer does
//!   not answer within the timeout, ending its streams (an exporter whose host lost power
//!   or network is noticed within interval + timeout);
//! - idle timeout: a connection without streams for that long is closed; tonic has no
//!   such knob, so the accept loop's connections enforce it (`--idle-timeout`), with the
//!   request-tracking layer [`Http2Limits::apply`] adds.

use std::time::Duration;

use crate::accept_loop::StreamTracking;

/// Concurrent streams per connection: RFC 9113 (6.5.2) recommends at least 100 so as not
/// to limit parallelism; a 0.9.0 exporter keeps two long streams (Status, Listen) and a
/// session uses one stream per connection, so 100 is far above honest use while bounding
/// the tasks one connection can start.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

/// Locally reset streams per connection before GOAWAY: hyper's own default. Honest peers
/// cause none (they respect SETTINGS and send well-formed frames).
pub const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// Streams reset by the peer before the server accepted them, at once: h2's default.
pub const MAX_PENDING_ACCEPT_RESETS: usize = 20;

/// Bytes of one request's headers: hyper's default, 16 KiB. gRPC requests carry a bearer
/// token of one or two KiB and a few short headers.
pub const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;

/// Interval of the server's keepalive PINGs. With [`KEEPALIVE_TIMEOUT`] a dead peer is
/// noticed within 30 s: well inside the 1 minute after which an exporter without news is
/// Offline and the 2 minutes the service promises, at the cost of one 17-byte frame each
/// way per connection every 10 s. 0.9.0 peers ping every 20 s themselves.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// How long the server waits for a PING acknowledgement before it closes the connection:
/// 20 s (tonic's and hyper's default) tolerates a congested path's queueing.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// HTTP/2 limits of one port; a flag group with safe defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct Http2Limits {
    /// Streams (calls) one HTTP/2 connection may have open at once
    /// (SETTINGS_MAX_CONCURRENT_STREAMS); more are refused with REFUSED_STREAM.
    #[arg(
        long = "http2-max-concurrent-streams",
        env = "JUMPSTARTER_HTTP2_MAX_CONCURRENT_STREAMS",
        default_value_t = MAX_CONCURRENT_STREAMS
    )]
    pub max_concurrent_streams: u32,
    /// Streams of one connection the server may reset for the peer's protocol errors (or
    /// refuse) before it closes the connection with GOAWAY ENHANCE_YOUR_CALM.
    #[arg(
        long = "http2-max-local-error-resets",
        env = "JUMPSTARTER_HTTP2_MAX_LOCAL_ERROR_RESETS",
        default_value_t = MAX_LOCAL_ERROR_RESETS
    )]
    pub max_local_error_resets: usize,
    /// Streams the peer may have reset before the server accepted them, at once, before
    /// the server closes the connection with GOAWAY ENHANCE_YOUR_CALM (rapid reset).
    #[arg(
        long = "http2-max-pending-accept-resets",
        env = "JUMPSTARTER_HTTP2_MAX_PENDING_ACCEPT_RESETS",
        default_value_t = MAX_PENDING_ACCEPT_RESETS
    )]
    pub max_pending_accept_resets: usize,
    /// Largest header list of a request, in bytes (SETTINGS_MAX_HEADER_LIST_SIZE).
    #[arg(
        long = "http2-max-header-list-size",
        env = "JUMPSTARTER_HTTP2_MAX_HEADER_LIST_SIZE",
        default_value_t = MAX_HEADER_LIST_SIZE
    )]
    pub max_header_list_size: u32,
    /// Interval of the server's keepalive PINGs on every connection, as a Go duration;
    /// `0s` turns them off.
    #[arg(
        long = "http2-keepalive-interval",
        env = "JUMPSTARTER_HTTP2_KEEPALIVE_INTERVAL",
        default_value = "10s",
        value_parser = crate::duration_flag::parse
    )]
    pub keepalive_interval: Duration,
    /// How long a keepalive PING may go unanswered before the connection (and its
    /// streams) is closed, as a Go duration.
    #[arg(
        long = "http2-keepalive-timeout",
        env = "JUMPSTARTER_HTTP2_KEEPALIVE_TIMEOUT",
        default_value = "20s",
        value_parser = crate::duration_flag::parse
    )]
    pub keepalive_timeout: Duration,
    /// A connection is closed (GOAWAY) after this long, whatever it does; set from the
    /// 0.9.0 configuration (`grpc.keepalive.maxConnectionAge`), no flag. `None`: never.
    #[arg(skip)]
    pub max_connection_age: Option<Duration>,
    /// How long calls still running on a connection closed for its age may go on
    /// (`grpc.keepalive.maxConnectionAgeGrace`). `None`: until they end.
    #[arg(skip)]
    pub max_connection_age_grace: Option<Duration>,
}

impl Default for Http2Limits {
    fn default() -> Self {
        Http2Limits {
            max_concurrent_streams: MAX_CONCURRENT_STREAMS,
            max_local_error_resets: MAX_LOCAL_ERROR_RESETS,
            max_pending_accept_resets: MAX_PENDING_ACCEPT_RESETS,
            max_header_list_size: MAX_HEADER_LIST_SIZE,
            keepalive_interval: KEEPALIVE_INTERVAL,
            keepalive_timeout: KEEPALIVE_TIMEOUT,
            max_connection_age: None,
            max_connection_age_grace: None,
        }
    }
}

impl Http2Limits {
    /// `server` with these limits set, and with the layer that tracks requests in flight
    /// for the accept loop's idle timeout.
    pub fn apply<L>(
        &self,
        server: tonic::transport::Server<L>,
    ) -> tonic::transport::Server<tower_layer::Stack<StreamTracking, L>> {
        let keepalive = (!self.keepalive_interval.is_zero()).then_some(self.keepalive_interval);
        let mut server = server;
        if let Some(age) = self.max_connection_age {
            server = server.max_connection_age(age);
        }
        if let Some(grace) = self.max_connection_age_grace {
            server = server.max_connection_age_grace(grace);
        }
        server
            .layer(StreamTracking)
            .max_concurrent_streams(self.max_concurrent_streams)
            .http2_max_local_error_reset_streams(Some(self.max_local_error_resets))
            .http2_max_pending_accept_reset_streams(Some(self.max_pending_accept_resets))
            .http2_max_header_list_size(self.max_header_list_size)
            .http2_keepalive_interval(keepalive)
            .http2_keepalive_timeout(Some(self.keepalive_timeout))
    }
}
