//! How long to wait before trying again: exponential backoff with full jitter, and the
//! server's own `Retry-After` hint.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

use crate::config::model::RetryConfig;

/// A server asking for more than this is not taken literally: a broken date in `Retry-After`
/// must not park every flow of the system for days.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// The retry policy of a system, with defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RetryPolicy {
    pub(crate) max_attempts: u32,
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
    pub(crate) jitter: bool,
}

impl RetryPolicy {
    pub(crate) fn from_config(cfg: Option<&RetryConfig>) -> RetryPolicy {
        match cfg {
            Some(c) => RetryPolicy {
                max_attempts: c.max_attempts.max(1),
                initial: Duration::from_millis(c.initial_backoff_ms),
                max: Duration::from_millis(c.max_backoff_ms),
                jitter: c.jitter,
            },
            None => RetryPolicy {
                max_attempts: 4,
                initial: Duration::from_millis(500),
                max: Duration::from_millis(30_000),
                jitter: true,
            },
        }
    }

    /// Wait before retry number `retry` (1 for the first retry).
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let ceiling = backoff_ceiling(self.initial, self.max, retry);
        if !self.jitter || ceiling.is_zero() {
            return ceiling;
        }
        // Full jitter: anywhere between nothing and the ceiling, so clients that failed
        // together do not come back together.
        let ms = ceiling.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=ms))
    }
}

/// The longest wait before retry number `retry` (1-based): `initial · 2^(retry-1)`, capped.
pub(crate) fn backoff_ceiling(initial: Duration, max: Duration, retry: u32) -> Duration {
    let exp = retry.saturating_sub(1).min(31);
    initial.saturating_mul(1u32 << exp).min(max)
}

/// Reads a `Retry-After` value: seconds (`120`, also fractional like `2.0`, as Shopify sends)
/// or an HTTP date, relative to `now`. A date in the past means "now".
pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(secs) = value.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        Duration::from_secs_f64(secs.min(RETRY_AFTER_CAP.as_secs_f64()))
    } else {
        let at: DateTime<Utc> = httpdate::parse_http_date(value).ok()?.into();
        (at - now).to_std().unwrap_or(Duration::ZERO)
    };
    Some(wait.min(RETRY_AFTER_CAP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn retry_after_accepts_seconds_fractions_and_dates() {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        let s = |v: &str| parse_retry_after(v, now);
        assert_eq!(s("120"), Some(Duration::from_secs(120)));
        assert_eq!(s(" 2.0 "), Some(Duration::from_secs(2)));
        assert_eq!(s("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(
            s("Sun, 01 Mar 2026 12:00:30 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(s("Sun, 01 Mar 2026 11:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(s("999999"), Some(RETRY_AFTER_CAP));
        assert_eq!(s("-1"), None);
        assert_eq!(s("soon"), None);
        assert_eq!(s("NaN"), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let ms = Duration::from_millis;
        let c = |n| backoff_ceiling(ms(500), ms(3_000), n);
        assert_eq!(
            [c(1), c(2), c(3), c(4), c(5)],
            [ms(500), ms(1000), ms(2000), ms(3000), ms(3000)]
        );
        assert_eq!(backoff_ceiling(ms(500), ms(3_000), 200), ms(3000));
    }

    #[test]
    fn jittered_backoff_stays_within_bounds() {
        let p = RetryPolicy {
            max_attempts: 5,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1_000),
            jitter: true,
        };
        for retry in 1..8 {
            let ceiling = backoff_ceiling(p.initial, p.max, retry);
            for _ in 0..200 {
                assert!(p.backoff(retry) <= ceiling);
            }
        }
        let fixed = RetryPolicy { jitter: false, ..p };
        assert_eq!(fixed.backoff(3), Duration::from_millis(400));
    }
}
