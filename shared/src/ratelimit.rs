//! Rate limits that hold across every replica: the state lives in Redis and each check is one
//! round trip (a Lua script, so check-and-update is atomic).
//!
//! The algorithm is GCRA (the generic cell rate algorithm, as in ATM networks and
//! `redis-cell`): one number per limited key, the "theoretical arrival time" `tat` of the next
//! unit. A request of `cost` units at `now` is allowed when `tat + cost * interval - burst *
//! interval <= now`, and then moves `tat` on by `cost * interval`. The burst is one second's
//! worth of units; a single request larger than the burst is let through when the bucket is full
//! (and puts the key in debt for the time it represents), so a bulk request can never be refused
//! forever. Time is Redis's (`TIME`), so replicas' clocks do not matter.

use std::time::Duration;

use crate::store::{Store, StoreError};

/// What a check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead (the units are counted).
    Allowed,
    /// Over the limit; nothing was counted. Try again after this long.
    Limited {
        /// How long until the request would be allowed.
        retry_after: Duration,
    },
}

/// The pure algorithm, in microseconds, for one key: the state `tat` before and after.
/// Mirrors [`SCRIPT`], which is what runs; kept here so the arithmetic can be tested.
pub fn gcra(tat: i64, now: i64, per_second: u32, cost: u32) -> (Decision, i64) {
    let interval = 1_000_000 / i64::from(per_second.max(1));
    let cost = i64::from(cost);
    let burst = i64::from(per_second.max(1)).max(cost);
    let tat = tat.max(now);
    let new_tat = tat + cost * interval;
    let allow_at = new_tat - burst * interval;
    if allow_at > now {
        let wait = u64::try_from(allow_at - now).unwrap_or(0);
        return (
            Decision::Limited {
                retry_after: Duration::from_micros(wait),
            },
            tat,
        );
    }
    (Decision::Allowed, new_tat)
}

/// [`gcra`] in Redis. KEYS[1] the key; ARGV interval (µs), burst, cost. Returns 0 when
/// allowed, else the microseconds to wait.
const SCRIPT: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
if cost > burst then burst = cost end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + cost * interval
local allow_at = new_tat - burst * interval
if allow_at > now then return allow_at - now end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return 0
";

/// Rate limits kept in Redis under `{prefix}:rl:`.
#[derive(Clone)]
pub struct RateLimiter {
    store: Store,
    script: std::sync::Arc<redis::Script>,
}

impl RateLimiter {
    /// A limiter over the store's Redis.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            script: std::sync::Arc::new(redis::Script::new(SCRIPT)),
        }
    }

    /// Counts `cost` units against `key`'s limit of `per_second`, if they fit.
    pub async fn check(
        &self,
        key: &str,
        per_second: u32,
        cost: u32,
    ) -> Result<Decision, StoreError> {
        let per_second = per_second.max(1);
        let interval = 1_000_000 / i64::from(per_second);
        let wait: i64 = self
            .script
            .key(self.store.key(&format!("rl:{key}")))
            .arg(interval)
            .arg(per_second)
            .arg(cost.max(1))
            .invoke_async(&mut self.store.conn())
            .await?;
        Ok(if wait <= 0 {
            Decision::Allowed
        } else {
            Decision::Limited {
                retry_after: Duration::from_micros(wait as u64),
            }
        })
    }

    /// Waits until one unit of `key` fits under `per_second`, and counts it. When Redis cannot
    /// be asked, goes ahead (a limiter outage must not stop deliveries) and counts the failure.
    /// Returns how long it waited.
    pub async fn acquire(&self, key: &str, per_second: u32, scope: &'static str) -> Duration {
        let started = tokio::time::Instant::now();
        loop {
            match self.check(key, per_second, 1).await {
                Ok(Decision::Allowed) => return started.elapsed(),
                Ok(Decision::Limited { retry_after }) => {
                    metrics::counter!("herald_rate_limited_total", "scope" => scope).increment(1);
                    tokio::time::sleep(retry_after.max(Duration::from_millis(1))).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "rate limiter unavailable; going ahead unlimited");
                    metrics::counter!("herald_rate_limiter_errors_total", "scope" => scope)
                        .increment(1);
                    return started.elapsed();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    #[test]
    fn a_burst_of_one_second_passes_then_the_rate_holds() {
        let (mut tat, now) = (0, 100 * S);
        for _ in 0..5 {
            let (d, next) = gcra(tat, now, 5, 1);
            assert_eq!(d, Decision::Allowed);
            tat = next;
        }
        let (d, same) = gcra(tat, now, 5, 1);
        assert_eq!(
            d,
            Decision::Limited {
                retry_after: Duration::from_millis(200)
            }
        );
        assert_eq!(same, tat, "a refused request counts nothing");
        let (d, _) = gcra(tat, now + S / 5, 5, 1);
        assert_eq!(d, Decision::Allowed, "one slot frees every 200 ms");
    }

    #[test]
    fn a_request_larger_than_the_burst_passes_when_the_bucket_is_full_then_owes() {
        let now = 100 * S;
        let (d, tat) = gcra(0, now, 10, 50);
        assert_eq!(d, Decision::Allowed);
        assert_eq!(tat, now + 5 * S);
        let (d, _) = gcra(tat, now, 10, 1);
        assert_eq!(
            d,
            Decision::Limited {
                retry_after: Duration::from_micros((4 * S + S / 10) as u64)
            }
        );
    }

    #[tokio::test]
    async fn the_redis_script_allows_the_burst_then_refuses_with_a_wait() {
        let settings =
            crate::config::CommonSettings::from_source(&crate::config::Source::from_pairs([(
                "HERALD_REDIS_PREFIX",
                format!("herald-test-{}", crate::ids::random_base62(10)),
            )]))
            .expect("settings");
        let store = Store::connect(&settings, &tokio_util::sync::CancellationToken::new())
            .await
            .expect("redis");
        let limiter = RateLimiter::new(store);
        for _ in 0..4 {
            assert_eq!(
                limiter.check("k", 4, 1).await.expect("ok"),
                Decision::Allowed
            );
        }
        match limiter.check("k", 4, 1).await.expect("ok") {
            Decision::Limited { retry_after } => {
                assert!(retry_after <= Duration::from_millis(250), "{retry_after:?}")
            }
            Decision::Allowed => panic!("the fifth in one second must wait"),
        }
        assert_eq!(
            limiter.check("other", 4, 1).await.expect("ok"),
            Decision::Allowed,
            "keys are limited separately"
        );
        assert_eq!(
            limiter.check("bulk", 4, 100).await.expect("ok"),
            Decision::Allowed,
            "a request larger than the burst passes once"
        );
        assert!(matches!(
            limiter.check("bulk", 4, 1).await.expect("ok"),
            Decision::Limited { retry_after } if retry_after > Duration::from_secs(20)
        ));
    }

    #[test]
    fn idle_time_does_not_accumulate_beyond_the_burst() {
        let now = 100 * S;
        let mut tat = 0;
        let mut allowed = 0;
        for _ in 0..20 {
            let (d, next) = gcra(tat, now, 3, 1);
            if d == Decision::Allowed {
                allowed += 1;
            }
            tat = next;
        }
        assert_eq!(allowed, 3);
    }
}
