//! The document's view of what `herald-shared` stores and the API shows as it is: workspaces,
//! rules, events with their deliveries and attempts, dead letters, breaker changes and rotated
//! secrets. Each mirrors its shared type field for field (names, optionality, documentation).

use std::collections::BTreeMap;

use utoipa::ToSchema;

use super::Payload;

/// A tenant.
#[derive(ToSchema)]
#[schema(as = Workspace)]
pub struct WorkspaceSchema {
    /// `ws_...`.
    pub id: String,
    /// A name for people.
    pub name: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// Sends events of a type and resource to a connection.
#[derive(ToSchema)]
#[schema(as = Rule)]
pub struct RuleSchema {
    /// `rul_...`.
    pub id: String,
    /// The workspace it belongs to.
    pub workspace_id: String,
    /// Event type: exact (`order.completed`), a prefix wildcard (`order.*`) or `*`.
    pub event: String,
    /// Resource type: exact or `*`.
    pub resource: String,
    /// Where matching events go.
    pub connection_id: String,
    /// `send_webhook`.
    pub action: String,
    /// Disabled rules match nothing.
    pub enabled: bool,
    /// Only events that pass it match; `null` when the rule has none.
    #[schema(value_type = Option<super::RuleFilter>)]
    pub filter: Option<serde_json::Value>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

/// One HTTP request to a destination and what came of it.
#[derive(ToSchema, serde::Serialize)]
#[schema(as = Attempt)]
pub struct AttemptSchema {
    /// Unix milliseconds when the request was sent.
    pub at: i64,
    /// The response status, when there was a response.
    pub status_code: Option<u16>,
    /// From sending the request to the end of the response headers, or to the failure.
    pub latency_ms: u64,
    /// Why the attempt failed, if it did.
    pub error: Option<String>,
    /// The first bytes of the response body.
    pub response_excerpt: Option<String>,
    /// The URL requested.
    pub url: String,
    /// The request's headers, credentials and signatures masked (left out when none).
    #[schema(required = false)]
    pub request_headers: BTreeMap<String, String>,
}

/// Where one (event, connection) delivery stands.
#[derive(ToSchema, serde::Serialize)]
#[schema(as = DeliveryStatus, rename_all = "snake_case")]
pub enum DeliveryStatusSchema {
    /// Not yet attempted (or replayed and queued again).
    Pending,
    /// A 2xx or 3xx came back.
    Delivered,
    /// Failed; another attempt is scheduled.
    Retrying,
    /// The schedule is used up: in the dead-letter queue.
    Dead,
    /// Not sent: the connection was disabled when the event was routed (final).
    Skipped,
}

/// One (event, connection) delivery.
#[derive(ToSchema, serde::Serialize)]
#[schema(as = Delivery)]
pub struct DeliverySchema {
    /// The destination.
    pub connection_id: String,
    /// Where it stands.
    pub status: DeliveryStatusSchema,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptSchema>,
    /// When the next attempt is due (Unix milliseconds), while `retrying`.
    pub next_attempt_at: Option<i64>,
    /// The dead letter's id, while `dead`.
    #[schema(required = false, nullable = false)]
    pub dead_letter_id: Option<String>,
    /// Unix milliseconds of the last change.
    pub updated_at: i64,
}

/// An accepted event.
#[derive(ToSchema, serde::Serialize)]
#[schema(as = Event)]
pub struct EventSchema {
    /// Event id, the `webhook-id` of every request for it.
    pub uuid: String,
    /// Event type.
    pub event: String,
    /// Resource type.
    pub resource: String,
    /// The resource's id.
    pub resource_id: String,
    /// The producer's payload, byte for byte.
    #[schema(value_type = Payload)]
    pub payload: (),
    /// Unix milliseconds at intake.
    pub time_created: i64,
}

/// An event with its status and deliveries, as the history shows it.
#[derive(ToSchema, serde::Serialize)]
#[schema(as = EventRecord)]
pub struct EventRecordSchema {
    /// The event.
    #[serde(flatten)]
    pub event: EventSchema,
    /// `pending`, `delivered`, `retrying`, `dead`, `skipped` or `no_match`.
    pub status: EventStatus,
    /// One per matched connection.
    pub deliveries: Vec<DeliverySchema>,
}

/// An event's status: the worst of its deliveries', `no_match` when no rule matched.
#[derive(ToSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Waiting for a first attempt.
    Pending,
    /// Every delivery succeeded.
    Delivered,
    /// A delivery failed and will be tried again.
    Retrying,
    /// A delivery ran out of attempts.
    Dead,
    /// Every matched connection was disabled: nothing was sent.
    Skipped,
    /// No rule matched.
    NoMatch,
}

/// An event as the console finds it: with the workspace it belongs to.
#[derive(ToSchema, serde::Serialize)]
#[schema(as = ConsoleEvent)]
pub struct ConsoleEventSchema {
    /// The event, its status and deliveries.
    #[serde(flatten)]
    pub record: EventRecordSchema,
    /// The workspace.
    pub workspace_id: String,
}

/// A delivery that could not be made.
#[derive(ToSchema)]
#[schema(as = DeadLetter)]
pub struct DeadLetterSchema {
    /// The delivery id (`{event uuid}.{connection id}`), stable across replays.
    pub id: String,
    /// The workspace.
    pub workspace_id: String,
    /// The destination.
    pub connection_id: String,
    /// The event.
    pub event: EventSchema,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptSchema>,
    /// Why it was dead-lettered.
    pub reason: String,
    /// Unix milliseconds.
    pub dead_at: i64,
}

/// A deliverer's breaker for a connection changed state.
#[derive(ToSchema)]
#[schema(as = BreakerChange)]
pub struct BreakerChangeSchema {
    /// Unix milliseconds.
    pub at: i64,
    /// `open`, `half_open` or `closed`.
    pub state: String,
    /// Consecutive failed attempts behind the change.
    pub consecutive_failures: u32,
    /// How long the breaker stays open, when it opened.
    #[schema(required = false, nullable = false)]
    pub open_for_s: Option<u64>,
    /// Which deliverer (host:pid); each keeps its own breaker.
    pub deliverer: String,
}

/// A signing secret that was rotated out and still signs until `expires_at`.
#[derive(ToSchema)]
#[schema(as = PreviousSecret)]
pub struct PreviousSecretSchema {
    /// The old `whsec_` secret (HMAC-SHA256).
    #[schema(value_type = Option<super::Secret>)]
    pub secret: Option<String>,
    /// The old `whpk_` public key (Ed25519).
    #[schema(value_type = Option<super::PublicKey>)]
    pub public_key: Option<String>,
    /// Unix milliseconds after which it no longer signs.
    pub expires_at: i64,
}
