//! The compact text an event's history is kept as: one value per event in its workspace's
//! history hash, small enough to cost about its payload plus a hundred bytes. The API's JSON
//! is rebuilt from it exactly (see [`decode`]).
//!
//! ```text
//! H <time_created> <expanded> <routed>\n     expanded: ms after time_created it was expanded, or -
//! D <connection> <attempts> <len>\n<len bytes of delivery>     one per delivery
//! E <event> <resource> <resource_id as JSON string>\n<payload>  once routed (absent if only an
//!                                                               outcome was written)
//! ```
//! The head and the `D` lines are what Redis scripts read and splice (`scripts`); the event
//! part is never parsed there, so the payload stays byte for byte. A delivery is a JSON array
//! `[status, updated, attempts, next_attempt_at?, dead_letter?]` with `updated` in ms after its
//! last attempt (after `time_created` when none), and each attempt an array
//! `[at, status_code, latency_ms, url, error?, excerpt?, headers?]` with `at` in ms after
//! `time_created`, `url` 0 when it is the previous attempt's, and trailing empty parts left out.
//!
//! Request headers are not stored but rebuilt: Herald always sends `content-type`,
//! `user-agent`, `webhook-id` (the uuid), `webhook-timestamp` (`at` in seconds) and
//! `webhook-signature` (one masked `v1,` value per signing secret); only what differs from
//! that set is kept (custom headers and a masked `authorization`, a second signature, the
//! versions of the signatures when any is not `v1` (`v1a`, Ed25519), a header that was not
//! sent). One consequence: after an upgrade, `user-agent` shows the new version
//! for attempts made before it.

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::model::connection::MASK;
use crate::model::job::delivery_id;
use crate::model::{Attempt, Delivery, DeliveryStatus, Event};

/// A record that is not what Herald writes.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadRecord(String);

fn bad(what: impl Into<String>) -> BadRecord {
    BadRecord(what.into())
}

/// An event's history as decoded.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The event, once routed.
    pub event: Option<Event>,
    /// How many connections it was routed to, once routed.
    pub routed: Option<usize>,
    /// Unix ms when it was expanded, if it was.
    pub expanded_at: Option<i64>,
    /// Its deliveries, by connection id.
    pub deliveries: Vec<Delivery>,
}

/// The event part (`E ...`) of a record.
pub fn event_part(event: &Event) -> String {
    let id = Value::String(event.resource_id.clone());
    format!(
        "E {} {} {id}\n{}",
        event.event,
        event.resource,
        event.payload.get()
    )
}

/// The head line of a new record.
pub fn head(time_created: i64) -> String {
    format!("H {time_created} - -\n")
}

/// A delivery as stored (the body of its `D` line); `time_created` is its event's.
pub fn delivery_body(uuid: &str, time_created: i64, d: &Delivery) -> String {
    let mut attempts = Vec::with_capacity(d.attempts.len());
    let mut previous_url: Option<&str> = None;
    for a in &d.attempts {
        attempts.push(attempt_value(uuid, time_created, a, previous_url));
        previous_url = Some(&a.url);
    }
    let base = d.attempts.last().map_or(time_created, |a| a.at);
    let status = match d.status {
        DeliveryStatus::Pending => "p",
        DeliveryStatus::Delivered => "d",
        DeliveryStatus::Retrying => "r",
        DeliveryStatus::Dead => "x",
        DeliveryStatus::Skipped => "s",
    };
    let mut parts = vec![
        json!(status),
        json!(d.updated_at - base),
        Value::Array(attempts),
    ];
    let dead = match &d.dead_letter_id {
        None => Value::Null,
        Some(id) if *id == delivery_id(uuid, &d.connection_id) => json!(1),
        Some(id) => json!(id),
    };
    parts.push(json!(d.next_attempt_at));
    parts.push(dead);
    trim_nulls(&mut parts);
    Value::Array(parts).to_string()
}

fn attempt_value(uuid: &str, time_created: i64, a: &Attempt, previous_url: Option<&str>) -> Value {
    let url = if previous_url == Some(a.url.as_str()) {
        json!(0)
    } else {
        json!(a.url)
    };
    let headers = headers_value(uuid, a);
    let mut parts = vec![
        json!(a.at - time_created),
        json!(a.status_code),
        json!(a.latency_ms),
        url,
        json!(a.error),
        json!(a.response_excerpt),
        headers,
    ];
    trim_nulls(&mut parts);
    Value::Array(parts)
}

fn trim_nulls(parts: &mut Vec<Value>) {
    while parts.last().is_some_and(Value::is_null) {
        parts.pop();
    }
}

/// The headers Herald always sends with an attempt at `at` of event `uuid`, as the history
/// shows them, with `signatures` masked `v1` signatures.
fn standard_headers(uuid: &str, at: i64, signatures: usize) -> BTreeMap<String, String> {
    standard_headers_versioned(uuid, at, &vec!["v1"; signatures])
}

/// [`standard_headers`] with one masked signature of each version in `versions`.
fn standard_headers_versioned(uuid: &str, at: i64, versions: &[&str]) -> BTreeMap<String, String> {
    let signature = versions
        .iter()
        .map(|v| format!("{v},{MASK}"))
        .collect::<Vec<_>>()
        .join(" ");
    BTreeMap::from([
        ("content-type".to_string(), "application/json".to_string()),
        ("user-agent".to_string(), crate::USER_AGENT.to_string()),
        ("webhook-id".to_string(), uuid.to_string()),
        ("webhook-timestamp".to_string(), (at / 1000).to_string()),
        ("webhook-signature".to_string(), signature),
    ])
}

/// What must be kept of an attempt's headers to rebuild them: null when they are exactly the
/// standard set with one signature.
fn headers_value(uuid: &str, a: &Attempt) -> Value {
    let shown = &a.request_headers;
    if shown.is_empty() {
        return json!({"z": 1});
    }
    let signatures = shown
        .get("webhook-signature")
        .map_or(1, |v| v.split_whitespace().count().max(1));
    // The versions of masked signatures (`v1a,********`), when any is not `v1`.
    let versions: Option<Vec<&str>> = shown.get("webhook-signature").and_then(|v| {
        let versions: Option<Vec<&str>> = v
            .split_whitespace()
            .map(|sig| sig.strip_suffix(MASK)?.strip_suffix(','))
            .collect();
        versions.filter(|vs| {
            !vs.is_empty()
                && vs.iter().any(|v| *v != "v1")
                && vs.iter().all(|v| !v.is_empty() && !v.contains(' '))
        })
    });
    let standard = match &versions {
        Some(vs) => standard_headers_versioned(uuid, a.at, vs),
        None => standard_headers(uuid, a.at, signatures),
    };
    let changed: BTreeMap<&String, &String> = shown
        .iter()
        .filter(|(k, v)| standard.get(*k) != Some(*v))
        .collect();
    let missing: Vec<&String> = standard
        .keys()
        .filter(|k| !shown.contains_key(*k))
        .collect();
    let mut spec = serde_json::Map::new();
    if let Some(vs) = &versions {
        spec.insert("v".into(), json!(vs.join(" ")));
    } else if signatures != 1 {
        spec.insert("g".into(), json!(signatures));
    }
    if !changed.is_empty() {
        spec.insert("o".into(), json!(changed));
    }
    if !missing.is_empty() {
        spec.insert("m".into(), json!(missing));
    }
    if spec.is_empty() {
        Value::Null
    } else {
        Value::Object(spec)
    }
}

fn headers_from(
    uuid: &str,
    at: i64,
    spec: Option<&Value>,
) -> Result<BTreeMap<String, String>, BadRecord> {
    let spec = match spec {
        None | Some(Value::Null) => return Ok(standard_headers(uuid, at, 1)),
        Some(Value::Object(spec)) => spec,
        Some(_) => return Err(bad("headers are not an object")),
    };
    if spec.contains_key("z") {
        return Ok(BTreeMap::new());
    }
    let mut headers = match spec.get("v").and_then(Value::as_str) {
        Some(versions) => {
            let versions: Vec<&str> = versions.split(' ').collect();
            standard_headers_versioned(uuid, at, &versions)
        }
        None => {
            let signatures = spec.get("g").and_then(Value::as_u64).unwrap_or(1) as usize;
            standard_headers(uuid, at, signatures)
        }
    };
    if let Some(Value::Array(missing)) = spec.get("m") {
        for name in missing {
            headers.remove(name.as_str().unwrap_or_default());
        }
    }
    if let Some(Value::Object(changed)) = spec.get("o") {
        for (name, value) in changed {
            let value = value.as_str().ok_or_else(|| bad("header value"))?;
            headers.insert(name.clone(), value.to_string());
        }
    }
    Ok(headers)
}

fn delivery_from(
    uuid: &str,
    connection_id: &str,
    time_created: i64,
    body: &str,
) -> Result<Delivery, BadRecord> {
    let parts: Vec<Value> = serde_json::from_str(body).map_err(|e| bad(e.to_string()))?;
    let status = match parts.first().and_then(Value::as_str) {
        Some("p") => DeliveryStatus::Pending,
        Some("d") => DeliveryStatus::Delivered,
        Some("r") => DeliveryStatus::Retrying,
        Some("x") => DeliveryStatus::Dead,
        Some("s") => DeliveryStatus::Skipped,
        _ => return Err(bad("delivery status")),
    };
    let updated = parts
        .get(1)
        .and_then(Value::as_i64)
        .ok_or_else(|| bad("updated"))?;
    let mut attempts = Vec::new();
    let mut previous_url = String::new();
    for a in parts.get(2).and_then(Value::as_array).into_iter().flatten() {
        let a = a.as_array().ok_or_else(|| bad("attempt"))?;
        let get = |i: usize| a.get(i).filter(|v| !v.is_null());
        let at = time_created + get(0).and_then(Value::as_i64).ok_or_else(|| bad("at"))?;
        let url = match get(3) {
            Some(Value::String(u)) => u.clone(),
            _ => previous_url.clone(),
        };
        previous_url.clone_from(&url);
        let text = |i: usize| get(i).and_then(Value::as_str).map(str::to_string);
        attempts.push(Attempt {
            at,
            status_code: get(1).and_then(Value::as_u64).map(|c| c as u16),
            latency_ms: get(2).and_then(Value::as_u64).unwrap_or(0),
            error: text(4),
            response_excerpt: text(5),
            url,
            request_headers: headers_from(uuid, at, get(6))?,
        });
    }
    let base = attempts.last().map_or(time_created, |a| a.at);
    let dead_letter_id = match parts.get(4) {
        Some(Value::String(id)) => Some(id.clone()),
        Some(Value::Number(_)) => Some(delivery_id(uuid, connection_id)),
        _ => None,
    };
    Ok(Delivery {
        connection_id: connection_id.to_string(),
        status,
        attempts,
        next_attempt_at: parts.get(3).and_then(Value::as_i64),
        dead_letter_id,
        updated_at: base + updated,
    })
}

fn event_from(uuid: &str, time_created: i64, part: &str) -> Result<Event, BadRecord> {
    let (line, payload) = part.split_once('\n').ok_or_else(|| bad("event line"))?;
    let mut words = line.splitn(4, ' ');
    let (Some("E"), Some(event), Some(resource), Some(id)) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(bad("event line"));
    };
    let resource_id: String = serde_json::from_str(id).map_err(|e| bad(e.to_string()))?;
    let payload = RawValue::from_string(payload.to_string()).map_err(|e| bad(e.to_string()))?;
    Ok(Event {
        uuid: uuid.to_string(),
        event: event.to_string(),
        resource: resource.to_string(),
        resource_id,
        payload,
        time_created,
    })
}

/// Decodes the record of event `uuid`.
pub fn decode(uuid: &str, record: &str) -> Result<Decoded, BadRecord> {
    let (head, mut rest) = record.split_once('\n').ok_or_else(|| bad("head"))?;
    let mut words = head.split(' ');
    let (Some("H"), Some(created), Some(expanded), Some(routed)) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(bad("head"));
    };
    let time_created: i64 = created.parse().map_err(|_| bad("time_created"))?;
    let mut deliveries = Vec::new();
    while let Some(line_end) = rest.strip_prefix("D ").and_then(|r| r.find('\n')) {
        let line = &rest[2..2 + line_end];
        let mut words = line.split(' ');
        let (Some(connection), Some(_), Some(len)) = (words.next(), words.next(), words.next())
        else {
            return Err(bad("delivery line"));
        };
        let len: usize = len.parse().map_err(|_| bad("delivery length"))?;
        let start = 2 + line_end + 1;
        let body = rest
            .get(start..start + len)
            .ok_or_else(|| bad("delivery body"))?;
        deliveries.push(delivery_from(uuid, connection, time_created, body)?);
        rest = &rest[start + len..];
    }
    deliveries.sort_by(|a, b| a.connection_id.cmp(&b.connection_id));
    let event = if rest.is_empty() {
        None
    } else {
        Some(event_from(uuid, time_created, rest)?)
    };
    Ok(Decoded {
        event,
        routed: routed.parse().ok(),
        expanded_at: expanded.parse::<i64>().ok().map(|d| time_created + d),
        deliveries,
    })
}

/// A whole record, as the scripts build it (for tests and for records written at once).
pub fn encode(
    uuid: &str,
    event: &Event,
    routed: Option<usize>,
    expanded_at: Option<i64>,
    deliveries: &[Delivery],
) -> String {
    let t = event.time_created;
    let mut out = format!(
        "H {t} {} {}\n",
        expanded_at.map_or("-".to_string(), |e| (e - t).to_string()),
        routed.map_or("-".to_string(), |r| r.to_string())
    );
    for d in deliveries {
        let body = delivery_body(uuid, t, d);
        out.push_str(&format!(
            "D {} {} {}\n{body}",
            d.connection_id,
            d.attempts.len(),
            body.len()
        ));
    }
    out.push_str(&event_part(event));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            uuid: "evt_1".into(),
            event: "order.completed".into(),
            resource: "order".into(),
            resource_id: "ord 7\n\"x\"".into(),
            payload: RawValue::from_string(r#"{"b": 1.50, "a":[1e3]}"#.into()).expect("raw"),
            time_created: 1_774_137_600_000,
        }
    }

    fn sent(
        uuid: &str,
        at: i64,
        extra: &[(&str, &str)],
        signatures: usize,
    ) -> BTreeMap<String, String> {
        let mut h = standard_headers(uuid, at, signatures);
        for (k, v) in extra {
            h.insert(k.to_string(), v.to_string());
        }
        h
    }

    fn attempt(
        at: i64,
        code: Option<u16>,
        url: &str,
        headers: BTreeMap<String, String>,
    ) -> Attempt {
        Attempt {
            at,
            status_code: code,
            latency_ms: 12,
            error: code.filter(|c| *c >= 300).map(|c| format!("status {c}")),
            response_excerpt: code.map(|_| "ok\n\u{1f}é".to_string()),
            url: url.into(),
            request_headers: headers,
        }
    }

    fn roundtrip(deliveries: Vec<Delivery>) {
        let e = event();
        let text = encode(&e.uuid, &e, Some(2), Some(e.time_created + 40), &deliveries);
        let back = decode(&e.uuid, &text).expect("decodes");
        let again = back.event.expect("event");
        assert_eq!(
            serde_json::to_string(&again).ok(),
            serde_json::to_string(&e).ok()
        );
        assert_eq!(back.routed, Some(2));
        assert_eq!(back.expanded_at, Some(e.time_created + 40));
        assert_eq!(back.deliveries, deliveries);
    }

    #[test]
    fn every_kind_of_delivery_comes_back_exactly() {
        let t = event().time_created;
        let uuid = "evt_1";
        let plain = sent(uuid, t + 5, &[], 1);
        let custom = sent(
            uuid,
            t + 6_000,
            &[("x-team", "blue"), ("authorization", "Bearer ********")],
            2,
        );
        let mut odd = sent(uuid, t + 9_000, &[], 1);
        odd.remove("user-agent");
        odd.insert("webhook-signature".into(), "v1a,********".into());
        roundtrip(vec![
            Delivery {
                connection_id: "con_a".into(),
                status: DeliveryStatus::Delivered,
                attempts: vec![attempt(t + 5, Some(200), "https://a.example/h", plain)],
                next_attempt_at: None,
                dead_letter_id: None,
                updated_at: t + 30,
            },
            Delivery {
                connection_id: "con_b".into(),
                status: DeliveryStatus::Retrying,
                attempts: vec![
                    attempt(t + 10, None, "https://b.example/h", BTreeMap::new()),
                    attempt(t + 6_000, Some(503), "https://b.example/h", custom),
                    attempt(t + 9_000, Some(500), "https://c.example/h", odd),
                ],
                next_attempt_at: Some(t + 60_000),
                dead_letter_id: None,
                updated_at: t + 9_100,
            },
            Delivery {
                connection_id: "con_c".into(),
                status: DeliveryStatus::Dead,
                attempts: vec![attempt(
                    t - 5,
                    Some(410),
                    "https://d.example/h",
                    BTreeMap::new(),
                )],
                next_attempt_at: None,
                dead_letter_id: Some(delivery_id(uuid, "con_c")),
                updated_at: t + 1,
            },
            Delivery {
                connection_id: "con_d".into(),
                status: DeliveryStatus::Pending,
                attempts: Vec::new(),
                next_attempt_at: None,
                dead_letter_id: Some("other".into()),
                updated_at: t,
            },
            Delivery {
                connection_id: "con_e".into(),
                status: DeliveryStatus::Skipped,
                attempts: Vec::new(),
                next_attempt_at: None,
                dead_letter_id: None,
                updated_at: t + 3,
            },
        ]);
    }

    #[test]
    fn a_delivered_attempt_keeps_only_what_cannot_be_rebuilt() {
        let e = event();
        let t = e.time_created;
        let d = Delivery {
            connection_id: "con_a".into(),
            status: DeliveryStatus::Delivered,
            attempts: vec![Attempt {
                at: t + 50,
                status_code: Some(200),
                latency_ms: 1,
                error: None,
                response_excerpt: None,
                url: "https://a.example/h".into(),
                request_headers: sent(&e.uuid, t + 50, &[], 1),
            }],
            next_attempt_at: None,
            dead_letter_id: None,
            updated_at: t + 53,
        };
        assert_eq!(
            delivery_body(&e.uuid, t, &d),
            r#"["d",3,[[50,200,1,"https://a.example/h"]]]"#
        );
    }

    #[test]
    fn ed25519_signatures_keep_only_their_versions() {
        let e = event();
        let t = e.time_created;
        let mut one = sent(&e.uuid, t + 50, &[], 1);
        one.insert("webhook-signature".into(), format!("v1a,{MASK}"));
        let mut switching = sent(&e.uuid, t + 60, &[], 2);
        switching.insert("webhook-signature".into(), format!("v1a,{MASK} v1,{MASK}"));
        let d = Delivery {
            connection_id: "con_a".into(),
            status: DeliveryStatus::Delivered,
            attempts: vec![
                attempt(t + 50, Some(500), "https://a.example/h", one),
                attempt(t + 60, Some(200), "https://a.example/h", switching),
            ],
            next_attempt_at: None,
            dead_letter_id: None,
            updated_at: t + 63,
        };
        let body = delivery_body(&e.uuid, t, &d);
        assert!(body.contains(r#"{"v":"v1a"}"#), "{body}");
        assert!(body.contains(r#"{"v":"v1a v1"}"#), "{body}");
        assert!(!body.contains(MASK), "{body}");
        roundtrip(vec![d]);
    }

    #[test]
    fn a_record_without_its_event_still_decodes() {
        let text = format!("{}D con_a 0 7\n[\"p\",0]", head(5));
        let back = decode("u", &text).expect("decodes");
        assert!(back.event.is_none());
        assert_eq!(back.routed, None);
        assert_eq!(back.deliveries[0].status, DeliveryStatus::Pending);
        assert!(decode("u", "nonsense").is_err());
    }
}
