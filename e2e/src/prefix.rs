//! A Redis key prefix of its own, so that one run's keys never meet another's.

use std::time::Duration;

/// The Redis every test talks to unless it starts its own.
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A Redis key prefix; every key under it is deleted on drop (also when a test fails).
pub struct RedisPrefix {
    /// Redis URL.
    pub url: String,
    /// The prefix (keys are `<prefix>:...`).
    pub prefix: String,
}

impl RedisPrefix {
    /// Deletes every key under the prefix; returns how many.
    ///
    /// Blocking on purpose: it also runs from `Drop`, where no runtime can be awaited.
    pub fn clear(&self) -> anyhow::Result<usize> {
        let client = redis::Client::open(self.url.as_str())?;
        let mut c = client.get_connection_with_timeout(Duration::from_secs(5))?;
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}:*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query(&mut c)?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        for chunk in keys.chunks(1000) {
            redis::cmd("UNLINK").arg(chunk).query::<()>(&mut c)?;
        }
        Ok(keys.len())
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        if let Err(e) = self.clear() {
            eprintln!(
                "warning: could not delete Redis keys {}:*: {e:#}",
                self.prefix
            );
        }
    }
}
