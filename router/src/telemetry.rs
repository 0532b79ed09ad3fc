//! The plain-HTTP side listener: `/metrics` (Prometheus text format), `/healthz` (the
//! process runs) and `/readyz` (the router accepts streams).

use std::future::Future;
use std::sync::Arc;

use axum::Router as HttpRouter;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::server::Readiness;

/// Content type of the Prometheus text exposition format that prometheus-client writes.
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone)]
struct Telemetry {
    registry: Arc<Registry>,
    readiness: Readiness,
}

/// Serves the telemetry endpoints on `listener` until `shutdown` completes.
pub async fn serve_telemetry(
    listener: TcpListener,
    registry: Arc<Registry>,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = HttpRouter::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Telemetry {
            registry,
            readiness,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(telemetry): State<Telemetry>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &telemetry.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], body).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}

async fn ready(State(telemetry): State<Telemetry>) -> Response {
    if telemetry.readiness.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}
