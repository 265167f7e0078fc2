//! Workspaces (admin token) and rolling a workspace's keys (its secret key).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use herald_shared::model::KeyScope;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{Admin, SecretKey};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::paging::{list as list_body, page, Page};
use crate::state::AppState;

/// `POST /v1/workspaces` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWorkspace {
    name: String,
}

/// Creates a workspace; its keys are shown this once.
#[utoipa::path(post, path = "/v1/workspaces", tag = "workspaces", request_body = NewWorkspace, responses((status = 201, description = "`{id, name, created_at, secret_key, publishable_key}`", body = serde_json::Value), (status = "4XX", description = "An error: `{\"error\": {code, message, field}}`", body = crate::openapi::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<NewWorkspace>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    herald_shared::model::check_name("name", &body.name, 200)?;
    let created = state.store.create_workspace(body.name.trim()).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": created.workspace.id,
            "name": created.workspace.name,
            "created_at": created.workspace.created_at,
            "secret_key": created.secret_key,
            "publishable_key": created.publishable_key,
        })),
    ))
}

/// Lists workspaces, newest first.
#[utoipa::path(get, path = "/v1/workspaces", tag = "workspaces", params(Page), responses((status = 200, description = "`{data, next_cursor}`", body = serde_json::Value), (status = "4XX", description = "An error: `{\"error\": {code, message, field}}`", body = crate::openapi::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _: Admin,
    ApiQuery(q): ApiQuery<Page>,
) -> Result<Json<Value>, ApiError> {
    let (limit, cursor) = page(q.limit, q.cursor.as_deref())?;
    let (data, next) = state.store.list_workspaces(cursor, limit).await?;
    Ok(list_body(data, next))
}

/// `POST /v1/keys/roll` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Roll {
    #[schema(value_type = String, example = "secret")]
    scope: KeyScope,
}

/// Replaces the workspace's key of a scope (`secret` or `publishable`); the old one stops
/// working at once.
#[utoipa::path(post, path = "/v1/keys/roll", tag = "workspaces", request_body = Roll, responses((status = 200, description = "`{secret_key}` or `{publishable_key}`", body = serde_json::Value), (status = "4XX", description = "An error: `{\"error\": {code, message, field}}`", body = crate::openapi::ErrorBody)))]
pub async fn roll_key(
    State(state): State<AppState>,
    SecretKey(ws): SecretKey,
    ApiJson(body): ApiJson<Roll>,
) -> Result<Json<Value>, ApiError> {
    let key = state.store.roll_key(&ws, body.scope).await?;
    state.keys.clear();
    let name = match body.scope {
        KeyScope::Secret => "secret_key",
        KeyScope::Publishable => "publishable_key",
    };
    Ok(Json(json!({ name: key })))
}
