//! The waits a system imposes (its request budget, the pauses it asks for): bounded for a
//! one-shot run, announced when long.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::HttpSystem;
use crate::connector::error::CallError;

/// A wait at least this long is announced: a person watching a run must not take it for a
/// hang.
pub(crate) const ANNOUNCE_WAITS_FROM: Duration = Duration::from_secs(5);

/// Prints a wait to whoever watches (a terminal): system, why, how long, until when.
pub type WaitAnnouncer = Arc<dyn Fn(&WaitNotice) + Send + Sync>;

/// A wait a system imposes, as announced.
#[derive(Debug, Clone)]
pub struct WaitNotice {
    pub(crate) system: String,
    pub(crate) reason: String,
    pub(crate) wait: Duration,
    pub(crate) until: DateTime<Utc>,
}

impl std::fmt::Display for WaitNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` {}: waiting {} s, until {}",
            self.system,
            self.reason,
            self.wait.as_secs_f64().ceil() as u64,
            self.until
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }
}

/// The bounds and witnesses of waits.
#[derive(Default, Clone)]
pub(super) struct Waits {
    /// Longest wait allowed: a longer one fails the call (`CallError::WaitTooLong`).
    max: Option<Duration>,
    announce: Option<WaitAnnouncer>,
}

impl HttpSystem {
    /// Bounds every wait this system imposes (`None`: wait as long as it asks), and shows
    /// each long one to `announce` as well as in the logs.
    pub fn set_waits(&self, max: Option<Duration>, announce: Option<WaitAnnouncer>) {
        let mut w = self.waits.write().unwrap_or_else(|e| e.into_inner());
        *w = Waits { max, announce };
    }

    /// Before a wait of `wait`: announced when long, refused when longer than allowed.
    pub(super) fn before_wait(
        &self,
        op_name: &str,
        wait: Duration,
        reason: &str,
    ) -> Result<(), CallError> {
        let until = self.clock.now() + chrono::Duration::from_std(wait).unwrap_or_default();
        let waits = self.waits.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(max) = waits.max
            && wait > max
        {
            return Err(CallError::WaitTooLong {
                system: self.name.clone(),
                operation: op_name.to_string(),
                reason: reason.to_string(),
                wait_secs: wait.as_secs_f64().ceil() as u64,
                until: until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                max_secs: max.as_secs(),
            });
        }
        if wait >= ANNOUNCE_WAITS_FROM {
            let notice = WaitNotice {
                system: self.name.clone(),
                reason: reason.to_string(),
                wait,
                until,
            };
            tracing::warn!(
                system = %self.name, operation = op_name, reason, wait_secs = wait.as_secs(),
                until = %notice.until, "{notice}"
            );
            if let Some(a) = &waits.announce {
                a(&notice);
            }
        }
        Ok(())
    }

    /// Waits for a pause the system imposed to end (announced when long, refused when
    /// longer than allowed) and for a token of the budget.
    pub(super) async fn wait_for_budget(&self, op_name: &str) -> Result<(), CallError> {
        let now = self.clock.now();
        if let Some((until, reason)) = self.limiter.pause(now) {
            self.before_wait(op_name, (until - now).to_std().unwrap_or_default(), &reason)?;
        }
        let waited = self.limiter.acquire(&self.clock).await;
        if !waited.is_zero() {
            self.stats.rate_limit_wait(waited);
        }
        Ok(())
    }
}
