//! Reading an events message. Ingest publishes batches (a JSON array of complete events);
//! direct producers publish one envelope (or an array of them) with the workspace in the
//! `herald-workspace-id` header. Whatever cannot be read is quarantined with its reason.

use herald_shared::model::{Envelope, Event};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// Events read from one message, and the parts of it that were not valid (borrowed from the
/// message body, not copied).
pub struct Parsed<'a> {
    /// The valid events.
    pub events: Vec<Event>,
    /// Invalid parts: the raw JSON and why.
    pub rejected: Vec<(&'a [u8], Rejection)>,
}

/// Why a message (or one item of a batch) is quarantined.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejection {
    /// No workspace header.
    #[error("missing header herald-workspace-id")]
    NoWorkspace,
    /// The body is not JSON.
    #[error("body is not JSON: {0}")]
    NotJson(String),
    /// The workspace does not exist.
    #[error("unknown workspace {0}")]
    UnknownWorkspace(String),
    /// One item is not a valid envelope.
    #[error("invalid envelope: {0}")]
    InvalidEnvelope(String),
}

impl Rejection {
    /// The reason's word in `herald_quarantined_total{reason}`.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::NoWorkspace => "no_workspace",
            Rejection::NotJson(_) => "not_json",
            Rejection::UnknownWorkspace(_) => "unknown_workspace",
            Rejection::InvalidEnvelope(_) => "invalid_envelope",
        }
    }
}

impl From<Rejection> for herald_shared::amqp::Rejection {
    fn from(r: Rejection) -> Self {
        Self::new(r.label(), r.to_string())
    }
}

/// Reads a message body. `message_id` (the AMQP property) makes the ids of events without a
/// `uuid` stable across redeliveries; without it the body's hash does.
pub fn parse<'a>(
    workspace_id: &str,
    body: &'a [u8],
    message_id: Option<&str>,
    now_ms: i64,
) -> Result<Parsed<'a>, Rejection> {
    let trimmed = body.iter().position(|b| !b.is_ascii_whitespace());
    // The items borrow from the body: a bulk message is read without a second copy of itself.
    let items: Vec<&'a RawValue> = match trimmed.map(|i| body[i]) {
        Some(b'[') => {
            serde_json::from_slice(body).map_err(|e| Rejection::NotJson(e.to_string()))?
        }
        _ => vec![serde_json::from_slice(body).map_err(|e| Rejection::NotJson(e.to_string()))?],
    };
    let mut seed = Sha256::new();
    seed.update(workspace_id.as_bytes());
    seed.update([0]);
    match message_id {
        Some(id) => seed.update(id.as_bytes()),
        None => seed.update(body),
    }
    let mut events = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    for (index, raw) in items.into_iter().enumerate() {
        let derived = || {
            let mut h = seed.clone();
            h.update((index as u64).to_be_bytes());
            format!("evt_{}", &hex::encode(h.finalize())[..32])
        };
        let parsed = serde_json::from_str::<Envelope>(raw.get())
            .map_err(|e| e.to_string())
            .and_then(|env| env.into_event(derived, now_ms).map_err(|e| e.to_string()))
            .map_err(Rejection::InvalidEnvelope);
        match parsed {
            Ok(event) => events.push(event),
            Err(reason) => rejected.push((raw.get().as_bytes(), reason)),
        }
    }
    Ok(Parsed { events, rejected })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"{"event":"a.b","resource":"r","resource_id":"1","payload":{"x":1}}"#;

    #[test]
    fn a_direct_envelope_gets_a_stable_id() {
        let a = parse("ws", ONE.as_bytes(), None, 5).expect("valid");
        let b = parse("ws", ONE.as_bytes(), None, 9).expect("valid");
        assert_eq!(a.events.len(), 1);
        assert_eq!(
            a.events[0].uuid, b.events[0].uuid,
            "redelivery keeps the id"
        );
        assert_eq!(a.events[0].time_created, 5);
        let c = parse("ws", ONE.as_bytes(), Some("m-2"), 9).expect("valid");
        assert_ne!(a.events[0].uuid, c.events[0].uuid);
    }

    #[test]
    fn a_batch_keeps_the_valid_and_sets_aside_the_invalid() {
        let body = format!(r#"[{ONE}, {{"event":"a"}}, {ONE}]"#);
        let p = parse("ws", body.as_bytes(), None, 1).expect("array");
        assert_eq!(p.events.len(), 2);
        assert_ne!(p.events[0].uuid, p.events[1].uuid);
        assert_eq!(p.rejected.len(), 1);
        let reason = p.rejected[0].1.to_string();
        assert!(reason.contains("resource"), "{reason}");
        assert_eq!(p.rejected[0].1.label(), "invalid_envelope");
    }

    #[test]
    fn garbage_is_rejected_whole() {
        assert!(matches!(
            parse("ws", b"{nope", None, 1),
            Err(Rejection::NotJson(_))
        ));
    }

    mod properties {
        //! Arbitrary message bodies never panic the router, and every item of a batch is either
        //! an event or set aside. Cases: proptest's default; `PROPTEST_CASES` runs more.

        use super::*;
        use proptest::prelude::*;

        fn item() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(ONE.to_string()),
                "[a-z.]{0,12}".prop_map(|e| format!(
                    r#"{{"event":"{e}","resource":"r","resource_id":"1","payload":[]}}"#
                )),
                any::<i64>().prop_map(|n| n.to_string()),
                Just("null".to_string()),
                Just(
                    r#"{"event":"a","resource":"r","resource_id":"1","payload":{},"x":1}"#
                        .to_string()
                ),
            ]
        }

        proptest! {
            #[test]
            fn any_body_never_panics(
                body in prop::collection::vec(any::<u8>(), 0..512),
                id in proptest::option::of(".{0,20}"),
            ) {
                let _ = parse("ws", &body, id.as_deref(), 1);
            }

            #[test]
            fn every_item_of_a_batch_is_an_event_or_set_aside(
                items in prop::collection::vec(item(), 0..20),
            ) {
                let body = format!("[{}]", items.join(","));
                let p = parse("ws", body.as_bytes(), None, 1).expect("an array is read");
                prop_assert_eq!(p.events.len() + p.rejected.len(), items.len());
                let mut ids: Vec<&str> = p.events.iter().map(|e| e.uuid.as_str()).collect();
                ids.sort_unstable();
                ids.dedup();
                prop_assert_eq!(ids.len(), p.events.len(), "ids within a message are distinct");
            }
        }
    }
}
