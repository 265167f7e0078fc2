//! Everything Herald keeps in Redis, under `HERALD_REDIS_PREFIX`.
//!
//! - [`tenants`]: workspaces, API keys, connections and rules.
//! - [`sealing`]: secrets at rest in stored connections.
//! - [`cache`]: the configuration cache services read through (refreshed within
//!   `HERALD_CONFIG_REFRESH` of a change).
//! - [`history`]: events, their deliveries and every attempt; the event index.
//! - [`dead_letters`]: the dead-letter index support staff list, replay and discard.
//! - [`health`]: each connection's circuit-breaker history.
//! - [`routing`]: the claims that keep an event from being expanded twice.
//! - [`sessions`]: portal sessions and each workspace's portal settings.
//! - `locator`: which workspace an event uuid is in (the console's lookup), one key per event.
//! - [`replays`]: bulk replays of dead letters, their progress, and resuming them.
//! - `paging`: every list pages by cursor, `(score, member)`, never by offset.
//!
//! Key layout (`{p}` is the prefix, `{ws}` a workspace id):
//! ```text
//! {p}:config:ver                 INCR on every configuration change (caches poll it)
//! {p}:workspaces                 ZSET created_at -> ws id
//! {p}:ws:{ws}                    workspace JSON
//! {p}:apikey:{sha256}            API key JSON (workspace, scope)
//! {p}:ws:{ws}:keys               SET of the workspace's key hashes
//! {p}:ws:{ws}:conns / :rules     HASH id -> JSON
//! {p}:ws:{ws}:events             ZSET time_created -> event uuid
//! {p}:ws:{ws}:evt:{uuid}         HASH event -> JSON, routed -> n, d:{connection} -> delivery JSON
//! {p}:loc:{uuid}                 the workspace(s) holding event uuid, expiring with it
//! {p}:ws:{ws}:lease:{uuid}       a router's short lease while it expands the event
//! {p}:ws:{ws}:breaker:{conn}     LIST of the connection's breaker changes, newest first (50)
//! {p}:ws:{ws}:idem:{uuid}        producer-given uuid seen (idempotency window)
//! {p}:ws:{ws}:dead               ZSET dead_at -> dead-letter id
//! {p}:ws:{ws}:dl:{id}            dead letter JSON
//! {p}:ws:{ws}:replay...          a bulk replay of dead letters (see `replays`)
//! {p}:replays                    ZSET of unfinished bulk replays, to resume
//! {p}:rl:intake:{key sha256}     rate limit state of an API key (see `ratelimit`)
//! {p}:rl:conn:{connection}       rate limit state of a connection's deliveries
//! {p}:session:{sha256}           portal session JSON, expiring with the session
//! {p}:ws:{ws}:portal             portal settings JSON
//! ```
//!
//! A producer's uuid (which may contain `:`) is only ever the last part of a key, so no uuid can
//! spell a key of another kind.
//!
//! Secrets inside connection JSON are sealed (see `secrets`): `enc:v1:<key id>:<base64>`.

pub mod cache;
pub mod dead_letters;
pub mod health;
pub mod history;
mod locator;
mod paging;
pub mod replays;
pub mod routing;
mod sealing;
pub mod sessions;
pub mod tenants;

use std::time::Duration;

use backoff::backoff::Backoff;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::config::CommonSettings;

pub use cache::{ConfigCache, WorkspaceConfig};
pub use paging::Cursor;
pub use tenants::NewWorkspace;

/// A Redis operation failed, or stored data did not parse.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis unreachable or refused the command.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A stored value is not what Herald wrote.
    #[error("stored data is corrupt at {key}: {source}")]
    Corrupt {
        /// The key read.
        key: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The referenced object does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A sealed secret could not be opened (wrong or missing key, or altered data).
    #[error("cannot open a secret stored at {key}: {source}")]
    Secret {
        /// The key read.
        key: String,
        /// Why.
        source: crate::secrets::SecretsError,
    },
}

/// The Redis store of one installation.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    prefix: String,
    retention: Duration,
    secrets: std::sync::Arc<crate::secrets::SecretsKeys>,
}

impl Store {
    /// Connects, retrying with backoff until Redis answers or `cancel` fires.
    pub async fn connect(
        settings: &CommonSettings,
        cancel: &CancellationToken,
    ) -> Result<Self, StoreError> {
        if settings.secrets.is_development() {
            tracing::warn!(
                "HERALD_SECRETS_KEY is not set: signing secrets and destination credentials are \
                 sealed in Redis with the public development key, which protects nothing. \
                 Set HERALD_SECRETS_KEY (base64 of 32 random bytes) before real use"
            );
        }
        let client = redis::Client::open(settings.redis_url.expose_secret())?;
        // redis-rs hands `factor` to its backoff as the growth per retry (from a 1 s floor), so
        // its default of 100 would wait a minute and more between reconnects after an outage:
        // grow by 2, at most 1 s apart, so a request fails within a few seconds while Redis is
        // away and the connection is back within a second of Redis.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(5))
            .set_factor(2)
            .set_max_delay(1000)
            .set_number_of_retries(2);
        let mut backoff = backoff::ExponentialBackoff {
            initial_interval: Duration::from_millis(200),
            max_interval: Duration::from_secs(5),
            max_elapsed_time: None,
            ..Default::default()
        };
        loop {
            match client
                .get_connection_manager_with_config(config.clone())
                .await
            {
                Ok(conn) => {
                    metrics::gauge!("herald_redis_connected").set(1.0);
                    return Ok(Self {
                        conn,
                        prefix: settings.redis_prefix.clone(),
                        retention: settings.retention,
                        secrets: std::sync::Arc::new(settings.secrets.clone()),
                    });
                }
                Err(e) if cancel.is_cancelled() => return Err(e.into()),
                Err(e) => {
                    let wait = backoff.next_backoff().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(error = %e, "redis unreachable; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The keys that seal secrets at rest.
    pub fn secrets(&self) -> &crate::secrets::SecretsKeys {
        &self.secrets
    }

    /// A multiplexed connection (cheap to clone).
    pub(crate) fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// `{prefix}:{rest}`.
    pub(crate) fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    /// `{prefix}:ws:{ws}:{rest}`.
    pub(crate) fn ws_key(&self, ws: &str, rest: &str) -> String {
        format!("{}:ws:{ws}:{rest}", self.prefix)
    }

    /// How long history is kept, in seconds.
    pub fn retention_secs(&self) -> i64 {
        self.retention.as_secs().max(1) as i64
    }

    /// True when Redis answers a PING.
    pub async fn ping(&self) -> bool {
        let mut c = self.conn();
        let ok = redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .is_ok();
        metrics::gauge!("herald_redis_connected").set(if ok { 1.0 } else { 0.0 });
        ok
    }
}

pub(crate) fn parse<T: serde::de::DeserializeOwned>(
    key: &str,
    json: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|source| StoreError::Corrupt {
        key: key.to_string(),
        source,
    })
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Herald's own types always serialise.
    serde_json::to_string(value).unwrap_or_default()
}
