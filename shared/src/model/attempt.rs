//! Attempts and deliveries: the history support staff read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One HTTP request to a destination and what came of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attempt {
    /// Unix milliseconds when the request was sent.
    pub at: i64,
    /// The response status, when there was a response.
    pub status_code: Option<u16>,
    /// From sending the request to the end of the response headers, or to the failure.
    pub latency_ms: u64,
    /// Why the attempt failed (timeout, connection refused, status 500 ...), if it did.
    pub error: Option<String>,
    /// The first bytes of the response body.
    pub response_excerpt: Option<String>,
    /// The URL requested.
    pub url: String,
    /// The request's headers, credentials and signatures masked.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub request_headers: BTreeMap<String, String>,
}

/// Where one (event, connection) delivery stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not yet attempted (or replayed and queued again).
    Pending,
    /// A 2xx or 3xx came back.
    Delivered,
    /// Failed; another attempt is scheduled.
    Retrying,
    /// The schedule is used up: in the dead-letter queue.
    Dead,
    /// Not sent: its connection was disabled when the event was routed (final; nothing is
    /// queued for it).
    Skipped,
}

impl DeliveryStatus {
    /// The status's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Dead => "dead",
            DeliveryStatus::Skipped => "skipped",
        }
    }
}

/// One (event, connection) delivery as kept in the history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Delivery {
    /// The destination.
    pub connection_id: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Every attempt, oldest first.
    pub attempts: Vec<Attempt>,
    /// When the next attempt is due (Unix milliseconds), while `retrying`.
    pub next_attempt_at: Option<i64>,
    /// The dead letter's id, while `dead`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_id: Option<String>,
    /// Unix milliseconds of the last change.
    pub updated_at: i64,
}
