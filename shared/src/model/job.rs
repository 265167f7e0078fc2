//! Delivery jobs as they travel through the broker.
//!
//! A jobs message holds a list of [`JobGroup`]s, and each group one event and the deliveries of
//! it still to be made. Grouping keeps the payload once per event however many connections it
//! fans out to, and lets the router put many events' jobs in one broker message; a retry is a
//! group with a single job, so every delivery still retries and dead-letters on its own.

use serde::{Deserialize, Serialize};

use super::{Attempt, Event};

/// One event and the deliveries of it to make.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobGroup {
    /// The workspace of the event.
    pub workspace_id: String,
    /// The event.
    pub event: Event,
    /// One per connection.
    pub jobs: Vec<JobItem>,
}

/// One delivery of an event to a connection, with what has been tried so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobItem {
    /// The destination.
    pub connection_id: String,
    /// Attempts made before this one, oldest first (empty on the first try).
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// How many of `attempts` came before the current round of the retry schedule: a replayed
    /// dead letter starts a new round, with its earlier attempts kept in its history.
    #[serde(default)]
    pub round_start: usize,
    /// Times this job went back through the delay ladder without an attempt because its
    /// connection was busy or rate-limited (each wait is longer, up to half a minute).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deferrals: u32,
    /// Sent again by a person (a dead letter replayed): goes out at once, past an open circuit
    /// breaker, as its probe. Only the first attempt after the replay.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
    /// A stand-in published while this job's attempt was still running, after its message was
    /// acknowledged (so one hanging request holds no prefetch slot). It is sent only if the
    /// history holds no newer attempt: the deliverer that ran it died before recording one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stand_in: bool,
    /// Set when its connection delivers in order: the key it is sequenced under. Such a job
    /// is published only as the head of its key's sequence, and sent only while it still is
    /// (see `store::ordering`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<OrderSlot>,
}

/// Where an ordered job stands in its connection's sequences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSlot {
    /// The key (`r:<resource>:<resource_id>`, or `c` for the whole connection).
    pub key: String,
    /// The key's backlog was full when the router came to it: the job is dead-lettered at
    /// once (it can be replayed) instead of waiting without bound.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overflow: bool,
    /// Which copy of the job this is. Whoever publishes the head of a key again (the next
    /// head, a retry, the sweep) gives it a new copy token, and only the copy its sequence
    /// names may be sent: an older copy (a retry the sweep replaced, a deferred duplicate) is
    /// dropped instead of starting a second chain of attempts.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub copy: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl JobItem {
    /// A first try.
    pub fn new(connection_id: impl Into<String>) -> Self {
        Self {
            connection_id: connection_id.into(),
            attempts: Vec::new(),
            round_start: 0,
            deferrals: 0,
            replay: false,
            stand_in: false,
            order: None,
        }
    }
}

impl JobItem {
    /// Attempts made in the current round of the schedule.
    pub fn attempts_this_round(&self) -> usize {
        self.attempts.len().saturating_sub(self.round_start)
    }
}

/// The deterministic id of one delivery: the same on every retry and redelivery.
pub fn delivery_id(event_uuid: &str, connection_id: &str) -> String {
    format!("{event_uuid}.{connection_id}")
}
