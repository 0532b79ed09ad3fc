//! The router's integration tests: the gRPC and QUIC data planes, admission, reloads,
//! signals and impairments, over real TLS and QUIC on loopback.
//!
//! One test binary for the crate (each file below is a module): one link instead of one
//! per file keeps the build fast and the target directory small. Run one file's tests
//! with `cargo test -p jumpstarter-router --test integration <file>::`.

mod support;

mod admission;
mod client_ca_reload;
mod data_plane;
mod environment;
mod http2_windows;
mod impairment;
mod memory_bounds;
mod passthrough;
mod public_port;
mod quic;
mod quic_transport;
mod reflection;
mod relay;
mod reload;
mod signal;
mod token_attacks;
mod version;
