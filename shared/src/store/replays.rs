//! Bulk replays of dead letters: one at a time per workspace, walked page by page, with their
//! progress in Redis so it can be read, and resumed by any ingest when the one running it died.
//!
//! Keys (`<ws>` a workspace, `{id}` a replay). Every script here touches the keys of one
//! workspace (one slot of a cluster); `{p}:replays` is only ever used on its own:
//! ```text
//! {p}:ws:{<ws>}:replay           the workspace's unfinished replay id (no second one starts)
//! {p}:ws:{<ws>}:replay:lease     the ingest running it: a token, expiring after LEASE unless renewed
//! {p}:ws:{<ws>}:replay:{id}      the replay's progress JSON, kept KEEP after its last change
//! {p}:replays                    ZSET started_at -> "<ws> <id>": unfinished replays, to resume
//! ```
//! Bounds: one unfinished replay per workspace (so `{p}:replays` holds at most one entry per
//! workspace); a progress record expires `KEEP` after its last write.

use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::dead_letters::DeadLetter;
use super::paging::{count_older, page_older};
use super::{parse, to_json, Cursor, Store, StoreError};

/// How long the ingest running a replay holds it without renewing (it renews after every
/// page): after a crash, another ingest resumes it this much later at most.
pub const LEASE: Duration = Duration::from_secs(30);
/// How long a replay's progress stays readable after its last change.
pub const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// A bulk replay and how far it got.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replay {
    /// `rpl_...`.
    pub id: String,
    /// The workspace.
    pub workspace_id: String,
    /// Only dead letters of this connection.
    pub connection_id: Option<String>,
    /// Only dead letters of this event type.
    pub event: Option<String>,
    /// Only dead letters dead-lettered at or before this (the request's time, Unix ms): one
    /// that dies again during the replay is not replayed twice by it.
    pub until: i64,
    /// Dead letters to look at when it started (every one up to `until`; with a filter, the
    /// ones replayed are among them).
    pub count: u64,
    /// Dead letters looked at so far.
    pub examined: u64,
    /// Dead letters replayed so far.
    pub replayed: u64,
    /// Where the walk stands: the last dead letter looked at (`score~member`).
    pub cursor: Option<String>,
    /// Unix ms.
    pub started_at: i64,
    /// Unix ms of the last page.
    pub updated_at: i64,
    /// Unix ms; None while unfinished.
    pub finished_at: Option<i64>,
    /// The last error a page met (it is tried again).
    pub last_error: Option<String>,
}

impl Replay {
    /// A replay of `workspace_id`'s dead letters that died by `until` and match the filter,
    /// `count` of them to look at, not started yet.
    pub fn new(
        workspace_id: &str,
        connection_id: Option<String>,
        event: Option<String>,
        until: i64,
        count: u64,
    ) -> Self {
        Self {
            id: crate::ids::new_id("rpl"),
            workspace_id: workspace_id.to_string(),
            connection_id,
            event,
            until,
            count,
            examined: 0,
            replayed: 0,
            cursor: None,
            started_at: until,
            updated_at: until,
            finished_at: None,
            last_error: None,
        }
    }

    /// Where the walk goes on from.
    pub fn position(&self) -> Cursor {
        self.cursor
            .as_deref()
            .and_then(Cursor::decode)
            .unwrap_or_else(|| Cursor::at_or_below(self.until))
    }

    fn member(&self) -> String {
        format!("{} {}", self.workspace_id, self.id)
    }
}

/// Takes the workspace's replay slot. KEYS: current, lease, progress. ARGV: id, owner, lease
/// ms, progress JSON, keep s. Answers nil, or the id of the replay that holds the slot.
const START: &str = r"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  return redis.call('GET', KEYS[1])
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[5])
return false
";

/// Writes progress if `owner` still holds the lease, and renews it. KEYS: lease, progress.
/// ARGV: owner, lease ms, progress JSON, keep s.
const SAVE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
return 1
";

/// Writes the last progress and gives the slot back (finished) or the lease only (paused), if
/// `owner` holds the lease. KEYS: lease, progress, current. ARGV: owner, progress JSON, keep s,
/// id, 1 when finished.
const LET_GO: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
if ARGV[5] == '1' and redis.call('GET', KEYS[3]) == ARGV[4] then
  redis.call('DEL', KEYS[3])
end
return 1
";

/// Gives the slot up when its replay's progress is gone (expired). KEYS: current. ARGV: id.
const DROP_IF: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
";

/// A replay and whether an ingest is running it now.
pub struct ReplayState {
    /// Its progress.
    pub replay: Replay,
    /// An ingest holds its lease (false and unfinished: it waits to be resumed).
    pub leased: bool,
}

impl Store {
    fn replay_key(&self, ws: &str, id: &str) -> String {
        self.ws_key(ws, &format!("replay:{id}"))
    }

    /// Starts `r` if the workspace has no unfinished replay; else answers that one's id.
    /// `owner` names the ingest running it until it lets go (see [`LEASE`]).
    pub async fn start_replay(
        &self,
        r: &Replay,
        owner: &str,
    ) -> Result<Option<String>, StoreError> {
        let current_key = self.ws_key(&r.workspace_id, "replay");
        let mut conn = self.conn();
        // A slot whose replay's progress expired (no ingest resumed it for KEEP) is free.
        let current: Option<String> = conn.get(&current_key).await?;
        if let Some(current) = current {
            let alive: bool = conn
                .exists(self.replay_key(&r.workspace_id, &current))
                .await?;
            if !alive {
                redis::Script::new(DROP_IF)
                    .key(&current_key)
                    .arg(&current)
                    .invoke_async::<()>(&mut conn)
                    .await?;
            }
        }
        // Listed to resume before it exists: an entry without progress is dropped when found.
        let _: () = conn
            .zadd(self.key("replays"), r.member(), r.started_at)
            .await?;
        let holder: Option<String> = redis::Script::new(START)
            .key(&current_key)
            .key(self.ws_key(&r.workspace_id, "replay:lease"))
            .key(self.replay_key(&r.workspace_id, &r.id))
            .arg(&r.id)
            .arg(owner)
            .arg(LEASE.as_millis() as u64)
            .arg(to_json(r))
            .arg(KEEP.as_secs())
            .invoke_async(&mut conn)
            .await?;
        if holder.is_some() {
            let _: () = conn.zrem(self.key("replays"), r.member()).await?;
        }
        Ok(holder)
    }

    /// Records progress and renews the lease. False: `owner` lost the lease (it stalled past
    /// [`LEASE`] and another ingest resumed the replay), so it must stop.
    pub async fn save_replay(&self, r: &Replay, owner: &str) -> Result<bool, StoreError> {
        let saved: i64 = redis::Script::new(SAVE)
            .key(self.ws_key(&r.workspace_id, "replay:lease"))
            .key(self.replay_key(&r.workspace_id, &r.id))
            .arg(owner)
            .arg(LEASE.as_millis() as u64)
            .arg(to_json(r))
            .arg(KEEP.as_secs())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(saved == 1)
    }

    /// Records the last progress and lets go: of the workspace's slot too when `r` finished,
    /// else only of the lease, so another ingest resumes it at once (a shutdown).
    pub async fn let_go_of_replay(&self, r: &Replay, owner: &str) -> Result<(), StoreError> {
        let finished = r.finished_at.is_some();
        redis::Script::new(LET_GO)
            .key(self.ws_key(&r.workspace_id, "replay:lease"))
            .key(self.replay_key(&r.workspace_id, &r.id))
            .key(self.ws_key(&r.workspace_id, "replay"))
            .arg(owner)
            .arg(to_json(r))
            .arg(KEEP.as_secs())
            .arg(&r.id)
            .arg(if finished { "1" } else { "0" })
            .invoke_async::<i64>(&mut self.conn())
            .await?;
        if finished {
            let _: () = self.conn().zrem(self.key("replays"), r.member()).await?;
        }
        Ok(())
    }

    /// A replay's progress, and whether an ingest runs it now.
    pub async fn get_replay(&self, ws: &str, id: &str) -> Result<Option<ReplayState>, StoreError> {
        let key = self.replay_key(ws, id);
        let (json, lease_holder, current): (Option<String>, Option<String>, Option<String>) =
            redis::pipe()
                .get(&key)
                .get(self.ws_key(ws, "replay:lease"))
                .get(self.ws_key(ws, "replay"))
                .query_async(&mut self.conn())
                .await?;
        let Some(json) = json else { return Ok(None) };
        let replay: Replay = parse(&key, &json)?;
        let leased = lease_holder.is_some() && current.as_deref() == Some(id);
        Ok(Some(ReplayState { replay, leased }))
    }

    /// Unfinished replays no ingest runs now (its ingest died or stopped), taken over by
    /// `owner`, at most `max` of them. Entries whose replay finished or expired are dropped.
    pub async fn claim_waiting_replays(
        &self,
        owner: &str,
        max: usize,
    ) -> Result<Vec<Replay>, StoreError> {
        let mut conn = self.conn();
        let listed: Vec<String> = conn.zrange(self.key("replays"), 0, 99).await?;
        let mut out = Vec::new();
        for member in listed {
            if out.len() >= max {
                break;
            }
            let Some((ws, id)) = member.split_once(' ') else {
                let _: () = conn.zrem(self.key("replays"), &member).await?;
                continue;
            };
            let Some(state) = self.get_replay(ws, id).await? else {
                let _: () = conn.zrem(self.key("replays"), &member).await?;
                continue;
            };
            if state.replay.finished_at.is_some() {
                let _: () = conn.zrem(self.key("replays"), &member).await?;
                continue;
            }
            let lease = self.ws_key(ws, "replay:lease");
            let taken: Option<String> = redis::cmd("SET")
                .arg(&lease)
                .arg(owner)
                .arg("NX")
                .arg("PX")
                .arg(LEASE.as_millis() as u64)
                .query_async(&mut conn)
                .await?;
            if taken.is_some() {
                // Read again under the lease: the last owner may have saved a page meanwhile.
                if let Some(state) = self.get_replay(ws, id).await? {
                    out.push(state.replay);
                }
            }
        }
        Ok(out)
    }

    /// The next dead letters of a workspace older than `cursor`, newest first, at most `n`:
    /// each index entry with its dead letter (None: gone meanwhile).
    pub async fn dead_letters_page(
        &self,
        ws: &str,
        cursor: &Cursor,
        n: usize,
    ) -> Result<Vec<(Cursor, Option<DeadLetter>)>, StoreError> {
        let mut conn = self.conn();
        let page = page_older(&mut conn, &self.ws_key(ws, "dead"), Some(cursor), n, None).await?;
        if page.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = page.iter().map(|(id, _)| self.dead_key(ws, id)).collect();
        let values: Vec<Option<String>> = conn.mget(&keys).await?;
        page.into_iter()
            .zip(values.into_iter().zip(&keys))
            .map(|((member, score), (v, k))| {
                let d = v.map(|v| parse::<DeadLetter>(k, &v)).transpose()?;
                Ok((Cursor { score, member }, d))
            })
            .collect()
    }

    /// How many dead letters of a workspace are older than `cursor` (what a replay at that
    /// position has still to look at): O(log N).
    pub async fn dead_letters_older(&self, ws: &str, cursor: &Cursor) -> Result<u64, StoreError> {
        count_older(&mut self.conn(), &self.ws_key(ws, "dead"), Some(cursor)).await
    }
}
