//! Connections: create, list, read, change, delete, and rotate the signing secret.

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use herald_shared::model::connection::{
    is_sensitive_header, validate_url, PreviousSecret, DEFAULT_TIMEOUT_MS, MASK,
};
use herald_shared::model::{Auth, Connection, HttpMethod};
use herald_shared::signing::generate_secret;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{Editor, Reader, SecretKey};
use crate::error::ApiError;
use crate::extract::{not_null, ApiJson, ApiQuery, NoQuery, OptionalJson};
use crate::state::AppState;

/// `POST /v1/connections` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConnection {
    name: String,
    url: String,
    secret: Option<String>,
    /// `POST` (default), `PUT` or `PATCH`.
    #[schema(value_type = Option<String>, example = "POST")]
    method: Option<HttpMethod>,
    headers: Option<BTreeMap<String, String>>,
    /// `{"type": "bearer", "token"}` or `{"type": "basic", "username", "password"}`.
    #[schema(value_type = Option<Object>)]
    auth: Option<Auth>,
    timeout_ms: Option<u64>,
    rate_limit_per_s: Option<u32>,
    enabled: Option<bool>,
}

/// `PATCH /v1/connections/{id}` body: only what changes. `null` clears `auth` and
/// `rate_limit_per_s`, and is refused for the other fields.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionPatch {
    #[serde(default, deserialize_with = "not_null")]
    name: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    url: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    secret: Option<String>,
    /// `POST`, `PUT` or `PATCH`.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = Option<String>, example = "POST")]
    method: Option<HttpMethod>,
    #[serde(default, deserialize_with = "not_null")]
    headers: Option<BTreeMap<String, String>>,
    /// `{"type": "bearer", "token"}`, `{"type": "basic", "username", "password"}`, or `null`
    /// to remove it.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = Option<Object>)]
    auth: Option<Option<Auth>>,
    #[serde(default, deserialize_with = "not_null")]
    timeout_ms: Option<u64>,
    #[serde(default, deserialize_with = "not_null")]
    rate_limit_per_s: Option<Option<u32>>,
    #[serde(default, deserialize_with = "not_null")]
    enabled: Option<bool>,
}

/// A connection as the API shows it: the secret is never shown after creation (use
/// `GET /v1/connections/{id}/secret`); auth credentials and the values of custom headers whose
/// name says they carry a secret are masked.
pub fn view(c: &Connection) -> Value {
    let auth = c.auth.as_ref().map(|a| match a {
        Auth::Bearer { .. } => json!({"type": "bearer", "token": MASK}),
        Auth::Basic { username, .. } => {
            json!({"type": "basic", "username": username, "password": MASK})
        }
    });
    let headers: BTreeMap<&String, &str> = c
        .headers
        .iter()
        .map(|(n, v)| (n, if is_sensitive_header(n) { MASK } else { v }))
        .collect();
    json!({
        "id": c.id,
        "kind": c.kind,
        "name": c.name,
        "url": c.url,
        "method": c.method,
        "headers": headers,
        "auth": auth,
        "timeout_ms": c.timeout_ms,
        "rate_limit_per_s": c.rate_limit_per_s,
        "enabled": c.enabled,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
    })
}

fn validate(state: &AppState, c: &Connection) -> Result<(), ApiError> {
    c.validate(state.settings.allow_http)?;
    // Literal IPs are checked now; names are checked at send time against what they resolve to.
    let url = validate_url(&c.url, state.settings.allow_http)?;
    if let Some(host) = url.host_str() {
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            if !state.settings.destinations.allows(ip) {
                return Err(ApiError::field(
                    "url",
                    "points at a private, loopback or otherwise special address; allowed only with HERALD_ALLOW_PRIVATE_DESTINATIONS or HERALD_DESTINATION_ALLOWLIST",
                ));
            }
        }
    }
    Ok(())
}

pub(crate) async fn load(state: &AppState, ws: &str, id: &str) -> Result<Connection, ApiError> {
    state
        .store
        .get_connection(ws, id)
        .await?
        .ok_or(ApiError::NotFound("connection"))
}

/// Creates a connection. The response carries the signing secret (generated when not given).
#[utoipa::path(post, path = "/v1/connections", tag = "connections", request_body = NewConnection, responses((status = 201, description = "The connection, with its signing secret (shown this once)", body = serde_json::Value), (status = "4XX", description = "An error: `{\"error\": {code, message, field}}`", body = crate::openapi::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Editor(ws): Editor,
    ApiJson(body): ApiJson<NewConnection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let now = herald_shared::now_ms();
    let conn = Connection {
        id: herald_shared::ids::new_id("con"),
        workspace_id: ws,
        kind: "webhook".into(),
        name: body.name,
        url: body.url,
        secret: body.secret.unwrap_or_else(generate_secret),
        previous_secrets: Vec::new(),
        method: body.method.unwrap_or_default(),
        headers: body.headers.unwrap_or_default(),
        auth: body.auth,
        timeout_ms: body.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
        rate_limit_per_s: body.rate_limit_per_s,
        enabled: body.enabled.unwrap_or(true),
        created_at: now,
        updated_at: now,
    };
    validate(&state, &conn)?;
    state.store.put_connection(&conn).await?;
    let mut out = view(&conn);
    out["secret"] = json!(conn.secret);
    Ok((StatusCode::CREATED, Json(out)))
}

/// Lists the workspace's connections, newest first.
#[utoipa::path(get, path = "/v1/connections", tag = "connections", responses((status = 200, description = "`{data, next_cursor}`; secrets are never shown", body = serde_json::Value), (status = "4XX", description = "An error: `{\"error\": {code, message, field}}`", body = crate::openapi::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Reader(ws): Reader,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Json<Value>, ApiError> {
    list_of(&state, &ws).await
}

/// A workspace's connections as the API shows them (the portal's and the console's list).
pub async fn list_of(state: &AppState, ws: &str) -> Result<Json<Value>, ApiError> {
    let data: Vec<Value> = state
        .store
        .list_connections(ws)
        .await?
        .iter()
        .map(view)
        .collect();
    Ok(Json(json!({"data": data, "next_cursor": null})))
}

/// One connection.
#[utoipa::path(get, path = "/v1/connections/{id}", tag = "connections", params(("id" = String, Path, description = "Connection id")), responses((status = 200, description = "The connection; the secret is never shown", body = serde_json::Value), (status = "4XX", description = "An error: `{\"error\": {code, message, field}}`", body = crate::openapi::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Reader(ws): Reader,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&load(&state, &ws, &id).await?)))
}

/// The connection's circuit-breaker history as the deliverers reported it, newest first, and
/// the latest state (`closed` when no breaker ever opened), and the recent success rate.
#[utoipa::path(get, path = "/v1/connections/{id}/health", tag = "connections", params(("id" = String, Path, description = "Connection id")), responses((status = 200, description = "`{connection_id, breaker, breaker_changes, success_rate, attempts, succeeded}`", body = serde_json::Value), (status = "4XX", description = "An error: `{\"error\": {code, message, field}}`", body = crate::openapi::ErrorBody)))]
pub async fn health(
    State(state): State<AppState>,
    Reader(ws): Reader,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    health_of(&state, &ws, &id).await.map(Json)
}

/// How many of the workspace's newest events the success rate looks at.
const HEALTH_WINDOW_EVENTS: usize = 200;

/// A connection's breaker state and history, and the share of successful attempts among its
/// deliveries of the workspace's newest events (`null` when there were none).
pub async fn health_of(state: &AppState, ws: &str, id: &str) -> Result<Value, ApiError> {
    let c = load(state, ws, id).await?;
    let changes = state.store.breaker_changes(ws, &c.id).await?;
    let breaker = changes.first().map_or("closed", |c| c.state.as_str());
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
    Ok(json!({
        "connection_id": c.id,
        "enabled": c.enabled,
        "breaker": breaker,
        "breaker_changes": changes,
        "success_rate": success_rate,
        "attempts": attempts,
        "succeeded": succeeded,
        "last_attempt_at": last_attempt_at,
        "window_events": HEALTH_WINDOW_EVENTS,
    }))
}

/// The current signing secret (and any still in their grace period). Secret key only: a
/// portal session never reads a secret after it was created.
#[utoipa::path(get, path = "/v1/connections/{id}/secret", tag = "connections", params(("id" = String, Path, description = "Connection id")), responses((status = 200, description = "`{secret, previous_secrets}`", body = serde_json::Value), (status = "4XX", description = "An error: `{\"error\": {code, message, field}}`", body = crate::openapi::ErrorBody)))]
pub async fn secret(
    State(state): State<AppState>,
    SecretKey(ws): SecretKey,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let c = load(&state, &ws, &id).await?;
    let now = herald_shared::now_ms();
    let previous: Vec<&PreviousSecret> = c
        .previous_secrets
        .iter()
        .filter(|p| p.expires_at > now)
        .collect();
    Ok(Json(
        json!({"secret": c.secret, "previous_secrets": previous}),
    ))
}

/// Changes the given fields.
#[utoipa::path(patch, path = "/v1/connections/{id}", tag = "connections", params(("id" = String, Path, description = "Connection id")), request_body = ConnectionPatch, responses((status = 200, description = "The changed connection", body = serde_json::Value), (status = "4XX", description = "An error: `{\"error\": {code, message, field}}`", body = crate::openapi::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Editor(ws): Editor,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<ConnectionPatch>,
) -> Result<Json<Value>, ApiError> {
    let mut c = load(&state, &ws, &id).await?;
    if let Some(v) = patch.name {
        c.name = v;
    }
    if let Some(v) = patch.url {
        c.url = v;
    }
    if let Some(v) = patch.secret {
        c.secret = v;
    }
    if let Some(v) = patch.method {
        c.method = v;
    }
    if let Some(mut v) = patch.headers {
        // A masked value read back from the API and sent again means "unchanged".
        for (name, value) in &mut v {
            if value == MASK {
                // Header names are case-insensitive; a mask for a header that was not there
                // would be sent to the receiver literally.
                let old = c
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone());
                match old {
                    Some(old) => *value = old,
                    None => {
                        return Err(ApiError::field(
                            format!("headers.{name}"),
                            "the masked value stands for an existing header's value; send the real value",
                        ))
                    }
                }
            }
        }
        c.headers = v;
    }
    if let Some(v) = patch.auth {
        c.auth = v;
    }
    if let Some(v) = patch.timeout_ms {
        c.timeout_ms = v;
    }
    if let Some(v) = patch.rate_limit_per_s {
        c.rate_limit_per_s = v;
    }
    if let Some(v) = patch.enabled {
        c.enabled = v;
    }
    c.updated_at = herald_shared::now_ms();
    validate(&state, &c)?;
    state.store.put_connection(&c).await?;
    Ok(Json(view(&c)))
}

/// Deletes a connection and the rules that point at it.
#[utoipa::path(delete, path = "/v1/connections/{id}", tag = "connections", params(("id" = String, Path, description = "Connection id")), responses((status = 204, description = "Deleted (no body)", body = serde_json::Value), (status = "4XX", description = "An error: `{\"error\": {code, message, field}}`", body = crate::openapi::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Editor(ws): Editor,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.store.delete_connection(&ws, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("connection"))
    }
}

/// `POST /v1/connections/{id}/rotate-secret` body (optional).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    secret: Option<String>,
}

/// Makes a new signing secret; the old one keeps signing alongside it for the grace period
/// (`HERALD_SECRET_GRACE`, 24 h by default). The new secret is shown this once.
#[utoipa::path(post, path = "/v1/connections/{id}/rotate-secret", tag = "connections", params(("id" = String, Path, description = "Connection id")), request_body = Option<Rotate>, responses((status = 200, description = "`{id, secret, previous_secret_expires_at}`", body = serde_json::Value), (status = "4XX", description = "An error: `{\"error\": {code, message, field}}`", body = crate::openapi::ErrorBody)))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    Editor(ws): Editor,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<Rotate>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(
        json!({"id": c.id, "secret": c.secret, "previous_secret_expires_at": expires_at}),
    ))
}
