//! What an attempt's result means: success, a failure worth retrying, or a stop; and how each
//! is named in metrics. Every classification the deliverer makes is here. Pure.

use std::time::Duration;

use herald_shared::model::Attempt;
use herald_shared::retry::{decide, Decision, RetrySchedule};

/// How an attempt ended, as far as the next step cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx or 3xx.
    Success,
    /// Worth another try, maybe after the receiver's `Retry-After`.
    Failed {
        /// What went wrong.
        error: String,
        /// The receiver asked to wait this long (429 or 503).
        retry_after: Option<Duration>,
    },
    /// Stop retrying this delivery (410 Gone).
    Stop {
        /// Why.
        error: String,
    },
}

/// Classifies a response status. `retry_after` is the raw header, if any.
pub fn classify_status(status: u16, retry_after: Option<&str>) -> Verdict {
    match status {
        200..=399 => Verdict::Success,
        410 => Verdict::Stop {
            error: "410 Gone: the receiver asked for no more deliveries".into(),
        },
        429 | 503 => Verdict::Failed {
            error: format!("status {status}"),
            retry_after: retry_after.and_then(parse_retry_after),
        },
        _ => Verdict::Failed {
            error: format!("status {status}"),
            retry_after: None,
        },
    }
}

/// `Retry-After` in seconds (RFC 9110 also allows an HTTP date; receivers of webhooks almost
/// always send seconds, and a date is ignored rather than misread).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// What the deliverer does with a job after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Delivered,
    /// Back through the delay ladder.
    Retry {
        /// How long to wait.
        after: Duration,
    },
    /// Into the dead-letter queue.
    DeadLetter {
        /// Why.
        reason: String,
    },
}

/// Decides the outcome of an attempt that was the `attempts_this_round`-th of its round.
pub fn decide_outcome(
    verdict: &Verdict,
    attempts_this_round: u32,
    schedule: &RetrySchedule,
    rng: &mut impl rand::Rng,
) -> Outcome {
    match verdict {
        Verdict::Success => Outcome::Delivered,
        Verdict::Stop { error } => Outcome::DeadLetter {
            reason: error.clone(),
        },
        Verdict::Failed { error, retry_after } => {
            match decide(schedule, attempts_this_round, *retry_after, rng) {
                Decision::RetryAfter(after) => Outcome::Retry { after },
                Decision::Exhausted => Outcome::DeadLetter {
                    reason: format!(
                        "gave up after {attempts_this_round} attempts; last error: {error}"
                    ),
                },
            }
        }
    }
}

impl Outcome {
    /// The outcome's name in `herald_deliveries_total{outcome}`.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::DeadLetter { .. } => "dead",
        }
    }
}

/// An attempt's class in metrics: `2xx` to `5xx` by its response, `error` when none came.
pub fn status_class(status_code: Option<u16>) -> &'static str {
    match status_code.map(|s| s / 100) {
        Some(1) => "1xx",
        Some(2) => "2xx",
        Some(3) => "3xx",
        Some(4) => "4xx",
        Some(5) => "5xx",
        Some(_) => "other",
        None => "error",
    }
}

/// The class of an attempt the circuit breaker refused (no request was made).
pub const BREAKER_OPEN_CLASS: &str = "breaker_open";

/// The attempt recorded when a connection's circuit breaker refuses a job: no request is made,
/// it counts as a failed attempt, and the next try waits at least until the next probe.
pub fn refused_by_breaker(url: &str, retry_in: Duration, at_ms: i64) -> (Attempt, Verdict) {
    let error = format!(
        "not sent: the connection's circuit breaker is open after repeated failures; next probe in {} s",
        retry_in.as_secs().max(1)
    );
    let attempt = Attempt {
        at: at_ms,
        status_code: None,
        latency_ms: 0,
        error: Some(error.clone()),
        response_excerpt: None,
        url: url.to_string(),
        request_headers: Default::default(),
    };
    let verdict = Verdict::Failed {
        error,
        retry_after: Some(retry_in),
    };
    (attempt, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    #[test]
    fn two_and_three_hundreds_succeed() {
        assert_eq!(classify_status(200, None), Verdict::Success);
        assert_eq!(classify_status(204, None), Verdict::Success);
        assert_eq!(classify_status(302, None), Verdict::Success);
    }

    #[test]
    fn other_statuses_fail_and_gone_stops() {
        assert!(matches!(classify_status(500, None), Verdict::Failed { .. }));
        assert!(matches!(classify_status(404, None), Verdict::Failed { .. }));
        assert!(matches!(classify_status(410, None), Verdict::Stop { .. }));
        assert_eq!(
            classify_status(429, Some("30")),
            Verdict::Failed {
                error: "status 429".into(),
                retry_after: Some(Duration::from_secs(30))
            }
        );
        assert_eq!(
            classify_status(503, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Verdict::Failed {
                error: "status 503".into(),
                retry_after: None
            }
        );
    }

    #[test]
    fn failures_retry_until_the_schedule_runs_out() {
        let schedule = RetrySchedule::parse("1s,1s").expect("valid");
        let mut rng = StdRng::seed_from_u64(0);
        let failed = classify_status(500, None);
        assert_eq!(
            decide_outcome(&failed, 1, &schedule, &mut rng),
            Outcome::Retry {
                after: Duration::from_secs(1)
            }
        );
        assert!(matches!(
            decide_outcome(&failed, 3, &schedule, &mut rng),
            Outcome::DeadLetter { .. }
        ));
        assert!(matches!(
            decide_outcome(&classify_status(410, None), 1, &schedule, &mut rng),
            Outcome::DeadLetter { .. }
        ));
    }

    #[test]
    fn classes_name_the_response_or_its_absence() {
        assert_eq!(status_class(Some(204)), "2xx");
        assert_eq!(status_class(Some(503)), "5xx");
        assert_eq!(status_class(None), "error");
    }

    #[test]
    fn a_breaker_refusal_is_a_failed_attempt_that_waits_for_the_probe() {
        let (attempt, verdict) = refused_by_breaker("https://x.test/", Duration::from_secs(30), 7);
        assert_eq!(attempt.status_code, None);
        assert_eq!(attempt.at, 7);
        assert!(attempt
            .error
            .as_deref()
            .unwrap_or("")
            .contains("next probe in 30 s"));
        assert!(matches!(
            verdict,
            Verdict::Failed { retry_after: Some(d), .. } if d == Duration::from_secs(30)
        ));
    }
}
