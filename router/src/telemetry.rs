//! The plain-HTTP side listener: `/metrics` (Prometheus text format), `/healthz` (the
//! process runs) and `/readyz` (the router accepts streams and is not draining).
//!
//! [`Probe`] lets the process drop readiness before it stops serving: on SIGTERM the
//! binary marks it draining, so load balancers take the router out of rotation while the
//! streams already on their way still pair.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// What `/readyz` answers: the router's own readiness, unless the process is draining.
#[derive(Debug, Clone)]
pub struct Probe {
    readiness: Readiness,
    draining: Arc<AtomicBool>,
}

impl Probe {
    pub fn new(readiness: Readiness) -> Probe {
        Probe {
            readiness,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// From now on `/readyz` fails, whatever the router's state.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether `/readyz` succeeds.
    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed) && self.readiness.is_ready()
    }
}

impl From<Readiness> for Probe {
    fn from(readiness: Readiness) -> Probe {
        Probe::new(readiness)
    }
}

#[derive(Debug, Clone)]
struct Telemetry {
    registry: Arc<Registry>,
    probe: Probe,
}

/// Serves the telemetry endpoints on `listener` until `shutdown` completes.
pub async fn serve_telemetry(
    listener: TcpListener,
    registry: Arc<Registry>,
    probe: impl Into<Probe>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let probe = probe.into();
    let app = HttpRouter::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Telemetry { registry, probe });
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
    if telemetry.probe.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}
