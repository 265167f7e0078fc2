//! Redis as the run sees it: the whole server's `used_memory` (`INFO memory`), its key count,
//! and a census of the run's own keys (those under its prefix), each sized with `MEMORY USAGE`
//! and grouped by the shape of its name, so a figure per event can be split by structure.
//!
//! `used_memory` is the server's: on a Redis shared with other installations it moves with
//! their writes too. The census counts only this run's keys (without Redis's per-key overhead in
//! the main dictionary, about 50-70 bytes a key, which `used_memory` includes).

use std::collections::BTreeMap;

use anyhow::Context;
use redis::aio::MultiplexedConnection;
use serde::Serialize;

/// A connection for measuring, apart from the services' own.
pub struct RedisStat {
    conn: MultiplexedConnection,
    prefix: String,
}

/// Keys whose names have one shape, e.g. `<prefix>:ws:*:evt:*`.
#[derive(Debug, Clone, Serialize)]
pub struct KeyKind {
    /// The shape: the prefix as `<prefix>`, ids as `*`.
    pub pattern: String,
    /// Redis type (`hash`, `zset` ...).
    pub kind: String,
    /// How many keys.
    pub keys: u64,
    /// Their `MEMORY USAGE` summed, bytes.
    pub bytes: u64,
}

/// The run's own keys at one moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KeyCensus {
    /// Keys under the prefix.
    pub keys: u64,
    /// Their `MEMORY USAGE` summed, bytes.
    pub bytes: u64,
    /// By shape, largest first.
    pub kinds: Vec<KeyKind>,
}

impl RedisStat {
    /// Connects to `url`; the run's keys are `<prefix>:...`.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("the Redis URL")?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .context("connecting to Redis to measure it")?;
        Ok(Self {
            conn,
            prefix: prefix.to_string(),
        })
    }

    /// The server's `used_memory`, bytes.
    pub async fn used_memory(&mut self) -> anyhow::Result<u64> {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut self.conn)
            .await?;
        info_field(&info, "used_memory").context("no used_memory in INFO memory")
    }

    /// Keys in the server's current database, the run's and everyone else's.
    pub async fn dbsize(&mut self) -> anyhow::Result<u64> {
        Ok(redis::cmd("DBSIZE").query_async(&mut self.conn).await?)
    }

    /// Counts and sizes every key under the prefix (`SCAN`, then `MEMORY USAGE ... SAMPLES 0`,
    /// which is exact; a few seconds of Redis time for a few hundred thousand keys).
    pub async fn census(&mut self) -> anyhow::Result<KeyCensus> {
        let pattern = format!("{}:*", self.prefix);
        let mut cursor: u64 = 0;
        let mut kinds: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut self.conn)
                .await?;
            if !keys.is_empty() {
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.cmd("MEMORY").arg("USAGE").arg(k).arg("SAMPLES").arg(0);
                    pipe.cmd("TYPE").arg(k);
                }
                let answers: Vec<redis::Value> = pipe.query_async(&mut self.conn).await?;
                for (k, pair) in keys.iter().zip(answers.chunks(2)) {
                    // A key that expired after SCAN answers nil, or type `none` if it expired
                    // between the two commands: it is no longer there to count.
                    let bytes: Option<u64> = redis::from_redis_value(&pair[0]).ok();
                    let kind: String = redis::from_redis_value(&pair[1]).unwrap_or_default();
                    if let Some(bytes) = bytes.filter(|_| kind != "none") {
                        let e = kinds.entry((shape(k, &self.prefix), kind)).or_default();
                        e.0 += 1;
                        e.1 += bytes;
                    }
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let mut kinds: Vec<KeyKind> = kinds
            .into_iter()
            .map(|((pattern, kind), (keys, bytes))| KeyKind {
                pattern,
                kind,
                keys,
                bytes,
            })
            .collect();
        kinds.sort_by_key(|k| std::cmp::Reverse(k.bytes));
        Ok(KeyCensus {
            keys: kinds.iter().map(|k| k.keys).sum(),
            bytes: kinds.iter().map(|k| k.bytes).sum(),
            kinds,
        })
    }
}

/// A numeric field of an `INFO` answer.
fn info_field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// The shape of a key's name: the prefix as `<prefix>`, and each part that carries an id (a
/// digit among at least 6 characters, also inside a `{hash tag}`) as `*`.
pub fn shape(key: &str, prefix: &str) -> String {
    let rest = key.strip_prefix(prefix).unwrap_or(key);
    let parts: Vec<String> = rest
        .split(':')
        .map(|part| {
            let inner = part.trim_start_matches('{').trim_end_matches('}');
            // Ids, and numbers (the locators' buckets, `loc:<n>`).
            let id_like = (inner.len() >= 6 && inner.bytes().any(|b| b.is_ascii_digit()))
                || (!inner.is_empty() && inner.bytes().all(|b| b.is_ascii_digit()));
            match (id_like, inner.len() != part.len()) {
                (true, true) => "{*}".to_string(),
                (true, false) => "*".to_string(),
                (false, _) => part.to_string(),
            }
        })
        .collect();
    format!("<prefix>{}", parts.join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_hide_the_prefix_and_ids() {
        let p = "herald-load-1a2b";
        assert_eq!(
            shape("herald-load-1a2b:ws:ws_01JABCD3EF:evt:evt_01JX9K2M", p),
            "<prefix>:ws:*:evt:*"
        );
        assert_eq!(
            shape("herald-load-1a2b:ws:ws_01JABCD3EF:events", p),
            "<prefix>:ws:*:events"
        );
        assert_eq!(
            shape("herald-load-1a2b:{ws_01JABCD3EF}:dl", p),
            "<prefix>:{*}:dl"
        );
        assert_eq!(
            shape("herald-load-1a2b:workspaces", p),
            "<prefix>:workspaces"
        );
        assert_eq!(shape("herald-load-1a2b:loc:60", p), "<prefix>:loc:*");
    }

    #[test]
    fn info_fields_are_read_by_name() {
        let info = "# Memory\r\nused_memory:1013584\r\nused_memory_human:989.83K\r\n";
        assert_eq!(info_field(info, "used_memory"), Some(1_013_584));
        assert_eq!(info_field(info, "used_memory_peak"), None);
    }

    #[tokio::test]
    async fn a_census_counts_and_sizes_only_its_own_keys() {
        let prefix = format!("herald-load-census-{}", crate::stack::run_id());
        let keys = herald_e2e::RedisPrefix {
            url: herald_e2e::prefix::REDIS_URL.into(),
            prefix: prefix.clone(),
        };
        let mut stat = RedisStat::connect(&keys.url, &prefix).await.expect("redis");
        let mut conn = stat.conn.clone();
        let mut pipe = redis::pipe();
        for i in 0..10 {
            pipe.hset(
                format!("{prefix}:ws:ws_0001:evt:evt_{i:06}"),
                "body",
                "x".repeat(200),
            )
            .ignore();
        }
        pipe.zadd(format!("{prefix}:ws:ws_0001:events"), "evt_000001", 1)
            .ignore();
        pipe.set(format!("{prefix}-other:x"), 1).ignore();
        pipe.query_async::<()>(&mut conn).await.expect("writes");

        let census = stat.census().await.expect("census");

        let _: () = redis::cmd("DEL")
            .arg(format!("{prefix}-other:x"))
            .query_async(&mut conn)
            .await
            .expect("del");
        assert_eq!(census.keys, 11);
        let events = census
            .kinds
            .iter()
            .find(|k| k.pattern == "<prefix>:ws:*:evt:*")
            .expect("the event hashes");
        assert_eq!((events.keys, events.kind.as_str()), (10, "hash"));
        assert!(events.bytes >= 10 * 200, "{}", events.bytes);
        assert_eq!(census.kinds[0].pattern, "<prefix>:ws:*:evt:*");
        assert!(stat.used_memory().await.expect("info") > 0);
    }
}
