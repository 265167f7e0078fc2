//! The Redis scripts that read and splice history records (see `record` for the format) and
//! keep a workspace's history trimmed to the retention. Every script touches the keys of one
//! workspace only.

/// Parsing and building a record, and adding an event to the workspace's log: a stream whose
/// entry ids are the event's `time_created`, raised to the newest entry's when older (a stream
/// only grows) and to `floor` (a minute before now) so that an event a producer dated long ago
/// is still kept a retention from when it was recorded. An entry costs ~50 bytes where a sorted
/// set's costs ~150.
const COMMON: &str = r"
local function parse(rec)
  local created, exp, routed, p = string.match(rec, '^H (%S+) (%S+) (%S+)\n()')
  local ds = {}
  while string.sub(rec, p, p) == 'D' do
    local cid, n, len, q = string.match(rec, '^D (%S+) (%d+) (%d+)\n()', p)
    len = tonumber(len)
    ds[#ds + 1] = {cid, n, string.sub(rec, q, q + len - 1)}
    p = q + len
  end
  local ev = nil
  if p <= #rec then ev = string.sub(rec, p) end
  return {created, exp, routed}, ds, ev
end
local function build(h, ds, ev)
  local parts = {'H ', h[1], ' ', h[2], ' ', h[3], '\n'}
  for _, d in ipairs(ds) do
    parts[#parts + 1] = 'D ' .. d[1] .. ' ' .. d[2] .. ' ' .. #d[3] .. '\n' .. d[3]
  end
  if ev then parts[#parts + 1] = ev end
  return table.concat(parts)
end
local function index(log, ms, floor, uuid)
  ms = math.max(tonumber(ms), tonumber(floor))
  local last = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)
  if last[1] then
    local newest = tonumber(string.match(last[1][1], '^(%d+)'))
    if newest > ms then ms = newest end
  end
  if ms < 0 then ms = 0 end
  redis.call('XADD', log, string.format('%d-*', ms), 'u', uuid)
end
";

/// Records a routed event. KEYS: history, log. ARGV: uuid, time_created, routed count, event
/// part, floor, then (connection, pending delivery) pairs. Never overwrites what is there: the first
/// copy of the event and its count stay, a delivery already recorded keeps its outcome.
pub const ROUTE: &str = r"
local rec = redis.call('HGET', KEYS[1], ARGV[1])
local h, ds, ev = {ARGV[2], '-', '-'}, {}, nil
if rec then h, ds, ev = parse(rec) end
local changed = not rec
if not ev then ev = ARGV[4]; changed = true end
if h[3] == '-' then h[3] = ARGV[3]; changed = true end
local have = {}
for _, d in ipairs(ds) do have[d[1]] = true end
for i = 6, #ARGV, 2 do
  if not have[ARGV[i]] then ds[#ds + 1] = {ARGV[i], '0', ARGV[i + 1]}; changed = true end
end
if changed then redis.call('HSET', KEYS[1], ARGV[1], build(h, ds, ev)) end
if not rec then index(KEYS[2], ARGV[2], ARGV[5], ARGV[1]) end
return 0
";

/// Records where one delivery stands, and counts it in its connection's stats bucket (see
/// `stats`). KEYS: history, log, stats bucket. ARGV: uuid, time_created, connection, attempts,
/// delivery, floor, bucket ttl s, latency field of the newest attempt (`-` none, empty when
/// no attempt), `1` if it failed, `1` if dead. The newest attempt is counted only when the
/// record had fewer attempts, the dead letter only when the delivery was not already dead with
/// as many attempts: the same write run again (also rebuilt with a later update time, as a
/// settle retry does) counts nothing. Returns 1 when the record did not exist (it is
/// created, so an outcome is never lost, and indexed so that it is trimmed too).
pub const OUTCOME: &str = r"
local rec = redis.call('HGET', KEYS[1], ARGV[1])
local line = 'D ' .. ARGV[3] .. ' ' .. ARGV[4] .. ' ' .. #ARGV[5] .. '\n' .. ARGV[5]
local had, was = 0, nil
if rec then
  -- Splice the one delivery line in place (or after the last), leaving the rest as it is:
  -- the event part, most of the record, is copied but never split up or parsed.
  local p = string.find(rec, '\n', 1, true) + 1
  local at, after = nil, nil
  while string.byte(rec, p) == 68 do
    local cid, n, len, q = string.match(rec, '^D (%S+) (%d+) (%d+)\n()', p)
    local e = q + tonumber(len)
    if cid == ARGV[3] then had = tonumber(n); was = string.sub(rec, q, e - 1); at = p; after = e end
    p = e
  end
  if not at then at = p; after = p end
  redis.call('HSET', KEYS[1], ARGV[1], string.sub(rec, 1, at - 1) .. line .. string.sub(rec, after))
else
  redis.call('HSET', KEYS[1], ARGV[1], 'H ' .. ARGV[2] .. ' - -\n' .. line)
end
if was ~= ARGV[5] then
  local counted = false
  if ARGV[8] ~= '' and had < tonumber(ARGV[4]) then
    redis.call('HINCRBY', KEYS[3], 'n', 1)
    if ARGV[8] ~= '-' then redis.call('HINCRBY', KEYS[3], ARGV[8], 1) end
    if ARGV[9] == '1' then redis.call('HINCRBY', KEYS[3], 'f', 1) end
    counted = true
  end
  local dead_already = was and string.sub(was, 1, 4) == '[\34x\34' and had == tonumber(ARGV[4])
  if ARGV[10] == '1' and not dead_already then
    redis.call('HINCRBY', KEYS[3], 'd', 1); counted = true
  end
  if counted then redis.call('EXPIRE', KEYS[3], ARGV[7]) end
end
if not rec then index(KEYS[2], ARGV[2], ARGV[6], ARGV[1]); return 1 end
return 0
";

/// A replayed dead letter: the dead letter leaves the index, and the delivery is pending again
/// if it still has the attempts it died with. KEYS: the dead letter, the dead-letter index,
/// history. ARGV: dead-letter id, its dead_at, uuid, connection, attempts when it died, the
/// pending delivery.
pub const MARK_REPLAYED: &str = r"
local dead = redis.call('GET', KEYS[1])
if dead and cjson.decode(dead).dead_at == tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
local rec = redis.call('HGET', KEYS[3], ARGV[3])
if not rec then return 0 end
local h, ds, ev = parse(rec)
for _, d in ipairs(ds) do
  if d[1] == ARGV[4] and d[2] == ARGV[5] then
    d[3] = ARGV[6]
    redis.call('HSET', KEYS[3], ARGV[3], build(h, ds, ev))
  end
end
return 0
";

/// Claims events for expanding, one answer each: `0` expanded within the dedup window, `1`
/// claimed (a lease set), `2` another router holds the lease. KEYS: history, then for each
/// event its lease, the claim kept past the retention (see `routing`) and its hash as earlier
/// versions wrote it. ARGV: lease ms, now ms, dedup window ms, then the uuids. One call per
/// message, not per event: the call's own cost is paid once.
pub const CLAIM: &str = r"
local out = {}
for i = 4, #ARGV do
  local k = 2 + (i - 4) * 3
  local code = 2
  local rec = redis.call('HGET', KEYS[1], ARGV[i])
  local created, exp = nil, '-'
  if rec then created, exp = string.match(rec, '^H (%S+) (%S+)') end
  if exp ~= '-' and tonumber(created) + tonumber(exp) + tonumber(ARGV[3]) > tonumber(ARGV[2]) then
    code = 0
  elseif redis.call('EXISTS', KEYS[k + 1]) == 1 then
    code = 0
  elseif redis.call('HEXISTS', KEYS[k + 2], 'expanded') == 1 then
    code = 0
  elseif redis.call('SET', KEYS[k], '1', 'NX', 'PX', ARGV[1]) then
    code = 1
  end
  out[#out + 1] = code
end
return out
";

/// Marks events expanded at `now` and drops their leases. KEYS: history, log, then each
/// event's lease. ARGV: now ms, floor, then the uuids. A record trimmed meanwhile is written
/// again (head only, indexed), so the claim holds.
pub const EXPANDED: &str = r"
for i = 3, #ARGV do
  local uuid = ARGV[i]
  local rec = redis.call('HGET', KEYS[1], uuid)
  if rec then
    local created, rest = string.match(rec, '^H (%S+) %S+ (.*)$')
    local exp = string.format('%d', tonumber(ARGV[1]) - tonumber(created))
    redis.call('HSET', KEYS[1], uuid, 'H ' .. created .. ' ' .. exp .. ' ' .. rest)
  else
    redis.call('HSET', KEYS[1], uuid, 'H ' .. ARGV[1] .. ' 0 -\n')
    index(KEYS[2], ARGV[1], ARGV[2], uuid)
  end
  redis.call('DEL', KEYS[i])
end
return 0
";

/// Trims a workspace's history to the retention: the oldest entries of the log up to the
/// cutoff, and their records, at most ARGV[2] per call (each write trims, so a busy workspace
/// keeps up). KEYS: history, log. ARGV: cutoff ms, most entries. Returns the uuids that went
/// (their locators go next, see `locator`).
pub const TRIM: &str = r"
local old = redis.call('XRANGE', KEYS[2], '-', ARGV[1], 'COUNT', ARGV[2])
if #old == 0 then return {} end
local ids, uuids = {}, {}
for i, e in ipairs(old) do ids[i] = e[1]; uuids[i] = e[2][2] end
redis.call('HDEL', KEYS[1], unpack(uuids))
redis.call('XDEL', KEYS[2], unpack(ids))
return uuids
";

/// `script` with the shared functions in front.
pub fn with_common(script: &str) -> String {
    format!("{COMMON}{script}")
}
