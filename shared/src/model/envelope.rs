//! The event envelope: what producers send, what travels through the broker, and the body a
//! receiver gets.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{check_event_type, check_token, FieldError};

/// What a producer sends, over HTTP or straight to the broker. `uuid` and `time_created` are
/// filled in at intake when absent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Event type, e.g. `order.completed`.
    pub event: Option<String>,
    /// Resource type, e.g. `order`.
    pub resource: Option<String>,
    /// The resource's id, e.g. `ord_77`.
    pub resource_id: Option<String>,
    /// Anything JSON, `null` included; passed through untouched. `None` only when absent.
    #[serde(default, deserialize_with = "present")]
    pub payload: Option<Box<RawValue>>,
    /// The producer's id for this event; the idempotency key.
    pub uuid: Option<String>,
    /// Set by intake; a direct producer may leave it out.
    pub time_created: Option<i64>,
}

/// A validated event with its id and creation time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Event id, the `webhook-id` of every request for it.
    pub uuid: String,
    /// Event type.
    pub event: String,
    /// Resource type.
    pub resource: String,
    /// The resource's id.
    pub resource_id: String,
    /// The producer's payload, byte for byte.
    pub payload: Box<RawValue>,
    /// Unix milliseconds at intake.
    pub time_created: i64,
}

/// The longest event or resource type.
pub const MAX_TYPE_LEN: usize = 128;

impl Envelope {
    /// Validates and completes the envelope; `new_uuid` is called only when none was given.
    pub fn into_event(
        self,
        new_uuid: impl FnOnce() -> String,
        now_ms: i64,
    ) -> Result<Event, FieldError> {
        let event = required("event", self.event)?;
        if event.contains('*') {
            return Err(FieldError::new(
                "event",
                "wildcards belong in rules, not events",
            ));
        }
        check_event_type("event", &event)?;
        let resource = required("resource", self.resource)?;
        check_token("resource", &resource, MAX_TYPE_LEN)?;
        let resource_id = required("resource_id", self.resource_id)?;
        if resource_id.is_empty() || resource_id.len() > 256 {
            return Err(FieldError::new(
                "resource_id",
                "must be 1 to 256 characters",
            ));
        }
        if resource_id.chars().any(char::is_control) {
            return Err(FieldError::new(
                "resource_id",
                "must not contain control characters",
            ));
        }
        let payload = self
            .payload
            .ok_or_else(|| FieldError::new("payload", "is required"))?;
        check_payload_depth(payload.get())?;
        let uuid = match self.uuid {
            Some(u) => {
                check_token("uuid", &u, 128)?;
                u
            }
            None => new_uuid(),
        };
        let time_created = match self.time_created {
            Some(t) if t <= 0 => {
                return Err(FieldError::new("time_created", "must be Unix milliseconds"))
            }
            Some(t) => t,
            None => now_ms,
        };
        Ok(Event {
            uuid,
            event,
            resource,
            resource_id,
            payload,
            time_created,
        })
    }
}

/// How deeply a payload may nest arrays and objects. Herald passes payloads through as raw
/// bytes, but the history API and most receivers parse them, and parsers stop (or overflow their
/// stack) somewhere past 100 levels.
pub const MAX_PAYLOAD_DEPTH: usize = 64;

/// Refuses a payload nested deeper than [`MAX_PAYLOAD_DEPTH`]. `raw` is valid JSON; this only
/// counts brackets outside strings, without recursion, so any depth is safe to check.
pub fn check_payload_depth(raw: &str) -> Result<(), FieldError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in raw.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_PAYLOAD_DEPTH {
                    return Err(FieldError::new(
                        "payload",
                        format!(
                            "must not nest arrays and objects more than {MAX_PAYLOAD_DEPTH} deep"
                        ),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// A field that is there, whatever its value (even `null`, which `Option` would swallow).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

fn required(field: &str, value: Option<String>) -> Result<String, FieldError> {
    value.ok_or_else(|| FieldError::new(field, "is required"))
}

/// The body a receiver gets, in the documented field order.
#[derive(Serialize)]
struct Outgoing<'a> {
    uuid: &'a str,
    event: &'a str,
    resource: &'a str,
    resource_id: &'a str,
    payload: &'a RawValue,
    time_created: i64,
    time_sent: i64,
}

impl Event {
    /// The exact bytes sent (and signed) for this event at `time_sent` (Unix milliseconds).
    pub fn body(&self, time_sent: i64) -> Vec<u8> {
        let out = Outgoing {
            uuid: &self.uuid,
            event: &self.event,
            resource: &self.resource,
            resource_id: &self.resource_id,
            payload: &self.payload,
            time_created: self.time_created,
            time_sent,
        };
        // Serialising plain strings, integers and already-valid raw JSON cannot fail.
        serde_json::to_vec(&out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Event, FieldError> {
        let env: Envelope = serde_json::from_str(json).expect("json");
        env.into_event(|| "evt_new".into(), 1_000)
    }

    #[test]
    fn a_full_envelope_becomes_an_event() {
        let e = parse(
            r#"{"event":"order.completed","resource":"order","resource_id":"ord_77",
                "payload":{"order_id":"ord_77","total_cents":12900}}"#,
        )
        .expect("valid");
        assert_eq!(e.uuid, "evt_new");
        assert_eq!(e.time_created, 1_000);
        let body: serde_json::Value = serde_json::from_slice(&e.body(1_500)).expect("json");
        assert_eq!(body["payload"]["total_cents"], 12900);
        assert_eq!(body["time_sent"], 1_500);
        assert_eq!(body["uuid"], "evt_new");
    }

    #[test]
    fn the_payload_passes_through_byte_for_byte() {
        let e = parse(
            r#"{"event":"a","resource":"r","resource_id":"1","payload":{"b":1.50,  "a":[1e3]}}"#,
        )
        .expect("valid");
        let body = String::from_utf8(e.body(2)).expect("utf8");
        assert!(
            body.contains(r#""payload":{"b":1.50,  "a":[1e3]}"#),
            "{body}"
        );
        assert!(body.starts_with(r#"{"uuid":"evt_new","event":"a","resource":"r""#));
    }

    #[test]
    fn missing_and_bad_fields_are_named() {
        let err = parse(r#"{"resource":"r","resource_id":"1","payload":{}}"#).expect_err("bad");
        assert_eq!(err.field, "event");
        let err = parse(r#"{"event":"a b","resource":"r","resource_id":"1","payload":{}}"#)
            .expect_err("bad");
        assert_eq!(err.field, "event");
        let err = parse(r#"{"event":"a","resource":"r","resource_id":"1"}"#).expect_err("bad");
        assert_eq!(err.field, "payload");
        let err = parse(r#"{"event":"a","resource":"r","resource_id":"1","payload":1,"uuid":""}"#)
            .expect_err("bad");
        assert_eq!(err.field, "uuid");
    }

    #[test]
    fn deeply_nested_payloads_are_refused_without_recursion() {
        let nested = |n: usize| {
            format!(
                r#"{{"event":"a","resource":"r","resource_id":"1","payload":{}{}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert!(parse(&nested(MAX_PAYLOAD_DEPTH)).is_ok());
        assert_eq!(
            parse(&nested(MAX_PAYLOAD_DEPTH + 1))
                .expect_err("too deep")
                .field,
            "payload"
        );
        assert!(parse(&nested(200_000)).is_err());
        let strings = format!(
            r#"{{"event":"a","resource":"r","resource_id":"1","payload":{{"s":"{}\"[{{"}}}}"#,
            "[".repeat(500)
        );
        assert!(
            parse(&strings).is_ok(),
            "brackets inside strings do not count"
        );
    }

    #[test]
    fn a_null_payload_is_passed_through_not_called_missing() {
        // Found by the envelope property test: `"payload": null` was refused as "is required".
        let e = parse(r#"{"event":"a","resource":"a","resource_id":"¡","payload":null}"#)
            .expect("null is a JSON payload");
        let body = String::from_utf8(e.body(2)).expect("utf8");
        assert!(body.contains(r#""payload":null"#), "{body}");
        let err = parse(r#"{"event":"a","resource":"a","resource_id":"1"}"#).expect_err("absent");
        assert_eq!(err.field, "payload");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<Envelope, _> = serde_json::from_str(
            r#"{"event":"a","resource":"r","resource_id":"1","payload":1,"evnt":"x"}"#,
        );
        assert!(r.is_err());
    }
}
