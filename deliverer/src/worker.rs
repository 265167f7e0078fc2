//! A jobs message's path through the deliverer: each job is looked up, admitted, sent and its
//! outcome decided ([`Deliverer::run_job`]); finished jobs are settled in small batches while
//! slower ones still run ([`Deliverer::handle`]), and the message is acknowledged only once
//! every job is settled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use herald_shared::amqp::{Handled, Message, Rejection};
use herald_shared::config::DelivererSettings;
use herald_shared::model::{JobGroup, JobItem};
use herald_shared::store::health::BreakerChange;
use herald_shared::store::ConfigCache;

use crate::admit::{deferral_delay, Admission, DeferReason, Gate};
use crate::breaker::Transition;
use crate::dispatch::Dispatcher;
use crate::outcome::{
    decide_outcome, refused_by_breaker, status_class, Outcome, Verdict, BREAKER_OPEN_CLASS,
};
use crate::settle::{Done, Next, SettleError, Settler};

/// How long finished jobs of a message wait for others before their outcomes are written, so
/// the history shows each attempt within a second while writes stay batched.
const SETTLE_EVERY: Duration = Duration::from_millis(200);

/// How long a batch whose settling failed waits before it is written again.
const SETTLE_AGAIN_AFTER: Duration = Duration::from_millis(500);

/// Everything a deliverer's jobs go through.
pub struct Deliverer {
    /// Settings.
    pub settings: DelivererSettings,
    /// Workspaces and connections, cached.
    pub cache: Arc<ConfigCache>,
    /// Sends requests.
    pub dispatcher: Dispatcher,
    /// Admission: slots, rate limits, breakers.
    pub gate: Gate,
    /// Writes outcomes and publishes what follows them.
    pub settler: Settler,
    /// Fires on shutdown: jobs not yet started are handed back instead of sent.
    pub shutdown: CancellationToken,
    /// This process, as named in the breaker history (host and pid).
    pub name: String,
}

/// A batch of finished jobs being written, giving the batch back with the result.
type Settling<'a> = BoxFuture<'a, (Result<(), SettleError>, Vec<Done<'a>>)>;

impl Deliverer {
    /// Runs every job of a jobs message and settles them; says what to do with the message.
    pub async fn handle(&self, message: &Message) -> Handled {
        let groups: Vec<JobGroup> = match serde_json::from_slice(&message.data) {
            Ok(g) => g,
            Err(e) => {
                return Handled::Quarantine(Rejection::new(
                    "invalid_job",
                    format!("not a jobs message: {e}"),
                ))
            }
        };
        if groups.iter().all(|g| g.jobs.is_empty()) {
            return Handled::Quarantine(Rejection::new(
                "invalid_job",
                "a jobs message with no jobs",
            ));
        }
        // Jobs run concurrently; finished ones are settled in small batches while the rest are
        // still running, so one slow connection delays neither the history nor the retries of
        // the others in the same message.
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
        while !all_ran || settling.is_some() {
            tokio::select! {
                next = running.next(), if !all_ran => match next {
                    Some(done) => {
                        attempted_any |= done.next != Next::HandBack;
                        ready.push(done);
                        settle_at.get_or_insert_with(|| tokio::time::Instant::now() + SETTLE_EVERY);
                    }
                    None => all_ran = true,
                },
                (written, batch) = poll_settling(&mut settling), if settling.is_some() => {
                    settling = match written {
                        Ok(()) => None,
                        // Never requeue a message part of which is settled: its jobs would be
                        // sent again and their retry chains forked. Write the rest again.
                        Err(e) => Some(self.settle_again(batch, e)),
                    };
                }
                _ = sleep_until_or_never(settle_at), if settling.is_none() && !all_ran => {
                    let batch = std::mem::take(&mut ready);
                    settle_at = None;
                    settling = Some(self.settle_later(batch, Duration::ZERO));
                }
            }
        }
        if !attempted_any {
            // Shutting down before any of it started: the whole message goes back as it was.
            return Handled::Release;
        }
        let mut batch = ready;
        let mut written = self.settler.settle(&batch).await;
        while let Err(e) = written {
            (written, batch) = self.settle_again(batch, e).await;
        }
        Handled::Ack
    }

    /// Writes `batch` after `pause`.
    fn settle_later<'a>(&'a self, batch: Vec<Done<'a>>, pause: Duration) -> Settling<'a> {
        Box::pin(async move {
            tokio::time::sleep(pause).await;
            let written = self.settler.settle(&batch).await;
            (written, batch)
        })
    }

    /// Writes a batch again after a failure (pausing first); what was already published is not
    /// published twice.
    fn settle_again<'a>(&'a self, batch: Vec<Done<'a>>, error: SettleError) -> Settling<'a> {
        tracing::warn!(%error, "settling failed; trying again");
        metrics::counter!("herald_settle_failures_total").increment(1);
        self.settle_later(batch, SETTLE_AGAIN_AFTER)
    }

    /// Makes one attempt of one job (or decides it cannot be made) and what follows from it.
    async fn run_job<'a>(&self, group: &'a JobGroup, job: &JobItem) -> Done<'a> {
        let span = tracing::info_span!(
            "deliver",
            event_id = %group.event.uuid,
            connection_id = %job.connection_id,
            attempt = job.attempts.len() + 1
        );
        let mut job = job.clone();
        let next = self.turn(group, &mut job).instrument(span).await;
        Done::new(group, job, next)
    }

    /// One job's turn: look up, admit, send, decide. The attempt made (if any) is appended to
    /// `job`; returns what follows.
    async fn turn(&self, group: &JobGroup, job: &mut JobItem) -> Next {
        let config = match self.cache.workspace(&group.workspace_id).await {
            Ok(c) => c,
            Err(e) => {
                // Redis away and nothing cached: try again shortly, through the broker.
                tracing::warn!(error = %e, "cannot read the configuration; deferring");
                return self.defer(job, DeferReason::ConfigUnavailable);
            }
        };
        let stop = |reason: &str| {
            Next::Attempted(Outcome::DeadLetter {
                reason: reason.to_string(),
            })
        };
        let Some(conn) = config.connections.get(&job.connection_id).cloned() else {
            tracing::warn!("connection no longer exists; dead-lettering");
            return stop("the connection no longer exists");
        };
        if !conn.enabled {
            return stop("the connection is disabled");
        }

        let (admission, transition) = self.gate.admit(&conn, Instant::now).await;
        if let Some(t) = transition {
            self.breaker_changed(&group.workspace_id, &conn.id, t).await;
        }
        let pass = match admission {
            Admission::Go(pass) => pass,
            Admission::Defer(reason) => return self.defer(job, reason),
            Admission::HandBack => return Next::HandBack,
            Admission::Refused { retry_in } => {
                let (attempt, verdict) =
                    refused_by_breaker(&conn.url, retry_in, herald_shared::now_ms());
                job.attempts.push(attempt);
                let outcome = self.decide(&verdict, job);
                metrics::counter!("herald_deliveries_total", "outcome" => outcome.word(), "status_class" => BREAKER_OPEN_CLASS).increment(1);
                return Next::Attempted(outcome);
            }
        };

        let timeout = Duration::from_millis(conn.timeout_ms);
        let (attempt, verdict) = {
            let _in_flight = InFlight::new();
            self.dispatcher.send(&conn, &group.event, timeout).await
        };
        pass.finished(attempt.latency_ms);
        job.deferrals = 0;
        let failed = matches!(verdict, Verdict::Failed { .. });
        let change = self
            .gate
            .breakers
            .record(&conn.id, !failed, pass.probe, Instant::now());
        drop(pass);
        if let Some(t) = change {
            self.breaker_changed(&group.workspace_id, &conn.id, t).await;
        }

        let class = status_class(attempt.status_code);
        metrics::histogram!("herald_delivery_attempt_duration_seconds", "status_class" => class)
            .record(attempt.latency_ms as f64 / 1000.0);
        let (status, latency_ms, error) = (
            attempt.status_code,
            attempt.latency_ms,
            attempt.error.clone(),
        );
        job.attempts.push(attempt);
        let outcome = self.decide(&verdict, job);
        metrics::counter!("herald_deliveries_total", "outcome" => outcome.word(), "status_class" => class).increment(1);
        match (&verdict, &outcome) {
            (Verdict::Success, _) => tracing::debug!(status, latency_ms, "delivered"),
            (_, Outcome::Retry { after }) => tracing::info!(
                error = error.as_deref().unwrap_or(""),
                retry_in_s = after.as_secs(),
                "attempt failed; retry scheduled"
            ),
            (_, _) => tracing::warn!(
                error = error.as_deref().unwrap_or(""),
                "attempt failed; dead-lettering"
            ),
        }
        Next::Attempted(outcome)
    }

    fn decide(&self, verdict: &Verdict, job: &JobItem) -> Outcome {
        decide_outcome(
            verdict,
            job.attempts_this_round() as u32,
            &self.settings.common.retry_schedule,
            &mut rand::thread_rng(),
        )
    }

    /// A job whose connection had no room for it: back through the delay ladder, waiting a
    /// little longer each time.
    fn defer(&self, job: &mut JobItem, why: DeferReason) -> Next {
        let after = deferral_delay(job.deferrals, &mut rand::thread_rng());
        job.deferrals = job.deferrals.saturating_add(1);
        metrics::counter!("herald_jobs_deferred_total", "reason" => why.as_str()).increment(1);
        tracing::debug!(
            reason = why.as_str(),
            after_s = after.as_secs(),
            "connection has no room; deferring"
        );
        Next::Deferred { after }
    }

    /// A breaker changed state: metrics, a log line and the connection's breaker history.
    async fn breaker_changed(&self, workspace_id: &str, connection_id: &str, t: Transition) {
        let state = t.to.as_str();
        metrics::counter!("herald_circuit_breaker_transitions_total", "state" => state)
            .increment(1);
        metrics::gauge!("herald_circuit_breakers_open").set(self.gate.breakers.open() as f64);
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
            .settler
            .store
            .record_breaker_change(workspace_id, connection_id, &change)
            .await
        {
            tracing::warn!(error = %e, "cannot record the breaker change in the history");
        }
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

/// Waits for the batch being written (the caller only polls this while there is one).
async fn poll_settling<'a>(
    settling: &mut Option<Settling<'a>>,
) -> (Result<(), SettleError>, Vec<Done<'a>>) {
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
