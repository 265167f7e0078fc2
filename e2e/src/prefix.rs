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
    /// Deletes every key under the prefix; returns how many. `url` may be a Redis Cluster's
    /// comma-separated seed nodes: then every master is cleared.
    ///
    /// Blocking on purpose: it also runs from `Drop`, where no runtime can be awaited.
    pub fn clear(&self) -> anyhow::Result<usize> {
        // A seed node may be down (a fault test killed it): the first that answers will do.
        let seeds: Vec<&str> = self.url.split(',').map(str::trim).collect();
        let mut found = Err(anyhow::anyhow!("no Redis URL"));
        for seed in &seeds {
            found = crate::cluster::masters_of(seed).map(|m| (*seed, m));
            if found.is_ok() {
                break;
            }
        }
        let (seed, masters) = found?;
        if masters.is_empty() {
            return clear_node(seed, &self.prefix);
        }
        let mut cleared = 0;
        for port in masters {
            cleared += clear_node(&format!("redis://127.0.0.1:{port}"), &self.prefix)?;
        }
        Ok(cleared)
    }
}

/// Deletes the keys under `prefix` that the Redis at `url` holds, one UNLINK per key (in a
/// cluster, keys of different slots cannot share a command).
fn clear_node(url: &str, prefix: &str) -> anyhow::Result<usize> {
    let client = redis::Client::open(url)?;
    let mut c = client.get_connection_with_timeout(Duration::from_secs(5))?;
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
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
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("UNLINK").arg(key).ignore();
        }
        pipe.query::<()>(&mut c)?;
    }
    Ok(keys.len())
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
