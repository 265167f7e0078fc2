//! Everything Herald says to RabbitMQ.
//!
//! - [`topology`]: the exchanges, queues and bindings, declared idempotently by every service.
//! - [`connection`]: one reconnecting broker connection per process, with a confirming publisher.
//! - [`consumer`]: a consume loop that survives broker restarts and drains on shutdown.

pub mod connection;
pub mod consumer;
pub mod topology;

pub use connection::{Broker, BrokerError};
pub use consumer::{consume, Handled};

use lapin::types::{AMQPValue, FieldTable};

/// The header naming an event's workspace on the events exchange.
pub const WORKSPACE_HEADER: &str = "herald-workspace-id";

/// The header carrying why a message was quarantined or dead-lettered.
pub const REASON_HEADER: &str = "herald-reason";

/// A string header of a message, if present.
pub fn header_str<'a>(headers: &'a Option<FieldTable>, name: &str) -> Option<&'a str> {
    let value = headers.as_ref()?.inner().get(name)?;
    match value {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// A header table of string values.
pub fn headers<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in pairs {
        table.insert(k.into(), AMQPValue::LongString(v.into()));
    }
    table
}
