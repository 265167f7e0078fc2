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

/// The compare-and-set of [`Store::mark_replayed`]. KEYS: the dead letter, the dead-letter
/// index, the event's hash. ARGV: dead-letter id, its dead_at, the delivery's field, its number
/// of attempts when it died, the pending delivery JSON.
const MARK_REPLAYED: &str = r"
local dead = redis.call('GET', KEYS[1])
if dead and cjson.decode(dead).dead_at == tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
local current = redis.call('HGET', KEYS[3], ARGV[3])
if current and #cjson.decode(current).attempts == tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[3], ARGV[3], ARGV[5])
end
return 0
";

impl Store {
    pub(super) fn dead_key(&self, ws: &str, id: &str) -> String {
        self.ws_key(ws, &format!("dl:{id}"))
    }

    /// Writes deliveries and new dead letters in one round trip (the deliverer's outcome write).
    pub async fn record_outcomes(
        &self,
        deliveries: &[(&str, &str, &Delivery)],
        dead: &[DeadLetter],
    ) -> Result<(), StoreError> {
        if deliveries.is_empty() && dead.is_empty() {
            return Ok(());
        }
        let ttl = self.retention_secs();
        let mut pipe = redis::pipe();
        for (ws, uuid, delivery) in deliveries {
            let key = self.event_key(ws, uuid);
            pipe.hset(
                &key,
                format!("d:{}", delivery.connection_id),
                to_json(delivery),
            )
            .ignore();
            pipe.expire(&key, ttl).ignore();
        }
        for d in dead {
            pipe.set_ex(
                self.dead_key(&d.workspace_id, &d.id),
                to_json(d),
                ttl as u64,
            )
            .ignore();
            let index = self.ws_key(&d.workspace_id, "dead");
            pipe.zadd(&index, &d.id, d.dead_at).ignore();
            pipe.expire(&index, ttl).ignore();
        }
        pipe.query_async::<()>(&mut self.conn()).await?;
        Ok(())
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
        redis::Script::new(MARK_REPLAYED)
            .key(self.dead_key(&d.workspace_id, &d.id))
            .key(self.ws_key(&d.workspace_id, "dead"))
            .key(self.event_key(&d.workspace_id, &d.event.uuid))
            .arg(&d.id)
            .arg(d.dead_at)
            .arg(format!("d:{}", d.connection_id))
            .arg(d.attempts.len())
            .arg(to_json(&pending))
            .invoke_async::<()>(&mut self.conn())
            .await?;
        Ok(())
    }
}
