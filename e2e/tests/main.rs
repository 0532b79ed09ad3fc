//! The end-to-end tests: the service's binaries driven by the real jumpstarter 0.9.0
//! tools, in both modes.
//!
//! One test binary (each file below is a module): one link instead of one per file keeps
//! the build fast and the target directory small. The tests that start the service and
//! Python processes take `jumpstarter_e2e::serial()` and run one at a time across all
//! files. Run one file's tests with `cargo test -p jumpstarter-e2e --test e2e <file>::`.
//! The chart's tests on a real node are their own binary (`--features node --test chart_node`).

mod admin_check;
mod dashboard;
mod faults;
mod helm_chart;
mod jumpstarter_v1;
mod replicas;
mod scheduling;
mod sso;
mod upstream;
