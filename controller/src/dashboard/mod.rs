//! The lab dashboard: which exporters are free, who holds the rest, how long the line is.
//!
//! Served by the controller process from the same watch-fed copies the gRPC services read
//! ([`ReadCache`]), so it costs the store nothing per page view. Routes:
//! - `GET /`: the page (exporters with counts, leases, clients; `?selector=` filters the
//!   exporters with `jmp`'s label selector syntax). Plain HTML tables that work without
//!   JavaScript; with it, the page follows `GET /events` and refreshes its tables in place.
//! - `GET /events`: server-sent events, one `change` whenever exporters, leases or clients
//!   change (checked every [`CHANGE_POLL`]).
//! - `POST /login`, `GET /logout`: the admin credential (a bearer token held in a file) in
//!   an HttpOnly, SameSite=Strict cookie; `Authorization: Bearer` works too. Every other
//!   route needs it.
//! - `POST /leases/{name}/end`, `POST /exporters/{name}/disable|enable`: admin actions,
//!   only when enabled ([`DashboardConfig::actions`]), each logged with who and from where.
//! - `GET /healthz`.
//!
//! [`model`] builds what the page shows; `templates/dashboard.html` prints it.

pub(crate) mod model;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;

use crate::crd::{Client, Exporter, Lease};
use crate::server::http::Peer;
use crate::service::cache::ReadCache;
use crate::service::write::{Part, modify_cached};
use crate::store::Store;

/// How often the copies are checked for changes to announce: a change shows within 2 s.
pub const CHANGE_POLL: Duration = Duration::from_millis(500);
/// The cookie that carries the admin credential.
const COOKIE: &str = "jumpstarter_dashboard";

/// What the dashboard serves and who may see it.
#[derive(Clone)]
pub struct DashboardConfig {
    /// The namespace shown.
    pub namespace: String,
    /// The admin credential (compared in constant time).
    pub token: Arc<str>,
    /// Whether the admin actions (end a lease, disable an exporter) are offered.
    pub actions: bool,
    /// Served over TLS: the cookie is marked `Secure`.
    pub tls: bool,
}

impl std::fmt::Debug for DashboardConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardConfig")
            .field("namespace", &self.namespace)
            .field("token", &"<redacted>")
            .field("actions", &self.actions)
            .field("tls", &self.tls)
            .finish()
    }
}

struct App<S> {
    cache: Arc<ReadCache<S>>,
    config: DashboardConfig,
    changes: watch::Receiver<u64>,
}

type Shared<S> = Arc<App<S>>;

/// The dashboard routes over `cache`; announces changes until `shutdown`.
pub(crate) fn routes<S: Store>(
    cache: Arc<ReadCache<S>>,
    config: DashboardConfig,
    shutdown: CancellationToken,
) -> axum::Router {
    let (tx, changes) = watch::channel(0);
    tokio::spawn(watch_changes(
        cache.clone(),
        config.namespace.clone(),
        tx,
        shutdown,
    ));
    let app = Arc::new(App {
        cache,
        config,
        changes,
    });
    axum::Router::new()
        .route("/", get(page::<S>))
        .route("/events", get(events::<S>))
        .route("/login", post(login::<S>))
        .route("/logout", get(logout))
        .route("/leases/{name}/end", post(end_lease::<S>))
        .route("/exporters/{name}/{action}", post(set_enabled::<S>))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(app)
}

/// Publishes a fingerprint of the namespace's exporters, leases and clients whenever it
/// changes.
async fn watch_changes<S: Store>(
    cache: Arc<ReadCache<S>>,
    namespace: String,
    tx: watch::Sender<u64>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(CHANGE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if tx.receiver_count() == 0 {
            continue;
        }
        let mut hasher = DefaultHasher::new();
        fingerprint::<_, Exporter>(&cache, &namespace, &mut hasher).await;
        fingerprint::<_, Lease>(&cache, &namespace, &mut hasher).await;
        fingerprint::<_, Client>(&cache, &namespace, &mut hasher).await;
        let print = hasher.finish();
        tx.send_if_modified(|current| {
            let changed = *current != print;
            *current = print;
            changed
        });
    }
}

async fn fingerprint<S: Store, K: crate::service::cache::Cached>(
    cache: &ReadCache<S>,
    namespace: &str,
    hasher: &mut DefaultHasher,
) {
    for object in cache.list::<K>(namespace).await.unwrap_or_default() {
        let meta = object.meta();
        (&meta.name, &meta.resource_version).hash(hasher);
    }
}

/// Whether the request carries the admin credential (cookie or bearer header).
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value);
    bearer
        .into_iter()
        .chain(cookie)
        .any(|given| same(given.trim().as_bytes(), token.as_bytes()))
}

/// Constant-time equality (for equal lengths; lengths are not secret).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct PageTemplate<'a> {
    page: &'a model::Overview,
    actions: bool,
    fragment: bool,
}

#[derive(Template)]
#[template(path = "dashboard_login.html")]
struct LoginTemplate<'a> {
    error: &'a str,
}

fn login_page(status: StatusCode, error: &str) -> Response {
    let body = LoginTemplate { error }
        .render()
        .unwrap_or_else(|e| format!("template error: {e}"));
    (status, Html(body)).into_response()
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    #[serde(default)]
    selector: String,
}

async fn page<S: Store>(
    State(app): State<Shared<S>>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    if !authorized(&headers, &app.config.token) {
        return login_page(StatusCode::UNAUTHORIZED, "");
    }
    let namespace = &app.config.namespace;
    let (exporters, leases, clients) = match tokio::try_join!(
        app.cache.list::<Exporter>(namespace),
        app.cache.list::<Lease>(namespace),
        app.cache.list::<Client>(namespace),
    ) {
        Ok(lists) => lists,
        Err(error) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the store cannot be read: {error}"),
            )
                .into_response();
        }
    };
    let page = model::overview(
        namespace,
        &exporters.iter().map(Arc::as_ref).collect::<Vec<_>>(),
        &leases.iter().map(Arc::as_ref).collect::<Vec<_>>(),
        &clients.iter().map(Arc::as_ref).collect::<Vec<_>>(),
        &query.selector,
        OffsetDateTime::now_utc(),
    );
    let fragment = headers.contains_key("x-fragment");
    match (PageTemplate {
        page: &page,
        actions: app.config.actions,
        fragment,
    })
    .render()
    {
        Ok(body) => ([(header::CACHE_CONTROL, "no-store")], Html(body)).into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("template error: {error}"),
        )
            .into_response(),
    }
}

async fn events<S: Store>(State(app): State<Shared<S>>, headers: HeaderMap) -> Response {
    if !authorized(&headers, &app.config.token) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut changes = app.changes.clone();
    changes.mark_unchanged();
    let stream = WatchStream::from_changes(changes).map(|print| {
        Ok::<_, std::convert::Infallible>(Event::default().event("change").data(print.to_string()))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
}

async fn login<S: Store>(
    State(app): State<Shared<S>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    Form(form): Form<LoginForm>,
) -> Response {
    let token = form.token.trim();
    if !same(token.as_bytes(), app.config.token.as_bytes()) {
        tracing::warn!(%peer, "dashboard login refused: wrong credential");
        return login_page(
            StatusCode::UNAUTHORIZED,
            "That is not the dashboard credential.",
        );
    }
    tracing::info!(%peer, "dashboard login");
    let secure = if app.config.tls { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

async fn logout() -> Response {
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

/// Refuses an action unless actions are on and the request is authorized.
fn action_refused<S>(app: &App<S>, headers: &HeaderMap) -> Option<Response> {
    if !authorized(headers, &app.config.token) {
        return Some(StatusCode::UNAUTHORIZED.into_response());
    }
    if !app.config.actions {
        return Some(
            (
                StatusCode::FORBIDDEN,
                "admin actions are off on this dashboard",
            )
                .into_response(),
        );
    }
    None
}

async fn end_lease<S: Store>(
    State(app): State<Shared<S>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Some(refused) = action_refused(&app, &headers) {
        return refused;
    }
    let namespace = &app.config.namespace;
    let result = modify_cached::<_, Lease, _>(&app.cache, namespace, &name, Part::Object, |l| {
        let ended = l.status.as_ref().is_some_and(|s| s.ended);
        let release = l.spec.release == Some(true);
        l.spec.release = Some(true);
        !ended && !release
    })
    .await;
    outcome(result.map(|_| ()), "end lease", &name, peer)
}

async fn set_enabled<S: Store>(
    State(app): State<Shared<S>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    if let Some(refused) = action_refused(&app, &headers) {
        return refused;
    }
    let enabled = match action.as_str() {
        "enable" => true,
        "disable" => false,
        _ => return (StatusCode::NOT_FOUND, "no such action").into_response(),
    };
    let namespace = &app.config.namespace;
    let result = modify_cached::<_, Exporter, _>(&app.cache, namespace, &name, Part::Object, |e| {
        let changed = e.spec.enabled.unwrap_or(true) != enabled;
        e.spec.enabled = Some(enabled);
        changed
    })
    .await;
    outcome(
        result.map(|_| ()),
        &format!("{action} exporter"),
        &name,
        peer,
    )
}

fn outcome(
    result: Result<(), crate::store::StoreError>,
    action: &str,
    name: &str,
    peer: SocketAddr,
) -> Response {
    match result {
        Ok(()) => {
            tracing::info!(who = "dashboard admin", %peer, action, object = name, "dashboard action");
            Redirect::to("/").into_response()
        }
        Err(error) => {
            tracing::warn!(who = "dashboard admin", %peer, action, object = name, %error, "dashboard action failed");
            (StatusCode::CONFLICT, format!("{action} {name}: {error}")).into_response()
        }
    }
}

/// The shortest credential accepted from a token file.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why the dashboard cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("read the dashboard token file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the dashboard token file {path} holds {len} characters; at least {MIN_TOKEN_LEN} are needed"
    )]
    Short { path: String, len: usize },
}

/// The credential in `path` (surrounding whitespace ignored).
pub fn read_token(path: &std::path::Path) -> Result<Arc<str>, DashboardError> {
    let text = std::fs::read_to_string(path).map_err(|source| DashboardError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_LEN || token.contains(char::is_whitespace) {
        return Err(DashboardError::Short {
            path: path.display().to_string(),
            len: token.len(),
        });
    }
    Ok(Arc::from(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_comes_from_a_bearer_header_or_the_cookie() {
        let mut headers = HeaderMap::new();
        assert!(!authorized(&headers, "s3cret"));
        headers.insert(
            header::COOKIE,
            "a=b; jumpstarter_dashboard=s3cret".parse().unwrap(),
        );
        assert!(authorized(&headers, "s3cret"));
        assert!(!authorized(&headers, "other"));
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorized(&headers, "s3cret"));
        assert!(!authorized(&headers, "s3cret2"));
    }
}
