//! The lease domain of the Jumpstarter service: what a lease is, who may do what to it, and
//! which lease gets which exporter when. Pure and synchronous: no I/O, no async runtime, no
//! Kubernetes or protobuf types. The controller turns its stored objects and gRPC requests
//! into these types, calls the rules here, and writes back what they return.
//!
//! - [`selector`]: Kubernetes label-selector syntax (parse, format, match).
//! - [`scheduler`]: the planner (which lease gets which exporter, and when leases end), its
//!   snapshot input, lease conditions, Go durations and the begin/end/duration rules.
//! - [`request`]: `CreateLease` requests and their rules (target, tags, selector, times).
//! - [`command`]: create, update, release and delete as functions of
//!   `(state, caller, now) -> Result<Change, LeaseError>`.
//! - [`error`]: [`LeaseError`], one variant per refused rule.
//! - [`name`]: object names and `namespaces/{ns}/{collection}/{name}` resource names.

pub mod command;
pub mod error;
pub mod name;
pub mod request;
pub mod scheduler;
pub mod selector;

pub use command::{Caller, Change, LeaseState};
pub use error::LeaseError;
