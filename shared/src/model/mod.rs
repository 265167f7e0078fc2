//! Herald's domain types. Pure data and validation; no I/O.

pub mod attempt;
pub mod connection;
pub mod envelope;
pub mod job;
pub mod rule;
pub mod workspace;

pub use attempt::{Attempt, Delivery, DeliveryStatus};
pub use connection::{Auth, Connection, HttpMethod};
pub use envelope::{Envelope, Event};
pub use job::{JobGroup, JobItem};
pub use rule::Rule;
pub use workspace::{ApiKey, KeyScope, Workspace};

/// Input that fails validation: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field, as the caller spelled it (`event`, `events[3].payload`, `url`).
    pub field: String,
    /// A sentence saying what to fix.
    pub message: String,
}

impl FieldError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error, for a field inside a list or object (`events[3].event`).
    pub fn within(self, parent: &str) -> Self {
        Self {
            field: format!("{parent}.{}", self.field),
            message: self.message,
        }
    }
}

/// Checks a name-like token: 1 to `max` characters of letters, digits and `_ - . :`.
pub(crate) fn check_token(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
    {
        return Err(FieldError::new(
            field,
            "may contain only letters, digits and _ - . :",
        ));
    }
    Ok(())
}

/// Checks a free-text name: 1 to `max` characters, not blank, no control characters.
pub(crate) fn check_name(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.trim().is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}
