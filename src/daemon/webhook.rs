//! Incoming webhooks: one endpoint per `daemon.webhooks` entry. A delivery must carry the
//! base64 HMAC-SHA256 of its raw body (checked in constant time), be recent enough when the
//! webhook names a timestamp, and not have been seen before (delivery ids are remembered in
//! the state database, so across restarts and by every node sharing it); then every enabled
//! flow whose `trigger.webhook` names the webhook runs at once for the notified record.

use std::sync::Arc;
use std::time::Duration;

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
use crate::config::model::WebhookConfig;
use crate::engine::RunOptions;
use crate::expr::JsonPath;
use crate::redact::redact;

/// How long a delivery id is remembered, at least: senders retry for hours, not days.
const REMEMBER_SECS: u64 = 24 * 3600;

/// How long a webhook's delivery ids are remembered: a day, and longer when a repeat could
/// still pass the timestamp check after that. A delivery passes up to `max_age_secs` either
/// side of its event time, so its repeat can come up to twice that after it.
fn remember_for(cfg: &WebhookConfig) -> Duration {
    Duration::from_secs(REMEMBER_SECS.max(cfg.max_age_secs.saturating_mul(2)))
}

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryVerifyError {
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
}

impl DeliveryVerifyError {
    fn status(&self) -> StatusCode {
        match self {
            Self::MissingSignature(_) | Self::BadSignature => StatusCode::UNAUTHORIZED,
            Self::Stale { .. } => StatusCode::FORBIDDEN,
            Self::NotJson | Self::MissingTimestamp(_) | Self::MissingKey(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
        }
    }

    fn outcome(&self) -> &'static str {
        match self {
            Self::MissingSignature(_) | Self::BadSignature => "bad_signature",
            Self::Stale { .. } => "stale",
            _ => "invalid",
        }
    }
}

/// Whether `signature` (base64, optionally `sha256=`-prefixed) is the HMAC-SHA256 of `body`.
/// `verify_slice` compares in constant time, so timing reveals nothing of the expected value.
pub fn signature_matches(secret: &str, body: &[u8], signature: &str) -> bool {
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
    cfg: &WebhookConfig,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Delivery, DeliveryVerifyError> {
    let signature = headers
        .get(cfg.signature_header.as_str())
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| DeliveryVerifyError::MissingSignature(cfg.signature_header.clone()))?;
    if !signature_matches(&cfg.secret, body, signature) {
        return Err(DeliveryVerifyError::BadSignature);
    }
    let payload: Value = serde_json::from_slice(body).map_err(|_| DeliveryVerifyError::NotJson)?;
    if let Some(path) = &cfg.timestamp {
        let at = JsonPath::parse(path)
            .ok()
            .and_then(|p| p.first(&payload).and_then(event_time))
            .ok_or_else(|| DeliveryVerifyError::MissingTimestamp(path.clone()))?;
        let age = (now - at).num_seconds();
        if age.unsigned_abs() > cfg.max_age_secs {
            return Err(DeliveryVerifyError::Stale {
                age_secs: age,
                max_secs: cfg.max_age_secs,
            });
        }
    }
    let key = delivery_key(&cfg.key, &payload)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| DeliveryVerifyError::MissingKey(cfg.key.clone()))?;
    let id = cfg
        .delivery_id_header
        .as_deref()
        .and_then(|h| headers.get(h))
        .and_then(|v| v.to_str().ok())
        .map(|v| format!("id:{v}"))
        .unwrap_or_else(|| format!("sig:{}", signature.trim()));
    Ok(Delivery { key, id })
}

/// The record key a delivery names: a JSONPath's value, or a template rendered over the
/// payload (checked at load, like every expression of a flow file). A template that renders
/// the same over an empty payload took nothing from this one (`WC-` without a number): no key.
fn delivery_key(key: &str, payload: &Value) -> Option<String> {
    if key.starts_with('$') {
        let path = JsonPath::parse(key).ok()?;
        return path
            .first(payload)
            .and_then(crate::compile::types::key_text);
    }
    let template = crate::expr::Template::compile(key).ok()?;
    let render = |v: &Value| -> Option<String> {
        let ctx = handlebars::Context::wraps(v).ok()?;
        crate::compile::types::key_text(&template.render_value(&ctx).ok()?)
    };
    let found = render(payload)?;
    (render(&json!({})).as_deref() != Some(found.as_str())).then_some(found)
}

/// An event time: RFC 3339 text, or Unix seconds (milliseconds when that large).
fn event_time(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::String(s) => crate::expr::parse_datetime(s),
        Value::Number(n) => {
            let x = n.as_i64()?;
            if x > 100_000_000_000 {
                DateTime::from_timestamp_millis(x)
            } else {
                DateTime::from_timestamp(x, 0)
            }
        }
        _ => None,
    }
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
    name: String,
    cfg: WebhookConfig,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = daemon.clock().now();
    let delivery = match verify(&cfg, &headers, &body, now) {
        Ok(d) => d,
        Err(DeliveryVerifyError::NotJson) => {
            // Signed, so from the sender: a ping such as the form-encoded one WooCommerce
            // sends when a webhook is created. Refusing it would only make the sender
            // retry it or turn the webhook off.
            daemon.metrics.webhook(&name, "ignored");
            tracing::info!(webhook = %name, "signed delivery that is not JSON acknowledged (a ping)");
            return answer(StatusCode::OK, json!({"status": "ignored"}));
        }
        Err(e) => {
            daemon.metrics.webhook(&name, e.outcome());
            tracing::warn!(webhook = %name, reason = %e, "webhook delivery refused");
            return answer(e.status(), json!({"error": e.to_string()}));
        }
    };
    if daemon.is_stopping() {
        // Not remembered: the sender's retry after the restart is welcome.
        daemon.metrics.webhook(&name, "shutting_down");
        return unavailable(
            RETRY_SOON_SECS,
            json!({"error": "the daemon is shutting down"}),
        );
    }
    match daemon
        .store()
        .remember_delivery(&name, &delivery.id, now, remember_for(&cfg))
    {
        Ok(true) => {}
        Ok(false) => {
            daemon.metrics.webhook(&name, "duplicate");
            tracing::info!(webhook = %name, key = %delivery.key, "repeated delivery ignored");
            return answer(StatusCode::OK, json!({"status": "duplicate"}));
        }
        Err(e) => {
            // Nothing ran and nothing is remembered: the sender's retry is a first delivery.
            daemon.metrics.webhook(&name, "state_unavailable");
            tracing::error!(
                webhook = %name,
                key = %delivery.key,
                error = %redact(&e.to_string()),
                "cannot remember the delivery; refused for the sender to deliver again"
            );
            return unavailable(
                RETRY_SOON_SECS,
                json!({"error": "the state database is unavailable; deliver again later"}),
            );
        }
    }
    let engine = daemon.engine();
    let targets: Vec<String> = engine
        .project
        .flows
        .iter()
        .filter(|f| f.config.enabled && f.config.trigger.webhook.as_deref() == Some(&name))
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
        let outcome = match daemon.trigger(&flow, opts, Cause::Webhook(name.clone())) {
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
    if let Some((reason, wait)) = cannot_run {
        // A shutdown began while the flows were being started, or a flow is held by another
        // node (or the state cannot say): the sender delivers again later, and the flows
        // that did start run that record once more, which changes nothing.
        if let Err(e) = daemon.store().forget_delivery(&name, &delivery.id) {
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
        daemon.metrics.webhook(&name, outcome);
        tracing::warn!(webhook = %name, key = %delivery.key, reason = %reason, "delivery refused for the sender to deliver again");
        return unavailable(
            wait,
            json!({"error": format!("{reason}; deliver again later"), "flows": flows}),
        );
    }
    daemon.metrics.webhook(&name, "accepted");
    tracing::info!(webhook = %name, key = %delivery.key, flows = flows.len(), "webhook accepted");
    answer(
        StatusCode::ACCEPTED,
        json!({"status": "accepted", "key": delivery.key, "flows": flows}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_a_path_or_a_template_that_takes_something_from_the_payload() {
        let order = json!({"id": 7, "number": "1042", "billing": {"email": "a@b.ro"}});
        assert_eq!(delivery_key("$.number", &order).as_deref(), Some("1042"));
        assert_eq!(delivery_key("$.id", &order).as_deref(), Some("7"));
        assert_eq!(
            delivery_key("WC-{{number}}", &order).as_deref(),
            Some("WC-1042")
        );
        assert_eq!(
            delivery_key("{{lower billing.email}}", &order).as_deref(),
            Some("a@b.ro")
        );
        assert_eq!(delivery_key("WC-{{number}}", &json!({"id": 7})), None);
        assert_eq!(delivery_key("$.missing", &order), None);
    }

    /// A sender's signature, computed here rather than taken from the simulators: the
    /// daemon's check is tested against the definition (base64 of the HMAC-SHA256 of the body).
    fn sign(body: &[u8], secret: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(body);
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    fn cfg() -> WebhookConfig {
        WebhookConfig {
            path: "/hooks/orders".into(),
            secret: "s3cret-hook".into(),
            signature_header: "X-Webhook-Signature".into(),
            delivery_id_header: Some("X-Webhook-Id".into()),
            key: "$.number".into(),
            timestamp: Some("$.occurred_at".into()),
            max_age_secs: 300,
        }
    }

    fn headers(sig: &str, id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("X-Webhook-Signature", sig.parse().unwrap());
        h.insert("X-Webhook-Id", id.parse().unwrap());
        h
    }

    #[test]
    fn signed_fresh_deliveries_pass_and_others_are_refused() {
        let now: DateTime<Utc> = "2026-05-01T10:00:00Z".parse().unwrap();
        let body = br#"{"number":"1001","occurred_at":"2026-05-01T09:59:00Z"}"#;
        let sig = sign(body, "s3cret-hook");
        let d = verify(&cfg(), &headers(&sig, "d1"), body, now).unwrap();
        assert_eq!((d.key.as_str(), d.id.as_str()), ("1001", "id:d1"));

        let forged = sign(body, "guessed");
        assert_eq!(
            verify(&cfg(), &headers(&forged, "d1"), body, now).unwrap_err(),
            DeliveryVerifyError::BadSignature
        );
        let tampered = br#"{"number":"1002","occurred_at":"2026-05-01T09:59:00Z"}"#;
        assert_eq!(
            verify(&cfg(), &headers(&sig, "d1"), tampered, now).unwrap_err(),
            DeliveryVerifyError::BadSignature
        );
        let later = now + chrono::Duration::minutes(10);
        assert!(matches!(
            verify(&cfg(), &headers(&sig, "d1"), body, later),
            Err(DeliveryVerifyError::Stale { age_secs: 660, .. })
        ));
        assert_eq!(
            verify(&cfg(), &HeaderMap::new(), body, now).unwrap_err(),
            DeliveryVerifyError::MissingSignature("X-Webhook-Signature".into())
        );
    }

    #[test]
    fn delivery_ids_are_kept_a_day_or_as_long_as_a_repeat_passes_the_timestamp_check() {
        assert_eq!(remember_for(&cfg()), Duration::from_secs(24 * 3600));
        let wide = WebhookConfig {
            max_age_secs: 18 * 3600,
            ..cfg()
        };
        assert_eq!(remember_for(&wide), Duration::from_secs(36 * 3600));
        let huge = WebhookConfig {
            max_age_secs: u64::MAX,
            ..cfg()
        };
        assert_eq!(remember_for(&huge), Duration::from_secs(u64::MAX));
    }

    #[test]
    fn event_times_as_text_or_unix_time() {
        let t = event_time(&json!("2026-05-01T10:00:00Z")).unwrap();
        assert_eq!(event_time(&json!(t.timestamp())), Some(t));
        assert_eq!(event_time(&json!(t.timestamp_millis())), Some(t));
        assert_eq!(event_time(&json!(true)), None);
    }
}
