//! Connection health: the circuit-breaker changes deliverers report, newest first.

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// How many changes are kept per connection.
const KEPT: isize = 50;

/// A deliverer's breaker for a connection changed state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BreakerChange {
    /// Unix milliseconds.
    pub at: i64,
    /// `open`, `half_open` or `closed`.
    pub state: String,
    /// Consecutive failed attempts behind the change.
    pub consecutive_failures: u32,
    /// How long the breaker stays open, when it opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_for_s: Option<u64>,
    /// Which deliverer (host:pid); each keeps its own breaker.
    pub deliverer: String,
}

impl Store {
    fn breaker_key(&self, ws: &str, connection_id: &str) -> String {
        self.ws_key(ws, &format!("breaker:{connection_id}"))
    }

    /// Adds a change to the connection's breaker history (the newest 50 are kept, for the
    /// retention period).
    pub async fn record_breaker_change(
        &self,
        ws: &str,
        connection_id: &str,
        change: &BreakerChange,
    ) -> Result<(), StoreError> {
        let key = self.breaker_key(ws, connection_id);
        let json = serde_json::to_string(change).unwrap_or_default();
        redis::pipe()
            .lpush(&key, json)
            .ignore()
            .ltrim(&key, 0, KEPT - 1)
            .ignore()
            .expire(&key, self.retention_secs())
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await?;
        Ok(())
    }

    /// The connection's breaker changes, newest first.
    pub async fn breaker_changes(
        &self,
        ws: &str,
        connection_id: &str,
    ) -> Result<Vec<BreakerChange>, StoreError> {
        let key = self.breaker_key(ws, connection_id);
        let raw: Vec<String> = self.conn().lrange(&key, 0, KEPT - 1).await?;
        Ok(raw
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect())
    }
}
