//! The channel between controller replicas, which lets any replica serve a Dial for an
//! exporter whose Listen stream is held by another.
//!
//! A Dial first offers the router endpoint and the exporter's token to this replica's
//! Listen queues. When nobody listens on the lease here, [`forward::Forwarder`] offers it
//! to every live peer of the [`crate::replica::ReplicaRegistry`] at once, over
//! `jumpstarter.peer.v1.PeerService` on the peers' gRPC ports ([`crate::service`] serves
//! it): TLS verified with the controller CA and the host of `--grpc-endpoint` as server
//! name (every replica's serving certificate names it), a bearer token signed with the
//! internal key for the peer audience ([`jumpstarter_token::peer`]). Each peer call is
//! bounded ([`CONNECT_TIMEOUT`], [`CALL_TIMEOUT`]); [`forward::decide`] combines the
//! answers.
//!
//! - [`PeerArgs`]: `--peer-endpoint`, where peers reach this replica.
//! - [`forward`]: the forwarding client and its pure decision.
//! - [`metrics`]: forwarded offers by outcome, peer call failures, offers received.

pub mod forward;
pub mod metrics;

use std::time::Duration;

pub use forward::Forwarder;
pub use metrics::PeerMetrics;

/// Longest wait for a TCP + TLS connection to a peer: peers share a cluster network, so a
/// second means the peer is gone, and the Dial must not hang on it.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait for a peer's answer to an offer (which never waits for the exporter).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Lifetime of a peer token: minted per forwarded Dial, so minutes cover any clock skew
/// between replicas while keeping a leaked token short-lived.
pub const TOKEN_LIFETIME: time::Duration = time::Duration::minutes(2);

/// The flag that tells peers where to reach this replica.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PeerArgs {
    /// `host:port` where the other controller replicas reach this one's gRPC port (the
    /// chart passes the pod IP); written into this replica's record. Without it, no peer
    /// forwards Dials to this replica, so exporters listening here are reachable only by
    /// clients connected here [default: none].
    #[arg(long, env = "JUMPSTARTER_PEER_ENDPOINT", value_parser = parse_endpoint)]
    pub peer_endpoint: Option<String>,
}

/// A bare `host:port` (no scheme), as the other endpoint flags take. The port follows the
/// last `:`; a bare IPv6 host before it (what `$(POD_IP):8082` gives on an IPv6 pod) is put
/// in brackets.
fn parse_endpoint(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.contains("://") {
        return Err(format!("{text:?}: expected host:port (no scheme)"));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("{text:?}: expected host:port"));
    };
    if host.is_empty() || !port.parse::<u16>().is_ok_and(|p| p > 0) {
        return Err(format!("{text:?}: expected host:port"));
    }
    if host.contains(':') && !host.starts_with('[') {
        return Ok(format!("[{host}]:{port}"));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_endpoints_are_host_and_port() {
        assert_eq!(parse_endpoint("10.1.2.3:8082").unwrap(), "10.1.2.3:8082");
        assert_eq!(parse_endpoint("[fd00::1]:8082").unwrap(), "[fd00::1]:8082");
        assert_eq!(parse_endpoint("fd00::1:8082").unwrap(), "[fd00::1]:8082");
        for bad in ["10.1.2.3", "https://a:1", ":8082", "a:0", "a:x", ""] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?}");
        }
    }
}
