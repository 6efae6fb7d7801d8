//! The request budget of one system, shared by every flow and shop that calls it: a token
//! bucket, plus a pause that a `Retry-After` or a lock-out imposes on every caller at once.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::clock::SharedClock;
use crate::config::model::RateLimitConfig;

#[derive(Debug)]
struct State {
    /// Tokens left; negative when callers have reserved tokens not yet refilled.
    tokens: f64,
    refilled_at: Option<DateTime<Utc>>,
    paused_until: Option<DateTime<Utc>>,
    /// Why the system paused, for the announcement of a long wait.
    pause_reason: String,
}

/// A token bucket and a shared pause.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    bucket: Option<(f64, f64)>,
    state: Mutex<State>,
}

impl RateLimiter {
    pub(crate) fn new(cfg: Option<&RateLimitConfig>) -> RateLimiter {
        let bucket = cfg
            .filter(|c| c.per_second > 0.0)
            .map(|c| (c.per_second, f64::from(c.burst.max(1))));
        RateLimiter {
            bucket,
            state: Mutex::new(State {
                tokens: bucket.map_or(0.0, |(_, burst)| burst),
                refilled_at: None,
                paused_until: None,
                pause_reason: String::new(),
            }),
        }
    }

    /// Makes every caller wait until `until` (a later pause wins over an earlier one).
    pub(crate) fn pause_until(&self, until: DateTime<Utc>, reason: &str) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.paused_until.is_none_or(|p| p < until) {
            s.paused_until = Some(until);
            s.pause_reason = reason.to_string();
        }
    }

    /// The pause in force at `now`, if any: until when, and why.
    pub(crate) fn pause(&self, now: DateTime<Utc>) -> Option<(DateTime<Utc>, String)> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.paused_until
            .filter(|until| *until > now)
            .map(|until| (until, s.pause_reason.clone()))
    }

    /// Waits for the pause to end and for a token; returns the time waited.
    pub(crate) async fn acquire(&self, clock: &SharedClock) -> Duration {
        let mut waited = Duration::ZERO;
        loop {
            let (wait, done) = self.try_take(clock.now());
            if !wait.is_zero() {
                clock.sleep(wait).await;
                waited += wait;
            }
            if done {
                return waited;
            }
        }
    }

    /// How long to wait, and whether a token is ours after that wait (`false`: a pause was
    /// in force, look again afterwards, as it may have been extended meanwhile).
    fn try_take(&self, now: DateTime<Utc>) -> (Duration, bool) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(until) = s.paused_until {
            if until > now {
                return ((until - now).to_std().unwrap_or_default(), false);
            }
            s.paused_until = None;
        }
        let Some((rate, burst)) = self.bucket else {
            return (Duration::ZERO, true);
        };
        let elapsed = s.refilled_at.map_or(0.0, |t| {
            (now - t).to_std().unwrap_or_default().as_secs_f64()
        });
        s.tokens = (s.tokens + elapsed * rate).min(burst);
        s.refilled_at = Some(now);
        // Reserve the token now, even on credit: callers are served in arrival order, each
        // waiting for its own share of the rate.
        s.tokens -= 1.0;
        if s.tokens >= 0.0 {
            (Duration::ZERO, true)
        } else {
            (Duration::from_secs_f64(-s.tokens / rate), true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::Arc;

    #[tokio::test]
    async fn bucket_allows_a_burst_then_spaces_requests() {
        let manual = ManualClock::new(Utc::now());
        let clock: SharedClock = Arc::new(manual.clone());
        let cfg = RateLimitConfig {
            per_second: 2.0,
            burst: 2,
            lockout: None,
        };
        let rl = RateLimiter::new(Some(&cfg));
        let mut waits = Vec::new();
        for _ in 0..4 {
            waits.push(rl.acquire(&clock).await);
        }
        let ms = Duration::from_millis;
        assert_eq!(waits, [ms(0), ms(0), ms(500), ms(500)]);
    }

    #[tokio::test]
    async fn a_pause_holds_every_caller() {
        let manual = ManualClock::new(Utc::now());
        let clock: SharedClock = Arc::new(manual.clone());
        let rl = RateLimiter::new(None);
        assert_eq!(rl.acquire(&clock).await, Duration::ZERO);
        rl.pause_until(clock.now() + chrono::Duration::seconds(600), "locked out");
        rl.pause_until(clock.now() + chrono::Duration::seconds(5), "slow down");
        let (until, reason) = rl.pause(clock.now()).unwrap();
        assert_eq!(until, clock.now() + chrono::Duration::seconds(600));
        assert_eq!(reason, "locked out");
        assert_eq!(rl.acquire(&clock).await, Duration::from_secs(600));
        assert_eq!(rl.acquire(&clock).await, Duration::ZERO);
    }
}
