//! One job's turn: looked up, admitted, sent and its outcome decided
//! ([`Deliverer::run_job`]). A message's jobs take their turns together in a `flight`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use herald_shared::model::{Connection, JobGroup, JobItem};
use herald_shared::opwebhooks;
use herald_shared::store::health::BreakerChange;
use herald_shared::store::ordering::{new_copy, Take, BACKLOG};
use herald_shared::store::{StoreError, WorkspaceConfig};

use crate::admit::{deferral_delay, Admission, DeferReason};
use crate::breaker::Transition;
use crate::outcome::{
    decide_outcome, refused_by_breaker, status_class, Outcome, Verdict, BREAKER_OPEN_CLASS,
};
use crate::settle::{Done, Next};
use crate::state::Deliverer;

/// How much longer than its admission wait and request timeout an ordered job holds its key.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// Where one job of a flight stands, shared between the flight and the job's turn.
#[derive(Default)]
pub struct JobState {
    /// Cancelled when the flight lets go of its message: a job still waiting for admission
    /// stops waiting and goes round the ladder.
    pub give_up: CancellationToken,
    /// Set once its request is about to be sent: from then on it records an attempt.
    pub sending: AtomicBool,
    /// The request's timeout in ms, once it is being sent: its stand-in waits a little longer.
    pub timeout_ms: AtomicU64,
    /// An ordered job's copy token that holds its key, which settling moves on (it took its
    /// key's lease, or its connection is gone and every job of the key is dead-lettered in
    /// turn).
    pub holds: std::sync::Mutex<Option<String>>,
}

impl JobState {
    fn hold(&self, copy: String) {
        if let Ok(mut h) = self.holds.lock() {
            *h = Some(copy);
        }
    }
}

impl Deliverer {
    /// Makes one attempt of one job (or decides it cannot be made) and what follows from it.
    pub async fn run_job(&self, group: Arc<JobGroup>, mut job: JobItem, state: &JobState) -> Done {
        let span = tracing::info_span!(
            "deliver",
            event_id = %group.event.uuid,
            connection_id = %job.connection_id,
            attempt = job.attempts.len() + 1
        );
        let before = job.attempts.len();
        let next = self.turn(&group, &mut job, state).instrument(span).await;
        let attempted = job.attempts.len() > before;
        let mut done = Done::new(group, job, next);
        done.attempted = attempted;
        done.holds = state.holds.lock().ok().and_then(|mut h| h.take());
        done
    }

    /// One job's turn: look up, admit, send, decide. The attempt made (if any) is appended to
    /// `job`; returns what follows.
    async fn turn(&self, group: &JobGroup, job: &mut JobItem, state: &JobState) -> Next {
        if job.stand_in {
            let recorded = Box::pin(self.settler.store.attempts_recorded(
                &group.workspace_id,
                &group.event.uuid,
                &job.connection_id,
            ))
            .await;
            match recorded {
                Ok(Some(n)) if n > job.attempts.len() => {
                    // The attempt it stood in for was recorded: nothing to do.
                    metrics::counter!("herald_stand_ins_total", "outcome" => "superseded")
                        .increment(1);
                    return Next::Superseded;
                }
                Ok(_) => {
                    // The deliverer that ran it died first: this is the job now.
                    metrics::counter!("herald_stand_ins_total", "outcome" => "sent").increment(1);
                    job.stand_in = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the history; deferring a stand-in");
                    return self.defer(job, DeferReason::ConfigUnavailable);
                }
            }
        }
        if job.order.as_ref().is_some_and(|o| o.overflow) {
            metrics::counter!("herald_ordered_overflows_total").increment(1);
            return Next::Attempted(Outcome::DeadLetter {
                reason: format!("the ordered backlog of its key was full ({BACKLOG} jobs waiting)"),
            });
        }
        let conn = match Box::pin(self.connection(group, job)).await {
            Ok(Lookup::Found(conn)) => conn,
            Ok(Lookup::Stop(reason)) => {
                tracing::warn!(reason, "dead-lettering");
                // Its key's next job comes once this one is final, and goes the same way.
                if let Some(order) = &job.order {
                    state.hold(order.copy.clone());
                }
                return Next::Attempted(Outcome::DeadLetter {
                    reason: reason.to_string(),
                });
            }
            Err(e) => {
                // Redis away and nothing cached: try again shortly, through the broker.
                tracing::warn!(error = %e, "cannot read the configuration; deferring");
                return self.defer(job, DeferReason::ConfigUnavailable);
            }
        };

        if let Some(order) = job.order.as_mut() {
            // Only the head of its key goes out, one copy at a time, for as long as its
            // admission and request can take (twice the timeout: an OAuth2 token fetched
            // first, or again after a 401).
            let lease = self.settings.connection_wait
                + 2 * Duration::from_millis(conn.timeout_ms)
                + LEASE_MARGIN;
            let taken = Box::pin(self.settler.store.take_ordered(
                &group.workspace_id,
                &conn.id,
                &order.key,
                &group.event.uuid,
                &order.copy,
                herald_shared::now_ms(),
                lease,
            ))
            .await;
            match taken {
                Ok(Take::Send) => {
                    // What follows this attempt (a retry, a deferral) is a new copy: the
                    // sequence names it when this one lets go of the key.
                    let held = std::mem::replace(&mut order.copy, new_copy());
                    state.hold(held);
                }
                Ok(Take::Busy) => return self.defer(job, DeferReason::OrderBusy),
                Ok(Take::Stale) => {
                    metrics::counter!("herald_ordered_stale_total").increment(1);
                    return Next::Superseded;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take an ordered job's turn; deferring");
                    return self.defer(job, DeferReason::ConfigUnavailable);
                }
            }
        }

        let (admission, transition) = self
            .gate
            .admit(&conn, job.replay, &state.give_up, Instant::now)
            .await;
        if let Some(t) = transition {
            Box::pin(self.breaker_changed(&group.workspace_id, &conn.id, t)).await;
        }
        let pass = match admission {
            Admission::Go(pass) => {
                // A replay passes the breaker once; its retries wait like any other.
                job.replay = false;
                pass
            }
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

        state.timeout_ms.store(conn.timeout_ms, Ordering::SeqCst);
        state.sending.store(true, Ordering::SeqCst);
        let timeout = Duration::from_millis(conn.timeout_ms);
        let (attempt, verdict) = {
            let _in_flight = InFlight::new();
            // Each await of a turn but admission is boxed: a job's future is allocated when its
            // message arrives, and the request's (the HTTP client's, a token's) and the Redis
            // calls' made it 6.6 KiB; a job waiting for admission now holds 1.5 KiB.
            Box::pin(self.dispatcher.send(&conn, &group.event, timeout)).await
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
            Box::pin(self.breaker_changed(&group.workspace_id, &conn.id, t)).await;
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

    /// The job's connection, from the cache. A connection that seems gone or disabled is read
    /// again from Redis before the job is given up: the cache may be a moment behind a change
    /// (a connection just created, or enabled again).
    async fn connection(&self, group: &JobGroup, job: &JobItem) -> Result<Lookup, StoreError> {
        let cached = self.cache.workspace(&group.workspace_id).await?;
        if let Lookup::Found(conn) = Lookup::of(&cached, &job.connection_id) {
            return Ok(Lookup::Found(conn));
        }
        let fresh = self.cache.reload(&group.workspace_id).await?;
        Ok(Lookup::of(&fresh, &job.connection_id))
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
        let notice = match t.to.as_str() {
            "open" => opwebhooks::BREAKER_OPENED,
            "closed" => opwebhooks::BREAKER_CLOSED,
            _ => return,
        };
        let extra = serde_json::json!({
            "consecutive_failures": t.failures,
            "open_for_s": t.open_for.map(|d| d.as_secs()),
        });
        if let Err(e) = self
            .settler
            .ops
            .notify_once_a_minute(notice, workspace_id, connection_id, extra)
            .await
        {
            tracing::warn!(error = %e, "cannot send the breaker's operational webhook");
        }
    }
}

/// A job's connection as the configuration has it.
enum Lookup {
    /// Enabled: send.
    Found(Arc<Connection>),
    /// Gone or disabled: the job stops here, with this reason.
    Stop(&'static str),
}

impl Lookup {
    fn of(config: &WorkspaceConfig, connection_id: &str) -> Self {
        match config.connections.get(connection_id) {
            None => Lookup::Stop("the connection no longer exists"),
            Some(c) if !c.enabled => Lookup::Stop("the connection is disabled"),
            Some(c) => Lookup::Found(c.clone()),
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
