//! `herald-ingest`: the HTTP API. Event intake (answered 202 only once the broker confirmed),
//! workspaces, connections and rules, event and delivery history, dead letters and replay;
//! the embeddable tenant portal, the support console and the OpenAPI document.
//!
//! - [`app`]: start-up: connect, build the state and the router, serve until cancelled.
//! - [`state`]: `AppState`, what every handler can reach.
//! - [`routes`]: the route table (the router and `/openapi.json` both come from it) and one
//!   module per resource, with the pages (`routes::pages`), whose HTML, CSS and JavaScript live
//!   in `assets/` and are compiled into the binary.
//! - [`auth`]: who is calling (`Authorization: Bearer`) and the extractors for each kind of
//!   access: secret key, reader, editor, any key, admin, portal session.
//! - [`extract`]: the JSON body and query extractors; their errors name the field.
//! - [`paging`]: `limit` and `cursor` of lists, list filters, and the `{data, next_cursor}` body.
//! - [`error`]: `ApiError`, the one error shape every endpoint answers with.
//! - [`openapi`]: the OpenAPI document's frame, the error shape and the shared 4XX answer.
//! - [`schemas`]: the document's named schemas: the string constraints the server enforces, and
//!   the view of the types `herald-shared` stores.
//! - [`replay`]: bulk replays of dead letters, page by page, and resuming those an ingest left.
//! - [`batcher`]: group commit of single-event intake.
//! - [`keys`]: the API key cache.

pub mod app;
pub mod auth;
pub mod batcher;
pub mod error;
pub mod extract;
pub mod keys;
pub mod openapi;
pub mod paging;
pub mod replay;
pub mod routes;
pub mod schemas;
pub mod state;

pub use app::start;
pub use herald_shared::service::Running;
