//! Incoming webhooks: the endpoints the daemon serves and how deliveries are verified.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An incoming webhook endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct WebhookConfig {
    /// URL path, e.g. `/hooks/shop-orders`.
    pub path: String,
    /// Shared secret of the HMAC signature.
    pub secret: String,
    /// Header with the base64 HMAC-SHA256 of the raw body.
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
    /// Header with a delivery id used to drop repeated deliveries.
    #[serde(default)]
    pub delivery_id_header: Option<String>,
    /// The record's match key in the payload: a JSONPath (`$.number`), or a template when the
    /// key is built (`WC-{{number}}`).
    #[schemars(transform = crate::config::schema_doc::webhook_key)]
    pub key: String,
    /// JSONPath to the event time in the payload; deliveries older than `max_age_secs` are
    /// refused as replays.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Oldest accepted delivery, in seconds.
    #[serde(default = "default_max_age")]
    pub max_age_secs: u64,
}

fn default_signature_header() -> String {
    "X-Webhook-Signature".into()
}
fn default_max_age() -> u64 {
    300
}
