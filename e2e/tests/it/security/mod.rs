//! Hostile input, tenant isolation, secrets at rest, rate limits and the destination guard, one
//! concern a file:
//!
//! - `refusals`: every malformed, oversized or unauthorised request, with its status and field.
//! - `tenancy`: one workspace's keys reach nothing of another's; keys roll.
//! - `secrets`: credentials sealed in Redis, masked in the history, absent from metrics.
//! - `rate_limits`: per key at intake (across replicas) and per connection at delivery.
//! - `destinations`: private addresses refused at creation and at send time.

mod destinations;
mod ed25519;
mod mtls;
mod oauth2;
mod rate_limits;
mod refusals;
mod secrets;
mod tenancy;

use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use herald_e2e::Stack;

/// A request with a raw body (or none) and an optional token: (status, JSON body, headers).
pub async fn raw(
    stack: &Stack,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, Value, HeaderMap) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = stack.http.request(method, format!("{}{path}", stack.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().await.expect("API answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        headers,
    )
}

/// A valid event of type `event`.
pub fn event(event: &str) -> Value {
    json!({"event": event, "resource": "order", "resource_id": "ord_1", "payload": {"n": 1}})
}
