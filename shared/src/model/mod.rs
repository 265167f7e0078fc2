//! Herald's domain types. Pure data and validation; no I/O.

pub mod attempt;
pub mod connection;
pub mod envelope;
pub mod job;
pub mod rule;
pub mod workspace;

pub use attempt::{Attempt, Delivery, DeliveryStatus};
pub use connection::{Auth, Connection, DeliveryOrder, HttpMethod};
pub use envelope::{Envelope, Event};
pub use job::{JobGroup, JobItem, OrderSlot};
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
pub fn check_token(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
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
pub fn check_name(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
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

/// Checks an event type: a token (see [`check_token`]) of dot-separated parts, none empty
/// (`order.completed`, not `order.` or `.completed` or `order..completed`), with no wildcard.
pub fn check_event_type(field: &str, value: &str) -> Result<(), FieldError> {
    check_token(field, value, envelope::MAX_TYPE_LEN)?;
    if value.split('.').any(str::is_empty) {
        return Err(FieldError::new(
            field,
            "is dot-separated parts, none of them empty (e.g. order.completed)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_are_dotted_tokens() {
        for ok in ["order.completed", "a", "user-v2.created:eu", "x_y.z"] {
            assert!(check_event_type("event", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "order.",
            ".order",
            "a..b",
            "a b",
            "a*",
            "é",
            &"a".repeat(129),
        ] {
            assert_eq!(
                check_event_type("event", bad).expect_err(bad).field,
                "event"
            );
        }
    }

    #[test]
    fn names_refuse_blank_long_and_control_characters() {
        assert!(check_name("name", "Acme, Inc.", 200).is_ok());
        assert!(check_name("name", "  ", 200).is_err());
        assert!(check_name("name", &"é".repeat(201), 200).is_err());
        assert!(check_name("name", "a\u{0}b", 200).is_err());
    }
}
