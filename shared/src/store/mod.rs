//! Everything Herald keeps in Redis, under `HERALD_REDIS_PREFIX`.
//!
//! - [`tenants`]: workspaces, API keys, connections and rules.
//! - [`sealing`]: secrets at rest in stored connections.
//! - [`cache`]: the configuration cache services read through (refreshed within
//!   `HERALD_CONFIG_REFRESH` of a change).
//! - [`history`]: events, their deliveries and every attempt; the event index, trimmed to the
//!   retention. [`record`] is the compact form a record is kept in.
//! - [`dead_letters`]: the dead-letter index support staff list, replay and discard.
//! - [`health`]: each connection's circuit-breaker history.
//! - [`stats`]: each connection's attempts, failures, dead letters and latencies in 5-minute
//!   buckets, for the charts.
//! - [`operational`]: operational webhooks' workspace, dead letters per connection and minute.
//! - `failing`: each connection's failing clock, and disabling a connection that keeps failing.
//! - [`routing`]: the claims that keep an event from being expanded twice.
//! - [`sessions`]: portal sessions and each workspace's portal settings.
//! - [`locator`]: which workspace an event uuid is in (the console's lookup), in 4,096 small
//!   hashes.
//! - [`replays`]: bulk replays of dead letters, their progress, and resuming them.
//! - [`tokens`]: OAuth2 access tokens of connections, shared by the deliverers.
//! - `paging`: the sorted-set lists page by cursor, `(score, member)`, never by offset.
//! - `conn`: one Redis server or a Redis Cluster (`HERALD_REDIS_MODE`), behind one connection.
//! - `archiving`: moving final history past the hot window to the PostgreSQL archive.
//! - `migrate`: the one-time renaming of workspace keys written before they were hash-tagged.
//!
//! Key layout (`{p}` is the prefix, `<ws>` a workspace id), with the bound of each. The braces
//! around `<ws>` are literal: a Redis Cluster hash tag, so every key of a workspace is in the
//! slot of its id, and every script and pipeline the store sends touches one workspace's keys
//! (one slot) or one key. Keys outside a workspace are only ever used one at a time.
//! ```text
//! {p}:config:ver                 INCR on every configuration change (caches poll it)
//! {p}:workspaces                 ZSET created_at -> ws id
//! {p}:ws:{<ws>}                  workspace JSON
//! {p}:apikey:{sha256}            API key JSON (workspace, scope)
//! {p}:ws:{<ws>}:keys             SET of the workspace's key hashes
//! {p}:ws:{<ws>}:conns / :rules   HASH id -> JSON
//! {p}:ws:{<ws>}:history          HASH event uuid -> compact record (see `record`): the event,
//!                                its deliveries and attempts, the time it was expanded (the
//!                                dedup claim). Trimmed with the log, by every write and by the
//!                                router's sweep of idle workspaces (every retention/2, 5-60 s);
//!                                expires a retention and two sweeps after the last write
//! {p}:ws:{<ws>}:log              STREAM `u` -> event uuid, by time: the index lists page
//!                                through. Every write trims entries older than the retention
//!                                (`scripts::TRIM`); expires with the history
//! {p}:ws:{<ws>}:lease:{uuid}     a router's lease while it expands the event (20 s; deleted
//!                                once expanded)
//! {p}:ws:{<ws>}:idem:{uuid}      a dedup claim, only when HERALD_DEDUP_WINDOW is longer than
//!                                the retention (expires with the window)
//! {p}:ws:{<ws>}:breaker:{conn}   LIST of the connection's breaker changes, newest first (50;
//!                                expires a retention after the last)
//! {p}:ws:{<ws>}:stats:{conn}:{n} HASH of a connection's counters for the 5 minutes from
//!                                n x 300 s (see `stats`); written only during those minutes,
//!                                expires 25 h after its last write
//! {p}:ws:{<ws>}:failing:{conn}  Unix ms of the connection's first failed attempt since its last
//!                                success (deleted by a success, on re-enable and when it is
//!                                disabled; expires twice HERALD_AUTO_DISABLE_AFTER after it was set)
//! {p}:ws:{<ws>}:opdl:{conn}:{minute}:n / :ids  dead letters of a connection in a minute (count;
//!                                newest 10 event ids) for `delivery.dead_lettered`: deleted once
//!                                sent, expire 10 minutes after the minute
//! {p}:opdl-due                   ZSET due ms -> "ws conn minute": minutes to send (one member
//!                                per connection and minute; over an hour old are dropped)
//! {p}:ws:{<ws>}:opsent:{conn}:{type}  a breaker notice went out this minute (expires in 60 s)
//! {p}:ws:{<ws>}:oauth:{conn}:{fp} a connection's OAuth2 access token, sealed, expiring when it
//!                                should no longer be used (see `tokens`)
//! {p}:ws:{<ws>}:dead             ZSET dead_at -> dead-letter id; every write trims by score
//!                                to the retention
//! {p}:ws:{<ws>}:dl:{id}          dead letter JSON (expires a retention after it died)
//! {p}:ws:{<ws>}:replay...        a bulk replay of dead letters (see `replays`)
//! {p}:ws:{<ws>}:evt:{uuid}       an event's HASH as versions before the compact record wrote
//!                                it: read, never written; expires by itself
//! {p}:loc:<n>                    HASH uuid -> the workspace(s) holding it, for 4,096 buckets n
//!                                (see `locator`): each entry goes when the history trims its
//!                                event; a bucket expires a retention after its last write
//! {p}:ws:{<ws>}:archiving        a router's lease while it moves the workspace's history to the
//!                                archive (30 s; see `archiving`)
//! {p}:ws:{<ws>}:archived         the last log entry the archive walk looked at
//! {p}:ws:{<ws>}:held / held-scan HASH uuid -> log id of events past the hot window not final
//!                                yet, looked at again; where that look stands (expire a
//!                                retention after their last write)
//! {p}:history-sweep              which router sweeps idle workspaces this period
//! {p}:replays                    ZSET of unfinished bulk replays, to resume (one per workspace)
//! {p}:rl:intake:{key sha256}     rate limit state of an API key (see `ratelimit`; expires)
//! {p}:rl:conn:{connection}       rate limit state of a connection's deliveries (expires)
//! {p}:session:{sha256}           portal session JSON, expiring with the session
//! {p}:ws:{<ws>}:portal           portal settings JSON
//! {p}:ws:{<ws>}:session-epoch    INCR when every portal session of the workspace is revoked
//! {p}:keys:tagged                set once the keys of earlier versions were renamed (`migrate`)
//! ```
//!
//! A producer's uuid (which may contain `:`) is only ever the last part of a key, so no uuid can
//! spell a key of another kind.
//!
//! Secrets inside connection JSON are sealed (see `secrets`): `enc:v1:<key id>:<base64>`.

mod archiving;
pub mod cache;
mod conn;
pub mod dead_letters;
mod failing;
pub mod health;
pub mod history;
pub mod locator;
mod migrate;
pub mod operational;
pub mod ordering;
mod paging;
pub mod record;
pub mod replays;
pub mod routing;
mod scripts;
mod sealing;
pub mod sessions;
pub mod stats;
pub mod tenants;
pub mod tokens;

use std::time::Duration;

use backoff::backoff::Backoff;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::config::CommonSettings;

pub use cache::{ConfigCache, WorkspaceConfig};
pub use conn::RedisConn;
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
    /// A history record is not what Herald writes.
    #[error("stored record is corrupt at {key}: {message}")]
    Record {
        /// The key and field read.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The archive (PostgreSQL) failed.
    #[error("archive: {0}")]
    Archive(#[from] crate::archive::ArchiveError),
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
    conn: RedisConn,
    prefix: String,
    retention: Duration,
    dedup_window: Duration,
    secrets: std::sync::Arc<crate::secrets::SecretsKeys>,
    /// The disk tier of the history, when `HERALD_ARCHIVE_URL` is set.
    archive: Option<std::sync::Arc<crate::archive::Archive>>,
    /// How long final history stays in Redis when the archive is on.
    hot_window: Duration,
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
        let mut backoff = backoff::ExponentialBackoff {
            initial_interval: Duration::from_millis(200),
            max_interval: Duration::from_secs(5),
            max_elapsed_time: None,
            ..Default::default()
        };
        loop {
            match RedisConn::open(settings.redis_mode, settings.redis_url.expose_secret()).await {
                Ok(conn) => {
                    metrics::gauge!("herald_redis_connected").set(1.0);
                    let store = Self {
                        conn,
                        prefix: settings.redis_prefix.clone(),
                        retention: settings.retention,
                        dedup_window: settings.dedup_window,
                        secrets: std::sync::Arc::new(settings.secrets.clone()),
                        archive: settings.archive.as_ref().map(|a| {
                            std::sync::Arc::new(crate::archive::Archive::new(
                                a.url.clone(),
                                a.partition,
                                settings.retention,
                            ))
                        }),
                        hot_window: settings
                            .archive
                            .as_ref()
                            .map_or(settings.retention, |a| a.hot_window),
                    };
                    store.tag_workspace_keys().await?;
                    return Ok(store);
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
    pub(crate) fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// `{prefix}:{rest}`: a key outside any workspace. Only ever used alone (one key per
    /// command, script or transaction), so it may live in any slot of a cluster.
    pub(crate) fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    /// `{prefix}:ws:{<ws>}`: the workspace itself, in the slot of its other keys.
    pub(crate) fn ws_root_key(&self, ws: &str) -> String {
        ws_root_key(&self.prefix, ws)
    }

    /// `{prefix}:ws:{<ws>}:{rest}`: a key of workspace `ws`. The braces are a Redis Cluster
    /// hash tag: every key of a workspace hashes to the slot of its id, so a script or a
    /// pipeline over one workspace's keys is served by one node.
    pub(crate) fn ws_key(&self, ws: &str, rest: &str) -> String {
        format!("{}:{rest}", ws_root_key(&self.prefix, ws))
    }

    /// An empty [`Batch`] for this store's Redis.
    pub(crate) fn batch(&self) -> Batch {
        Batch {
            split: self.conn.is_cluster(),
            pipes: std::collections::BTreeMap::new(),
            trims: std::collections::BTreeMap::new(),
        }
    }

    /// Runs every pipeline of a batch (all at once; in one pipeline on a single server), then
    /// removes the locators of the events its trims removed.
    pub(crate) async fn run_batch(&self, batch: Batch) -> Result<(), StoreError> {
        let replies = futures::future::try_join_all(
            batch
                .pipes
                .values()
                .map(|p| self.query::<Vec<Vec<String>>>(p)),
        )
        .await?;
        let empty = Vec::new();
        for (tag, trimmed) in batch.pipes.keys().zip(replies) {
            let workspaces = batch.trims.get(tag).unwrap_or(&empty);
            for (ws, uuids) in workspaces.iter().zip(trimmed) {
                self.unlocate(ws, &uuids).await?;
            }
        }
        Ok(())
    }

    /// How long history is kept, in seconds.
    pub fn retention_secs(&self) -> i64 {
        self.retention.as_secs().max(1) as i64
    }

    /// Runs a pipeline that invokes scripts: they are sent by hash, so after a Redis restart
    /// (which forgets them) they are loaded and the pipeline is sent once more. Every script
    /// Herald pipelines is safe to run twice.
    pub(crate) async fn run(&self, pipe: &redis::Pipeline) -> Result<(), StoreError> {
        self.query::<()>(pipe).await
    }

    /// [`Store::run`] for a pipeline whose replies are wanted.
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn();
        match pipe.query_async::<T>(&mut conn).await {
            Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                load_scripts(&mut conn).await?;
                Ok(pipe.query_async::<T>(&mut conn).await?)
            }
            other => Ok(other?),
        }
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

/// The scripts the store pipelines (see `scripts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScriptName {
    Route,
    Outcome,
    MarkReplayed,
    Claim,
    Expanded,
    Trim,
}

impl ScriptName {
    const ALL: [ScriptName; 6] = [
        ScriptName::Route,
        ScriptName::Outcome,
        ScriptName::MarkReplayed,
        ScriptName::Claim,
        ScriptName::Expanded,
        ScriptName::Trim,
    ];
}

/// Loads every script (in a cluster, `SCRIPT LOAD` goes to every master).
async fn load_scripts(conn: &mut RedisConn) -> Result<(), StoreError> {
    for name in ScriptName::ALL {
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(script_text(name))
            .query_async::<redis::Value>(conn)
            .await?;
    }
    Ok(())
}

fn script_text(name: ScriptName) -> String {
    scripts::with_common(match name {
        ScriptName::Route => scripts::ROUTE,
        ScriptName::Outcome => scripts::OUTCOME,
        ScriptName::MarkReplayed => scripts::MARK_REPLAYED,
        ScriptName::Claim => scripts::CLAIM,
        ScriptName::Expanded => scripts::EXPANDED,
        ScriptName::Trim => scripts::TRIM,
    })
}

/// An invocation of a script, to fill with keys and arguments.
pub(crate) fn script(name: ScriptName) -> redis::ScriptInvocation<'static> {
    static SCRIPTS: std::sync::LazyLock<Vec<redis::Script>> = std::sync::LazyLock::new(|| {
        ScriptName::ALL
            .iter()
            .map(|n| redis::Script::new(&script_text(*n)))
            .collect()
    });
    let index = ScriptName::ALL
        .iter()
        .position(|n| *n == name)
        .unwrap_or_default();
    SCRIPTS[index].prepare_invoke()
}

/// `{prefix}:ws:{<ws>}`, the root every key of workspace `ws` starts with.
fn ws_root_key(prefix: &str, ws: &str) -> String {
    format!("{prefix}:ws:{{{ws}}}")
}

/// Pipelines that together make one write, split by Redis Cluster slot: in a cluster every
/// pipeline is sent to the node that owns its one slot (a pipeline over keys of several slots
/// would fail there); on a single server they are one pipeline, one round trip.
///
/// Every command in a batch's pipelines is sent with its reply ignored except the history
/// trims (`Store::trim_history`), whose workspaces `trims` lists in the order of their replies.
pub(crate) struct Batch {
    split: bool,
    pipes: std::collections::BTreeMap<String, redis::Pipeline>,
    trims: std::collections::BTreeMap<String, Vec<String>>,
}

impl Batch {
    fn tag<'a>(&self, ws: &'a str) -> &'a str {
        if self.split {
            ws
        } else {
            ""
        }
    }

    /// The pipeline for keys of workspace `ws` (all in the slot of its hash tag).
    pub(crate) fn ws(&mut self, ws: &str) -> &mut redis::Pipeline {
        let tag = self.tag(ws);
        self.pipes.entry(tag.to_string()).or_default()
    }

    /// Notes that the next reply-bearing command added for `ws` is its history's trim.
    pub(crate) fn note_trim(&mut self, ws: &str) {
        let tag = self.tag(ws);
        self.trims
            .entry(tag.to_string())
            .or_default()
            .push(ws.to_string());
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

#[cfg(test)]
mod tests {
    use redis::cluster_routing::get_slot;

    use super::*;

    #[test]
    fn every_key_of_a_workspace_is_in_the_slot_of_its_id() {
        let ws = "ws_01JABCD3EF";
        let slot = get_slot(ws.as_bytes());
        let root = ws_root_key("herald", ws);
        assert_eq!(root, "herald:ws:{ws_01JABCD3EF}");
        // A producer's uuid may hold braces of its own: only the first pair is the tag.
        for rest in [
            "history",
            "log",
            "dead",
            "dl:x.c",
            "lease:{u}",
            "idem:a}{b",
            "conns",
        ] {
            let key = format!("{root}:{rest}");
            assert_eq!(get_slot(key.as_bytes()), slot, "{key}");
        }
        assert_eq!(get_slot(root.as_bytes()), slot);
        let other = ws_root_key("herald", "ws_01JZZZZ9ZZ");
        assert_ne!(
            get_slot(other.as_bytes()),
            slot,
            "workspaces spread over slots"
        );
    }
}
