//! The dashboard's flags (see [`crate::dashboard`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// Where the dashboard listens and who may see it.
#[derive(Debug, Clone, Args)]
pub struct DashboardArgs {
    /// Serve the lab dashboard on this address [default: off]. On a loopback address it is
    /// plain HTTP; on any other, HTTPS with the controller's serving certificate (see
    /// `--tls-san`) unless `--dashboard-plain-http`.
    #[arg(
        long,
        env = "JUMPSTARTER_DASHBOARD_LISTEN",
        requires = "dashboard_token_file"
    )]
    pub dashboard_listen: Option<SocketAddr>,
    /// File holding the dashboard's admin credential (a token of at least 16 characters);
    /// required with `--dashboard-listen`. Re-read at start only.
    #[arg(long, env = "JUMPSTARTER_DASHBOARD_TOKEN_FILE")]
    pub dashboard_token_file: Option<PathBuf>,
    /// Serve the dashboard in plain HTTP on a non-loopback address, for an ingress that ends
    /// TLS in front of it.
    #[arg(
        long,
        env = "JUMPSTARTER_DASHBOARD_PLAIN_HTTP",
        default_value_t = false
    )]
    pub dashboard_plain_http: bool,
    /// Offer admin actions on the dashboard: end a lease, disable or enable an exporter
    /// (each logged) [default: read-only].
    #[arg(long, env = "JUMPSTARTER_DASHBOARD_ACTIONS", default_value_t = false)]
    pub dashboard_actions: bool,
}
