//! A connection's health: the breaker changes deliverers reported and the recent success rate.

use axum::extract::{Path, State};
use axum::Json;
use herald_shared::store::health::BreakerChange;
use serde::Serialize;

use super::load;
use crate::auth::Reader;
use crate::error::ApiError;
use crate::openapi::Refused;
use crate::schemas::BreakerChangeSchema;
use crate::state::AppState;

/// A connection's health: its breakers and recent success rate.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ConnectionHealth {
    /// The connection.
    connection_id: String,
    /// Disabled connections get no new deliveries.
    enabled: bool,
    /// The latest breaker state: `closed` when no breaker ever opened, `open` or `half_open`.
    breaker: String,
    /// Breaker changes, newest first.
    #[schema(value_type = Vec<BreakerChangeSchema>)]
    breaker_changes: Vec<BreakerChange>,
    /// Successful attempts over all attempts, among the newest `window_events` events;
    /// `null` when there were none.
    success_rate: Option<f64>,
    /// Attempts counted.
    attempts: u64,
    /// Of those, how many got a 2xx or 3xx.
    succeeded: u64,
    /// Unix milliseconds of the latest attempt counted.
    last_attempt_at: Option<i64>,
    /// How many of the workspace's newest events were looked at.
    window_events: usize,
    /// The client certificate of mutual TLS, if any: when it expires and whether that is
    /// within 14 days.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_certificate: Option<CertificateHealth>,
}

/// A client certificate's expiry, as the health shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CertificateHealth {
    /// Its subject.
    subject: String,
    /// Its `notAfter`, Unix milliseconds.
    not_after: i64,
    /// Whole days left (negative once expired).
    expires_in_days: i64,
    /// Whether it expires within 14 days: renew it and `PATCH` the connection's `tls`.
    expiring_soon: bool,
}

/// The connection's circuit-breaker history as the deliverers reported it, newest first, and
/// the latest state (`closed` when no breaker ever opened), and the recent success rate.
#[utoipa::path(get, path = "/v1/connections/{id}/health", tag = "connections", params(("id" = String, Path, description = "Connection id")), responses((status = 200, description = "The breakers and the recent success rate", body = ConnectionHealth), Refused))]
pub async fn health(
    State(state): State<AppState>,
    Reader(ws): Reader,
    Path(id): Path<String>,
) -> Result<Json<ConnectionHealth>, ApiError> {
    health_of(&state, &ws, &id).await.map(Json)
}

/// How many of the workspace's newest events the success rate looks at.
const HEALTH_WINDOW_EVENTS: usize = 200;

/// A connection's breaker state and history, and the share of successful attempts among its
/// deliveries of the workspace's newest events (`null` when there were none).
pub async fn health_of(state: &AppState, ws: &str, id: &str) -> Result<ConnectionHealth, ApiError> {
    let c = load(state, ws, id).await?;
    let changes = state.store.breaker_changes(ws, &c.id).await?;
    let breaker = changes
        .first()
        .map_or("closed", |c| c.state.as_str())
        .to_string();
    let (events, _) = state
        .store
        .list_events(
            ws,
            &herald_shared::store::history::EventFilter::default(),
            None,
            HEALTH_WINDOW_EVENTS,
        )
        .await?;
    let (mut attempts, mut succeeded) = (0u64, 0u64);
    let mut last_attempt_at = None;
    for d in events
        .iter()
        .flat_map(|e| &e.deliveries)
        .filter(|d| d.connection_id == c.id)
    {
        for a in &d.attempts {
            attempts += 1;
            if a.status_code.is_some_and(|s| (200..400).contains(&s)) {
                succeeded += 1;
            }
            last_attempt_at = last_attempt_at.max(Some(a.at));
        }
    }
    let success_rate = (attempts > 0).then(|| succeeded as f64 / attempts as f64);
    let now = herald_shared::now_ms();
    let client_certificate = c.tls.as_ref().map(|t| CertificateHealth {
        subject: t.subject.clone(),
        not_after: t.not_after,
        expires_in_days: (t.not_after - now).div_euclid(86_400_000),
        expiring_soon: t.expiring_soon(now),
    });
    Ok(ConnectionHealth {
        connection_id: c.id,
        enabled: c.enabled,
        breaker,
        breaker_changes: changes,
        success_rate,
        attempts,
        succeeded,
        last_attempt_at,
        window_events: HEALTH_WINDOW_EVENTS,
        client_certificate,
    })
}
