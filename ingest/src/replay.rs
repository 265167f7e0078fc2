//! Bulk replays of dead letters: the walk, page by page from a cursor, with flat memory (one
//! page of dead letters at a time, whatever the count), and the watch that resumes the replays
//! an ingest left unfinished.
//!
//! A replay's progress is written to Redis after every page (`store::replays`), under a lease
//! the running ingest renews. On SIGTERM the walk stops after its page and lets go of the
//! lease; an ingest that dies (SIGKILL) stops renewing it. Either way any ingest's watch takes
//! the replay over within [`RESUME_EVERY`] (plus the lease, after a crash) and goes on from the
//! last page recorded. A page is replayed again if the crash came between its publish and its
//! record: at least once, never zero times.

use std::time::Duration;

use herald_shared::amqp::JobsSource;
use herald_shared::model::{JobGroup, JobItem};
use herald_shared::store::dead_letters::{DeadLetter, DeadLetterFilter};
use herald_shared::store::replays::Replay;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::state::AppState;

/// Dead letters read, matched and replayed per step.
pub const PAGE: usize = 100;
/// How often each ingest looks for replays no ingest runs.
pub const RESUME_EVERY: Duration = Duration::from_secs(10);
/// The most payload bytes in one broker message of replayed jobs.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Who runs replays on this ingest, and when it stops.
#[derive(Clone)]
pub struct Replays {
    /// This ingest's lease token.
    pub owner: String,
    /// Fires at shutdown: walks stop after their page.
    pub shutdown: CancellationToken,
}

impl Replays {
    /// A fresh owner token for this process.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            owner: herald_shared::ids::new_id("ing"),
            shutdown,
        }
    }
}

/// Publishes `dead` again with a fresh round of the schedule, then takes each out of the
/// index (compare-and-set: an outcome recorded meanwhile is kept).
pub async fn replay(state: &AppState, dead: &[&DeadLetter]) -> Result<(), ApiError> {
    let mut start = 0;
    while start < dead.len() {
        // Up to MAX_MESSAGE_BYTES of payloads per message (always at least one).
        let mut end = start + 1;
        let mut bytes = dead[start].event.payload.get().len();
        while end < dead.len() {
            bytes += dead[end].event.payload.get().len();
            if bytes > MAX_MESSAGE_BYTES {
                break;
            }
            end += 1;
        }
        let groups: Vec<JobGroup> = dead[start..end].iter().map(|d| group(d)).collect();
        // Publish first: once the broker confirmed the replay, nothing can lose it. A crash
        // before the bookkeeping leaves the dead letter listed while its replay runs: it may be
        // sent twice, never zero times.
        state.publisher.jobs(&groups, JobsSource::Replay).await?;
        for d in &dead[start..end] {
            state.store.mark_replayed(d).await?;
        }
        metrics::counter!("herald_dead_letters_replayed_total").increment((end - start) as u64);
        start = end;
    }
    Ok(())
}

fn group(d: &DeadLetter) -> JobGroup {
    JobGroup {
        workspace_id: d.workspace_id.clone(),
        event: d.event.clone(),
        jobs: vec![JobItem {
            connection_id: d.connection_id.clone(),
            attempts: d.attempts.clone(),
            round_start: d.attempts.len(),
            deferrals: 0,
            replay: true,
            stand_in: false,
            // A replay is a person's decision: it goes out at once, outside the order.
            order: None,
        }],
    }
}

/// One page: the next dead letters after the replay's position, those that match replayed.
/// False when there was none left.
async fn step(state: &AppState, r: &mut Replay) -> Result<bool, ApiError> {
    let page = state
        .store
        .dead_letters_page(&r.workspace_id, &r.position(), PAGE)
        .await?;
    let Some((last, _)) = page.last() else {
        return Ok(false);
    };
    let last = last.encode();
    let filter = DeadLetterFilter {
        connection_id: r.connection_id.clone(),
        event: r.event.clone(),
    };
    let matched: Vec<&DeadLetter> = page
        .iter()
        .filter_map(|(_, d)| d.as_ref())
        .filter(|d| filter.matches(d))
        .collect();
    replay(state, &matched).await?;
    r.examined += page.len() as u64;
    r.replayed += matched.len() as u64;
    r.cursor = Some(last);
    r.updated_at = herald_shared::now_ms();
    r.last_error = None;
    Ok(true)
}

/// Walks `r` to its end before answering (a small replay): an error ends the replay with it,
/// and the caller sees it.
pub async fn run_now(state: &AppState, mut r: Replay) -> Result<Replay, ApiError> {
    let owner = &state.replays.owner;
    let outcome = loop {
        match step(state, &mut r).await {
            Ok(true) => {}
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    r.finished_at = Some(herald_shared::now_ms());
    if let Err(e) = &outcome {
        r.last_error = Some(e.to_string());
    }
    state.store.let_go_of_replay(&r, owner).await?;
    outcome.map(|()| r)
}

/// Walks `r` in the background until it is done, the ingest stops (it then lets go, for
/// another ingest to resume it), or another ingest took it over. A failing page (broker or
/// Redis away) is tried again with backoff, its error kept in the progress.
pub async fn run(state: AppState, mut r: Replay) {
    let owner = state.replays.owner.clone();
    let mut wait = Duration::from_millis(200);
    tracing::info!(replay_id = %r.id, workspace_id = %r.workspace_id, count = r.count, "bulk replay running");
    loop {
        if state.replays.shutdown.is_cancelled() {
            match state.store.let_go_of_replay(&r, &owner).await {
                Ok(()) => {
                    tracing::info!(replay_id = %r.id, examined = r.examined, "bulk replay paused for shutdown; another ingest resumes it")
                }
                Err(e) => {
                    tracing::warn!(replay_id = %r.id, error = %e, "bulk replay paused for shutdown; its lease runs out by itself")
                }
            }
            return;
        }
        match step(&state, &mut r).await {
            Ok(true) => wait = Duration::from_millis(200),
            Ok(false) => {
                r.finished_at = Some(herald_shared::now_ms());
                r.updated_at = r.finished_at.unwrap_or(r.updated_at);
                if let Err(e) = state.store.let_go_of_replay(&r, &owner).await {
                    tracing::warn!(replay_id = %r.id, error = %e, "bulk replay finished but not recorded; it is resumed and finds nothing left");
                }
                tracing::info!(replay_id = %r.id, replayed = r.replayed, examined = r.examined, "bulk replay finished");
                return;
            }
            Err(e) => {
                tracing::warn!(replay_id = %r.id, error = %e, "a page of a bulk replay failed; trying it again");
                r.last_error = Some(e.to_string());
                tokio::select! {
                    () = state.replays.shutdown.cancelled() => {}
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
        match state.store.save_replay(&r, &owner).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(replay_id = %r.id, "bulk replay taken over by another ingest (this one stalled past its lease); stopping here");
                return;
            }
            Err(e) => {
                tracing::warn!(replay_id = %r.id, error = %e, "bulk replay progress not recorded; going on")
            }
        }
    }
}

/// Every [`RESUME_EVERY`], takes over the replays no ingest runs and runs them here, until
/// `state.replays.shutdown`.
pub async fn resume_waiting(state: AppState) {
    loop {
        tokio::select! {
            () = state.replays.shutdown.cancelled() => return,
            () = tokio::time::sleep(RESUME_EVERY) => {}
        }
        match state
            .store
            .claim_waiting_replays(&state.replays.owner, 4)
            .await
        {
            Ok(claimed) => {
                for r in claimed {
                    tracing::info!(replay_id = %r.id, workspace_id = %r.workspace_id, examined = r.examined, "resuming a bulk replay no ingest was running");
                    state.background.spawn(run(state.clone(), r));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot look for bulk replays to resume"),
        }
    }
}
