//! The router's handler: read an events message, claim its events, record them, publish their
//! jobs and mark them expanded. What then happens to the message (ack, requeue, quarantine) is
//! the consume loop's; the handler only says which.

use std::sync::Arc;

use futures::future::try_join_all;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use herald_shared::amqp::topology::{EVENTS_ORDERED_QUEUE, EVENTS_QUEUE};
use herald_shared::amqp::{
    self, ByteBudget, Handled, JobsSource, Message, Origin, PublishError, Publisher,
};
use herald_shared::config::RouterSettings;
use herald_shared::model::{Event, JobGroup, JobItem, OrderSlot};
use herald_shared::ops::QueueDepths;
use herald_shared::service::{start_worker, Running, WorkerSpec};
use herald_shared::store::history::Routed;
use herald_shared::store::ordering::{new_copy, Added, Sequenced, BACKLOG};
use herald_shared::store::routing::Claim;
use herald_shared::store::{ConfigCache, Store, StoreError, WorkspaceConfig};

use crate::expand;
use crate::intake::{self, Rejection};

/// How long a router holds an event it is expanding before another may take it over (longer
/// than publishing its jobs can take: the confirm timeout is 15 s).
const ROUTING_LEASE: std::time::Duration = std::time::Duration::from_secs(20);

/// Why a message could not be routed now (it goes back to the queue and is tried again).
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The workspace's configuration could not be read.
    #[error("reading configuration: {0}")]
    Config(#[source] StoreError),
    /// Redis refused a history write or a claim.
    #[error("{what}: {source}")]
    Store {
        /// What was being written.
        what: &'static str,
        /// Why.
        source: StoreError,
    },
    /// An ordered job could not be written as JSON.
    #[error("encoding an ordered job: {0}")]
    Encode(#[source] serde_json::Error),
    /// The broker did not take jobs, a quarantined part or events to look at again.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

fn store_error(what: &'static str) -> impl FnOnce(StoreError) -> RouteError {
    move |source| RouteError::Store { what, source }
}

/// How often a router looks for ordered jobs whose turn came and that nobody took.
const ORDER_SWEEP: std::time::Duration = std::time::Duration::from_secs(5);

struct Router {
    settings: RouterSettings,
    publisher: Publisher,
    store: Store,
    cache: Arc<ConfigCache>,
    /// Workspaces noted as having ordered sequences (see [`Store::note_ordered_workspace`]).
    ordered_noted: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Connects to Redis and the broker, serves ops endpoints and starts consuming events.
pub async fn start(settings: RouterSettings, cancel: CancellationToken) -> anyhow::Result<Running> {
    let spec = WorkerSpec {
        name: "herald-router",
        addr: settings.addr,
        addr_setting: "HERALD_ROUTER_ADDR",
        queue: EVENTS_QUEUE,
        prefetch: settings.prefetch,
        serial_queue: Some(EVENTS_ORDERED_QUEUE),
        // A bulk message of 500 events takes what a few hundred single ones do: the bytes
        // handled at once are bounded, not only their count.
        budget: Some(ByteBudget::new(settings.inflight_bytes)),
        queue_depths: QueueDepths::Sample,
        background: None,
        sweeps_history: true,
    };
    let common = settings.common.clone();
    let sweep_cancel = cancel.clone();
    start_worker(&common, spec, cancel, move |worker| {
        tokio::spawn(sweep_ordered(
            worker.store.clone(),
            worker.publisher.clone(),
            sweep_cancel,
        ));
        let router = Arc::new(Router {
            settings,
            publisher: worker.publisher,
            store: worker.store,
            cache: worker.cache,
            ordered_noted: Default::default(),
        });
        move |message: Arc<Message>| {
            let router = router.clone();
            async move { router.handle(&message).await }
        }
    })
    .await
}

impl Router {
    async fn handle(&self, message: &Message) -> Handled {
        let workspace_id = amqp::header_str(message.properties.headers(), amqp::WORKSPACE_HEADER);
        let span = tracing::info_span!("route", workspace_id = workspace_id.unwrap_or(""));
        async {
            match self.route(message, workspace_id).await {
                Ok(handled) => handled,
                Err(e) => Handled::Requeue {
                    reason: e.to_string(),
                },
            }
        }
        .instrument(span)
        .await
    }

    async fn route(
        &self,
        message: &Message,
        workspace_id: Option<&str>,
    ) -> Result<Handled, RouteError> {
        let Some(ws) = workspace_id else {
            return Ok(Handled::Quarantine(Rejection::NoWorkspace.into()));
        };
        let config = self.cache.workspace(ws).await.map_err(RouteError::Config)?;
        if !config.exists {
            return Ok(Handled::Quarantine(
                Rejection::UnknownWorkspace(ws.to_string()).into(),
            ));
        }
        let message_id = message.properties.message_id().as_ref().map(|m| m.as_str());
        let parsed = match intake::parse(ws, &message.data, message_id, herald_shared::now_ms()) {
            Ok(p) => p,
            Err(reject) => return Ok(Handled::Quarantine(reject.into())),
        };
        for (raw, reason) in parsed.rejected {
            let origin = Origin {
                queue: message.queue,
                routing_key: Some(&message.routing_key),
                workspace_id: Some(ws),
            };
            self.publisher
                .quarantine(raw, &reason.into(), origin, None)
                .await?;
        }
        let events = parsed.events;
        if events.is_empty() {
            return Ok(Handled::Ack);
        }

        let uuids: Vec<&str> = events.iter().map(|e| e.uuid.as_str()).collect();
        let claims = self
            .store
            .claim_for_routing(ws, &uuids, ROUTING_LEASE)
            .await
            .map_err(store_error("claiming events"))?;
        let taken: Vec<String> = uuids
            .iter()
            .zip(&claims)
            .filter(|(_, c)| **c == Claim::Taken)
            .map(|(u, _)| u.to_string())
            .collect();
        drop(uuids);
        let handled = self.expand(message, ws, &config, events, claims).await;
        if !matches!(handled, Ok(Handled::Ack)) {
            // What this try claimed and did not finish is free at once for the next try (the
            // ordered queue retries this very message first), not only after the lease.
            let taken: Vec<&str> = taken.iter().map(String::as_str).collect();
            if let Err(e) = self.store.release_claims(ws, &taken).await {
                tracing::debug!(error = %e, "cannot release claims; they run out by themselves");
            }
        }
        handled
    }

    /// Expands claimed events into jobs, publishes them and marks the events expanded.
    async fn expand(
        &self,
        message: &Message,
        ws: &str,
        config: &WorkspaceConfig,
        events: Vec<Event>,
        claims: Vec<Claim>,
    ) -> Result<Handled, RouteError> {
        let serial = message.queue == EVENTS_ORDERED_QUEUE;
        if serial && claims.contains(&Claim::Contested) {
            // Ordered events never go round the waiting queue (they would come back behind
            // later ones): this message waits at the head of its queue until the router that
            // holds them finished, or its lease ran out.
            return Ok(Handled::Requeue {
                reason: "an ordered event is being routed by another router".into(),
            });
        }
        let routed: Vec<Routed> = events
            .iter()
            .map(|event| {
                let (connection_ids, skipped) = expand::route(config, event);
                Routed {
                    workspace_id: ws,
                    event,
                    connection_ids,
                    skipped,
                }
            })
            .collect();
        self.store
            .record_routed(&routed)
            .await
            .map_err(store_error("recording events"))?;
        let (connection_ids, skipped): (Vec<Vec<String>>, Vec<usize>) = routed
            .into_iter()
            .map(|r| (r.connection_ids, r.skipped.len()))
            .unzip();

        // The events move into their jobs (and the contested into their message) from here on:
        // a bulk message's events exist once while its jobs are published.
        let mut groups = Vec::new();
        let mut sequenced = Vec::new();
        let mut fresh = Vec::new();
        let mut no_match = 0u64;
        let mut disabled = 0u64;
        let mut contested = Vec::new();
        for (((event, connection_ids), skipped), claim) in events
            .into_iter()
            .zip(connection_ids)
            .zip(skipped)
            .zip(claims)
        {
            match claim {
                Claim::Done => {
                    metrics::counter!("herald_router_duplicate_events_total").increment(1);
                    continue;
                }
                // Another router is expanding this uuid right now: look again after it finished.
                Claim::Contested => {
                    contested.push(event);
                    continue;
                }
                Claim::Taken => {}
            }
            fresh.push(event.uuid.clone());
            disabled += skipped as u64;
            if connection_ids.is_empty() && skipped > 0 {
                tracing::debug!(event_id = %event.uuid, "every matched connection is disabled");
                continue;
            }
            if connection_ids.is_empty() {
                no_match += 1;
                tracing::info!(event_id = %event.uuid, event = %event.event, "no rule matched");
                continue;
            }
            let (ordered, plain): (Vec<String>, Vec<String>) =
                connection_ids.into_iter().partition(|c| {
                    config
                        .connections
                        .get(c)
                        .is_some_and(|c| c.ordering.is_ordered())
                });
            for connection_id in ordered {
                let Some(key) = config.connections[&connection_id].ordering.key_of(&event) else {
                    continue;
                };
                let mut job = JobItem::new(connection_id);
                job.order = Some(OrderSlot {
                    key,
                    overflow: false,
                    copy: new_copy(),
                });
                sequenced.push(JobGroup {
                    workspace_id: ws.to_string(),
                    event: event.clone(),
                    jobs: vec![job],
                });
            }
            if !plain.is_empty() {
                groups.push(expand::group(ws, event, plain));
            }
        }
        groups.extend(self.sequence(ws, sequenced).await?);
        let jobs: usize = groups.iter().map(|g| g.jobs.len()).sum();
        let messages = expand::pack(groups, self.settings.jobs_per_message);
        try_join_all(
            messages
                .iter()
                .map(|m| self.publisher.jobs(m, JobsSource::Routed)),
        )
        .await?;

        let fresh: Vec<&str> = fresh.iter().map(String::as_str).collect();
        self.store
            .mark_expanded(ws, &fresh)
            .await
            .map_err(store_error("marking events expanded"))?;
        metrics::counter!("herald_router_events_total").increment(fresh.len() as u64);
        metrics::counter!("herald_router_events_unmatched_total").increment(no_match);
        metrics::counter!("herald_router_deliveries_skipped_total").increment(disabled);
        metrics::counter!("herald_router_jobs_total").increment(jobs as u64);
        metrics::counter!("herald_router_job_messages_total").increment(messages.len() as u64);
        if !contested.is_empty() {
            // They wait a moment in a queue of their own (not in this router's prefetch) and
            // are looked at again: skipped once the other router marked them expanded, or
            // expanded here if its lease ran out.
            metrics::counter!("herald_router_contested_events_total")
                .increment(contested.len() as u64);
            self.publisher.events_later(ws, &contested).await?;
        }
        Ok(Handled::Ack)
    }

    /// Adds ordered jobs to their keys' sequences, in the order given, and answers those to
    /// publish now: the new heads, and those whose key is full (dead-lettered by the deliverer).
    async fn sequence(
        &self,
        ws: &str,
        mut sequenced: Vec<JobGroup>,
    ) -> Result<Vec<JobGroup>, RouteError> {
        if sequenced.is_empty() {
            return Ok(sequenced);
        }
        let noted = self
            .ordered_noted
            .lock()
            .map(|n| n.contains(ws))
            .unwrap_or(false);
        if !noted {
            self.store
                .note_ordered_workspace(ws)
                .await
                .map_err(store_error("noting an ordered workspace"))?;
            if let Ok(mut n) = self.ordered_noted.lock() {
                n.insert(ws.to_string());
            }
        }
        let mut jobs = Vec::with_capacity(sequenced.len());
        for g in &sequenced {
            let body = serde_json::to_string(g).map_err(RouteError::Encode)?;
            let job = &g.jobs[0];
            let (key, copy) = job
                .order
                .as_ref()
                .map_or(("", ""), |o| (o.key.as_str(), o.copy.as_str()));
            jobs.push(Sequenced {
                connection_id: job.connection_id.as_str(),
                key,
                uuid: g.event.uuid.as_str(),
                copy,
                body,
            });
        }
        let added = self
            .store
            .add_ordered(ws, &jobs, herald_shared::now_ms(), BACKLOG)
            .await
            .map_err(store_error("sequencing ordered jobs"))?;
        drop(jobs);
        let mut out = Vec::new();
        for (mut g, added) in sequenced.drain(..).zip(added) {
            match added {
                Added::Publish => out.push(g),
                Added::Full => {
                    if let Some(o) = g.jobs[0].order.as_mut() {
                        o.overflow = true;
                    }
                    out.push(g);
                }
                Added::Queued | Added::Finished => {}
            }
        }
        metrics::counter!("herald_router_ordered_jobs_total").increment(out.len() as u64);
        Ok(out)
    }
}

/// Publishes again the heads of ordered sequences whose turn came and that no deliverer took
/// in time (their publisher died between the two, or a retry's message was lost with a
/// broker). Every router sweeps; each overdue head is handed to one of them.
async fn sweep_ordered(store: Store, publisher: Publisher, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(ORDER_SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let workspaces = match store.ordered_workspaces().await {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list ordered workspaces");
                continue;
            }
        };
        for ws in workspaces {
            match store
                .overdue_ordered(&ws, herald_shared::now_ms(), 500)
                .await
            {
                Ok(heads) if heads.is_empty() => {}
                Ok(heads) => {
                    tracing::info!(workspace_id = %ws, count = heads.len(), "publishing overdue ordered jobs again");
                    metrics::counter!("herald_ordered_resent_total").increment(heads.len() as u64);
                    // A message of at most 50 jobs and 4 MiB, as the deliverers expect.
                    for chunk in chunks(&heads, 50, 4 << 20) {
                        if let Err(e) = publisher.ordered_heads(chunk).await {
                            tracing::warn!(error = %e, "cannot publish overdue ordered jobs; next sweep");
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot sweep ordered jobs"),
            }
        }
    }
}

/// `bodies` in runs of at most `count` and (unless one alone is larger) `bytes`.
fn chunks(bodies: &[String], count: usize, bytes: usize) -> Vec<&[String]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, b) in bodies.iter().enumerate() {
        if i > start && (i - start >= count || size + b.len() > bytes) {
            out.push(&bodies[start..i]);
            (start, size) = (i, 0);
        }
        size += b.len();
    }
    if start < bodies.len() {
        out.push(&bodies[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::chunks;

    #[test]
    fn sweep_messages_are_bounded_by_count_and_bytes() {
        let bodies: Vec<String> = (0..7).map(|i| "x".repeat(10 + i)).collect();
        let sizes = |c: Vec<&[String]>| c.iter().map(|r| r.len()).collect::<Vec<_>>();
        assert_eq!(sizes(chunks(&bodies, 3, 1 << 20)), vec![3, 3, 1]);
        assert_eq!(sizes(chunks(&bodies, 50, 25)), vec![2, 2, 1, 1, 1]);
        assert_eq!(
            sizes(chunks(&bodies, 50, 1)),
            vec![1; 7],
            "one alone may exceed the bytes"
        );
        assert!(chunks(&[], 50, 1).is_empty());
    }
}
