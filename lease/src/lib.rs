//! The lease domain of the Jumpstarter service: what a lease is, who may do what to it, and
//! which lease gets which exporter when. Pure and synchronous: no I/O, no async runtime, no
//! Kubernetes or protobuf types. The controller turns its stored objects and gRPC requests
//! into these types, calls the rules here, and writes back what they return.
//!
//! - [`selector`]: Kubernetes label-selector syntax (parse, format, match).
//! - [`scheduler`]: the planner (which lease gets which exporter, and when leases end), its
//!   snapshot input, lease conditions, Go durations and the begin/end/duration rules.
pub mod scheduler;
pub mod selector;
