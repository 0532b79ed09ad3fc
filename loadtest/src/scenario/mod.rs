//! The nine scenarios, one module each; each `run` returns its [`Scenario`] (with the
//! error, if one stopped it) and never panics.
//!
//! [`Scenario`]: crate::report::Scenario

pub(crate) mod bulk;
pub(crate) mod congestion;
pub(crate) mod controller;
pub(crate) mod idle;
pub(crate) mod impairment;
pub(crate) mod latency;
pub(crate) mod restart;
pub(crate) mod setup;
pub(crate) mod throughput;
