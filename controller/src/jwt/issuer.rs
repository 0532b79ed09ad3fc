//! One configured issuer: its key set, fetched on first use and again when a token names a
//! key it does not have (at most once per refetch interval), and the checks of a token.
//!
//! Tokens are verified against the cached keys without waiting for any fetch; only a first
//! use or an unknown `kid` waits for one, and concurrent callers share it.

use std::sync::{Arc, RwLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use time::OffsetDateTime;

use super::config::{JwtAuthenticatorConfig, set};
use super::fetch::{self, FetchError, Limits};
use super::keys::{KeySet, SignatureCheck};
use super::trust::Trust;
use super::verify::{self, JwtError, JwtIdentity, Unverified};
use super::{FetchLabels, JwtOptions};

/// The authenticator of one `issuer.url`.
#[derive(Debug)]
pub(crate) struct IssuerAuthenticator {
    pub(crate) config: JwtAuthenticatorConfig,
    /// Where the discovery document is.
    discovery_url: String,
    /// The keys tokens are checked against; `None` until the first successful fetch.
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Serializes fetches; holds what they need between attempts.
    refresh: tokio::sync::Mutex<Refresh>,
    options: JwtOptions,
    fetches: Family<FetchLabels, Counter>,
}

#[derive(Debug)]
struct Refresh {
    trust: Trust,
    /// From the last discovery; cleared when a key fetch fails, so that the next attempt
    /// discovers again (the issuer may have moved its keys).
    jwks_uri: Option<String>,
    last_attempt: Option<OffsetDateTime>,
    last_error: Option<FetchError>,
}

impl IssuerAuthenticator {
    pub(crate) fn new(
        config: JwtAuthenticatorConfig,
        trust: Trust,
        options: JwtOptions,
        fetches: Family<FetchLabels, Counter>,
    ) -> IssuerAuthenticator {
        let discovery_url = match set(&config.issuer.discovery_url) {
            Some(url) => url.to_owned(),
            None => format!(
                "{}/.well-known/openid-configuration",
                config.issuer.url.trim_end_matches('/')
            ),
        };
        IssuerAuthenticator {
            config,
            discovery_url,
            keys: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(Refresh {
                trust,
                jwks_uri: None,
                last_attempt: None,
                last_error: None,
            }),
            options,
            fetches,
        }
    }

    /// Verifies a token whose unverified `iss` is this issuer's URL.
    pub(crate) async fn authenticate(
        &self,
        token: &Unverified<'_>,
        now: OffsetDateTime,
    ) -> Result<JwtIdentity, JwtError> {
        let alg = verify::before_signature(&self.config, token, now)?;
        let kid = token.kid.as_deref();
        let keys = match self.cached() {
            Some(keys) => keys,
            None => self.refetch(None, now).await.map_err(JwtError::Fetch)?,
        };
        match keys.check(token.raw, alg, kid) {
            SignatureCheck::Verified => {}
            SignatureCheck::Invalid => return Err(JwtError::BadSignature),
            SignatureCheck::NoMatchingKey => {
                let fresh = self
                    .refetch(Some(&keys), now)
                    .await
                    .map_err(JwtError::Fetch)?;
                if Arc::ptr_eq(&fresh, &keys)
                    || fresh.check(token.raw, alg, kid) != SignatureCheck::Verified
                {
                    return Err(JwtError::BadSignature);
                }
            }
        }
        verify::identity(&self.config, &token.claims)
    }

    /// Fetches the keys now unless that is not needed or not allowed yet.
    pub(crate) async fn prefetch(&self, now: OffsetDateTime) -> Result<(), FetchError> {
        self.refetch(None, now).await.map(|_| ())
    }

    /// The issuer's discovery document, fetched now (for the browser login's endpoints).
    pub(crate) async fn discover(&self) -> Result<fetch::Discovery, FetchError> {
        let roots = self.refresh.lock().await.trust.roots().await?;
        let discovery = fetch::discovery(
            &self.discovery_url,
            &self.config.issuer.url,
            set(&self.config.issuer.discovery_url).is_none(),
            roots,
            self.limits(),
        )
        .await;
        self.count("discovery", &discovery);
        discovery
    }

    /// A form POST to one of the issuer's endpoints, trusting the issuer's roots.
    pub(crate) async fn post_form(
        &self,
        url: &str,
        form: String,
        basic: Option<String>,
    ) -> Result<(http::StatusCode, hyper::body::Bytes), FetchError> {
        let roots = self.refresh.lock().await.trust.roots().await?;
        fetch::post_form(url, roots, self.limits(), form, basic).await
    }

    fn limits(&self) -> Limits {
        Limits {
            timeout: self.options.fetch_timeout,
            max_bytes: self.options.max_document_bytes,
        }
    }

    fn cached(&self) -> Option<Arc<KeySet>> {
        // A poisoned lock only means a panic elsewhere while swapping an Arc: the value is
        // still a whole key set.
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// New keys, unless `seen` is already outdated (another caller fetched meanwhile) or
    /// the last attempt was less than the refetch interval ago: then the current keys (or
    /// the last attempt's error when there are none).
    async fn refetch(
        &self,
        seen: Option<&Arc<KeySet>>,
        now: OffsetDateTime,
    ) -> Result<Arc<KeySet>, FetchError> {
        let mut refresh = self.refresh.lock().await;
        let current = self.cached();
        if let Some(current) = &current
            && seen.is_none_or(|seen| !Arc::ptr_eq(seen, current))
        {
            return Ok(current.clone());
        }
        let recent = refresh.last_attempt.is_some_and(|last| {
            // A clock that went back does not block fetches.
            last <= now && now - last < self.options.refetch_interval
        });
        if recent {
            return match (current, &refresh.last_error) {
                (Some(current), _) => Ok(current),
                (None, Some(error)) => Err(error.clone()),
                (None, None) => Err(FetchError::Document {
                    url: self.discovery_url.clone(),
                    message: "no keys fetched yet".into(),
                }),
            };
        }
        refresh.last_attempt = Some(now);
        match self.fetch(&mut refresh).await {
            Ok(keys) => {
                refresh.last_error = None;
                let keys = Arc::new(keys);
                *self
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(keys.clone());
                Ok(keys)
            }
            Err(error) => {
                tracing::warn!(issuer = %self.config.issuer.url, %error, "cannot fetch the issuer's signing keys");
                refresh.jwks_uri = None;
                refresh.last_error = Some(error.clone());
                Err(error)
            }
        }
    }

    async fn fetch(&self, refresh: &mut Refresh) -> Result<KeySet, FetchError> {
        let roots = refresh.trust.roots().await?;
        let limits = self.limits();
        let jwks_uri = match &refresh.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let discovery = fetch::discovery(
                    &self.discovery_url,
                    &self.config.issuer.url,
                    set(&self.config.issuer.discovery_url).is_none(),
                    roots.clone(),
                    limits,
                )
                .await;
                self.count("discovery", &discovery);
                let uri = discovery?.jwks_uri;
                refresh.jwks_uri = Some(uri.clone());
                uri
            }
        };
        let body = fetch::get(&jwks_uri, roots, limits).await;
        let keys = body.and_then(|body| {
            KeySet::from_jwks(&body).map_err(|message| FetchError::Document {
                url: jwks_uri.clone(),
                message,
            })
        });
        self.count("jwks", &keys);
        let (keys, skipped) = keys?;
        tracing::info!(
            issuer = %self.config.issuer.url,
            keys = keys.len(),
            skipped,
            "fetched the issuer's signing keys"
        );
        Ok(keys)
    }

    fn count<T>(&self, document: &'static str, result: &Result<T, FetchError>) {
        self.fetches
            .get_or_create(&FetchLabels {
                issuer: self.config.issuer.url.clone(),
                document,
                result: match result {
                    Ok(_) => "ok",
                    Err(error) => error.reason(),
                },
            })
            .inc();
    }
}
