//! API keys as intake sees them: looked up in Redis on every request (so a rolled key stops
//! working at once), and remembered so intake keeps accepting from known keys while Redis is
//! away.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use herald_shared::model::workspace::{hash_key, ApiKey};
use herald_shared::store::{Store, StoreError};

/// Valid keys seen recently, by the key's hash (the key itself is not kept).
pub struct KeyCache {
    entries: Mutex<HashMap<String, ApiKey>>,
    /// When Redis was last found unreachable: for a second after, known keys are honoured
    /// without waiting for Redis to fail again.
    unreachable_at: Mutex<Option<Instant>>,
}

/// How long after a failed read known keys skip Redis.
const UNREACHABLE_HOLD: Duration = Duration::from_secs(1);

impl Default for KeyCache {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            unreachable_at: Mutex::new(None),
        }
    }

    /// The key's record from Redis; while Redis cannot be reached, a key seen before is still
    /// honoured. Unknown keys are never cached, so guessing
    /// keys does not grow it.
    pub async fn lookup(&self, store: &Store, token: &str) -> Result<Option<ApiKey>, StoreError> {
        let hash = hash_key(token);
        let cached = self.entries().get(&hash).cloned();
        if let Some(key) = &cached {
            let redis_away = self
                .unreachable_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|t| t.elapsed() < UNREACHABLE_HOLD);
            if redis_away {
                return Ok(Some(key.clone()));
            }
        }
        match store.lookup_key(token).await {
            Ok(Some(key)) => {
                self.entries().insert(hash, key.clone());
                Ok(Some(key))
            }
            Ok(None) => {
                self.entries().remove(&hash);
                Ok(None)
            }
            Err(StoreError::Redis(e)) if cached.is_some() && is_unreachable(&e) => {
                *self
                    .unreachable_at
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                tracing::debug!(error = %e, "Redis unreachable; honouring a known key");
                Ok(cached)
            }
            Err(e) => Err(e),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, ApiKey>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Redis could not be reached (as opposed to refusing the command).
pub fn is_unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}
