//! The delivery history: each event, where each of its deliveries stands, and every attempt.
//! A workspace keeps one record per event in its `history` hash (the compact text of
//! `record`) and one entry per event in its `log` stream, ordered by time; both are trimmed to
//! the retention by every write (`scripts::TRIM`). Writes are pipelined so a batch of events or
//! outcomes costs one Redis round trip.

use std::collections::HashMap;

use serde::Serialize;

use super::{parse, record, Cursor, Store, StoreError};
use crate::model::{Delivery, DeliveryStatus, Event};

/// An event as routed: its workspace and the connections it goes to.
pub struct Routed<'a> {
    /// The workspace.
    pub workspace_id: &'a str,
    /// The event.
    pub event: &'a Event,
    /// Matched connections (empty: no rule matched).
    pub connection_ids: Vec<String>,
    /// Matched connections that are disabled: recorded as `skipped`, sent nothing.
    pub skipped: Vec<String>,
}

/// An event with its deliveries, as the history API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    /// The event.
    #[serde(flatten)]
    pub event: Event,
    /// `pending`, `delivered`, `retrying`, `dead`, `skipped` or `no_match`.
    pub status: &'static str,
    /// One per matched connection.
    pub deliveries: Vec<Delivery>,
}

/// Filters for listing events.
#[derive(Debug, Default, Clone)]
pub struct EventFilter {
    /// Only events whose status is this.
    pub status: Option<String>,
    /// Only events of this type.
    pub event: Option<String>,
    /// Only events with a delivery to this connection.
    pub connection_id: Option<String>,
    /// Only events created at or after this time (Unix ms): the walk stops there.
    pub since: Option<i64>,
}

impl EventFilter {
    fn matches(&self, r: &EventRecord) -> bool {
        self.since.is_none_or(|t| r.event.time_created >= t)
            && self.status.as_deref().is_none_or(|s| s == r.status)
            && self.event.as_deref().is_none_or(|e| e == r.event.event)
            && self
                .connection_id
                .as_deref()
                .is_none_or(|c| r.deliveries.iter().any(|d| d.connection_id == c))
    }
}

/// How many events one list request looks at, at most, before it answers with what it found
/// and a cursor to go on from (a filter that matches rarely gives short pages, not long reads).
pub const MAX_SCAN: usize = 5_000;

/// The statuses an event can have.
pub const EVENT_STATUSES: &[&str] = &[
    "pending",
    "delivered",
    "retrying",
    "dead",
    "skipped",
    "no_match",
];

/// An event's status from its deliveries: the worst of them (`dead` over `retrying` over
/// `pending` over `delivered`, a skipped delivery counting only when all are); `no_match` when
/// it was routed to no connection.
pub fn event_status(routed: Option<usize>, deliveries: &[Delivery]) -> &'static str {
    let has = |s: DeliveryStatus| deliveries.iter().any(|d| d.status == s);
    match routed {
        None => "pending",
        Some(0) if deliveries.is_empty() => "no_match",
        _ if has(DeliveryStatus::Dead) => "dead",
        _ if has(DeliveryStatus::Retrying) => "retrying",
        _ if has(DeliveryStatus::Pending) || deliveries.is_empty() => "pending",
        _ if deliveries
            .iter()
            .all(|d| d.status == DeliveryStatus::Skipped) =>
        {
            "skipped"
        }
        _ => "delivered",
    }
}

/// How far before now an event is indexed at the earliest (see `scripts`).
pub(super) const INDEX_FLOOR_MS: i64 = 60_000;

/// Most log entries one write trims beyond twice what it adds: a workspace that was idle past
/// its retention catches up over a few writes.
const TRIM_EXTRA: usize = 500;

impl Store {
    /// `{p}:ws:{<ws>}:history`: HASH uuid -> record.
    pub(super) fn history_key(&self, ws: &str) -> String {
        self.ws_key(ws, "history")
    }

    /// `{p}:ws:{<ws>}:log`: STREAM of `u` -> uuid, by time.
    pub(super) fn log_key(&self, ws: &str) -> String {
        self.ws_key(ws, "log")
    }

    /// The hash an event had before records were compact (read only; it expires by itself).
    pub(super) fn legacy_event_key(&self, ws: &str, uuid: &str) -> String {
        self.ws_key(ws, &format!("evt:{uuid}"))
    }

    /// Adds to `pipe` what bounds a workspace's history while it keeps writing: the log and
    /// the records older than the retention go (at most `2 * written + 500` per call), and the
    /// two keys expire a little more than a retention after the last write.
    /// The trim's reply is the uuids it removed: [`Store::run_batch`] removes their locators.
    pub(super) fn trim_history(&self, batch: &mut super::Batch, ws: &str, written: usize) {
        batch.note_trim(ws);
        let pipe = batch.ws(ws);
        pipe.invoke_script(&self.trim_call(ws, 2 * written + TRIM_EXTRA));
        // Longer than the retention by two sweeps: a workspace that stops writing is trimmed by
        // the sweep (which removes its locators too) before its keys expire.
        let ttl = self.retention_secs() + 2 * self.sweep_every().as_secs() as i64;
        pipe.expire(self.history_key(ws), ttl).ignore();
        pipe.expire(self.log_key(ws), ttl).ignore();
    }

    /// How often the history of every workspace is swept (see `sweep_idle_histories`).
    fn sweep_every(&self) -> std::time::Duration {
        (self.retention / 2).clamp(
            std::time::Duration::from_secs(5),
            std::time::Duration::from_secs(60),
        )
    }

    fn trim_call(&self, ws: &str, most: usize) -> redis::ScriptInvocation<'static> {
        let cutoff = crate::now_ms() - self.retention.as_millis() as i64;
        let mut call = super::script(super::ScriptName::Trim);
        call.key(self.history_key(ws))
            .key(self.log_key(ws))
            .arg(cutoff)
            .arg(most);
        call
    }

    /// Trims the history of a workspace that may have stopped writing (writes trim a busy
    /// one): every entry older than the retention goes, with its locator, `TRIM_EXTRA` at a
    /// time. Answers how many went.
    pub async fn trim_idle(&self, ws: &str) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let mut pipe = redis::pipe();
            pipe.invoke_script(&self.trim_call(ws, TRIM_EXTRA));
            let (trimmed,): (Vec<String>,) = self.query(&pipe).await?;
            self.unlocate(ws, &trimmed).await?;
            total += trimmed.len();
            if trimmed.len() < TRIM_EXTRA {
                return Ok(total);
            }
        }
    }

    /// Trims every workspace's history now and then, so that one that stopped writing loses
    /// its old entries (and their locators) on time too. Several processes may run this: one of
    /// them sweeps per period.
    pub async fn sweep_idle_histories(self, cancel: tokio_util::sync::CancellationToken) {
        let every = self.sweep_every();
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.sweep_once(every).await {
                tracing::warn!(error = %e, "sweeping idle workspaces' history failed; next try in {every:?}");
            }
        }
    }

    /// One sweep, if no other process took this period's: every workspace trimmed.
    async fn sweep_once(&self, every: std::time::Duration) -> Result<(), StoreError> {
        let claimed: Option<String> = redis::cmd("SET")
            .arg(self.key("history-sweep"))
            .arg(std::process::id())
            .arg("NX")
            .arg("PX")
            .arg(every.as_millis() as u64)
            .query_async(&mut self.conn())
            .await?;
        if claimed.is_none() {
            return Ok(());
        }
        const CHUNK: isize = 500;
        let mut start = 0;
        loop {
            let ids: Vec<String> = redis::cmd("ZRANGE")
                .arg(self.key("workspaces"))
                .arg(start)
                .arg(start + CHUNK - 1)
                .query_async(&mut self.conn())
                .await?;
            for ws in &ids {
                self.trim_idle(ws).await?;
            }
            if (ids.len() as isize) < CHUNK {
                return Ok(());
            }
            start += CHUNK;
        }
    }

    /// True when workspace `ws` holds event `uuid` in its history.
    pub(super) async fn holds_event(&self, ws: &str, uuid: &str) -> Result<bool, StoreError> {
        let mut pipe = redis::pipe();
        pipe.hexists(self.history_key(ws), uuid)
            .exists(self.legacy_event_key(ws, uuid));
        let (record, legacy): (bool, bool) = self.query(&pipe).await?;
        Ok(record || legacy)
    }

    /// Records routed events and their pending deliveries. Never overwrites what is already
    /// there, so a redelivered event cannot turn a delivered delivery back into pending.
    pub async fn record_routed(&self, items: &[Routed<'_>]) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let now = crate::now_ms();
        // One pipeline per workspace: a batch of events from many workspaces spans many slots
        // of a cluster.
        let mut batch = self.batch();
        let mut written: HashMap<&str, usize> = HashMap::new();
        for item in items {
            let e = item.event;
            let mut call = super::script(super::ScriptName::Route);
            call.key(self.history_key(item.workspace_id))
                .key(self.log_key(item.workspace_id))
                .arg(&e.uuid)
                .arg(e.time_created)
                .arg(item.connection_ids.len() + item.skipped.len())
                .arg(record::event_part(e))
                .arg(now - INDEX_FLOOR_MS);
            for cid in &item.connection_ids {
                let pending = Delivery {
                    connection_id: cid.clone(),
                    status: DeliveryStatus::Pending,
                    attempts: Vec::new(),
                    next_attempt_at: None,
                    dead_letter_id: None,
                    updated_at: now,
                };
                call.arg(cid)
                    .arg(record::delivery_body(&e.uuid, e.time_created, &pending));
            }
            for cid in &item.skipped {
                let skipped = Delivery {
                    connection_id: cid.clone(),
                    status: DeliveryStatus::Skipped,
                    attempts: Vec::new(),
                    next_attempt_at: None,
                    dead_letter_id: None,
                    updated_at: now,
                };
                call.arg(cid)
                    .arg(record::delivery_body(&e.uuid, e.time_created, &skipped));
            }
            batch.ws(item.workspace_id).invoke_script(&call).ignore();
            *written.entry(item.workspace_id).or_default() += 1;
        }
        for (ws, n) in written {
            self.trim_history(&mut batch, ws, n);
        }
        // The locators' buckets are keys outside the workspaces (other slots in a cluster),
        // written apart from the workspaces' pipelines.
        let located: Vec<(&str, &str)> = items
            .iter()
            .map(|i| (i.workspace_id, i.event.uuid.as_str()))
            .collect();
        futures::try_join!(self.run_batch(batch), self.locate(&located))?;
        Ok(())
    }

    /// How many attempts the history holds for one delivery (None: not recorded).
    pub async fn attempts_recorded(
        &self,
        ws: &str,
        uuid: &str,
        connection_id: &str,
    ) -> Result<Option<usize>, StoreError> {
        let record = self.load_records(ws, &[uuid.to_string()]).await?;
        Ok(record.into_iter().flatten().next().and_then(|r| {
            r.deliveries
                .iter()
                .find(|d| d.connection_id == connection_id)
                .map(|d| d.attempts.len())
        }))
    }

    /// An event with its deliveries.
    /// Redis is read first; an event not there (or there only in part) is looked for in the
    /// archive, when it is on.
    pub async fn get_event(&self, ws: &str, uuid: &str) -> Result<Option<EventRecord>, StoreError> {
        let records = self.load_records(ws, &[uuid.to_string()]).await?;
        if let Some(found) = records
            .into_iter()
            .next()
            .flatten()
            .and_then(Partial::into_record)
        {
            return Ok(Some(found));
        }
        let Some(archive) = &self.archive else {
            return Ok(None);
        };
        match archive.get(ws, uuid).await? {
            Some(row) => archived_record(&row),
            None => Ok(None),
        }
    }

    /// The records of `uuids` (None for those not kept), in one round trip, plus one more
    /// for any still kept only in the form earlier versions wrote.
    async fn load_records(
        &self,
        ws: &str,
        uuids: &[String],
    ) -> Result<Vec<Option<Partial>>, StoreError> {
        if uuids.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.history_key(ws);
        let raw: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&key)
            .arg(uuids)
            .query_async(&mut self.conn())
            .await?;
        let mut out = Vec::with_capacity(uuids.len());
        let mut legacy = Vec::new();
        for (i, (uuid, text)) in uuids.iter().zip(raw).enumerate() {
            let decoded = text
                .map(|t| record::decode(uuid, &t))
                .transpose()
                .map_err(|e| StoreError::Record {
                    key: format!("{key} {uuid}"),
                    message: e.to_string(),
                })?;
            if decoded.as_ref().is_none_or(|d| d.event.is_none()) {
                legacy.push(i);
            }
            out.push(decoded.map(Partial::from));
        }
        if !legacy.is_empty() {
            let mut pipe = redis::pipe();
            for i in &legacy {
                pipe.hgetall(self.legacy_event_key(ws, &uuids[*i]));
            }
            let old: Vec<HashMap<String, String>> = pipe.query_async(&mut self.conn()).await?;
            for (i, fields) in legacy.into_iter().zip(old) {
                if fields.is_empty() {
                    continue;
                }
                let key = self.legacy_event_key(ws, &uuids[i]);
                let old = Partial::from_legacy(&key, fields)?;
                out[i] = Some(match out[i].take() {
                    Some(newer) => old.overlaid_by(newer),
                    None => old,
                });
            }
        }
        Ok(out)
    }

    /// Events of a workspace, newest first, filtered: a page of the log from after `cursor`
    /// (`score` is the entry's ms, `member` its sequence number). With the archive on, the
    /// archive's rows are merged in by the same position, so a cursor walks from Redis into the
    /// archive with no event twice and none skipped.
    pub async fn list_events(
        &self,
        ws: &str,
        filter: &EventFilter,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<(Vec<EventRecord>, Option<Cursor>), StoreError> {
        // A cursor this function made names an entry (`ms-seq`); one made from a time alone
        // (or an event's time and uuid) starts before that millisecond.
        let before = match &cursor {
            None => None,
            Some(c) => match c.member.parse::<i64>() {
                Ok(seq) if c.score > 0 || (c.score == 0 && seq > 0) => Some((c.score, seq)),
                Err(_) if c.score > 0 => Some((c.score, 0)),
                // Nothing is before the stream's first possible id.
                _ => return Ok((Vec::new(), None)),
            },
        };
        let (hot, hot_end) = self.list_hot(ws, filter, before, limit).await?;
        let Some(archive) = &self.archive else {
            return Ok((
                hot.into_iter().map(|(_, r)| r).collect(),
                hot_end.map(position_cursor),
            ));
        };
        let (cold, cold_end) = list_cold(archive, ws, filter, before, limit).await?;
        // Each walk is complete down to its end (None: to the beginning); the page is what
        // both have above the higher of the two ends.
        let floor = hot_end.max(cold_end);
        let mut all: Vec<((i64, i64), EventRecord)> = hot
            .into_iter()
            .chain(cold)
            .filter(|(at, _)| floor.is_none_or(|f| *at >= f))
            .collect();
        all.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
        // An event being moved is in both for a moment.
        all.dedup_by(|a, b| a.0 == b.0);
        all.truncate(limit);
        let next = if all.len() == limit {
            all.last().map(|(at, _)| *at)
        } else {
            floor
        };
        Ok((
            all.into_iter().map(|(_, r)| r).collect(),
            next.map(position_cursor),
        ))
    }

    /// The Redis part of a list: matching events before log position `before`, with their
    /// positions, and the position the walk stopped at (None: the log's beginning).
    async fn list_hot(
        &self,
        ws: &str,
        filter: &EventFilter,
        before: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<(Vec<((i64, i64), EventRecord)>, Option<(i64, i64)>), StoreError> {
        const BATCH: usize = 100;
        let log = self.log_key(ws);
        let mut end = before.map_or("+".to_string(), |(ms, seq)| format!("({ms}-{seq}"));
        // An event is indexed at its creation time or later, never before: the walk stops at
        // `since`, and the filter drops the few indexed later than they were created.
        let start = match filter.since {
            Some(since) if since > 0 => since.to_string(),
            _ => "-".to_string(),
        };
        let mut out = Vec::new();
        let mut scanned = 0;
        loop {
            let page: Vec<(String, HashMap<String, String>)> = redis::cmd("XREVRANGE")
                .arg(&log)
                .arg(&end)
                .arg(&start)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut self.conn())
                .await?;
            let Some((last_id, _)) = page.last() else {
                return Ok((out, None));
            };
            end = format!("({last_id}");
            let ids: Vec<String> = page.iter().map(|(id, _)| id.clone()).collect();
            let uuids: Vec<String> = page
                .into_iter()
                .map(|(_, mut f)| f.remove("u").unwrap_or_default())
                .collect();
            let records = self.load_records(ws, &uuids).await?;
            for (id, partial) in ids.into_iter().zip(records) {
                scanned += 1;
                let Some(at) = log_position(&id) else {
                    continue;
                };
                if let Some(r) = partial.and_then(Partial::into_record) {
                    if filter.matches(&r) {
                        out.push((at, r));
                    }
                }
                if out.len() >= limit || scanned >= MAX_SCAN {
                    return Ok((out, Some(at)));
                }
            }
        }
    }
}

/// The archive's part of a list, as [`Store::list_hot`] does Redis's.
async fn list_cold(
    archive: &crate::archive::Archive,
    ws: &str,
    filter: &EventFilter,
    mut before: Option<(i64, i64)>,
    limit: usize,
) -> Result<(Vec<((i64, i64), EventRecord)>, Option<(i64, i64)>), StoreError> {
    const BATCH: usize = 100;
    let mut out = Vec::new();
    let mut scanned = 0;
    loop {
        let rows = archive.list(ws, before, filter.since, BATCH).await?;
        let full = rows.len() == BATCH;
        for row in &rows {
            scanned += 1;
            let at = (row.log_ms, row.log_seq);
            before = Some(at);
            if let Some(r) = archived_record(row)? {
                if filter.matches(&r) {
                    out.push((at, r));
                }
            }
            if out.len() >= limit || scanned >= MAX_SCAN {
                return Ok((out, Some(at)));
            }
        }
        if !full {
            return Ok((out, None));
        }
    }
}

/// An archived row as the API shows it.
fn archived_record(row: &crate::archive::Row) -> Result<Option<EventRecord>, StoreError> {
    let decoded = record::decode(&row.uuid, &row.record).map_err(|e| StoreError::Record {
        key: format!("archive {} {}", row.workspace_id, row.uuid),
        message: e.to_string(),
    })?;
    Ok(Partial::from(decoded).into_record())
}

/// A log entry id (`ms-seq`) as a position.
pub(super) fn log_position(id: &str) -> Option<(i64, i64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// The cursor after position `(ms, seq)`.
fn position_cursor((ms, seq): (i64, i64)) -> Cursor {
    Cursor {
        score: ms,
        member: seq.to_string(),
    }
}

/// What is known of an event: a record may lack its event (an outcome written for an event
/// recorded by an earlier version).
struct Partial {
    event: Option<Event>,
    routed: Option<usize>,
    deliveries: Vec<Delivery>,
}

impl From<record::Decoded> for Partial {
    fn from(d: record::Decoded) -> Self {
        Self {
            event: d.event,
            routed: d.routed,
            deliveries: d.deliveries,
        }
    }
}

impl Partial {
    fn from_legacy(key: &str, fields: HashMap<String, String>) -> Result<Self, StoreError> {
        let event = fields
            .get("event")
            .map(|e| parse::<Event>(key, e))
            .transpose()?;
        let deliveries = fields
            .iter()
            .filter(|(k, _)| k.starts_with("d:"))
            .map(|(_, v)| parse::<Delivery>(key, v))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            event,
            routed: fields.get("routed").and_then(|v| v.parse().ok()),
            deliveries,
        })
    }

    /// This (older) state with the deliveries of `newer` in place of its own.
    fn overlaid_by(mut self, newer: Partial) -> Self {
        for d in newer.deliveries {
            self.deliveries
                .retain(|o| o.connection_id != d.connection_id);
            self.deliveries.push(d);
        }
        self.routed = self.routed.or(newer.routed);
        self.event = self.event.or(newer.event);
        self
    }

    fn into_record(mut self) -> Option<EventRecord> {
        let event = self.event?;
        self.deliveries
            .sort_by(|a, b| a.connection_id.cmp(&b.connection_id));
        Some(EventRecord {
            status: event_status(self.routed, &self.deliveries),
            event,
            deliveries: self.deliveries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(status: DeliveryStatus) -> Delivery {
        Delivery {
            connection_id: "con".into(),
            status,
            attempts: Vec::new(),
            next_attempt_at: None,
            dead_letter_id: None,
            updated_at: 0,
        }
    }

    #[test]
    fn skipped_deliveries_make_an_event_skipped_only_when_all_are() {
        use DeliveryStatus::{Delivered, Pending, Skipped};
        let of = |s: &[DeliveryStatus]| {
            let d: Vec<Delivery> = s.iter().copied().map(delivery).collect();
            event_status(Some(d.len()), &d)
        };
        assert_eq!(of(&[Skipped]), "skipped");
        assert_eq!(of(&[Skipped, Skipped]), "skipped");
        assert_eq!(of(&[Skipped, Delivered]), "delivered");
        assert_eq!(of(&[Skipped, Pending]), "pending");
        assert_eq!(event_status(Some(0), &[]), "no_match");
        assert!(EVENT_STATUSES.contains(&"skipped"));
    }
}
