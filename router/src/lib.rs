//! `herald-router`: consumes events, matches each workspace's rules, and publishes one delivery
//! job per (event, connection), acknowledging an event only once the broker confirmed its jobs.
//!
//! - [`expand`]: the pure part: rule matching, job expansion and batching.
//! - [`intake`]: reading an events message (a batch from ingest or one envelope from a direct
//!   producer) into events, and the reasons a message is quarantined.
//! - [`app`]: the consume loop, history writes, publishing, and the health/metrics server.

pub mod app;
pub mod expand;
pub mod intake;

pub use app::{start, Running};
