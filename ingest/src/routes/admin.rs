//! The support console's API (admin token), across workspaces: find an event by uuid or by
//! workspace, connection, status and time; read connections, their health and their charts;
//! list, replay and discard dead letters.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use herald_shared::model::check_token;
use herald_shared::store::history::{EventFilter, EVENT_STATUSES};
use herald_shared::store::Cursor;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{existing_workspace, Admin, AdminOf};
use crate::error::ApiError;
use crate::extract::{ApiQuery, NoQuery, OptionalJson};
use crate::openapi::{ListOf, Refused};
use crate::paging::{filter_token, list, page};
use crate::routes::{connections, dead_letters};
use crate::schemas::{
    ConsoleEventSchema, Cursor as CursorSchema, DeadLetterSchema, EventStatus, Token, TokenFilter,
};
use crate::state::AppState;

/// The `{id}` of a console path under `/v1/admin/workspaces/{ws}` (`AdminOf` takes the `{ws}`).
#[derive(Deserialize)]
pub struct OfWorkspace {
    id: String,
}

/// Finds an event by uuid in every workspace: the event, its `workspace_id`, its deliveries and
/// every attempt.
#[utoipa::path(get, path = "/v1/admin/events/{uuid}", tag = "console",
    params(("uuid" = Token, Path, description = "Event uuid")),
    responses((status = 200, description = "The event with `workspace_id`, `deliveries` and every attempt", body = ConsoleEventSchema), Refused))]
pub async fn find_event(
    State(state): State<AppState>,
    _: Admin,
    Path(uuid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_token("uuid", &uuid, 128)?;
    for ws in state.store.workspaces_with_event(&uuid).await? {
        if let Some(record) = state.store.get_event(&ws, &uuid).await? {
            let mut out = serde_json::to_value(record).map_err(anyhow::Error::from)?;
            out["workspace_id"] = json!(ws);
            return Ok(Json(out));
        }
    }
    Err(ApiError::NotFound("event"))
}

/// `GET /v1/admin/events` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventSearch {
    /// The workspace (required).
    #[param(value_type = Token)]
    workspace_id: String,
    /// Only events with a delivery to this connection.
    #[param(value_type = Option<TokenFilter>)]
    connection_id: Option<String>,
    /// Only events with this status.
    #[param(value_type = Option<EventStatus>)]
    status: Option<String>,
    /// Only events of this type.
    #[param(value_type = Option<TokenFilter>)]
    event: Option<String>,
    /// Only events created at or after this time (Unix milliseconds).
    since: Option<i64>,
    /// Only events created at or before this time (Unix milliseconds).
    until: Option<i64>,
    /// 1 to 250; 50 by default.
    #[param(minimum = 1, maximum = 250)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<CursorSchema>)]
    cursor: Option<String>,
}

/// Events of a workspace, newest first, by connection, status, type and time.
#[utoipa::path(get, path = "/v1/admin/events", tag = "console", params(EventSearch),
    responses((status = 200, description = "A page of events, each with its `workspace_id`", body = ListOf<ConsoleEventSchema>), Refused))]
pub async fn search_events(
    State(state): State<AppState>,
    _: Admin,
    ApiQuery(q): ApiQuery<EventSearch>,
) -> Result<Json<Value>, ApiError> {
    check_token("workspace_id", &q.workspace_id, 128)?;
    existing_workspace(&state, &q.workspace_id).await?;
    let (limit, mut cursor) = page(q.limit, q.cursor.as_deref())?;
    if let Some(s) = q.status.as_deref().filter(|s| !s.is_empty()) {
        if !EVENT_STATUSES.contains(&s) {
            return Err(ApiError::field(
                "status",
                format!("must be one of {}", EVENT_STATUSES.join(", ")),
            ));
        }
    }
    let filter = EventFilter {
        status: q.status.filter(|s| !s.is_empty()),
        event: filter_token("event", q.event)?,
        connection_id: filter_token("connection_id", q.connection_id)?,
        since: q.since,
    };
    if let (None, Some(until)) = (&cursor, q.until) {
        // Everything created at or before `until`: start just after it.
        cursor = Some(Cursor::at_or_below(until));
    }
    // One walk from the cursor's position, as the workspace's own list: a page costs
    // O(log N) plus the events it looks at (`history::MAX_SCAN` at most, then a cursor to go
    // on from), however deep it is and however rarely the filter matches.
    let (records, next) = state
        .store
        .list_events(&q.workspace_id, &filter, cursor, limit)
        .await?;
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let mut v = serde_json::to_value(&r).map_err(anyhow::Error::from)?;
        v["workspace_id"] = json!(q.workspace_id);
        out.push(v);
    }
    Ok(list(out, next))
}

/// A workspace's connections (secrets never shown).
#[utoipa::path(get, path = "/v1/admin/workspaces/{ws}/connections", tag = "console",
    params(("ws" = String, Path, description = "Workspace id")),
    responses((status = 200, description = "The connections (one page)", body = ListOf<connections::ConnectionView>), Refused))]
pub async fn connections(
    State(state): State<AppState>,
    AdminOf(ws): AdminOf,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Json<ListOf<connections::ConnectionView>>, ApiError> {
    connections::list_of(&state, &ws).await
}

/// A connection's health: breaker state and history, recent success rate.
#[utoipa::path(get, path = "/v1/admin/workspaces/{ws}/connections/{id}/health", tag = "console",
    params(("ws" = String, Path, description = "Workspace id"), ("id" = String, Path, description = "Connection id")),
    responses((status = 200, description = "The breakers and the recent success rate", body = connections::health::ConnectionHealth), Refused))]
pub async fn connection_health(
    State(state): State<AppState>,
    AdminOf(ws): AdminOf,
    Path(OfWorkspace { id }): Path<OfWorkspace>,
) -> Result<Json<connections::health::ConnectionHealth>, ApiError> {
    connections::health::health_of(&state, &ws, &id)
        .await
        .map(Json)
}

/// A connection's attempts, failures, dead letters and p50/p95 latency over time, oldest first
/// (as `GET /v1/connections/{id}/stats`).
#[utoipa::path(get, path = "/v1/admin/workspaces/{ws}/connections/{id}/stats", tag = "console",
    params(("ws" = String, Path, description = "Workspace id"), ("id" = String, Path, description = "Connection id"), connections::stats::StatsQuery),
    responses((status = 200, description = "The points, oldest first", body = connections::stats::ConnectionStats), Refused))]
pub async fn connection_stats(
    State(state): State<AppState>,
    AdminOf(ws): AdminOf,
    Path(OfWorkspace { id }): Path<OfWorkspace>,
    ApiQuery(q): ApiQuery<connections::stats::StatsQuery>,
) -> Result<Json<connections::stats::ConnectionStats>, ApiError> {
    connections::stats::stats_of(&state, &ws, &id, q)
        .await
        .map(Json)
}

/// A workspace's dead letters, newest first.
#[utoipa::path(get, path = "/v1/admin/workspaces/{ws}/dead-letters", tag = "console",
    params(("ws" = String, Path, description = "Workspace id"), dead_letters::ListQuery),
    responses((status = 200, description = "A page of dead letters", body = ListOf<DeadLetterSchema>), Refused))]
pub async fn dead_letters(
    State(state): State<AppState>,
    AdminOf(ws): AdminOf,
    ApiQuery(q): ApiQuery<dead_letters::ListQuery>,
) -> Result<Json<Value>, ApiError> {
    dead_letters::list_of(&state, &ws, q).await
}

/// Replays one dead letter of a workspace.
#[utoipa::path(post, path = "/v1/admin/workspaces/{ws}/dead-letters/{id}/replay", tag = "console",
    params(("ws" = String, Path, description = "Workspace id"), ("id" = String, Path, description = "Dead-letter id")),
    responses((status = 202, description = "Queued again", body = dead_letters::Replayed), Refused))]
pub async fn replay_dead_letter(
    State(state): State<AppState>,
    AdminOf(ws): AdminOf,
    Path(OfWorkspace { id }): Path<OfWorkspace>,
) -> Result<(StatusCode, Json<dead_letters::Replayed>), ApiError> {
    dead_letters::replay_one_of(&state, &ws, &id).await
}

/// Replays every dead letter of a workspace that matches `{"connection_id"?, "event"?}`.
#[utoipa::path(post, path = "/v1/admin/workspaces/{ws}/dead-letters/replay", tag = "console",
    params(("ws" = String, Path, description = "Workspace id")),
    request_body = Option<dead_letters::ReplayFilter>,
    responses((status = 200, description = "Done: `status` is `replayed`", body = dead_letters::ReplayedMany),
        (status = 202, description = "More than 100 to look at, in the background: `status` is `accepted`; progress at `.../dead-letters/replays/{replay_id}`", body = dead_letters::ReplayedMany), Refused))]
pub async fn replay_dead_letters(
    State(state): State<AppState>,
    AdminOf(ws): AdminOf,
    OptionalJson(filter): OptionalJson<dead_letters::ReplayFilter>,
) -> Result<(StatusCode, Json<dead_letters::ReplayedMany>), ApiError> {
    dead_letters::replay_many_of(&state, &ws, filter).await
}

/// Where a bulk replay of a workspace's dead letters stands.
#[utoipa::path(get, path = "/v1/admin/workspaces/{ws}/dead-letters/replays/{id}", tag = "console",
    params(("ws" = String, Path, description = "Workspace id"), ("id" = String, Path, description = "The `replay_id` a bulk replay answered")),
    responses((status = 200, description = "Its progress", body = dead_letters::ReplayProgress), Refused))]
pub async fn replay_progress(
    State(state): State<AppState>,
    AdminOf(ws): AdminOf,
    Path(OfWorkspace { id }): Path<OfWorkspace>,
) -> Result<Json<dead_letters::ReplayProgress>, ApiError> {
    dead_letters::replay_progress_of(&state, &ws, &id).await
}

/// Discards a dead letter of a workspace.
#[utoipa::path(delete, path = "/v1/admin/workspaces/{ws}/dead-letters/{id}", tag = "console",
    params(("ws" = String, Path, description = "Workspace id"), ("id" = String, Path, description = "Dead-letter id")),
    responses((status = 204, description = "Discarded"), Refused))]
pub async fn discard_dead_letter(
    State(state): State<AppState>,
    AdminOf(ws): AdminOf,
    Path(OfWorkspace { id }): Path<OfWorkspace>,
) -> Result<StatusCode, ApiError> {
    dead_letters::discard_of(&state, &ws, &id).await
}
