//! The lab dashboard: which exporters are free, who holds the rest, how long the line is.
//!
//! Served by the controller process from the same watch-fed copies the gRPC services read
//! ([`ReadCache`]), so it costs the store nothing per page view. Routes:
//! - `GET /`: the page (exporters with counts, leases, clients; `?selector=` filters the
//!   exporters with `jmp`'s label selector syntax). Plain HTML tables that work without
//!   JavaScript; with it, the page follows `GET /events` and refreshes its tables in place.
//! - `GET /events`: server-sent events, one `change` whenever exporters, leases or clients
//!   change (checked every [`CHANGE_POLL`]).
//! - `POST /login`, `GET /logout`: log in with the admin credential (a token held in a
//!   file); `Authorization: Bearer <credential>` works too, without a session.
//! - `GET /oidc/login`, `GET /oidc/callback`: single sign-on with an identity provider the
//!   controller trusts, when configured ([`sso`]); users who log in so see the dashboard,
//!   and those named admins may take the actions.
//! - Logins are sessions sealed into an HttpOnly, SameSite=Lax cookie ([`session`]) that
//!   last [`DashboardConfig::session_ttl`]; every other route needs one.
//! - `POST /leases/{name}/end`, `POST /exporters/{name}/disable|enable`: admin actions,
//!   only when enabled ([`DashboardConfig::actions`]) and for admins, each logged with who
//!   and from where.
//! - `GET /healthz`.
//!
//! [`model`] builds what the page shows; `templates/dashboard.html` prints it.

pub(crate) mod model;
mod session;
pub mod sso;

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
use session::{Sealer, Session, Via};
pub use sso::DashboardSso;
use sso::Sso;

/// How often the copies are checked for changes to announce: a change shows within 2 s.
pub const CHANGE_POLL: Duration = Duration::from_millis(500);
/// The cookie that carries the session.
const COOKIE: &str = "jumpstarter_dashboard";
/// The cookie that carries a single sign-on under way (path `/oidc`).
const PENDING_COOKIE: &str = "jumpstarter_dashboard_oidc";

/// What the dashboard serves and who may see it.
#[derive(Clone)]
pub struct DashboardConfig {
    /// The namespace shown.
    pub namespace: String,
    /// The admin credential (compared in constant time).
    pub token: Arc<str>,
    /// Whether the admin actions (end a lease, disable an exporter) are offered.
    pub actions: bool,
    /// Browsers reach it over HTTPS (served so, or behind an ingress that ends TLS): its
    /// cookies are marked `Secure`.
    pub tls: bool,
    /// Single sign-on, when configured.
    pub sso: Option<DashboardSso>,
    /// How long a login lasts.
    pub session_ttl: time::Duration,
}

impl std::fmt::Debug for DashboardConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardConfig")
            .field("namespace", &self.namespace)
            .field("token", &"<redacted>")
            .field("actions", &self.actions)
            .field("tls", &self.tls)
            .field("sso", &self.sso)
            .field("session_ttl", &self.session_ttl)
            .finish()
    }
}

struct App<S> {
    cache: Arc<ReadCache<S>>,
    config: DashboardConfig,
    changes: watch::Receiver<u64>,
    sealer: Sealer,
    sso: Option<Sso>,
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
    let sealer = Sealer::new(&config.token);
    let sso = config.sso.clone().map(Sso::new);
    let app = Arc::new(App {
        cache,
        config,
        changes,
        sealer,
        sso,
    });
    axum::Router::new()
        .route("/", get(page::<S>))
        .route("/events", get(events::<S>))
        .route("/login", post(login::<S>))
        .route("/logout", get(logout::<S>))
        .route("/oidc/login", get(sso_login::<S>))
        .route(sso::CALLBACK_PATH, get(sso_callback::<S>))
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

/// Who is looking at the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Viewer {
    user: String,
    /// May take the admin actions (when they are on).
    admin: bool,
}

/// The value of cookie `name` in the request.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

impl<S> App<S> {
    /// The viewer the request authenticates: a session cookie, or the admin credential as
    /// a bearer token.
    fn viewer(&self, headers: &HeaderMap) -> Option<Viewer> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if bearer.is_some_and(|given| same(given.trim().as_bytes(), self.config.token.as_bytes())) {
            return Some(Viewer {
                user: session::TOKEN_USER.to_owned(),
                admin: true,
            });
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let session = self.sealer.open_session(cookie(headers, COOKIE)?, now)?;
        let admin = match session.via {
            Via::Token => true,
            // A session of single sign-on outlives a configuration without it: refused.
            Via::Sso => match &self.sso {
                Some(sso) => sso.is_admin(&session.user, &session.groups),
                None => return None,
            },
        };
        Some(Viewer {
            user: session.user,
            admin,
        })
    }

    /// The `Set-Cookie` value of a new session for `user`, a member of `groups`.
    fn session_cookie(&self, user: String, via: Via, groups: Vec<String>) -> String {
        let expires = OffsetDateTime::now_utc() + self.config.session_ttl;
        let value = self.sealer.seal_session(&Session {
            user,
            via,
            groups,
            expires: expires.unix_timestamp(),
        });
        self.set_cookie(COOKIE, &value, "/", self.config.session_ttl.whole_seconds())
    }

    /// A `Set-Cookie` value: `name=value` under `path` of the dashboard's base, HttpOnly and
    /// SameSite=Lax, Secure over HTTPS; `max_age` 0 clears it.
    fn set_cookie(&self, name: &str, value: &str, path: &str, max_age: i64) -> String {
        format!(
            "{name}={value}; Path={}{path}; HttpOnly; SameSite=Lax; Max-Age={max_age}{}",
            self.base(),
            if self.config.tls { "; Secure" } else { "" }
        )
    }

    /// The path browsers reach the dashboard under (see [`DashboardSso::base_path`]):
    /// empty unless single sign-on names a URL with a path.
    fn base(&self) -> &str {
        self.config.sso.as_ref().map_or("", |sso| &sso.base_path)
    }

    /// Back to the dashboard's page.
    fn home(&self) -> Redirect {
        Redirect::to(&format!("{}/", self.base()))
    }
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
    user: &'a str,
}

#[derive(Template)]
#[template(path = "dashboard_login.html")]
struct LoginTemplate<'a> {
    error: &'a str,
    /// The issuer of single sign-on, when it is offered.
    sso: Option<&'a str>,
    /// The dashboard's root relative to the page's path (`""` or `"../"`): its links stay
    /// right behind an ingress that serves it under a path.
    base: &'a str,
}

/// The dashboard's root relative to the single sign-on routes (`/oidc/…`).
const FROM_OIDC: &str = "../";

impl<S> App<S> {
    /// The login page, for a route `base` away from the dashboard's root.
    fn login_page(&self, status: StatusCode, error: &str, base: &str) -> Response {
        let body = LoginTemplate {
            error,
            sso: self.sso.as_ref().map(|s| s.config.issuer.as_str()),
            base,
        }
        .render()
        .unwrap_or_else(|e| format!("template error: {e}"));
        (status, Html(body)).into_response()
    }
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
    let Some(viewer) = app.viewer(&headers) else {
        return app.login_page(StatusCode::UNAUTHORIZED, "", "");
    };
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
        actions: app.config.actions && viewer.admin,
        fragment,
        user: &viewer.user,
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
    if app.viewer(&headers).is_none() {
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
        return app.login_page(
            StatusCode::UNAUTHORIZED,
            "That is not the dashboard credential.",
            "",
        );
    }
    tracing::info!(%peer, user = session::TOKEN_USER, "dashboard login");
    let cookie = app.session_cookie(session::TOKEN_USER.to_owned(), Via::Token, Vec::new());
    ([(header::SET_COOKIE, cookie)], app.home()).into_response()
}

async fn logout<S: Store>(State(app): State<Shared<S>>) -> Response {
    let cookie = app.set_cookie(COOKIE, "", "/", 0);
    ([(header::SET_COOKIE, cookie)], app.home()).into_response()
}

/// Sends the browser to the identity provider.
async fn sso_login<S: Store>(
    State(app): State<Shared<S>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
) -> Response {
    let Some(sso) = &app.sso else {
        return (StatusCode::NOT_FOUND, "single sign-on is not configured").into_response();
    };
    match sso.start(&app.sealer, OffsetDateTime::now_utc()).await {
        Ok((url, pending)) => {
            let cookie = app.set_cookie(
                PENDING_COOKIE,
                &pending,
                "/oidc",
                sso::PENDING_TTL.whole_seconds(),
            );
            (
                StatusCode::SEE_OTHER,
                [
                    (header::SET_COOKIE, cookie),
                    (header::LOCATION, url),
                    (header::CACHE_CONTROL, "no-store".to_owned()),
                ],
            )
                .into_response()
        }
        Err(failure) => {
            tracing::warn!(%peer, reason = failure.reason(), error = %failure, "dashboard single sign-on cannot start");
            app.login_page(StatusCode::BAD_GATEWAY, &failure.to_string(), FROM_OIDC)
        }
    }
}

/// The identity provider's return: logs the user in, or says why not.
async fn sso_callback<S: Store>(
    State(app): State<Shared<S>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    Query(callback): Query<sso::Callback>,
) -> Response {
    let Some(sso) = &app.sso else {
        return (StatusCode::NOT_FOUND, "single sign-on is not configured").into_response();
    };
    let clear_pending = app.set_cookie(PENDING_COOKIE, "", "/oidc", 0);
    let pending = cookie(&headers, PENDING_COOKIE);
    match sso
        .finish(&app.sealer, &callback, pending, OffsetDateTime::now_utc())
        .await
    {
        Ok(identity) => {
            let admin = sso.is_admin(&identity.username, &identity.groups);
            tracing::info!(%peer, user = %identity.username, issuer = %identity.issuer, admin, "dashboard login");
            let groups = sso.relevant_groups(&identity.groups);
            let session = app.session_cookie(identity.username, Via::Sso, groups);
            let mut response = app.home().into_response();
            let cookies = response.headers_mut();
            for value in [session, clear_pending] {
                if let Ok(value) = value.parse() {
                    cookies.append(header::SET_COOKIE, value);
                }
            }
            response
        }
        Err(failure) => {
            tracing::warn!(%peer, reason = failure.reason(), error = %failure, "dashboard single sign-on refused");
            let mut response =
                app.login_page(StatusCode::UNAUTHORIZED, &failure.to_string(), FROM_OIDC);
            if let Ok(value) = clear_pending.parse() {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            response
        }
    }
}

/// The admin taking an action, or the refusal: actions must be on and the viewer an
/// admin.
fn actor<S>(app: &App<S>, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let Some(viewer) = app.viewer(headers) else {
        return Err(Box::new(StatusCode::UNAUTHORIZED.into_response()));
    };
    if !app.config.actions {
        return Err(Box::new(
            (
                StatusCode::FORBIDDEN,
                "admin actions are off on this dashboard",
            )
                .into_response(),
        ));
    }
    if !viewer.admin {
        tracing::warn!(user = %viewer.user, "dashboard action refused: not an admin");
        return Err(Box::new((
            StatusCode::FORBIDDEN,
            format!(
                "{} may only look: admin actions are for the dashboard admins (--dashboard-admin)",
                viewer.user
            ),
        )
            .into_response()));
    }
    Ok(viewer.user)
}

async fn end_lease<S: Store>(
    State(app): State<Shared<S>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let who = match actor(&app, &headers) {
        Ok(who) => who,
        Err(refused) => return *refused,
    };
    let namespace = &app.config.namespace;
    let result = modify_cached::<_, Lease, _>(&app.cache, namespace, &name, Part::Object, |l| {
        let ended = l.status.as_ref().is_some_and(|s| s.ended);
        let release = l.spec.release == Some(true);
        l.spec.release = Some(true);
        !ended && !release
    })
    .await;
    outcome(&app, result.map(|_| ()), "end lease", &name, &who, peer)
}

async fn set_enabled<S: Store>(
    State(app): State<Shared<S>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let who = match actor(&app, &headers) {
        Ok(who) => who,
        Err(refused) => return *refused,
    };
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
        &app,
        result.map(|_| ()),
        &format!("{action} exporter"),
        &name,
        &who,
        peer,
    )
}

fn outcome<S>(
    app: &App<S>,
    result: Result<(), crate::store::StoreError>,
    action: &str,
    name: &str,
    who: &str,
    peer: SocketAddr,
) -> Response {
    match result {
        Ok(()) => {
            tracing::info!(%who, %peer, action, object = name, "dashboard action");
            app.home().into_response()
        }
        Err(error) => {
            tracing::warn!(%who, %peer, action, object = name, %error, "dashboard action failed");
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
    /// Single sign-on is configured in a way that cannot work.
    #[error("dashboard single sign-on: {0}")]
    Sso(String),
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
    fn cookies_are_found_by_name() {
        let mut headers = HeaderMap::new();
        assert_eq!(cookie(&headers, COOKIE), None);
        headers.insert(
            header::COOKIE,
            "a=b; jumpstarter_dashboard=v.t; jumpstarter_dashboard_oidc=p.q"
                .parse()
                .unwrap(),
        );
        assert_eq!(cookie(&headers, COOKIE), Some("v.t"));
        assert_eq!(cookie(&headers, PENDING_COOKIE), Some("p.q"));
        assert_eq!(cookie(&headers, "jumpstarter"), None);
    }

    /// One HTTP/1.1 exchange with the dashboard at `addr`; the response's head, lowercased.
    async fn exchange(addr: SocketAddr, request: String) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_to_end(&mut response),
        )
        .await
        .expect("answered in time")
        .expect("read");
        let response = String::from_utf8_lossy(&response).to_lowercase();
        response
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    #[tokio::test]
    async fn under_a_path_prefix_redirects_and_cookies_stay_under_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::embedded::EmbeddedStore::open(&dir.path().join("state.redb"))
            .expect("store");
        let shutdown = CancellationToken::new();
        let cache = Arc::new(ReadCache::new(
            store,
            Arc::new(crate::service::metrics::ServiceMetrics::default()),
            shutdown.clone(),
        ));
        // An ingress serves the dashboard at https://tools.example/lab/, stripping /lab.
        let sso = DashboardSso::resolve(
            &sso::tests::flags(&[
                "--dashboard-oidc-client-id",
                "dashboard",
                "--dashboard-url",
                "https://tools.example/lab",
            ]),
            None,
            Some(&sso::tests::authenticators(&["https://idp.example"])),
        )
        .expect("resolved");
        let credential = "a-dashboard-credential";
        let config = DashboardConfig {
            namespace: "default".into(),
            token: Arc::from(credential),
            actions: true,
            tls: true,
            sso,
            session_ttl: time::Duration::hours(1),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(crate::server::http::serve(
            "dashboard",
            listener,
            None,
            routes(cache, config, shutdown.clone()),
            shutdown.clone(),
        ));

        let form = format!("token={credential}");
        let login = exchange(
            addr,
            format!(
                "POST /login HTTP/1.1\r\nhost: tools.example\r\nconnection: close\r\n\
                 content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{form}",
                form.len()
            ),
        )
        .await;
        assert!(login.contains("\r\nlocation: /lab/\r\n"), "{login}");
        assert!(login.contains("jumpstarter_dashboard="), "{login}");
        assert!(login.contains("; path=/lab/;"), "{login}");
        assert!(login.contains("; secure"), "{login}");

        let logout = exchange(
            addr,
            "GET /logout HTTP/1.1\r\nhost: tools.example\r\nconnection: close\r\n\r\n".into(),
        )
        .await;
        assert!(logout.contains("\r\nlocation: /lab/\r\n"), "{logout}");
        assert!(logout.contains("; path=/lab/;"), "{logout}");
        assert!(logout.contains("max-age=0"), "{logout}");

        shutdown.cancel();
        server.await.expect("join").expect("served");
    }
}
