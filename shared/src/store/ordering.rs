//! Ordered delivery: the sequences of a connection that delivers one job at a time per key.
//!
//! Each key of an ordered connection (`r:<resource>:<resource_id>` with `per_resource`, `c`
//! with `per_connection`) has a sequence in Redis: the jobs not yet final, in the order the
//! router added them (which is the order intake accepted their events: ordered workspaces'
//! events go through a queue with a single active router, see `herald.events.ordered`). Only
//! the head of a sequence is ever published to the jobs queue; the rest wait here, with their
//! bodies. A deliverer sends a head only after taking its lease, so two copies of a head (a
//! redelivery, a stand-in) never go out at once; when the head is final (delivered, gone,
//! dead-lettered) the deliverer finishes it, which hands it the next head to publish. A head
//! that was not taken in time (its publisher died between the two) is published again by the
//! routers' sweep.
//!
//! Every publish of a head (the first, a retry, the next after a finish, the sweep's) is a
//! new copy with a token of its own, and the sequence names the one copy that may be sent:
//! a copy the sweep replaced, or a deferred duplicate of one that was retried since, is
//! dropped when it turns up, so a job never has two chains of attempts. Only the holder of
//! the named copy moves the sequence on (release or finish).
//!
//! Keys of sequence K (connection `c`, key `k`), all in the workspace's slot:
//! - `{p}:ws:{<ws>}:ord:<c>:<k>:q`: ZSET of event uuids, scored by their place.
//! - `...:b`: HASH uuid -> the job as published (a one-job group, JSON).
//! - `...:h`: HASH `n` (the last place given), `lease` (Unix ms until which the head is taken),
//!   `copy` (the token of the head's copy that may be sent).
//! - `...:d`: ZSET of uuids finished in the last [`TOMBSTONE`], so a router that routes an
//!   event again after a crash does not add a finished job once more.
//! - `{p}:ws:{<ws>}:ord:due`: ZSET of sequences with a head, scored by when that head must
//!   have been taken (or come back from its retry); the sweep looks at the overdue ones.
//! - `{p}:ordered`: SET of workspaces that ever had a sequence (one per workspace): where the
//!   sweep looks.
//!
//! Bounds: a sequence holds at most the backlog cap of jobs ([`BACKLOG`]; a job beyond it is
//! dead-lettered at once); it and its keys are deleted when it empties, but for
//! its tombstones, which expire [`TOMBSTONE`] after the last.

use std::time::Duration;

use redis::AsyncCommands;

use super::{Store, StoreError};
use crate::model::JobGroup;

/// How long a head may wait to be taken (or past its retry's due time) before the sweep
/// publishes it again.
pub const GRACE: Duration = Duration::from_secs(30);
/// Most jobs one key's sequence holds: an event beyond it is dead-lettered at once (it can be
/// replayed, outside the order) rather than waiting without bound behind a failing head.
pub const BACKLOG: usize = 10_000;
/// How long a finished job is remembered in its sequence.
pub const TOMBSTONE: Duration = Duration::from_secs(15 * 60);

/// An ordered job the router adds to its sequence.
#[derive(Debug)]
pub struct Sequenced<'a> {
    /// Its connection.
    pub connection_id: &'a str,
    /// Its key.
    pub key: &'a str,
    /// Its event.
    pub uuid: &'a str,
    /// The copy token its body carries (see [`crate::model::OrderSlot::copy`]).
    pub copy: &'a str,
    /// The job as it is published (a one-job group, JSON).
    pub body: String,
}

/// What became of a job added to its sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// It is the head: publish it now.
    Publish,
    /// It waits behind the head, or was in its sequence already (added again after a router
    /// crash: if it is the head and nobody took it, the sweep publishes it).
    Queued,
    /// It was finished already (added again after a router crash): nothing to do.
    Finished,
    /// The sequence holds its cap of jobs.
    Full,
}

/// Whether a deliverer may send an ordered job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// It is the head and now this copy's until the lease ends.
    Send,
    /// It is the head, but this copy of it is being sent already (a redelivery, a stand-in):
    /// try again later.
    Busy,
    /// Not to be sent: it is not the head (finished, or waiting behind it), or another copy
    /// of it replaced this one. This copy is dropped; the sequence publishes the job itself
    /// when its turn comes.
    Stale,
}

/// A new copy token.
pub fn new_copy() -> String {
    crate::ids::random_base62(12)
}

/// A job's body as its sequence holds it, with `copy` as its copy token: what is published.
/// `None` (logged) when the body is not a one-job group, which only a bug could store.
pub fn stamp(body: &str, copy: &str) -> Option<String> {
    let stamped = serde_json::from_str::<JobGroup>(body).and_then(|mut g| {
        if let Some(order) = g.jobs.first_mut().and_then(|j| j.order.as_mut()) {
            order.copy = copy.to_string();
        }
        serde_json::to_string(&g)
    });
    match stamped {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "an ordered job's stored body does not parse; skipping it");
            None
        }
    }
}

impl Store {
    fn sequence(&self, ws: &str, connection_id: &str, key: &str) -> SequenceKeys {
        let part = |p: &str| self.ws_key(ws, &format!("ord:{connection_id}:{key}:{p}"));
        SequenceKeys {
            q: part("q"),
            b: part("b"),
            d: part("d"),
            h: part("h"),
            member: format!("{connection_id}:{key}"),
        }
    }

    fn due_key(&self, ws: &str) -> String {
        self.ws_key(ws, "ord:due")
    }

    /// Adds ordered jobs of one workspace to their sequences, in the order given (the order
    /// intake accepted their events). Adding a job twice is harmless. Answers, for each job,
    /// what became of it.
    pub async fn add_ordered(
        &self,
        ws: &str,
        jobs: &[Sequenced<'_>],
        now_ms: i64,
        cap: usize,
    ) -> Result<Vec<Added>, StoreError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = ADD_SCRIPT.prepare_invoke();
        invocation.key(self.due_key(ws));
        invocation
            .arg(now_ms)
            .arg(GRACE.as_millis() as u64)
            .arg(cap.max(1));
        for job in jobs {
            let seq = self.sequence(ws, job.connection_id, job.key);
            invocation.key(seq.q).key(seq.b).key(seq.d).key(seq.h);
            invocation
                .arg(job.uuid)
                .arg(&job.body)
                .arg(seq.member)
                .arg(job.copy);
        }
        let words: Vec<String> = invocation.invoke_async(&mut self.conn()).await?;
        Ok(words
            .iter()
            .map(|w| match w.as_str() {
                "publish" => Added::Publish,
                "finished" => Added::Finished,
                "full" => Added::Full,
                _ => Added::Queued,
            })
            .collect())
    }

    /// Takes the head of a sequence for `lease`: copy `copy` of it is about to be sent. A job
    /// its sequence does not know at all (its state was lost with a Redis that kept nothing)
    /// is sent rather than dropped: losing it would be worse than sending it out of order.
    #[allow(clippy::too_many_arguments)]
    pub async fn take_ordered(
        &self,
        ws: &str,
        connection_id: &str,
        key: &str,
        uuid: &str,
        copy: &str,
        now_ms: i64,
        lease: Duration,
    ) -> Result<Take, StoreError> {
        let seq = self.sequence(ws, connection_id, key);
        let word: String = TAKE_SCRIPT
            .key(seq.q)
            .key(seq.h)
            .key(seq.d)
            .key(self.due_key(ws))
            .arg(uuid)
            .arg(now_ms)
            .arg(lease.as_millis() as u64)
            .arg(GRACE.as_millis() as u64)
            .arg(seq.member)
            .arg(copy)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(match word.as_str() {
            "send" => Take::Send,
            "busy" => Take::Busy,
            _ => Take::Stale,
        })
    }

    /// Copy `copy` of the head was taken and is not final: it comes back (a retry, a deferral)
    /// at `back_at` (Unix ms) as copy `next_copy`, whose body (with its attempts) is `body`.
    /// The lease ends now. Nothing happens unless `copy` still holds the head.
    #[allow(clippy::too_many_arguments)]
    pub async fn release_ordered(
        &self,
        ws: &str,
        connection_id: &str,
        key: &str,
        uuid: &str,
        copy: &str,
        next_copy: &str,
        body: &str,
        back_at_ms: i64,
    ) -> Result<(), StoreError> {
        let seq = self.sequence(ws, connection_id, key);
        let _: i64 = RELEASE_SCRIPT
            .key(seq.q)
            .key(seq.h)
            .key(self.due_key(ws))
            .key(seq.b)
            .arg(uuid)
            .arg(back_at_ms + GRACE.as_millis() as i64)
            .arg(seq.member)
            .arg(copy)
            .arg(next_copy)
            .arg(body)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Copy `copy` of the head is final: the job leaves its sequence, and the next head (if
    /// any) is answered as a new copy, to be published by the caller. Nothing happens unless
    /// `copy` still holds the head.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_ordered(
        &self,
        ws: &str,
        connection_id: &str,
        key: &str,
        uuid: &str,
        copy: &str,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let next_copy = new_copy();
        let seq = self.sequence(ws, connection_id, key);
        let next: Option<String> = FINISH_SCRIPT
            .key(seq.q)
            .key(seq.b)
            .key(seq.d)
            .key(seq.h)
            .key(self.due_key(ws))
            .arg(uuid)
            .arg(now_ms)
            .arg(TOMBSTONE.as_millis() as u64)
            .arg(GRACE.as_millis() as u64)
            .arg(seq.member)
            .arg(copy)
            .arg(&next_copy)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(next.and_then(|body| stamp(&body, &next_copy)))
    }

    /// Notes that a workspace has sequences, so the sweep looks at it. Bound: one member per
    /// workspace.
    pub async fn note_ordered_workspace(&self, ws: &str) -> Result<(), StoreError> {
        let _: i64 = self.conn().sadd(self.key("ordered"), ws).await?;
        Ok(())
    }

    /// Workspaces that ever had a sequence.
    pub async fn ordered_workspaces(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.conn().smembers(self.key("ordered")).await?)
    }

    /// Heads of a workspace's sequences that were due to be taken before `now_ms` and are not:
    /// answered (at most `limit`) as new copies for the caller to publish (older copies of
    /// them, if any turn up, are dropped), and due [`GRACE`] later, so of several sweeping
    /// routers one publishes each.
    pub async fn overdue_ordered(
        &self,
        ws: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let due = self.due_key(ws);
        let members: Vec<String> = OVERDUE_SCRIPT
            .key(&due)
            .arg(now_ms)
            .arg(GRACE.as_millis() as u64)
            .arg(limit.max(1))
            .invoke_async(&mut self.conn())
            .await?;
        let mut heads = Vec::new();
        for m in members {
            let Some((connection_id, key)) = m.split_once(':') else {
                continue;
            };
            let copy = new_copy();
            let seq = self.sequence(ws, connection_id, key);
            let head: Option<String> = HEAD_SCRIPT
                .key(seq.q)
                .key(seq.b)
                .key(seq.h)
                .key(&due)
                .arg(now_ms)
                .arg(seq.member)
                .arg(&copy)
                .invoke_async(&mut self.conn())
                .await?;
            heads.extend(head.and_then(|body| stamp(&body, &copy)));
        }
        Ok(heads)
    }
}

/// The keys of one sequence (see the module's top), and its member in the workspace's due set
/// (`<connection>:<key>`; connection ids hold no `:`).
struct SequenceKeys {
    q: String,
    b: String,
    d: String,
    h: String,
    member: String,
}

/// KEYS: due, then per job q, b, d, h. ARGV: now, grace, cap, then per job uuid, body, member,
/// copy. Per job: `finished` (tombstoned), `queued` (behind the head, or in the sequence
/// already), `full`, or `publish` (a new head, whose copy is now the one to send).
const ADD: &str = r"
local now, grace, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for i = 0, (#KEYS - 1) / 4 - 1 do
  local q, b, d, h = KEYS[2 + 4 * i], KEYS[3 + 4 * i], KEYS[4 + 4 * i], KEYS[5 + 4 * i]
  local uuid, body, member, copy = ARGV[4 + 4 * i], ARGV[5 + 4 * i], ARGV[6 + 4 * i], ARGV[7 + 4 * i]
  local r
  if redis.call('ZSCORE', d, uuid) then
    r = 'finished'
  elseif redis.call('ZSCORE', q, uuid) then
    r = 'queued'
  elseif redis.call('ZCARD', q) >= cap then
    r = 'full'
  else
    local place = redis.call('HINCRBY', h, 'n', 1)
    redis.call('ZADD', q, place, uuid)
    redis.call('HSET', b, uuid, body)
    if redis.call('ZCARD', q) == 1 then
      redis.call('HSET', h, 'copy', copy, 'lease', 0)
      redis.call('ZADD', KEYS[1], now + grace, member)
      r = 'publish'
    else
      r = 'queued'
    end
  end
  out[#out + 1] = r
end
return out
";

/// KEYS: q, h, d, due. ARGV: uuid, now, lease ms, grace, member, copy.
const TAKE: &str = r"
local head = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
if head ~= ARGV[1] then
  if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZSCORE', KEYS[3], ARGV[1]) then
    return 'stale'
  end
  return 'send'
end
if (redis.call('HGET', KEYS[2], 'copy') or '') ~= ARGV[6] then return 'stale' end
local now = tonumber(ARGV[2])
if tonumber(redis.call('HGET', KEYS[2], 'lease') or '0') > now then return 'busy' end
local lease = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[2], 'lease', lease)
redis.call('ZADD', KEYS[4], lease + tonumber(ARGV[4]), ARGV[5])
return 'send'
";

/// KEYS: q, h, due, b. ARGV: uuid, due at, member, copy, next copy, body.
const RELEASE: &str = r"
if redis.call('ZRANGE', KEYS[1], 0, 0)[1] ~= ARGV[1] then return 0 end
if (redis.call('HGET', KEYS[2], 'copy') or '') ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[2], 'lease', 0, 'copy', ARGV[5])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
return 1
";

/// KEYS: q, b, d, h, due. ARGV: uuid, now, tombstone ms, grace, member, copy, next copy.
/// Returns the next head's body, or nil.
const FINISH: &str = r"
if redis.call('ZRANGE', KEYS[1], 0, 0)[1] ~= ARGV[1] then return false end
if (redis.call('HGET', KEYS[4], 'copy') or '') ~= ARGV[6] then return false end
local now, tomb = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tomb)
redis.call('PEXPIRE', KEYS[3], tomb)
local next = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
if next then
  redis.call('HSET', KEYS[4], 'lease', 0, 'copy', ARGV[7])
  redis.call('ZADD', KEYS[5], now + tonumber(ARGV[4]), ARGV[5])
  return redis.call('HGET', KEYS[2], next)
end
redis.call('DEL', KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[5])
return false
";

/// KEYS: due. ARGV: now, grace, limit. The overdue members, each due a grace later.
const OVERDUE: &str = r"
local now = tonumber(ARGV[1])
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, m in ipairs(members) do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), m)
end
return members
";

/// KEYS: q, b, h, due. ARGV: now, member, copy. The head's body if nobody holds it, `copy`
/// becoming the copy to send; an empty sequence leaves the due set.
const HEAD: &str = r"
local head = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
if not head then
  redis.call('ZREM', KEYS[4], ARGV[2])
  return false
end
if tonumber(redis.call('HGET', KEYS[3], 'lease') or '0') > tonumber(ARGV[1]) then return false end
redis.call('HSET', KEYS[3], 'copy', ARGV[3])
return redis.call('HGET', KEYS[2], head)
";

static ADD_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(ADD));
static TAKE_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(TAKE));
static RELEASE_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(RELEASE));
static FINISH_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(FINISH));
static OVERDUE_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(OVERDUE));
static HEAD_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(HEAD));
