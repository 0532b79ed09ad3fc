//! Fuzz targets for every decoder that reads network or file input, as plain functions.
//!
//! Each target takes arbitrary bytes and panics when a property fails: the decoder itself
//! must not panic, what it accepts stays within its documented bounds, its errors are the
//! precise typed ones, and what it accepts survives a round trip through the matching
//! encoder. The coverage-guided fuzzer (`src/main.rs`, AFL++ through afl.rs, stable Rust)
//! and the corpus replay (`tests/corpus.rs`, ordinary `cargo test`) run the same functions,
//! so every seed and every input that ever failed is a regression test.
//!
//! Inputs: `fuzz/corpus/<target>/` holds the seeds the fuzzer starts from (and the tests
//! replay); `fuzz/regressions/<target>/` holds inputs only the tests replay: what the fuzzer
//! found (`tools/fuzz.sh` copies crashes and hangs there) and seeds too slow to mutate.
//!
//! Map: [`Target`] (the list, by name), one module per decoder, [`fixture`] (the fixed
//! keys, CA and clock the targets use), [`seed`] (the structured seed corpus).
//!
//! The edge is a binary crate; its decoders are compiled here from its source files.

mod endpoint_rewrite;
pub mod fixture;
mod go_duration;
mod identity_uri;
mod lease_csr;
mod renewal;
mod resource_name;
pub mod seed;
mod selector;
mod session_header;
mod target;
mod token;
mod tool_config;

/// The edge's configuration file (0.9.0 ExporterConfig / ClientConfig YAML).
#[path = "../../edge/src/config.rs"]
#[allow(dead_code)] // The edge's file writer and accessors are not decoders.
mod edge_config;
/// The edge's gRPC response rewriter (Listen / Dial bodies from the controller).
#[path = "../../edge/src/endpoint_rewrite.rs"]
#[allow(dead_code)] // Request paths and constants the fuzz targets do not use.
mod edge_endpoint_rewrite;
/// The edge's unverified reading of router tokens.
#[path = "../../edge/src/router_token.rs"]
#[allow(dead_code)] // The call-metadata reader is not a decoder of token bytes.
mod edge_router_token;

pub use target::Target;
