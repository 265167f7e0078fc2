//! Auto-disable: each settled batch stops the failing clock of every connection it delivered
//! to and starts (or reads) it for every connection whose attempts all failed; a connection
//! failing for `HERALD_AUTO_DISABLE_AFTER` is disabled. The clock lives in Redis (see
//! `Store::note_failure`), so every deliverer replica moves the same one.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;

use herald_shared::model::Connection;
use herald_shared::store::{Store, StoreError};

use crate::outcome::Outcome;
use crate::settle::{Done, Next};

/// What a batch said about each connection it made attempts to: `true` when any succeeded.
pub fn signals(batch: &[Done]) -> BTreeMap<(&str, &str), bool> {
    let mut out: BTreeMap<(&str, &str), bool> = BTreeMap::new();
    for d in batch.iter().filter(|d| d.attempted) {
        let Next::Attempted(outcome) = &d.next else {
            continue;
        };
        let ok = matches!(outcome, Outcome::Delivered);
        let key = (d.group.workspace_id.as_str(), d.job.connection_id.as_str());
        *out.entry(key).or_insert(false) |= ok;
    }
    out
}

/// Moves the failing clocks of the connections a batch attempted.
pub struct FailingClock {
    /// Redis.
    pub store: Store,
    /// `HERALD_AUTO_DISABLE_AFTER`.
    pub window: Duration,
}

impl FailingClock {
    /// Stops or starts the clock of every connection `batch` made attempts to; answers the
    /// connections this call disabled. Redis trouble is logged: the next batch tries again.
    pub async fn note(&self, batch: &[Done]) -> Vec<Connection> {
        let now = herald_shared::now_ms();
        let results = join_all(
            signals(batch)
                .into_iter()
                .map(|((ws, conn), ok)| self.note_one(ws, conn, ok, now)),
        )
        .await;
        let mut disabled = Vec::new();
        for r in results {
            match r {
                Ok(Some(c)) => disabled.push(c),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot move a connection's failing clock"),
            }
        }
        disabled
    }

    async fn note_one(
        &self,
        ws: &str,
        conn: &str,
        ok: bool,
        now: i64,
    ) -> Result<Option<Connection>, StoreError> {
        if ws == herald_shared::opwebhooks::WORKSPACE {
            // Operational webhook endpoints are the operator's and the tenants' own alarms:
            // never switched off for failing.
            return Ok(None);
        }
        if ok {
            self.store.clear_failing(ws, conn).await?;
            return Ok(None);
        }
        let since = self
            .store
            .note_failure(ws, conn, now, self.window * 2)
            .await?;
        if now - since < self.window.as_millis() as i64 {
            return Ok(None);
        }
        let disabled = self.store.disable_failing(ws, conn, since, now).await?;
        if disabled.is_some() {
            metrics::counter!("herald_connections_auto_disabled_total").increment(1);
            tracing::warn!(
                workspace_id = ws,
                connection_id = conn,
                failing_for_s = (now - since) / 1000,
                "every attempt failed for HERALD_AUTO_DISABLE_AFTER; connection disabled"
            );
        }
        Ok(disabled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_shared::model::{Event, JobGroup, JobItem};
    use std::sync::Arc;

    fn group(ws: &str) -> Arc<JobGroup> {
        Arc::new(JobGroup {
            workspace_id: ws.into(),
            event: Event {
                uuid: "evt_1".into(),
                event: "a".into(),
                resource: "r".into(),
                resource_id: "r1".into(),
                payload: serde_json::value::RawValue::from_string("{}".into()).expect("json"),
                time_created: 1,
            },
            jobs: Vec::new(),
        })
    }

    fn done(ws: &str, conn: &str, next: Next, attempted: bool) -> Done {
        let mut d = Done::new(group(ws), JobItem::new(conn), next);
        d.attempted = attempted;
        d
    }

    #[test]
    fn a_success_outweighs_failures_and_turns_without_a_request_say_nothing() {
        let failed = || {
            Next::Attempted(Outcome::Retry {
                after: Duration::from_secs(1),
            })
        };
        let batch = vec![
            done("ws", "c_mixed", failed(), true),
            done("ws", "c_mixed", Next::Attempted(Outcome::Delivered), true),
            done("ws", "c_down", failed(), true),
            done(
                "ws",
                "c_down",
                Next::Attempted(Outcome::DeadLetter {
                    reason: "410 Gone".into(),
                }),
                true,
            ),
            // Dead-lettered because the connection is disabled: no request was made.
            done(
                "ws",
                "c_off",
                Next::Attempted(Outcome::DeadLetter {
                    reason: "the connection is disabled".into(),
                }),
                false,
            ),
            done(
                "ws",
                "c_busy",
                Next::Deferred {
                    after: Duration::from_secs(1),
                },
                false,
            ),
            done("other", "c_down", failed(), true),
        ];
        let s = signals(&batch);
        assert_eq!(
            s.into_iter().collect::<Vec<_>>(),
            vec![
                (("other", "c_down"), false),
                (("ws", "c_down"), false),
                (("ws", "c_mixed"), true),
            ]
        );
    }
}
