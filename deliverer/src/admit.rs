//! Admission: whether a job may be sent now. A job needs a slot of its connection's
//! concurrency, room under the connection's rate limit, a slot of this deliverer's concurrency
//! and its connection's circuit breaker to let it through, all within `HERALD_CONNECTION_WAIT`.
//! What it gets is a typed [`Admission`]; the caller records and publishes. Deferral delays
//! and the breaker's clock come from the caller, so both are testable.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use herald_shared::model::Connection;
use herald_shared::ratelimit::{Decision as RateDecision, RateLimiter};

use crate::breaker::{Admit, Breakers, Call, Transition};

/// Why a job goes back through the delay ladder without an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeferReason {
    /// The workspace's configuration could not be read (Redis away, nothing cached).
    ConfigUnavailable,
    /// Every slot of the connection busy past the wait, or the connection stuck.
    ConnectionBusy,
    /// The connection's rate limit would make it wait past the wait.
    RateLimited,
    /// Every slot of this deliverer busy past the wait.
    DelivererBusy,
    /// An ordered job whose other copy is being sent (a redelivery, a stand-in).
    OrderBusy,
}

impl DeferReason {
    /// The reason's word in `herald_jobs_deferred_total{reason}`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeferReason::ConfigUnavailable => "config_unavailable",
            DeferReason::ConnectionBusy => "connection_busy",
            DeferReason::RateLimited => "rate_limited",
            DeferReason::DelivererBusy => "deliverer_busy",
            DeferReason::OrderBusy => "order_busy",
        }
    }
}

/// What a job may do now.
pub enum Admission {
    /// Send it, holding these slots until the request is done.
    Go(Pass),
    /// Back through the delay ladder, no attempt counted.
    Defer(DeferReason),
    /// The process is shutting down: back to the jobs queue untouched.
    HandBack,
    /// The circuit breaker refused it: a failed attempt without a request, tried again after
    /// at least this long.
    Refused {
        /// Time until the breaker lets a probe through.
        retry_in: Duration,
    },
}

/// The slots an admitted job holds while its request runs.
pub struct Pass {
    /// This request decides whether the breaker closes again.
    pub probe: bool,
    slots: Arc<ConnectionSlots>,
    _connection: OwnedSemaphorePermit,
    _deliverer: OwnedSemaphorePermit,
}

impl Pass {
    /// The request finished after `latency_ms`: the connection is moving.
    pub fn finished(&self, latency_ms: u64) {
        self.slots.finished(latency_ms);
    }
}

/// How long a deferred job waits: 1 s, 2 s ... 32 s by how often it was deferred, +-20 %.
pub fn deferral_delay(deferrals: u32, rng: &mut impl Rng) -> Duration {
    let base = 1u64 << deferrals.min(5);
    let jitter = rng.gen_range(0.8..1.2);
    Duration::from_secs_f64((base as f64 * jitter).max(1.0))
}

/// Everything admission weighs, shared by every job of this deliverer.
pub struct Gate {
    in_flight: Arc<Semaphore>,
    per_connection: Mutex<HashMap<String, Arc<ConnectionSlots>>>,
    connection_concurrency: usize,
    connection_wait: Duration,
    limiter: RateLimiter,
    /// The per-connection circuit breakers.
    pub breakers: Breakers,
    shutdown: CancellationToken,
}

/// How often a job waiting for a slot looks whether its connection got stuck.
const STUCK_CHECK: Duration = Duration::from_millis(250);

impl Gate {
    /// A gate of `concurrency` requests in all and `connection_concurrency` per connection,
    /// waiting at most `connection_wait`; `shutdown` hands waiting jobs back.
    pub fn new(
        concurrency: usize,
        connection_concurrency: usize,
        connection_wait: Duration,
        limiter: RateLimiter,
        breakers: Breakers,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(concurrency)),
            per_connection: Mutex::new(HashMap::new()),
            connection_concurrency,
            connection_wait,
            limiter,
            breakers,
            shutdown,
        }
    }

    fn connection_slots(&self, connection_id: &str) -> Arc<ConnectionSlots> {
        let mut map = self
            .per_connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.entry(connection_id.to_string())
            .or_insert_with(|| Arc::new(ConnectionSlots::new(self.connection_concurrency)))
            .clone()
    }

    /// Admits a job for `conn` or says why not; a `replay` passes an open breaker as its probe.
    /// `now` is the breaker's clock. A breaker change it caused is returned for the caller to
    /// record.
    pub async fn admit(
        &self,
        conn: &Connection,
        replay: bool,
        give_up: &CancellationToken,
        now: impl Fn() -> Instant,
    ) -> (Admission, Option<Transition>) {
        tokio::select! {
            biased;
            // The job's message lets go of its waiting jobs (see `flight`): round the ladder.
            _ = give_up.cancelled() => (Admission::Defer(DeferReason::ConnectionBusy), None),
            admitted = self.admit_waiting(conn, replay, now) => admitted,
        }
    }

    async fn admit_waiting(
        &self,
        conn: &Connection,
        replay: bool,
        now: impl Fn() -> Instant,
    ) -> (Admission, Option<Transition>) {
        let deadline = tokio::time::Instant::now() + self.connection_wait;
        let slots = self.connection_slots(&conn.id);
        let connection = match self.connection_slot(&slots, deadline).await {
            Ok(p) => p,
            Err(refusal) => return (refusal, None),
        };
        if let Err(refusal) = self.rate_limit(conn, deadline).await {
            return (refusal, None);
        }
        let deliverer = match self.deliverer_slot(deadline).await {
            Ok(p) => p,
            Err(refusal) => return (refusal, None),
        };
        if self.shutdown.is_cancelled() {
            return (Admission::HandBack, None);
        }
        // The circuit breaker: a connection failing again and again is not called until a
        // probe succeeds; its jobs fail fast and wait in the retry ladder instead.
        let call = Call {
            settings: conn.delivery_fingerprint(),
            replay,
        };
        let (admit, transition) = self.breakers.admit_call(&conn.id, call, now());
        let admission = match admit {
            Admit::Send | Admit::Probe => Admission::Go(Pass {
                probe: admit == Admit::Probe,
                slots,
                _connection: connection,
                _deliverer: deliverer,
            }),
            Admit::Reject { retry_in } => Admission::Refused { retry_in },
        };
        (admission, transition)
    }

    /// A slot of the connection's concurrency, waited for at most until `deadline`: a
    /// connection that is slow or hanging keeps its own jobs waiting in the broker, not in this
    /// process's prefetch, where they would hold up other connections' jobs.
    async fn connection_slot(
        &self,
        slots: &ConnectionSlots,
        deadline: tokio::time::Instant,
    ) -> Result<OwnedSemaphorePermit, Admission> {
        let busy = Admission::Defer(DeferReason::ConnectionBusy);
        let free = slots.semaphore.clone().try_acquire_owned();
        if free.is_err() && slots.stuck() {
            // Every slot busy and none moved for a while: a hanging connection. Waiting would
            // only hold this message; go round the ladder at once.
            return Err(busy);
        }
        let slot = match free {
            Ok(p) => Ok(p),
            Err(_) => {
                // Wait in line (the semaphore is fair), looking every quarter second whether the
                // connection got stuck meanwhile.
                let acquire = slots.semaphore.clone().acquire_owned();
                tokio::pin!(acquire);
                loop {
                    tokio::select! {
                        biased;
                        _ = self.shutdown.cancelled() => return Err(Admission::HandBack),
                        p = &mut acquire => break p,
                        _ = tokio::time::sleep(STUCK_CHECK) => {
                            if slots.stuck() || tokio::time::Instant::now() >= deadline {
                                return Err(busy);
                            }
                        }
                    }
                }
            }
        };
        // The semaphores are never closed; were one, the job goes back untouched.
        let permit = slot.map_err(|_| Admission::HandBack)?;
        slots.moved();
        Ok(permit)
    }

    /// The connection's rate limit, shared by every deliverer through Redis. A wait is not an
    /// attempt; one longer than what is left until `deadline` is a deferral.
    async fn rate_limit(
        &self,
        conn: &Connection,
        deadline: tokio::time::Instant,
    ) -> Result<(), Admission> {
        let Some(per_second) = conn.rate_limit_per_s else {
            return Ok(());
        };
        let key = format!("conn:{}", conn.id);
        let mut limited = false;
        loop {
            match self.limiter.check(&key, per_second, 1).await {
                Ok(RateDecision::Allowed) => return Ok(()),
                Ok(RateDecision::Limited { retry_after }) => {
                    if !limited {
                        limited = true;
                        metrics::counter!("herald_rate_limited_total", "scope" => "delivery")
                            .increment(1);
                    }
                    if tokio::time::Instant::now() + retry_after > deadline {
                        return Err(Admission::Defer(DeferReason::RateLimited));
                    }
                    tokio::select! {
                        biased;
                        _ = self.shutdown.cancelled() => return Err(Admission::HandBack),
                        _ = tokio::time::sleep(retry_after.max(Duration::from_millis(1))) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "rate limiter unavailable; going ahead unlimited");
                    metrics::counter!("herald_rate_limiter_errors_total", "scope" => "delivery")
                        .increment(1);
                    return Ok(());
                }
            }
        }
    }

    /// A slot of this deliverer's concurrency, under the same deadline.
    async fn deliverer_slot(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<OwnedSemaphorePermit, Admission> {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let permit = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => return Err(Admission::HandBack),
            p = tokio::time::timeout(remaining, self.in_flight.clone().acquire_owned()) => p,
        };
        match permit {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(Admission::HandBack),
            Err(_) => Err(Admission::Defer(DeferReason::DelivererBusy)),
        }
    }
}

/// A connection's concurrency slots, when one was last taken or given back, and how long its
/// requests take.
struct ConnectionSlots {
    semaphore: Arc<Semaphore>,
    /// Milliseconds since the process started, at the last slot taken or request finished.
    moved_at: AtomicU64,
    /// Moving average of its requests' latency in ms (0 until one finished).
    latency_ms: AtomicU64,
}

/// A full connection counts as stuck when nothing moved for three times its usual latency,
/// at least this long ...
const STUCK_AFTER_MIN: Duration = Duration::from_secs(1);
/// ... and at most this long (a connection that answers slowly is still waited for; one whose
/// requests hang is not allowed to hold messages longer than this).
const STUCK_AFTER_MAX: Duration = Duration::from_secs(5);

impl ConnectionSlots {
    fn new(concurrency: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(concurrency)),
            moved_at: AtomicU64::new(0),
            latency_ms: AtomicU64::new(0),
        }
    }

    fn now_ms() -> u64 {
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_millis() as u64
    }

    fn moved(&self) {
        self.moved_at.store(Self::now_ms(), Relaxed);
    }

    /// A request finished after `latency_ms`.
    fn finished(&self, latency_ms: u64) {
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
        let since = Self::now_ms().saturating_sub(self.moved_at.load(Relaxed));
        let limit = (3 * self.latency_ms.load(Relaxed)).clamp(
            STUCK_AFTER_MIN.as_millis() as u64,
            STUCK_AFTER_MAX.as_millis() as u64,
        );
        self.semaphore.available_permits() == 0 && since >= limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    #[test]
    fn deferrals_wait_longer_each_time_up_to_about_half_a_minute() {
        let mut rng = StdRng::seed_from_u64(7);
        for (deferrals, base) in [(0u32, 1.0f64), (1, 2.0), (3, 8.0), (5, 32.0), (40, 32.0)] {
            let d = deferral_delay(deferrals, &mut rng).as_secs_f64();
            assert!(
                d >= (base * 0.8).max(1.0) && d <= base * 1.2,
                "{deferrals} deferrals: {d} s"
            );
        }
    }

    #[test]
    fn a_full_connection_that_moved_recently_is_not_stuck() {
        let slots = ConnectionSlots::new(1);
        let _held = slots
            .semaphore
            .clone()
            .try_acquire_owned()
            .expect("a free slot");
        slots.moved();
        assert!(!slots.stuck());
    }
}
