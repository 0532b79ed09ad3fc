//! The login service of 0.9.0: what `jmp login [client@]host` asks before it logs in.
//!
//! - `GET /v1/auth/config`: [`LoginConfig`] as JSON — the controller's gRPC endpoint, a
//!   router endpoint, the namespace, the CA bundle (base64 of the PEM, which `jmp login`
//!   writes into `tls.ca`) and the identity providers users log in with (the JWT
//!   authenticators' issuers; the internal issuer is not one).
//! - `GET /`: a short HTML page saying how to log in; `GET /healthz`: `ok`.
//!
//! 0.9.0 serves it in plain HTTP and expects TLS to end at an ingress; here it is served
//! over TLS with the controller's serving certificate unless told otherwise
//! (`jmp login` fetches `https://host/v1/auth/config`).

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use base64::Engine as _;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::ServerError;

/// Client id `jmp login` uses with every identity provider (0.9.0's fixed value).
pub const CLI_CLIENT_ID: &str = "jumpstarter-cli";
/// ALPN of the login port: `jmp login` speaks HTTP/1.1 (aiohttp).
pub const ALPN: &[&[u8]] = &[b"http/1.1"];

/// The body of `GET /v1/auth/config` (0.9.0 field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginConfig {
    pub grpc_endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router_endpoint: Option<String>,
    pub namespace: String,
    /// Base64 of the CA bundle PEM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    pub oidc: Vec<LoginProvider>,
}

/// One identity provider users may log in with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginProvider {
    pub issuer: String,
    pub client_id: String,
    pub audiences: Vec<String>,
}

impl LoginConfig {
    /// The login configuration of a controller at `grpc_endpoint` serving `namespace`,
    /// trusted through `ca_pem`, with the identity providers `providers` as
    /// `(issuer, audiences)`.
    pub fn new(
        grpc_endpoint: &str,
        router_endpoint: Option<&str>,
        namespace: &str,
        ca_pem: Option<&str>,
        providers: impl IntoIterator<Item = (String, Vec<String>)>,
    ) -> LoginConfig {
        LoginConfig {
            grpc_endpoint: grpc_endpoint.to_owned(),
            router_endpoint: router_endpoint.map(str::to_owned),
            namespace: namespace.to_owned(),
            ca_bundle: ca_pem
                .filter(|pem| !pem.trim().is_empty())
                .map(|pem| base64::engine::general_purpose::STANDARD.encode(pem)),
            oidc: providers
                .into_iter()
                .filter(|(issuer, _)| issuer != jumpstarter_token::internal::DEFAULT_ISSUER)
                .map(|(issuer, audiences)| LoginProvider {
                    issuer,
                    client_id: CLI_CLIENT_ID.to_owned(),
                    audiences,
                })
                .collect(),
        }
    }
}

/// The login routes.
pub fn routes(config: Arc<LoginConfig>) -> axum::Router {
    let landing = landing_page(&config);
    // Serializing plain strings cannot fail.
    let body = serde_json::to_string(&*config).unwrap_or_default();
    axum::Router::new()
        .route(
            "/v1/auth/config",
            axum::routing::get(move || {
                let body = body.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body).into_response() }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/",
            axum::routing::get(move || {
                let landing = landing.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                        landing,
                    )
                        .into_response()
                }
            }),
        )
}

fn landing_page(config: &LoginConfig) -> String {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let providers = if config.oidc.is_empty() {
        "<p>No identity provider is configured: ask an administrator for a client configuration.</p>".to_owned()
    } else {
        let items: String = config
            .oidc
            .iter()
            .map(|p| format!("<li><code>{}</code></li>", escape(&p.issuer)))
            .collect();
        format!("<p>Identity providers:</p><ul>{items}</ul>")
    };
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Jumpstarter login</title></head>\
         <body><h1>Jumpstarter</h1><p>Log in with <code>jmp login &lt;client&gt;@&lt;this host&gt;</code>.</p>\
         <p>Controller: <code>{}</code>, namespace <code>{}</code>.</p>{providers}</body></html>",
        escape(&config.grpc_endpoint),
        escape(&config.namespace),
    )
}

/// Serves the login routes on `listener` until `shutdown`: over TLS with `tls` (ALPN
/// [`ALPN`]), or in plain HTTP when `tls` is `None` (behind a TLS-terminating ingress).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    config: Arc<LoginConfig>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    crate::server::http::serve("login service", listener, tls, routes(config), shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_json_has_the_0_9_0_shape() {
        let config = LoginConfig::new(
            "grpc.example.com:443",
            Some("router.example.com:443"),
            "lab",
            Some("-----BEGIN CERTIFICATE-----\n"),
            [
                (
                    "https://localhost:8085".to_owned(),
                    vec!["jumpstarter".to_owned()],
                ),
                (
                    "https://dex.example.com".to_owned(),
                    vec!["jumpstarter-cli".to_owned()],
                ),
            ],
        );
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "grpcEndpoint": "grpc.example.com:443",
                "routerEndpoint": "router.example.com:443",
                "namespace": "lab",
                "caBundle": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==",
                "oidc": [{"issuer": "https://dex.example.com", "clientId": "jumpstarter-cli", "audiences": ["jumpstarter-cli"]}],
            })
        );
        let bare = LoginConfig::new("g:1", None, "lab", None, []);
        let json = serde_json::to_value(&bare).unwrap();
        assert!(json.get("routerEndpoint").is_none() && json.get("caBundle").is_none());
        assert_eq!(json["oidc"], serde_json::json!([]));
    }

    #[test]
    fn landing_page_escapes() {
        let config = LoginConfig::new(
            "<g>:1",
            None,
            "lab",
            None,
            [("https://a&b".to_owned(), vec![])],
        );
        let page = landing_page(&config);
        assert!(
            page.contains("&lt;g&gt;:1") && page.contains("https://a&amp;b"),
            "{page}"
        );
    }
}
