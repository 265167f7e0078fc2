//! Where an event lives: the support console finds an event by uuid alone, in any workspace,
//! with one key read instead of a look into every workspace.
//!
//! `{p}:loc:{uuid}` holds the workspace id (a few ids, space-separated, in the rare case that
//! producers of different workspaces chose the same uuid). It is written with the event's
//! record and expires with it, after `HERALD_RETENTION`; the TTL is set once and never pushed
//! forward. It costs about 205 bytes of Redis per event (see `docs/operations.md`). It is a key
//! outside any workspace, so in a cluster it lives in a slot of its own: every command here
//! touches that one key.

use futures::TryStreamExt;
use redis::AsyncCommands;

use super::{Store, StoreError};

/// The most workspaces one uuid's locator names; a uuid reused by more is found in the others
/// by the console's search by workspace.
const MAX_WORKSPACES: usize = 8;

/// How many locators are written at once in a cluster (each its own command, since each is in
/// a slot of its own); on one server they go in one pipeline.
const CONCURRENT: usize = 64;

/// Adds `ws` to a locator that named other workspaces. KEYS: the locator. ARGV: workspace id,
/// TTL in seconds, the most workspaces to name.
const ADD_WORKSPACE: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
local n = 0
for w in string.gmatch(v, '%S+') do
  if w == ARGV[1] then return 0 end
  n = n + 1
end
if n >= tonumber(ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], v .. ' ' .. ARGV[1], 'EX', ARGV[2])
return 1
";

impl Store {
    fn locator_key(&self, uuid: &str) -> String {
        self.key(&format!("loc:{uuid}"))
    }

    /// Writes the locator of each `(workspace, uuid)` just recorded. Bound: each expires
    /// after the retention, like its event, and is never written again for the same workspace.
    pub(super) async fn locate(&self, events: &[(&str, &str)]) -> Result<(), StoreError> {
        let ttl = self.retention_secs();
        if self.conn.is_cluster() {
            // Each key in a slot of its own: one command a key, a few at a time.
            return futures::stream::iter(events.iter().map(Ok))
                .try_for_each_concurrent(CONCURRENT, |&(ws, uuid)| async move {
                    let before = self.first_holder(ws, uuid, ttl).await?;
                    self.add_holder(ws, uuid, before, ttl).await
                })
                .await;
        }
        // One server: every first write in one pipeline.
        let mut pipe = redis::pipe();
        for (ws, uuid) in events {
            pipe.add_command(self.set_first_holder(ws, uuid, ttl));
        }
        let befores: Vec<Option<String>> = pipe.query_async(&mut self.conn()).await?;
        for ((ws, uuid), before) in events.iter().zip(befores) {
            self.add_holder(ws, uuid, before, ttl).await?;
        }
        Ok(())
    }

    /// `SET NX GET`: records `ws` as the uuid's workspace unless one is recorded already, and
    /// answers what was there.
    fn set_first_holder(&self, ws: &str, uuid: &str, ttl: i64) -> redis::Cmd {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.locator_key(uuid))
            .arg(ws)
            .arg("NX")
            .arg("GET")
            .arg("EX")
            .arg(ttl);
        cmd
    }

    async fn first_holder(
        &self,
        ws: &str,
        uuid: &str,
        ttl: i64,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .set_first_holder(ws, uuid, ttl)
            .query_async(&mut self.conn())
            .await?)
    }

    /// A uuid another workspace recorded first (rare): `ws` is added beside it.
    async fn add_holder(
        &self,
        ws: &str,
        uuid: &str,
        before: Option<String>,
        ttl: i64,
    ) -> Result<(), StoreError> {
        static ADD: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(ADD_WORKSPACE));
        let Some(before) = before else {
            return Ok(());
        };
        if before.split(' ').any(|w| w == ws) {
            return Ok(());
        }
        ADD.key(self.locator_key(uuid))
            .arg(ws)
            .arg(ttl)
            .arg(MAX_WORKSPACES)
            .invoke_async::<i64>(&mut self.conn())
            .await?;
        Ok(())
    }

    /// The workspaces whose history holds event `uuid` (the console's lookup across
    /// workspaces): one key read.
    pub async fn workspaces_with_event(&self, uuid: &str) -> Result<Vec<String>, StoreError> {
        let found: Option<String> = self.conn().get(self.locator_key(uuid)).await?;
        Ok(found
            .map(|v| v.split(' ').map(str::to_string).collect())
            .unwrap_or_default())
    }
}
