//! The process shell every Jumpstarter binary shares (`jumpstarter-controller`,
//! `jumpstarter-router`, `jumpstarter`, `jumpstarter-edge`, `jumpstarter-loadtest`): how a
//! binary reads its flags, logs, stops, writes secrets, names its own address and accepts
//! TLS connections. The binaries keep only what is theirs (their flags and their wiring).
//!
//! Map, one concept per module:
//! - [`env_alias`]: parsing a binary's flags, with the old environment names (`ROUTER_*`,
//!   `LOADTEST_*`, …) read as deprecated aliases of the `JUMPSTARTER_*` ones;
//! - [`duration_flag`]: duration flag values (`10s`, `1h30m`), integer seconds accepted
//!   as a deprecated form;
//! - [`deprecation`]: the deprecated forms met while parsing, logged once logging is up;
//! - [`logging`]: the subscriber and `--log-format` (the `LogArgs` group every server
//!   flattens);
//! - [`signal`]: SIGTERM/SIGINT stop gracefully, a second one exits at once;
//! - [`error_chain`]: an error and its causes on one line;
//! - [`private_file`]: files only the owner may read (mode 0600, also when they exist);
//! - [`advertised_address`]: the address peers dial for a listen address;
//! - [`metrics_registrar`]: Prometheus metrics registered where their fields are made;
//! - [`accept_loop`]: the one bounded TLS accept loop (connection and handshake caps,
//!   total and per source, refusals counted), a stream for tonic's `serve_with_incoming*`;
//! - [`http2_limits`]: the HTTP/2 limits every tonic server applies;
//! - [`http2_windows`]: the HTTP/2 flow-control windows of ports that carry bulk data (the
//!   router's), and of their clients;
//! - [`port_limits`]: both, as the one flag group of a public port;
//! - [`help_env`]: what the binaries' tests check in `--help` (environment names);
//! - `kube_client` (feature `kube`): the Kubernetes client from a kubeconfig or the
//!   environment. The router never enables the feature, so it never links kube.
//!
//! Flag groups: the log format is shared by every server, so its group lives here. The
//! controller's own groups (credential lifetimes, TLS SANs) take their defaults from the
//! controller's settings constants, so they live in the controller crate
//! (`jumpstarter_controller::flags`), which the standalone binary already depends on.
//!
//! Every environment name is `JUMPSTARTER_…`; the old names keep working through
//! [`env_alias`] and are hidden from `--help`.

pub mod accept_loop;
pub mod advertised_address;
pub mod deprecation;
pub mod duration_flag;
pub mod env_alias;
pub mod error_chain;
pub mod help_env;
pub mod http2_limits;
pub mod http2_windows;
#[cfg(feature = "kube")]
pub mod kube_client;
pub mod logging;
pub mod metrics_registrar;
pub mod port_limits;
pub mod private_file;
pub mod process_metrics;
pub mod signal;
