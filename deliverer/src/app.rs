//! The deliverer process: consume job messages, send every job, record outcomes, schedule
//! retries and dead letters, and only then acknowledge.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::future::{join_all, try_join_all};
use lapin::message::Delivery as AmqpDelivery;
use lapin::options::BasicAckOptions;
use lapin::BasicProperties;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use herald_shared::amqp::topology::{
    DEAD_EXCHANGE, JOBS_EXCHANGE, JOBS_QUEUE, QUARANTINE_EXCHANGE, RETRY_EXCHANGE,
};
use herald_shared::amqp::{self, Broker, Handled};
use herald_shared::config::DelivererSettings;
use herald_shared::model::job::delivery_id;
use herald_shared::model::{Delivery, DeliveryStatus, JobGroup, JobItem};
use herald_shared::ratelimit::RateLimiter;
use herald_shared::retry::ladder_routing_key;
use herald_shared::store::dead_letters::DeadLetter;
use herald_shared::store::{ConfigCache, Store};

use crate::dispatch::Dispatcher;
use crate::outcome::{decide_outcome, Outcome, Verdict};

/// A started deliverer.
pub struct Running {
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Waits until every task ended (after cancellation).
    pub async fn wait(self) -> anyhow::Result<()> {
        for t in self.tasks {
            t.await.context("a deliverer task panicked")?;
        }
        Ok(())
    }
}

struct Deliverer {
    settings: DelivererSettings,
    broker: Arc<Broker>,
    store: Store,
    cache: Arc<ConfigCache>,
    dispatcher: Dispatcher,
    in_flight: Arc<Semaphore>,
    per_connection: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Fires on shutdown: jobs not yet started are handed back instead of sent.
    shutdown: CancellationToken,
    limiter: RateLimiter,
}

/// One job after its turn: the job with the attempt appended and what follows, or `None` when
/// it was not attempted because the process is shutting down (it goes back to the jobs queue).
struct Done<'a> {
    group: &'a JobGroup,
    job: JobItem,
    outcome: Option<Outcome>,
}

/// Connects, serves ops endpoints and starts consuming jobs.
pub async fn start(
    settings: DelivererSettings,
    cancel: CancellationToken,
) -> anyhow::Result<Running> {
    let _ = herald_shared::telemetry::metrics();
    let store = Store::connect(&settings.common, &cancel)
        .await
        .context("connecting to Redis")?;
    let broker = Broker::new(&settings.common, "herald-deliverer");
    let cache = ConfigCache::new(store.clone());
    let (addr, ops) =
        herald_shared::ops::serve(settings.addr, broker.clone(), store.clone(), cancel.clone())
            .await
            .with_context(|| format!("binding HERALD_DELIVERER_ADDR {}", settings.addr))?;
    let dispatcher =
        Dispatcher::new(settings.destinations.clone()).context("building the HTTP client")?;
    let deliverer = Arc::new(Deliverer {
        in_flight: Arc::new(Semaphore::new(settings.concurrency)),
        settings: settings.clone(),
        broker: broker.clone(),
        limiter: RateLimiter::new(store.clone()),
        store,
        cache: cache.clone(),
        dispatcher,
        per_connection: Mutex::new(HashMap::new()),
        shutdown: cancel.clone(),
    });
    // The broker connection outlives the consumer, so in-flight work can still publish and ack
    // while draining; it closes once the consumer has finished.
    let broker_cancel = CancellationToken::new();
    let supervise = tokio::spawn(broker.clone().supervise(broker_cancel.clone()));
    let refresh = tokio::spawn(cache.refresh(settings.common.config_refresh, cancel.clone()));
    let consuming = amqp::consume(
        broker,
        JOBS_QUEUE,
        settings.prefetch,
        cancel.clone(),
        settings.drain_timeout,
        move |delivery| {
            let deliverer = deliverer.clone();
            async move { deliverer.handle(delivery).await }
        },
    );
    let consume = tokio::spawn(async move {
        consuming.await;
        broker_cancel.cancel();
    });
    Ok(Running {
        addr,
        tasks: vec![consume, supervise, refresh, ops],
    })
}

impl Deliverer {
    async fn handle(&self, delivery: AmqpDelivery) -> Handled {
        let groups: Vec<JobGroup> = match serde_json::from_slice(&delivery.data) {
            Ok(g) => g,
            Err(e) => {
                return self
                    .quarantine(&delivery, &format!("not a jobs message: {e}"))
                    .await
            }
        };
        let results = join_all(
            groups
                .iter()
                .flat_map(|g| g.jobs.iter().map(move |j| self.run_job(g, j))),
        )
        .await;
        let done = match results.into_iter().collect::<Result<Vec<_>, String>>() {
            Ok(d) => d,
            Err(reason) => return Handled::Requeue { reason },
        };
        if done.iter().all(|d| d.outcome.is_none()) {
            // Shutting down before any of it started: the whole message goes back as it was.
            return Handled::Release;
        }
        if let Err(reason) = self.settle(&done).await {
            return Handled::Requeue { reason };
        }
        match delivery.acker.ack(BasicAckOptions::default()).await {
            Ok(()) => Handled::Acked,
            Err(e) => Handled::Requeue {
                reason: format!("ack failed: {e}"),
            },
        }
    }

    fn connection_slots(&self, connection_id: &str) -> Arc<Semaphore> {
        let mut map = self
            .per_connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.entry(connection_id.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.settings.connection_concurrency)))
            .clone()
    }

    /// Makes one attempt of one job (or decides it cannot be made) and what follows from it.
    async fn run_job<'a>(&self, group: &'a JobGroup, job: &JobItem) -> Result<Done<'a>, String> {
        let attempt_no = job.attempts.len() + 1;
        let span = tracing::info_span!(
            "deliver",
            event_id = %group.event.uuid,
            connection_id = %job.connection_id,
            attempt = attempt_no
        );
        async move {
            let config = self
                .cache
                .workspace(&group.workspace_id)
                .await
                .map_err(|e| format!("reading configuration: {e}"))?;
            let mut job = job.clone();
            let stop = |reason: &str| Outcome::DeadLetter {
                reason: reason.to_string(),
            };
            let Some(conn) = config.connections.get(&job.connection_id).cloned() else {
                tracing::warn!("connection no longer exists; dead-lettering");
                return Ok(Done { group, job, outcome: Some(stop("the connection no longer exists")) });
            };
            if !conn.enabled {
                return Ok(Done { group, job, outcome: Some(stop("the connection is disabled")) });
            }

            let slots = self.connection_slots(&conn.id);
            let conn_permit = async { slots.acquire_owned().await };
            let hand_back = Done { group, job: job.clone(), outcome: None };
            let _conn_permit = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Ok(hand_back),
                p = conn_permit => p.map_err(|e| e.to_string())?,
            };
            // Over the connection's rate limit (shared by every deliverer through Redis) the job
            // waits for its slot holding only this connection's permit; a wait is not an attempt.
            if let Some(per_second) = conn.rate_limit_per_s {
                let waited = self
                    .limiter
                    .acquire(&format!("conn:{}", conn.id), per_second, "delivery")
                    .await;
                metrics::histogram!("herald_delivery_rate_limit_wait_seconds")
                    .record(waited.as_secs_f64());
            }
            let _permit = self.in_flight.clone().acquire_owned().await.map_err(|e| e.to_string())?;
            if self.shutdown.is_cancelled() {
                return Ok(hand_back);
            }
            metrics::gauge!("herald_deliveries_in_flight").increment(1.0);
            let timeout = Duration::from_millis(conn.timeout_ms);
            let (attempt, verdict) = self.dispatcher.send(&conn, &group.event, timeout).await;
            metrics::gauge!("herald_deliveries_in_flight").decrement(1.0);

            let class = match attempt.status_code {
                Some(s) => format!("{}xx", s / 100),
                None => "error".to_string(),
            };
            metrics::histogram!("herald_delivery_attempt_duration_seconds", "status_class" => class.clone())
                .record(attempt.latency_ms as f64 / 1000.0);
            job.attempts.push(attempt.clone());
            let outcome = decide_outcome(
                &verdict,
                job.attempts_this_round() as u32,
                &self.settings.common.retry_schedule,
                &mut rand::thread_rng(),
            );
            let word = match &outcome {
                Outcome::Delivered => "delivered",
                Outcome::Retry { .. } => "retry",
                Outcome::DeadLetter { .. } => "dead",
            };
            metrics::counter!("herald_deliveries_total", "outcome" => word, "status_class" => class).increment(1);
            match (&verdict, &outcome) {
                (Verdict::Success, _) => tracing::debug!(status = attempt.status_code, latency_ms = attempt.latency_ms, "delivered"),
                (_, Outcome::Retry { after }) => tracing::info!(
                    error = attempt.error.as_deref().unwrap_or(""),
                    retry_in_s = after.as_secs(),
                    "attempt failed; retry scheduled"
                ),
                (_, _) => tracing::warn!(error = attempt.error.as_deref().unwrap_or(""), "attempt failed; dead-lettering"),
            }
            Ok(Done { group, job, outcome: Some(outcome) })
        }
        .instrument(span)
        .await
    }

    /// Records every outcome in Redis, then publishes retries and dead letters and waits for
    /// the broker's confirms. Redis trouble holds the message (and its ack) and retries, so no
    /// outcome is lost and no request is sent again because of it.
    async fn settle(&self, all: &[Done<'_>]) -> Result<(), String> {
        let now = herald_shared::now_ms();
        let (attempted, handed_back): (Vec<_>, Vec<_>) =
            all.iter().partition(|d| d.outcome.is_some());
        let done: Vec<(&Done, &Outcome)> = attempted
            .into_iter()
            .filter_map(|d| d.outcome.as_ref().map(|o| (d, o)))
            .collect();
        let mut deliveries = Vec::with_capacity(done.len());
        let mut dead = Vec::new();
        for (d, outcome) in &done {
            let id = delivery_id(&d.group.event.uuid, &d.job.connection_id);
            let (status, next_attempt_at, dead_letter_id) = match outcome {
                Outcome::Delivered => (DeliveryStatus::Delivered, None, None),
                Outcome::Retry { after } => (
                    DeliveryStatus::Retrying,
                    Some(now + after.as_millis() as i64),
                    None,
                ),
                Outcome::DeadLetter { reason } => {
                    dead.push(DeadLetter {
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
            deliveries.push(Delivery {
                connection_id: d.job.connection_id.clone(),
                status,
                attempts: d.job.attempts.clone(),
                next_attempt_at,
                dead_letter_id,
                updated_at: now,
            });
        }
        let rows: Vec<(&str, &str, &Delivery)> = done
            .iter()
            .zip(&deliveries)
            .map(|((d, _), delivery)| {
                (
                    d.group.workspace_id.as_str(),
                    d.group.event.uuid.as_str(),
                    delivery,
                )
            })
            .collect();
        let mut wait = Duration::from_millis(100);
        while let Err(e) = self.store.record_outcomes(&rows, &dead).await {
            tracing::warn!(error = %e, "cannot record outcomes; holding the message and retrying");
            metrics::counter!("herald_outcome_write_failures_total").increment(1);
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }

        let json = BasicProperties::default().with_content_type("application/json".into());
        let retries = done.iter().filter_map(|(d, outcome)| match outcome {
            Outcome::Retry { after } => Some((d, *after)),
            _ => None,
        });
        try_join_all(retries.map(|(d, after)| {
            let body = serde_json::to_vec(&[JobGroup {
                workspace_id: d.group.workspace_id.clone(),
                event: d.group.event.clone(),
                jobs: vec![d.job.clone()],
            }])
            .unwrap_or_default();
            let props = json.clone();
            async move {
                self.broker
                    .publish(RETRY_EXCHANGE, &ladder_routing_key(after), &body, props)
                    .await?;
                metrics::counter!("herald_retries_scheduled_total").increment(1);
                Ok::<_, amqp::BrokerError>(())
            }
        }))
        .await
        .map_err(|e| format!("scheduling retries: {e}"))?;
        try_join_all(dead.iter().map(|d| {
            let body = serde_json::to_vec(d).unwrap_or_default();
            let props = json
                .clone()
                .with_headers(amqp::headers([(amqp::REASON_HEADER, d.reason.clone())]));
            async move {
                self.broker.publish(DEAD_EXCHANGE, "", &body, props).await?;
                metrics::counter!("herald_dead_letters_total").increment(1);
                Ok::<_, amqp::BrokerError>(())
            }
        }))
        .await
        .map_err(|e| format!("dead-lettering: {e}"))?;

        if !handed_back.is_empty() {
            // Shutting down part-way through a message: the jobs not started go back to the jobs
            // queue as a message of their own, so the ones already sent are not sent again.
            let groups: Vec<JobGroup> = handed_back
                .iter()
                .map(|d| JobGroup {
                    workspace_id: d.group.workspace_id.clone(),
                    event: d.group.event.clone(),
                    jobs: vec![d.job.clone()],
                })
                .collect();
            let body = serde_json::to_vec(&groups).unwrap_or_default();
            self.broker
                .publish(JOBS_EXCHANGE, "jobs", &body, json)
                .await
                .map_err(|e| format!("handing back unstarted jobs: {e}"))?;
            metrics::counter!("herald_jobs_handed_back_total").increment(handed_back.len() as u64);
        }
        Ok(())
    }

    async fn quarantine(&self, delivery: &AmqpDelivery, reason: &str) -> Handled {
        tracing::warn!(reason, "quarantining a jobs message");
        let props = BasicProperties::default()
            .with_headers(amqp::headers([(amqp::REASON_HEADER, reason.to_string())]));
        if let Err(e) = self
            .broker
            .publish(QUARANTINE_EXCHANGE, "", &delivery.data, props)
            .await
        {
            return Handled::Requeue {
                reason: format!("quarantining: {e}"),
            };
        }
        metrics::counter!("herald_quarantined_total", "reason" => "invalid_job").increment(1);
        match delivery.acker.ack(BasicAckOptions::default()).await {
            Ok(()) => Handled::Acked,
            Err(e) => Handled::Requeue {
                reason: format!("ack failed: {e}"),
            },
        }
    }
}
