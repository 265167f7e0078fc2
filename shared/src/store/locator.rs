//! Where an event lives: the support console finds an event by uuid alone, in any workspace,
//! with one key read instead of a look into every workspace.
//!
//! `{p}:loc:{uuid}` holds the workspace id (a few ids, space-separated, in the rare case that
//! producers of different workspaces chose the same uuid). It is written with the event's
//! record and expires with it, after `HERALD_RETENTION`; the TTL is set once and never pushed
//! forward. It costs about a hundred bytes per event (see `docs/operations.md`).

use redis::AsyncCommands;

use super::{Store, StoreError};

/// The most workspaces one uuid's locator names; a uuid reused by more is found in the others
/// by the console's search by workspace.
const MAX_WORKSPACES: usize = 8;

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

    /// Adds to `pipe` the write of event `uuid`'s locator, answering the workspace it named
    /// already (nil when new). Bound: expires after the retention, like the event, and is
    /// never written again for the same workspace.
    pub(super) fn locate(&self, pipe: &mut redis::Pipeline, ws: &str, uuid: &str, ttl: i64) {
        pipe.cmd("SET")
            .arg(self.locator_key(uuid))
            .arg(ws)
            .arg("NX")
            .arg("GET")
            .arg("EX")
            .arg(ttl);
    }

    /// After [`Store::locate`]: the locators that already named a workspace other than the
    /// one just recorded (two workspaces' producers chose the same uuid) get that one added.
    pub(super) async fn locate_shared(
        &self,
        written: &[(&str, &str)],
        before: Vec<Option<String>>,
        ttl: i64,
    ) -> Result<(), StoreError> {
        for ((ws, uuid), before) in written.iter().zip(before) {
            let Some(before) = before else { continue };
            if before.split(' ').any(|w| w == *ws) {
                continue;
            }
            redis::Script::new(ADD_WORKSPACE)
                .key(self.locator_key(uuid))
                .arg(*ws)
                .arg(ttl)
                .arg(MAX_WORKSPACES)
                .invoke_async::<i64>(&mut self.conn())
                .await?;
        }
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
