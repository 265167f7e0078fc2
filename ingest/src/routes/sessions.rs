//! Portal sessions (minted by the SaaS backend with the workspace's secret key, refreshed by
//! the portal page) and the workspace's portal settings.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{not_null, ApiJson, ApiQuery, NoQuery, PortalSession, SecretKey};
use crate::sessions::{self, PortalSettings, Role, Session};

/// `POST /v1/sessions` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    /// `viewer` (read history) or `editor` (also manage connections, rules and secrets, send
    /// test events, replay).
    role: Role,
    /// The token's life in seconds, 5 to 3600; 900 by default.
    ttl_s: Option<u64>,
}

/// A minted session: the token is shown this once.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MintedSession {
    /// `sess_...`: a bearer token for this workspace's portal, with the session's role.
    token: String,
    /// The role.
    role: Role,
    /// The workspace.
    workspace_id: String,
    /// Unix milliseconds.
    expires_at: i64,
    /// Where to point the iframe, relative to Herald's address:
    /// `/portal/{workspace}/#session={token}`. The token is in the fragment, which browsers never
    /// send to a server, so no proxy or access log sees it.
    url: String,
}

fn minted(token: String, s: &Session) -> MintedSession {
    MintedSession {
        url: format!("/portal/{}/#session={token}", s.workspace_id),
        token,
        role: s.role,
        workspace_id: s.workspace_id.clone(),
        expires_at: s.expires_at,
    }
}

/// Mints a portal session for the workspace. Secret key only: the SaaS backend calls this and
/// puts the returned `url` in an iframe.
#[utoipa::path(post, path = "/v1/sessions", tag = "portal", request_body = NewSession,
    responses((status = 201, description = "The session", body = MintedSession),
        (status = "4XX", description = "An error", body = crate::openapi::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    SecretKey(ws): SecretKey,
    ApiJson(body): ApiJson<NewSession>,
) -> Result<(StatusCode, Json<MintedSession>), ApiError> {
    let ttl_s = body.ttl_s.unwrap_or(sessions::DEFAULT_TTL.as_secs());
    if !sessions::TTL_RANGE_S.contains(&ttl_s) {
        return Err(ApiError::field(
            "ttl_s",
            format!(
                "must be between {} and {} seconds",
                sessions::TTL_RANGE_S.start(),
                sessions::TTL_RANGE_S.end()
            ),
        ));
    }
    let now = herald_shared::now_ms();
    let ttl_ms = (ttl_s * 1000) as i64;
    let session = Session {
        workspace_id: ws,
        role: body.role,
        expires_at: now + ttl_ms,
        started_at: now,
        ttl_ms,
    };
    let token = sessions::create(&state.store, &session).await?;
    Ok((StatusCode::CREATED, Json(minted(token, &session))))
}

/// Exchanges a live session token for a new one with the same workspace, role and life. The
/// old token keeps working for 30 s, for requests already in flight. A chain of refreshes ends
/// 12 h after the first token was minted.
#[utoipa::path(post, path = "/v1/sessions/refresh", tag = "portal",
    responses((status = 200, description = "The new session", body = MintedSession),
        (status = "4XX", description = "An error", body = crate::openapi::ErrorBody)))]
pub async fn refresh(
    State(state): State<AppState>,
    PortalSession { token, session }: PortalSession,
) -> Result<Json<MintedSession>, ApiError> {
    let now = herald_shared::now_ms();
    let chain_end = session.started_at + sessions::MAX_CHAIN.as_millis() as i64;
    if now >= chain_end {
        return Err(ApiError::Unauthorized);
    }
    let next = Session {
        expires_at: (now + session.ttl_ms).min(chain_end),
        ..session
    };
    let new_token = sessions::create(&state.store, &next).await?;
    sessions::retire(&state.store, &token, sessions::REFRESH_OVERLAP).await?;
    Ok(Json(minted(new_token, &next)))
}

/// What the portal page needs to know about its own session.
#[utoipa::path(get, path = "/v1/sessions/current", tag = "portal",
    responses((status = 200, description = "`{workspace_id, role, expires_at, frame_ancestors}`", body = serde_json::Value),
        (status = "4XX", description = "An error", body = crate::openapi::ErrorBody)))]
pub async fn current(
    State(state): State<AppState>,
    PortalSession { session, .. }: PortalSession,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Json<Value>, ApiError> {
    let settings = sessions::settings(&state.store, &session.workspace_id).await?;
    Ok(Json(json!({
        "workspace_id": session.workspace_id,
        "role": session.role,
        "expires_at": session.expires_at,
        "frame_ancestors": settings.frame_ancestors,
    })))
}

/// The workspace's portal settings.
#[utoipa::path(get, path = "/v1/workspace/settings", tag = "portal",
    responses((status = 200, description = "The settings", body = PortalSettings),
        (status = "4XX", description = "An error", body = crate::openapi::ErrorBody)))]
pub async fn get_settings(
    State(state): State<AppState>,
    SecretKey(ws): SecretKey,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Json<PortalSettings>, ApiError> {
    Ok(Json(sessions::settings(&state.store, &ws).await?))
}

/// `PATCH /v1/workspace/settings` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    /// Origins that may frame the portal, e.g. `["https://app.example.com"]`; at most 16.
    #[serde(default, deserialize_with = "not_null")]
    frame_ancestors: Option<Vec<String>>,
}

/// Changes the workspace's portal settings.
#[utoipa::path(patch, path = "/v1/workspace/settings", tag = "portal", request_body = SettingsPatch,
    responses((status = 200, description = "The settings", body = PortalSettings),
        (status = "4XX", description = "An error", body = crate::openapi::ErrorBody)))]
pub async fn update_settings(
    State(state): State<AppState>,
    SecretKey(ws): SecretKey,
    ApiJson(patch): ApiJson<SettingsPatch>,
) -> Result<Json<PortalSettings>, ApiError> {
    let mut settings = sessions::settings(&state.store, &ws).await?;
    if let Some(origins) = patch.frame_ancestors {
        if origins.len() > 16 {
            return Err(ApiError::field(
                "frame_ancestors",
                "must hold at most 16 origins",
            ));
        }
        let mut clean = Vec::with_capacity(origins.len());
        for (i, o) in origins.iter().enumerate() {
            let o = sessions::normalise_origin(o)
                .map_err(|m| ApiError::field(format!("frame_ancestors[{i}]"), m))?;
            if !clean.contains(&o) {
                clean.push(o);
            }
        }
        settings.frame_ancestors = clean;
    }
    sessions::put_settings(&state.store, &ws, &settings).await?;
    Ok(Json(settings))
}
