//! What stands in front of the shop's API: a token-bucket rate limit, then Basic auth with a
//! lock-out after repeated failures.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};

use super::ShopState;
use crate::server::{Flavor, error_response};

/// The token bucket in front of the API (MerchantPro allows about 4 requests a second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    pub rate_per_sec: f64,
    pub burst: f64,
    /// Send `Retry-After` with the 429 (the real server's habit is unverified).
    pub send_retry_after: bool,
}

impl Default for TokenBucket {
    fn default() -> Self {
        TokenBucket {
            rate_per_sec: 4.0,
            burst: 4.0,
            send_retry_after: true,
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct AuthState {
    bad: u32,
    locked_until: Option<DateTime<Utc>>,
}

/// A [`TokenBucket`] in use (both shop simulators put one in front of their API).
#[derive(Debug)]
pub(crate) struct Limiter {
    config: TokenBucket,
    tokens: f64,
    last: DateTime<Utc>,
}

impl Limiter {
    /// A full bucket at `now`.
    pub fn new(config: TokenBucket, now: DateTime<Utc>) -> Self {
        Limiter {
            config,
            tokens: config.burst,
            last: now,
        }
    }

    /// Takes a token; without one, the `Retry-After` seconds to answer (when it is sent).
    pub fn take(&mut self, now: DateTime<Utc>) -> Result<(), Option<u64>> {
        let elapsed = (now - self.last).num_milliseconds().max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * self.config.rate_per_sec).min(self.config.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - self.tokens) / self.config.rate_per_sec).ceil() as u64;
        Err(self.config.send_retry_after.then_some(wait.max(1)))
    }
}

/// Rate limit, then Basic auth with lock-out after repeated failures.
pub(super) async fn shop_layer(
    State(state): State<Arc<ShopState>>,
    req: Request,
    next: Next,
) -> Response {
    let t = state.core.clock.now();
    if let Some(limiter) = state.limiter.lock().unwrap().as_mut()
        && let Err(retry) = limiter.take(t)
    {
        return error_response(
            Flavor::Shop,
            429,
            "TooManyRequests",
            "rate limit exceeded",
            retry,
        );
    }
    let good =
        basic_credentials(&req).is_some_and(|(k, s)| k == state.api_key && s == state.api_secret);
    {
        let mut auth = state.auth.lock().unwrap();
        if let Some(until) = auth.locked_until {
            if t < until {
                return forbidden();
            }
            *auth = AuthState::default();
        }
        if good {
            auth.bad = 0;
        } else {
            auth.bad += 1;
            if auth.bad > state.max_bad_auth {
                auth.locked_until =
                    Some(t + chrono::Duration::from_std(state.auth_lockout).unwrap_or_default());
                return forbidden();
            }
            return error_response(
                Flavor::Shop,
                401,
                "Unauthorized",
                "invalid API key or secret",
                None,
            );
        }
    }
    next.run(req).await
}

fn forbidden() -> Response {
    error_response(
        Flavor::Shop,
        403,
        "Forbidden",
        "too many failed authentication attempts",
        None,
    )
}

pub(crate) fn basic_credentials(req: &Request) -> Option<(String, String)> {
    use base64::Engine as _;
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (k, s) = text.split_once(':')?;
    Some((k.to_owned(), s.to_owned()))
}
