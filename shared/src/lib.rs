//! What two or more Herald services share, and nothing else.
//!
//! - [`config`]: typed, validated settings read from defaults, an optional file and `HERALD_*`.
//! - [`telemetry`]: `tracing` set-up (text or JSON) and the Prometheus recorder.
//! - [`shutdown`]: SIGINT/SIGTERM into a `CancellationToken`.
//! - [`service`]: named tasks under one cancellation, and the start-up router and deliverer share.
//! - [`duration`]: durations as settings spell them (`500ms`, `30s`, `5m`, `2h`, `7d`).
//! - [`filter`]: payload filters on rules: validated and compiled once, evaluated per event.
//! - [`model`]: the domain types: envelope and event, workspace, connection, rule, job, attempt.
//! - [`signing`]: Standard Webhooks signatures (sign and verify), `v1` HMAC and `v1a` Ed25519.
//! - [`retry`]: the retry schedule, its jitter, and the broker delay ladder it maps onto.
//! - [`amqp`]: the broker topology, a reconnecting connection, a confirming publisher and
//!   consumer helpers.
//! - [`store`]: everything Herald keeps in Redis: configuration (with a cache), history, dead
//!   letters.
//! - [`secrets`]: encryption at rest of signing secrets and destination credentials.
//! - [`ratelimit`]: rate limits shared by every replica through Redis.
//! - [`netguard`]: which destination addresses may be connected to (SSRF protection).
//! - [`tls`]: a connection's client certificate for mutual TLS, checked when it is given.
//! - [`opwebhooks`]: operational webhooks (connection disabled, breaker opened, dead letters
//!   per minute ...), sent through the same pipeline as every webhook.
//! - [`ops`]: the `/healthz`, `/readyz` and `/metrics` endpoints the router and deliverer serve.

pub mod amqp;
pub mod archive;
pub mod config;
pub mod duration;
pub mod filter;
pub mod ids;
pub mod model;
pub mod netguard;
pub mod ops;
pub mod opwebhooks;
#[cfg(test)]
mod proptests;
pub mod ratelimit;
pub mod retry;
pub mod secrets;
pub mod service;
pub mod shutdown;
pub mod signing;
pub mod store;
pub mod telemetry;
pub mod tls;

/// Milliseconds since the Unix epoch, as every timestamp Herald stores.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// The `user-agent` Herald sends to receivers.
pub const USER_AGENT: &str = concat!("Herald/", env!("CARGO_PKG_VERSION"));
