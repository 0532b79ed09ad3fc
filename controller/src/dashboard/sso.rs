//! Single sign-on on the dashboard: the OpenID Connect authorization-code flow with PKCE
//! against an issuer the controller already trusts (one of its JWT authenticators).
//!
//! 1. `GET /oidc/login`: a [`Pending`] login (state, nonce, PKCE verifier) is sealed into a
//!    short-lived cookie, and the browser is sent to the issuer's authorization endpoint.
//! 2. `GET /oidc/callback?code&state`: the cookie must match `state`; the code is exchanged
//!    at the token endpoint (with the verifier, and the client secret when there is one);
//!    the ID token is verified by the issuer's JWT authenticator (signature, expiry,
//!    audiences, claim rules, username mapping), and must name this client and the nonce.
//!    The user is then logged in under the authenticator's username.
//!
//! Nothing is kept on the server between the two steps, so any replica may take either.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use time::OffsetDateTime;

use super::DashboardError;
use super::session::{self, AuthorizationRequest, Pending, Sealer};
use crate::flags::dashboard::DashboardSsoArgs;
use crate::jwt::{Authenticators, JwtIdentity, LoginEndpoints};

/// How long a login may take at the identity provider.
pub(crate) const PENDING_TTL: time::Duration = time::Duration::minutes(10);
/// How long the issuer's endpoints are kept before they are discovered again.
const ENDPOINTS_TTL: Duration = Duration::from_secs(300);
/// How long a failed discovery is answered from memory: clicks on the login link cannot
/// make the controller hammer an issuer that is down.
const FAILURE_TTL: Duration = Duration::from_secs(5);
/// The callback path, under the dashboard URL.
pub const CALLBACK_PATH: &str = "/oidc/callback";

/// Single sign-on as configured (see [`DashboardSso::resolve`]).
#[derive(Clone)]
pub struct DashboardSso {
    /// The issuer users log in with.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<Arc<str>>,
    /// `<dashboard URL>/oidc/callback`.
    pub redirect_uri: String,
    /// The dashboard URL's path without its trailing slash: empty at a host's root,
    /// `/lab` when an ingress serves it under that prefix. Redirects and cookie paths
    /// start with it.
    pub base_path: String,
    pub scopes: Vec<String>,
    /// Users who may take the admin actions.
    pub admins: Vec<String>,
    /// Groups whose members may take the admin actions.
    pub admin_groups: Vec<String>,
    /// When not empty: the groups whose members (besides the admins) may log in.
    pub user_groups: Vec<String>,
    /// The controller's JWT authenticators (the issuer is one of them).
    pub authenticators: Authenticators,
}

impl std::fmt::Debug for DashboardSso {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardSso")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("redirect_uri", &self.redirect_uri)
            .field("base_path", &self.base_path)
            .field("scopes", &self.scopes)
            .field("admins", &self.admins)
            .field("admin_groups", &self.admin_groups)
            .field("user_groups", &self.user_groups)
            .finish_non_exhaustive()
    }
}

impl DashboardSso {
    /// Single sign-on from the flags, checked against the configured authenticators:
    /// `None` without `--dashboard-oidc-client-id`. `default_url` is the dashboard's own
    /// address when browsers reach it directly (`None` when it listens on every address).
    pub fn resolve(
        args: &DashboardSsoArgs,
        default_url: Option<String>,
        authenticators: Option<&Authenticators>,
    ) -> Result<Option<DashboardSso>, DashboardError> {
        let Some(client_id) = args.dashboard_oidc_client_id.clone() else {
            return Ok(None);
        };
        let sso_error = |message: String| DashboardError::Sso(message);
        let authenticators = authenticators.filter(|a| !a.is_empty()).ok_or_else(|| {
            sso_error(
                "--dashboard-oidc-client-id needs an identity provider: configure a JWT \
                 authenticator (authentication.jwt in --config) for it"
                    .into(),
            )
        })?;
        let configs: Vec<_> = authenticators.configs().collect();
        let configured = || {
            configs
                .iter()
                .map(|c| c.issuer.url.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let config = match (&args.dashboard_oidc_issuer, configs.as_slice()) {
            (Some(issuer), _) => configs
                .iter()
                .find(|c| c.issuer.url == *issuer)
                .ok_or_else(|| {
                    sso_error(format!(
                        "--dashboard-oidc-issuer {issuer} is not a configured JWT issuer (configured: {})",
                        configured()
                    ))
                })?,
            (None, [only]) => only,
            (None, _) => {
                return Err(sso_error(format!(
                    "several JWT issuers are configured ({}): choose one with --dashboard-oidc-issuer",
                    configured()
                )));
            }
        };
        let issuer = config.issuer.url.clone();
        if !config.issuer.audiences.contains(&client_id) {
            return Err(sso_error(format!(
                "--dashboard-oidc-client-id {client_id:?} is not one of the audiences of {issuer} \
                 ({:?}): its ID tokens would be refused; add it to issuer.audiences",
                config.issuer.audiences
            )));
        }
        let url = match args.dashboard_url.clone().or(default_url) {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                return Err(sso_error(
                    "single sign-on needs the address browsers reach the dashboard at: set \
                     --dashboard-url (the dashboard listens on every address)"
                        .into(),
                ));
            }
        };
        let parsed: http::Uri = url
            .parse()
            .map_err(|e| sso_error(format!("--dashboard-url {url:?}: {e}")))?;
        if !matches!(parsed.scheme_str(), Some("http" | "https"))
            || parsed.host().is_none()
            || parsed.query().is_some()
        {
            return Err(sso_error(format!(
                "--dashboard-url {url:?} must be an http(s) URL without a query, such as https://lab.example.com"
            )));
        }
        let client_secret = match &args.dashboard_oidc_client_secret_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    sso_error(format!(
                        "read the client secret file {}: {e}",
                        path.display()
                    ))
                })?;
                let secret = text.trim();
                if secret.is_empty() {
                    return Err(sso_error(format!(
                        "the client secret file {} is empty",
                        path.display()
                    )));
                }
                Some(Arc::from(secret))
            }
        };
        let mut scopes = vec!["openid".to_owned()];
        for scope in &args.dashboard_oidc_scopes {
            let scope = scope.trim();
            if !scope.is_empty() && !scopes.iter().any(|s| s == scope) {
                scopes.push(scope.to_owned());
            }
        }
        let names = |list: &[String]| -> Vec<String> {
            list.iter()
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty())
                .collect()
        };
        Ok(Some(DashboardSso {
            issuer,
            client_id,
            client_secret,
            redirect_uri: format!("{url}{CALLBACK_PATH}"),
            base_path: parsed.path().trim_end_matches('/').to_owned(),
            scopes,
            admins: names(&args.dashboard_admin),
            admin_groups: names(&args.dashboard_admin_group),
            user_groups: names(&args.dashboard_user_group),
            authenticators: authenticators.clone(),
        }))
    }
}

/// The query of the provider's return (RFC 6749 4.1.2 and 4.1.2.1).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Callback {
    #[serde(default)]
    pub(crate) code: Option<String>,
    #[serde(default)]
    pub(crate) state: Option<String>,
    #[serde(default)]
    pub(crate) error: Option<String>,
    #[serde(default)]
    pub(crate) error_description: Option<String>,
}

/// Why a single sign-on did not log the user in: shown on the login page, and logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LoginFailure {
    #[error("This login does not belong to this browser, or took over 10 minutes: log in again.")]
    NoPending,
    #[error("The identity provider refused the login: {0}")]
    Refused(String),
    #[error("The identity provider cannot be reached: {0}")]
    Unreachable(String),
    #[error("The identity provider did not exchange the login code: {0}")]
    Exchange(String),
    #[error("The identity provider's ID token was not accepted: {0}")]
    Token(String),
    #[error("{user} may not use this dashboard: it is for the members of {groups}.")]
    NotAUser { user: String, groups: String },
}

impl LoginFailure {
    /// A low-cardinality label for logs.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            LoginFailure::NoPending => "no_pending_login",
            LoginFailure::Refused(_) => "refused",
            LoginFailure::Unreachable(_) => "unreachable",
            LoginFailure::Exchange(_) => "exchange",
            LoginFailure::Token(_) => "token",
            LoginFailure::NotAUser { .. } => "not_a_user",
        }
    }
}

/// Single sign-on at run time: the configuration and the issuer's endpoints.
pub(crate) struct Sso {
    pub(crate) config: DashboardSso,
    /// The last discovery: when, and its endpoints or its failure.
    endpoints: tokio::sync::Mutex<Option<(Instant, Result<LoginEndpoints, LoginFailure>)>>,
}

impl Sso {
    pub(crate) fn new(config: DashboardSso) -> Sso {
        Sso {
            config,
            endpoints: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether `user`, a member of `groups`, may take the admin actions.
    pub(crate) fn is_admin(&self, user: &str, groups: &[String]) -> bool {
        self.config.admins.iter().any(|admin| admin == user)
            || groups.iter().any(|g| self.config.admin_groups.contains(g))
    }

    /// Whether `identity` may log in at all: when user groups are set, only their
    /// members and the admins may.
    pub(crate) fn admits(&self, identity: &JwtIdentity) -> Result<(), LoginFailure> {
        if self.config.user_groups.is_empty()
            || self.is_admin(&identity.username, &identity.groups)
            || identity
                .groups
                .iter()
                .any(|g| self.config.user_groups.contains(g))
        {
            return Ok(());
        }
        Err(LoginFailure::NotAUser {
            user: identity.username.clone(),
            groups: self.config.user_groups.join(", "),
        })
    }

    /// The groups of `groups` that the access rules name: all a session needs to keep (an
    /// identity provider may list hundreds, more than a cookie holds).
    pub(crate) fn relevant_groups(&self, groups: &[String]) -> Vec<String> {
        groups
            .iter()
            .filter(|g| self.config.admin_groups.contains(g) || self.config.user_groups.contains(g))
            .cloned()
            .collect()
    }

    /// The issuer's endpoints: discovered at most every [`ENDPOINTS_TTL`], or
    /// [`FAILURE_TTL`] after a failure (concurrent logins share one discovery).
    async fn endpoints(&self) -> Result<LoginEndpoints, LoginFailure> {
        let mut cached = self.endpoints.lock().await;
        if let Some((at, result)) = &*cached {
            let ttl = if result.is_ok() {
                ENDPOINTS_TTL
            } else {
                FAILURE_TTL
            };
            if at.elapsed() < ttl {
                return result.clone();
            }
        }
        let result = self
            .config
            .authenticators
            .login_endpoints(&self.config.issuer)
            .await
            .map_err(|e| LoginFailure::Unreachable(e.to_string()));
        *cached = Some((Instant::now(), result.clone()));
        result
    }

    /// Starts a login: the URL to send the browser to, and the sealed pending login for
    /// its cookie.
    pub(crate) async fn start(
        &self,
        sealer: &Sealer,
        now: OffsetDateTime,
    ) -> Result<(String, String), LoginFailure> {
        let endpoints = self.endpoints().await?;
        let pending = Pending {
            state: session::random_token(),
            nonce: session::random_token(),
            verifier: session::random_token(),
            expires: (now + PENDING_TTL).unix_timestamp(),
        };
        let url = session::authorization_url(&AuthorizationRequest {
            endpoint: &endpoints.authorization,
            client_id: &self.config.client_id,
            redirect_uri: &self.config.redirect_uri,
            scopes: &self.config.scopes,
            pending: &pending,
        });
        Ok((url, sealer.seal_pending(&pending)))
    }

    /// Finishes a login: the identity the provider vouched for.
    pub(crate) async fn finish(
        &self,
        sealer: &Sealer,
        callback: &Callback,
        pending: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<JwtIdentity, LoginFailure> {
        let pending = pending
            .and_then(|text| sealer.open_pending(text, now.unix_timestamp()))
            .ok_or(LoginFailure::NoPending)?;
        let state_matches = callback
            .state
            .as_deref()
            .is_some_and(|state| super::same(state.as_bytes(), pending.state.as_bytes()));
        if !state_matches {
            return Err(LoginFailure::NoPending);
        }
        if let Some(error) = &callback.error {
            let description = callback.error_description.as_deref().unwrap_or_default();
            return Err(LoginFailure::Refused(
                format!("{error} {description}").trim().to_owned(),
            ));
        }
        let code = callback
            .code
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| LoginFailure::Refused("no code in its answer".into()))?;
        let endpoints = self.endpoints().await?;
        let form = session::token_form(
            code,
            &self.config.redirect_uri,
            &self.config.client_id,
            &pending.verifier,
        );
        let basic = self
            .config
            .client_secret
            .as_deref()
            .map(|secret| session::basic_credential(&self.config.client_id, secret));
        let (status, body) = self
            .config
            .authenticators
            .post_form(&self.config.issuer, &endpoints.token, form, basic)
            .await
            .map_err(|e| LoginFailure::Unreachable(e.to_string()))?;
        let id_token = id_token(status, &body)?;
        let (identity, claims) = self
            .config
            .authenticators
            .authenticate_with_claims(&id_token, now)
            .await
            .map_err(|e| LoginFailure::Token(e.to_string()))?
            .ok_or_else(|| {
                LoginFailure::Token(format!("it is not a JWT of {}", self.config.issuer))
            })?;
        if identity.issuer != self.config.issuer {
            return Err(LoginFailure::Token(format!(
                "it was issued by {}, not {}",
                identity.issuer, self.config.issuer
            )));
        }
        if !session::audience_has(&claims, &self.config.client_id) {
            return Err(LoginFailure::Token(format!(
                "its audience is not {}",
                self.config.client_id
            )));
        }
        if claims.get("nonce").and_then(|n| n.as_str()) != Some(pending.nonce.as_str()) {
            return Err(LoginFailure::Token(
                "its nonce is not the one of this login".into(),
            ));
        }
        self.admits(&identity)?;
        Ok(identity)
    }
}

/// The ID token of a token response, or why there is none.
fn id_token(status: http::StatusCode, body: &[u8]) -> Result<String, LoginFailure> {
    #[derive(Deserialize)]
    struct TokenResponse {
        #[serde(default)]
        id_token: Option<String>,
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        error_description: Option<String>,
    }
    let parsed: Option<TokenResponse> = serde_json::from_slice(body).ok();
    match parsed {
        Some(TokenResponse {
            id_token: Some(token),
            ..
        }) if status.is_success() => Ok(token),
        Some(TokenResponse {
            error: Some(error),
            error_description,
            ..
        }) => Err(LoginFailure::Exchange(
            format!(
                "{status}: {error} {}",
                error_description.unwrap_or_default()
            )
            .trim()
            .to_owned(),
        )),
        Some(_) if status.is_success() => Err(LoginFailure::Exchange(
            "the answer has no id_token (is the scope openid granted?)".into(),
        )),
        _ => Err(LoginFailure::Exchange(format!(
            "{status}, with no OAuth 2.0 answer"
        ))),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use clap::Parser;

    use super::*;
    use crate::jwt::{JwtMetrics, JwtOptions, parse_authenticators};

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        sso: DashboardSsoArgs,
    }

    pub(crate) fn flags(args: &[&str]) -> DashboardSsoArgs {
        Flags::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .expect("flags")
            .sso
    }

    pub(crate) fn authenticators(issuers: &[&str]) -> Authenticators {
        let configs: Vec<serde_json::Value> = issuers
            .iter()
            .map(|url| {
                serde_json::json!({
                    "issuer": {
                        "url": url,
                        "audiences": ["jumpstarter-cli", "dashboard"],
                        "audienceMatchPolicy": "MatchAny",
                    },
                    "claimMappings": {"username": {"claim": "preferred_username", "prefix": "sso:"}},
                })
            })
            .collect();
        let configs = parse_authenticators(&configs).expect("configs");
        Authenticators::new(configs, JwtOptions::default(), &JwtMetrics::default())
            .expect("authenticators")
    }

    fn error(result: Result<Option<DashboardSso>, DashboardError>) -> String {
        result.expect_err("refused").to_string()
    }

    const LOCAL: Option<&str> = Some("http://127.0.0.1:8084");

    #[test]
    fn without_a_client_id_there_is_no_single_sign_on() {
        let resolved = DashboardSso::resolve(&flags(&[]), None, None).expect("resolved");
        assert!(resolved.is_none());
    }

    #[test]
    fn single_sign_on_resolves_against_the_only_issuer() {
        let jwt = authenticators(&["https://idp.example"]);
        let sso = DashboardSso::resolve(
            &flags(&[
                "--dashboard-oidc-client-id",
                "dashboard",
                "--dashboard-admin",
                "sso:alice, sso:bob",
                "--dashboard-oidc-scopes",
                "profile,groups,openid",
            ]),
            LOCAL.map(str::to_owned),
            Some(&jwt),
        )
        .expect("resolved")
        .expect("configured");
        assert_eq!(sso.issuer, "https://idp.example");
        assert_eq!(sso.redirect_uri, "http://127.0.0.1:8084/oidc/callback");
        assert_eq!(sso.base_path, "");
        assert_eq!(sso.scopes, ["openid", "profile", "groups"]);
        assert_eq!(sso.admins, ["sso:alice", "sso:bob"]);
        assert!(sso.client_secret.is_none());
        // An explicit URL wins (its trailing slash dropped).
        let sso = DashboardSso::resolve(
            &flags(&[
                "--dashboard-oidc-client-id",
                "dashboard",
                "--dashboard-url",
                "https://lab.example/",
            ]),
            None,
            Some(&jwt),
        )
        .expect("resolved")
        .expect("configured");
        assert_eq!(sso.redirect_uri, "https://lab.example/oidc/callback");
        assert_eq!(sso.base_path, "");
        // Under a path prefix (an ingress serving it at /lab): the callback and the base
        // of redirects and cookies are under it.
        let sso = DashboardSso::resolve(
            &flags(&[
                "--dashboard-oidc-client-id",
                "dashboard",
                "--dashboard-url",
                "https://tools.example/lab/",
            ]),
            None,
            Some(&jwt),
        )
        .expect("resolved")
        .expect("configured");
        assert_eq!(sso.redirect_uri, "https://tools.example/lab/oidc/callback");
        assert_eq!(sso.base_path, "/lab");
    }

    #[test]
    fn a_configuration_that_cannot_work_is_refused_with_the_fix() {
        let client = ["--dashboard-oidc-client-id", "dashboard"];
        let one = authenticators(&["https://idp.example"]);
        let two = authenticators(&["https://a.example", "https://b.example"]);
        let default_url = || LOCAL.map(str::to_owned);
        assert!(
            error(DashboardSso::resolve(&flags(&client), default_url(), None))
                .contains("configure a JWT authenticator")
        );
        assert!(
            error(DashboardSso::resolve(
                &flags(&client),
                default_url(),
                Some(&two)
            ))
            .contains("choose one with --dashboard-oidc-issuer")
        );
        let chosen = DashboardSso::resolve(
            &flags(&[
                client[0],
                client[1],
                "--dashboard-oidc-issuer",
                "https://b.example",
            ]),
            default_url(),
            Some(&two),
        );
        assert_eq!(
            chosen.expect("ok").expect("some").issuer,
            "https://b.example"
        );
        assert!(
            error(DashboardSso::resolve(
                &flags(&[
                    client[0],
                    client[1],
                    "--dashboard-oidc-issuer",
                    "https://c.example"
                ]),
                default_url(),
                Some(&two),
            ))
            .contains("is not a configured JWT issuer")
        );
        assert!(
            error(DashboardSso::resolve(
                &flags(&["--dashboard-oidc-client-id", "other"]),
                default_url(),
                Some(&one),
            ))
            .contains("add it to issuer.audiences")
        );
        assert!(
            error(DashboardSso::resolve(&flags(&client), None, Some(&one)))
                .contains("set --dashboard-url")
        );
        assert!(
            error(DashboardSso::resolve(
                &flags(&[client[0], client[1], "--dashboard-url", "ftp://lab"]),
                None,
                Some(&one),
            ))
            .contains("must be an http(s) URL")
        );
        assert!(
            error(DashboardSso::resolve(
                &flags(&[
                    client[0],
                    client[1],
                    "--dashboard-oidc-client-secret-file",
                    "/nonexistent/secret",
                ]),
                default_url(),
                Some(&one),
            ))
            .contains("read the client secret file /nonexistent/secret")
        );
    }

    fn identity(user: &str, groups: &[&str]) -> JwtIdentity {
        JwtIdentity {
            username: user.into(),
            uid: None,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            issuer: "https://idp.example".into(),
        }
    }

    /// Single sign-on with client `dashboard` and `args`, against `https://idp.example`.
    fn sso(args: &[&str]) -> Sso {
        sso_with(&authenticators(&["https://idp.example"]), args)
    }

    fn sso_with(jwt: &Authenticators, args: &[&str]) -> Sso {
        let mut all = vec!["--dashboard-oidc-client-id", "dashboard"];
        all.extend_from_slice(args);
        Sso::new(
            DashboardSso::resolve(&flags(&all), LOCAL.map(str::to_owned), Some(jwt))
                .expect("resolved")
                .expect("configured"),
        )
    }

    #[test]
    fn only_named_admins_and_admin_groups_may_act() {
        let sso = sso(&[
            "--dashboard-admin",
            "sso:alice",
            "--dashboard-admin-group",
            "sso:lab-admins",
        ]);
        let groups = |list: &[&str]| list.iter().map(|g| (*g).to_owned()).collect::<Vec<_>>();
        assert!(sso.is_admin("sso:alice", &[]));
        assert!(!sso.is_admin("sso:bob", &groups(&["sso:users"])));
        assert!(sso.is_admin("sso:carol", &groups(&["sso:users", "sso:lab-admins"])));
        assert!(!sso.is_admin("alice", &[]));
        // Without user groups, anyone the authenticator accepts may look.
        assert_eq!(sso.admits(&identity("sso:bob", &[])), Ok(()));
        // A session keeps only the groups the rules name.
        assert_eq!(
            sso.relevant_groups(&groups(&["sso:users", "sso:lab-admins", "x"])),
            ["sso:lab-admins"]
        );
    }

    #[test]
    fn user_groups_keep_everyone_else_out() {
        let sso = sso(&[
            "--dashboard-admin",
            "sso:alice",
            "--dashboard-user-group",
            "sso:lab,sso:ci",
        ]);
        assert_eq!(sso.admits(&identity("sso:bob", &["sso:ci"])), Ok(()));
        // The admins are always let in.
        assert_eq!(sso.admits(&identity("sso:alice", &[])), Ok(()));
        let refused = sso.admits(&identity("sso:eve", &["sso:guests"]));
        assert_eq!(
            refused.expect_err("refused").to_string(),
            "sso:eve may not use this dashboard: it is for the members of sso:lab, sso:ci."
        );
    }

    #[tokio::test]
    async fn an_unreachable_issuer_is_reported_and_not_asked_again_at_once() {
        // Nothing listens on port 1 of loopback: the connection is refused at once.
        let issuer = "https://127.0.0.1:1/dex";
        let configs = parse_authenticators(&[serde_json::json!({
            "issuer": {"url": issuer, "audiences": ["dashboard"]},
            "claimMappings": {"username": {"claim": "sub", "prefix": "-"}},
        })])
        .expect("configs");
        let metrics = JwtMetrics::default();
        let jwt = Authenticators::new(configs, JwtOptions::default(), &metrics).expect("jwt");
        let sso = sso_with(&jwt, &[]);
        let sealer = Sealer::new("a-dashboard-credential");
        for _ in 0..3 {
            let failure = sso
                .start(&sealer, OffsetDateTime::now_utc())
                .await
                .expect_err("unreachable");
            assert!(
                matches!(&failure, LoginFailure::Unreachable(m) if m.contains(issuer)),
                "{failure}"
            );
        }
        let attempts = metrics
            .fetches
            .get_or_create(&crate::jwt::FetchLabels {
                issuer: issuer.to_owned(),
                document: "discovery",
                result: "request",
            })
            .get();
        assert_eq!(attempts, 1, "three clicks, one discovery");
    }

    #[tokio::test]
    async fn a_return_without_this_browsers_login_is_refused_before_any_exchange() {
        let sso = sso(&[]);
        let sealer = Sealer::new("a-dashboard-credential");
        let now = OffsetDateTime::now_utc();
        let pending = Pending {
            state: "right".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            expires: (now + PENDING_TTL).unix_timestamp(),
        };
        let sealed = sealer.seal_pending(&pending);
        let callback = |state: &str| Callback {
            code: Some("c".into()),
            state: Some(state.into()),
            ..Callback::default()
        };
        // No cookie, a cookie of another login, another lab's cookie, an expired one: the
        // provider (unreachable here) is never asked.
        let expired = sealer.seal_pending(&Pending {
            expires: now.unix_timestamp() - 1,
            ..pending.clone()
        });
        let foreign = Sealer::new("another-credential").seal_pending(&pending);
        for (cookie, state) in [
            (None, "right"),
            (Some(sealed.as_str()), "wrong"),
            (Some(foreign.as_str()), "right"),
            (Some(expired.as_str()), "right"),
        ] {
            let refused = sso.finish(&sealer, &callback(state), cookie, now).await;
            assert_eq!(refused, Err(LoginFailure::NoPending), "{cookie:?} {state}");
        }
        // The provider's refusal is shown as it gave it.
        let refused = sso
            .finish(
                &sealer,
                &Callback {
                    state: Some("right".into()),
                    error: Some("access_denied".into()),
                    error_description: Some("The user said no.".into()),
                    ..Callback::default()
                },
                Some(&sealed),
                now,
            )
            .await;
        assert_eq!(
            refused,
            Err(LoginFailure::Refused(
                "access_denied The user said no.".into()
            ))
        );
    }

    #[test]
    fn a_token_response_yields_its_id_token_or_a_precise_error() {
        let ok = br#"{"access_token":"a","id_token":"i.d.t","token_type":"bearer"}"#;
        assert_eq!(id_token(http::StatusCode::OK, ok), Ok("i.d.t".into()));
        let refused =
            br#"{"error":"invalid_grant","error_description":"Invalid or expired code."}"#;
        assert_eq!(
            id_token(http::StatusCode::BAD_REQUEST, refused),
            Err(LoginFailure::Exchange(
                "400 Bad Request: invalid_grant Invalid or expired code.".into()
            ))
        );
        assert!(matches!(
            id_token(http::StatusCode::OK, br#"{"access_token":"a"}"#),
            Err(LoginFailure::Exchange(m)) if m.contains("no id_token")
        ));
        assert!(matches!(
            id_token(http::StatusCode::BAD_GATEWAY, b"<html>"),
            Err(LoginFailure::Exchange(m)) if m.starts_with("502")
        ));
    }
}
