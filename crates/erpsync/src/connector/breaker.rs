//! The circuit breaker of a system: after a number of consecutive requests that got no
//! response at all (refused, reset, timed out) the system is taken as down, and calls fail at
//! once instead of each waiting out its timeouts and retries. A probe is let through after a
//! pause that doubles up to a cap; the first response of any status closes the breaker.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::model::CircuitBreakerConfig;

/// What the breaker knows of its system.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Taken as down: calls fail without being sent.
    pub down: bool,
    /// Since when it is down.
    pub down_since: Option<DateTime<Utc>>,
    /// Requests without a response in a row.
    pub consecutive_failures: u32,
    /// The last of those failures (redacted).
    pub(crate) last_error: Option<String>,
    /// When the next probe may go out (while down).
    pub next_probe: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
struct State {
    health: Health,
    /// Pause before the next probe after this one fails.
    backoff: Duration,
    /// The health changed since it was last taken for the state store.
    unreported: bool,
    /// Whether anything was ever seen (a fresh process knows nothing yet).
    observed: bool,
}

/// The breaker of one system, shared by every flow that calls it.
#[derive(Debug)]
pub(crate) struct Breaker {
    policy: CircuitBreakerConfig,
    state: Mutex<State>,
}

/// Why a call was not sent: the system is down and no probe is due.
#[derive(Debug, Clone)]
pub(crate) struct Open {
    pub(crate) since: Option<DateTime<Utc>>,
    pub(crate) failures: u32,
    pub(crate) last_error: Option<String>,
}

impl Breaker {
    pub(crate) fn new(cfg: Option<&CircuitBreakerConfig>) -> Self {
        let mut policy = cfg.cloned().unwrap_or_default();
        policy.failures = policy.failures.max(1);
        Breaker {
            policy,
            // What an earlier process stored may be stale: the first outcome is reported.
            state: Mutex::new(State {
                unreported: true,
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a request may go out now: always while up; while down, one probe each time
    /// the pause has run out (other callers keep failing at once meanwhile).
    pub(crate) fn admit(&self, now: DateTime<Utc>) -> Result<(), Open> {
        let mut s = self.lock();
        if !s.health.down {
            return Ok(());
        }
        match s.health.next_probe {
            Some(at) if now >= at => {
                // Until this probe answers, the next one waits a whole pause again.
                let pause = chrono::Duration::from_std(s.backoff).unwrap_or_default();
                s.health.next_probe = Some(now + pause);
                Ok(())
            }
            _ => Err(Open {
                since: s.health.down_since,
                failures: s.health.consecutive_failures,
                last_error: s.health.last_error.clone(),
            }),
        }
    }

    /// A response came (whatever its status): the system is reachable.
    pub(crate) fn success(&self, system: &str, now: DateTime<Utc>) {
        let mut s = self.lock();
        s.observed = true;
        if s.health.down {
            let since = s.health.down_since;
            tracing::warn!(system, down_since = ?since, %now, "system answers again; calls resume");
            s.unreported = true;
        } else if s.health.consecutive_failures > 0 {
            s.unreported = true;
        }
        s.health = Health::default();
        s.backoff = Duration::ZERO;
    }

    /// A request got no response. True when the system is (now) down.
    pub(crate) fn failure(&self, system: &str, now: DateTime<Utc>, error: &str) -> bool {
        let mut s = self.lock();
        s.observed = true;
        s.unreported = true;
        s.health.consecutive_failures = s.health.consecutive_failures.saturating_add(1);
        s.health.last_error = Some(error.to_string());
        let initial = Duration::from_secs(self.policy.probe_initial_secs);
        let max = Duration::from_secs(
            self.policy
                .probe_max_secs
                .max(self.policy.probe_initial_secs),
        );
        if s.health.down {
            // A probe failed: wait longer before the next one.
            s.backoff = (s.backoff * 2).clamp(initial, max);
        } else if s.health.consecutive_failures >= self.policy.failures {
            s.health.down = true;
            s.health.down_since = Some(now);
            s.backoff = initial;
            tracing::error!(
                system,
                failures = s.health.consecutive_failures,
                error,
                probe_in_secs = initial.as_secs(),
                "system is down: calls to it stop until a probe gets an answer"
            );
        } else {
            return false;
        }
        s.health.next_probe = Some(now + chrono::Duration::from_std(s.backoff).unwrap_or_default());
        true
    }

    pub(crate) fn health(&self) -> Health {
        self.lock().health.clone()
    }

    pub(crate) fn is_down(&self) -> bool {
        self.lock().health.down
    }

    /// The health when it changed since it was last taken (for the state store).
    pub(crate) fn take_unreported(&self) -> Option<Health> {
        let mut s = self.lock();
        if !(s.unreported && s.observed) {
            return None;
        }
        s.unreported = false;
        Some(s.health.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + chrono::Duration::seconds(secs)
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_with_a_doubling_pause() {
        let b = Breaker::new(Some(&CircuitBreakerConfig {
            failures: 3,
            probe_initial_secs: 5,
            probe_max_secs: 12,
        }));
        assert!(!b.failure("erp", at(0), "refused"));
        b.success("erp", at(1));
        assert!(!b.failure("erp", at(2), "refused"));
        assert!(!b.failure("erp", at(3), "refused"));
        assert!(b.failure("erp", at(4), "refused"));
        let h = b.health();
        assert!(h.down);
        assert_eq!(h.down_since, Some(at(4)));
        assert_eq!(h.next_probe, Some(at(9)));
        assert!(b.admit(at(8)).is_err());
        // One probe at 9; a second caller at the same moment is not let through.
        assert!(b.admit(at(9)).is_ok());
        assert!(b.admit(at(9)).is_err());
        assert!(b.failure("erp", at(10), "refused"));
        assert_eq!(b.health().next_probe, Some(at(20)));
        assert!(b.admit(at(20)).is_ok());
        assert!(b.failure("erp", at(20), "refused"));
        // Capped at 12 s.
        assert_eq!(b.health().next_probe, Some(at(32)));
        assert!(b.admit(at(32)).is_ok());
        b.success("erp", at(33));
        assert_eq!(b.health(), Health::default());
        assert!(b.admit(at(33)).is_ok());
    }

    #[test]
    fn reports_changes_once_and_nothing_before_any_request() {
        let b = Breaker::new(None);
        assert_eq!(b.take_unreported(), None);
        b.success("erp", at(0));
        // The first outcome of a process, so a stale record of an earlier one is replaced.
        assert!(!b.take_unreported().unwrap().down);
        b.success("erp", at(1));
        assert_eq!(b.take_unreported(), None);
        for i in 0..5 {
            b.failure("erp", at(i), "timed out");
        }
        assert!(b.take_unreported().unwrap().down);
        assert_eq!(b.take_unreported(), None);
        b.success("erp", at(9));
        assert!(!b.take_unreported().unwrap().down);
    }
}
