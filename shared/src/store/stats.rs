//! Per-connection delivery counters in 5-minute buckets, for the charts of the portal and the
//! console: attempts, failed attempts, dead letters and a latency histogram, so a day of a
//! connection is read from at most 289 small hashes, never from its history.
//!
//! The deliverer's outcome write (`scripts::OUTCOME`) adds to the bucket of the moment it
//! settles, in the same script that records the delivery: an attempt is counted only when the
//! record had fewer attempts, and a dead letter only when the delivery was not already that
//! dead letter, so a write sent again after a Redis failure counts nothing twice.
//!
//! Each bucket is a hash `{p}:ws:{<ws>}:stats:<connection>:<n>` (`n` = start ms / 300,000) with
//! the fields `n` (attempts), `f` (failed attempts), `d` (dead letters) and `l0`..`l25`
//! (attempts by latency, see [`LATENCY_BOUNDS_MS`]). A bucket is written only during its five
//! minutes and expires [`TTL_SECS`] after its last write, so a connection holds at most ~300
//! buckets however busy it stays.

use std::collections::HashMap;

use serde::Serialize;

use super::{Store, StoreError};
use crate::model::{Attempt, Delivery, DeliveryStatus};

/// The width of one stored bucket.
pub const BUCKET_MS: i64 = 5 * 60 * 1000;

/// How far back buckets are kept (and can be asked for).
pub const KEPT_MS: i64 = 24 * 60 * 60 * 1000;

/// A bucket expires this long after its last write: a day, and an hour so that the oldest
/// bucket of a 24-hour window is still there when it is read.
pub const TTL_SECS: i64 = 25 * 60 * 60;

/// Upper bounds (inclusive) of the latency histogram's buckets, in ms; field `l<i>` counts
/// attempts with `BOUNDS[i-1] < latency <= BOUNDS[i]`, and `l25` those above the last bound.
/// Percentiles are read by interpolating inside a bucket, so they are exact to within its width.
pub const LATENCY_BOUNDS_MS: [u64; 25] = [
    1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000,
    7_500, 10_000, 15_000, 30_000, 60_000, 120_000,
];

/// Latency fields, one more than the bounds (the overflow).
const LATENCY_FIELDS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// The histogram field of an attempt that took `ms`.
pub fn latency_field(ms: u64) -> String {
    format!("l{}", LATENCY_BOUNDS_MS.partition_point(|b| *b < ms))
}

/// Whether a request was made for this attempt. The circuit breaker's refusals count as failed
/// attempts (as in the history) but have no latency: no status and 0 ms.
fn was_sent(a: &Attempt) -> bool {
    a.status_code.is_some() || a.latency_ms > 0
}

/// What one recorded delivery adds to its connection's bucket, as the outcome script takes it:
/// the latency field of its newest attempt (`-` when no request was made, empty when it has no
/// attempt), `1` if that attempt failed, `1` if the delivery is dead.
pub(crate) fn outcome_args(d: &Delivery) -> (String, &'static str, &'static str) {
    let flag = |b: bool| if b { "1" } else { "0" };
    let (field, failed) = match d.attempts.last() {
        None => (String::new(), false),
        Some(a) if was_sent(a) => (latency_field(a.latency_ms), a.error.is_some()),
        Some(a) => ("-".to_string(), a.error.is_some()),
    };
    (field, flag(failed), flag(d.status == DeliveryStatus::Dead))
}

/// One point of a connection's chart: the bucket starting at `at`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsPoint {
    /// Unix milliseconds of the bucket's start.
    pub at: i64,
    /// Attempts made (each retry is one more).
    pub deliveries: u64,
    /// Of those, how many failed (no 2xx or 3xx, or no response).
    pub failures: u64,
    /// Deliveries dead-lettered.
    pub dead_letters: u64,
    /// Median latency of the attempts made, ms; `null` without any.
    pub p50_ms: Option<u64>,
    /// 95th percentile latency, ms; `null` without any.
    pub p95_ms: Option<u64>,
    /// Successful attempts over all attempts; `null` without any.
    pub success_rate: Option<f64>,
}

/// The counters of one or more stored buckets, added up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Attempts.
    pub deliveries: u64,
    /// Failed attempts.
    pub failures: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Attempts by latency field.
    pub latency: [u64; LATENCY_FIELDS],
}

impl Tally {
    /// Adds one stored bucket's fields (unknown fields are ignored).
    pub fn add_fields<'a>(&mut self, fields: impl IntoIterator<Item = (&'a str, u64)>) {
        for (name, value) in fields {
            match name {
                "n" => self.deliveries += value,
                "f" => self.failures += value,
                "d" => self.dead_letters += value,
                _ => {
                    let slot = name
                        .strip_prefix('l')
                        .and_then(|i| i.parse::<usize>().ok())
                        .and_then(|i| self.latency.get_mut(i));
                    if let Some(slot) = slot {
                        *slot += value;
                    }
                }
            }
        }
    }

    /// The latency below which a share `q` (0 to 1) of the attempts fall, interpolated inside
    /// its histogram bucket; `None` without any attempt. Above the last bound, the last bound.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).max(1.0);
        let mut below = 0u64;
        for (i, &count) in self.latency.iter().enumerate() {
            if count > 0 && (below + count) as f64 >= rank {
                let low = if i == 0 { 0 } else { LATENCY_BOUNDS_MS[i - 1] };
                let high = LATENCY_BOUNDS_MS.get(i).copied().unwrap_or(low);
                let share = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
                return Some((low as f64 + (high - low) as f64 * share).round() as u64);
            }
            below += count;
        }
        LATENCY_BOUNDS_MS.last().copied()
    }

    /// This tally as the point starting at `at`.
    pub fn point(&self, at: i64) -> StatsPoint {
        StatsPoint {
            at,
            deliveries: self.deliveries,
            failures: self.failures,
            dead_letters: self.dead_letters,
            p50_ms: self.quantile(0.5),
            p95_ms: self.quantile(0.95),
            success_rate: (self.deliveries > 0).then(|| {
                self.deliveries.saturating_sub(self.failures) as f64 / self.deliveries as f64
            }),
        }
    }
}

/// The points a chart asks for: from `since` (raised to the oldest bucket kept, and down to
/// its 5-minute bucket) to `now`, each `per_point` stored buckets wide. Returns the first
/// point's start and how many points; the last one holds `now`.
pub fn window(since_ms: i64, per_point: u32, now_ms: i64) -> (i64, usize) {
    let floor = |ms: i64| ms.div_euclid(BUCKET_MS) * BUCKET_MS;
    let start = floor(since_ms.max(now_ms - KEPT_MS)).min(floor(now_ms));
    let width = BUCKET_MS * i64::from(per_point.max(1));
    let count = (floor(now_ms) - start) / width + 1;
    (start, count as usize)
}

impl Store {
    /// The key of the stored bucket that holds `at_ms` for a connection of workspace `ws`.
    pub(crate) fn stats_key(&self, ws: &str, connection_id: &str, at_ms: i64) -> String {
        let n = at_ms.div_euclid(BUCKET_MS);
        self.ws_key(ws, &format!("stats:{connection_id}:{n}"))
    }

    /// A connection's points from `since_ms` to now (see [`window`]), oldest first, each
    /// `per_point` 5-minute buckets wide; every point is there, empty ones with zeros. One
    /// round trip of at most 289 `HGETALL`s of one workspace (one slot in a cluster).
    pub async fn connection_stats(
        &self,
        ws: &str,
        connection_id: &str,
        since_ms: i64,
        per_point: u32,
    ) -> Result<Vec<StatsPoint>, StoreError> {
        let now = crate::now_ms();
        let (start, count) = window(since_ms, per_point, now);
        let stored = now.div_euclid(BUCKET_MS) - start.div_euclid(BUCKET_MS) + 1;
        let mut pipe = redis::pipe();
        for i in 0..stored {
            pipe.hgetall(self.stats_key(ws, connection_id, start + i * BUCKET_MS));
        }
        let buckets: Vec<HashMap<String, u64>> = pipe.query_async(&mut self.conn()).await?;
        let per_point = per_point.max(1) as usize;
        let mut points = Vec::with_capacity(count);
        for (i, chunk) in buckets.chunks(per_point).enumerate() {
            let mut tally = Tally::default();
            for bucket in chunk {
                tally.add_fields(bucket.iter().map(|(k, v)| (k.as_str(), *v)));
            }
            points.push(tally.point(start + (i * per_point) as i64 * BUCKET_MS));
        }
        Ok(points)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(samples: &[(u64, u64)]) -> Tally {
        let mut t = Tally::default();
        for (ms, times) in samples {
            let field = latency_field(*ms);
            t.add_fields([("n", *times), (field.as_str(), *times)]);
        }
        t
    }

    #[test]
    fn latencies_land_in_the_bucket_whose_upper_bound_holds_them() {
        assert_eq!(latency_field(0), "l0");
        assert_eq!(latency_field(1), "l0");
        assert_eq!(latency_field(2), "l1");
        assert_eq!(latency_field(121), "l9");
        assert_eq!(latency_field(150), "l9");
        assert_eq!(latency_field(151), "l10");
        assert_eq!(latency_field(120_000), "l24");
        assert_eq!(latency_field(500_000), "l25");
    }

    #[test]
    fn percentiles_fall_inside_the_bucket_of_the_true_value() {
        // 16 attempts at ~120 ms, 4 at ~1,200 ms.
        let t = tally(&[(121, 16), (1_201, 4)]);
        let p50 = t.quantile(0.5).expect("p50");
        let p95 = t.quantile(0.95).expect("p95");
        assert!((100..=150).contains(&p50), "{p50}");
        assert!((1_000..=1_500).contains(&p95), "{p95}");
        assert_eq!(Tally::default().quantile(0.5), None);
        // A single sample: both percentiles in its bucket.
        let one = tally(&[(40, 1)]);
        assert!((30..=50).contains(&one.quantile(0.5).expect("p50")));
        assert!((30..=50).contains(&one.quantile(0.95).expect("p95")));
        // Beyond the last bound: the last bound.
        assert_eq!(tally(&[(900_000, 3)]).quantile(0.5), Some(120_000));
    }

    #[test]
    fn a_point_derives_its_success_rate_and_ignores_unknown_fields() {
        let mut t = Tally::default();
        t.add_fields([
            ("n", 10),
            ("f", 4),
            ("d", 1),
            ("x", 7),
            ("l99", 3),
            ("l3", 6),
        ]);
        let p = t.point(600_000);
        assert_eq!((p.deliveries, p.failures, p.dead_letters), (10, 4, 1));
        assert_eq!(p.success_rate, Some(0.6));
        assert!(p.p50_ms.is_some());
        let empty = Tally::default().point(0);
        assert_eq!(
            (empty.success_rate, empty.p50_ms, empty.p95_ms),
            (None, None, None)
        );
    }

    #[test]
    fn the_window_starts_on_a_bucket_no_older_than_a_day_and_ends_with_now() {
        let now = 1_000 * BUCKET_MS + 1234;
        // The default: a day of 5-minute points, 289 with the one in progress.
        assert_eq!(window(now - KEPT_MS, 1, now), (712 * BUCKET_MS, 289));
        // Older than a day: raised.
        assert_eq!(window(0, 1, now), (712 * BUCKET_MS, 289));
        // Hour-wide points from the last 90 minutes: 18 buckets in 2 points.
        assert_eq!(window(now - 90 * 60_000, 12, now), (982 * BUCKET_MS, 2));
        // In the future: the bucket in progress only.
        assert_eq!(window(now + 60_000, 1, now), (1_000 * BUCKET_MS, 1));
    }

    #[test]
    fn a_delivery_adds_its_newest_attempt_and_whether_it_died() {
        let attempt = |status: Option<u16>, ms: u64, error: Option<&str>| Attempt {
            at: 1,
            status_code: status,
            latency_ms: ms,
            error: error.map(str::to_string),
            response_excerpt: None,
            url: "https://example.com".into(),
            request_headers: Default::default(),
        };
        let mut d = Delivery {
            connection_id: "con_1".into(),
            status: DeliveryStatus::Retrying,
            attempts: vec![attempt(Some(500), 30, Some("status 500"))],
            next_attempt_at: None,
            dead_letter_id: None,
            updated_at: 1,
        };
        assert_eq!(outcome_args(&d), ("l5".to_string(), "1", "0"));
        d.attempts
            .push(attempt(None, 0, Some("not sent: breaker open")));
        d.status = DeliveryStatus::Dead;
        assert_eq!(outcome_args(&d), ("-".to_string(), "1", "1"));
        d.attempts.clear();
        assert_eq!(outcome_args(&d), (String::new(), "0", "1"));
        d.attempts.push(attempt(Some(200), 7, None));
        d.status = DeliveryStatus::Delivered;
        assert_eq!(outcome_args(&d), ("l3".to_string(), "0", "0"));
    }
}
