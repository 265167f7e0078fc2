//! `herald-deliverer`: consumes delivery jobs, signs and sends each request, and records the
//! outcome: delivered, retried later through the broker's delay ladder, or dead-lettered.
//! Stateless: run as many replicas as the load needs.
//!
//! - [`outcome`]: the pure part: classifying a response or error, and deciding what follows.
//! - [`dispatch`]: building, signing and sending one request.
//! - [`breaker`]: the per-connection circuit breaker (pure).
//! - [`app`]: the consume loop, concurrency limits, outcome writes, retries and dead letters.

pub mod app;
pub mod breaker;
pub mod dispatch;
pub mod outcome;

pub use app::{start, Running};
