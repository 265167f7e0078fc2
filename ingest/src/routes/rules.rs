//! Rules: create, list, read, change, delete, and send a test event.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use herald_shared::amqp::JobsSource;
use herald_shared::filter::{parse_payload, Filter};
use herald_shared::model::rule::SEND_WEBHOOK;
use herald_shared::model::{Event, JobGroup, JobItem, Rule};
use herald_shared::store::history::Routed;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::auth::{Editor, Reader};
use crate::error::ApiError;
use crate::extract::{is_blank, not_null, ApiJson, ApiQuery, NoQuery, RawBody};
use crate::openapi::{ListOf, Refused};
use crate::schemas::{
    EventPattern, Payload, ResourcePattern, RuleAction, RuleFilter, RuleSchema, Token,
};
use crate::state::AppState;

/// `POST /v1/rules` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRule {
    /// The event types it matches.
    #[schema(value_type = EventPattern)]
    event: String,
    /// The resource types it matches.
    #[schema(value_type = ResourcePattern)]
    resource: String,
    /// A connection of this workspace.
    #[schema(value_type = Token)]
    connection_id: String,
    /// What to do: `send_webhook`.
    #[schema(value_type = RuleAction)]
    action: String,
    /// Disabled rules match nothing; `true` by default.
    enabled: Option<bool>,
    /// Only events that pass this filter match; absent or `null` for every event.
    #[schema(value_type = Option<RuleFilter>)]
    filter: Option<Value>,
}

/// `PATCH /v1/rules/{id}` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RulePatch {
    /// The event types it matches.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = EventPattern, required = false)]
    event: Option<String>,
    /// The resource types it matches.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = ResourcePattern, required = false)]
    resource: Option<String>,
    /// A connection of this workspace.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = Token, required = false)]
    connection_id: Option<String>,
    /// What to do: `send_webhook`.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = RuleAction, required = false)]
    action: Option<String>,
    /// Disabled rules match nothing.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    enabled: Option<bool>,
    /// A new filter; `null` removes it (every event of the rule's type matches again).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<RuleFilter>, required = false)]
    filter: Option<Option<Value>>,
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<Value>>, D::Error> {
    Option::<Value>::deserialize(d).map(Some)
}

/// Compiles a filter from a request, refusing it with the part at fault (`filter.<path>`).
fn compile_filter(filter: Option<Value>) -> Result<Option<Filter>, ApiError> {
    match filter {
        None | Some(Value::Null) => Ok(None),
        Some(v) => Ok(Some(Filter::compile(v)?)),
    }
}

/// A test event: on its way (202), or rejected by the rule's filter and sent nowhere (200).
#[derive(Serialize, utoipa::ToSchema)]
pub struct TestSent {
    /// The test event's uuid: its history shows the outcome (`no_match` when filtered).
    uuid: String,
    /// Its type.
    event: String,
    /// True when the rule's filter rejected the test event: it was recorded, not sent.
    filtered: bool,
    /// When filtered: the first top-level key of the filter (a path, `$and`, `$or` or `$not`)
    /// the event failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected_by: Option<String>,
}

async fn check_connection(state: &AppState, ws: &str, id: &str) -> Result<(), ApiError> {
    if id.len() > 128 || state.store.get_connection(ws, id).await?.is_none() {
        return Err(ApiError::field(
            "connection_id",
            "no such connection in this workspace",
        ));
    }
    Ok(())
}

async fn load(state: &AppState, ws: &str, id: &str) -> Result<Rule, ApiError> {
    state
        .store
        .get_rule(ws, id)
        .await?
        .ok_or(ApiError::NotFound("rule"))
}

/// Creates a rule.
#[utoipa::path(post, path = "/v1/rules", tag = "rules", request_body = NewRule, responses((status = 201, description = "The rule", body = RuleSchema), Refused))]
pub async fn create(
    State(state): State<AppState>,
    Editor(ws): Editor,
    ApiJson(body): ApiJson<NewRule>,
) -> Result<(StatusCode, Json<Rule>), ApiError> {
    let now = herald_shared::now_ms();
    let rule = Rule {
        id: herald_shared::ids::new_id("rul"),
        workspace_id: ws.clone(),
        event: body.event,
        resource: body.resource,
        connection_id: body.connection_id,
        action: body.action,
        enabled: body.enabled.unwrap_or(true),
        filter: compile_filter(body.filter)?,
        created_at: now,
        updated_at: now,
    };
    rule.validate()?;
    check_connection(&state, &ws, &rule.connection_id).await?;
    state.store.put_rule(&rule).await?;
    Ok((StatusCode::CREATED, Json(rule)))
}

/// Lists the workspace's rules, newest first.
#[utoipa::path(get, path = "/v1/rules", tag = "rules", responses((status = 200, description = "The rules (one page)", body = ListOf<RuleSchema>), Refused))]
pub async fn list(
    State(state): State<AppState>,
    Reader(ws): Reader,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Json<Value>, ApiError> {
    let data = state.store.list_rules(&ws).await?;
    Ok(Json(json!({"data": data, "next_cursor": null})))
}

/// One rule.
#[utoipa::path(get, path = "/v1/rules/{id}", tag = "rules", params(("id" = String, Path, description = "Rule id")), responses((status = 200, description = "The rule", body = RuleSchema), Refused))]
pub async fn get(
    State(state): State<AppState>,
    Reader(ws): Reader,
    Path(id): Path<String>,
) -> Result<Json<Rule>, ApiError> {
    Ok(Json(load(&state, &ws, &id).await?))
}

/// Changes the given fields.
#[utoipa::path(patch, path = "/v1/rules/{id}", tag = "rules", params(("id" = String, Path, description = "Rule id")), request_body = RulePatch, responses((status = 200, description = "The changed rule", body = RuleSchema), Refused))]
pub async fn update(
    State(state): State<AppState>,
    Editor(ws): Editor,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<RulePatch>,
) -> Result<Json<Rule>, ApiError> {
    let mut rule = load(&state, &ws, &id).await?;
    if let Some(v) = patch.event {
        rule.event = v;
    }
    if let Some(v) = patch.resource {
        rule.resource = v;
    }
    if let Some(v) = patch.action {
        rule.action = v;
    }
    if let Some(v) = patch.enabled {
        rule.enabled = v;
    }
    if let Some(v) = patch.filter {
        rule.filter = compile_filter(v)?;
    }
    if let Some(v) = patch.connection_id {
        check_connection(&state, &ws, &v).await?;
        rule.connection_id = v;
    }
    rule.updated_at = herald_shared::now_ms();
    rule.validate()?;
    state.store.put_rule(&rule).await?;
    Ok(Json(rule))
}

/// Deletes a rule.
#[utoipa::path(delete, path = "/v1/rules/{id}", tag = "rules", params(("id" = String, Path, description = "Rule id")), responses((status = 204, description = "Deleted (no body)"), Refused))]
pub async fn delete(
    State(state): State<AppState>,
    Editor(ws): Editor,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.store.delete_rule(&ws, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("rule"))
    }
}

/// The event type a test of this rule carries: the rule's own type, `prefix.test` for a
/// wildcard, `herald.test` for `*`.
fn test_event_type(pattern: &str) -> String {
    match pattern {
        "*" => "herald.test".into(),
        p => match p.strip_suffix(".*") {
            Some(prefix) => format!("{prefix}.test"),
            None => p.to_string(),
        },
    }
}

/// `POST /v1/rules/{id}/test`: sends the body (any JSON; `{}` when empty) as the payload of a
/// test event to this rule's connection only, through the broker and a deliverer like any
/// other delivery. Answers 202 with the event's uuid, whose history shows the outcome. The
/// event (type as below, resource the rule's or `test`, `resource_id` `test`) goes through
/// the rule's filter first: one it rejects is recorded as `no_match` and not sent, and the
/// answer is 200 with `"filtered": true` and the part of the filter it failed.
#[utoipa::path(post, path = "/v1/rules/{id}/test", tag = "rules", params(("id" = String, Path, description = "Rule id")), request_body = Option<Payload>, responses((status = 202, description = "The test event, on its way", body = TestSent), (status = 200, description = "The test event, rejected by the rule's filter: recorded as `no_match`, not sent", body = TestSent), Refused))]
pub async fn test(
    State(state): State<AppState>,
    Editor(ws): Editor,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<TestSent>), ApiError> {
    let rule = load(&state, &ws, &id).await?;
    // The router sends a disabled connection nothing; a test would only queue a job that is
    // dead-lettered at its turn.
    let connection = state.store.get_connection(&ws, &rule.connection_id).await?;
    if connection.is_some_and(|c| !c.enabled) {
        return Err(ApiError::Conflict(
            "the rule's connection is disabled: enable it to send a test event".into(),
        ));
    }
    let payload: Box<RawValue> = if is_blank(&body) {
        RawValue::from_string("{}".into()).map_err(anyhow::Error::from)?
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadJson(format!("the payload is not valid JSON: {e}")))?
    };
    herald_shared::model::envelope::check_payload_depth(payload.get())?;
    let event = Event {
        uuid: herald_shared::ids::new_event_id(),
        event: test_event_type(&rule.event),
        resource: if rule.resource == "*" {
            "test".into()
        } else {
            rule.resource.clone()
        },
        resource_id: "test".into(),
        payload,
        time_created: herald_shared::now_ms(),
    };
    debug_assert_eq!(rule.action, SEND_WEBHOOK);
    if let Some(filter) = &rule.filter {
        let payload = filter
            .needs_payload()
            .then(|| parse_payload(&event))
            .flatten();
        if let Some(key) = filter.rejected_by(&event, payload.as_ref()) {
            let rejected_by = Some(key.to_string());
            state
                .store
                .record_routed(&[Routed {
                    workspace_id: &ws,
                    event: &event,
                    connection_ids: Vec::new(),
                    skipped: Vec::new(),
                }])
                .await?;
            return Ok((
                StatusCode::OK,
                Json(TestSent {
                    uuid: event.uuid,
                    event: event.event,
                    filtered: true,
                    rejected_by,
                }),
            ));
        }
    }
    let group = JobGroup {
        workspace_id: ws.clone(),
        event: event.clone(),
        jobs: vec![JobItem::new(rule.connection_id.clone())],
    };
    // Publish first, then record: a crash in between must not leave a `pending` history with
    // no job behind it. The record never overwrites, so an outcome recorded first stays.
    state.publisher.jobs(&[group], JobsSource::Test).await?;
    state
        .store
        .record_routed(&[Routed {
            workspace_id: &ws,
            event: &event,
            connection_ids: vec![rule.connection_id.clone()],
            skipped: Vec::new(),
        }])
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TestSent {
            uuid: event.uuid,
            event: event.event,
            filtered: false,
            rejected_by: None,
        }),
    ))
}
