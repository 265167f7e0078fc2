//! `herald-ingest`: the HTTP API. Event intake (answered 202 only once the broker confirmed),
//! workspaces, connections and rules, event and delivery history, dead letters and replay;
//! the embeddable tenant portal, the support console and the OpenAPI document.
//!
//! - [`app`]: state, the route table and start-up.
//! - [`batcher`]: group commit of single-event intake.
//! - [`error`]: `ApiError`, the one error shape every endpoint answers with.
//! - [`extract`]: the JSON body and query extractors (errors name the field) and the caller's
//!   identity from `Authorization: Bearer`.
//! - [`keys`]: the API key cache.
//! - [`sessions`]: portal sessions and the workspace's portal settings in Redis.
//! - [`openapi`]: the OpenAPI document's frame; its paths come from the route table.
//! - [`routes`]: one module per resource, and the pages (`routes::pages`), whose HTML, CSS and
//!   JavaScript live in `assets/` and are compiled into the binary.

pub mod app;
pub mod batcher;
pub mod error;
pub mod extract;
pub mod keys;
pub mod openapi;
pub mod routes;
pub mod sessions;

pub use app::{start, Running};
