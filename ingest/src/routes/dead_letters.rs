//! Dead letters: list, read, replay (one, or all that match a filter), discard.
//!
//! A replay publishes the job again with its history and a fresh round of the retry schedule;
//! the deliverer reads the connection's current URL and secret, so a fixed destination gets it.
//! The dead letter leaves the index once the broker confirmed the replay.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use herald_shared::amqp::topology::JOBS_EXCHANGE;
use herald_shared::model::{check_token, Delivery, DeliveryStatus, JobGroup, JobItem};
use herald_shared::store::dead_letters::{DeadLetter, DeadLetterFilter};
use lapin::BasicProperties;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{filter_token, list as list_body, page, ApiQuery, SecretKey};

/// Replays up to this many are done before answering (200); more run in the background (202).
const SYNC_REPLAY_LIMIT: usize = 100;

/// `GET /v1/dead-letters` query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    connection_id: Option<String>,
    event: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// Dead letters of the workspace, newest first.
pub async fn list(
    State(state): State<AppState>,
    SecretKey(ws): SecretKey,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let (limit, cursor) = page(q.limit, q.cursor.as_deref())?;
    let filter = DeadLetterFilter {
        connection_id: filter_token("connection_id", q.connection_id)?,
        event: filter_token("event", q.event)?,
    };
    let (data, next) = state
        .store
        .list_dead_letters(&ws, &filter, cursor, limit, 5_000)
        .await?;
    Ok(list_body(data, next))
}

/// One dead letter with its whole attempt history.
pub async fn get(
    State(state): State<AppState>,
    SecretKey(ws): SecretKey,
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
pub async fn discard(
    State(state): State<AppState>,
    SecretKey(ws): SecretKey,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.store.discard_dead_letter(&ws, &id).await? {
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
    };
    let group = JobGroup {
        workspace_id: d.workspace_id.clone(),
        event: d.event.clone(),
        jobs: vec![job],
    };
    let body = serde_json::to_vec(&[group]).map_err(anyhow::Error::from)?;
    let props = BasicProperties::default().with_content_type("application/json".into());
    // Mark first: a deliverer that handles the replay at once must not have its new outcome
    // (delivered, or dead again) overwritten by this bookkeeping. If the broker refuses, the
    // dead letter is put back as it was.
    state.store.mark_replayed(d).await?;
    if let Err(e) = state
        .broker
        .publish(JOBS_EXCHANGE, "replay", &body, props)
        .await
    {
        let dead = Delivery {
            connection_id: d.connection_id.clone(),
            status: DeliveryStatus::Dead,
            attempts: d.attempts.clone(),
            next_attempt_at: None,
            dead_letter_id: Some(d.id.clone()),
            updated_at: herald_shared::now_ms(),
        };
        state
            .store
            .record_outcomes(
                &[(d.workspace_id.as_str(), d.event.uuid.as_str(), &dead)],
                std::slice::from_ref(d),
            )
            .await?;
        return Err(e.into());
    }
    metrics::counter!("herald_dead_letters_replayed_total").increment(1);
    Ok(())
}

/// Replays one dead letter.
pub async fn replay_one(
    State(state): State<AppState>,
    SecretKey(ws): SecretKey,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let d = state
        .store
        .get_dead_letter(&ws, &id)
        .await?
        .ok_or(ApiError::NotFound("dead letter"))?;
    replay(&state, &d).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": d.id, "event_id": d.event.uuid, "status": "pending"})),
    ))
}

/// `POST /v1/dead-letters/replay` body.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReplayFilter {
    connection_id: Option<String>,
    event: Option<String>,
}

/// Replays every dead letter that matches: up to 100 before answering 200, more in the
/// background with 202. Both answer `{"count"}`.
pub async fn replay_many(
    State(state): State<AppState>,
    SecretKey(ws): SecretKey,
    crate::extract::RawBody(body): crate::extract::RawBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let f: ReplayFilter = if body.iter().all(u8::is_ascii_whitespace) {
        ReplayFilter::default()
    } else {
        crate::extract::parse_json(&body)?
    };
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
        .list_dead_letters(&ws, &filter, None, usize::MAX, usize::MAX)
        .await?;
    let count = all.len();
    if count <= SYNC_REPLAY_LIMIT {
        for d in &all {
            replay(&state, d).await?;
        }
        return Ok((
            StatusCode::OK,
            Json(json!({"count": count, "status": "replayed"})),
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
        Json(json!({"count": count, "status": "replaying"})),
    ))
}
