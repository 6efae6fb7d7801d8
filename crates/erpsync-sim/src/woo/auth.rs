//! What stands in front of the WooCommerce API: a token-bucket rate limit when one is set, then
//! Basic auth by consumer key and secret, each failure answered as WooCommerce words it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{WooError, WooState};
use crate::server::{Flavor, error_response};
use crate::shop::basic_credentials;

/// Rate limit (when set), then Basic auth.
pub(super) async fn woo_layer(
    State(state): State<Arc<WooState>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(limiter) = state.limiter.lock().unwrap().as_mut()
        && let Err(retry) = limiter.take(state.core.clock.now())
    {
        return error_response(
            Flavor::Woo,
            429,
            "woocommerce_rest_too_many_requests",
            "Too many requests.",
            retry,
        );
    }
    let error = match basic_credentials(&req) {
        None => WooError::new(
            401,
            "woocommerce_rest_cannot_view",
            "Sorry, you cannot list resources.",
        ),
        Some((k, _)) if k != state.consumer_key => WooError::new(
            401,
            "woocommerce_rest_authentication_error",
            "Consumer key is invalid.",
        ),
        Some((_, s)) if s != state.consumer_secret => WooError::new(
            401,
            "woocommerce_rest_authentication_error",
            "Invalid signature - provided signature does not match.",
        ),
        Some(_) => return next.run(req).await,
    };
    error.into_response()
}
