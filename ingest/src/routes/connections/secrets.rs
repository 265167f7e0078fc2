//! A connection's signing secrets: read them (secret key only) and rotate them with a grace
//! period during which the old one still signs.

use axum::extract::{Path, State};
use axum::Json;
use herald_shared::model::connection::PreviousSecret;
use herald_shared::signing::generate_secret;
use serde::{Deserialize, Serialize};

use super::{load, validate};
use crate::auth::{Editor, SecretKey};
use crate::error::ApiError;
use crate::extract::OptionalJson;
use crate::openapi::Refused;
use crate::schemas::{PreviousSecretSchema, Secret};
use crate::state::AppState;

/// The signing secrets of a connection.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ConnectionSecret {
    /// The current `whsec_` secret.
    secret: String,
    /// Rotated-out secrets still in their grace period.
    #[schema(value_type = Vec<PreviousSecretSchema>)]
    previous_secrets: Vec<PreviousSecret>,
}

/// A rotated secret: the new one (shown this once) and when the old one stops signing.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RotatedSecret {
    /// The connection.
    id: String,
    /// The new `whsec_` secret.
    secret: String,
    /// Unix milliseconds after which the previous secret no longer signs.
    previous_secret_expires_at: i64,
}

/// The current signing secret (and any still in their grace period). Secret key only: a
/// portal session never reads a secret after it was created.
#[utoipa::path(get, path = "/v1/connections/{id}/secret", tag = "connections", params(("id" = String, Path, description = "Connection id")), responses((status = 200, description = "The current secret and those still in their grace period", body = ConnectionSecret), Refused))]
pub async fn secret(
    State(state): State<AppState>,
    SecretKey(ws): SecretKey,
    Path(id): Path<String>,
) -> Result<Json<ConnectionSecret>, ApiError> {
    let c = load(&state, &ws, &id).await?;
    let now = herald_shared::now_ms();
    let previous_secrets = c
        .previous_secrets
        .into_iter()
        .filter(|p| p.expires_at > now)
        .collect();
    Ok(Json(ConnectionSecret {
        secret: c.secret,
        previous_secrets,
    }))
}

/// `POST /v1/connections/{id}/rotate-secret` body (optional).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// The new signing secret; generated when left out.
    #[schema(value_type = Option<Secret>)]
    secret: Option<String>,
}

/// Makes a new signing secret; the old one keeps signing alongside it for the grace period
/// (`HERALD_SECRET_GRACE`, 24 h by default). The new secret is shown this once.
#[utoipa::path(post, path = "/v1/connections/{id}/rotate-secret", tag = "connections", params(("id" = String, Path, description = "Connection id")), request_body = Option<Rotate>, responses((status = 200, description = "The new secret", body = RotatedSecret), Refused))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    Editor(ws): Editor,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<Rotate>,
) -> Result<Json<RotatedSecret>, ApiError> {
    let mut c = load(&state, &ws, &id).await?;
    let now = herald_shared::now_ms();
    let expires_at = now + state.settings.secret_grace.as_millis() as i64;
    let old = std::mem::replace(&mut c.secret, body.secret.unwrap_or_else(generate_secret));
    c.previous_secrets.retain(|p| p.expires_at > now);
    c.previous_secrets.insert(
        0,
        PreviousSecret {
            secret: old,
            expires_at,
        },
    );
    c.previous_secrets.truncate(5);
    c.updated_at = now;
    validate(&state, &c)?;
    state.store.put_connection(&c).await?;
    Ok(Json(RotatedSecret {
        id: c.id,
        secret: c.secret,
        previous_secret_expires_at: expires_at,
    }))
}
