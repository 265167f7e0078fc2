//! `/healthz`, `/readyz`, `/metrics`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use crate::app::AppState;

/// The process is up.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// The broker and Redis are reachable.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    herald_shared::ops::readiness(&state.broker, &state.store).await
}

/// Prometheus text.
pub async fn metrics() -> String {
    herald_shared::telemetry::metrics().render()
}
