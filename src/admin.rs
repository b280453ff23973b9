//! The admin listener: `/healthz`, `/readyz` and `/metrics`, on its own
//! address so probes and scrapers never share the proxy's port, auth or
//! limits.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::gate::Gate;
use crate::keys::KeyState;
use crate::metrics::Snapshot;

/// The admin router. Answers are gzipped for clients that ask (Prometheus
/// does): `/metrics` grows with routes × clients × statuses, and compresses
/// about tenfold.
pub fn app(gate: Arc<Gate>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(tower_http::compression::CompressionLayer::new())
        .with_state(gate)
}

async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    keys: Vec<KeyReport>,
}

#[derive(Serialize)]
struct KeyReport {
    name: String,
    fingerprint: Option<String>,
    state: &'static str,
}

async fn metrics(State(gate): State<Arc<Gate>>) -> Response {
    let runtime = gate.runtime();
    let now = Snapshot {
        in_flight: gate.in_flight(),
        shared_connected: runtime.limiters().shared_connected(),
        waiting: runtime.limiters().waiting(),
        cached: runtime.shares().cache_size(),
        joined: runtime.shares().joined(),
        available: runtime.limiters().available(),
        spans: (crate::telemetry::dropped(), crate::telemetry::exported()),
    };
    let text = gate.metrics.render(runtime.keys(), now);
    ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

/// 200 while serving with a value for every key; 503 otherwise. A key the
/// upstream rejects, or whose file went bad, fails readiness only with
/// `server.unready_on_rejected_key`: in a sidecar, readiness gates the whole
/// application pod, which taking out of service cures nothing.
async fn readyz(State(gate): State<Arc<Gate>>) -> Response {
    let runtime = gate.runtime();
    let keys: Vec<KeyReport> = runtime
        .keys()
        .iter()
        .map(|slot| KeyReport {
            name: slot.name().to_owned(),
            fingerprint: slot.current().map(|k| k.fingerprint().to_string()),
            state: slot.state().as_str(),
        })
        .collect();
    let strict = runtime.settings().server().unready_on_rejected_key;
    let ready = gate.is_serving()
        && runtime.keys().iter().all(|slot| match slot.state() {
            KeyState::Loaded => true,
            KeyState::Missing => false,
            KeyState::Stale | KeyState::Rejected => !strict,
        });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Readiness { ready, keys })).into_response()
}
