//! `herald-deliverer`: consumes delivery jobs, signs and sends each request, and records the
//! outcome: delivered, retried later through the broker's delay ladder, or dead-lettered.
//! Stateless: run as many replicas as the load needs.
//!
//! A job's path, one module a stage:
//! - [`worker`]: a job's turn: look up, admit, send, decide.
//! - [`flight`]: a message's jobs running and settling together; letting go of a message whose
//!   jobs hang (stand-ins in the ladder, then the ack).
//! - [`admit`]: whether a job may be sent now (connection and deliverer slots, rate limit,
//!   breaker), as a typed admission.
//! - [`dispatch`]: building, signing and sending one request.
//! - [`identity`]: the clients of connections with a client certificate (mutual TLS).
//! - [`oauth`]: OAuth2 client-credentials tokens, shared by the deliverers through Redis.
//! - [`outcome`]: every classification: a response or error, what follows it, metric names.
//! - [`settle`]: what a batch of finished jobs writes and publishes (pure), then the I/O.
//! - [`breaker`]: the per-connection circuit breaker (pure).
//! - [`failing`]: each connection's failing clock, and auto-disable.
//! - [`state`]: what the stages share (settings, cache, gate, settler).
//! - [`app`]: start-up on the shared worker skeleton.

pub mod admit;
pub mod app;
pub mod breaker;
pub mod dispatch;
pub mod failing;
pub mod flight;
pub mod identity;
pub mod oauth;
pub mod outcome;
pub mod settle;
pub mod state;
pub mod worker;

pub use app::start;
pub use herald_shared::service::Running;
