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

/// Most jobs in one message of [`Publisher::retry_all_after`], as many as the router puts in a
/// jobs message by default.
pub const LADDER_MESSAGE_JOBS: usize = 100;
/// Most bytes of payload in one message of [`Publisher::retry_all_after`] (a message over it
/// holds one group).
pub const LADDER_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Where `groups` are cut into messages of at most [`LADDER_MESSAGE_JOBS`] jobs and
/// [`LADDER_MESSAGE_BYTES`] of payload: the ranges of each message, in order. A group is never
/// split; one over either bound is a message of its own.
pub fn ladder_messages(groups: &[JobGroup]) -> Vec<std::ops::Range<usize>> {
    let mut messages: Vec<std::ops::Range<usize>> = Vec::new();
    let (mut jobs, mut bytes) = (0, 0);
    for (i, group) in groups.iter().enumerate() {
        let (n, size) = (group.jobs.len(), group.event.payload.get().len());
        match messages.last_mut() {
            Some(m) if jobs + n <= LADDER_MESSAGE_JOBS && bytes + size <= LADDER_MESSAGE_BYTES => {
                m.end = i + 1;
            }
            _ => {
                messages.push(i..i + 1);
                (jobs, bytes) = (0, 0);
            }
        }
        jobs += n;
        bytes += size;
    }
    messages
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
        self.retry_all_after(std::slice::from_ref(group), after)
            .await
    }

    /// Groups that all wait `after` (the same rung of the ladder), in as few messages as
    /// [`ladder_messages`] cuts them into, published at once and each confirmed (an error if
    /// any was not; call it per message, as settling does, to know which were). A message that lets go of hundreds of jobs costs a few publishes, not hundreds
    /// (each with its confirm, its encoding and its frames in flight at the same time).
    pub async fn retry_all_after(
        &self,
        groups: &[JobGroup],
        after: Duration,
    ) -> Result<(), PublishError> {
        let key = ladder_routing_key(after);
        let bodies = ladder_messages(groups)
            .into_iter()
            .map(|range| encode("retry", &&groups[range]))
            .collect::<Result<Vec<_>, _>>()?;
        futures::future::try_join_all(bodies.iter().map(|body| {
            self.broker
                .publish(RETRY_EXCHANGE, &key, body, json_props())
        }))
        .await?;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, JobItem};

    fn group(jobs: usize, payload_bytes: usize) -> JobGroup {
        let payload = format!("\"{}\"", "x".repeat(payload_bytes.saturating_sub(2)));
        JobGroup {
            workspace_id: "ws".into(),
            event: Event {
                uuid: "evt".into(),
                event: "e.x".into(),
                resource: "r".into(),
                resource_id: "1".into(),
                payload: serde_json::value::RawValue::from_string(payload).expect("json"),
                time_created: 1,
            },
            jobs: (0..jobs)
                .map(|i| JobItem::new(format!("con_{i}")))
                .collect(),
        }
    }

    #[test]
    fn ladder_messages_hold_at_most_100_jobs_and_4_mib_and_never_split_a_group() {
        // 250 one-job groups: 100, 100, 50.
        let small: Vec<JobGroup> = (0..250).map(|_| group(1, 10)).collect();
        assert_eq!(ladder_messages(&small), vec![0..100, 100..200, 200..250]);
        // Groups of 3 jobs: 33 fit in 100.
        let triples: Vec<JobGroup> = (0..40).map(|_| group(3, 10)).collect();
        assert_eq!(ladder_messages(&triples), vec![0..33, 33..40]);
        // 1.5 MiB payloads: two fit in 4 MiB; one over the bound goes alone.
        let big: Vec<JobGroup> = [1_500_000, 1_500_000, 1_500_000, 5_000_000, 10]
            .iter()
            .map(|b| group(1, *b))
            .collect();
        assert_eq!(ladder_messages(&big), vec![0..2, 2..3, 3..4, 4..5]);
        assert!(ladder_messages(&[]).is_empty());
    }
}
