//! The dashboard's flags (see [`crate::dashboard`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::flags::GoDuration;

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
    #[command(flatten)]
    pub sso: DashboardSsoArgs,
}

/// Single sign-on on the dashboard: users log in with an identity provider the controller
/// already trusts (a JWT authenticator of `authentication.jwt`), by the OpenID Connect
/// authorization-code flow with PKCE.
#[derive(Debug, Clone, Args)]
pub struct DashboardSsoArgs {
    /// Offer single sign-on on the dashboard with this client id, registered with the
    /// identity provider with the redirect URI `<dashboard URL>/oidc/callback`. It must be
    /// one of the issuer's `audiences` in `authentication.jwt` (with several audiences,
    /// `audienceMatchPolicy: MatchAny`): its ID tokens are checked like any other token of
    /// the issuer, and mapped to the same username [default: off].
    #[arg(long, env = "JUMPSTARTER_DASHBOARD_OIDC_CLIENT_ID")]
    pub dashboard_oidc_client_id: Option<String>,
    /// File holding the client's secret (a confidential client); without it the dashboard
    /// is a public client and relies on PKCE alone.
    #[arg(
        long,
        env = "JUMPSTARTER_DASHBOARD_OIDC_CLIENT_SECRET_FILE",
        requires = "dashboard_oidc_client_id"
    )]
    pub dashboard_oidc_client_secret_file: Option<PathBuf>,
    /// The issuer users log in with: the `issuer.url` of one JWT authenticator [default:
    /// the only one configured].
    #[arg(
        long,
        env = "JUMPSTARTER_DASHBOARD_OIDC_ISSUER",
        requires = "dashboard_oidc_client_id"
    )]
    pub dashboard_oidc_issuer: Option<String>,
    /// Scopes asked for, comma-separated (`openid` is always added).
    #[arg(
        long,
        env = "JUMPSTARTER_DASHBOARD_OIDC_SCOPES",
        value_delimiter = ',',
        default_value = "openid,profile,email"
    )]
    pub dashboard_oidc_scopes: Vec<String>,
    /// The dashboard's address as browsers reach it (the redirect URI is this plus
    /// `/oidc/callback`), e.g. `https://lab.example.com` behind an ingress, or
    /// `https://tools.example.com/lab` under a path the ingress strips (redirects and
    /// cookies stay under it) [default: `http(s)://<--dashboard-listen>`, which must then
    /// be a specific address].
    #[arg(long, env = "JUMPSTARTER_DASHBOARD_URL")]
    pub dashboard_url: Option<String>,
    /// A user who may take the admin actions (with `--dashboard-actions`): a username as
    /// the issuer's JWT authenticator maps it, prefix included (e.g. `dex:alice`).
    /// Repeat or separate with commas. Other users who log in see the dashboard read-only.
    #[arg(long, env = "JUMPSTARTER_DASHBOARD_ADMINS", value_delimiter = ',')]
    pub dashboard_admin: Vec<String>,
    /// A group whose members may take the admin actions: a group as the issuer's JWT
    /// authenticator maps it (`claimMappings.groups`, prefix included; ask for the scope
    /// that carries it, e.g. `groups`). Repeat or separate with commas.
    #[arg(
        long,
        env = "JUMPSTARTER_DASHBOARD_ADMIN_GROUPS",
        value_delimiter = ','
    )]
    pub dashboard_admin_group: Vec<String>,
    /// Only members of these groups (and the admins) may log in with single sign-on; others
    /// are refused at login, saying so [default: anyone the issuer's authenticator accepts].
    /// Repeat or separate with commas.
    #[arg(long, env = "JUMPSTARTER_DASHBOARD_USER_GROUPS", value_delimiter = ',')]
    pub dashboard_user_group: Vec<String>,
    /// How long a dashboard login lasts (Go duration), single sign-on or credential.
    #[arg(long, env = "JUMPSTARTER_DASHBOARD_SESSION_TTL", default_value = "12h")]
    pub dashboard_session_ttl: GoDuration,
}
