//! The Jumpstarter stream router, wire-compatible with jumpstarter 0.9.0.
//!
//! A client and an exporter each open `jumpstarter.v1.RouterService/Stream` (bidi gRPC over
//! TLS, ALPN h2) with the same router token (`authorization: Bearer`). The router verifies
//! the token (ES256, public keys only), pairs the two streams by the token's `sub` (the
//! stream id) and relays frames verbatim both ways until both sides end.
//!
//! State, all in memory and bounded: streams waiting for their peer (one per stream id,
//! [`RouterConfig::max_pending`] in total, each for [`RouterConfig::pair_timeout`]), live
//! pairs, and the ids of streams already paired, kept until their token expires
//! ([`RouterConfig::max_remembered`] at most) so that a token cannot be replayed to open a
//! second pair. Both peers must reach the same router process.
//!
//! Map:
//! - `pairing`: the sans-IO pairing table (offer, cancel, expire with explicit `now`); its
//!   default limits are public. [`bounds`]: the memory and connection bounds as flags.
//! - `authentication`: bearer header and token verification, public key bundles.
//! - `switchboard`: the pairing front-end of h2 and QUIC streams, `stream_service`: the
//!   `RouterService` route and its codec, which keep each message's bytes (`frame`: one
//!   message as bytes, read only where the router needs its payload), `refusal`: why a stream is refused and how each transport hears it.
//! - `relay` (h2 ↔ h2), `bridge` (h2 ↔ QUIC), `splice` (QUIC ↔ QUIC): the relays of
//!   a pair; `side`: a QUIC stream, its chunk size and its refusal; `lease_clock`: when
//!   each lease ends, from the newest router token seen, so pairs end with their lease.
//! - `server`: [`Router`], [`RouterConfig`], the TLS accept loop and graceful shutdown.
//! - `reloader`: [`Reloader`], the certificate, client CA and token key files re-read while
//!   the router runs, and their metrics.
//! - `quic`: [`QuicRouter`], the QUIC listener beside the h2 one: mutual-TLS admission by
//!   lease certificate, raw session streams paired by lease and session id, [`ResetKey`].
//! - `metrics`: Prometheus metrics of both listeners; [`telemetry`]: `/metrics`,
//!   `/healthz`, `/readyz`.
//!
//! The `jumpstarter-router` binary is a thin shell over [`Router::serve`]; the controller
//! can embed the same [`Router`] in its own process.

mod authentication;
pub mod bounds;
mod bridge;
mod frame;
mod lease_clock;
mod metrics;
pub mod pairing;
mod quic;
mod refusal;
mod relay;
mod reloader;
mod server;
mod side;
mod splice;
mod stream_service;
mod switchboard;
pub mod telemetry;

pub use authentication::{KeyBundleError, TokenKeys, public_keys_from_pem};
pub use pairing::PairLimits;
pub use quic::{QuicRouter, QuicRouterConfig, QuicSetupError, ResetKey};
pub use reloader::{CredentialFiles, DEFAULT_RELOAD_INTERVAL, ReloadArgs, ReloadError, Reloader};
pub use server::{
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_PAIR_TIMEOUT, MAX_MESSAGE_BYTES, Readiness, Router,
    RouterConfig, ServeError, SessionLeases,
};
pub use telemetry::serve_telemetry;
