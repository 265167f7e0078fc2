//! Retry policy: when a failed delivery is tried again, and how that wait is laid out in the
//! broker.
//!
//! The schedule is an explicit list of delays (`HERALD_RETRY_SCHEDULE`), not a formula, and the
//! wait happens in RabbitMQ rather than in a sleeping task, so a pure `decide` function over
//! (attempts made, schedule, `Retry-After`) is all a deliverer needs. The `backoff` crate models
//! in-process sleeps from a multiplier; Herald uses it for reconnecting to the broker and Redis
//! instead (see `amqp::connection`).
//!
//! The broker delay is a *binary ladder*: queues `herald.ladder.1s`, `2s`, `4s` ... `65536s`,
//! each with a fixed TTL. A delay of d seconds is written in binary in the routing key, and the
//! message walks down from its highest set bit to its lowest, then into the jobs queue (see
//! `amqp::topology`). Every queue holds messages of one TTL, so expiry is always at the head:
//! no per-message-TTL head-of-line blocking, and any delay up to about 36 hours is exact to the
//! second.

use std::time::Duration;

use rand::Rng;

/// Number of rungs in the delay ladder: delays up to 2^17 - 1 seconds (about 36 hours).
pub const LADDER_BITS: u32 = 17;

/// Longest delay the ladder can express.
pub const MAX_DELAY: Duration = Duration::from_secs((1 << LADDER_BITS) - 1);

/// Longest `Retry-After` a receiver can ask for and be honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 3600);

/// Delays between attempts; its length is the number of retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl Default for RetrySchedule {
    /// Eight attempts over about a day: now, then 5s, 5m, 30m, 2h, 5h, 10h, 10h.
    fn default() -> Self {
        Self(
            [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
        )
    }
}

impl RetrySchedule {
    /// Parses `5s,5m,30m,2h`. An empty string means no retries.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() || text == "none" {
            return Ok(Self(Vec::new()));
        }
        let delays = text
            .split(',')
            .map(|part| {
                let d = crate::duration::parse_duration(part)
                    .ok_or_else(|| format!("{part:?} is not a duration such as 5s, 5m or 2h"))?;
                if d > MAX_DELAY {
                    return Err(format!("{part:?} is longer than the longest delay, 36h"));
                }
                Ok(d)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if delays.len() > 50 {
            return Err("at most 50 retries".into());
        }
        Ok(Self(delays))
    }

    /// A schedule of the given delays.
    pub fn new(delays: Vec<Duration>) -> Self {
        Self(delays)
    }

    /// How many times a failed delivery is retried.
    pub fn retries(&self) -> usize {
        self.0.len()
    }

    /// The delays, in order.
    pub fn delays(&self) -> &[Duration] {
        &self.0
    }
}

/// What happens after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try again after this long.
    RetryAfter(Duration),
    /// The schedule is used up: dead-letter it.
    Exhausted,
}

/// Decides what follows the `attempts_made`-th failed attempt (1 for the first).
///
/// The scheduled delay gets +-20 % jitter (so a receiver that came back is not hit by every
/// retry at once), is rounded to whole seconds (the ladder's resolution), and is stretched to a
/// receiver's `Retry-After` when that is longer, capped at [`MAX_RETRY_AFTER`].
pub fn decide(
    schedule: &RetrySchedule,
    attempts_made: u32,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Decision {
    let Some(base) = schedule
        .delays()
        .get((attempts_made as usize).saturating_sub(1))
    else {
        return Decision::Exhausted;
    };
    let factor = rng.gen_range(0.8..=1.2);
    let mut delay = Duration::from_secs_f64(base.as_secs_f64() * factor);
    if let Some(asked) = retry_after {
        delay = delay.max(asked.min(MAX_RETRY_AFTER));
    }
    let secs = delay.as_secs_f64().round() as u64;
    let secs = if base.is_zero() && retry_after.is_none() {
        0
    } else {
        secs.clamp(1, MAX_DELAY.as_secs())
    };
    Decision::RetryAfter(Duration::from_secs(secs))
}

/// The routing key that carries a delay through the ladder: one word per bit, highest first,
/// e.g. 5 s over 4 bits would be `0.1.0.1`.
pub fn ladder_routing_key(delay: Duration) -> String {
    let secs = delay.as_secs().min(MAX_DELAY.as_secs());
    (0..LADDER_BITS)
        .rev()
        .map(|bit| if secs & (1 << bit) != 0 { "1" } else { "0" })
        .collect::<Vec<_>>()
        .join(".")
}

/// The ladder rungs (bit numbers) a delay passes through, highest first; their TTLs add up to
/// the delay.
pub fn ladder_path(delay: Duration) -> Vec<u32> {
    let secs = delay.as_secs().min(MAX_DELAY.as_secs());
    (0..LADDER_BITS)
        .rev()
        .filter(|bit| secs & (1 << bit) != 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    #[test]
    fn default_is_eight_attempts_over_about_a_day() {
        let s = RetrySchedule::default();
        assert_eq!(s.retries() + 1, 8);
        let total: Duration = s.delays().iter().sum();
        assert!(total > Duration::from_secs(20 * 3600) && total < Duration::from_secs(36 * 3600));
    }

    #[test]
    fn schedule_parses_and_rejects_clearly() {
        let s = RetrySchedule::parse("1s, 1s,5m").expect("valid");
        assert_eq!(
            s.delays(),
            &[
                Duration::from_secs(1),
                Duration::from_secs(1),
                Duration::from_secs(300)
            ]
        );
        assert!(RetrySchedule::parse("1s,later")
            .expect_err("invalid")
            .contains("later"));
        assert!(RetrySchedule::parse("40h").is_err());
        assert_eq!(RetrySchedule::parse("").expect("empty").retries(), 0);
    }

    #[test]
    fn the_schedule_runs_out_after_its_length() {
        let s = RetrySchedule::parse("1s,1s,1s").expect("valid");
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 1..=3 {
            assert_eq!(
                decide(&s, attempt, None, &mut rng),
                Decision::RetryAfter(Duration::from_secs(1))
            );
        }
        assert_eq!(decide(&s, 4, None, &mut rng), Decision::Exhausted);
    }

    #[test]
    fn jitter_stays_within_a_fifth_of_the_delay() {
        let s = RetrySchedule::parse("100s").expect("valid");
        let mut rng = StdRng::seed_from_u64(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let Decision::RetryAfter(d) = decide(&s, 1, None, &mut rng) else {
                panic!("must retry")
            };
            assert!((80..=120).contains(&d.as_secs()), "{d:?}");
            seen.insert(d.as_secs());
        }
        assert!(seen.len() > 10, "jitter spreads the retries");
    }

    #[test]
    fn retry_after_stretches_the_delay_within_bounds() {
        let s = RetrySchedule::parse("5s").expect("valid");
        let mut rng = StdRng::seed_from_u64(3);
        assert_eq!(
            decide(&s, 1, Some(Duration::from_secs(120)), &mut rng),
            Decision::RetryAfter(Duration::from_secs(120))
        );
        assert_eq!(
            decide(&s, 1, Some(Duration::from_secs(10 * 86_400)), &mut rng),
            Decision::RetryAfter(MAX_RETRY_AFTER)
        );
        let Decision::RetryAfter(d) = decide(&s, 1, Some(Duration::ZERO), &mut rng) else {
            panic!("must retry")
        };
        assert!(d >= Duration::from_secs(4));
    }

    #[test]
    fn ladder_key_spells_the_delay_in_binary() {
        let key = ladder_routing_key(Duration::from_secs(5));
        let words: Vec<&str> = key.split('.').collect();
        assert_eq!(words.len(), LADDER_BITS as usize);
        assert_eq!(&words[words.len() - 3..], ["1", "0", "1"]);
        assert_eq!(ladder_path(Duration::from_secs(5)), vec![2, 0]);
        let path = ladder_path(Duration::from_secs(36_000));
        assert_eq!(path.iter().map(|b| 1u64 << b).sum::<u64>(), 36_000);
        assert_eq!(ladder_path(Duration::from_secs(1)), vec![0]);
    }
}
