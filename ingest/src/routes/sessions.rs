//! Portal sessions (minted by the SaaS backend with the workspace's secret key, refreshed by
//! the portal page) and the workspace's portal settings.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::openapi::Refused;
use crate::schemas::{DestinationUrl, Origin, Secret};
use crate::state::AppState;
use std::time::Duration;

use herald_shared::model::connection::validate_url;
use herald_shared::opwebhooks;
use herald_shared::store::sessions::{PortalSettings, Role, Session};

use crate::auth::{PortalSession, SecretKey};
use crate::extract::{not_null, ApiJson, ApiQuery, NoQuery};

/// Session life when the request names none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);
/// Shortest and longest life a request may ask for, in seconds.
pub const TTL_RANGE_S: std::ops::RangeInclusive<u64> = 5..=3600;
/// A chain of refreshes ends this long after the first token was minted: an open page cannot
/// keep a session alive for ever.
pub const MAX_CHAIN: Duration = Duration::from_secs(12 * 3600);
/// A refreshed-away token keeps working this long, for requests already in flight.
pub const REFRESH_OVERLAP: Duration = Duration::from_secs(30);

/// What a portal session may do: the document's view of the stored [`Role`].
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Role)]
#[serde(rename_all = "snake_case")]
pub enum RoleSchema {
    /// Read the workspace's connections, rules, history and dead letters.
    Viewer,
    /// Also manage connections, rules and secrets, send test events and replay.
    Editor,
}

/// Portal settings of a workspace: the document's view of the stored [`PortalSettings`].
#[derive(utoipa::ToSchema)]
#[schema(as = PortalSettings)]
pub struct PortalSettingsSchema {
    /// Origins allowed to embed the portal in a frame (`frame-ancestors` of its pages), e.g.
    /// `https://app.example.com`. Empty: the portal cannot be framed.
    pub frame_ancestors: Vec<String>,
    /// Where the workspace's operational webhooks go (`connection.disabled`,
    /// `connection.enabled`, `connection.breaker_opened`, `connection.breaker_closed`,
    /// `delivery.dead_lettered`, about its own connections only); `null` when none.
    #[schema(value_type = Option<DestinationUrl>)]
    pub operational_webhook_url: Option<String>,
    /// The `whsec_` secret operational webhooks are signed with: only in the answer that set
    /// `operational_webhook_url` for the first time (shown this once).
    #[schema(value_type = Option<Secret>, required = false)]
    pub operational_webhook_secret: Option<String>,
}

/// The workspace's settings as answered: with the operational webhook secret when it was just
/// made.
#[derive(Serialize)]
pub struct SettingsView {
    /// The settings.
    #[serde(flatten)]
    settings: PortalSettings,
    /// Shown once, when generated.
    #[serde(skip_serializing_if = "Option::is_none")]
    operational_webhook_secret: Option<String>,
}

/// `POST /v1/sessions` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    /// `viewer` (read history) or `editor` (also manage connections, rules and secrets, send
    /// test events, replay).
    #[schema(value_type = RoleSchema)]
    role: Role,
    /// The token's life in seconds, 5 to 3600; 900 by default.
    #[schema(minimum = 5, maximum = 3600)]
    ttl_s: Option<u64>,
}

/// A minted session: the token is shown this once.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MintedSession {
    /// `sess_...`: a bearer token for this workspace's portal, with the session's role.
    token: String,
    /// The role.
    #[schema(value_type = RoleSchema)]
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

/// What the portal page knows of its own session.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CurrentSession {
    /// The workspace.
    workspace_id: String,
    /// The role.
    #[schema(value_type = RoleSchema)]
    role: Role,
    /// Unix milliseconds.
    expires_at: i64,
    /// Origins that may frame the portal.
    frame_ancestors: Vec<String>,
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
    responses((status = 201, description = "The session", body = MintedSession), Refused))]
pub async fn create(
    State(state): State<AppState>,
    SecretKey(ws): SecretKey,
    ApiJson(body): ApiJson<NewSession>,
) -> Result<(StatusCode, Json<MintedSession>), ApiError> {
    let ttl_s = body.ttl_s.unwrap_or(DEFAULT_TTL.as_secs());
    if !TTL_RANGE_S.contains(&ttl_s) {
        return Err(ApiError::field(
            "ttl_s",
            format!(
                "must be between {} and {} seconds",
                TTL_RANGE_S.start(),
                TTL_RANGE_S.end()
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
        epoch: 0,
    };
    let token = state.store.create_session(&session).await?;
    Ok((StatusCode::CREATED, Json(minted(token, &session))))
}

/// Exchanges a live session token for a new one with the same workspace, role and life, once:
/// a token already refreshed is refused (401). The old token keeps working for 30 s, for
/// requests already in flight. A chain of refreshes ends 12 h after the first token was minted.
#[utoipa::path(post, path = "/v1/sessions/refresh", tag = "portal",
    responses((status = 200, description = "The new session", body = MintedSession), Refused))]
pub async fn refresh(
    State(state): State<AppState>,
    PortalSession { token, session }: PortalSession,
) -> Result<Json<MintedSession>, ApiError> {
    let now = herald_shared::now_ms();
    let chain_end = session.started_at + MAX_CHAIN.as_millis() as i64;
    if now >= chain_end {
        return Err(ApiError::Unauthorized);
    }
    if !state.store.claim_refresh(&token).await? {
        return Err(ApiError::Unauthorized);
    }
    let next = Session {
        expires_at: (now + session.ttl_ms).min(chain_end),
        ..session
    };
    let new_token = state.store.create_session(&next).await?;
    state.store.retire_session(&token, REFRESH_OVERLAP).await?;
    Ok(Json(minted(new_token, &next)))
}

/// `POST /v1/sessions/revoke` body: one session, or all of the workspace's.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Revoke {
    /// The session token to end (`sess_...`).
    #[schema(max_length = 64)]
    token: Option<String>,
    /// `true`: end every session of the workspace minted until now.
    all: Option<bool>,
}

/// Ends a portal session of the workspace (`token`), or every one of them (`all: true`).
/// Secret key only. A token of another workspace, or no session, is 404.
#[utoipa::path(post, path = "/v1/sessions/revoke", tag = "portal", request_body = Revoke,
    responses((status = 204, description = "Revoked (no body)"), Refused))]
pub async fn revoke(
    State(state): State<AppState>,
    SecretKey(ws): SecretKey,
    ApiJson(body): ApiJson<Revoke>,
) -> Result<StatusCode, ApiError> {
    match (body.token, body.all) {
        (None, Some(true)) => state.store.revoke_sessions(&ws).await?,
        (Some(token), None | Some(false)) => {
            let owned = state
                .store
                .session(&token)
                .await?
                .is_some_and(|s| s.workspace_id == ws);
            if !owned {
                return Err(ApiError::NotFound("session"));
            }
            state.store.revoke_session(&token).await?;
        }
        _ => {
            return Err(ApiError::field(
                "token",
                "give either a session token or \"all\": true",
            ))
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Ends the caller's own session (the portal's "sign out").
#[utoipa::path(delete, path = "/v1/sessions/current", tag = "portal",
    responses((status = 204, description = "Ended (no body)"), Refused))]
pub async fn end_current(
    State(state): State<AppState>,
    PortalSession { token, .. }: PortalSession,
) -> Result<StatusCode, ApiError> {
    state.store.revoke_session(&token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What the portal page needs to know about its own session.
#[utoipa::path(get, path = "/v1/sessions/current", tag = "portal",
    responses((status = 200, description = "The session and the portal's settings", body = CurrentSession), Refused))]
pub async fn current(
    State(state): State<AppState>,
    PortalSession { session, .. }: PortalSession,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Json<CurrentSession>, ApiError> {
    let settings = state.store.portal_settings(&session.workspace_id).await?;
    Ok(Json(CurrentSession {
        workspace_id: session.workspace_id,
        role: session.role,
        expires_at: session.expires_at,
        frame_ancestors: settings.frame_ancestors,
    }))
}

/// The workspace's portal settings.
#[utoipa::path(get, path = "/v1/workspace/settings", tag = "portal",
    responses((status = 200, description = "The settings", body = PortalSettingsSchema), Refused))]
pub async fn get_settings(
    State(state): State<AppState>,
    SecretKey(ws): SecretKey,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Json<PortalSettings>, ApiError> {
    Ok(Json(state.store.portal_settings(&ws).await?))
}

/// `PATCH /v1/workspace/settings` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    /// Origins that may frame the portal, e.g. `["https://app.example.com"]`; at most 16.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = Vec<Origin>, max_items = 16, required = false)]
    frame_ancestors: Option<Vec<String>>,
    /// Where the workspace's operational webhooks go, `null` to stop them. Set for the first
    /// time, the answer carries their signing secret (`operational_webhook_secret`) this once.
    #[serde(default, deserialize_with = "deserialize_some")]
    #[schema(value_type = Option<DestinationUrl>, required = false)]
    operational_webhook_url: Option<Option<String>>,
}

/// `null` as `Some(None)`, absent as `None`.
fn deserialize_some<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// Changes the workspace's portal settings.
#[utoipa::path(patch, path = "/v1/workspace/settings", tag = "portal", request_body = SettingsPatch,
    responses((status = 200, description = "The settings", body = PortalSettingsSchema), Refused))]
pub async fn update_settings(
    State(state): State<AppState>,
    SecretKey(ws): SecretKey,
    ApiJson(patch): ApiJson<SettingsPatch>,
) -> Result<Json<SettingsView>, ApiError> {
    let mut settings = state.store.portal_settings(&ws).await?;
    if let Some(origins) = patch.frame_ancestors {
        if origins.len() > 16 {
            return Err(ApiError::field(
                "frame_ancestors",
                "must hold at most 16 origins",
            ));
        }
        let mut clean = Vec::with_capacity(origins.len());
        for (i, o) in origins.iter().enumerate() {
            let o = normalise_origin(o)
                .map_err(|m| ApiError::field(format!("frame_ancestors[{i}]"), m))?;
            if !clean.contains(&o) {
                clean.push(o);
            }
        }
        settings.frame_ancestors = clean;
    }
    let mut shown_secret = None;
    if let Some(url) = patch.operational_webhook_url {
        shown_secret = set_operational_webhook(&state, &ws, url.as_deref()).await?;
        settings.operational_webhook_url = url;
    }
    state.store.put_portal_settings(&ws, &settings).await?;
    Ok(Json(SettingsView {
        settings,
        operational_webhook_secret: shown_secret,
    }))
}

/// Points the workspace's operational webhooks at `url` (None: stops them). Answers the
/// signing secret when one was made (the first time a URL is set).
async fn set_operational_webhook(
    state: &AppState,
    ws: &str,
    url: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let id = opwebhooks::workspace_target(ws);
    let Some(url) = url else {
        state
            .store
            .delete_connection(opwebhooks::WORKSPACE, &id)
            .await?;
        return Ok(None);
    };
    let field = "operational_webhook_url";
    validate_url(url, state.settings.allow_http).map_err(|e| ApiError::field(field, e.message))?;
    crate::routes::connections::check_literal(state, field, url)?;
    state
        .store
        .ensure_workspace(opwebhooks::WORKSPACE, "Herald operational webhooks")
        .await?;
    let (target, shown) = match state
        .store
        .get_connection(opwebhooks::WORKSPACE, &id)
        .await?
    {
        Some(mut c) => {
            c.url = url.to_string();
            c.updated_at = herald_shared::now_ms();
            (c, None)
        }
        None => {
            let secret = herald_shared::signing::generate_secret();
            (opwebhooks::target(&id, url, &secret), Some(secret))
        }
    };
    state.store.put_connection(&target).await?;
    Ok(shown)
}

/// Checks and normalises one origin of `frame_ancestors`: `https://host[:port]` (or `http://`),
/// nothing after the authority.
pub fn normalise_origin(raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("is not an origin: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err("must start with https:// (or http://)".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err("must be an origin only (scheme, host, port), without a path".into());
    }
    if raw.ends_with('/') && !raw.ends_with("//") && raw.matches('/').count() > 2 {
        return Err("must be an origin only (scheme, host, port), without a path".into());
    }
    Ok(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::normalise_origin;

    #[test]
    fn origins_are_normalised_and_anything_more_is_refused() {
        assert_eq!(
            normalise_origin("https://App.Example.com").as_deref(),
            Ok("https://app.example.com")
        );
        assert_eq!(
            normalise_origin("http://127.0.0.1:5173").as_deref(),
            Ok("http://127.0.0.1:5173")
        );
        for bad in [
            "app.example.com",
            "ftp://example.com",
            "https://example.com/path",
            "https://example.com/",
            "https://example.com?x=1",
            "https://user:pw@example.com",
            "https://example.com; script-src *",
            "*",
        ] {
            assert!(normalise_origin(bad).is_err(), "{bad} must be refused");
        }
    }
}
