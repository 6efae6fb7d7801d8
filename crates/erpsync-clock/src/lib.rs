//! Time as a seam: production code asks a `Clock` for the time and for sleeps, so tests can
//! run schedules, backoff, rate limits and token expiry without waiting.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Source of the current time and of waiting.
#[async_trait::async_trait]
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
    /// Waits `d`.
    async fn sleep(&self, d: Duration);
}

/// Shared handle to a clock.
pub type SharedClock = Arc<dyn Clock>;

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

#[async_trait::async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await
    }
}

/// A clock for tests: time stands still until advanced, and `sleep` advances it at once
/// instead of waiting. Every sleep is recorded, so a test can assert the waits (backoff,
/// `Retry-After`) that code asked for.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<ManualState>>,
}

#[derive(Debug)]
struct ManualState {
    now: DateTime<Utc>,
    sleeps: Vec<Duration>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            inner: Arc::new(Mutex::new(ManualState {
                now: start,
                sleeps: Vec::new(),
            })),
        }
    }

    /// Moves time forward.
    pub fn advance(&self, d: Duration) {
        let mut s = self.inner.lock().unwrap();
        s.now += chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    }

    /// Sets the time.
    pub fn set(&self, t: DateTime<Utc>) {
        self.inner.lock().unwrap().now = t;
    }

    /// Every sleep asked for so far.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.inner.lock().unwrap().sleeps.clone()
    }
}

#[async_trait::async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.inner.lock().unwrap().now
    }
    async fn sleep(&self, d: Duration) {
        {
            let mut s = self.inner.lock().unwrap();
            s.sleeps.push(d);
            s.now += chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        }
        // Let other tasks run, as a real sleep would.
        tokio::task::yield_now().await;
    }
}
