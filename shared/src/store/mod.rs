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
//! - [`routing`]: the claims that keep an event from being expanded twice.
//! - [`sessions`]: portal sessions and each workspace's portal settings.
//!
//! Key layout (`{p}` is the prefix, `{ws}` a workspace id), with the bound of each:
//! ```text
//! {p}:config:ver                 INCR on every configuration change (caches poll it)
//! {p}:workspaces                 ZSET created_at -> ws id
//! {p}:ws:{ws}                    workspace JSON
//! {p}:apikey:{sha256}            API key JSON (workspace, scope)
//! {p}:ws:{ws}:keys               SET of the workspace's key hashes
//! {p}:ws:{ws}:conns / :rules     HASH id -> JSON
//! {p}:ws:{ws}:history            HASH event uuid -> compact record (see `record`): the event,
//!                                its deliveries and attempts, the time it was expanded (the
//!                                dedup claim). Trimmed with the log; expires a retention after
//!                                the workspace's last write
//! {p}:ws:{ws}:log                STREAM `u` -> event uuid, by time: the index lists page
//!                                through. Every write trims entries older than the retention
//!                                (`scripts::TRIM`); expires with the history
//! {p}:ws:{ws}:lease:{uuid}       a router's lease while it expands the event (20 s; deleted
//!                                once expanded)
//! {p}:ws:{ws}:idem:{uuid}        a dedup claim, only when HERALD_DEDUP_WINDOW is longer than
//!                                the retention (expires with the window)
//! {p}:ws:{ws}:breaker:{conn}     LIST of the connection's breaker changes, newest first (50;
//!                                expires a retention after the last)
//! {p}:ws:{ws}:dead               ZSET dead_at -> dead-letter id; every write trims by score
//!                                to the retention
//! {p}:ws:{ws}:dl:{id}            dead letter JSON (expires a retention after it died)
//! {p}:ws:{ws}:evt:{uuid}         an event's HASH as versions before the compact record wrote
//!                                it: read, never written; expires by itself
//! {p}:rl:intake:{key sha256}     rate limit state of an API key (see `ratelimit`; expires)
//! {p}:rl:conn:{connection}       rate limit state of a connection's deliveries (expires)
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
pub mod record;
pub mod routing;
mod scripts;
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
    dedup_window: Duration,
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
                        dedup_window: settings.dedup_window,
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

async fn load_scripts(conn: &mut ConnectionManager) -> Result<(), StoreError> {
    for name in ScriptName::ALL {
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(script_text(name))
            .query_async::<String>(conn)
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

/// A cursor over a sorted set, newest first: the last score and member returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// Score of the last item returned.
    pub score: i64,
    /// Member of the last item returned.
    pub member: String,
}

impl Cursor {
    /// `score~member`, as put in `next_cursor`.
    pub fn encode(&self) -> String {
        format!("{}~{}", self.score, self.member)
    }

    /// Parses a `next_cursor` value.
    pub fn decode(text: &str) -> Option<Self> {
        let (score, member) = text.split_once('~')?;
        Some(Self {
            score: score.parse().ok()?,
            member: member.to_string(),
        })
    }
}

/// Pages through a sorted set newest first, from after `cursor`. `load` turns a batch of
/// members into items (None for those a filter drops). Stops at `limit` items or after
/// `max_scan` members; returns the items and the cursor of the next page, if there may be more.
pub(crate) async fn scan_newest<T, F, Fut>(
    conn: &mut ConnectionManager,
    key: &str,
    cursor: Option<Cursor>,
    limit: usize,
    max_scan: usize,
    mut load: F,
) -> Result<(Vec<T>, Option<Cursor>), StoreError>
where
    F: FnMut(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Option<T>>, StoreError>>,
{
    const BATCH: isize = 100;
    let max = cursor
        .as_ref()
        .map(|c| c.score.to_string())
        .unwrap_or_else(|| "+inf".into());
    let mut offset: isize = 0;
    let mut out = Vec::new();
    let mut scanned = 0;
    loop {
        let page: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(key)
            .arg(&max)
            .arg("-inf")
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(offset)
            .arg(BATCH)
            .query_async(conn)
            .await?;
        if page.is_empty() {
            return Ok((out, None));
        }
        offset += page.len() as isize;
        let page: Vec<(String, i64)> = page
            .into_iter()
            .map(|(m, s)| (m, s as i64))
            .filter(|(m, s)| match &cursor {
                Some(c) => *s < c.score || (*s == c.score && *m < c.member),
                None => true,
            })
            .collect();
        if page.is_empty() {
            continue;
        }
        let items = load(page.iter().map(|(m, _)| m.clone()).collect()).await?;
        for ((member, score), item) in page.into_iter().zip(items) {
            scanned += 1;
            if let Some(item) = item {
                out.push(item);
            }
            if out.len() >= limit || scanned >= max_scan {
                return Ok((out, Some(Cursor { score, member })));
            }
        }
    }
}
