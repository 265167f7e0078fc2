//! Rules: which events of a workspace go to which connection.

use serde::{Deserialize, Serialize};

use super::{check_event_type, check_token, FieldError};
use crate::filter::Filter;

/// The only action a rule has today.
pub const SEND_WEBHOOK: &str = "send_webhook";

/// Sends events of a type and resource to a connection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rule {
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
    /// Only events that pass it match; `None` (`null`) lets every event of the type through.
    /// Rules stored before filters existed read as `None`.
    #[serde(default)]
    pub filter: Option<Filter>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

impl Rule {
    /// Checks the fields a caller can set (the connection's existence is the store's job).
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_event_pattern(&self.event)?;
        if self.resource != "*" {
            check_token("resource", &self.resource, super::envelope::MAX_TYPE_LEN)?;
        }
        if self.action != SEND_WEBHOOK {
            return Err(FieldError::new("action", "must be \"send_webhook\""));
        }
        if self.connection_id.is_empty() {
            return Err(FieldError::new("connection_id", "is required"));
        }
        Ok(())
    }
}

/// An event pattern is `*`, an exact type, or `prefix.*`.
pub fn validate_event_pattern(pattern: &str) -> Result<(), FieldError> {
    if pattern == "*" {
        return Ok(());
    }
    let exact = pattern.strip_suffix(".*").unwrap_or(pattern);
    check_event_type("event", exact)
        .map_err(|e| FieldError::new("event", format!("{}; or use prefix.* or *", e.message)))
}
