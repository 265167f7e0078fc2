//! Workspaces (admin token) and rolling a workspace's keys (its secret key).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use herald_shared::model::KeyScope;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::{Admin, SecretKey};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::openapi::{ListOf, Refused};
use crate::paging::{list as list_body, page, Page};
use crate::schemas::{KeyScopeSchema, Name, WorkspaceSchema};
use crate::state::AppState;

/// `POST /v1/workspaces` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWorkspace {
    /// A name for people.
    #[schema(value_type = Name)]
    name: String,
}

/// A created workspace, with its keys (shown this once).
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedWorkspace {
    /// `ws_...`.
    id: String,
    /// The name, trimmed.
    name: String,
    /// Unix milliseconds.
    created_at: i64,
    /// `sk_...`: manages everything in the workspace.
    secret_key: String,
    /// `pk_...`: may only send events.
    publishable_key: String,
}

/// A rolled key: `secret_key` or `publishable_key`, whichever scope was rolled.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RolledKey {
    /// The new secret key, when `scope` was `secret`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    secret_key: Option<String>,
    /// The new publishable key, when `scope` was `publishable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    publishable_key: Option<String>,
}

/// Creates a workspace; its keys are shown this once.
#[utoipa::path(post, path = "/v1/workspaces", tag = "workspaces", request_body = NewWorkspace, responses((status = 201, description = "The workspace and its keys", body = CreatedWorkspace), Refused))]
pub async fn create(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<NewWorkspace>,
) -> Result<(StatusCode, Json<CreatedWorkspace>), ApiError> {
    herald_shared::model::check_name("name", &body.name, 200)?;
    let created = state.store.create_workspace(body.name.trim()).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWorkspace {
            id: created.workspace.id,
            name: created.workspace.name,
            created_at: created.workspace.created_at,
            secret_key: created.secret_key,
            publishable_key: created.publishable_key,
        }),
    ))
}

/// Lists workspaces, newest first.
#[utoipa::path(get, path = "/v1/workspaces", tag = "workspaces", params(Page), responses((status = 200, description = "A page of workspaces", body = ListOf<WorkspaceSchema>), Refused))]
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
    /// The key to replace.
    #[schema(value_type = KeyScopeSchema)]
    scope: KeyScope,
}

/// Replaces the workspace's key of a scope (`secret` or `publishable`); the old one stops
/// working at once.
#[utoipa::path(post, path = "/v1/keys/roll", tag = "workspaces", request_body = Roll, responses((status = 200, description = "The new key", body = RolledKey), Refused))]
pub async fn roll_key(
    State(state): State<AppState>,
    SecretKey(ws): SecretKey,
    ApiJson(body): ApiJson<Roll>,
) -> Result<Json<RolledKey>, ApiError> {
    let key = state.store.roll_key(&ws, body.scope).await?;
    state.keys.clear();
    Ok(Json(match body.scope {
        KeyScope::Secret => RolledKey {
            secret_key: Some(key),
            publishable_key: None,
        },
        KeyScope::Publishable => RolledKey {
            secret_key: None,
            publishable_key: Some(key),
        },
    }))
}
