//! Each connection's failing clock: since when every attempt to it has failed. One small
//! value per connection, written by the deliverers as they settle attempts, cleared by a
//! success; a connection whose clock is older than `HERALD_AUTO_DISABLE_AFTER` is disabled
//! ([`Store::disable_failing`]).

use redis::AsyncCommands;

use super::{Store, StoreError};
use crate::model::connection::DISABLED_FAILING;
use crate::model::Connection;

impl Store {
    /// `{p}:ws:{<ws>}:failing:{conn}`: Unix ms of the first failure since the last success.
    fn failing_key(&self, ws: &str, connection_id: &str) -> String {
        self.ws_key(ws, &format!("failing:{connection_id}"))
    }

    /// A failed attempt to the connection: starts its clock if it was not running. Answers
    /// since when (Unix ms) every attempt has failed.
    ///
    /// Bound: one key per connection; it expires `ttl` after the first failure (set
    /// twice the window, so a clock still running at the window is never lost before it is
    /// looked at, and one left behind by a connection nobody sends to goes by itself).
    pub async fn note_failure(
        &self,
        ws: &str,
        connection_id: &str,
        now_ms: i64,
        ttl: std::time::Duration,
    ) -> Result<i64, StoreError> {
        let key = self.failing_key(ws, connection_id);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&key)
            .arg(now_ms)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .ignore()
            .get(&key);
        let (since,): (Option<i64>,) = self.query(&pipe).await?;
        Ok(since.unwrap_or(now_ms))
    }

    /// A successful attempt (or a connection enabled again): its clock stops.
    pub async fn clear_failing(&self, ws: &str, connection_id: &str) -> Result<(), StoreError> {
        let _: i64 = self.conn().del(self.failing_key(ws, connection_id)).await?;
        Ok(())
    }

    /// Disables a connection whose every attempt failed since `since` (the clock as the caller
    /// read it), at `now_ms`. One caller of all the deliverers that see it wins: the one whose
    /// clock is still the one running, which it stops. Nothing happens when the clock was
    /// stopped or restarted since it was read (a success, the connection enabled again or
    /// deleted), nor when the connection changed between its read here and the write (a PATCH
    /// is never undone, a deleted connection never brought back). Answers the connection as
    /// disabled, or None.
    pub async fn disable_failing(
        &self,
        ws: &str,
        connection_id: &str,
        since: i64,
        now_ms: i64,
    ) -> Result<Option<Connection>, StoreError> {
        let conns = self.ws_key(ws, "conns");
        let raw: Option<String> = self.conn().hget(&conns, connection_id).await?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        let mut c = self.open_connection(&conns, &raw)?;
        if !c.enabled {
            return Ok(None);
        }
        c.enabled = false;
        c.disabled_reason = Some(DISABLED_FAILING.to_string());
        c.disabled_at = Some(now_ms);
        c.updated_at = now_ms;
        let won: i64 = DISABLE_SCRIPT
            .key(self.failing_key(ws, connection_id))
            .key(&conns)
            .arg(since)
            .arg(connection_id)
            .arg(&raw)
            .arg(self.seal_connection(&c))
            .invoke_async(&mut self.conn())
            .await?;
        if won == 0 {
            return Ok(None);
        }
        self.bump_version().await?;
        Ok(Some(c))
    }
}

/// Stops the clock and writes the disabled connection, only if the clock is the one read and
/// the connection is as read. KEYS: the clock, the workspace's connections. ARGV: since,
/// connection id, its stored value as read, its new value. Returns 1 when it was written.
const DISABLE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], ARGV[2]) ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
redis.call('DEL', KEYS[1])
return 1
";

static DISABLE_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(DISABLE));
