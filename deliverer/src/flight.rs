//! A jobs message's jobs in flight. They run concurrently; finished ones are settled in small
//! batches while the rest still run, so one slow connection delays neither the history nor the
//! retries of the others. A message whose jobs still run after [`DETACH_AFTER`] stops holding
//! its prefetch slot: each unfinished job gets a stand-in in the delay ladder (sent only if
//! this process dies before recording the attempt), the message is acknowledged, and the jobs
//! finish in the background. So any number of hanging destinations cannot fill the prefetch
//! and starve healthy connections.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{try_join_all, BoxFuture};
use futures::stream::{FuturesUnordered, StreamExt};

use herald_shared::amqp::{Handled, Message, PublishError, Rejection};
use herald_shared::model::{JobGroup, JobItem};

use crate::settle::{Done, Next, SettleError};
use crate::state::Deliverer;
use crate::worker::JobState;

/// How long finished jobs of a message wait for others before their outcomes are written, so
/// the history shows each attempt within a second while writes stay batched.
const SETTLE_EVERY: Duration = Duration::from_millis(200);

/// How long a batch whose settling failed waits before it is written again.
const SETTLE_AGAIN_AFTER: Duration = Duration::from_millis(500);

/// A message whose jobs still run this long lets go of its prefetch slot.
pub const DETACH_AFTER: Duration = Duration::from_secs(2);

/// A stand-in comes back this long after its request's timeout: by then the request it stands
/// in for has ended and, unless its deliverer died, been recorded.
pub const STAND_IN_MARGIN: Duration = Duration::from_secs(5);

/// A batch of finished jobs being written, giving the batch back with the result.
type Settling = BoxFuture<'static, (Result<(), SettleError>, Vec<Done>)>;

/// How often a flight letting go looks whether its waiting jobs have stepped aside.
const STEP_ASIDE_CHECK: Duration = Duration::from_millis(20);

/// The jobs of one message, from start to settled.
pub struct Flight {
    deliverer: Arc<Deliverer>,
    running: FuturesUnordered<BoxFuture<'static, (usize, Done)>>,
    /// Jobs not finished yet, by their place in the message (for their stand-ins).
    unfinished: HashMap<usize, (Arc<JobGroup>, JobItem, Arc<JobState>)>,
    ready: Vec<Done>,
    settle_at: Option<tokio::time::Instant>,
    settling: Option<Settling>,
    all_ran: bool,
    attempted_any: bool,
}

impl Flight {
    /// Starts every job of `groups`.
    pub fn start(deliverer: Arc<Deliverer>, groups: Vec<JobGroup>) -> Self {
        let running = FuturesUnordered::new();
        let mut unfinished = HashMap::new();
        for group in groups.into_iter().map(Arc::new) {
            for job in &group.jobs {
                let index = unfinished.len();
                let state = Arc::new(JobState::default());
                unfinished.insert(index, (group.clone(), job.clone(), state.clone()));
                let (d, g, j) = (deliverer.clone(), group.clone(), job.clone());
                let run: BoxFuture<'static, (usize, Done)> =
                    Box::pin(async move { (index, d.run_job(g, j, &state).await) });
                running.push(run);
            }
        }
        Self {
            deliverer,
            running,
            unfinished,
            ready: Vec::new(),
            settle_at: None,
            settling: None,
            all_ran: false,
            attempted_any: false,
        }
    }

    /// Runs jobs and settles finished ones until all are done (true) or `until` (false).
    pub async fn drive(&mut self, until: Option<tokio::time::Instant>) -> bool {
        let deadline = sleep_until_or_never(until);
        tokio::pin!(deadline);
        while !self.all_ran || self.settling.is_some() {
            tokio::select! {
                next = self.running.next(), if !self.all_ran => match next {
                    Some((index, done)) => {
                        self.unfinished.remove(&index);
                        self.attempted_any |= done.next != Next::HandBack;
                        self.ready.push(done);
                        self.settle_at
                            .get_or_insert_with(|| tokio::time::Instant::now() + SETTLE_EVERY);
                    }
                    None => self.all_ran = true,
                },
                (written, batch) = poll_settling(&mut self.settling), if self.settling.is_some() => {
                    self.settling = match written {
                        Ok(()) => None,
                        // Never requeue a message part of which is settled: its jobs would be
                        // sent again and their retry chains forked. Write the rest again.
                        Err(e) => Some(settle_again(self.deliverer.clone(), batch, e)),
                    };
                }
                _ = sleep_until_or_never(self.settle_at), if self.settling.is_none() && !self.all_ran => {
                    let batch = std::mem::take(&mut self.ready);
                    self.settle_at = None;
                    self.settling = Some(settle_later(self.deliverer.clone(), batch, Duration::ZERO));
                }
                _ = &mut deadline => return false,
            }
        }
        true
    }

    /// True when no job was started (the process is shutting down): the message can go back
    /// as it was.
    pub fn untouched(&self) -> bool {
        !self.attempted_any && self.all_ran
    }

    /// Ordered jobs of an untouched message let go of the keys they took (see
    /// [`crate::settle::Settler::let_go_of_keys`]).
    pub async fn let_go_of_keys(&mut self) {
        let ready = std::mem::take(&mut self.ready);
        let deliverer = self.deliverer.clone();
        deliverer.settler.let_go_of_keys(&ready).await;
    }

    /// Settles what is left, holding on until it is written.
    pub async fn finish(mut self) {
        let mut batch = std::mem::take(&mut self.ready);
        let mut written = self.deliverer.settler.settle(&batch).await;
        while let Err(e) = written {
            (written, batch) = settle_again(self.deliverer.clone(), batch, e).await;
        }
    }

    /// Lets go of the message: jobs still waiting for admission step aside (they go round the
    /// ladder, as on a busy connection), and every job whose request is out gets a stand-in
    /// confirmed by the broker. Returns how many stand-ins were published; the flight is then
    /// free to finish in the background.
    pub async fn let_go(&mut self) -> Result<usize, PublishError> {
        self.unfinished
            .values()
            .filter(|(_, _, s)| !s.sending.load(Ordering::SeqCst))
            .for_each(|(_, _, s)| s.give_up.cancel());
        while !self
            .unfinished
            .values()
            .all(|(_, _, s)| s.sending.load(Ordering::SeqCst))
        {
            if self
                .drive(Some(tokio::time::Instant::now() + STEP_ASIDE_CHECK))
                .await
            {
                return Ok(0);
            }
        }
        self.publish_stand_ins().await
    }

    /// Publishes a stand-in for every unfinished job, confirmed by the broker.
    async fn publish_stand_ins(&mut self) -> Result<usize, PublishError> {
        let publisher = self.deliverer.settler.publisher.clone();
        let stand_ins: Vec<(JobGroup, Duration)> = self
            .unfinished
            .values()
            .map(|(group, job, state)| {
                let timeout = Duration::from_millis(state.timeout_ms.load(Ordering::SeqCst));
                let stand_in = JobGroup {
                    workspace_id: group.workspace_id.clone(),
                    event: group.event.clone(),
                    jobs: vec![JobItem {
                        stand_in: true,
                        ..job.clone()
                    }],
                };
                (stand_in, timeout + STAND_IN_MARGIN)
            })
            .collect();
        try_join_all(
            stand_ins
                .iter()
                .map(|(group, after)| publisher.retry_after(group, *after)),
        )
        .await?;
        Ok(stand_ins.len())
    }
}

/// Writes `batch` after `pause`.
fn settle_later(deliverer: Arc<Deliverer>, batch: Vec<Done>, pause: Duration) -> Settling {
    Box::pin(async move {
        tokio::time::sleep(pause).await;
        let written = deliverer.settler.settle(&batch).await;
        (written, batch)
    })
}

/// Writes a batch again after a failure (pausing first); what was already published is not
/// published twice.
fn settle_again(deliverer: Arc<Deliverer>, batch: Vec<Done>, error: SettleError) -> Settling {
    tracing::warn!(%error, "settling failed; trying again");
    metrics::counter!("herald_settle_failures_total").increment(1);
    settle_later(deliverer, batch, SETTLE_AGAIN_AFTER)
}

/// Waits for the batch being written (the caller only polls this while there is one).
async fn poll_settling(settling: &mut Option<Settling>) -> (Result<(), SettleError>, Vec<Done>) {
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

impl Deliverer {
    /// Runs every job of a jobs message and settles them; says what to do with the message.
    /// Every await but the first drive is boxed: a prefetched message's task is as large as
    /// its largest state, and all of them wait in that drive at once.
    pub async fn handle(self: &Arc<Self>, message: &Message) -> Handled {
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
        let mut flight = Flight::start(self.clone(), groups);
        if !flight
            .drive(Some(tokio::time::Instant::now() + DETACH_AFTER))
            .await
        {
            // Some jobs still run (a slow or hanging destination): they must not hold this
            // message's prefetch slot. Once each has a stand-in confirmed by the broker, the
            // message is acknowledged and they finish in the background.
            match Box::pin(flight.let_go()).await {
                Ok(n) => {
                    metrics::counter!("herald_jobs_detached_total").increment(n as u64);
                    self.detached.spawn(async move {
                        flight.drive(None).await;
                        Box::pin(flight.finish()).await;
                    });
                    return Handled::Ack;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot publish stand-ins; holding the message");
                    flight.drive(None).await;
                }
            }
        }
        if flight.untouched() {
            // Shutting down before any of it started: the whole message goes back as it was.
            Box::pin(flight.let_go_of_keys()).await;
            return Handled::Release;
        }
        Box::pin(flight.finish()).await;
        Handled::Ack
    }
}
