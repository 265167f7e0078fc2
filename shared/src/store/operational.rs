//! What operational webhooks keep in Redis (see [`crate::opwebhooks`]): the workspace their
//! deliveries live in, the dead letters of each connection gathered per minute, and which
//! notices went out this minute.

use redis::AsyncCommands;

use super::{to_json, Store, StoreError};
use crate::model::Workspace;

/// The dead letters of one connection in one minute, once the minute is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterMinute {
    /// The connection's workspace.
    pub workspace_id: String,
    /// The connection.
    pub connection_id: String,
    /// The minute's start, Unix ms.
    pub minute_ms: i64,
    /// How many jobs were dead-lettered in it.
    pub count: u64,
    /// The newest of their event ids, newest first (at most [`KEPT_IDS`]).
    pub event_ids: Vec<String>,
}

/// How many event ids a minute's notice carries.
pub const KEPT_IDS: isize = 10;

/// A minute is sent this long after it ends: dead letters being written as it ended are in.
const GRACE_MS: i64 = 2_000;

/// Minutes not sent within this long (no deliverer ran) are dropped from the due list.
const GIVE_UP_MS: i64 = 3_600_000;

/// Counts and ids of a minute outlive it by this much (they are deleted once sent).
const MINUTE_TTL_S: i64 = 600;

/// A minute taken by a deliverer is due again this long after, unless its notice was sent
/// ([`Store::dead_letter_minute_sent`]): a deliverer that dies or fails to send does not lose
/// it.
pub const TAKEN_FOR_MS: i64 = 30_000;

/// Takes a minute on the due list if it is due. KEYS: due list. ARGV: member, now ms, due
/// again at (ms). Returns 1 when taken.
const TAKE: &str = r"
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not due or tonumber(due) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
return 1
";

static TAKE_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(TAKE));

fn due_member(ws: &str, connection_id: &str, minute: i64) -> String {
    format!("{ws} {connection_id} {minute}")
}

impl Store {
    /// Creates the workspace `id` unless it exists (a workspace of Herald's own, without keys).
    pub async fn ensure_workspace(&self, id: &str, name: &str) -> Result<(), StoreError> {
        let now = crate::now_ms();
        let workspace = Workspace {
            id: id.to_string(),
            name: name.to_string(),
            created_at: now,
        };
        let created: bool = self
            .conn()
            .set_nx(self.ws_root_key(id), to_json(&workspace))
            .await?;
        if created {
            let _: () = redis::cmd("ZADD")
                .arg(self.key("workspaces"))
                .arg("NX")
                .arg(now)
                .arg(id)
                .query_async(&mut self.conn())
                .await?;
        }
        Ok(())
    }

    fn dead_minute_keys(&self, ws: &str, connection_id: &str, minute: i64) -> (String, String) {
        let base = format!("opdl:{connection_id}:{minute}");
        (
            self.ws_key(ws, &format!("{base}:n")),
            self.ws_key(ws, &format!("{base}:ids")),
        )
    }

    /// Adds dead letters of one connection (event ids, oldest first) to the current minute's
    /// count and puts the minute on the due list.
    ///
    /// Bounds: per connection and minute one counter and a list of at most 10 ids, deleted
    /// when the minute is sent and expiring 10 minutes after it anyway; the due list holds one
    /// member per connection and minute not sent yet, and drops those over an hour old.
    pub async fn note_dead_letters(
        &self,
        ws: &str,
        connection_id: &str,
        event_ids: &[&str],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if event_ids.is_empty() {
            return Ok(());
        }
        let minute = now_ms.div_euclid(60_000);
        let (n_key, ids_key) = self.dead_minute_keys(ws, connection_id, minute);
        let mut pipe = redis::pipe();
        pipe.incr(&n_key, event_ids.len())
            .expire(&n_key, MINUTE_TTL_S)
            .ignore()
            .lpush(&ids_key, event_ids)
            .ignore()
            .ltrim(&ids_key, 0, KEPT_IDS - 1)
            .ignore()
            .expire(&ids_key, MINUTE_TTL_S)
            .ignore();
        let _: (u64,) = self.query(&pipe).await?;
        // Every write puts the minute on the due list (NX: its time stays), so a write whose
        // due-list step failed is made good by the next one.
        let _: () = redis::cmd("ZADD")
            .arg(self.key("opdl-due"))
            .arg("NX")
            .arg((minute + 1) * 60_000 + GRACE_MS)
            .arg(due_member(ws, connection_id, minute))
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Takes the minutes that are over (at most `most`): each is taken by one caller at a
    /// time, whichever deliverer asks first, for [`TAKEN_FOR_MS`]. Its count and ids stay
    /// until [`Store::dead_letter_minute_sent`]; a minute not marked sent by then is due again.
    pub async fn take_dead_letter_minutes(
        &self,
        now_ms: i64,
        most: usize,
    ) -> Result<Vec<DeadLetterMinute>, StoreError> {
        let due_key = self.key("opdl-due");
        let _: () = self
            .conn()
            .zrembyscore(&due_key, "-inf", now_ms - GIVE_UP_MS)
            .await?;
        let members: Vec<String> = self
            .conn()
            .zrangebyscore_limit(&due_key, "-inf", now_ms, 0, most as isize)
            .await?;
        let mut out = Vec::new();
        for member in members {
            let taken: i64 = TAKE_SCRIPT
                .key(&due_key)
                .arg(&member)
                .arg(now_ms)
                .arg(now_ms + TAKEN_FOR_MS)
                .invoke_async(&mut self.conn())
                .await?;
            if taken == 0 {
                continue;
            }
            let mut parts = member.splitn(3, ' ');
            let (Some(ws), Some(conn), Some(minute)) = (
                parts.next(),
                parts.next(),
                parts.next().and_then(|m| m.parse::<i64>().ok()),
            ) else {
                let _: i64 = self.conn().zrem(&due_key, &member).await?;
                continue;
            };
            let (n_key, ids_key) = self.dead_minute_keys(ws, conn, minute);
            let mut pipe = redis::pipe();
            pipe.get(&n_key).lrange(&ids_key, 0, KEPT_IDS - 1);
            let (count, event_ids): (Option<u64>, Vec<String>) = self.query(&pipe).await?;
            let Some(count) = count.filter(|c| *c > 0) else {
                // Nothing left to say (its keys expired): off the list.
                let _: i64 = self.conn().zrem(&due_key, &member).await?;
                continue;
            };
            out.push(DeadLetterMinute {
                workspace_id: ws.to_string(),
                connection_id: conn.to_string(),
                minute_ms: minute * 60_000,
                count,
                event_ids,
            });
        }
        Ok(out)
    }

    /// The notice of a minute went out: its count, ids and place on the due list go.
    pub async fn dead_letter_minute_sent(&self, m: &DeadLetterMinute) -> Result<(), StoreError> {
        let minute = m.minute_ms.div_euclid(60_000);
        let (n_key, ids_key) = self.dead_minute_keys(&m.workspace_id, &m.connection_id, minute);
        let mut pipe = redis::pipe();
        pipe.del(&n_key).ignore().del(&ids_key).ignore();
        let _: () = self.query(&pipe).await?;
        let _: i64 = self
            .conn()
            .zrem(
                self.key("opdl-due"),
                due_member(&m.workspace_id, &m.connection_id, minute),
            )
            .await?;
        Ok(())
    }

    /// True for the first caller this minute for this connection and notice (`kind`): several
    /// deliverers seeing the same change send it once.
    ///
    /// Bound: one key per connection and kind, expiring after a minute.
    pub async fn first_notice_this_minute(
        &self,
        ws: &str,
        connection_id: &str,
        kind: &str,
    ) -> Result<bool, StoreError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(self.ws_key(ws, &format!("opsent:{connection_id}:{kind}")))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(60_000)
            .query_async(&mut self.conn())
            .await?;
        Ok(set.is_some())
    }
}
