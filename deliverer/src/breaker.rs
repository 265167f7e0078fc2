//! A circuit breaker per connection: after a run of failed attempts the connection is not
//! called for a cool-down; then one probe decides whether it closes again or stays open for
//! twice as long. Pure (the clock is passed in); each deliverer keeps its own. (Over 400 lines
//! only for its unit tests, which walk every transition.)

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where a connection's breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls go through.
    Closed,
    /// No calls until the cool-down ends.
    Open,
    /// One probe call is deciding.
    HalfOpen,
}

impl State {
    /// The state's name in metrics and the history.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// What a job may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Send it.
    Send,
    /// Send it as the probe: its result closes or re-opens the breaker.
    Probe,
    /// Do not call the connection; it may be tried again after this long.
    Reject {
        /// Time left until the breaker lets a probe through.
        retry_in: Duration,
    },
}

/// A change of state, for the history and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The new state.
    pub to: State,
    /// Consecutive failed attempts behind the change.
    pub failures: u32,
    /// How long the breaker stays open (when it opened).
    pub open_for: Option<Duration>,
}

/// When breakers open and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Consecutive failed attempts that open the breaker.
    pub failures: u32,
    /// The first cool-down; doubled after each failed probe, up to `max_cooldown`.
    pub cooldown: Duration,
    /// The longest cool-down.
    pub max_cooldown: Duration,
    /// How long a probe may take before it counts as lost (its job cancelled) and another is let
    /// through: longer than any request timeout.
    pub probe_timeout: Duration,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { since: Instant },
}

#[derive(Debug)]
struct Entry {
    phase: Phase,
    failures: u32,
    cooldown: Duration,
}

/// What an admission knows of the call besides its connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Call {
    /// A fingerprint of the connection's delivery settings (URL, credentials, headers,
    /// enabled): when it changes, the breaker starts over, since the failures were about the
    /// old settings.
    pub settings: u64,
    /// An explicit replay by a person: sent at once, as the probe, even while the breaker is
    /// open.
    pub replay: bool,
}

/// Every connection's breaker in this process.
pub struct Breakers {
    policy: Policy,
    entries: Mutex<HashMap<String, Entry>>,
    /// The settings fingerprint each connection was last admitted with (one per connection
    /// seen, like the connection's slots).
    settings: Mutex<HashMap<String, u64>>,
}

impl Breakers {
    /// No breaker open.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            entries: Mutex::new(HashMap::new()),
            settings: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a job for `connection` may call it now. An open breaker whose cool-down ended
    /// lets exactly one probe through.
    pub fn admit(&self, connection: &str, now: Instant) -> (Admit, Option<Transition>) {
        self.admit_call(connection, Call::default(), now)
    }

    /// [`Breakers::admit`], knowing the connection's settings and whether this is a replay.
    pub fn admit_call(
        &self,
        connection: &str,
        call: Call,
        now: Instant,
    ) -> (Admit, Option<Transition>) {
        let changed = {
            let mut seen = self.settings.lock().unwrap_or_else(|p| p.into_inner());
            seen.insert(connection.to_string(), call.settings)
                .is_some_and(|before| before != call.settings)
        };
        let mut entries = self.entries();
        if changed {
            // The connection was fixed (or changed): its past failures say nothing about it now.
            let reset = entries
                .remove(connection)
                .filter(|e| !matches!(e.phase, Phase::Closed));
            let t = reset.map(|e| Transition {
                to: State::Closed,
                failures: e.failures,
                open_for: None,
            });
            return (Admit::Send, t);
        }
        let Some(e) = entries.get_mut(connection) else {
            return (Admit::Send, None);
        };
        if call.replay && !matches!(e.phase, Phase::Closed) {
            let was_open = matches!(e.phase, Phase::Open { .. });
            e.phase = Phase::HalfOpen { since: now };
            let t = was_open.then_some(Transition {
                to: State::HalfOpen,
                failures: e.failures,
                open_for: None,
            });
            return (Admit::Probe, t);
        }
        match e.phase {
            Phase::Closed => (Admit::Send, None),
            Phase::Open { until } if now >= until => {
                e.phase = Phase::HalfOpen { since: now };
                let t = Transition {
                    to: State::HalfOpen,
                    failures: e.failures,
                    open_for: None,
                };
                (Admit::Probe, Some(t))
            }
            Phase::Open { until } => (
                Admit::Reject {
                    retry_in: until - now,
                },
                None,
            ),
            // A probe that never reported (its job was cancelled) is given up on.
            Phase::HalfOpen { since } if now.duration_since(since) >= self.policy.probe_timeout => {
                e.phase = Phase::HalfOpen { since: now };
                (Admit::Probe, None)
            }
            // The probe is out: the others wait about as long as it may take.
            Phase::HalfOpen { .. } => (
                Admit::Reject {
                    retry_in: self.policy.cooldown,
                },
                None,
            ),
        }
    }

    /// Records an attempt's result. `probe` says whether it was the half-open probe.
    pub fn record(
        &self,
        connection: &str,
        success: bool,
        probe: bool,
        now: Instant,
    ) -> Option<Transition> {
        let mut entries = self.entries();
        if success && !entries.contains_key(connection) {
            return None;
        }
        let e = entries.entry(connection.to_string()).or_insert(Entry {
            phase: Phase::Closed,
            failures: 0,
            cooldown: self.policy.cooldown,
        });
        match (&e.phase, success, probe) {
            (Phase::HalfOpen { .. }, true, true) => {
                let failures = e.failures;
                entries.remove(connection);
                Some(Transition {
                    to: State::Closed,
                    failures,
                    open_for: None,
                })
            }
            (Phase::HalfOpen { .. }, false, true) => {
                e.failures += 1;
                e.cooldown = (e.cooldown * 2).min(self.policy.max_cooldown);
                e.phase = Phase::Open {
                    until: now + e.cooldown,
                };
                Some(Transition {
                    to: State::Open,
                    failures: e.failures,
                    open_for: Some(e.cooldown),
                })
            }
            (Phase::Closed, true, _) => {
                entries.remove(connection);
                None
            }
            (Phase::Closed, false, _) => {
                e.failures += 1;
                if e.failures < self.policy.failures {
                    return None;
                }
                e.phase = Phase::Open {
                    until: now + e.cooldown,
                };
                Some(Transition {
                    to: State::Open,
                    failures: e.failures,
                    open_for: Some(e.cooldown),
                })
            }
            // Requests that started before the breaker opened change nothing.
            _ => None,
        }
    }

    /// How many breakers are open or probing.
    pub fn open(&self) -> usize {
        self.entries()
            .values()
            .filter(|e| !matches!(e.phase, Phase::Closed))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers() -> Breakers {
        Breakers::new(Policy {
            failures: 3,
            cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(25),
            probe_timeout: Duration::from_secs(60),
        })
    }

    /// Breakers with connection `c` just opened by three failures, and when.
    fn opened() -> (Breakers, Instant) {
        let b = breakers();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.record("c", false, false, t0);
        }
        (b, t0)
    }

    #[test]
    fn a_run_of_failures_opens_and_a_success_in_between_resets_it() {
        let b = breakers();
        let t0 = Instant::now();
        assert_eq!(b.record("c", false, false, t0), None);
        assert_eq!(b.record("c", false, false, t0), None);
        assert_eq!(b.record("c", true, false, t0), None);
        assert_eq!(b.record("c", false, false, t0), None);
        assert_eq!(b.record("c", false, false, t0), None);
        let opened = b.record("c", false, false, t0).expect("opens");
        assert_eq!(opened.to, State::Open);
        assert_eq!(opened.failures, 3);
        assert_eq!(opened.open_for, Some(Duration::from_secs(10)));
        assert_eq!(b.open(), 1);
        assert_eq!(
            b.admit("c", t0 + Duration::from_secs(4)).0,
            Admit::Reject {
                retry_in: Duration::from_secs(6)
            }
        );
        // Other connections are not affected.
        assert_eq!(b.admit("other", t0).0, Admit::Send);
    }

    #[test]
    fn after_the_cooldown_one_probe_decides() {
        let (b, t0) = opened();
        let later = t0 + Duration::from_secs(10);
        let (admit, t) = b.admit("c", later);
        assert_eq!(admit, Admit::Probe);
        assert_eq!(t.expect("half-open").to, State::HalfOpen);
        // Only one probe at a time.
        assert!(matches!(b.admit("c", later).0, Admit::Reject { .. }));
        // A failed probe re-opens for twice as long, capped.
        let t = b.record("c", false, true, later).expect("re-opens");
        assert_eq!(t.open_for, Some(Duration::from_secs(20)));
        let (admit, _) = b.admit("c", later + Duration::from_secs(20));
        assert_eq!(admit, Admit::Probe);
        let t = b
            .record("c", false, true, later + Duration::from_secs(20))
            .expect("re-opens");
        assert_eq!(t.open_for, Some(Duration::from_secs(25)));
        // A successful probe closes it.
        let at = later + Duration::from_secs(45);
        assert_eq!(b.admit("c", at).0, Admit::Probe);
        assert_eq!(
            b.record("c", true, true, at).expect("closes").to,
            State::Closed
        );
        assert_eq!(b.admit("c", at).0, Admit::Send);
        assert_eq!(b.open(), 0);
    }

    #[test]
    fn a_probe_that_never_reports_is_given_up_on() {
        let (b, t0) = opened();
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.admit("c", later).0, Admit::Probe);
        assert!(matches!(
            b.admit("c", later + Duration::from_secs(59)).0,
            Admit::Reject { .. }
        ));
        assert_eq!(
            b.admit("c", later + Duration::from_secs(60)).0,
            Admit::Probe
        );
    }

    #[test]
    fn late_results_of_requests_sent_before_opening_change_nothing() {
        let (b, t0) = opened();
        assert_eq!(b.record("c", true, false, t0), None);
        assert_eq!(b.record("c", false, false, t0), None);
        assert!(matches!(b.admit("c", t0).0, Admit::Reject { .. }));
    }

    #[test]
    fn a_change_of_settings_closes_the_breaker_and_a_replay_goes_through_as_the_probe() {
        let b = breakers();
        let t0 = Instant::now();
        let old = Call {
            settings: 1,
            replay: false,
        };
        assert_eq!(b.admit_call("c", old, t0).0, Admit::Send);
        for _ in 0..3 {
            b.record("c", false, false, t0);
        }
        assert!(matches!(b.admit_call("c", old, t0).0, Admit::Reject { .. }));

        // An explicit replay is sent at once, as the probe; others still wait for it.
        let replay = Call {
            replay: true,
            ..old
        };
        let (admit, t) = b.admit_call("c", replay, t0);
        assert_eq!(admit, Admit::Probe);
        assert_eq!(t.expect("half-open").to, State::HalfOpen);
        assert!(matches!(b.admit_call("c", old, t0).0, Admit::Reject { .. }));
        b.record("c", false, true, t0)
            .expect("the failed probe re-opens it");

        // The customer fixes the URL: every job goes through again, and the change is told.
        let fixed = Call {
            settings: 2,
            replay: false,
        };
        let (admit, t) = b.admit_call("c", fixed, t0);
        assert_eq!(admit, Admit::Send);
        assert_eq!(t.expect("closed").to, State::Closed);
        assert_eq!(b.admit_call("c", fixed, t0), (Admit::Send, None));
        assert_eq!(b.open(), 0);
    }
}
