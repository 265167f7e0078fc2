//! `herald-router`: consumes events, matches each workspace's rules, and publishes one delivery
//! job per (event, connection), acknowledging an event only once the broker confirmed its jobs.
//!
//! - [`expand`]: the pure part: rule matching, job expansion and batching.
//! - [`intake`]: reading an events message (a batch from ingest or one envelope from a direct
//!   producer) into events, and the reasons a message is quarantined.
//! - [`app`]: the handler: claims, history writes and publishing jobs; start-up on the shared
//!   worker skeleton (`herald_shared::service`).

pub mod app;
pub mod expand;
pub mod intake;

pub use app::start;
pub use herald_shared::service::Running;
