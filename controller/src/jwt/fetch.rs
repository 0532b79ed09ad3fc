//! HTTPS fetches of an issuer's OpenID discovery document and JWKS key set: bounded in time
//! and size, TLS verified against the issuer's [`super::trust`] roots, no redirects.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;

/// Why an issuer's documents could not be fetched. Worth a retry: the issuer, the network
/// or the CA file may recover.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("issuer certificate authority {path}: {message}")]
    CertificateAuthority { path: String, message: String },
    #[error("{0}")]
    SystemRoots(String),
    #[error("GET {url}: {message}")]
    Request { url: String, message: String },
    #[error("GET {url}: no answer within {seconds} s")]
    Timeout { url: String, seconds: u64 },
    #[error("GET {url}: {status}")]
    Status { url: String, status: String },
    #[error("GET {url}: document larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url}: {message}")]
    Document { url: String, message: String },
    /// The discovery document names another issuer (go-oidc's text).
    #[error(
        "oidc: issuer did not match the issuer returned by provider, expected {expected:?} got {got:?}"
    )]
    IssuerMismatch { expected: String, got: String },
}

impl FetchError {
    /// A stable, low-cardinality label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::CertificateAuthority { .. } => "certificate_authority",
            FetchError::SystemRoots(_) => "system_roots",
            FetchError::Request { .. } => "request",
            FetchError::Timeout { .. } => "timeout",
            FetchError::Status { .. } => "status",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::Document { .. } => "document",
            FetchError::IssuerMismatch { .. } => "issuer_mismatch",
        }
    }
}

/// Bounds of one fetch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The whole request, connect to last byte.
    pub(crate) timeout: Duration,
    /// Discovery documents and key sets are a few KiB; this leaves room for large key sets
    /// and refuses a misconfigured URL serving something else.
    pub(crate) max_bytes: usize,
}

/// The fields of a discovery document this service uses.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Discovery {
    pub(crate) issuer: String,
    pub(crate) jwks_uri: String,
    /// Where browsers are sent to log in (the authorization-code flow of the dashboard).
    #[serde(default)]
    pub(crate) authorization_endpoint: Option<String>,
    /// Where an authorization code is exchanged for tokens.
    #[serde(default)]
    pub(crate) token_endpoint: Option<String>,
}

/// Fetches and checks a discovery document. Its `issuer` must equal `expected_issuer`
/// unless `discoveryURL` was configured (go-oidc then takes the configured URL as is).
pub(crate) async fn discovery(
    url: &str,
    expected_issuer: &str,
    check_issuer: bool,
    roots: Arc<RootCertStore>,
    limits: Limits,
) -> Result<Discovery, FetchError> {
    let body = get(url, roots, limits).await?;
    let document: Discovery = serde_json::from_slice(&body).map_err(|e| FetchError::Document {
        url: url.into(),
        message: format!("not an OpenID discovery document: {e}"),
    })?;
    if check_issuer && document.issuer != expected_issuer {
        return Err(FetchError::IssuerMismatch {
            expected: expected_issuer.into(),
            got: document.issuer,
        });
    }
    if !document.jwks_uri.starts_with("https://") {
        return Err(FetchError::Document {
            url: url.into(),
            message: format!("jwks_uri {:?} is not an https URL", document.jwks_uri),
        });
    }
    Ok(document)
}

/// GET of a JSON document over HTTPS: its body when the answer is `200 OK`.
pub(crate) async fn get(
    url: &str,
    roots: Arc<RootCertStore>,
    limits: Limits,
) -> Result<Bytes, FetchError> {
    let request = |uri: http::Uri| {
        http::Request::get(uri)
            // Key sets are `application/jwk-set+json` for some issuers (the Kubernetes API
            // server answers 406 to a request that accepts only `application/json`).
            .header(
                http::header::ACCEPT,
                "application/json, application/jwk-set+json",
            )
            .body(Full::new(Bytes::new()))
    };
    let (status, body) = send(url, roots, limits, request).await?;
    if status != http::StatusCode::OK {
        return Err(FetchError::Status {
            url: url.into(),
            status: status.to_string(),
        });
    }
    Ok(body)
}

/// POST of a form (`application/x-www-form-urlencoded`) over HTTPS, as OAuth 2.0 token
/// requests are made, with HTTP Basic credentials when given: the status and body of the
/// answer, whatever the status (an OAuth error is a JSON body with a 400).
pub(crate) async fn post_form(
    url: &str,
    roots: Arc<RootCertStore>,
    limits: Limits,
    form: String,
    basic: Option<String>,
) -> Result<(http::StatusCode, Bytes), FetchError> {
    let request = |uri: http::Uri| {
        let mut request = http::Request::post(uri)
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
        if let Some(basic) = &basic {
            request = request.header(http::header::AUTHORIZATION, format!("Basic {basic}"));
        }
        request.body(Full::new(Bytes::from(form.clone())))
    };
    send(url, roots, limits, request).await
}

/// One HTTPS exchange with the request `build` makes for the parsed `url`: bounded in time
/// (connect to last byte) and body size, TLS verified against `roots`, no redirects.
async fn send(
    url: &str,
    roots: Arc<RootCertStore>,
    limits: Limits,
    build: impl FnOnce(http::Uri) -> Result<http::Request<Full<Bytes>>, http::Error>,
) -> Result<(http::StatusCode, Bytes), FetchError> {
    let request_error = |message: String| FetchError::Request {
        url: url.into(),
        message,
    };
    let uri: http::Uri = url.parse().map_err(|e| request_error(format!("{e}")))?;
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| request_error(format!("TLS configuration: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let request = build(uri).map_err(|e| request_error(e.to_string()))?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| {
            // hyper's own text is only "client error (Connect)": add the causes.
            request_error(jumpstarter_shell::error_chain::error_chain(&e))
        })?;
        let status = response.status();
        let body = Limited::new(response.into_body(), limits.max_bytes)
            .collect()
            .await
            .map(|body| body.to_bytes())
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    FetchError::TooLarge {
                        url: url.into(),
                        limit: limits.max_bytes,
                    }
                } else {
                    request_error(e.to_string())
                }
            })?;
        Ok((status, body))
    };
    tokio::time::timeout(limits.timeout, exchange)
        .await
        .map_err(|_| FetchError::Timeout {
            url: url.into(),
            seconds: limits.timeout.as_secs(),
        })?
}
