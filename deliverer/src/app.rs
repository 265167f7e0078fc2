//! The deliverer process: consume job messages, send every job, record outcomes, schedule
//! retries and dead letters, and only then acknowledge.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::{join_all, BoxFuture};
use futures::stream::{FuturesUnordered, StreamExt};
use lapin::message::Delivery as AmqpDelivery;
use lapin::options::BasicAckOptions;
use lapin::BasicProperties;
use rand::Rng;
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
use herald_shared::model::{Attempt, Delivery, DeliveryStatus, JobGroup, JobItem};
use herald_shared::ratelimit::{Decision as RateDecision, RateLimiter};
use herald_shared::retry::ladder_routing_key;
use herald_shared::store::dead_letters::DeadLetter;
use herald_shared::store::health::BreakerChange;
use herald_shared::store::{ConfigCache, Store};

use crate::breaker::{Admit, Breakers, Policy as BreakerPolicy, Transition};
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
    per_connection: Mutex<HashMap<String, Arc<ConnectionSlots>>>,
    /// Fires on shutdown: jobs not yet started are handed back instead of sent.
    shutdown: CancellationToken,
    limiter: RateLimiter,
    breakers: Breakers,
    /// This process, as named in the breaker history (host and pid).
    name: String,
}

/// What follows one job's turn.
enum Next {
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
}

/// One job after its turn: the job (with its attempt appended, if one was made) and what next.
struct Done<'a> {
    group: &'a JobGroup,
    job: JobItem,
    next: Next,
    /// Its retry, deferral or dead letter is confirmed by the broker (so a settle written again
    /// after a failure does not publish it twice).
    published: std::sync::atomic::AtomicBool,
}

impl<'a> Done<'a> {
    fn new(group: &'a JobGroup, job: JobItem, next: Next) -> Self {
        Self {
            group,
            job,
            next,
            published: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn is_published(&self) -> bool {
        self.published.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn mark_published(&self) {
        self.published
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How long finished jobs of a message wait for others before their outcomes are written, so
/// the history shows each attempt within a second while writes stay batched.
const SETTLE_EVERY: Duration = Duration::from_millis(200);

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
    let store_for_watch = store.clone();
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
        name: format!(
            "{}:{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "deliverer".into()),
            std::process::id()
        ),
        breakers: Breakers::new(BreakerPolicy {
            failures: settings.breaker_failures,
            cooldown: settings.breaker_cooldown,
            max_cooldown: Duration::from_secs(600).max(settings.breaker_cooldown),
            // The longest connection timeout is 120 s.
            probe_timeout: Duration::from_secs(150),
        }),
    });
    // The broker connection outlives the consumer, so in-flight work can still publish and ack
    // while draining; it closes once the consumer has finished.
    let broker_cancel = CancellationToken::new();
    let supervise = tokio::spawn(broker.clone().supervise(broker_cancel.clone()));
    let refresh = tokio::spawn(cache.refresh(settings.common.config_refresh, cancel.clone()));
    let watch = tokio::spawn(herald_shared::ops::watch(
        broker.clone(),
        store_for_watch,
        false,
        cancel.clone(),
    ));
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
        tasks: vec![consume, supervise, refresh, watch, ops],
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
        // Jobs run concurrently; finished ones are settled in small batches while the rest are
        // still running, so one slow connection delays neither the history nor the retries of
        // the others in the same message. The message is acked once every job is settled.
        if groups.iter().all(|g| g.jobs.is_empty()) {
            return self
                .quarantine(&delivery, "a jobs message with no jobs")
                .await;
        }
        let mut running: FuturesUnordered<_> = groups
            .iter()
            .flat_map(|g| g.jobs.iter().map(move |j| self.run_job(g, j)))
            .collect();
        let mut ready: Vec<Done> = Vec::new();
        let mut attempted_any = false;
        let mut settle_at: Option<tokio::time::Instant> = None;
        // A batch being written runs alongside the jobs still in flight (their responses keep
        // being read, and their timeouts keep meaning what they say).
        let mut settling: Option<Settling<'_>> = None;
        let mut all_ran = false;
        loop {
            tokio::select! {
                next = running.next(), if !all_ran => match next {
                    Some(done) => {
                        attempted_any |= !matches!(done.next, Next::HandBack);
                        ready.push(done);
                        settle_at.get_or_insert_with(|| tokio::time::Instant::now() + SETTLE_EVERY);
                    }
                    None => all_ran = true,
                },
                (written, batch) = poll_settling(&mut settling), if settling.is_some() => {
                    settling = None;
                    if let Err(reason) = written {
                        // Never requeue a message part of which is settled: its jobs would be
                        // sent again and their retry chains forked. Write the rest again.
                        settling = Some(self.settle_again(batch, reason));
                    }
                }
                _ = sleep_until_or_never(settle_at), if settling.is_none() && !all_ran => {
                    let batch = std::mem::take(&mut ready);
                    settle_at = None;
                    settling = Some(Box::pin(async move {
                        let written = self.settle(&batch).await;
                        (written, batch)
                    }));
                }
            }
            if all_ran && settling.is_none() {
                break;
            }
        }
        if !attempted_any {
            // Shutting down before any of it started: the whole message goes back as it was.
            return Handled::Release;
        }
        let mut written = self.settle(&ready).await;
        while let Err(reason) = written {
            let (again, _) = self.settle_again(std::mem::take(&mut ready), reason).await;
            written = again;
        }
        match delivery.acker.ack(BasicAckOptions::default()).await {
            Ok(()) => Handled::Acked,
            Err(e) => Handled::Requeue {
                reason: format!("ack failed: {e}"),
            },
        }
    }

    fn connection_slots(&self, connection_id: &str) -> Arc<ConnectionSlots> {
        let mut map = self
            .per_connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.entry(connection_id.to_string())
            .or_insert_with(|| Arc::new(ConnectionSlots::new(self.settings.connection_concurrency)))
            .clone()
    }

    /// Makes one attempt of one job (or decides it cannot be made) and what follows from it.
    async fn run_job<'a>(&self, group: &'a JobGroup, job: &JobItem) -> Done<'a> {
        let attempt_no = job.attempts.len() + 1;
        let span = tracing::info_span!(
            "deliver",
            event_id = %group.event.uuid,
            connection_id = %job.connection_id,
            attempt = attempt_no
        );
        async move {
            let mut job = job.clone();
            let config = match self.cache.workspace(&group.workspace_id).await {
                Ok(c) => c,
                Err(e) => {
                    // Redis away and nothing cached: try again shortly, through the broker.
                    tracing::warn!(error = %e, "cannot read the configuration; deferring");
                    return self.defer(group, job, "config_unavailable");
                }
            };
            let stop = |reason: &str| Outcome::DeadLetter {
                reason: reason.to_string(),
            };
            let Some(conn) = config.connections.get(&job.connection_id).cloned() else {
                tracing::warn!("connection no longer exists; dead-lettering");
                return Done::new(group, job, Next::Attempted(stop("the connection no longer exists")));
            };
            if !conn.enabled {
                return Done::new(group, job, Next::Attempted(stop("the connection is disabled")));
            }

            // A slot of the connection's concurrency, waited for at most HERALD_CONNECTION_WAIT:
            // a connection that is slow or hanging keeps its own jobs waiting in the broker, not
            // in this process's prefetch, where they would hold up other connections' jobs.
            let wait = self.settings.connection_wait;
            let deadline = tokio::time::Instant::now() + wait;
            let slots = self.connection_slots(&conn.id);
            let free = slots.semaphore.clone().try_acquire_owned();
            if free.is_err() && slots.stuck() {
                // Every slot busy and none moved for a while: a hanging connection. Waiting
                // would only hold this message; go round the ladder at once.
                return self.defer(group, job, "connection_busy");
            }
            let slot = match free {
                Ok(p) => Ok(p),
                Err(_) => {
                    // Wait in line (the semaphore is fair), looking every quarter second whether
                    // the connection got stuck meanwhile.
                    let acquire = slots.semaphore.clone().acquire_owned();
                    tokio::pin!(acquire);
                    loop {
                        tokio::select! {
                            biased;
                            _ = self.shutdown.cancelled() => return Done::new(group, job, Next::HandBack),
                            p = &mut acquire => break p,
                            _ = tokio::time::sleep(STUCK_CHECK) => {
                                if slots.stuck() || tokio::time::Instant::now() >= deadline {
                                    return self.defer(group, job, "connection_busy");
                                }
                            }
                        }
                    }
                }
            };
            let _conn_permit = match slot {
                Ok(p) => {
                    slots.moved();
                    p
                }
                // The semaphores are never closed; were one, the job goes back untouched.
                Err(_) => return Done::new(group, job, Next::HandBack),
            };
            // The connection's rate limit, shared by every deliverer through Redis. A wait is not
            // an attempt; one longer than what is left of HERALD_CONNECTION_WAIT is a deferral.
            if let Some(per_second) = conn.rate_limit_per_s {
                let key = format!("conn:{}", conn.id);
                let mut limited = false;
                loop {
                    match self.limiter.check(&key, per_second, 1).await {
                        Ok(RateDecision::Allowed) => break,
                        Ok(RateDecision::Limited { retry_after }) => {
                            if !limited {
                                limited = true;
                                metrics::counter!("herald_rate_limited_total", "scope" => "delivery").increment(1);
                            }
                            if tokio::time::Instant::now() + retry_after > deadline {
                                return self.defer(group, job, "rate_limited");
                            }
                            tokio::select! {
                                biased;
                                _ = self.shutdown.cancelled() => return Done::new(group, job, Next::HandBack),
                                _ = tokio::time::sleep(retry_after.max(Duration::from_millis(1))) => {}
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "rate limiter unavailable; going ahead unlimited");
                            metrics::counter!("herald_rate_limiter_errors_total", "scope" => "delivery").increment(1);
                            break;
                        }
                    }
                }
            }
            // A slot of this deliverer's concurrency, under the same deadline.
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let permit = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Done::new(group, job, Next::HandBack),
                p = tokio::time::timeout(remaining, self.in_flight.clone().acquire_owned()) => p,
            };
            let _permit = match permit {
                Ok(Ok(p)) => p,
                Ok(Err(_)) => return Done::new(group, job, Next::HandBack),
                Err(_) => return self.defer(group, job, "deliverer_busy"),
            };
            if self.shutdown.is_cancelled() {
                return Done::new(group, job, Next::HandBack);
            }

            // The circuit breaker: a connection failing again and again is not called until a
            // probe succeeds; its jobs fail fast and wait in the retry ladder instead.
            let (admit, transition) = self.breakers.admit(&conn.id, Instant::now());
            if let Some(t) = transition {
                self.breaker_changed(&group.workspace_id, &conn.id, t).await;
            }
            let probe = match admit {
                Admit::Send => false,
                Admit::Probe => true,
                Admit::Reject { retry_in } => {
                    let error = format!(
                        "not sent: the connection's circuit breaker is open after repeated failures; next probe in {} s",
                        retry_in.as_secs().max(1)
                    );
                    job.attempts.push(Attempt {
                        at: herald_shared::now_ms(),
                        status_code: None,
                        latency_ms: 0,
                        error: Some(error.clone()),
                        response_excerpt: None,
                        url: conn.url.clone(),
                        request_headers: Default::default(),
                    });
                    let verdict = Verdict::Failed { error, retry_after: Some(retry_in) };
                    let outcome = decide_outcome(
                        &verdict,
                        job.attempts_this_round() as u32,
                        &self.settings.common.retry_schedule,
                        &mut rand::thread_rng(),
                    );
                    metrics::counter!("herald_deliveries_total", "outcome" => outcome_word(&outcome), "status_class" => "breaker_open").increment(1);
                    return Done::new(group, job, Next::Attempted(outcome));
                }
            };

            let timeout = Duration::from_millis(conn.timeout_ms);
            let (attempt, verdict) = {
                let _in_flight = InFlight::new();
                self.dispatcher.send(&conn, &group.event, timeout).await
            };
            slots.finished(attempt.latency_ms);
            job.deferrals = 0;
            let failed = matches!(verdict, Verdict::Failed { .. });
            if let Some(t) = self.breakers.record(&conn.id, !failed, probe, Instant::now()) {
                self.breaker_changed(&group.workspace_id, &conn.id, t).await;
            }

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
            metrics::counter!("herald_deliveries_total", "outcome" => outcome_word(&outcome), "status_class" => class).increment(1);
            match (&verdict, &outcome) {
                (Verdict::Success, _) => tracing::debug!(status = attempt.status_code, latency_ms = attempt.latency_ms, "delivered"),
                (_, Outcome::Retry { after }) => tracing::info!(
                    error = attempt.error.as_deref().unwrap_or(""),
                    retry_in_s = after.as_secs(),
                    "attempt failed; retry scheduled"
                ),
                (_, _) => tracing::warn!(error = attempt.error.as_deref().unwrap_or(""), "attempt failed; dead-lettering"),
            }
            Done::new(group, job, Next::Attempted(outcome))
        }
        .instrument(span)
        .await
    }

    /// Writes a batch again after a failure (pausing first); what was already published is not
    /// published twice.
    fn settle_again<'a>(&'a self, batch: Vec<Done<'a>>, reason: String) -> Settling<'a> {
        tracing::warn!(%reason, "settling failed; trying again");
        metrics::counter!("herald_settle_failures_total").increment(1);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let written = self.settle(&batch).await;
            (written, batch)
        })
    }

    /// A job whose connection had no room for it: back through the delay ladder, waiting a
    /// little longer each time (1 s, 2 s ... 32 s, +-20 %).
    fn defer<'a>(&self, group: &'a JobGroup, mut job: JobItem, why: &'static str) -> Done<'a> {
        let base = 1u64 << job.deferrals.min(5);
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        let after = Duration::from_secs_f64((base as f64 * jitter).max(1.0));
        job.deferrals = job.deferrals.saturating_add(1);
        metrics::counter!("herald_jobs_deferred_total", "reason" => why).increment(1);
        tracing::debug!(
            reason = why,
            after_s = after.as_secs(),
            "connection has no room; deferring"
        );
        Done::new(group, job, Next::Deferred { after })
    }

    /// A breaker changed state: metrics, a log line and the connection's breaker history.
    async fn breaker_changed(&self, workspace_id: &str, connection_id: &str, t: Transition) {
        let state = t.to.as_str();
        metrics::counter!("herald_circuit_breaker_transitions_total", "state" => state)
            .increment(1);
        metrics::gauge!("herald_circuit_breakers_open").set(self.breakers.open() as f64);
        tracing::warn!(
            connection_id,
            state,
            failures = t.failures,
            open_for_s = t.open_for.map(|d| d.as_secs()),
            "circuit breaker changed state"
        );
        let change = BreakerChange {
            at: herald_shared::now_ms(),
            state: state.to_string(),
            consecutive_failures: t.failures,
            open_for_s: t.open_for.map(|d| d.as_secs()),
            deliverer: self.name.clone(),
        };
        if let Err(e) = self
            .store
            .record_breaker_change(workspace_id, connection_id, &change)
            .await
        {
            tracing::warn!(error = %e, "cannot record the breaker change in the history");
        }
    }

    /// Records every outcome in Redis, then publishes retries and dead letters and waits for
    /// the broker's confirms. Redis trouble holds the message (and its ack) and retries, so no
    /// outcome is lost and no request is sent again because of it.
    async fn settle(&self, all: &[Done<'_>]) -> Result<(), String> {
        let now = herald_shared::now_ms();
        let done: Vec<(&Done, &Outcome)> = all
            .iter()
            .filter_map(|d| match &d.next {
                Next::Attempted(o) => Some((d, o)),
                _ => None,
            })
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

        // Retries, deferrals and dead letters, each confirmed by the broker. A job whose
        // message was already published (an earlier try of this batch) is not published again.
        let json = BasicProperties::default().with_content_type("application/json".into());
        let one_job = |d: &Done| {
            serde_json::to_vec(&[JobGroup {
                workspace_id: d.group.workspace_id.clone(),
                event: d.group.event.clone(),
                jobs: vec![d.job.clone()],
            }])
            .unwrap_or_default()
        };
        let mut dead_letters = dead.iter();
        let mut publishes = Vec::new();
        for (d, outcome) in &done {
            let dead_letter = match outcome {
                Outcome::DeadLetter { .. } => dead_letters.next(),
                _ => None,
            };
            if d.is_published() {
                continue;
            }
            match (outcome, dead_letter) {
                (Outcome::Retry { after }, _) => publishes.push((
                    *d,
                    RETRY_EXCHANGE,
                    ladder_routing_key(*after),
                    one_job(d),
                    json.clone(),
                    Some("herald_retries_scheduled_total"),
                )),
                (Outcome::DeadLetter { .. }, Some(dl)) => publishes.push((
                    *d,
                    DEAD_EXCHANGE,
                    String::new(),
                    serde_json::to_vec(dl).unwrap_or_default(),
                    json.clone()
                        .with_headers(amqp::headers([(amqp::REASON_HEADER, dl.reason.clone())])),
                    Some("herald_dead_letters_total"),
                )),
                _ => {}
            }
        }
        for d in all.iter().filter(|d| !d.is_published()) {
            if let Next::Deferred { after } = d.next {
                publishes.push((
                    d,
                    RETRY_EXCHANGE,
                    ladder_routing_key(after),
                    one_job(d),
                    json.clone(),
                    None,
                ));
            }
        }
        let results = join_all(publishes.into_iter().map(
            |(d, exchange, key, body, props, counter)| async move {
                self.broker.publish(exchange, &key, &body, props).await?;
                d.mark_published();
                if let Some(counter) = counter {
                    metrics::counter!(counter).increment(1);
                }
                Ok::<_, amqp::BrokerError>(())
            },
        ))
        .await;
        if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
            return Err(format!("publishing retries and dead letters: {e}"));
        }

        let handed_back: Vec<&Done> = all
            .iter()
            .filter(|d| matches!(d.next, Next::HandBack) && !d.is_published())
            .collect();
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
            handed_back.iter().for_each(|d| d.mark_published());
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

/// A connection's concurrency slots, when one was last taken or given back, and how long its
/// requests take.
struct ConnectionSlots {
    semaphore: Arc<Semaphore>,
    /// Milliseconds since the process started, at the last slot taken or request finished.
    moved_at: std::sync::atomic::AtomicU64,
    /// Moving average of its requests' latency in ms (0 until one finished).
    latency_ms: std::sync::atomic::AtomicU64,
}

/// A full connection counts as stuck when nothing moved for three times its usual latency,
/// at least this long ...
const STUCK_AFTER_MIN: Duration = Duration::from_secs(1);
/// ... and at most this long (a connection that answers slowly is still waited for; one whose
/// requests hang is not allowed to hold messages longer than this).
const STUCK_AFTER_MAX: Duration = Duration::from_secs(5);

/// How often a job waiting for a slot looks whether its connection got stuck.
const STUCK_CHECK: Duration = Duration::from_millis(250);

impl ConnectionSlots {
    fn new(concurrency: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(concurrency)),
            moved_at: std::sync::atomic::AtomicU64::new(0),
            latency_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn now_ms() -> u64 {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_millis() as u64
    }

    fn moved(&self) {
        self.moved_at
            .store(Self::now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    /// A request finished after `latency_ms`.
    fn finished(&self, latency_ms: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.moved();
        let old = self.latency_ms.load(Relaxed);
        let new = if old == 0 {
            latency_ms.max(1)
        } else {
            (old * 7 + latency_ms) / 8
        };
        self.latency_ms.store(new.max(1), Relaxed);
    }

    /// All slots taken and nothing moved for three times the usual latency (1 to 5 s).
    fn stuck(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let since = Self::now_ms().saturating_sub(self.moved_at.load(Relaxed));
        let limit = (3 * self.latency_ms.load(Relaxed)).clamp(
            STUCK_AFTER_MIN.as_millis() as u64,
            STUCK_AFTER_MAX.as_millis() as u64,
        );
        self.semaphore.available_permits() == 0 && since >= limit
    }
}

/// Counts a request in `herald_deliveries_in_flight` for as long as it lives (also when its
/// future is dropped mid-request).
struct InFlight;

impl InFlight {
    fn new() -> Self {
        metrics::gauge!("herald_deliveries_in_flight").increment(1.0);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("herald_deliveries_in_flight").decrement(1.0);
    }
}

/// An outcome's name in metrics.
fn outcome_word(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Delivered => "delivered",
        Outcome::Retry { .. } => "retry",
        Outcome::DeadLetter { .. } => "dead",
    }
}

/// Waits for the batch being written (the caller only polls this while there is one).
/// A batch of finished jobs being written, giving the batch back with the result.
type Settling<'a> = BoxFuture<'a, (Result<(), String>, Vec<Done<'a>>)>;

/// Waits for the batch being written (the caller only polls this while there is one).
async fn poll_settling<'a>(
    settling: &mut Option<Settling<'a>>,
) -> (Result<(), String>, Vec<Done<'a>>) {
    match settling {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_or_never(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
