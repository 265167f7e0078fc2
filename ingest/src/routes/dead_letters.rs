//! Dead letters: list, read, replay (one, or all that match a filter), discard.
//!
//! A replay publishes the job again with its history and a fresh round of the retry schedule;
//! the deliverer reads the connection's current URL and secret, so a fixed destination gets it.
//! The dead letter leaves the index once the broker confirmed the replay.
//!
//! A replay by filter looks at every dead letter dead-lettered up to the request, page by page
//! (`crate::replay`): up to [`SYNC_REPLAY_LIMIT`] before answering, more in the background.
//! One runs at a time per workspace; its progress is at `GET /v1/dead-letters/replays/{id}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use herald_shared::model::check_token;
use herald_shared::store::dead_letters::{DeadLetter, DeadLetterFilter};
use herald_shared::store::replays::{Replay, ReplayState};
use herald_shared::store::Cursor as StoreCursor;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::{Editor, Reader};
use crate::error::ApiError;
use crate::extract::{ApiQuery, OptionalJson};
use crate::openapi::{ListOf, Refused};
use crate::paging::{filter_token, list as list_body, page};
use crate::replay;
use crate::schemas::{Cursor, DeadLetterSchema, Token, TokenFilter};
use crate::state::AppState;

/// Replays that look at up to this many dead letters are done before answering (200); larger
/// ones run in the background (202).
pub const SYNC_REPLAY_LIMIT: u64 = 100;

/// `GET /v1/dead-letters` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only dead letters of this connection.
    #[param(value_type = Option<TokenFilter>)]
    connection_id: Option<String>,
    /// Only dead letters of this event type.
    #[param(value_type = Option<TokenFilter>)]
    event: Option<String>,
    /// 1 to 250; 50 by default.
    #[param(minimum = 1, maximum = 250)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<Cursor>)]
    cursor: Option<String>,
}

/// A replayed dead letter: queued again, `pending`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Replayed {
    /// The dead letter.
    id: String,
    /// Its event.
    event_id: String,
    /// `pending`.
    status: &'static str,
}

/// A bulk replay: done (200), or started in the background (202).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReplayedMany {
    /// 200: how many were replayed. 202: how many dead letters it looks at (every one
    /// dead-lettered up to the request; with a filter, those replayed are among them).
    count: u64,
    /// `replayed` (done, 200) or `accepted` (in the background, 202).
    status: &'static str,
    /// Its progress: `GET /v1/dead-letters/replays/{replay_id}`.
    replay_id: String,
}

/// Where a bulk replay stands.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReplayProgress {
    /// `rpl_...`.
    id: String,
    /// `running`; `waiting` (the ingest that ran it stopped or died: another ingest resumes it
    /// from where it stopped within about 40 s); `finished`.
    #[schema(value_type = String, example = "running")]
    status: &'static str,
    /// Its filter: only dead letters of this connection.
    #[schema(value_type = Option<Token>)]
    connection_id: Option<String>,
    /// Its filter: only dead letters of this event type.
    #[schema(value_type = Option<Token>)]
    event: Option<String>,
    /// It looks at dead letters dead-lettered at or before this time (Unix ms).
    until: i64,
    /// How many dead letters it looks at, counted when it started.
    count: u64,
    /// How many it looked at so far.
    done: u64,
    /// How many of those matched and were replayed.
    replayed: u64,
    /// How many it has still to look at (0 once finished).
    remaining: u64,
    /// Unix ms.
    started_at: i64,
    /// Unix ms of its last page.
    updated_at: i64,
    /// Unix ms; null while it runs.
    finished_at: Option<i64>,
    /// The last error a page met (it is tried again; null once a page succeeds). On a replay
    /// done before answering, the error that ended it.
    last_error: Option<String>,
}

/// Dead letters of the workspace, newest first.
#[utoipa::path(get, path = "/v1/dead-letters", tag = "dead letters", params(ListQuery), responses((status = 200, description = "A page of dead letters", body = ListOf<DeadLetterSchema>), Refused))]
pub async fn list(
    State(state): State<AppState>,
    Reader(ws): Reader,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    list_of(&state, &ws, q).await
}

/// Dead letters of a workspace, newest first (the portal's and the console's list).
pub async fn list_of(state: &AppState, ws: &str, q: ListQuery) -> Result<Json<Value>, ApiError> {
    let (limit, cursor) = page(q.limit, q.cursor.as_deref())?;
    let filter = DeadLetterFilter {
        connection_id: filter_token("connection_id", q.connection_id)?,
        event: filter_token("event", q.event)?,
    };
    let (data, next) = state
        .store
        .list_dead_letters(ws, &filter, cursor, limit, 5_000)
        .await?;
    Ok(list_body(data, next))
}

/// One dead letter with its whole attempt history.
#[utoipa::path(get, path = "/v1/dead-letters/{id}", tag = "dead letters", params(("id" = String, Path, description = "Dead-letter id")), responses((status = 200, description = "The dead letter with every attempt", body = DeadLetterSchema), Refused))]
pub async fn get(
    State(state): State<AppState>,
    Reader(ws): Reader,
    Path(id): Path<String>,
) -> Result<Json<DeadLetter>, ApiError> {
    let d = state
        .store
        .get_dead_letter(&ws, &id)
        .await?
        .ok_or(ApiError::NotFound("dead letter"))?;
    Ok(Json(d))
}

/// Discards a dead letter (it stays in the event's history as `dead`).
#[utoipa::path(delete, path = "/v1/dead-letters/{id}", tag = "dead letters", params(("id" = String, Path, description = "Dead-letter id")), responses((status = 204, description = "Discarded (no body)"), Refused))]
pub async fn discard(
    State(state): State<AppState>,
    Editor(ws): Editor,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    discard_of(&state, &ws, &id).await
}

/// Discards a dead letter of a workspace.
pub async fn discard_of(state: &AppState, ws: &str, id: &str) -> Result<StatusCode, ApiError> {
    if state.store.discard_dead_letter(ws, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("dead letter"))
    }
}

/// Replays one dead letter.
#[utoipa::path(post, path = "/v1/dead-letters/{id}/replay", tag = "dead letters", params(("id" = String, Path, description = "Dead-letter id")), responses((status = 202, description = "Queued again", body = Replayed), Refused))]
pub async fn replay_one(
    State(state): State<AppState>,
    Editor(ws): Editor,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Replayed>), ApiError> {
    replay_one_of(&state, &ws, &id).await
}

/// Replays one dead letter of a workspace.
pub async fn replay_one_of(
    state: &AppState,
    ws: &str,
    id: &str,
) -> Result<(StatusCode, Json<Replayed>), ApiError> {
    let d = state
        .store
        .get_dead_letter(ws, id)
        .await?
        .ok_or(ApiError::NotFound("dead letter"))?;
    replay::replay(state, &[&d]).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Replayed {
            id: d.id,
            event_id: d.event.uuid,
            status: "pending",
        }),
    ))
}

/// `POST /v1/dead-letters/replay` body.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayFilter {
    /// Only dead letters of this connection.
    #[schema(value_type = Option<Token>)]
    connection_id: Option<String>,
    /// Only dead letters of this event type.
    #[schema(value_type = Option<Token>)]
    event: Option<String>,
}

/// Replays every dead letter that matches, page by page: 200 when it looked at up to 100
/// (done before answering), else 202 and it runs in the background; both with `replay_id`.
/// 409 while another bulk replay of the workspace is unfinished.
#[utoipa::path(post, path = "/v1/dead-letters/replay", tag = "dead letters", request_body = Option<ReplayFilter>, responses((status = 200, description = "Done: `status` is `replayed`, `count` how many", body = ReplayedMany), (status = 202, description = "More than 100 to look at, in the background: `status` is `accepted`, `count` how many it looks at; progress at `/v1/dead-letters/replays/{replay_id}`", body = ReplayedMany), Refused))]
pub async fn replay_many(
    State(state): State<AppState>,
    Editor(ws): Editor,
    OptionalJson(filter): OptionalJson<ReplayFilter>,
) -> Result<(StatusCode, Json<ReplayedMany>), ApiError> {
    replay_many_of(&state, &ws, filter).await
}

/// Replays every dead letter of a workspace that matches `f` (an empty filter: all of them).
pub async fn replay_many_of(
    state: &AppState,
    ws: &str,
    f: ReplayFilter,
) -> Result<(StatusCode, Json<ReplayedMany>), ApiError> {
    // An empty string here is a mistake, not "everything": a replay of all is `{}`.
    let strict = |field: &str, v: Option<String>| {
        v.map(|v| check_token(field, &v, 128).map(|()| v))
            .transpose()
    };
    let connection_id = strict("connection_id", f.connection_id)?;
    let event = strict("event", f.event)?;
    let now = herald_shared::now_ms();
    // Counted from the index in O(log N); what matches a filter is learnt on the way.
    let count = state
        .store
        .dead_letters_older(ws, &StoreCursor::at_or_below(now))
        .await?;
    let r = Replay::new(ws, connection_id, event, now, count);
    if let Some(running) = state.store.start_replay(&r, &state.replays.owner).await? {
        return Err(ApiError::Conflict(format!(
            "bulk replay {running} of this workspace is not finished; one runs at a time \
             (its progress: GET /v1/dead-letters/replays/{running})"
        )));
    }
    if count <= SYNC_REPLAY_LIMIT {
        let done = replay::run_now(state, r).await?;
        return Ok((
            StatusCode::OK,
            Json(ReplayedMany {
                count: done.replayed,
                status: "replayed",
                replay_id: done.id,
            }),
        ));
    }
    let replay_id = r.id.clone();
    state.background.spawn(replay::run(state.clone(), r));
    Ok((
        StatusCode::ACCEPTED,
        Json(ReplayedMany {
            count,
            status: "accepted",
            replay_id,
        }),
    ))
}

/// Where a bulk replay stands: how many dead letters it looked at and replayed, how many remain.
#[utoipa::path(get, path = "/v1/dead-letters/replays/{id}", tag = "dead letters", params(("id" = String, Path, description = "The `replay_id` a bulk replay answered")), responses((status = 200, description = "Its progress", body = ReplayProgress), Refused))]
pub async fn replay_progress(
    State(state): State<AppState>,
    Reader(ws): Reader,
    Path(id): Path<String>,
) -> Result<Json<ReplayProgress>, ApiError> {
    replay_progress_of(&state, &ws, &id).await
}

/// Where a bulk replay of a workspace stands.
pub async fn replay_progress_of(
    state: &AppState,
    ws: &str,
    id: &str,
) -> Result<Json<ReplayProgress>, ApiError> {
    check_token("id", id, 128)?;
    let ReplayState { replay: r, leased } = state
        .store
        .get_replay(ws, id)
        .await?
        .ok_or(ApiError::NotFound("replay"))?;
    let (status, remaining) = if r.finished_at.is_some() {
        ("finished", 0)
    } else {
        let remaining = state.store.dead_letters_older(ws, &r.position()).await?;
        (if leased { "running" } else { "waiting" }, remaining)
    };
    Ok(Json(ReplayProgress {
        id: r.id,
        status,
        connection_id: r.connection_id,
        event: r.event,
        until: r.until,
        count: r.count,
        done: r.examined,
        replayed: r.replayed,
        remaining,
        started_at: r.started_at,
        updated_at: r.updated_at,
        finished_at: r.finished_at,
        last_error: r.last_error,
    }))
}
