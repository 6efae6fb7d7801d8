//! Counters a system keeps for metrics; lock-free so every request can bump them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Atomic counters of one system, shared by every flow that calls it.
#[derive(Debug, Default)]
pub struct ConnectorStats {
    responses_2xx: AtomicU64,
    responses_3xx: AtomicU64,
    responses_4xx: AtomicU64,
    responses_5xx: AtomicU64,
    transport_errors: AtomicU64,
    retries: AtomicU64,
    rate_limit_waits: AtomicU64,
    rate_limit_wait_ms: AtomicU64,
    in_doubt: AtomicU64,
    token_fetches: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Responses by status class.
    pub responses_2xx: u64,
    pub(crate) responses_3xx: u64,
    pub responses_4xx: u64,
    pub responses_5xx: u64,
    /// Requests that got no response (connection refused, reset, timeout).
    pub transport_errors: u64,
    /// Requests sent again after a failure.
    pub retries: u64,
    /// Times a caller waited for the rate-limit budget, a `Retry-After` or a lock-out.
    pub rate_limit_waits: u64,
    /// Total time of those waits.
    pub rate_limit_wait_ms: u64,
    /// Writes whose outcome is unknown.
    pub in_doubt: u64,
    /// Tokens obtained (OAuth2 or login).
    pub token_fetches: u64,
}

impl ConnectorStats {
    pub(crate) fn response(&self, status: u16) {
        let c = match status {
            200..=299 => &self.responses_2xx,
            300..=399 => &self.responses_3xx,
            400..=499 => &self.responses_4xx,
            _ => &self.responses_5xx,
        };
        c.fetch_add(1, Relaxed);
    }
    pub(crate) fn transport_error(&self) {
        self.transport_errors.fetch_add(1, Relaxed);
    }
    pub(crate) fn retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }
    pub(crate) fn rate_limit_wait(&self, d: Duration) {
        self.rate_limit_waits.fetch_add(1, Relaxed);
        self.rate_limit_wait_ms
            .fetch_add(d.as_millis() as u64, Relaxed);
    }
    pub(crate) fn in_doubt(&self) {
        self.in_doubt.fetch_add(1, Relaxed);
    }
    pub(crate) fn token_fetch(&self) {
        self.token_fetches.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            responses_2xx: self.responses_2xx.load(Relaxed),
            responses_3xx: self.responses_3xx.load(Relaxed),
            responses_4xx: self.responses_4xx.load(Relaxed),
            responses_5xx: self.responses_5xx.load(Relaxed),
            transport_errors: self.transport_errors.load(Relaxed),
            retries: self.retries.load(Relaxed),
            rate_limit_waits: self.rate_limit_waits.load(Relaxed),
            rate_limit_wait_ms: self.rate_limit_wait_ms.load(Relaxed),
            in_doubt: self.in_doubt.load(Relaxed),
            token_fetches: self.token_fetches.load(Relaxed),
        }
    }
}
