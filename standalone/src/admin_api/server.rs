//! The admin API server: [`Admin`] over the service's store, on a Unix socket.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path as UrlPath, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Router, middleware};
use jumpstarter_controller::admin::{Admin, AdminError, Kind, LeaseOrder, Manifest};
use jumpstarter_controller::store::{Store, StoreError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use super::peer::{self, CredentialListener, Peer, PeerCheck};
use super::{ApplyRequest, CreateRequest, ErrorBody, NAMESPACE_HEADER};

/// Binds the socket at `path`, readable and writable by the owner only. A file left at
/// `path` by an earlier run is replaced: the caller holds the data directory's lock, so no
/// other service can be using it.
pub(crate) fn bind(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    // Bind under a temporary name and rename once restricted, so the socket is never
    // reachable with looser permissions.
    let staging = path.with_extension("sock.new");
    for stale in [&staging, &path.to_path_buf()] {
        match std::fs::remove_file(stale) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let listener = UnixListener::bind(&staging)?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&staging, path)?;
    Ok(listener)
}

/// Serves the admin API on `listener` until `shutdown`, to the peers `check` admits.
pub(crate) async fn serve<S: Store>(
    listener: UnixListener,
    admin: Admin<S>,
    check: PeerCheck,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let app = Router::new()
        .route("/v1/apply", post(apply::<S>))
        .route("/v1/{kind}", get(list::<S>).post(create::<S>))
        .route("/v1/{kind}/{name}", get(get_one::<S>).delete(delete::<S>))
        .with_state(Arc::new(admin))
        .layer(middleware::from_fn_with_state(Arc::new(check), peer::check));
    axum::serve(
        CredentialListener(listener),
        app.into_make_service_with_connect_info::<Peer>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}

type Shared<S> = State<Arc<Admin<S>>>;

async fn create<S: Store>(
    State(admin): Shared<S>,
    UrlPath(kind): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refusal) = check_namespace(&admin, &headers) {
        return refusal;
    }
    match Kind::parse(&kind) {
        Some(Kind::Client) => match parse_body::<CreateRequest>(&body) {
            Ok(request) => respond(
                admin
                    .create_client_for(&request.name, &request.labels, request.username.as_deref())
                    .await,
                StatusCode::CREATED,
            ),
            Err(refusal) => *refusal,
        },
        Some(Kind::Exporter) => match parse_body::<CreateRequest>(&body) {
            Ok(request) => respond(
                admin
                    .create_exporter_for(
                        &request.name,
                        &request.labels,
                        request.username.as_deref(),
                    )
                    .await,
                StatusCode::CREATED,
            ),
            Err(refusal) => *refusal,
        },
        Some(Kind::Lease) => match parse_body::<LeaseOrder>(&body) {
            Ok(order) => respond(admin.create_lease(&order).await, StatusCode::CREATED),
            Err(refusal) => *refusal,
        },
        Some(Kind::Policy) => failure(
            StatusCode::BAD_REQUEST,
            "access policies are created and changed with `jumpstarter admin apply -f FILE`"
                .to_owned(),
        ),
        None => unknown_kind(&kind),
    }
}

/// Applies a manifest in the service's namespace, the only one it serves: a document naming
/// another is refused with the rest.
async fn apply<S: Store>(State(admin): Shared<S>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refusal) = check_namespace(&admin, &headers) {
        return refusal;
    }
    let request = match parse_body::<ApplyRequest>(&body) {
        Ok(request) => request,
        Err(refusal) => return *refusal,
    };
    let applied = match Manifest::parse(&request.manifest, admin.namespace(), true) {
        Ok(manifest) => admin.apply(&manifest).await,
        Err(e) => Err(e),
    };
    respond(applied, StatusCode::OK)
}

/// A JSON request body, or the refusal to answer (boxed: a response is large).
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(failure(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}"),
        ))
    })
}

async fn list<S: Store>(on: Admitted<S>) -> Response {
    respond(on.admin.list(on.kind).await, StatusCode::OK)
}

async fn get_one<S: Store>(on: Admitted<S>, UrlPath(target): UrlPath<Target>) -> Response {
    respond(on.admin.get(on.kind, &target.name).await, StatusCode::OK)
}

async fn delete<S: Store>(on: Admitted<S>, UrlPath(target): UrlPath<Target>) -> Response {
    match on.admin.delete(on.kind, &target.name).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => admin_failure(&e),
    }
}

/// The path of one object: `/v1/{kind}/{name}`.
#[derive(Deserialize)]
struct Target {
    name: String,
}

/// A request this service answers: about its own namespace (checked first) and a known
/// kind (the path's `{kind}`); the refusal otherwise.
struct Admitted<S: Store> {
    admin: Arc<Admin<S>>,
    kind: Kind,
}

impl<S: Store> FromRequestParts<Arc<Admin<S>>> for Admitted<S> {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        admin: &Arc<Admin<S>>,
    ) -> Result<Self, Response> {
        if let Some(refusal) = check_namespace(admin, &parts.headers) {
            return Err(refusal);
        }
        let UrlPath(params) = UrlPath::<HashMap<String, String>>::from_request_parts(parts, admin)
            .await
            .map_err(IntoResponse::into_response)?;
        let kind = params.get("kind").map(String::as_str).unwrap_or_default();
        match Kind::parse(kind) {
            Some(kind) => Ok(Admitted {
                admin: Arc::clone(admin),
                kind,
            }),
            None => Err(unknown_kind(kind)),
        }
    }
}

/// The refusal of a request about a namespace this service does not serve.
fn check_namespace<S: Store>(admin: &Admin<S>, headers: &HeaderMap) -> Option<Response> {
    let asked = headers.get(NAMESPACE_HEADER)?.to_str().unwrap_or_default();
    if asked == admin.namespace() {
        return None;
    }
    Some(failure(
        StatusCode::BAD_REQUEST,
        format!(
            "this service serves namespace {:?}, not {asked:?} (start it with `--namespace {asked}` to serve that one)",
            admin.namespace()
        ),
    ))
}

fn respond<T: Serialize>(result: Result<T, AdminError>, status: StatusCode) -> Response {
    match result {
        Ok(value) => match serde_json::to_vec(&value) {
            Ok(body) => {
                (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
            }
            Err(e) => failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the response: {e}"),
            ),
        },
        Err(e) => admin_failure(&e),
    }
}

fn admin_failure(error: &AdminError) -> Response {
    let status = match error {
        AdminError::InvalidName { .. }
        | AdminError::InvalidLabel { .. }
        | AdminError::InvalidUsername { .. }
        | AdminError::InvalidLease(_)
        | AdminError::InvalidManifest { .. }
        | AdminError::EmptyManifest => StatusCode::BAD_REQUEST,
        AdminError::AlreadyExists { .. } => StatusCode::CONFLICT,
        AdminError::NotFound { .. } => StatusCode::NOT_FOUND,
        AdminError::CredentialTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        AdminError::Store { source, .. } if matches!(**source, StoreError::Unavailable(_)) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    failure(status, error.to_string())
}

fn unknown_kind(kind: &str) -> Response {
    failure(
        StatusCode::NOT_FOUND,
        format!("unknown kind {kind:?}: use clients, exporters, leases or policies"),
    )
}

fn failure(status: StatusCode, error: String) -> Response {
    let body = serde_json::to_vec(&ErrorBody { error }).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
