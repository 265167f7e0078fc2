//! Herald end to end: a whole Herald per test against the real RabbitMQ and Redis, and a
//! receiver that records what arrives. The tests in `tests/it` (services in-process),
//! `tests/faults` (services as processes, killed and restarted) and the load tool
//! (`deploy/loadtest`) all build on this library; `examples/receiver.rs` is a receiver as a
//! customer would write it.
//!
//! - [`vhost`]: a RabbitMQ vhost of its own ([`Vhost`]), deleted on drop.
//! - [`pg`]: a PostgreSQL database of a test's own ([`pg::TestDb`]), for the archive.
//! - [`prefix`]: a Redis key prefix of its own ([`RedisPrefix`]), cleared on drop.
//! - [`settings`]: the settings a test stack gives its services.
//! - [`stack`]: ingest, router and deliverer in-process on port 0 ([`Stack`]).
//! - [`procs`]: the built binaries as processes ([`Processes`]), for SIGKILL, SIGTERM and load.
//! - [`cluster`]: the local Redis Cluster of the cluster tests: its nodes, killing one, and
//!   starting it again.
//! - [`cut`]: a TCP relay a test can cut ([`CutRelay`]), so one service loses Redis alone.
//! - [`api`]: the HTTP API as a client sees it ([`Api`]), and [`eventually`] for polling.
//! - [`oauth`]: a test OAuth2 token endpoint and the endpoint its tokens open ([`TokenServer`]).
//! - [`tls`]: a test PKI and an HTTPS receiver demanding client certificates ([`TlsReceiver`]).
//! - [`receiver`]: the test receiver ([`Receiver`]) and signature verification.

pub mod api;
pub mod cluster;
pub mod cut;
pub mod metrics;
pub mod oauth;
pub mod ordered;
pub mod pg;
pub mod prefix;
pub mod procs;
pub mod receiver;
pub mod settings;
pub mod stack;
pub mod tls;
pub mod vhost;

pub use api::{eventually, Api, Wired, ADMIN};
pub use cut::CutRelay;
pub use oauth::TokenServer;
pub use prefix::RedisPrefix;
pub use procs::Processes;
pub use receiver::{verify, Behaviour, Received, Receiver};
pub use stack::Stack;
pub use tls::{TestPki, TlsReceiver};
pub use vhost::Vhost;

/// A fresh name for a test's vhost or Redis prefix.
pub fn random_name() -> String {
    format!("herald-test-{}", herald_shared::ids::random_base62(10))
}
