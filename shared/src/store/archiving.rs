//! Moving final history from Redis to the PostgreSQL archive (see [`crate::archive`]).
//!
//! The router runs [`Store::run_archiver`]. Every second it goes over the workspaces; for each
//! it takes a lease (`{p}:ws:{<ws>}:archiving`, so several routers share the work, one per
//! workspace at a time) and walks the workspace's log from where it stopped
//! (`{p}:ws:{<ws>}:archived`, a log entry id) up to the hot window's edge, 1,000 entries at a
//! time:
//! - an event whose every delivery is final (delivered; dead with its dead letter discarded or
//!   expired; routed to none) is written to PostgreSQL, then removed from the history, the log
//!   and the locators;
//! - any other is left where it is and noted in `{p}:ws:{<ws>}:held` (uuid -> log id), which
//!   each pass looks through a few hundred at a time, moving those that became final since.
//!
//! The write to PostgreSQL comes first, so a crash in between writes a row twice at most, which
//! the archive ignores (its key is the log position); nothing is removed from Redis before
//! PostgreSQL has it. While PostgreSQL is down nothing moves: Redis keeps the backlog (bounded
//! by the retention, see `docs/operations.md`), `herald_archive_lag_seconds` grows and a line
//! is logged each pass.

use std::collections::HashMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{record, Store, StoreError};
use crate::archive::Row;
use crate::model::DeliveryStatus;

/// Log entries looked at per step.
const BATCH: usize = 1_000;

/// Steps per workspace per pass, at most (then the next workspace has its turn).
const MAX_STEPS: usize = 50;

/// Held entries looked at again per workspace per pass.
const HELD_SCAN: usize = 200;

/// How often a pass runs.
const EVERY: Duration = Duration::from_secs(1);

/// How long a workspace's lease lasts (renewed by each step).
const LEASE_MS: u64 = 30_000;

/// Removes what was archived and notes what is held. KEYS: history, log, held, cursor.
/// ARGV: new cursor (empty: unchanged), TTL seconds, how many moved pairs, then the moved
/// `uuid, log id` pairs, then the held ones.
const ARCHIVED: &str = r"
local n = tonumber(ARGV[3])
local i = 4
for k = 1, n do
  redis.call('HDEL', KEYS[1], ARGV[i])
  redis.call('XDEL', KEYS[2], ARGV[i + 1])
  redis.call('HDEL', KEYS[3], ARGV[i])
  i = i + 2
end
while i <= #ARGV do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[3], ARGV[i])
  else
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  end
  i = i + 2
end
if ARGV[1] ~= '' then redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[2]) end
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('EXPIRE', KEYS[3], ARGV[2]) end
return 1
";

/// Deletes a lease if it is still this process's. KEYS: lease. ARGV: owner.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
";

static ARCHIVED_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(ARCHIVED));
static RELEASE_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(RELEASE));

/// One log entry: its id and uuid.
struct Entry {
    id: String,
    uuid: String,
}

/// What one step decided.
#[derive(Default)]
struct Step {
    moved: Vec<(String, String)>,
    held: Vec<(String, String)>,
    rows: Vec<Row>,
}

impl Store {
    /// The archive, when on.
    pub fn archive(&self) -> Option<&std::sync::Arc<crate::archive::Archive>> {
        self.archive.as_ref()
    }

    /// Moves final history older than the hot window to the archive, until `cancel` fires;
    /// also drops the archive's partitions past the retention. Does nothing without an archive.
    pub async fn run_archiver(self, cancel: CancellationToken) {
        let Some(archive) = self.archive.clone() else {
            return cancel.cancelled().await;
        };
        let owner = crate::ids::new_id("arc");
        let mut last_drop = std::time::Instant::now() - Duration::from_secs(3_600);
        let mut behind_since: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(EVERY) => {}
            }
            match self.archive_pass(&owner).await {
                Ok(lag) => {
                    metrics::gauge!("herald_archive_lag_seconds").set(lag.as_secs_f64());
                    if behind_since.take().is_some() {
                        tracing::info!("archive: caught up again");
                    }
                }
                Err(e) => {
                    let since = *behind_since.get_or_insert_with(std::time::Instant::now);
                    let lag = self.archive_lag().await.unwrap_or_default();
                    metrics::gauge!("herald_archive_lag_seconds").set(lag.as_secs_f64());
                    tracing::warn!(
                        error = %e,
                        lag_seconds = lag.as_secs(),
                        failing_for_seconds = since.elapsed().as_secs(),
                        "archive is behind: history stays in Redis until PostgreSQL takes it"
                    );
                }
            }
            if last_drop.elapsed() >= archive.drop_every() {
                last_drop = std::time::Instant::now();
                if let Err(e) = archive.drop_expired().await {
                    tracing::warn!(error = %e, "archive: dropping expired partitions failed");
                }
            }
        }
    }

    /// One pass over every workspace; answers the lag left.
    async fn archive_pass(&self, owner: &str) -> Result<Duration, StoreError> {
        let mut lag = Duration::ZERO;
        for ws in self.all_workspaces().await? {
            // A workspace with nothing past the hot window and nothing held costs two reads.
            if !self.has_archive_work(&ws).await? {
                continue;
            }
            if !self.take_archive_lease(&ws, owner).await? {
                continue;
            }
            let moved = self.archive_workspace(&ws).await;
            self.release_archive_lease(&ws, owner).await?;
            lag = lag.max(moved?);
        }
        Ok(lag)
    }

    /// True when the workspace has log entries past the hot window not looked at yet, or held
    /// ones.
    async fn has_archive_work(&self, ws: &str) -> Result<bool, StoreError> {
        let held: i64 = redis::cmd("HLEN")
            .arg(self.ws_key(ws, "held"))
            .query_async(&mut self.conn())
            .await?;
        Ok(held > 0 || self.next_unarchived(ws).await?.is_some())
    }

    /// How far behind the archive is, as Redis shows it (used when PostgreSQL fails).
    async fn archive_lag(&self) -> Result<Duration, StoreError> {
        let mut lag = Duration::ZERO;
        for ws in self.all_workspaces().await? {
            lag = lag.max(self.workspace_lag(&ws).await?);
        }
        Ok(lag)
    }

    pub(super) async fn all_workspaces(&self) -> Result<Vec<String>, StoreError> {
        Ok(redis::cmd("ZRANGE")
            .arg(self.key("workspaces"))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn())
            .await?)
    }

    async fn take_archive_lease(&self, ws: &str, owner: &str) -> Result<bool, StoreError> {
        let key = self.ws_key(ws, "archiving");
        let taken: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(LEASE_MS)
            .query_async(&mut self.conn())
            .await?;
        Ok(taken.is_some())
    }

    async fn release_archive_lease(&self, ws: &str, owner: &str) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.invoke_script(RELEASE_SCRIPT.key(self.ws_key(ws, "archiving")).arg(owner))
            .ignore();
        self.run_scripts(&pipe, &[&RELEASE_SCRIPT]).await
    }

    /// The first log entry past the hot window the archive walk has not looked at: its ms and
    /// the hot window's edge now.
    async fn next_unarchived(&self, ws: &str) -> Result<Option<(i64, i64)>, StoreError> {
        let cutoff = crate::now_ms() - self.hot_window.as_millis() as i64;
        let cursor: Option<String> = redis::cmd("GET")
            .arg(self.ws_key(ws, "archived"))
            .query_async(&mut self.conn())
            .await?;
        let first: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(self.log_key(ws))
            .arg(cursor.map_or("-".to_string(), |c| format!("({c}")))
            .arg(cutoff)
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn())
            .await?;
        Ok(first
            .first()
            .and_then(|(id, _)| super::history::log_position(id))
            .map(|(ms, _)| (ms, cutoff)))
    }

    /// The oldest entry past the hot window not archived yet: how long ago it crossed it.
    async fn workspace_lag(&self, ws: &str) -> Result<Duration, StoreError> {
        Ok(self
            .next_unarchived(ws)
            .await?
            .map_or(Duration::ZERO, |(ms, cutoff)| {
                Duration::from_millis((cutoff - ms).max(0) as u64)
            }))
    }

    /// Archives one workspace's final history past the hot window; answers the lag left.
    async fn archive_workspace(&self, ws: &str) -> Result<Duration, StoreError> {
        let Some(archive) = self.archive.clone() else {
            return Ok(Duration::ZERO);
        };
        let cutoff = crate::now_ms() - self.hot_window.as_millis() as i64;
        let cursor_key = self.ws_key(ws, "archived");
        for _ in 0..MAX_STEPS {
            let cursor: Option<String> = redis::cmd("GET")
                .arg(&cursor_key)
                .query_async(&mut self.conn())
                .await?;
            let page: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
                .arg(self.log_key(ws))
                .arg(cursor.map_or("-".to_string(), |c| format!("({c}")))
                .arg(cutoff)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut self.conn())
                .await?;
            let Some(last) = page.last().map(|(id, _)| id.clone()) else {
                break;
            };
            let entries: Vec<Entry> = page
                .into_iter()
                .map(|(id, mut f)| Entry {
                    id,
                    uuid: f.remove("u").unwrap_or_default(),
                })
                .collect();
            let full = entries.len() == BATCH;
            let step = self.classify(ws, &entries).await?;
            archive.insert(&step.rows).await?;
            self.apply_step(ws, &step, Some(&last)).await?;
            metrics::counter!("herald_archive_events_total").increment(step.rows.len() as u64);
            if !full {
                break;
            }
        }
        self.archive_held(ws, &archive).await?;
        self.workspace_lag(ws).await
    }

    /// Looks at a few held entries again: those final now move.
    async fn archive_held(
        &self,
        ws: &str,
        archive: &crate::archive::Archive,
    ) -> Result<(), StoreError> {
        let scan_key = self.ws_key(ws, "held-scan");
        let at: Option<u64> = redis::cmd("GET")
            .arg(&scan_key)
            .query_async(&mut self.conn())
            .await?;
        let (next, pairs): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
            .arg(self.ws_key(ws, "held"))
            .arg(at.unwrap_or(0))
            .arg("COUNT")
            .arg(HELD_SCAN)
            .query_async(&mut self.conn())
            .await?;
        if !pairs.is_empty() {
            let entries: Vec<Entry> = pairs
                .into_iter()
                .map(|(uuid, id)| Entry { id, uuid })
                .collect();
            let step = self.classify(ws, &entries).await?;
            archive.insert(&step.rows).await?;
            self.apply_step(ws, &step, None).await?;
            metrics::counter!("herald_archive_events_total").increment(step.rows.len() as u64);
        }
        let ttl = self.retention_secs();
        let _: () = redis::cmd("SET")
            .arg(&scan_key)
            .arg(next)
            .arg("EX")
            .arg(ttl)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Which entries are final (to move, with their rows) and which are held; an entry whose
    /// record is gone (trimmed) is dropped from the held list.
    async fn classify(&self, ws: &str, entries: &[Entry]) -> Result<Step, StoreError> {
        let uuids: Vec<&str> = entries.iter().map(|e| e.uuid.as_str()).collect();
        let raw: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.history_key(ws))
            .arg(&uuids)
            .query_async(&mut self.conn())
            .await?;
        let mut step = Step::default();
        let mut dead_checks = Vec::new();
        let mut decoded = Vec::with_capacity(entries.len());
        for (i, (entry, text)) in entries.iter().zip(raw).enumerate() {
            let Some(text) = text else {
                // Trimmed meanwhile: nothing to move; forget it if it was held.
                step.held.push((entry.uuid.clone(), String::new()));
                decoded.push(None);
                continue;
            };
            let Ok(d) = record::decode(&entry.uuid, &text) else {
                step.held.push((entry.uuid.clone(), entry.id.clone()));
                decoded.push(None);
                continue;
            };
            for del in &d.deliveries {
                if del.status == DeliveryStatus::Dead {
                    if let Some(id) = &del.dead_letter_id {
                        dead_checks.push((i, self.dead_key(ws, id)));
                    }
                }
            }
            decoded.push(Some((d, text)));
        }
        let mut dead_alive = vec![false; entries.len()];
        if !dead_checks.is_empty() {
            let mut pipe = redis::pipe();
            for (_, key) in &dead_checks {
                pipe.exists(key);
            }
            let alive: Vec<bool> = pipe.query_async(&mut self.conn()).await?;
            for ((i, _), alive) in dead_checks.iter().zip(alive) {
                dead_alive[*i] |= alive;
            }
        }
        for (i, (entry, d)) in entries.iter().zip(decoded).enumerate() {
            let Some((d, text)) = d else { continue };
            let settled = d.event.is_some()
                && d.routed.is_some()
                && !dead_alive[i]
                && d.deliveries.iter().all(|x| {
                    matches!(
                        x.status,
                        DeliveryStatus::Delivered | DeliveryStatus::Dead | DeliveryStatus::Skipped
                    )
                });
            let position = super::history::log_position(&entry.id);
            match (settled, position, d.event.as_ref()) {
                (true, Some((ms, seq)), Some(event)) => {
                    step.rows.push(Row {
                        workspace_id: ws.to_string(),
                        log_ms: ms,
                        log_seq: seq,
                        uuid: entry.uuid.clone(),
                        time_created: event.time_created,
                        record: text,
                    });
                    step.moved.push((entry.uuid.clone(), entry.id.clone()));
                }
                _ => step.held.push((entry.uuid.clone(), entry.id.clone())),
            }
        }
        Ok(step)
    }

    /// Removes from Redis what the archive now has, notes what is held, and moves the cursor.
    async fn apply_step(
        &self,
        ws: &str,
        step: &Step,
        cursor: Option<&str>,
    ) -> Result<(), StoreError> {
        let ttl = self.retention_secs() + 120;
        let mut call = ARCHIVED_SCRIPT.key(self.history_key(ws));
        call.key(self.log_key(ws))
            .key(self.ws_key(ws, "held"))
            .key(self.ws_key(ws, "archived"))
            .arg(cursor.unwrap_or(""))
            .arg(ttl)
            .arg(step.moved.len());
        for (uuid, id) in step.moved.iter().chain(&step.held) {
            call.arg(uuid).arg(id);
        }
        let mut pipe = redis::pipe();
        pipe.invoke_script(&call).ignore();
        self.run_scripts(&pipe, &[&ARCHIVED_SCRIPT]).await?;
        let moved: Vec<String> = step.moved.iter().map(|(u, _)| u.clone()).collect();
        self.unlocate(ws, &moved).await
    }
}
