//! A callable system: operations executed with the system's auth, rate-limit budget, retry
//! and error policy. One `HttpSystem` is shared (behind an `Arc`) by every flow and shop that
//! uses it, so the budget, the pauses and the token are shared too.
//!
//! Built from its spec in `build`; requests are rendered, sent and judged in `execute`,
//! listings read page by page in `list`, the waits a system imposes bounded and announced in
//! `waits`, and bodies encoded and decoded in `body`.

mod body;
mod build;
mod execute;
mod list;
mod waits;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::auth::Auth;
use super::breaker::{Breaker, Health};
use super::error::CallError;
use super::operation::Operation;
use super::ratelimit::RateLimiter;
use super::spec::SystemSpec;
use super::stats::ConnectorStats;
use crate::clock::SharedClock;
use crate::config::model::LockoutConfig;
use crate::redact::redact;
use waits::Waits;

pub use build::SystemStartError;
pub use waits::{WaitAnnouncer, WaitNotice};

/// What an operation is called with; every field is offered to its templates.
#[derive(Debug, Clone, Default)]
pub struct CallInput {
    /// The payload, `{{record}}`.
    pub record: Value,
    /// The system's id of the record, `{{id}}`.
    pub id: Option<String>,
    /// The match key, `{{key}}`.
    pub key: Option<String>,
    /// Changed-since cursor of an incremental list, `{{since}}` (see `since_format`).
    pub since: Option<DateTime<Utc>>,
    /// Stable key of this write, `{{idempotency_key}}`; sent in the operation's
    /// `idempotency_key.header` when it has one.
    pub idempotency_key: Option<String>,
    /// Further values, each at the top level of the template context.
    pub extra: Map<String, Value>,
}

/// A successful call.
#[derive(Debug, Clone)]
pub struct CallOutput {
    pub status: u16,
    /// The response body after the `decode` rules: JSON, the text when it is not JSON, or
    /// null when empty.
    pub body: Value,
    /// What the operation's `record` path selects, when it has one and it selects something.
    pub record: Option<Value>,
    /// What the operation's `records` path selects (empty without one).
    pub records: Vec<Value>,
    /// Each record's parent when the `records` path is nested; empty otherwise.
    pub parents: Vec<Option<Arc<Value>>>,
    /// A rule said the write had already been applied (e.g. a duplicate idempotency key).
    pub already_done: bool,
}

/// How a listing's records are read when its reader wants only some of their members:
/// each record as the values of `members` (see `json::parse_listing`), not as a whole
/// object. Made by `HttpSystem::listing_reader` for an operation whose pages allow it.
#[derive(Debug)]
pub(crate) struct ListingReader {
    /// The members the records' list is at.
    chain: Vec<String>,
    members: Vec<String>,
    /// Each record's text is kept too (`Page::texts`).
    texts: bool,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    pub records: Vec<Value>,
    /// The records, for a listing read through a `ListingReader`: each as the values of
    /// its members (`records` is then empty).
    pub(crate) read: Vec<Vec<Value>>,
    /// With `read`, each record's text, when the reader keeps them (empty otherwise).
    pub(crate) texts: Vec<Box<str>>,
    /// Each record's parent when the `records` path is nested (see `RecordsPath`); empty
    /// otherwise.
    pub parents: Vec<Option<Arc<Value>>>,
    /// 1 for the first page read.
    pub number: u32,
    /// Records of the whole listing, when the response tells (the operation's `total`).
    pub(crate) total: Option<u64>,
}

/// A system built from its `SystemSpec`.
pub struct HttpSystem {
    pub(crate) name: String,
    spec: Arc<SystemSpec>,
    client: reqwest::Client,
    auth: Auth,
    breaker: Breaker,
    limiter: RateLimiter,
    /// `system_vars` with the looked-up values, once they are known.
    resolved: tokio::sync::OnceCell<Value>,
    pub(crate) clock: SharedClock,
    pub(crate) stats: ConnectorStats,
    /// How waits are bounded and announced (one-shot runs set it; see `Waits`).
    waits: std::sync::RwLock<Waits>,
}

impl std::fmt::Debug for HttpSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSystem")
            .field("name", &self.name)
            .field("base_url", &redact(self.spec.base_url.as_str()))
            .finish_non_exhaustive()
    }
}

impl HttpSystem {
    /// The lock-out the system imposes after a burst, if it says.
    fn lockout(&self) -> Option<&LockoutConfig> {
        self.spec.rate_limit.as_ref()?.lockout.as_ref()
    }

    /// The spec this system was built from.
    pub(crate) fn spec(&self) -> &Arc<SystemSpec> {
        &self.spec
    }

    pub fn stats(&self) -> &ConnectorStats {
        &self.stats
    }

    /// Whether the system is reachable, by its circuit breaker.
    pub fn health(&self) -> Health {
        self.breaker.health()
    }

    /// Writes a run may have in flight to this system at once (its `concurrency`).
    pub(crate) fn concurrency(&self) -> usize {
        self.spec.concurrency
    }

    /// Whether the system is taken as down now.
    pub(crate) fn is_down(&self) -> bool {
        self.breaker.is_down()
    }

    /// The health, when it changed since it was last taken (to keep it in the state store).
    pub(crate) fn take_unreported_health(&self) -> Option<Health> {
        self.breaker.take_unreported()
    }

    /// When a system that is down may be probed again (`None` while it is up).
    pub fn next_probe(&self) -> Option<DateTime<Utc>> {
        self.breaker.health().next_probe
    }

    /// Whether the operation only reads (GET), so a dry run may call it.
    pub fn is_read_only_op(&self, op: &str) -> bool {
        self.spec
            .operations
            .get(op)
            .is_some_and(|o| o.write_method().is_none())
    }

    /// The steps of an operation (empty for a single request); none for an unknown one.
    pub(crate) fn operation_steps(&self, op: &str) -> Option<&[super::operation::Step]> {
        self.spec.operations.get(op).map(|o| o.steps())
    }

    /// The system's vars, with the looked-up ones when they are known.
    pub fn system_vars(&self) -> &Value {
        self.resolved.get().unwrap_or(&self.spec.system_vars)
    }

    /// A reader of the members `members` of the records of the listing `op_name`, when its
    /// pages can be read that way (`Operation::records_chain_for_reader`) and no error rule
    /// of the system may read the records' list either. With `texts`, each record's text is
    /// kept as well.
    pub(crate) fn listing_reader(
        &self,
        op_name: &str,
        members: &[String],
        texts: bool,
    ) -> Option<Arc<ListingReader>> {
        let op = self.operation(op_name).ok()?;
        let chain = op.records_chain_for_reader()?;
        let list = chain.first().map_or("", String::as_str);
        if self.spec.rules.iter().any(|r| r.may_read(list)) {
            return None;
        }
        Some(Arc::new(ListingReader {
            chain,
            members: members.to_vec(),
            texts,
        }))
    }

    pub(super) fn operation(&self, name: &str) -> Result<&Arc<Operation>, CallError> {
        self.spec
            .operations
            .get(name)
            .ok_or_else(|| CallError::UnknownOperation {
                system: self.name.clone(),
                operation: name.to_string(),
                known: self.spec.operations.keys().cloned().collect(),
            })
    }
}
