//! State and daemon: where state is kept, the long-running daemon's settings and its notifications.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::*;

/// Where state is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct StateConfig {
    /// `sqlite:PATH` (default `sqlite:erpsync.sqlite`, relative to the flow folder), or
    /// `postgres://USER@HOST/DB?schema=NAME` for state shared by several nodes (keep a
    /// password out of the file: `postgres://erp:${PG_PASSWORD}@db/erpsync`).
    pub url: String,
}

/// Daemon settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Address of the HTTP server (webhooks, admin API, metrics), e.g. `127.0.0.1:8700`.
    #[serde(default)]
    pub listen: Option<String>,
    /// Bearer token the admin API and the console require; it may do everything (run,
    /// switch flows, retry, discard, settle).
    #[serde(default)]
    pub admin_token: Option<String>,
    /// Bearer token of read-only access to the admin API and the console: it sees
    /// everything the admin token sees and changes nothing.
    #[serde(default)]
    pub viewer_token: Option<String>,
    /// Address the console is reached at from outside, for the links in notifications
    /// (default `http://LISTEN`), e.g. `https://sync.example.com`.
    #[serde(default)]
    pub console_url: Option<String>,
    /// Seconds in-flight work may take to finish after SIGTERM.
    #[serde(default)]
    pub shutdown_grace_secs: Option<u64>,
    /// This node's label in leases, runs and logs, when several daemons share a PostgreSQL
    /// state (default: the host name). Leases belong to the process, so two nodes with one
    /// label never run a flow together, but each node should have its own: a label in use
    /// by another live process is reported.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Seconds a flow's lease lasts unless renewed (default 30). A running flow renews it
    /// every third of this; a node that dies frees its flows after this long (at once when
    /// the dead process was on the same host). A run stops writing when it could not renew
    /// its lease for five sixths of this.
    #[serde(default)]
    pub lease_ttl_secs: Option<u64>,
    /// Days finished runs stay in the run history of the state database (default 30; 0
    /// keeps them for ever). The daemon prunes older ones every hour.
    #[serde(default)]
    pub retention_days: Option<u64>,
    /// Incoming webhooks.
    #[serde(default)]
    pub webhooks: BTreeMap<String, WebhookConfig>,
    /// Notifications when a sync needs a person: channels, and rules that send to them.
    #[serde(default)]
    pub notify: Option<NotifyConfig>,
}

/// Where notifications go and when they are sent. Each rule sends at most one message per
/// window (`window_secs`); what fires meanwhile goes out as one summary when the window ends.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Named channels.
    #[serde(default)]
    pub channels: BTreeMap<String, NotifyChannelConfig>,
    /// Named rules: what fires a notification, and which channels get it.
    #[serde(default)]
    pub rules: BTreeMap<String, NotifyRuleConfig>,
}

/// Kind of a notification channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotifyChannelKind {
    /// A JSON POST to `url`, signed with `secret` when one is given.
    Webhook,
    /// A Slack incoming webhook at `url`.
    Slack,
    /// Email over SMTP (`smtp`, `from`, `to`).
    Email,
}

/// How an email channel secures its SMTP connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS; a server that does not offer it gets nothing.
    #[default]
    Starttls,
    /// No encryption: only for a relay on the same host or a test sink.
    None,
}

/// A notification channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct NotifyChannelConfig {
    /// `webhook`, `slack` or `email`.
    pub kind: NotifyChannelKind,
    /// `webhook` and `slack`: where to POST. A Slack URL is a secret: write it as `${VAR}`.
    #[serde(default)]
    pub url: Option<String>,
    /// `webhook`: shared secret; the body's HMAC-SHA256 is sent, hex, in
    /// `X-Erpsync-Signature: sha256=…`.
    #[serde(default)]
    pub secret: Option<String>,
    /// `email`: the SMTP server, `HOST:PORT` (port 587 when left out).
    #[serde(default)]
    pub smtp: Option<String>,
    /// `email`: `starttls` (default) or `none`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// `email`: SMTP user name, when the server wants a login.
    #[serde(default)]
    pub username: Option<String>,
    /// `email`: SMTP password (write it as `${VAR}`).
    #[serde(default)]
    pub password: Option<String>,
    /// `email`: sender address.
    #[serde(default)]
    pub from: Option<String>,
    /// `email`: recipients.
    #[serde(default)]
    pub to: Vec<String>,
}

/// What fires a notification rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotifyOn {
    /// A record failed (a new failure, or a kept one failing again).
    RecordFailed,
    /// At least `count` failures within `within_secs`.
    Failures,
    /// A system's circuit breaker took it as down (requests in a row got no response).
    SystemDown,
    /// A system that was down answers again (a probe or a run got a response).
    SystemUp,
    /// A write of unknown outcome has waited for a person longer than `after_secs`.
    WriteInDoubt,
    /// A flow has not had a successful run for `after_secs`.
    FlowNotSucceeded,
}

/// A notification rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct NotifyRuleConfig {
    /// What fires it.
    pub on: NotifyOn,
    /// Channels that get its messages.
    pub to: Vec<String>,
    /// Only these flows (all when empty).
    #[serde(default)]
    pub flows: Vec<String>,
    /// `failures`: how many failures fire it.
    #[serde(default)]
    pub count: Option<u32>,
    /// `failures`: the span they are counted over, in seconds (default: `window_secs`).
    #[serde(default)]
    pub within_secs: Option<u64>,
    /// `write_in_doubt`, `flow_not_succeeded`: how long, in seconds (default 3600).
    #[serde(default)]
    pub after_secs: Option<u64>,
    /// At most one message per this many seconds (default 900); what fires meanwhile is
    /// summed up in the next one.
    #[serde(default)]
    pub window_secs: Option<u64>,
}
