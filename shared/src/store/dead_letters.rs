//! The dead-letter index: deliveries whose schedule ran out, with their whole history, for
//! support staff to list, replay or discard. The broker's `herald.dead` queue keeps the same
//! jobs as an archive; this index is what the API reads.

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::{parse, to_json, Cursor, Store, StoreError};
use crate::model::{Attempt, Delivery, DeliveryStatus, Event};

/// A delivery that could not be made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The delivery id (`{event uuid}.{connection id}`), stable across replays.
    pub id: String,
    /// The workspace.
    pub workspace_id: String,
    /// The destination.
    pub connection_id: String,
    /// The event.
    pub event: Event,
    /// Every attempt, oldest first.
    pub attempts: Vec<Attempt>,
    /// Why it was dead-lettered (the last error, or the schedule running out).
    pub reason: String,
    /// Unix milliseconds.
    pub dead_at: i64,
}

/// Filters for listing dead letters.
#[derive(Debug, Default, Clone)]
pub struct DeadLetterFilter {
    /// Only for this connection.
    pub connection_id: Option<String>,
    /// Only of this event type.
    pub event: Option<String>,
}

impl DeadLetterFilter {
    /// True when `d` is one this filter selects.
    pub fn matches(&self, d: &DeadLetter) -> bool {
        self.connection_id
            .as_deref()
            .is_none_or(|c| c == d.connection_id)
            && self.event.as_deref().is_none_or(|e| e == d.event.event)
    }
}

/// Where one delivery stands, to record: its workspace and event, and the delivery.
pub struct OutcomeRow<'a> {
    /// The workspace.
    pub workspace_id: &'a str,
    /// The event's uuid.
    pub uuid: &'a str,
    /// The event's `time_created` (the record keeps times relative to it).
    pub time_created: i64,
    /// The delivery as it now stands.
    pub delivery: &'a Delivery,
}

impl Store {
    pub(super) fn dead_key(&self, ws: &str, id: &str) -> String {
        self.ws_key(ws, &format!("dl:{id}"))
    }

    /// Writes deliveries and new dead letters in one round trip (the deliverer's outcome
    /// write), counting each in its connection's stats (see `stats`). Each dead letter keeps its own expiry (a retention after it died); the
    /// dead-letter index is trimmed to the retention by score with every write, so neither
    /// grows while a workspace keeps failing.
    pub async fn record_outcomes(
        &self,
        rows: &[OutcomeRow<'_>],
        dead: &[DeadLetter],
    ) -> Result<(), StoreError> {
        if rows.is_empty() && dead.is_empty() {
            return Ok(());
        }
        let ttl = self.retention_secs();
        // One pipeline per workspace (a slot of its own in a cluster).
        let mut batch = self.batch();
        let floor = crate::now_ms() - super::history::INDEX_FLOOR_MS;
        let mut written: std::collections::HashMap<&str, usize> = Default::default();
        for row in rows {
            let d = row.delivery;
            // The stats bucket of the moment it settled: written only during its five
            // minutes, expiring `stats::TTL_SECS` after (bounded per connection).
            let (latency, failed, dead) = super::stats::outcome_args(d);
            batch
                .ws(row.workspace_id)
                .invoke_script(
                    super::script(super::ScriptName::Outcome)
                        .key(self.history_key(row.workspace_id))
                        .key(self.log_key(row.workspace_id))
                        .key(self.stats_key(row.workspace_id, &d.connection_id, d.updated_at))
                        .arg(row.uuid)
                        .arg(row.time_created)
                        .arg(&d.connection_id)
                        .arg(d.attempts.len())
                        .arg(super::record::delivery_body(row.uuid, row.time_created, d))
                        .arg(floor)
                        .arg(super::stats::TTL_SECS)
                        .arg(latency)
                        .arg(failed)
                        .arg(dead),
                )
                .ignore();
            *written.entry(row.workspace_id).or_default() += 1;
        }
        for (ws, n) in written {
            self.trim_history(&mut batch, ws, n);
        }
        let cutoff = crate::now_ms() - self.retention.as_millis() as i64;
        for d in dead {
            let pipe = batch.ws(&d.workspace_id);
            pipe.set_ex(
                self.dead_key(&d.workspace_id, &d.id),
                to_json(d),
                ttl as u64,
            )
            .ignore();
            let index = self.ws_key(&d.workspace_id, "dead");
            pipe.zadd(&index, &d.id, d.dead_at).ignore();
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(&index)
                .arg("-inf")
                .arg(format!("({cutoff}"))
                .ignore();
            pipe.expire(&index, ttl).ignore();
        }
        self.run_batch(batch).await
    }

    /// One dead letter.
    pub async fn get_dead_letter(
        &self,
        ws: &str,
        id: &str,
    ) -> Result<Option<DeadLetter>, StoreError> {
        let key = self.dead_key(ws, id);
        let v: Option<String> = self.conn().get(&key).await?;
        v.map(|v| parse(&key, &v)).transpose()
    }

    /// Dead letters of a workspace, newest first, filtered.
    pub async fn list_dead_letters(
        &self,
        ws: &str,
        filter: &DeadLetterFilter,
        cursor: Option<Cursor>,
        limit: usize,
        max_scan: usize,
    ) -> Result<(Vec<DeadLetter>, Option<Cursor>), StoreError> {
        let index = self.ws_key(ws, "dead");
        let this = self.clone();
        let ws = ws.to_string();
        let filter = filter.clone();
        super::paging::scan_newest(
            &mut self.conn(),
            &index,
            cursor,
            None,
            limit,
            max_scan,
            |ids| {
                let this = this.clone();
                let ws = ws.clone();
                let filter = filter.clone();
                async move {
                    let keys: Vec<String> = ids.iter().map(|id| this.dead_key(&ws, id)).collect();
                    let values: Vec<Option<String>> = this.conn().mget(&keys).await?;
                    values
                        .into_iter()
                        .zip(keys)
                        .map(|(v, k)| {
                            let d = v.map(|v| parse::<DeadLetter>(&k, &v)).transpose()?;
                            Ok(d.filter(|d| filter.matches(d)))
                        })
                        .collect()
                }
            },
        )
        .await
    }

    /// Removes a dead letter from the index. Returns false if it was not there.
    pub async fn discard_dead_letter(&self, ws: &str, id: &str) -> Result<bool, StoreError> {
        let (removed, _): (i64, i64) = redis::pipe()
            .atomic()
            .del(self.dead_key(ws, id))
            .zrem(self.ws_key(ws, "dead"), id)
            .query_async(&mut self.conn())
            .await?;
        Ok(removed > 0)
    }

    /// After a replay was published (never before: a crash in between would lose it): the
    /// dead letter leaves the index and its delivery is `pending` again, keeping its attempts.
    /// Both are compare-and-set, since the replay may already have been handled: a delivery
    /// with newer attempts keeps its outcome, and a dead letter written again since (the
    /// replay died too) stays.
    pub async fn mark_replayed(&self, d: &DeadLetter) -> Result<(), StoreError> {
        let pending = Delivery {
            connection_id: d.connection_id.clone(),
            status: DeliveryStatus::Pending,
            attempts: d.attempts.clone(),
            next_attempt_at: None,
            dead_letter_id: None,
            updated_at: crate::now_ms(),
        };
        let body = super::record::delivery_body(&d.event.uuid, d.event.time_created, &pending);
        let mut pipe = redis::pipe();
        pipe.invoke_script(
            super::script(super::ScriptName::MarkReplayed)
                .key(self.dead_key(&d.workspace_id, &d.id))
                .key(self.ws_key(&d.workspace_id, "dead"))
                .key(self.history_key(&d.workspace_id))
                .arg(&d.id)
                .arg(d.dead_at)
                .arg(&d.event.uuid)
                .arg(&d.connection_id)
                .arg(d.attempts.len())
                .arg(body),
        )
        .ignore();
        self.run(&pipe).await
    }
}
