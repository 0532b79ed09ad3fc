//! JWT authenticators as jumpstarter 0.9.0 configures them (`authentication.jwt`): tokens
//! from external OIDC issuers (Dex, Keycloak, a Kubernetes cluster's service-account
//! issuer) verified against the issuer's published keys and mapped to a username.
//!
//! - [`config`]: the Kubernetes structured-authentication `JWTAuthenticator` entries,
//!   parsed strictly ([`parse_authenticators`]).
//! - [`Authenticators`]: the union of the configured issuers; a token goes to the one whose
//!   `issuer.url` equals its `iss`.
//! - `verify`: the claim checks and mappings (pure); `keys`: JWKS keys and signatures;
//!   `fetch`: discovery and JWKS over HTTPS; `trust`: the roots of those fetches;
//!   `issuer`: one issuer's key cache and refetch rule.
//!
//! Tokens are never logged.

pub mod config;
mod fetch;
mod issuer;
mod keys;
mod trust;
mod verify;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;

pub use config::{JwtAuthenticatorConfig, JwtConfigError, parse_authenticators};
pub use fetch::FetchError;
pub use verify::{JwtError, JwtIdentity};

use issuer::IssuerAuthenticator;
use verify::Unverified;

/// Timing and size bounds of the issuers' document fetches.
#[derive(Debug, Clone, Copy)]
pub struct JwtOptions {
    /// One fetch, connect to last byte.
    pub fetch_timeout: Duration,
    /// The least time between two fetches of one issuer's keys: a token naming an unknown
    /// key cannot make the controller hammer the issuer.
    pub refetch_interval: time::Duration,
    /// The largest discovery document or key set accepted.
    pub max_document_bytes: usize,
}

impl Default for JwtOptions {
    fn default() -> JwtOptions {
        JwtOptions {
            // A calling client waits for the fetch; gRPC clients' own deadlines are longer.
            fetch_timeout: Duration::from_secs(10),
            // As the refetch guard of other OIDC verifiers: new keys are picked up within
            // seconds, and one bad token per interval costs one fetch at most.
            refetch_interval: time::Duration::seconds(10),
            // Key sets are a few KiB; 1 MiB leaves room and refuses anything else.
            max_document_bytes: 1 << 20,
        }
    }
}

/// Label set of the fetch counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    /// The issuer URL (a configured value: bounded cardinality).
    pub issuer: String,
    /// `discovery` or `jwks`.
    pub document: &'static str,
    /// `ok` or the [`FetchError::reason`].
    pub result: &'static str,
}

/// Metrics of the JWT authenticators.
#[derive(Debug, Default)]
pub struct JwtMetrics {
    /// Fetches of discovery documents and key sets, by issuer, document and result.
    pub fetches: Family<FetchLabels, Counter>,
}

impl JwtMetrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &mut Registry) -> JwtMetrics {
        let metrics = JwtMetrics::default();
        registry.register(
            "jumpstarter_controller_jwt_fetches",
            "Fetches of JWT issuers' discovery documents and key sets, by issuer, document and result",
            metrics.fetches.clone(),
        );
        metrics
    }
}

/// Where a browser logs in with an issuer (authorization-code flow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginEndpoints {
    /// The `authorization_endpoint`.
    pub authorization: String,
    /// The `token_endpoint`.
    pub token: String,
}

/// The configured JWT authenticators (0.9.0's fail-on-error union: the token's issuer
/// picks one; its error is final).
#[derive(Debug, Clone)]
pub struct Authenticators {
    issuers: Arc<Vec<IssuerAuthenticator>>,
}

impl Authenticators {
    /// Builds the authenticators of validated configurations. Reads the
    /// `certificateAuthority` files once: a missing or unparsable one is an error naming
    /// its field (`jwt[i].issuer.certificateAuthority`). No network access.
    pub fn new(
        configs: Vec<JwtAuthenticatorConfig>,
        options: JwtOptions,
        metrics: &JwtMetrics,
    ) -> Result<Authenticators, JwtConfigError> {
        let mut issuers = Vec::with_capacity(configs.len());
        for (index, config) in configs.into_iter().enumerate() {
            let ca = config::set(&config.issuer.certificate_authority);
            let trust = trust::Trust::new(ca).map_err(|message| JwtConfigError::Invalid {
                path: format!("jwt[{index}].issuer.certificateAuthority"),
                value: ca.unwrap_or_default().chars().take(200).collect(),
                message,
            })?;
            issuers.push(IssuerAuthenticator::new(
                config,
                trust,
                options,
                metrics.fetches.clone(),
            ));
        }
        Ok(Authenticators {
            issuers: Arc::new(issuers),
        })
    }

    /// No authenticator configured.
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// The configured issuers, in configuration order.
    pub fn configs(&self) -> impl Iterator<Item = &JwtAuthenticatorConfig> {
        self.issuers.iter().map(|issuer| &issuer.config)
    }

    /// Authenticates a bearer token. `Ok(None)`: no configured issuer is the token's `iss`
    /// (or it is no JWT at all), so another authenticator may take it; `Err`: the issuer's
    /// authenticator refused it (or could not fetch keys: [`JwtError::is_unavailable`]).
    pub async fn authenticate(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<Option<JwtIdentity>, JwtError> {
        let Some(token) = Unverified::parse(token) else {
            return Ok(None);
        };
        let Some(issuer) = token.issuer() else {
            return Ok(None);
        };
        let Some(authenticator) = self
            .issuers
            .iter()
            .find(|authenticator| authenticator.config.issuer.url == issuer)
        else {
            return Ok(None);
        };
        authenticator.authenticate(&token, now).await.map(Some)
    }

    /// Like [`Authenticators::authenticate`], with the verified claims of the token too
    /// (the dashboard's login checks its `nonce` and `aud` in them).
    pub async fn authenticate_with_claims(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<Option<(JwtIdentity, serde_json::Map<String, serde_json::Value>)>, JwtError> {
        let Some(token) = Unverified::parse(token) else {
            return Ok(None);
        };
        let Some(authenticator) = self.issuer(token.issuer().unwrap_or_default()) else {
            return Ok(None);
        };
        let identity = authenticator.authenticate(&token, now).await?;
        Ok(Some((identity, token.claims)))
    }

    /// Where browsers log in with the issuer `url` and where codes are exchanged, from its
    /// discovery document (fetched now, through the issuer's configured trust).
    pub async fn login_endpoints(&self, url: &str) -> Result<LoginEndpoints, FetchError> {
        let discovery = self.configured(url)?.discover().await?;
        let endpoint = |value: Option<String>, field: &str| {
            value
                .filter(|v| v.starts_with("https://"))
                .ok_or_else(|| FetchError::Document {
                    url: url.into(),
                    message: format!("the discovery document has no https {field}"),
                })
        };
        Ok(LoginEndpoints {
            authorization: endpoint(discovery.authorization_endpoint, "authorization_endpoint")?,
            token: endpoint(discovery.token_endpoint, "token_endpoint")?,
        })
    }

    /// A form POST (an OAuth 2.0 token request) to `endpoint` of the issuer `url`, through
    /// the issuer's configured trust; `basic` is the already-encoded Basic credential.
    pub async fn post_form(
        &self,
        url: &str,
        endpoint: &str,
        form: String,
        basic: Option<String>,
    ) -> Result<(http::StatusCode, hyper::body::Bytes), FetchError> {
        self.configured(url)?.post_form(endpoint, form, basic).await
    }

    /// The authenticator of `url`, or the error of a fetch for an issuer not configured.
    fn configured(&self, url: &str) -> Result<&IssuerAuthenticator, FetchError> {
        self.issuer(url).ok_or_else(|| FetchError::Document {
            url: url.into(),
            message: "not a configured issuer".into(),
        })
    }

    fn issuer(&self, url: &str) -> Option<&IssuerAuthenticator> {
        self.issuers
            .iter()
            .find(|authenticator| authenticator.config.issuer.url == url)
    }

    /// Fetches every issuer's keys now (at start, so that the first logins do not wait);
    /// failures are logged and counted, and retried on use.
    pub async fn prefetch(&self, now: OffsetDateTime) {
        futures::future::join_all(self.issuers.iter().map(|issuer| issuer.prefetch(now))).await;
    }
}
