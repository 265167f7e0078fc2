//! Settling finished jobs: what a batch writes to Redis and publishes to the broker is worked
//! out by a pure function ([`plan`]); then [`Settler::settle`] writes every outcome (holding on
//! while Redis is away, so no outcome is lost and no request is sent again because of it),
//! publishes retries, deferrals, dead letters and hand-backs, and waits for their confirms.
//! A job whose message the broker confirmed is marked, so a batch written again after a
//! failure never publishes it twice.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;

use herald_shared::amqp::{JobsSource, PublishError, Publisher};
use herald_shared::model::job::delivery_id;
use herald_shared::model::{Delivery, DeliveryStatus, JobGroup, JobItem};
use herald_shared::opwebhooks::{self, Notifier};
use herald_shared::store::dead_letters::{DeadLetter, OutcomeRow};
use herald_shared::store::Store;

use crate::failing::FailingClock;
use crate::outcome::Outcome;

/// What follows one job's turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Attempted (or refused without a call, which counts as an attempt): record and go on.
    Attempted(Outcome),
    /// Its connection was busy or rate-limited past `HERALD_CONNECTION_WAIT`: back through the
    /// delay ladder, no attempt counted.
    Deferred {
        /// How long it waits.
        after: Duration,
    },
    /// Not started because the process is shutting down: back to the jobs queue untouched.
    HandBack,
    /// A stand-in whose attempt was recorded by the deliverer it stood in for: nothing to do.
    Superseded,
}

/// One job after its turn: the job (with its attempt appended, if one was made) and what next.
#[derive(Debug)]
pub struct Done {
    /// The event and workspace it belongs to.
    pub group: Arc<JobGroup>,
    /// The job as it now stands.
    pub job: JobItem,
    /// What follows.
    pub next: Next,
    /// An attempt was made (a request, or a refusal by the breaker): it moves the
    /// connection's failing clock.
    pub attempted: bool,
    /// An ordered job's copy token that holds its key: the sequence moves on once the job
    /// is settled (see `worker`).
    pub holds: Option<String>,
    /// Its retry, deferral, dead letter or hand-back is confirmed by the broker.
    published: AtomicBool,
}

impl Done {
    /// A job's turn and what follows it.
    pub fn new(group: Arc<JobGroup>, job: JobItem, next: Next) -> Self {
        Self {
            group,
            job,
            next,
            attempted: false,
            holds: None,
            published: AtomicBool::new(false),
        }
    }

    fn is_published(&self) -> bool {
        self.published.load(Ordering::SeqCst)
    }

    fn mark_published(&self) {
        self.published.store(true, Ordering::SeqCst);
    }

    /// The job as a group of its own (a retry or deferral retries on its own).
    fn alone(&self) -> JobGroup {
        JobGroup {
            workspace_id: self.group.workspace_id.clone(),
            event: self.group.event.clone(),
            jobs: vec![self.job.clone()],
        }
    }
}

/// One message to publish for a job of the batch (by its index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publish {
    /// A failed attempt, to be tried again after this long.
    Retry {
        /// Index of the job in the batch.
        job: usize,
        /// The wait.
        after: Duration,
    },
    /// A job that found no room, round the ladder for this long.
    Defer {
        /// Index of the job in the batch.
        job: usize,
        /// The wait.
        after: Duration,
    },
    /// A dead letter (index into [`Plan::dead`]).
    Dead {
        /// Index of the job in the batch.
        job: usize,
        /// Index of its dead letter.
        dead: usize,
    },
}

impl Publish {
    fn job(&self) -> usize {
        match self {
            Publish::Retry { job, .. } | Publish::Defer { job, .. } | Publish::Dead { job, .. } => {
                *job
            }
        }
    }
}

/// What one batch writes and publishes.
#[derive(Debug)]
pub struct Plan {
    /// One delivery row per attempted job: (index of the job, the delivery as it now stands).
    pub rows: Vec<(usize, Delivery)>,
    /// The dead letters among them.
    pub dead: Vec<DeadLetter>,
    /// Retries, deferrals and dead letters not published yet.
    pub publish: Vec<Publish>,
    /// Jobs not started (shutting down), not handed back yet.
    pub hand_back: Vec<usize>,
}

/// Works out what `batch` writes and publishes, at `now` (Unix ms). What an earlier try of
/// the same batch already published is left out.
pub fn plan(batch: &[Done], now: i64) -> Plan {
    let mut plan = Plan {
        rows: Vec::new(),
        dead: Vec::new(),
        publish: Vec::new(),
        hand_back: Vec::new(),
    };
    for (index, d) in batch.iter().enumerate() {
        let unpublished = !d.is_published();
        let outcome = match &d.next {
            Next::Attempted(outcome) => outcome,
            Next::Deferred { after } => {
                if unpublished {
                    plan.publish.push(Publish::Defer {
                        job: index,
                        after: *after,
                    });
                }
                continue;
            }
            Next::HandBack => {
                if unpublished {
                    plan.hand_back.push(index);
                }
                continue;
            }
            Next::Superseded => continue,
        };
        let id = delivery_id(&d.group.event.uuid, &d.job.connection_id);
        let (status, next_attempt_at, dead_letter_id) = match outcome {
            Outcome::Delivered => (DeliveryStatus::Delivered, None, None),
            Outcome::Retry { after } => {
                if unpublished {
                    plan.publish.push(Publish::Retry {
                        job: index,
                        after: *after,
                    });
                }
                (
                    DeliveryStatus::Retrying,
                    Some(now + after.as_millis() as i64),
                    None,
                )
            }
            Outcome::DeadLetter { reason } => {
                if unpublished {
                    plan.publish.push(Publish::Dead {
                        job: index,
                        dead: plan.dead.len(),
                    });
                }
                plan.dead.push(DeadLetter {
                    id: id.clone(),
                    workspace_id: d.group.workspace_id.clone(),
                    connection_id: d.job.connection_id.clone(),
                    event: d.group.event.clone(),
                    attempts: d.job.attempts.clone(),
                    reason: reason.clone(),
                    dead_at: now,
                });
                (DeliveryStatus::Dead, None, Some(id))
            }
        };
        plan.rows.push((
            index,
            Delivery {
                connection_id: d.job.connection_id.clone(),
                status,
                attempts: d.job.attempts.clone(),
                next_attempt_at,
                dead_letter_id,
                updated_at: now,
            },
        ));
    }
    plan
}

/// Settling failed part-way: the batch is to be settled again (what was published stays so).
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// A retry, deferral or dead letter was not confirmed.
    #[error("publishing retries and dead letters: {0}")]
    Publish(#[source] PublishError),
    /// Jobs not started could not be handed back.
    #[error("handing back unstarted jobs: {0}")]
    HandBack(#[source] PublishError),
}

/// Writes outcomes and publishes what follows them.
pub struct Settler {
    /// Redis.
    pub store: Store,
    /// The broker.
    pub publisher: Publisher,
    /// The connections' failing clocks (auto-disable).
    pub failing: FailingClock,
    /// Operational webhooks.
    pub ops: Notifier,
}

impl Settler {
    /// Records every outcome of `batch` in Redis, then publishes its retries, deferrals, dead
    /// letters and hand-backs and waits for the broker's confirms. Redis trouble holds the
    /// batch (and its message's ack) and retries.
    pub async fn settle(&self, batch: &[Done]) -> Result<(), SettleError> {
        let plan = plan(batch, herald_shared::now_ms());
        let rows: Vec<OutcomeRow> = plan
            .rows
            .iter()
            .map(|(i, delivery)| {
                let group = &batch[*i].group;
                OutcomeRow {
                    workspace_id: &group.workspace_id,
                    uuid: &group.event.uuid,
                    time_created: group.event.time_created,
                    delivery,
                }
            })
            .collect();
        let mut wait = Duration::from_millis(100);
        while let Err(e) = self.store.record_outcomes(&rows, &plan.dead).await {
            tracing::warn!(error = %e, "cannot record outcomes; holding the message and retrying");
            metrics::counter!("herald_outcome_write_failures_total").increment(1);
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        for c in self.failing.note(batch).await {
            let extra =
                serde_json::json!({"reason": c.disabled_reason, "disabled_at": c.disabled_at});
            if let Err(e) = self
                .ops
                .notify(
                    opwebhooks::CONNECTION_DISABLED,
                    &c.workspace_id,
                    &c.id,
                    extra,
                )
                .await
            {
                tracing::warn!(error = %e, connection_id = %c.id, "cannot send connection.disabled");
            }
        }

        let dead = &plan.dead;
        let results = join_all(plan.publish.iter().map(|p| async move {
            let d = &batch[p.job()];
            match p {
                Publish::Retry { after, .. } => {
                    self.publisher.retry_after(&d.alone(), *after).await?;
                    metrics::counter!("herald_retries_scheduled_total").increment(1);
                }
                Publish::Defer { after, .. } => {
                    self.publisher.retry_after(&d.alone(), *after).await?;
                }
                Publish::Dead {
                    dead: dead_index, ..
                } => {
                    self.publisher.dead_letter(&dead[*dead_index]).await?;
                    metrics::counter!("herald_dead_letters_total").increment(1);
                }
            }
            d.mark_published();
            Ok::<_, PublishError>(())
        }))
        .await;
        // Dead letters published by this call (what an earlier try published is not in the
        // plan), per connection, towards their minute's `delivery.dead_lettered`.
        let mut dead_per_connection: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
        for p in &plan.publish {
            if let Publish::Dead { job, dead: i } = p {
                if batch[*job].is_published() {
                    let d = &dead[*i];
                    dead_per_connection
                        .entry((d.workspace_id.as_str(), d.connection_id.as_str()))
                        .or_default()
                        .push(d.event.uuid.as_str());
                }
            }
        }
        for ((ws, conn), ids) in dead_per_connection {
            if let Err(e) = self.ops.dead_lettered(ws, conn, &ids).await {
                tracing::warn!(error = %e, connection_id = conn, "cannot count dead letters for delivery.dead_lettered");
            }
        }
        if let Some(e) = results.into_iter().find_map(Result::err) {
            return Err(SettleError::Publish(e));
        }

        if !plan.hand_back.is_empty() {
            // Shutting down part-way through a message: the jobs not started go back to the jobs
            // queue as a message of their own, so the ones already sent are not sent again.
            let groups: Vec<JobGroup> = plan.hand_back.iter().map(|i| batch[*i].alone()).collect();
            self.publisher
                .jobs(&groups, JobsSource::HandBack)
                .await
                .map_err(SettleError::HandBack)?;
            plan.hand_back
                .iter()
                .for_each(|i| batch[*i].mark_published());
            metrics::counter!("herald_jobs_handed_back_total")
                .increment(plan.hand_back.len() as u64);
        }
        self.move_sequences(batch).await;
        Ok(())
    }

    /// Jobs handed back inside their whole message (shutting down before any was attempted)
    /// let go of the keys they took: the message comes back as it was, with the same copies,
    /// which may then go at once instead of after the lease. Best effort: a key not let go of
    /// waits for its lease.
    pub async fn let_go_of_keys(&self, batch: &[Done]) {
        let now = herald_shared::now_ms();
        for d in batch {
            let (Some(order), Some(held)) = (&d.job.order, &d.holds) else {
                continue;
            };
            let Ok(body) = serde_json::to_string(&d.alone()) else {
                continue;
            };
            let released = self
                .store
                .release_ordered(
                    &d.group.workspace_id,
                    &d.job.connection_id,
                    &order.key,
                    &d.group.event.uuid,
                    held,
                    held,
                    &body,
                    now,
                )
                .await;
            if let Err(e) = released {
                tracing::debug!(error = %e, "cannot let go of an ordered key; its lease runs out");
            }
        }
    }

    /// Once a batch's outcomes are written and what follows them confirmed: an ordered job that
    /// is final lets the next of its key go (published here), one that comes back later lets
    /// go of its key until then. Redis trouble is waited out, as for outcomes: a final head
    /// left holding its key would be sent again when its lease ran out.
    async fn move_sequences(&self, batch: &[Done]) {
        let now = herald_shared::now_ms();
        for d in batch {
            let (Some(order), Some(held)) = (&d.job.order, &d.holds) else {
                continue;
            };
            let (ws, conn, uuid) = (
                d.group.workspace_id.as_str(),
                d.job.connection_id.as_str(),
                d.group.event.uuid.as_str(),
            );
            let back_at = match &d.next {
                Next::Attempted(Outcome::Delivered | Outcome::DeadLetter { .. }) => None,
                Next::Attempted(Outcome::Retry { after }) | Next::Deferred { after } => {
                    Some(now + after.as_millis() as i64)
                }
                Next::HandBack => Some(now),
                Next::Superseded => continue,
            };
            // A job coming back is stored as it now stands (with its attempts): the copy the
            // sweep may publish in its place goes on from there.
            let body = match back_at {
                Some(_) => match serde_json::to_string(&d.alone()) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot encode an ordered job; its lease runs out");
                        continue;
                    }
                },
                None => String::new(),
            };
            let mut wait = Duration::from_millis(100);
            loop {
                let moved = match back_at {
                    None => self
                        .store
                        .finish_ordered(ws, conn, &order.key, uuid, held, now)
                        .await
                        .map(|next| next.into_iter().collect::<Vec<_>>()),
                    Some(at) => self
                        .store
                        .release_ordered(ws, conn, &order.key, uuid, held, &order.copy, &body, at)
                        .await
                        .map(|()| Vec::new()),
                };
                match moved {
                    Ok(next) => {
                        // Not confirmed: the routers' sweep publishes the head once it is overdue.
                        if let Err(e) = self.publisher.ordered_heads(&next).await {
                            tracing::warn!(error = %e, connection_id = conn, "cannot publish the next ordered job; the sweep will");
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot move an ordered key on; retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_shared::model::Event;

    fn group() -> Arc<JobGroup> {
        Arc::new(JobGroup {
            workspace_id: "ws_1".into(),
            event: Event {
                uuid: "evt_1".into(),
                event: "order.completed".into(),
                resource: "order".into(),
                resource_id: "ord_1".into(),
                payload: serde_json::value::RawValue::from_string("{}".into()).expect("valid JSON"),
                time_created: 1,
            },
            jobs: Vec::new(),
        })
    }

    #[test]
    fn each_kind_of_turn_writes_and_publishes_what_it_should() {
        let g = group();
        let after = Duration::from_secs(5);
        let batch = vec![
            Done::new(
                g.clone(),
                JobItem::new("c_ok"),
                Next::Attempted(Outcome::Delivered),
            ),
            Done::new(
                g.clone(),
                JobItem::new("c_retry"),
                Next::Attempted(Outcome::Retry { after }),
            ),
            Done::new(
                g.clone(),
                JobItem::new("c_dead"),
                Next::Attempted(Outcome::DeadLetter {
                    reason: "410 Gone".into(),
                }),
            ),
            Done::new(g.clone(), JobItem::new("c_busy"), Next::Deferred { after }),
            Done::new(g.clone(), JobItem::new("c_late"), Next::HandBack),
        ];
        let p = plan(&batch, 1_000);
        let statuses: Vec<_> = p.rows.iter().map(|(i, d)| (*i, d.status)).collect();
        assert_eq!(
            statuses,
            vec![
                (0, DeliveryStatus::Delivered),
                (1, DeliveryStatus::Retrying),
                (2, DeliveryStatus::Dead)
            ]
        );
        assert_eq!(p.rows[1].1.next_attempt_at, Some(6_000));
        assert_eq!(p.rows[2].1.dead_letter_id.as_deref(), Some("evt_1.c_dead"));
        assert_eq!(p.dead.len(), 1);
        assert_eq!(p.dead[0].reason, "410 Gone");
        assert_eq!(
            p.publish,
            vec![
                Publish::Retry { job: 1, after },
                Publish::Dead { job: 2, dead: 0 },
                Publish::Defer { job: 3, after },
            ]
        );
        assert_eq!(p.hand_back, vec![4]);
    }

    #[test]
    fn what_was_published_is_written_again_but_not_published_again() {
        let g = group();
        let after = Duration::from_secs(5);
        let batch = vec![
            Done::new(
                g.clone(),
                JobItem::new("c_retry"),
                Next::Attempted(Outcome::Retry { after }),
            ),
            Done::new(g.clone(), JobItem::new("c_late"), Next::HandBack),
        ];
        batch[0].mark_published();
        batch[1].mark_published();
        let p = plan(&batch, 1_000);
        assert_eq!(p.rows.len(), 1, "the outcome is written again");
        assert!(p.publish.is_empty());
        assert!(p.hand_back.is_empty());
    }
}
