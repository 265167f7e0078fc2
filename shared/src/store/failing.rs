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

    /// Disables a connection whose every attempt failed since `since`, at `now_ms`: one
    /// caller of all the deliverers that see it wins (the one that stops the clock). Answers
    /// the connection as disabled, or None when another caller won, it is gone, or it was
    /// disabled already.
    pub async fn disable_failing(
        &self,
        ws: &str,
        connection_id: &str,
        now_ms: i64,
    ) -> Result<Option<Connection>, StoreError> {
        let stopped: i64 = self.conn().del(self.failing_key(ws, connection_id)).await?;
        if stopped == 0 {
            return Ok(None);
        }
        let Some(mut c) = self.get_connection(ws, connection_id).await? else {
            return Ok(None);
        };
        if !c.enabled {
            return Ok(None);
        }
        c.enabled = false;
        c.disabled_reason = Some(DISABLED_FAILING.to_string());
        c.disabled_at = Some(now_ms);
        c.updated_at = now_ms;
        self.put_connection(&c).await?;
        Ok(Some(c))
    }
}
