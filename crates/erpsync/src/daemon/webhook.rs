//! Incoming webhooks: one endpoint per `daemon.webhooks` entry. A delivery must carry the
//! base64 HMAC-SHA256 of its raw body (checked in constant time), be recent enough when the
//! webhook names a timestamp, and not have been seen before (delivery ids are remembered in
//! the state database, so across restarts and by every node sharing it); then every enabled
//! flow whose `trigger.webhook` names the webhook runs at once for the notified record.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::core::{Cause, Daemon, TriggerRefusedError};
use crate::compile::Webhook;
use crate::engine::RunOptions;
use crate::redact::redact;

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DeliveryVerifyError {
    #[error("no `{0}` header")]
    MissingSignature(String),
    #[error("the signature does not match the body")]
    BadSignature,
    #[error("the body is not JSON")]
    NotJson,
    #[error("no event time at `{0}`")]
    MissingTimestamp(String),
    #[error("the delivery is {age_secs} s away from now; at most {max_secs} s is accepted")]
    Stale { age_secs: i64, max_secs: u64 },
    #[error("no record key at `{0}`")]
    MissingKey(String),
    /// The webhook's secret is empty (an unset `${VAR:-}`): anybody could sign a delivery.
    #[error("webhook `{0}` has no secret, so no delivery can be trusted: set its `secret`")]
    NoSecret(String),
}

impl DeliveryVerifyError {
    fn status(&self) -> StatusCode {
        match self {
            Self::MissingSignature(_) | Self::BadSignature => StatusCode::UNAUTHORIZED,
            Self::Stale { .. } => StatusCode::FORBIDDEN,
            Self::NoSecret(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotJson | Self::MissingTimestamp(_) | Self::MissingKey(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
        }
    }

    fn outcome(&self) -> &'static str {
        match self {
            Self::MissingSignature(_) | Self::BadSignature => "bad_signature",
            Self::Stale { .. } => "stale",
            Self::NoSecret(_) => "no_secret",
            _ => "invalid",
        }
    }
}

/// Whether `signature` (base64, optionally `sha256=`-prefixed) is the HMAC-SHA256 of `body`.
/// `verify_slice` compares in constant time, so timing reveals nothing of the expected value.
pub(crate) fn signature_matches(secret: &str, body: &[u8], signature: &str) -> bool {
    let sig = signature.trim();
    let sig = sig.strip_prefix("sha256=").unwrap_or(sig);
    let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// A verified delivery: the record key and the id it is de-duplicated by.
#[derive(Debug)]
struct Delivery {
    key: String,
    id: String,
}

fn verify(
    hook: &Webhook,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Delivery, DeliveryVerifyError> {
    if hook.secret.is_empty() {
        return Err(DeliveryVerifyError::NoSecret(hook.name.clone()));
    }
    let signature = headers
        .get(&hook.signature_header)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| DeliveryVerifyError::MissingSignature(hook.signature_header_text.clone()))?;
    if !signature_matches(&hook.secret, body, signature) {
        return Err(DeliveryVerifyError::BadSignature);
    }
    let payload: Value = serde_json::from_slice(body).map_err(|_| DeliveryVerifyError::NotJson)?;
    if let Some(path) = &hook.timestamp {
        let at = hook
            .event_time(&payload)
            .ok_or_else(|| DeliveryVerifyError::MissingTimestamp(path.source().to_string()))?;
        let age = (now - at).num_seconds();
        if age.unsigned_abs() > hook.max_age_secs {
            return Err(DeliveryVerifyError::Stale {
                age_secs: age,
                max_secs: hook.max_age_secs,
            });
        }
    }
    let key = hook
        .key
        .of(&payload)
        .ok_or_else(|| DeliveryVerifyError::MissingKey(hook.key.source().to_string()))?;
    let id = hook
        .delivery_id_header
        .as_ref()
        .and_then(|h| headers.get(h))
        .and_then(|v| v.to_str().ok())
        .map(|v| format!("id:{v}"))
        .unwrap_or_else(|| format!("sig:{}", signature.trim()));
    Ok(Delivery { key, id })
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// How long a sender should wait before delivering again after a shutdown or a state outage:
/// long enough for a supervised restart, short enough not to delay the record much.
const RETRY_SOON_SECS: u64 = 10;

/// A 503 with `Retry-After`, for a delivery that was neither run nor remembered.
fn unavailable(retry_after_secs: u64, body: Value) -> Response {
    let mut response = answer(StatusCode::SERVICE_UNAVAILABLE, body);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs.max(1)),
    );
    response
}

/// When a refused flow is likely free again: another node's lease runs out (or is renewed,
/// and the sender tries again), anything else soon.
fn retry_after(e: &TriggerRefusedError, now: DateTime<Utc>) -> u64 {
    match e {
        TriggerRefusedError::Elsewhere { until, .. } => {
            u64::try_from((*until - now).num_seconds().clamp(1, 300)).unwrap_or(RETRY_SOON_SECS)
        }
        _ => RETRY_SOON_SECS,
    }
}

/// Handles a POST to a webhook's path.
pub(super) async fn receive(
    daemon: Arc<Daemon>,
    hook: Arc<Webhook>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let name = hook.name.clone();
    let now = daemon.clock().now();
    let delivery = match verify(&hook, &headers, &body, now) {
        Ok(d) => d,
        Err(e) => return not_verified(&daemon, &name, e),
    };
    if daemon.is_stopping() {
        // Not remembered: the sender's retry after the restart is welcome.
        daemon.metrics.webhook(&name, "shutting_down");
        return unavailable(
            RETRY_SOON_SECS,
            json!({"error": "the daemon is shutting down"}),
        );
    }
    if let Some(response) = remember(&daemon, &hook, &delivery, now).await {
        return response;
    }
    let (flows, cannot_run) = run_flows(&daemon, &name, &delivery, now).await;
    if let Some((reason, wait)) = cannot_run {
        return deliver_again(&daemon, &name, &delivery, flows, reason, wait).await;
    }
    daemon.metrics.webhook(&name, "accepted");
    tracing::info!(webhook = %name, key = %delivery.key, flows = flows.len(), "webhook accepted");
    answer(
        StatusCode::ACCEPTED,
        json!({"status": "accepted", "key": delivery.key, "flows": flows}),
    )
}

/// The answer to a delivery that did not verify: a signed body that is not JSON is a ping,
/// acknowledged; anything else is refused.
fn not_verified(daemon: &Daemon, name: &str, e: DeliveryVerifyError) -> Response {
    if let DeliveryVerifyError::NotJson = e {
        // Signed, so from the sender: a ping such as the form-encoded one WooCommerce
        // sends when a webhook is created. Refusing it would only make the sender
        // retry it or turn the webhook off.
        daemon.metrics.webhook(name, "ignored");
        tracing::info!(webhook = %name, "signed delivery that is not JSON acknowledged (a ping)");
        return answer(StatusCode::OK, json!({"status": "ignored"}));
    }
    daemon.metrics.webhook(name, e.outcome());
    tracing::warn!(webhook = %name, reason = %e, "webhook delivery refused");
    answer(e.status(), json!({"error": e.to_string()}))
}

/// Remembers the delivery; the answer instead when it is a repeat or cannot be remembered.
async fn remember(
    daemon: &Daemon,
    hook: &Webhook,
    delivery: &Delivery,
    now: DateTime<Utc>,
) -> Option<Response> {
    let name = &hook.name;
    match daemon
        .store()
        .coordination
        .remember_delivery(name, &delivery.id, now, hook.remember_for())
        .await
    {
        Ok(true) => None,
        Ok(false) => {
            daemon.metrics.webhook(name, "duplicate");
            tracing::info!(webhook = %name, key = %delivery.key, "repeated delivery ignored");
            Some(answer(StatusCode::OK, json!({"status": "duplicate"})))
        }
        Err(e) => {
            // Nothing ran and nothing is remembered: the sender's retry is a first delivery.
            daemon.metrics.webhook(name, "state_unavailable");
            tracing::error!(
                webhook = %name,
                key = %delivery.key,
                error = %redact(&e.to_string()),
                "cannot remember the delivery; refused for the sender to deliver again"
            );
            Some(unavailable(
                RETRY_SOON_SECS,
                json!({"error": "the state database is unavailable; deliver again later"}),
            ))
        }
    }
}

/// Triggers the enabled flows the webhook starts, for the delivered record: what each
/// answered, and why a flow could not run here now, if one could not (with how long the
/// sender should wait).
async fn run_flows(
    daemon: &Arc<Daemon>,
    name: &str,
    delivery: &Delivery,
    now: DateTime<Utc>,
) -> (Vec<Value>, Option<(String, u64)>) {
    let engine = daemon.engine();
    let targets: Vec<String> = engine
        .project
        .flows
        .iter()
        .filter(|f| f.enabled && f.webhook.as_deref() == Some(name))
        .map(|f| f.id.clone())
        .collect();
    let mut flows = Vec::new();
    // Why a flow could not run here now, if one could not: then the delivery is refused
    // and forgotten, so the sender's retry runs it (never accepted and dropped).
    let mut cannot_run: Option<(String, u64)> = None;
    for flow in targets {
        let opts = RunOptions {
            keys: Some(vec![delivery.key.clone()]),
            ..Default::default()
        };
        let outcome = match daemon
            .trigger(&flow, opts, Cause::Webhook(name.to_string()))
            .await
        {
            Ok(t) => json!(t),
            Err(e) => {
                if matches!(
                    e,
                    TriggerRefusedError::ShuttingDown
                        | TriggerRefusedError::Elsewhere { .. }
                        | TriggerRefusedError::StateUnavailable(_)
                ) {
                    cannot_run.get_or_insert_with(|| (e.to_string(), retry_after(&e, now)));
                }
                json!(e.to_string())
            }
        };
        flows.push(json!({"flow": flow, "outcome": outcome}));
    }
    (flows, cannot_run)
}

/// A shutdown began while the flows were being started, or a flow is held by another node
/// (or the state cannot say): the delivery is forgotten and refused, the sender delivers
/// again later, and the flows that did start run that record once more, which changes
/// nothing.
async fn deliver_again(
    daemon: &Daemon,
    name: &str,
    delivery: &Delivery,
    flows: Vec<Value>,
    reason: String,
    wait: u64,
) -> Response {
    if let Err(e) = daemon
        .store()
        .coordination
        .forget_delivery(name, &delivery.id)
        .await
    {
        tracing::error!(
            webhook = %name,
            key = %delivery.key,
            error = %redact(&e.to_string()),
            "cannot forget the delivery; the sender's next attempt will count as repeated"
        );
    }
    let outcome = if daemon.is_stopping() {
        "shutting_down"
    } else {
        "unavailable"
    };
    daemon.metrics.webhook(name, outcome);
    tracing::warn!(webhook = %name, key = %delivery.key, reason = %reason, "delivery refused for the sender to deliver again");
    unavailable(
        wait,
        json!({"error": format!("{reason}; deliver again later"), "flows": flows}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::WebhookConfig;

    /// A sender's signature, computed here rather than taken from the simulators: the
    /// daemon's check is tested against the definition (base64 of the HMAC-SHA256 of the body).
    fn sign(body: &[u8], secret: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(body);
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    fn hook() -> Webhook {
        let cfg = WebhookConfig {
            path: "/hooks/orders".into(),
            secret: "s3cret-hook".into(),
            signature_header: "X-Webhook-Signature".into(),
            delivery_id_header: Some("X-Webhook-Id".into()),
            key: "$.number".into(),
            timestamp: Some("$.occurred_at".into()),
            max_age_secs: 300,
        };
        Webhook::compile("orders", &cfg).unwrap()
    }

    fn headers(sig: &str, id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("X-Webhook-Signature", sig.parse().unwrap());
        h.insert("X-Webhook-Id", id.parse().unwrap());
        h
    }

    #[test]
    fn a_webhook_without_a_secret_trusts_no_delivery() {
        let now: DateTime<Utc> = "2026-05-01T10:00:00Z".parse().unwrap();
        let body = br#"{"number":"1001","occurred_at":"2026-05-01T09:59:00Z"}"#;
        let open = Webhook {
            secret: String::new(),
            ..hook()
        };
        // Signed with the empty key, as anybody could.
        let err = verify(&open, &headers(&sign(body, ""), "d1"), body, now).unwrap_err();
        assert_eq!(err, DeliveryVerifyError::NoSecret(open.name.clone()));
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn signed_fresh_deliveries_pass_and_others_are_refused() {
        let now: DateTime<Utc> = "2026-05-01T10:00:00Z".parse().unwrap();
        let body = br#"{"number":"1001","occurred_at":"2026-05-01T09:59:00Z"}"#;
        let sig = sign(body, "s3cret-hook");
        let d = verify(&hook(), &headers(&sig, "d1"), body, now).unwrap();
        assert_eq!((d.key.as_str(), d.id.as_str()), ("1001", "id:d1"));

        let forged = sign(body, "guessed");
        assert_eq!(
            verify(&hook(), &headers(&forged, "d1"), body, now).unwrap_err(),
            DeliveryVerifyError::BadSignature
        );
        let tampered = br#"{"number":"1002","occurred_at":"2026-05-01T09:59:00Z"}"#;
        assert_eq!(
            verify(&hook(), &headers(&sig, "d1"), tampered, now).unwrap_err(),
            DeliveryVerifyError::BadSignature
        );
        let later = now + chrono::Duration::minutes(10);
        assert!(matches!(
            verify(&hook(), &headers(&sig, "d1"), body, later),
            Err(DeliveryVerifyError::Stale { age_secs: 660, .. })
        ));
        assert_eq!(
            verify(&hook(), &HeaderMap::new(), body, now).unwrap_err(),
            DeliveryVerifyError::MissingSignature("X-Webhook-Signature".into())
        );
        let undated = br#"{"number":"1001"}"#;
        assert_eq!(
            verify(
                &hook(),
                &headers(&sign(undated, "s3cret-hook"), "d2"),
                undated,
                now
            )
            .unwrap_err(),
            DeliveryVerifyError::MissingTimestamp("$.occurred_at".into())
        );
    }
}
