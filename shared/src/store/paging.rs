//! Paging through the sorted-set indexes (dead letters, workspaces), newest first, by
//! cursor: a page starts from the position of the last item returned, `(score, member)`, found
//! in O(log N), so any page costs O(log N + page size) however deep it is. Never by offset: a
//! `LIMIT offset` inside Redis walks every item before the page.
//!
//! Members that share a score (the dead letters of one bulk request share a millisecond) are
//! ordered by member, as Redis orders them, so the cursor is exact between ties too: no item
//! twice, none skipped, also when the cursor's own item left the index meanwhile (replayed,
//! discarded, trimmed). Events page through their workspace's log stream instead (see
//! `history`), whose ids are unique and ordered.

use super::{RedisConn, StoreError};

/// A cursor over a sorted set, newest first: the last score and member returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// Score of the last item returned.
    pub score: i64,
    /// Member of the last item returned.
    pub member: String,
}

impl Cursor {
    /// `score~member`, as put in `next_cursor`.
    pub fn encode(&self) -> String {
        format!("{}~{}", self.score, self.member)
    }

    /// Parses a `next_cursor` value.
    pub fn decode(text: &str) -> Option<Self> {
        let (score, member) = text.split_once('~')?;
        Some(Self {
            score: score.parse().ok()?,
            member: member.to_string(),
        })
    }

    /// The cursor before everything scored at or below `score`: a walk from it starts with the
    /// newest item whose score is at most `score`.
    pub fn at_or_below(score: i64) -> Self {
        Self {
            score: score.saturating_add(1),
            member: String::new(),
        }
    }
}

/// The items older than a cursor, in one atomic step (a trim between finding the position and
/// reading the page cannot shift it). Redis orders a sorted set by score, then by member byte
/// by byte; `older` counts the members before the cursor's `(score, member)` in that order:
/// the cursor's own rank when it is still there with that score, else a binary search among
/// the members of that score (O(log N) each step). Members are compared byte by byte here too:
/// Lua's `<` on strings follows the server's locale.
///
/// KEYS: the index. ARGV: the cursor's score (empty: no cursor, start at the newest), its
/// member, how many items (0: answer only how many are older), the lowest score wanted (empty:
/// none). Answers the count (ARGV 3 = 0) or up to that many `member, score` pairs, oldest
/// first.
const OLDER_THAN: &str = r"
local function before(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local key = KEYS[1]
local older
if ARGV[1] == '' then
  older = redis.call('ZCARD', key)
else
  local current = redis.call('ZSCORE', key, ARGV[2])
  if current and tonumber(current) == tonumber(ARGV[1]) then
    older = redis.call('ZRANK', key, ARGV[2])
  else
    local lo = redis.call('ZCOUNT', key, '-inf', '(' .. ARGV[1])
    local hi = redis.call('ZCOUNT', key, '-inf', ARGV[1])
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if before(redis.call('ZRANGE', key, mid, mid)[1], ARGV[2]) then
        lo = mid + 1
      else
        hi = mid
      end
    end
    older = lo
  end
end
local n = tonumber(ARGV[3])
if n == 0 then return older end
local first = older - n
if ARGV[4] ~= '' then
  local floor = redis.call('ZCOUNT', key, '-inf', '(' .. ARGV[4])
  if first < floor then first = floor end
end
if first < 0 then first = 0 end
if first >= older then return {} end
return redis.call('ZRANGE', key, first, older - 1, 'WITHSCORES')
";

fn older_than(
    key: &str,
    cursor: Option<&Cursor>,
    count: usize,
    min_score: Option<i64>,
) -> redis::ScriptInvocation<'static> {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    let mut call = SCRIPT
        .get_or_init(|| redis::Script::new(OLDER_THAN))
        .prepare_invoke();
    call.key(key)
        .arg(cursor.map(|c| c.score.to_string()).unwrap_or_default())
        .arg(cursor.map(|c| c.member.as_str()).unwrap_or_default())
        .arg(count)
        .arg(min_score.map(|s| s.to_string()).unwrap_or_default());
    call
}

/// Up to `count` items of the index older than `cursor` (from the newest when None), newest
/// first, none scored below `min_score`.
pub(crate) async fn page_older(
    conn: &mut RedisConn,
    key: &str,
    cursor: Option<&Cursor>,
    count: usize,
    min_score: Option<i64>,
) -> Result<Vec<(String, i64)>, StoreError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let page: Vec<(String, f64)> = older_than(key, cursor, count, min_score)
        .invoke_async(conn)
        .await?;
    // Scores are Unix milliseconds, exact in a double.
    Ok(page.into_iter().rev().map(|(m, s)| (m, s as i64)).collect())
}

/// How many items of the index are older than `cursor` (what a walk from it has still to see).
pub(crate) async fn count_older(
    conn: &mut RedisConn,
    key: &str,
    cursor: Option<&Cursor>,
) -> Result<u64, StoreError> {
    Ok(older_than(key, cursor, 0, None).invoke_async(conn).await?)
}

/// Items read from the index per round trip while a filter drops some of them.
const BATCH: usize = 100;
/// The most items read from the index in one round trip.
const MAX_BATCH: usize = 250;

/// Pages through a sorted set newest first, from after `cursor`, not below `min_score`. `load`
/// turns a batch of members into items (None for those a filter drops). Stops at `limit` items
/// or after `max_scan` members; returns the items and the cursor of the next page, if there may
/// be more. Each round trip reads one batch from the cursor's position, so a request costs
/// O(log N) per batch plus the members it looks at, whatever the depth.
pub(crate) async fn scan_newest<T, F, Fut>(
    conn: &mut RedisConn,
    key: &str,
    mut cursor: Option<Cursor>,
    min_score: Option<i64>,
    limit: usize,
    max_scan: usize,
    mut load: F,
) -> Result<(Vec<T>, Option<Cursor>), StoreError>
where
    F: FnMut(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Option<T>>, StoreError>>,
{
    let mut out = Vec::new();
    let mut scanned = 0;
    loop {
        // Unfiltered, the first batch is exactly the page; after a filter dropped some, read
        // in larger batches.
        let wanted = limit - out.len();
        let batch = if scanned == 0 {
            wanted
        } else {
            wanted.max(BATCH)
        }
        .min(max_scan - scanned)
        .min(MAX_BATCH);
        let page = page_older(conn, key, cursor.as_ref(), batch, min_score).await?;
        let exhausted = page.len() < batch;
        if page.is_empty() {
            return Ok((out, None));
        }
        let items = load(page.iter().map(|(m, _)| m.clone()).collect()).await?;
        let last = page.len() - 1;
        for (i, ((member, score), item)) in page.into_iter().zip(items).enumerate() {
            scanned += 1;
            if let Some(item) = item {
                out.push(item);
            }
            if out.len() >= limit || scanned >= max_scan {
                // At the end of the index there is no next page to point at.
                let next = (!(exhausted && i == last)).then_some(Cursor { score, member });
                return Ok((out, next));
            }
            cursor = Some(Cursor { score, member });
        }
        if exhausted {
            return Ok((out, None));
        }
    }
}
