//! `herald-ingest`: the HTTP API. Event intake (answered 202 only once the broker confirmed),
//! workspaces, connections and rules, event and delivery history, dead letters and replay.
//!
//! - [`app`]: state, the route table and start-up.
//! - [`batcher`]: group commit of single-event intake.
//! - [`error`]: `ApiError`, the one error shape every endpoint answers with.
//! - [`extract`]: the JSON body and query extractors (errors name the field) and the caller's
//!   identity from `Authorization: Bearer`.
//! - [`keys`]: the API key cache.
//! - [`routes`]: one module per resource.

pub mod app;
pub mod batcher;
pub mod error;
pub mod extract;
pub mod keys;
pub mod routes;

pub use app::{start, Running};
