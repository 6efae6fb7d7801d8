//! What stands in front of the ERP's API: a burst limit that locks the client out, then a
//! bearer token from the client-credentials token endpoint, which expires.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::Deserialize;
use serde_json::json;

use super::{ErpError, ErpResult, ErpState, bad, json_body};
use crate::server::{Flavor, error_response};

/// Route of the token endpoint (not behind the bearer check, not a write in the counters).
const TOKEN_ROUTE: &str = "/api/authorize/token";

/// The token route.
pub(super) fn routes() -> Router<Arc<ErpState>> {
    Router::new().route(TOKEN_ROUTE, post(token))
}

/// "More than `max_calls` in `window`, then locked out for `lockout`" (SmartBill: 30 calls per
/// 10 s, then 10 minutes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurstLimit {
    pub max_calls: u32,
    pub window: Duration,
    pub lockout: Duration,
    /// Status answered while locked out (429, or 403 as some ERPs do).
    pub status: u16,
}

impl Default for BurstLimit {
    fn default() -> Self {
        BurstLimit {
            max_calls: 30,
            window: Duration::from_secs(10),
            lockout: Duration::from_secs(600),
            status: 429,
        }
    }
}

#[derive(Debug)]
pub(super) struct Burst {
    pub config: BurstLimit,
    pub calls: VecDeque<DateTime<Utc>>,
    pub locked_until: Option<DateTime<Utc>>,
}

fn ceil_secs(d: chrono::Duration) -> u64 {
    let ms = d.num_milliseconds().max(0) as u64;
    ms.div_ceil(1000).max(1)
}

/// Burst limit with lock-out, then the bearer token (except on the token endpoint).
pub(super) async fn erp_layer(
    State(state): State<Arc<ErpState>>,
    req: Request,
    next: Next,
) -> Response {
    let t = state.core.clock.now();
    if let Some(burst) = state.burst.lock().unwrap().as_mut() {
        if let Some(until) = burst.locked_until {
            if t < until {
                return locked_out(burst.config.status, until - t);
            }
            burst.locked_until = None;
            burst.calls.clear();
        }
        let window = chrono::Duration::from_std(burst.config.window).unwrap_or_default();
        while burst.calls.front().is_some_and(|c| *c <= t - window) {
            burst.calls.pop_front();
        }
        burst.calls.push_back(t);
        if burst.calls.len() > burst.config.max_calls as usize {
            let lockout = chrono::Duration::from_std(burst.config.lockout).unwrap_or_default();
            burst.locked_until = Some(t + lockout);
            return locked_out(burst.config.status, lockout);
        }
    }
    let is_token_route = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|m| m.as_str() == TOKEN_ROUTE);
    if !is_token_route {
        let token = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let expiry = token.and_then(|tok| state.data.lock().unwrap().tokens.get(tok).copied());
        match expiry {
            None => {
                return ErpError::Http(401, "Token invalid sau lipsa".into()).into_response();
            }
            Some(expires) if t >= expires => {
                return ErpError::Http(401, "Token expirat".into()).into_response();
            }
            Some(_) => {}
        }
    }
    next.run(req).await
}

fn locked_out(status: u16, remaining: chrono::Duration) -> Response {
    error_response(
        Flavor::Erp,
        status,
        "",
        "Prea multe cereri: acces blocat temporar",
        Some(ceil_secs(remaining)),
    )
}

#[derive(Debug, Deserialize)]
struct TokenRequest {
    client_id: String,
    client_secret: String,
    grant_type: String,
}

/// `POST /api/authorize/token`: a bearer token for good client credentials.
async fn token(State(state): State<Arc<ErpState>>, body: Bytes) -> ErpResult {
    let req: TokenRequest = json_body(&body)?;
    if req.grant_type != "client_credentials" {
        return Err(bad("grant_type must be client_credentials"));
    }
    if req.client_id != state.client_id || req.client_secret != state.client_secret {
        return Err(ErpError::Http(401, "Invalid client credentials".into()));
    }
    let t = state.core.clock.now();
    let mut data = state.data.lock().unwrap();
    let access_token = format!("{:032x}", data.rng.random::<u128>());
    let ttl = chrono::Duration::from_std(state.token_ttl).unwrap_or_default();
    data.tokens.insert(access_token.clone(), t + ttl);
    // Oblio answers the token request without the status envelope.
    Ok(Json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": state.token_ttl.as_secs(),
        "request_time": t.timestamp(),
    }))
    .into_response())
}
