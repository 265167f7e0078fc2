//! Every message Herald publishes, one typed method per kind. This is the only place that
//! chooses an exchange, a routing key, headers and a body; a body that cannot be serialised is
//! an error, never an empty message. Every publish is persistent and waits for the broker's
//! confirm (see [`Broker::publish`]).

use std::sync::Arc;
use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use serde::Serialize;

use super::topology::{
    DEAD_EXCHANGE, EVENTS_EXCHANGE, EVENTS_ORDERED_EXCHANGE, EVENTS_WAIT_QUEUE, JOBS_EXCHANGE,
    QUARANTINE_EXCHANGE, RETRY_EXCHANGE,
};
use super::{Broker, BrokerError, Rejection, QUEUE_HEADER, REASON_HEADER, WORKSPACE_HEADER};
use crate::model::JobGroup;
use crate::retry::ladder_routing_key;
use crate::store::dead_letters::DeadLetter;

/// A message could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The body did not serialise (a bug: Herald's own types always do).
    #[error("cannot serialise the {kind} message: {source}")]
    Encode {
        /// Which kind of message.
        kind: &'static str,
        /// Why.
        source: serde_json::Error,
    },
    /// The broker did not take it.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Why a jobs message is published to the jobs queue; it is its routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobsSource {
    /// The router expanded events.
    Routed,
    /// A dead letter replayed by support staff.
    Replay,
    /// A rule's test event.
    Test,
    /// Jobs a deliverer did not start before shutting down, handed back untouched.
    HandBack,
}

impl JobsSource {
    fn routing_key(self) -> &'static str {
        match self {
            JobsSource::Routed | JobsSource::HandBack => "jobs",
            JobsSource::Replay => "replay",
            JobsSource::Test => "test",
        }
    }
}

/// Where a quarantined message came from, carried in its headers for whoever inspects it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Origin<'a> {
    /// The queue it was consumed from.
    pub queue: &'a str,
    /// Its routing key, when it matters (producers' events).
    pub routing_key: Option<&'a str>,
    /// Its workspace, when known.
    pub workspace_id: Option<&'a str>,
}

/// The typed publishing side of a [`Broker`].
#[derive(Clone)]
pub struct Publisher {
    broker: Arc<Broker>,
}

fn json_props() -> BasicProperties {
    BasicProperties::default().with_content_type("application/json".into())
}

fn encode(kind: &'static str, value: &impl Serialize) -> Result<Vec<u8>, PublishError> {
    serde_json::to_vec(value).map_err(|source| PublishError::Encode { kind, source })
}

fn string_header(table: &mut FieldTable, name: &str, value: &str) {
    table.insert(name.into(), AMQPValue::LongString(value.to_string().into()));
}

impl Publisher {
    /// Publishes through `broker`.
    pub fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
    }

    /// The broker underneath (readiness, consumer channels).
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Events of one workspace, as one message (a JSON array) for the router.
    pub async fn events<E: Serialize>(
        &self,
        workspace_id: &str,
        events: &[E],
    ) -> Result<(), PublishError> {
        self.events_to(EVENTS_EXCHANGE, workspace_id, workspace_id, events)
            .await
    }

    /// Events of one workspace whose order matters (it has an ordered connection), as one
    /// message for the router that holds the ordered queue.
    pub async fn events_ordered<E: Serialize>(
        &self,
        workspace_id: &str,
        events: &[E],
    ) -> Result<(), PublishError> {
        self.events_to(EVENTS_ORDERED_EXCHANGE, workspace_id, workspace_id, events)
            .await
    }

    /// Events of one workspace that another router is expanding right now: they wait a moment
    /// in their own queue, then come back to the events queue.
    pub async fn events_later<E: Serialize>(
        &self,
        workspace_id: &str,
        events: &[E],
    ) -> Result<(), PublishError> {
        // The default exchange routes by queue name.
        self.events_to("", EVENTS_WAIT_QUEUE, workspace_id, events)
            .await
    }

    async fn events_to<E: Serialize>(
        &self,
        exchange: &str,
        routing_key: &str,
        workspace_id: &str,
        events: &[E],
    ) -> Result<(), PublishError> {
        let body = encode("events", &events)?;
        let mut headers = FieldTable::default();
        string_header(&mut headers, WORKSPACE_HEADER, workspace_id);
        let props = json_props().with_headers(headers);
        Ok(self
            .broker
            .publish(exchange, routing_key, &body, props)
            .await?)
    }

    /// Delivery jobs for the deliverers.
    pub async fn jobs(&self, groups: &[JobGroup], source: JobsSource) -> Result<(), PublishError> {
        let body = encode("jobs", &groups)?;
        Ok(self
            .broker
            .publish(JOBS_EXCHANGE, source.routing_key(), &body, json_props())
            .await?)
    }

    /// Heads of ordered sequences, as their sequences hold them (one-job groups, JSON), in one
    /// jobs message for the deliverers.
    pub async fn ordered_heads(&self, bodies: &[String]) -> Result<(), PublishError> {
        if bodies.is_empty() {
            return Ok(());
        }
        let body = format!("[{}]", bodies.join(","));
        Ok(self
            .broker
            .publish(
                JOBS_EXCHANGE,
                JobsSource::Routed.routing_key(),
                body.as_bytes(),
                json_props(),
            )
            .await?)
    }

    /// One group (a single job, so it retries on its own) back to the jobs queue after `after`,
    /// through the delay ladder: a retry, or a deferral of a job whose connection had no room.
    pub async fn retry_after(&self, group: &JobGroup, after: Duration) -> Result<(), PublishError> {
        let body = encode("retry", &[group])?;
        Ok(self
            .broker
            .publish(
                RETRY_EXCHANGE,
                &ladder_routing_key(after),
                &body,
                json_props(),
            )
            .await?)
    }

    /// A delivery whose schedule ran out (or that was stopped), to the dead-letter archive.
    pub async fn dead_letter(&self, dead: &DeadLetter) -> Result<(), PublishError> {
        let body = encode("dead letter", dead)?;
        let mut headers = FieldTable::default();
        string_header(&mut headers, REASON_HEADER, &dead.reason);
        string_header(&mut headers, WORKSPACE_HEADER, &dead.workspace_id);
        Ok(self
            .broker
            .publish(DEAD_EXCHANGE, "", &body, json_props().with_headers(headers))
            .await?)
    }

    /// Sets `body` (a whole message or one part of it) aside in the quarantine queue with its
    /// reason and origin, and counts it in `herald_quarantined_total{reason}`.
    pub async fn quarantine(
        &self,
        body: &[u8],
        rejection: &Rejection,
        origin: Origin<'_>,
        properties: Option<&BasicProperties>,
    ) -> Result<(), PublishError> {
        tracing::warn!(reason = %rejection.reason, queue = origin.queue, "quarantining a message");
        let mut headers = properties
            .and_then(|p| p.headers().clone())
            .unwrap_or_default();
        string_header(&mut headers, REASON_HEADER, &rejection.reason);
        string_header(&mut headers, QUEUE_HEADER, origin.queue);
        if let Some(key) = origin.routing_key {
            string_header(&mut headers, "herald-routing-key", key);
        }
        if let Some(ws) = origin.workspace_id {
            string_header(&mut headers, WORKSPACE_HEADER, ws);
        }
        let props = properties
            .cloned()
            .unwrap_or_else(json_props)
            .with_headers(headers);
        self.broker
            .publish(QUARANTINE_EXCHANGE, "", body, props)
            .await?;
        metrics::counter!("herald_quarantined_total", "reason" => rejection.label).increment(1);
        Ok(())
    }

    /// A message whose handler crashed once, straight back to the queue it came from (through
    /// the default exchange, which routes by queue name) with its crash count in `headers`.
    pub async fn again_after_crash(
        &self,
        queue: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        Ok(self.broker.publish("", queue, body, properties).await?)
    }
}
