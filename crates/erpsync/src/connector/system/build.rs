//! Building a running system from its spec: the HTTP client, token cache, breaker and
//! request budget.

use std::sync::Arc;

use super::HttpSystem;
use super::body::error_chain;
use crate::clock::SharedClock;
use crate::connector::auth::Auth;
use crate::connector::breaker::Breaker;
use crate::connector::ratelimit::RateLimiter;
use crate::connector::spec::SystemSpec;
use crate::connector::stats::ConnectorStats;

/// A running system that could not be built from its spec: only what the machine lacks (the
/// HTTP client's TLS setup), never a problem of the flow files, which the spec has checked.
#[derive(Debug, thiserror::Error)]
#[error("the HTTP client of system `{system}` cannot be created: {message}")]
pub struct SystemStartError {
    pub(crate) system: String,
    pub(crate) message: String,
}

impl HttpSystem {
    /// Builds the running system of a spec: its HTTP client, token cache, breaker and
    /// request budget start afresh.
    pub fn new(spec: Arc<SystemSpec>, clock: SharedClock) -> Result<HttpSystem, SystemStartError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(spec.connect_timeout)
            .timeout(spec.request_timeout)
            // A redirect means a wrong base URL (MerchantPro redirects the non-www host);
            // following it would resend credentials and bodies to another place.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SystemStartError {
                system: spec.name.clone(),
                message: error_chain(&e),
            })?;
        Ok(HttpSystem {
            name: spec.name.clone(),
            client,
            auth: Auth::new(&spec.auth),
            breaker: Breaker::new(spec.circuit_breaker.as_ref()),
            limiter: RateLimiter::new(spec.rate_limit.as_ref()),
            resolved: tokio::sync::OnceCell::new(),
            clock,
            stats: ConnectorStats::default(),
            waits: Default::default(),
            spec,
        })
    }
}
