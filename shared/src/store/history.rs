//! The delivery history: each event, where each of its deliveries stands, and every attempt.
//! Writes are pipelined so a batch of events or outcomes costs one Redis round trip.

use std::collections::HashMap;

use redis::AsyncCommands;
use serde::Serialize;

use super::{parse, to_json, Cursor, Store, StoreError};
use crate::model::{Delivery, DeliveryStatus, Event};

/// An event as routed: its workspace and the connections it goes to.
pub struct Routed<'a> {
    /// The workspace.
    pub workspace_id: &'a str,
    /// The event.
    pub event: &'a Event,
    /// Matched connections (empty: no rule matched).
    pub connection_ids: Vec<String>,
}

/// An event with its deliveries, as the history API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    /// The event.
    #[serde(flatten)]
    pub event: Event,
    /// `pending`, `delivered`, `retrying`, `dead` or `no_match`.
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
        self.status.as_deref().is_none_or(|s| s == r.status)
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
pub const EVENT_STATUSES: &[&str] = &["pending", "delivered", "retrying", "dead", "no_match"];

/// An event's status from its deliveries: the worst of them (`dead` over `retrying` over
/// `pending` over `delivered`); `no_match` when it was routed to no connection.
pub fn event_status(routed: Option<usize>, deliveries: &[Delivery]) -> &'static str {
    let has = |s: DeliveryStatus| deliveries.iter().any(|d| d.status == s);
    match routed {
        None => "pending",
        Some(0) if deliveries.is_empty() => "no_match",
        _ if has(DeliveryStatus::Dead) => "dead",
        _ if has(DeliveryStatus::Retrying) => "retrying",
        _ if has(DeliveryStatus::Pending) || deliveries.is_empty() => "pending",
        _ => "delivered",
    }
}

impl Store {
    pub(super) fn event_key(&self, ws: &str, uuid: &str) -> String {
        self.ws_key(ws, &format!("evt:{uuid}"))
    }

    /// Records routed events and their pending deliveries. Never overwrites what is already
    /// there, so a redelivered event cannot turn a delivered delivery back into pending.
    pub async fn record_routed(&self, items: &[Routed<'_>]) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let ttl = self.retention_secs();
        let now = crate::now_ms();
        let mut pipe = redis::pipe();
        for item in items {
            let key = self.event_key(item.workspace_id, &item.event.uuid);
            pipe.hset_nx(&key, "event", to_json(item.event)).ignore();
            pipe.hset_nx(&key, "routed", item.connection_ids.len())
                .ignore();
            for cid in &item.connection_ids {
                let pending = Delivery {
                    connection_id: cid.clone(),
                    status: DeliveryStatus::Pending,
                    attempts: Vec::new(),
                    next_attempt_at: None,
                    dead_letter_id: None,
                    updated_at: now,
                };
                pipe.hset_nx(&key, format!("d:{cid}"), to_json(&pending))
                    .ignore();
            }
            pipe.expire(&key, ttl).ignore();
            let index = self.ws_key(item.workspace_id, "events");
            pipe.cmd("ZADD")
                .arg(&index)
                .arg("NX")
                .arg(item.event.time_created)
                .arg(&item.event.uuid)
                .ignore();
            pipe.expire(&index, ttl).ignore();
            self.locate(&mut pipe, item.workspace_id, &item.event.uuid, ttl);
        }
        // The only answers not ignored: what each event's locator held before.
        let before: Vec<Option<String>> = pipe.query_async(&mut self.conn()).await?;
        let written: Vec<(&str, &str)> = items
            .iter()
            .map(|i| (i.workspace_id, i.event.uuid.as_str()))
            .collect();
        self.locate_shared(&written, before, ttl).await
    }

    /// How many attempts the history holds for one delivery (None: not recorded).
    pub async fn attempts_recorded(
        &self,
        ws: &str,
        uuid: &str,
        connection_id: &str,
    ) -> Result<Option<usize>, StoreError> {
        let key = self.event_key(ws, uuid);
        let raw: Option<String> = self.conn().hget(&key, format!("d:{connection_id}")).await?;
        raw.map(|json| parse::<Delivery>(&key, &json).map(|d| d.attempts.len()))
            .transpose()
    }

    /// An event with its deliveries.
    pub async fn get_event(&self, ws: &str, uuid: &str) -> Result<Option<EventRecord>, StoreError> {
        let key = self.event_key(ws, uuid);
        let fields: HashMap<String, String> = self.conn().hgetall(&key).await?;
        record_from_fields(&key, fields)
    }

    /// Events of a workspace, newest first, filtered; from after `cursor`, looking at
    /// [`MAX_SCAN`] events at most.
    pub async fn list_events(
        &self,
        ws: &str,
        filter: &EventFilter,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<(Vec<EventRecord>, Option<Cursor>), StoreError> {
        let index = self.ws_key(ws, "events");
        let this = self.clone();
        let ws = ws.to_string();
        let filter = filter.clone();
        let since = filter.since;
        super::paging::scan_newest(
            &mut self.conn(),
            &index,
            cursor,
            since,
            limit,
            MAX_SCAN,
            |uuids| {
                let this = this.clone();
                let ws = ws.clone();
                let filter = filter.clone();
                async move {
                    let mut pipe = redis::pipe();
                    for uuid in &uuids {
                        pipe.hgetall(this.event_key(&ws, uuid));
                    }
                    let all: Vec<HashMap<String, String>> =
                        pipe.query_async(&mut this.conn()).await?;
                    all.into_iter()
                        .zip(uuids)
                        .map(|(fields, uuid)| {
                            let record = record_from_fields(&this.event_key(&ws, &uuid), fields)?;
                            Ok(record.filter(|r| filter.matches(r)))
                        })
                        .collect()
                }
            },
        )
        .await
    }
}

fn record_from_fields(
    key: &str,
    fields: HashMap<String, String>,
) -> Result<Option<EventRecord>, StoreError> {
    let Some(event) = fields.get("event") else {
        return Ok(None);
    };
    let event: Event = parse(key, event)?;
    let routed = fields.get("routed").and_then(|v| v.parse().ok());
    let mut deliveries = fields
        .iter()
        .filter(|(k, _)| k.starts_with("d:"))
        .map(|(_, v)| parse::<Delivery>(key, v))
        .collect::<Result<Vec<_>, _>>()?;
    deliveries.sort_by(|a, b| a.connection_id.cmp(&b.connection_id));
    Ok(Some(EventRecord {
        status: event_status(routed, &deliveries),
        event,
        deliveries,
    }))
}
