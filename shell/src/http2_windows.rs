//! The HTTP/2 flow-control windows of a port that carries bulk data (the router's), as a
//! flag group (`--http2-stream-window`, `--http2-connection-window`) and
//! [`Http2Windows::apply`], which sets them on a tonic server builder. Clients of such a
//! port set the same on their channel with [`Http2Windows::apply_to_endpoint`] (or the
//! public constants).
//!
//! A sender may have at most one window of unacknowledged data in flight, so one stream
//! moves at most `stream window / round-trip time`: hyper's defaults (1 MiB on a server, 2
//! MiB on a client) cap one session at 20 MiB/s on a 50 ms path. The defaults here are
//! sized for a 100 ms × 1 Gbit/s path (bandwidth-delay product 12.5 MB): 16 MiB per stream,
//! and 32 MiB per connection so two busy streams of one connection both get a full window.
//!
//! Fixed windows, not hyper's adaptive window (a bandwidth-delay estimate from PING round
//! trips that starts at 64 KiB): on the load test's impaired path (50 ms per hop, through
//! the router) the adaptive router moved 5.6 and 8.5 MiB/s at 1 % and 5 % loss where
//! these fixed windows moved 22.6 and 15.8 (1 MiB windows: 6.1 and 3.9); the estimate
//! shrinks whenever loss stalls the flow.
//!
//! Memory: what a window allows is data the server has received and not yet handed on, so
//! a connection holds at most its connection window in receive buffers (the router reads
//! its streams as fast as their peers take the data: the buffers fill only behind a slow
//! reader). Worst case over the port: `--max-connections` × the connection window.

/// Default receive window of one HTTP/2 stream, bytes: a 100 ms × 1 Gbit/s path's
/// bandwidth-delay product (12.5 MB), rounded up to a power of two.
pub const STREAM_WINDOW: u32 = 16 * 1024 * 1024;

/// Default receive window of one HTTP/2 connection, bytes: two streams' full windows.
pub const CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;

/// Smallest window HTTP/2 allows and starts with (RFC 9113, 6.9.2).
const MIN_WINDOW: u32 = 65_535;

/// Largest window HTTP/2 allows (RFC 9113, 6.9.1): 2^31 - 1.
const MAX_WINDOW: u32 = (1 << 31) - 1;

/// HTTP/2 receive windows of one port; a flag group with the defaults above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct Http2Windows {
    /// Receive window of one HTTP/2 stream, bytes (SETTINGS_INITIAL_WINDOW_SIZE): what one
    /// session may have in flight, so its throughput is at most this per round trip.
    #[arg(
        long = "http2-stream-window",
        env = "JUMPSTARTER_HTTP2_STREAM_WINDOW",
        default_value_t = STREAM_WINDOW,
        value_parser = clap::value_parser!(u32).range(i64::from(MIN_WINDOW)..=i64::from(MAX_WINDOW))
    )]
    pub stream_window: u32,
    /// Receive window of one HTTP/2 connection, bytes (all its streams together): what the
    /// router may buffer for one connection at most.
    #[arg(
        long = "http2-connection-window",
        env = "JUMPSTARTER_HTTP2_CONNECTION_WINDOW",
        default_value_t = CONNECTION_WINDOW,
        value_parser = clap::value_parser!(u32).range(i64::from(MIN_WINDOW)..=i64::from(MAX_WINDOW))
    )]
    pub connection_window: u32,
}

impl Default for Http2Windows {
    fn default() -> Self {
        Http2Windows {
            stream_window: STREAM_WINDOW,
            connection_window: CONNECTION_WINDOW,
        }
    }
}

impl Http2Windows {
    /// `server` with these windows (fixed: hyper's adaptive window is off, see the
    /// module's documentation).
    pub fn apply<L>(&self, server: tonic::transport::Server<L>) -> tonic::transport::Server<L> {
        server
            .initial_stream_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window)
            .http2_adaptive_window(Some(false))
    }

    /// A client `endpoint` with these windows.
    pub fn apply_to_endpoint(
        &self,
        endpoint: tonic::transport::Endpoint,
    ) -> tonic::transport::Endpoint {
        endpoint
            .initial_stream_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window)
            .http2_adaptive_window(false)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        windows: Http2Windows,
    }

    #[test]
    fn the_flag_defaults_are_the_defaults() {
        let cli = Cli::try_parse_from(["test"]).expect("parse");
        assert_eq!(cli.windows, Http2Windows::default());
    }

    #[test]
    fn flags_set_the_windows_within_http2_bounds() {
        let cli = Cli::try_parse_from([
            "test",
            "--http2-stream-window=65535",
            "--http2-connection-window=2147483647",
        ])
        .expect("parse");
        assert_eq!(
            (cli.windows.stream_window, cli.windows.connection_window),
            (MIN_WINDOW, MAX_WINDOW)
        );
        for bad in [
            "--http2-stream-window=65534",
            "--http2-connection-window=2147483648",
            "--http2-stream-window=big",
        ] {
            let error = Cli::try_parse_from(["test", bad]).expect_err(bad);
            assert!(error.to_string().contains("http2"), "{error}");
        }
    }
}
