//! API keys as intake sees them: looked up in Redis and trusted for `HERALD_CONFIG_REFRESH`
//! (250 ms) so a busy producer does not cost a Redis read per request, and remembered so intake
//! keeps accepting from known keys while Redis is away, without waiting more than
//! [`KNOWN_KEY_WAIT`] for it. A key rolled through this ingest stops
//! working here at once; other ingest replicas refuse it within the refresh interval.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use herald_shared::model::workspace::{hash_key, ApiKey};
use herald_shared::store::{Store, StoreError};

/// Valid keys seen recently, by the key's hash (the key itself is not kept).
pub struct KeyCache {
    fresh: Duration,
    entries: Mutex<HashMap<String, (ApiKey, Instant)>>,
    /// When Redis was last found unreachable: for a second after, known keys are honoured
    /// without waiting for Redis to fail again.
    unreachable_at: Mutex<Option<Instant>>,
}

/// How long after a failed read known keys skip Redis.
const UNREACHABLE_HOLD: Duration = Duration::from_secs(1);

/// How long a known key's read may wait for Redis before the key is honoured anyway. Right
/// after Redis goes away, its client spends seconds on reconnection attempts, and every read
/// waits for them: a producer whose key is known must not.
pub const KNOWN_KEY_WAIT: Duration = Duration::from_millis(250);

impl KeyCache {
    /// An empty cache whose entries are trusted for `fresh`.
    pub fn new(fresh: Duration) -> Self {
        Self {
            fresh,
            entries: Mutex::new(HashMap::new()),
            unreachable_at: Mutex::new(None),
        }
    }

    /// The key's record: cached while fresh, else from Redis; while Redis cannot be reached, a
    /// key seen before is still honoured. Unknown keys are never cached, so guessing keys does
    /// not grow it.
    pub async fn lookup(&self, store: &Store, token: &str) -> Result<Option<ApiKey>, StoreError> {
        let hash = hash_key(token);
        let cached = self.entries().get(&hash).cloned();
        if let Some((key, at)) = &cached {
            let redis_away = self
                .unreachable_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|t| t.elapsed() < UNREACHABLE_HOLD);
            if redis_away || at.elapsed() < self.fresh {
                return Ok(Some(key.clone()));
            }
        }
        let read = store.lookup_key(token);
        let answer = if cached.is_some() {
            tokio::time::timeout(KNOWN_KEY_WAIT, read)
                .await
                .unwrap_or_else(|_| Err(no_answer_in_time()))
        } else {
            read.await
        };
        match answer {
            Ok(Some(key)) => {
                self.entries().insert(hash, (key.clone(), Instant::now()));
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
                Ok(cached.map(|(key, _)| key))
            }
            Err(e) => Err(e),
        }
    }

    /// Forgets every key (after a roll, so the old key is refused here at once).
    pub fn clear(&self) {
        self.entries().clear();
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, (ApiKey, Instant)>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The error of a read that got no answer within [`KNOWN_KEY_WAIT`]: Redis is treated as
/// unreachable.
pub fn no_answer_in_time() -> StoreError {
    StoreError::Redis(redis::RedisError::from((
        redis::ErrorKind::IoError,
        "no answer from Redis in time",
        format!("{} ms", KNOWN_KEY_WAIT.as_millis()),
    )))
}

/// Redis could not be reached (as opposed to refusing the command).
pub fn is_unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}
