//! The standalone binary's integration tests: `jumpstarter serve`, its admin commands and
//! the real 0.9.0 tools against it.
//!
//! One test binary for the crate (each file below is a module): one link instead of one
//! per file keeps the build fast and the target directory small. Run one file's tests
//! with `cargo test -p jumpstarter-standalone --test integration <file>::`.

mod support;

mod admin_apply;
mod admin_habits;
mod admin_kubernetes;
mod admin_socket;
mod environment;
mod full_disk;
mod jmp_standalone;
mod legacy_key;
mod quic;
mod quic_transport;
mod serve;
mod serve_config;
