//! Where an event lives: the support console finds an event by uuid alone, in any workspace,
//! with one key read instead of a look into every workspace.
//!
//! The locators are kept in [`BUCKETS`] small hashes, `{p}:loc:<n>` with `n` a hash of the
//! uuid: field the uuid (16 bytes when it is a UUID, see [`field`]), value the workspace id (a
//! few, space-separated, in the rare case that producers of different workspaces chose the same
//! uuid). Small hashes are kept by Redis as one packed list, so a locator costs about 50 bytes
//! instead of the ~200 of a key of its own (see `docs/operations.md`).
//!
//! A locator goes when its event's history goes: the history's trim answers the uuids it
//! removed and [`Store::unlocate`] removes their locators; a workspace that stopped writing is
//! trimmed by [`Store::trim_idle`]. A process that dies between the two leaves at most one
//! trim's locators behind; the lookup drops those it finds, and each bucket expires a retention
//! after its last write.
//!
//! A bucket is a key outside any workspace, so in a cluster it lives in a slot of its own: every
//! command here touches one bucket.

use std::collections::BTreeMap;

use futures::TryStreamExt;

use super::{Store, StoreError};

/// How many buckets the locators are spread over. Enough that a bucket stays a packed list
/// (Redis's `hash-max-listpack-entries`, 128 by default) up to half a million events held, few
/// enough that each bucket holds several locators from a few thousand events on.
pub const BUCKETS: u64 = 4096;

/// The most workspaces one uuid's locator names; a uuid reused by more is found in the others
/// by the console's search by workspace.
const MAX_WORKSPACES: usize = 8;

/// How many buckets are written at once in a cluster (each its own command, since each is in
/// a slot of its own); on one server they go in one pipeline.
const CONCURRENT: usize = 64;

/// Records `ws` as a holder of a uuid. KEYS: the bucket. ARGV: field, workspace id, TTL in
/// seconds, the most workspaces to name.
const ADD: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
else
  local n = 0
  local known = false
  for w in string.gmatch(v, '%S+') do
    if w == ARGV[2] then known = true end
    n = n + 1
  end
  if not known and n < tonumber(ARGV[4]) then
    redis.call('HSET', KEYS[1], ARGV[1], v .. ' ' .. ARGV[2])
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
";

/// Removes `ws` from the locators of some uuids, all in one bucket. KEYS: the bucket. ARGV:
/// workspace id, then the fields.
const REMOVE: &str = r"
local ws = ARGV[1]
for i = 2, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v == ws then
    redis.call('HDEL', KEYS[1], ARGV[i])
  elseif v then
    local rest = {}
    for w in string.gmatch(v, '%S+') do
      if w ~= ws then rest[#rest + 1] = w end
    end
    if #rest == 0 then
      redis.call('HDEL', KEYS[1], ARGV[i])
    else
      redis.call('HSET', KEYS[1], ARGV[i], table.concat(rest, ' '))
    end
  end
end
return 1
";

static ADD_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(ADD));
static REMOVE_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(REMOVE));

/// The bucket of a uuid: FNV-1a of its bytes, so every process and version agrees.
pub fn bucket(uuid: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in uuid.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % BUCKETS
}

/// The field a uuid is kept under: a UUID's 16 bytes behind a tag byte when it is Herald's own
/// form (`evt_` and 32 lowercase hex digits, tag 1) or the usual one (8-4-4-4-12 lowercase hex,
/// tag 2); any other uuid as it is. A producer's uuid is printable ASCII, so a field that
/// starts with a tag byte can only be a packed one.
pub fn field(uuid: &str) -> Vec<u8> {
    let packed = |tag: u8, hex: &str| -> Option<Vec<u8>> {
        if hex.len() != 32 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut out = Vec::with_capacity(17);
        out.push(tag);
        for pair in hex.as_bytes().chunks(2) {
            let pair = std::str::from_utf8(pair).ok()?;
            out.push(u8::from_str_radix(pair, 16).ok()?);
        }
        Some(out)
    };
    let found = if let Some(hex) = uuid.strip_prefix("evt_") {
        packed(1, hex)
    } else if uuid.len() == 36 && [8, 13, 18, 23].iter().all(|&i| uuid.as_bytes()[i] == b'-') {
        packed(2, &uuid.replace('-', ""))
    } else {
        None
    };
    found.unwrap_or_else(|| uuid.as_bytes().to_vec())
}

impl Store {
    fn locator_bucket_key(&self, uuid: &str) -> String {
        self.key(&format!("loc:{}", bucket(uuid)))
    }

    fn add_locator(&self, ws: &str, uuid: &str, ttl: i64) -> redis::ScriptInvocation<'static> {
        let mut call = ADD_SCRIPT.key(self.locator_bucket_key(uuid));
        call.arg(field(uuid)).arg(ws).arg(ttl).arg(MAX_WORKSPACES);
        call
    }

    /// Writes the locator of each `(workspace, uuid)` just recorded. Bound: each goes with its
    /// event's history (see the module's notes).
    pub(super) async fn locate(&self, events: &[(&str, &str)]) -> Result<(), StoreError> {
        let ttl = self.retention_secs();
        if self.conn.is_cluster() {
            // Each bucket in a slot of its own: one command a locator, a few at a time.
            return futures::stream::iter(events.iter().map(Ok))
                .try_for_each_concurrent(CONCURRENT, |&(ws, uuid)| async move {
                    let mut pipe = redis::pipe();
                    pipe.invoke_script(&self.add_locator(ws, uuid, ttl))
                        .ignore();
                    self.run_scripts(&pipe, &[&ADD_SCRIPT]).await
                })
                .await;
        }
        // One server: every locator in one pipeline.
        let mut pipe = redis::pipe();
        for (ws, uuid) in events {
            pipe.invoke_script(&self.add_locator(ws, uuid, ttl))
                .ignore();
        }
        self.run_scripts(&pipe, &[&ADD_SCRIPT]).await
    }

    /// Removes `ws` from the locators of `uuids`, whose history was just removed: one command
    /// a bucket (in one pipeline on one server).
    pub(super) async fn unlocate(&self, ws: &str, uuids: &[String]) -> Result<(), StoreError> {
        if uuids.is_empty() {
            return Ok(());
        }
        let mut by_bucket: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        for uuid in uuids {
            by_bucket
                .entry(self.locator_bucket_key(uuid))
                .or_default()
                .push(field(uuid));
        }
        let call = |key: &String, fields: &Vec<Vec<u8>>| {
            let mut call = REMOVE_SCRIPT.key(key);
            call.arg(ws);
            for f in fields {
                call.arg(f);
            }
            call
        };
        if self.conn.is_cluster() {
            return futures::stream::iter(by_bucket.iter().map(Ok))
                .try_for_each_concurrent(CONCURRENT, |(key, fields)| async move {
                    let mut pipe = redis::pipe();
                    pipe.invoke_script(&call(key, fields)).ignore();
                    self.run_scripts(&pipe, &[&REMOVE_SCRIPT]).await
                })
                .await;
        }
        let mut pipe = redis::pipe();
        for (key, fields) in &by_bucket {
            pipe.invoke_script(&call(key, fields)).ignore();
        }
        self.run_scripts(&pipe, &[&REMOVE_SCRIPT]).await
    }

    /// Runs a pipeline of scripts of their own (not among those `load_scripts` loads),
    /// loading them first if Redis forgot them.
    pub(super) async fn run_scripts(
        &self,
        pipe: &redis::Pipeline,
        scripts: &[&redis::Script],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        match pipe.query_async::<()>(&mut conn).await {
            Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                for script in scripts {
                    script.prepare_invoke().load_async(&mut conn).await?;
                }
                Ok(pipe.query_async::<()>(&mut conn).await?)
            }
            other => Ok(other?),
        }
    }

    /// The workspaces whose history holds event `uuid` (the console's lookup across
    /// workspaces): one key read, and with the archive on one indexed query. A workspace named there that no longer holds the event (its
    /// locator outlived a crash) is dropped from the answer and from the locator.
    pub async fn workspaces_with_event(&self, uuid: &str) -> Result<Vec<String>, StoreError> {
        let found: Option<String> = redis::cmd("HGET")
            .arg(self.locator_bucket_key(uuid))
            .arg(field(uuid))
            .query_async(&mut self.conn())
            .await?;
        let mut holders = Vec::new();
        for ws in found.iter().flat_map(|v| v.split(' ')) {
            if self.holds_event(ws, uuid).await? {
                holders.push(ws.to_string());
            } else {
                self.unlocate(ws, &[uuid.to_string()]).await?;
            }
        }
        if let Some(archive) = &self.archive {
            for ws in archive.workspaces_with_event(uuid).await? {
                if !holders.contains(&ws) {
                    holders.push(ws);
                }
            }
        }
        Ok(holders)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_in_the_usual_forms_are_kept_in_16_bytes() {
        let own = "evt_0190f3a2b4c67d8e9fa0b1c2d3e4f506";
        assert_eq!(field(own).len(), 17);
        assert_eq!(field(own)[0], 1);
        let usual = "0190f3a2-b4c6-7d8e-9fa0-b1c2d3e4f506";
        assert_eq!(field(usual).len(), 17);
        assert_eq!(field(usual)[0], 2);
        assert_eq!(field(own)[1..], field(usual)[1..]);
        for other in [
            "evt_new",
            "order-42",
            "EVT_0190F3A2B4C67D8E9FA0B1C2D3E4F506",
            "0190f3a2-b4c6-7d8e-9fa0-b1c2d3e4f50g",
        ] {
            assert_eq!(field(other), other.as_bytes(), "{other}");
        }
    }

    #[test]
    fn a_uuid_always_falls_in_the_same_bucket() {
        assert_eq!(bucket("evt_a"), bucket("evt_a"));
        let spread: std::collections::HashSet<u64> =
            (0..1000).map(|i| bucket(&format!("evt_{i}"))).collect();
        assert!(spread.len() > 800, "{}", spread.len());
        assert!(spread.iter().all(|b| *b < BUCKETS));
    }
}
