//! Incoming webhooks, compiled once: header names, the record key (a JSONPath or a template) and
//! the event time path are parsed when the project is compiled, so a delivery only applies them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderName;
use serde_json::{Value, json};

use super::types::key_text;
use crate::config::Problem;
use crate::config::model::WebhookConfig;
use crate::expr::{JsonPath, Template};

/// How long a delivery id is remembered, at least: senders retry for hours, not days.
const REMEMBER_SECS: u64 = 24 * 3600;

/// Where a delivery names its record: a JSONPath (`$.number`), or a template that builds the
/// key from the payload (`WC-{{number}}`).
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookKey {
    Path(JsonPath),
    Template(Template),
}

impl WebhookKey {
    /// The text it was compiled from.
    pub fn source(&self) -> &str {
        match self {
            WebhookKey::Path(p) => p.source(),
            WebhookKey::Template(t) => t.source(),
        }
    }

    /// The record key a delivery names. A template that renders the same over an empty
    /// payload took nothing from this one (`WC-` without a number): no key.
    pub fn of(&self, payload: &Value) -> Option<String> {
        let found = match self {
            WebhookKey::Path(p) => p.first(payload).and_then(key_text),
            WebhookKey::Template(t) => {
                let render = |v: &Value| -> Option<String> {
                    let ctx = handlebars::Context::wraps(v).ok()?;
                    key_text(&t.render_value(&ctx).ok()?)
                };
                let found = render(payload)?;
                (render(&json!({})).as_deref() != Some(found.as_str())).then_some(found)
            }
        };
        found.filter(|k| !k.is_empty())
    }
}

/// A webhook endpoint, checked.
#[derive(Clone, PartialEq)]
pub struct Webhook {
    pub name: String,
    /// URL path, e.g. `/hooks/shop-orders`.
    pub path: String,
    /// Shared secret of the HMAC signature.
    pub secret: String,
    pub signature_header: HeaderName,
    /// The signature header as the flow file spells it, for messages to the sender.
    pub signature_header_text: String,
    pub delivery_id_header: Option<HeaderName>,
    pub key: WebhookKey,
    /// Where the event time is in the payload, when deliveries are checked for freshness.
    pub timestamp: Option<JsonPath>,
    /// Largest accepted distance between the event time and now, in seconds.
    pub max_age_secs: u64,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out.
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// A problem of a webhook declaration, with the key under the webhook it is at.
pub(crate) type WebhookProblem = (&'static str, Problem);

/// The header named `text`, declared at `at`; `None` after a problem.
fn header_name(
    problems: &mut Vec<WebhookProblem>,
    at: &'static str,
    text: &str,
) -> Option<HeaderName> {
    match HeaderName::from_bytes(text.as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            problems.push((
                at,
                Problem::invalid(format!("`{text}` is not a valid header name")),
            ));
            None
        }
    }
}

/// The webhook's `key`: a JSONPath, or a template over the payload alone; `None` after a
/// problem.
fn compile_key(problems: &mut Vec<WebhookProblem>, key: &str) -> Option<WebhookKey> {
    if key.starts_with('$') {
        return match JsonPath::parse(key) {
            Ok(p) => Some(WebhookKey::Path(p)),
            Err(e) => {
                problems.push(("key", Problem::json_path(e.to_string())));
                None
            }
        };
    }
    match Template::compile(key) {
        Err(e) => {
            problems.push(("key", Problem::template(e.to_string())));
            None
        }
        // A key is rendered over the payload alone.
        Ok(t)
            if t.variables()
                .iter()
                .any(|v| v[0] == "system" || v[0] == "vars") =>
        {
            problems.push((
                "key",
                Problem::system_and_vars_unavailable(
                    "a webhook key is rendered over the delivered payload alone",
                ),
            ));
            None
        }
        Ok(t) => Some(WebhookKey::Template(t)),
    }
}

impl Webhook {
    /// Compiles a `daemon.webhooks` entry, collecting every problem.
    pub fn compile(name: &str, cfg: &WebhookConfig) -> Result<Webhook, Vec<WebhookProblem>> {
        let mut problems = Vec::new();
        let signature_header =
            header_name(&mut problems, "signature_header", &cfg.signature_header);
        let delivery_id_header = match &cfg.delivery_id_header {
            Some(h) => header_name(&mut problems, "delivery_id_header", h).map(Some),
            None => Some(None),
        };
        let key = compile_key(&mut problems, &cfg.key);
        let timestamp = match cfg.timestamp.as_deref().map(JsonPath::parse) {
            None => Some(None),
            Some(Ok(p)) => Some(Some(p)),
            Some(Err(e)) => {
                problems.push(("timestamp", Problem::json_path(e.to_string())));
                None
            }
        };
        match (signature_header, delivery_id_header, key, timestamp) {
            (Some(signature_header), Some(delivery_id_header), Some(key), Some(timestamp))
                if problems.is_empty() =>
            {
                Ok(Webhook {
                    name: name.to_string(),
                    path: cfg.path.clone(),
                    secret: cfg.secret.clone(),
                    signature_header,
                    signature_header_text: cfg.signature_header.clone(),
                    delivery_id_header,
                    key,
                    timestamp,
                    max_age_secs: cfg.max_age_secs,
                })
            }
            _ => Err(problems),
        }
    }

    /// How long delivery ids are remembered: a day, and longer when a repeat could still
    /// pass the timestamp check after that. A delivery passes up to `max_age_secs` either
    /// side of its event time, so its repeat can come up to twice that after it.
    pub(crate) fn remember_for(&self) -> Duration {
        Duration::from_secs(REMEMBER_SECS.max(self.max_age_secs.saturating_mul(2)))
    }

    /// The event time of a delivery, when the webhook names where it is and it is there.
    pub(crate) fn event_time(&self, payload: &Value) -> Option<DateTime<Utc>> {
        event_time(self.timestamp.as_ref()?.first(payload)?)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(key: &str) -> WebhookConfig {
        WebhookConfig {
            path: "/hooks/orders".into(),
            secret: "s3cret-hook".into(),
            signature_header: "X-Webhook-Signature".into(),
            delivery_id_header: Some("X-Webhook-Id".into()),
            key: key.into(),
            timestamp: Some("$.occurred_at".into()),
            max_age_secs: 300,
        }
    }

    fn key(text: &str) -> WebhookKey {
        Webhook::compile("orders", &cfg(text)).unwrap().key
    }

    #[test]
    fn a_key_is_a_path_or_a_template_that_takes_something_from_the_payload() {
        let order = json!({"id": 7, "number": "1042", "billing": {"email": "a@b.ro"}});
        assert_eq!(key("$.number").of(&order).as_deref(), Some("1042"));
        assert_eq!(key("$.id").of(&order).as_deref(), Some("7"));
        assert_eq!(key("WC-{{number}}").of(&order).as_deref(), Some("WC-1042"));
        assert_eq!(
            key("{{lower billing.email}}").of(&order).as_deref(),
            Some("a@b.ro")
        );
        assert_eq!(key("WC-{{number}}").of(&json!({"id": 7})), None);
        assert_eq!(key("$.missing").of(&order), None);
    }

    #[test]
    fn every_problem_of_a_declaration_is_found_at_compile() {
        let bad = WebhookConfig {
            signature_header: "X Signature".into(),
            timestamp: Some("$.at[".into()),
            ..cfg("{{vars.prefix}}-{{number}}")
        };
        let problems = Webhook::compile("orders", &bad).unwrap_err();
        let at: Vec<&str> = problems.iter().map(|p| p.0).collect();
        assert_eq!(at, ["signature_header", "key", "timestamp"]);
    }

    #[test]
    fn delivery_ids_are_kept_a_day_or_as_long_as_a_repeat_passes_the_timestamp_check() {
        let with = |max_age_secs| {
            Webhook::compile(
                "orders",
                &WebhookConfig {
                    max_age_secs,
                    ..cfg("$.number")
                },
            )
            .unwrap()
            .remember_for()
        };
        assert_eq!(with(300), Duration::from_secs(24 * 3600));
        assert_eq!(with(18 * 3600), Duration::from_secs(36 * 3600));
        assert_eq!(with(u64::MAX), Duration::from_secs(u64::MAX));
    }

    #[test]
    fn event_times_as_text_or_unix_time() {
        let t = event_time(&json!("2026-05-01T10:00:00Z")).unwrap();
        assert_eq!(event_time(&json!(t.timestamp())), Some(t));
        assert_eq!(event_time(&json!(t.timestamp_millis())), Some(t));
        assert_eq!(event_time(&json!(true)), None);
    }
}
