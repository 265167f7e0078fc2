//! Dead letters: list, read, replay (one, or all that match a filter), discard.
//!
//! A replay publishes the job again with its history and a fresh round of the retry schedule;
//! the deliverer reads the connection's current URL and secret, so a fixed destination gets it.
//! The dead letter leaves the index once the broker confirmed the replay.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use herald_shared::amqp::JobsSource;
use herald_shared::model::{check_token, JobGroup, JobItem};
use herald_shared::store::dead_letters::{DeadLetter, DeadLetterFilter};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::{Editor, Reader};
use crate::error::ApiError;
use crate::extract::{ApiQuery, OptionalJson};
use crate::openapi::{ListOf, Refused};
use crate::paging::{filter_token, list as list_body, page};
use crate::schemas::{Cursor, DeadLetterSchema, Token, TokenFilter};
use crate::state::AppState;

/// Replays up to this many are done before answering (200); more run in the background (202).
const SYNC_REPLAY_LIMIT: usize = 100;

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

/// How many dead letters a bulk replay took.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReplayedMany {
    /// How many matched.
    count: usize,
    /// `replayed` (done, 200) or `replaying` (in the background, 202).
    status: &'static str,
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

async fn replay(state: &AppState, d: &DeadLetter) -> Result<(), ApiError> {
    let job = JobItem {
        connection_id: d.connection_id.clone(),
        attempts: d.attempts.clone(),
        round_start: d.attempts.len(),
        deferrals: 0,
        replay: true,
        stand_in: false,
    };
    let group = JobGroup {
        workspace_id: d.workspace_id.clone(),
        event: d.event.clone(),
        jobs: vec![job],
    };
    // Publish first: once the broker confirmed the replay, nothing can lose it. The
    // bookkeeping after it is a compare-and-set, so an outcome the deliverer already recorded
    // for the replay (delivered, or dead again) is kept. A crash in between leaves the dead
    // letter listed while its replay runs: a second replay may send it twice, never zero times.
    state.publisher.jobs(&[group], JobsSource::Replay).await?;
    state.store.mark_replayed(d).await?;
    metrics::counter!("herald_dead_letters_replayed_total").increment(1);
    Ok(())
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
    replay(state, &d).await?;
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

/// Replays every dead letter that matches: up to 100 before answering 200, more in the
/// background with 202. Both answer `{"count"}`.
#[utoipa::path(post, path = "/v1/dead-letters/replay", tag = "dead letters", request_body = Option<ReplayFilter>, responses((status = 200, description = "Done: `status` is `replayed`", body = ReplayedMany), (status = 202, description = "More than 100, in the background: `status` is `replaying`", body = ReplayedMany), Refused))]
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
    let filter = DeadLetterFilter {
        connection_id: strict("connection_id", f.connection_id)?,
        event: strict("event", f.event)?,
    };
    let (all, _) = state
        .store
        .list_dead_letters(ws, &filter, None, usize::MAX, usize::MAX)
        .await?;
    let count = all.len();
    if count <= SYNC_REPLAY_LIMIT {
        for d in &all {
            replay(state, d).await?;
        }
        return Ok((
            StatusCode::OK,
            Json(ReplayedMany {
                count,
                status: "replayed",
            }),
        ));
    }
    let background = state.clone();
    state.background.spawn(async move {
        let mut done = 0;
        for d in &all {
            match replay(&background, d).await {
                Ok(()) => done += 1,
                Err(e) => tracing::error!(error = %e, dead_letter_id = %d.id, "replay failed; the dead letter stays"),
            }
        }
        tracing::info!(done, count, "bulk replay finished");
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(ReplayedMany {
            count,
            status: "replaying",
        }),
    ))
}
