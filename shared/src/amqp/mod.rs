//! Everything Herald says to RabbitMQ.
//!
//! - [`topology`]: the exchanges, queues and bindings, declared idempotently by every service.
//! - [`connection`]: one reconnecting broker connection per process, with a confirming publisher.
//! - [`publisher`]: every message Herald publishes, one typed method per kind.
//! - [`consumer`]: a consume loop that survives broker restarts, drains on shutdown, and owns
//!   ack, requeue and quarantine.
//! - [`budget`]: the bytes of message bodies a consumer handles at once.

pub mod budget;
pub mod connection;
pub mod consumer;
pub mod publisher;
pub mod topology;

pub use budget::ByteBudget;
pub use connection::{Broker, BrokerError};
pub use consumer::{consume, ConsumeFrom, Handled, Message};
pub use publisher::{JobsSource, Origin, PublishError, Publisher};

use lapin::types::{AMQPValue, FieldTable};

/// The header naming an event's workspace on the events exchange.
pub const WORKSPACE_HEADER: &str = "herald-workspace-id";

/// The header carrying why a message was quarantined or dead-lettered.
pub const REASON_HEADER: &str = "herald-reason";

/// The header naming the queue a quarantined message was consumed from.
pub const QUEUE_HEADER: &str = "herald-queue";

/// Why a message (or part of one) is set aside in quarantine instead of handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// A short, fixed word for metrics (`herald_quarantined_total{reason}`).
    pub label: &'static str,
    /// The whole reason, for the `herald-reason` header and the log.
    pub reason: String,
}

impl Rejection {
    /// A rejection with its metric label and reason.
    pub fn new(label: &'static str, reason: impl Into<String>) -> Self {
        Self {
            label,
            reason: reason.into(),
        }
    }
}

/// A string header of a message, if present.
pub fn header_str<'a>(headers: &'a Option<FieldTable>, name: &str) -> Option<&'a str> {
    let value = headers.as_ref()?.inner().get(name)?;
    match value {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// A header table of string values (what a producer sets on an events message).
pub fn headers<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in pairs {
        table.insert(k.into(), AMQPValue::LongString(v.into()));
    }
    table
}
