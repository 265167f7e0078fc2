//! Operational webhooks: notices about connections (`connection.disabled`,
//! `connection.enabled`, `connection.breaker_opened`, `connection.breaker_closed`,
//! `delivery.dead_lettered`) sent to the operator's endpoint (`HERALD_OPERATIONAL_WEBHOOK_URL`)
//! and to a workspace's own (`operational_webhook_url` of its settings), that one about its
//! own connections only.
//!
//! They go through the same pipeline as every webhook: each target is a connection of
//! Herald's own workspace [`WORKSPACE`] (kind [`KIND`], whose requests carry the notice as
//! the whole body), and each notice a job on the jobs queue. So they are signed (Standard
//! Webhooks), retried, dead-lettered, kept in that workspace's history, and subject to the same
//! destination guard as deliveries.

use serde_json::{json, Map, Value};

use crate::amqp::{JobsSource, PublishError, Publisher};
use crate::config::OperationalWebhookSettings;
use crate::model::{Connection, Event, JobGroup, JobItem};
use crate::store::history::Routed;
use crate::store::operational::DeadLetterMinute;
use crate::store::{Store, StoreError};

/// Herald's own workspace, where operational webhooks are delivered from.
pub const WORKSPACE: &str = "ws_operational";
/// The connection of the operator's endpoint in [`WORKSPACE`].
pub const OPERATOR_TARGET: &str = "con_operational";
/// The kind of a connection whose requests carry the event's payload as the whole body.
pub const KIND: &str = "operational";

/// `connection.disabled`.
pub const CONNECTION_DISABLED: &str = "connection.disabled";
/// `connection.enabled`.
pub const CONNECTION_ENABLED: &str = "connection.enabled";
/// `connection.breaker_opened`.
pub const BREAKER_OPENED: &str = "connection.breaker_opened";
/// `connection.breaker_closed`.
pub const BREAKER_CLOSED: &str = "connection.breaker_closed";
/// `delivery.dead_lettered`.
pub const DEAD_LETTERED: &str = "delivery.dead_lettered";

/// The connection in [`WORKSPACE`] of workspace `ws`'s own endpoint.
pub fn workspace_target(ws: &str) -> String {
    format!("con_op_{ws}")
}

/// A notice's body: `{"type", "timestamp", "data": {"workspace_id", "connection_id", ...}}`,
/// `timestamp` in RFC 3339 (UTC, milliseconds) as Standard Webhooks payloads have it.
pub fn body(kind: &str, at_ms: i64, ws: &str, connection_id: &str, extra: Value) -> Value {
    let mut data = Map::new();
    data.insert("workspace_id".into(), json!(ws));
    data.insert("connection_id".into(), json!(connection_id));
    if let Value::Object(more) = extra {
        data.extend(more);
    }
    json!({"type": kind, "timestamp": rfc3339(at_ms), "data": data})
}

/// Unix ms as `2026-12-02T01:02:03.456Z`.
pub fn rfc3339(ms: i64) -> String {
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Days since 1970-01-01 to a civil date (H. Hinnant, "chrono-Compatible Low-Level Date
    // Algorithms", days_from_civil's inverse).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1_000 % 60,
        in_day % 1_000
    )
}

/// Why a notice was not sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Redis.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The broker.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Sends operational webhooks.
#[derive(Clone)]
pub struct Notifier {
    store: Store,
    publisher: Publisher,
    /// The operator's endpoint is set.
    operator: bool,
}

impl Notifier {
    /// A notifier; `operator`: the operator's endpoint is set (see [`ensure_operator`]).
    pub fn new(store: Store, publisher: Publisher, operator: bool) -> Self {
        Self {
            store,
            publisher,
            operator,
        }
    }

    /// The connections a notice about workspace `ws` goes to.
    async fn targets(&self, ws: &str) -> Result<Vec<String>, StoreError> {
        if ws == WORKSPACE {
            // Herald's own deliveries raise no notices: a failing endpoint must not feed itself.
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        if self.operator {
            out.push(OPERATOR_TARGET.to_string());
        }
        let own = workspace_target(ws);
        if self
            .store
            .get_connection(WORKSPACE, &own)
            .await?
            .is_some_and(|c| c.enabled)
        {
            out.push(own);
        }
        Ok(out)
    }

    /// Whether any notice about workspace `ws` would be sent.
    pub async fn wanted(&self, ws: &str) -> Result<bool, StoreError> {
        Ok(!self.targets(ws).await?.is_empty())
    }

    /// Sends notice `kind` about a connection, with `extra` added to its `data`.
    pub async fn notify(
        &self,
        kind: &str,
        ws: &str,
        connection_id: &str,
        extra: Value,
    ) -> Result<(), NotifyError> {
        let targets = self.targets(ws).await?;
        if targets.is_empty() {
            return Ok(());
        }
        let now = crate::now_ms();
        let payload = body(kind, now, ws, connection_id, extra).to_string();
        let event = Event {
            uuid: crate::ids::new_event_id(),
            event: kind.to_string(),
            resource: "connection".into(),
            resource_id: connection_id.to_string(),
            payload: serde_json::value::RawValue::from_string(payload).map_err(|source| {
                NotifyError::Publish(PublishError::Encode {
                    kind: "operational webhook",
                    source,
                })
            })?,
            time_created: now,
        };
        let group = JobGroup {
            workspace_id: WORKSPACE.to_string(),
            event: event.clone(),
            jobs: targets.iter().cloned().map(JobItem::new).collect(),
        };
        // Published first, then recorded (as a rule's test event is): a crash in between
        // leaves no pending history without a job behind it.
        self.publisher.jobs(&[group], JobsSource::Routed).await?;
        self.store
            .record_routed(&[Routed {
                workspace_id: WORKSPACE,
                event: &event,
                connection_ids: targets,
                skipped: Vec::new(),
            }])
            .await?;
        metrics::counter!("herald_operational_webhooks_total", "type" => kind.to_string())
            .increment(1);
        Ok(())
    }

    /// Sends notice `kind` unless another deliverer sent it for this connection this minute
    /// (breakers are per deliverer: each sees the same change).
    pub async fn notify_once_a_minute(
        &self,
        kind: &str,
        ws: &str,
        connection_id: &str,
        extra: Value,
    ) -> Result<(), NotifyError> {
        if !self.wanted(ws).await? {
            return Ok(());
        }
        if self
            .store
            .first_notice_this_minute(ws, connection_id, kind)
            .await?
        {
            self.notify(kind, ws, connection_id, extra).await?;
        }
        Ok(())
    }

    /// Counts dead letters of a connection towards its minute's `delivery.dead_lettered`.
    pub async fn dead_lettered(
        &self,
        ws: &str,
        connection_id: &str,
        event_ids: &[&str],
    ) -> Result<(), NotifyError> {
        if !self.wanted(ws).await? {
            return Ok(());
        }
        self.store
            .note_dead_letters(ws, connection_id, event_ids, crate::now_ms())
            .await?;
        Ok(())
    }

    /// Sends `delivery.dead_lettered` for every minute that is over; answers how many.
    pub async fn send_dead_letter_minutes(&self) -> Result<usize, NotifyError> {
        let minutes = self
            .store
            .take_dead_letter_minutes(crate::now_ms(), 100)
            .await?;
        for m in &minutes {
            let DeadLetterMinute {
                workspace_id,
                connection_id,
                minute_ms,
                count,
                event_ids,
            } = m;
            let extra =
                json!({"count": count, "event_ids": event_ids, "minute": rfc3339(*minute_ms)});
            // A minute whose notice cannot go out now stays taken for a while, then is due
            // again; the other minutes are still sent.
            match self
                .notify(DEAD_LETTERED, workspace_id, connection_id, extra)
                .await
            {
                Ok(()) => self.store.dead_letter_minute_sent(m).await?,
                Err(e) => tracing::warn!(
                    error = %e,
                    workspace_id,
                    connection_id,
                    "cannot send a delivery.dead_lettered notice; it is due again shortly"
                ),
            }
        }
        Ok(minutes.len())
    }

    /// Sends the minutes of dead letters as they end, until `cancel` fires (every deliverer
    /// runs this; each minute is taken by one).
    pub async fn run_dead_letter_minutes(self, cancel: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
            if let Err(e) = self.send_dead_letter_minutes().await {
                tracing::warn!(error = %e, "cannot send delivery.dead_lettered notices; trying again");
            }
        }
    }
}

/// Writes the operator's endpoint (in Herald's workspace) as `settings` say, so every service
/// started with them agrees.
pub async fn ensure_operator(
    store: &Store,
    settings: &OperationalWebhookSettings,
) -> Result<(), StoreError> {
    use secrecy::ExposeSecret;
    store
        .ensure_workspace(WORKSPACE, "Herald operational webhooks")
        .await?;
    let existing = store.get_connection(WORKSPACE, OPERATOR_TARGET).await?;
    let wanted = target(
        OPERATOR_TARGET,
        &settings.url,
        settings.secret.expose_secret(),
    );
    let same = existing
        .as_ref()
        .is_some_and(|c| c.url == wanted.url && c.secret == wanted.secret && c.enabled);
    if !same {
        store.put_connection(&wanted).await?;
    }
    Ok(())
}

/// A target connection in [`WORKSPACE`].
pub fn target(id: &str, url: &str, secret: &str) -> Connection {
    Connection {
        kind: KIND.to_string(),
        ..Connection::new(WORKSPACE, id, url, secret.to_string(), crate::now_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_798_761_599_999), "2026-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn a_notice_has_its_type_time_and_connection() {
        let b = body(
            DEAD_LETTERED,
            1_774_137_600_123,
            "ws_1",
            "con_1",
            json!({"count": 3, "event_ids": ["evt_a"]}),
        );
        assert_eq!(
            b,
            json!({
                "type": "delivery.dead_lettered",
                "timestamp": "2026-03-22T00:00:00.123Z",
                "data": {"workspace_id": "ws_1", "connection_id": "con_1", "count": 3, "event_ids": ["evt_a"]}
            })
        );
    }
}
