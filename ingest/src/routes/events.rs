//! Event intake and history.
//!
//! Intake answers 202 only after the broker confirmed the message to disk. Requests share one
//! confirm-mode channel, so their confirms pipeline instead of queueing behind each other; a
//! bulk request goes to the broker as a few large messages, not one per event, and single-event
//! requests arriving together are sent as one message (see [`crate::batcher`]).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use futures::future::join_all;
use herald_shared::model::{Envelope, Event};
use herald_shared::ratelimit::Decision;
use herald_shared::store::history::{EventFilter, EVENT_STATUSES};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::auth::{AnyKey, Reader};
use crate::error::ApiError;
use crate::extract::{parse_object, ApiQuery, RawBody};
use crate::keys::{no_answer_in_time, KNOWN_KEY_WAIT};
use crate::openapi::{ErrorDetail, ListOf, Refused};
use crate::paging::{filter_token, list as list_body, page};
use crate::schemas::{Cursor, EnvelopeSchema, EventRecordSchema, EventStatus, TokenFilter};
use crate::state::AppState;

/// Most events in one broker message.
const EVENTS_PER_MESSAGE: usize = 500;

/// One message of a workspace's events, to the ordered events queue when `ordered`.
async fn publish_chunk(
    state: &AppState,
    ws: &str,
    events: &[Event],
    ordered: bool,
) -> Result<(), herald_shared::amqp::PublishError> {
    if ordered {
        state.publisher.events_ordered(ws, events).await
    } else {
        state.publisher.events(ws, events).await
    }
}

fn validate(envelope: Envelope) -> Result<Event, ApiError> {
    Ok(envelope.into_event(herald_shared::ids::new_event_id, herald_shared::now_ms())?)
}

/// Counts `events` against the key's intake limit (`HERALD_INTAKE_RATE_LIMIT_PER_S`). When
/// Redis cannot be asked within [`KNOWN_KEY_WAIT`], intake goes on: an outage of the limiter must not refuse events the
/// broker could take. That is logged and counted in `herald_rate_limiter_errors_total`.
async fn limit_intake(state: &AppState, key_hash: &str, events: usize) -> Result<(), ApiError> {
    let per_second = state.settings.intake_rate_limit_per_s;
    if per_second == 0 {
        return Ok(());
    }
    let cost = u32::try_from(events).unwrap_or(u32::MAX);
    let key = format!("intake:{key_hash}");
    let check = state.limiter.check(&key, per_second, cost);
    match tokio::time::timeout(KNOWN_KEY_WAIT, check)
        .await
        .unwrap_or_else(|_| Err(no_answer_in_time()))
    {
        Ok(Decision::Allowed) => Ok(()),
        Ok(Decision::Limited { retry_after }) => {
            reject("rate_limited");
            metrics::counter!("herald_rate_limited_total", "scope" => "intake").increment(1);
            Err(ApiError::RateLimited {
                retry_after_secs: retry_after.as_secs_f64().ceil() as u64,
            })
        }
        Err(e) => {
            tracing::warn!(error = %e, "intake rate limiter unavailable; accepting without a limit");
            metrics::counter!("herald_rate_limiter_errors_total", "scope" => "intake").increment(1);
            Ok(())
        }
    }
}

/// `POST /v1/events`: one envelope.
#[utoipa::path(post, path = "/v1/events", tag = "events", request_body = EnvelopeSchema, responses((status = 202, description = "Accepted, confirmed by the broker", body = Accepted), Refused))]
pub async fn create(
    State(state): State<AppState>,
    AnyKey {
        workspace_id: ws,
        key_hash,
    }: AnyKey,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    limit_intake(&state, &key_hash, 1).await?;
    let envelope: Envelope = parse_object(&body).inspect_err(|_| reject("invalid"))?;
    if envelope.time_created.is_some() {
        reject("invalid");
        return Err(ApiError::field("time_created", "is set by Herald"));
    }
    let event = validate(envelope).inspect_err(|_| reject("invalid"))?;
    let uuid = event.uuid.clone();
    let ordered = state.ordered(&ws).await;
    state
        .batcher
        .publish(&ws, event, ordered)
        .await
        .inspect_err(|_| reject("broker_unavailable"))?;
    metrics::counter!("herald_events_accepted_total").increment(1);
    Ok((StatusCode::ACCEPTED, Json(Accepted { uuid })))
}

fn reject(reason: &'static str) {
    metrics::counter!("herald_events_rejected_total", "reason" => reason).increment(1);
}

/// `POST /v1/events/bulk` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Bulk {
    /// The events, each an `Envelope`; an invalid one is answered with its error in `results`
    /// without refusing the others. At most HERALD_MAX_BULK_EVENTS (1000 by default).
    #[schema(value_type = Vec<Value>, min_items = 1, max_items = 1000)]
    events: Vec<Box<RawValue>>,
}

/// An accepted event.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// The event's uuid (the producer's, or made by Herald).
    uuid: String,
}

/// What became of each event of a bulk request, in order.
#[derive(utoipa::ToSchema)]
pub struct BulkResults {
    /// One per event sent.
    pub results: Vec<BulkResult>,
}

/// One event of a bulk request: accepted (`uuid`) or refused (`error`, whose `field` is
/// `events[i]...`); exactly one of the two.
#[derive(utoipa::ToSchema)]
pub struct BulkResult {
    /// The accepted event's uuid.
    #[schema(required = false, nullable = false)]
    pub uuid: Option<String>,
    /// Why the event was refused.
    #[schema(required = false, nullable = false)]
    pub error: Option<ErrorDetail>,
}

/// `POST /v1/events/bulk`: each valid event is accepted, each invalid one answered with its
/// error, in order. Nothing is accepted if the broker confirms none of it; when it confirms only
/// part, the rest is answered `unavailable`, one error per event.
#[utoipa::path(post, path = "/v1/events/bulk", tag = "events", request_body = Bulk, responses((status = 202, description = "One result per event, in order", body = BulkResults), Refused))]
pub async fn bulk(
    State(state): State<AppState>,
    AnyKey {
        workspace_id: ws,
        key_hash,
    }: AnyKey,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let bulk: Bulk = parse_object(&body)?;
    if bulk.events.is_empty() {
        return Err(ApiError::field("events", "must hold at least one event"));
    }
    if bulk.events.len() > state.settings.max_bulk_events {
        return Err(ApiError::field(
            "events",
            format!(
                "must hold at most {} events (HERALD_MAX_BULK_EVENTS)",
                state.settings.max_bulk_events
            ),
        ));
    }
    // Every event sent counts, valid or not: each costs the same to look at.
    limit_intake(&state, &key_hash, bulk.events.len()).await?;
    let mut results = Vec::with_capacity(bulk.events.len());
    let mut accepted = Vec::with_capacity(bulk.events.len());
    for (i, raw) in bulk.events.iter().enumerate() {
        let parsed = if raw.get().len() > state.settings.max_event_bytes {
            Err(ApiError::TooLarge)
        } else {
            parse_object::<Envelope>(raw.get().as_bytes()).and_then(|env| {
                if env.time_created.is_some() {
                    return Err(ApiError::field("time_created", "is set by Herald"));
                }
                validate(env)
            })
        };
        match parsed {
            Ok(event) => {
                results.push(json!({"uuid": event.uuid}));
                accepted.push(event);
            }
            Err(e) => {
                reject("invalid");
                let mut err = e.body();
                err["field"] = match (&e, err["field"].as_str()) {
                    (ApiError::Invalid(_), Some(field)) => json!(format!("events[{i}].{field}")),
                    _ => json!(format!("events[{i}]")),
                };
                results.push(json!({"error": err}));
            }
        }
    }
    if !accepted.is_empty() {
        // One broker message per chunk, confirmed separately: when only some are confirmed,
        // those events are accepted (they will be delivered) and the others are answered as
        // unavailable, so the client sends again exactly those. None confirmed: 503.
        let started = std::time::Instant::now();
        let ordered = state.ordered(&ws).await;
        let confirmed = if ordered {
            // One message after the other, and none after one that failed: the client sends
            // the refused events again, and they come after those accepted, as in the array.
            let mut confirmed = Vec::new();
            for chunk in accepted.chunks(EVENTS_PER_MESSAGE) {
                if confirmed.iter().any(Result::is_err) {
                    confirmed.push(Err(herald_shared::amqp::PublishError::Broker(
                        herald_shared::amqp::BrokerError::Unavailable(
                            "an earlier part of this ordered request was not confirmed".into(),
                        ),
                    )));
                } else {
                    confirmed.push(publish_chunk(&state, &ws, chunk, true).await);
                }
            }
            confirmed
        } else {
            join_all(
                accepted
                    .chunks(EVENTS_PER_MESSAGE)
                    .map(|chunk| publish_chunk(&state, &ws, chunk, false)),
            )
            .await
        };
        metrics::histogram!("herald_intake_confirm_seconds")
            .record(started.elapsed().as_secs_f64());
        let chunk_ok: Vec<bool> = confirmed.iter().map(Result::is_ok).collect();
        if let Some(Err(e)) = confirmed
            .into_iter()
            .find(Result::is_err)
            .filter(|_| !chunk_ok.contains(&true))
        {
            reject("broker_unavailable");
            return Err(e.into());
        }
        let unconfirmed = mark_unconfirmed(&mut results, &chunk_ok, EVENTS_PER_MESSAGE);
        if unconfirmed > 0 {
            metrics::counter!("herald_events_rejected_total", "reason" => "broker_unavailable")
                .increment(unconfirmed as u64);
        }
        metrics::counter!("herald_events_accepted_total")
            .increment((accepted.len() - unconfirmed) as u64);
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"results": results}))))
}

/// Turns the results of events whose broker message was not confirmed into an `unavailable`
/// error naming the event. `chunk_ok[k]` says whether the k-th message (the k-th run of
/// `per_message` accepted events, in order) was confirmed. Returns how many were turned.
fn mark_unconfirmed(results: &mut [Value], chunk_ok: &[bool], per_message: usize) -> usize {
    let mut turned = 0;
    let accepted = results
        .iter_mut()
        .enumerate()
        .filter(|(_, r)| r.get("uuid").is_some());
    for (n, (i, result)) in accepted.enumerate() {
        if chunk_ok.get(n / per_message).copied().unwrap_or(false) {
            continue;
        }
        *result = json!({"error": {
            "code": "unavailable",
            "message": "the broker did not confirm this event; nothing of it was accepted, send it again",
            "field": format!("events[{i}]"),
        }});
        turned += 1;
    }
    turned
}

/// `GET /v1/events` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only events with this status.
    #[param(value_type = Option<EventStatus>)]
    status: Option<String>,
    /// Only events of this type.
    #[param(value_type = Option<TokenFilter>)]
    event: Option<String>,
    /// 1 to 250; 50 by default.
    #[param(minimum = 1, maximum = 250)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<Cursor>)]
    cursor: Option<String>,
}

/// Events of the workspace, newest first.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(ListQuery), responses((status = 200, description = "A page of events", body = ListOf<EventRecordSchema>), Refused))]
pub async fn list(
    State(state): State<AppState>,
    Reader(ws): Reader,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let (limit, cursor) = page(q.limit, q.cursor.as_deref())?;
    if let Some(s) = &q.status {
        if !EVENT_STATUSES.contains(&s.as_str()) {
            return Err(ApiError::field(
                "status",
                format!("must be one of {}", EVENT_STATUSES.join(", ")),
            ));
        }
    }
    let filter = EventFilter {
        status: q.status.filter(|s| !s.is_empty()),
        event: filter_token("event", q.event)?,
        ..EventFilter::default()
    };
    let (data, next) = state.store.list_events(&ws, &filter, cursor, limit).await?;
    Ok(list_body(data, next))
}

/// One event with its deliveries and every attempt.
#[utoipa::path(get, path = "/v1/events/{uuid}", tag = "events", params(("uuid" = String, Path, description = "Event uuid")), responses((status = 200, description = "The envelope, its status and `deliveries` with every attempt", body = EventRecordSchema), Refused))]
pub async fn get(
    State(state): State<AppState>,
    Reader(ws): Reader,
    Path(uuid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = state
        .store
        .get_event(&ws, &uuid)
        .await?
        .ok_or(ApiError::NotFound("event"))?;
    Ok(Json(
        serde_json::to_value(record).map_err(anyhow::Error::from)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_of_an_unconfirmed_message_are_answered_unavailable_and_the_rest_accepted() {
        // Five results: an invalid event at index 1, four accepted in messages of two.
        let mut results = vec![
            json!({"uuid": "evt_a"}),
            json!({"error": {"code": "invalid_field", "field": "events[1].event"}}),
            json!({"uuid": "evt_b"}),
            json!({"uuid": "evt_c"}),
            json!({"uuid": "evt_d"}),
        ];
        // The first message (a, b) was confirmed, the second (c, d) was not.
        let turned = mark_unconfirmed(&mut results, &[true, false], 2);
        assert_eq!(turned, 2);
        assert_eq!(results[0]["uuid"], "evt_a");
        assert_eq!(results[1]["error"]["field"], "events[1].event");
        assert_eq!(results[2]["uuid"], "evt_b");
        for i in [3, 4] {
            assert_eq!(results[i]["error"]["code"], "unavailable");
            assert_eq!(results[i]["error"]["field"], format!("events[{i}]"));
        }
    }
}
