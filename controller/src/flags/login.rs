//! The login service's flags (`/v1/auth/config`, what `jmp login host` reads).

use std::net::SocketAddr;

use clap::Args;

/// Where and how the login service listens.
#[derive(Debug, Clone, Args)]
pub struct LoginArgs {
    /// Serve the login service (`/v1/auth/config` for `jmp login [client@]host`) on this
    /// address; 0.9.0 serves it on port 8086 [default: off].
    #[arg(long, env = "JUMPSTARTER_LOGIN_LISTEN")]
    pub login_listen: Option<SocketAddr>,
    /// Serve the login service in plain HTTP, for an ingress that ends TLS in front of it
    /// (as 0.9.0 does) [default: TLS with the controller's serving certificate, whose
    /// names must then include the login host: see `--tls-san`].
    #[arg(long, env = "JUMPSTARTER_LOGIN_PLAIN_HTTP", default_value_t = false)]
    pub login_plain_http: bool,
}
