//! erpsync's memory: bindings between the records of two systems, incremental cursors, the
//! write journal that makes exports exactly-once, failures kept for retry, run history, flow
//! leases and the webhook deliveries already accepted.
//! `StateStore` is the seam; SQLite is the embedded default, PostgreSQL serves several nodes.

mod fenced;
pub mod lease;
mod migrate;
pub mod operator;
mod postgres;
mod sqlite;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

pub use fenced::{FencedStore, StateWrite};
pub use lease::{Fence, Instance};
pub use operator::{FlowSwitch, RunLine, switches};
pub use postgres::{PostgresStore, redact_url};
pub use sqlite::SqliteStore;

/// A state operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StateStoreError {
    #[error("state database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state database error: {}", postgres_message(.0))]
    Postgres(::postgres::Error),
    #[error("state database `{0}` is gone: its connection thread stopped")]
    Disconnected(String),
    #[error("state data is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported state url `{0}`: expected `sqlite:PATH` or `postgres://…`")]
    Url(String),
    #[error("TLS to the state database: {0}")]
    Tls(String),
    #[error("cannot create state folder `{path}`: {reason}")]
    Folder { path: String, reason: String },
    /// A write of a run whose lease was granted to another holder since: refused, so a node
    /// that lost a flow cannot change its state.
    #[error("lease `{0}` was taken over by another holder; this run writes nothing more")]
    Fenced(String),
}

impl From<::postgres::Error> for StateStoreError {
    fn from(e: ::postgres::Error) -> Self {
        StateStoreError::Postgres(e)
    }
}

/// The driver's own message is terse ("error connecting to server"): the cause is in its
/// source, which the message carries (the variant keeps no source, so a chain printer does
/// not repeat it).
fn postgres_message(e: &::postgres::Error) -> String {
    use std::error::Error as _;
    match e.source() {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

pub type Result<T> = std::result::Result<T, StateStoreError>;

/// The records of one entity shared by two systems. Both directions of a pair share one
/// scope, so what one flow wrote is known to the flow going the other way (echo suppression).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub entity: String,
    /// The two systems, in name order.
    pub a: String,
    pub b: String,
}

impl Scope {
    pub fn new(entity: &str, x: &str, y: &str) -> Self {
        let (a, b) = if x <= y { (x, y) } else { (y, x) };
        Scope {
            entity: entity.to_string(),
            a: a.to_string(),
            b: b.to_string(),
        }
    }

    /// Whether `system` is side `a`.
    pub fn is_a(&self, system: &str) -> bool {
        self.a == system
    }
}

/// What erpsync knows of one record on both sides.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Binding {
    pub key: String,
    pub id_a: Option<String>,
    pub id_b: Option<String>,
    /// The canonical record last known to be on side `a` (what was read or written).
    pub base_a: Option<Value>,
    pub base_b: Option<Value>,
    /// When the record was first written to the other side by an export-once flow.
    pub exported_at: Option<DateTime<Utc>>,
    /// Why the record is parked for review, if it is.
    pub parked: Option<String>,
    /// The flow's post-actions (e.g. locking the order in the shop) have run for it.
    pub actions_done: bool,
}

impl Binding {
    pub fn id(&self, side_a: bool) -> Option<&str> {
        if side_a {
            self.id_a.as_deref()
        } else {
            self.id_b.as_deref()
        }
    }
    pub fn set_id(&mut self, side_a: bool, id: String) {
        if side_a {
            self.id_a = Some(id)
        } else {
            self.id_b = Some(id)
        }
    }
    pub fn base(&self, side_a: bool) -> Option<&Value> {
        if side_a {
            self.base_a.as_ref()
        } else {
            self.base_b.as_ref()
        }
    }
    pub fn base_mut(&mut self, side_a: bool) -> &mut Option<Value> {
        if side_a {
            &mut self.base_a
        } else {
            &mut self.base_b
        }
    }
}

/// State of a journaled write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalState {
    /// Intent recorded, request not yet answered.
    Pending,
    /// The target accepted it.
    Done,
    /// It failed for sure; nothing was written.
    Failed,
}

/// A write erpsync intends to make, recorded before it is sent.
#[derive(Debug, Clone, Serialize)]
pub struct JournalEntry {
    pub id: i64,
    pub flow: String,
    pub key: String,
    pub target: String,
    pub operation: String,
    pub idempotency_key: String,
    pub payload: Value,
    pub state: JournalState,
    pub created_at: DateTime<Utc>,
}

/// A record that could not be synced, kept for retry.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub id: i64,
    pub flow: String,
    pub key: String,
    pub source_record: Value,
    pub payload: Option<Value>,
    pub error: String,
    pub status: Option<u16>,
    pub response: Option<Value>,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One run of a flow.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub flow: String,
    pub kind: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: String,
    pub counts: Value,
    pub error: Option<String>,
    /// The node (its `daemon.node_id` label) that ran it.
    pub node: Option<String>,
    /// The process that ran it (see `Instance`).
    pub instance: Option<String>,
}

/// A process that shares the state, as it last said it was alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRecord {
    pub instance: String,
    pub node: String,
    pub started_at: DateTime<Utc>,
    pub seen_at: DateTime<Utc>,
}

/// Rows deleted by `StateStore::prune`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub runs: usize,
    pub nodes: usize,
}

/// What was last seen of a system's reachability (its circuit breaker), by a run or a probe
/// of any process sharing the state, so `erpsync status` can show a system that is down.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SystemHealth {
    pub system: String,
    /// Taken as down: runs stop calling it until a probe gets an answer.
    pub down: bool,
    pub down_since: Option<DateTime<Utc>>,
    /// Requests in a row that got no response.
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    /// When it may be probed next (while down).
    pub next_probe: Option<DateTime<Utc>>,
    /// When this was seen.
    pub checked_at: DateTime<Utc>,
}

/// A lease as the store keeps it. An expired lease stays until its holder releases it or
/// another holder takes it over, so `held_at` tells whether anyone holds it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub name: String,
    /// The holding process (see `Instance::id`).
    pub holder: String,
    /// The holder's node label.
    pub node: String,
    /// The fencing token of the grant: larger for every later grant.
    pub token: i64,
    pub expires_at: DateTime<Utc>,
}

impl Lease {
    /// The name of a flow's lease.
    pub fn of_flow(flow: &str) -> String {
        format!("flow:{flow}")
    }

    /// The flow this lease is for, when it is a flow's lease.
    pub fn flow(&self) -> Option<&str> {
        self.name.strip_prefix("flow:")
    }

    /// Whether its holder holds it at `now`: once expired, any holder may take it.
    pub fn held_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at > now
    }
}

/// Where erpsync keeps its state. Implementations must make each call atomic.
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// The bindings of the given keys that exist.
    fn bindings(&self, scope: &Scope, keys: &[String]) -> Result<HashMap<String, Binding>>;
    /// Every binding of a scope.
    fn all_bindings(&self, scope: &Scope) -> Result<Vec<Binding>>;
    /// How many bindings a scope has (how big the synced catalogue is).
    fn binding_count(&self, scope: &Scope) -> Result<usize>;
    /// The binding whose id on one side is `id`.
    fn binding_by_id(&self, scope: &Scope, side_a: bool, id: &str) -> Result<Option<Binding>>;
    /// Inserts or replaces bindings, atomically.
    fn put_bindings(&self, scope: &Scope, bindings: &[Binding]) -> Result<()>;

    fn cursor(&self, flow: &str) -> Result<Option<DateTime<Utc>>>;
    fn set_cursor(&self, flow: &str, at: DateTime<Utc>) -> Result<()>;

    /// Records the intent of a write; returns its id.
    fn journal_begin(&self, entry: &JournalEntry) -> Result<i64>;
    /// Records the outcome of a write, together with the binding it produced, atomically.
    fn journal_finish(
        &self,
        id: i64,
        state: JournalState,
        binding: Option<(&Scope, &Binding)>,
    ) -> Result<()>;
    /// Writes whose outcome is not known (crash or timeout after sending), of one flow or
    /// of every flow, oldest first.
    fn journal_pending(&self, flow: Option<&str>) -> Result<Vec<JournalEntry>>;
    /// Settles by hand the pending writes of one record: they are removed, and `binding`,
    /// when given (the write was applied), is stored with them, atomically. Returns how many
    /// entries were settled.
    fn journal_settle(
        &self,
        flow: &str,
        key: &str,
        binding: Option<(&Scope, &Binding)>,
    ) -> Result<usize>;

    /// Keeps a failed record (one per flow and key; a repeated failure updates it).
    fn put_failure(&self, failure: &Failure) -> Result<i64>;
    fn clear_failure(&self, flow: &str, key: &str) -> Result<()>;
    fn failures(&self, flow: Option<&str>) -> Result<Vec<Failure>>;
    fn failure(&self, id: i64) -> Result<Option<Failure>>;
    fn discard_failure(&self, id: i64) -> Result<bool>;

    /// Records a run started by process `instance` of node `node`.
    fn run_start(
        &self,
        flow: &str,
        kind: &str,
        at: DateTime<Utc>,
        instance: &Instance,
    ) -> Result<i64>;
    fn run_finish(
        &self,
        id: i64,
        at: DateTime<Utc>,
        status: &str,
        counts: &Value,
        error: Option<&str>,
    ) -> Result<()>;
    fn runs(&self, flow: Option<&str>, limit: usize) -> Result<Vec<RunRecord>>;

    /// Grants the lease `name` to `holder` (labelled `node`) until `now + ttl`, with a
    /// fencing token larger than any granted before: when nobody holds it, it expired, its
    /// holder is `holder` itself, or its holder is `take_from` (a holder proven dead). None
    /// when another holder keeps it. Nodes must keep their clocks in step (NTP) to well
    /// within `ttl`.
    fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        node: &str,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
        take_from: Option<&str>,
    ) -> Result<Option<i64>>;
    /// Extends the grant `token` of `name` to `now + ttl`: false when it was replaced by
    /// another grant (the lease is lost).
    fn renew_lease(
        &self,
        name: &str,
        token: i64,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<bool>;
    /// Takes or renews a lease (`acquire_lease` labelled with the holder itself): true when
    /// `holder` holds it now.
    fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<bool> {
        Ok(self
            .acquire_lease(name, holder, holder, now, ttl, None)?
            .is_some())
    }
    /// Gives a lease up, if `holder` still holds it.
    fn release_lease(&self, name: &str, holder: &str) -> Result<()>;
    /// Every lease on record, by name, expired ones included (see `Lease::held_at`).
    fn leases(&self) -> Result<Vec<Lease>>;
    /// Claims the firing of schedule `name` at `at`: true for the first node only, so a
    /// schedule that fires on every node runs once. Later firings are claimed afresh.
    fn claim_firing(&self, name: &str, at: DateTime<Utc>) -> Result<bool>;

    /// Remembers that delivery `id` of webhook `webhook` arrived at `at`: true the first
    /// time, false when it is remembered already, so of several nodes receiving the same
    /// delivery at once exactly one is told true. Deliveries that arrived more than `keep`
    /// before `at` are forgotten first (and one of them arriving again counts as new).
    fn remember_delivery(
        &self,
        webhook: &str,
        id: &str,
        at: DateTime<Utc>,
        keep: std::time::Duration,
    ) -> Result<bool>;
    /// Forgets a delivery, so the sender's next attempt is accepted (its flows could not be
    /// started).
    fn forget_delivery(&self, webhook: &str, id: &str) -> Result<()>;

    /// Keeps what was last seen of a system's reachability (replacing what was kept).
    fn put_system_health(&self, health: &SystemHealth) -> Result<()>;
    /// What was last seen of each system, by name.
    fn system_health(&self) -> Result<Vec<SystemHealth>>;
    // The operator's state (`state::operator`): its tables come in a migration step of their
    // own.
    /// Every flow switched on or off by a person, by flow.
    fn flow_switches(&self) -> Result<Vec<FlowSwitch>>;
    /// Switches a flow on or off (replacing an earlier switch).
    fn set_flow_switch(&self, switch: &FlowSwitch) -> Result<()>;
    /// Keeps the per-record lines of a finished run; lines of runs older than the newest
    /// `operator::RUN_LINES_RUNS_KEPT` are dropped.
    fn put_run_lines(&self, lines: &[RunLine]) -> Result<()>;
    /// The per-record lines kept of a run, in the order the run made them.
    fn run_lines(&self, run_id: i64) -> Result<Vec<RunLine>>;
    /// The lines of one record key across runs, newest run first.
    fn run_lines_of_key(&self, key: &str, limit: usize) -> Result<Vec<RunLine>>;
    /// One run by id.
    fn run(&self, id: i64) -> Result<Option<RunRecord>>;
    /// The journal entries of a record key still kept (writes in doubt), oldest first.
    fn journal_of_key(&self, key: &str) -> Result<Vec<JournalEntry>>;
    /// Whether a full read of `flow`'s target made at or after `since` lacked `key` (a target
    /// that cannot be searched by key is not read again to learn it). A store that does not
    /// keep this answers false, and the engine remembers within its own process only.
    fn is_absent(&self, _flow: &str, _key: &str, _since: DateTime<Utc>) -> Result<bool> {
        Ok(false)
    }
    /// Remembers that the full read of `flow`'s target made at `at` lacked `key`.
    fn note_absent(&self, _flow: &str, _key: &str, _at: DateTime<Utc>) -> Result<()> {
        Ok(())
    }
    /// Forgets that `flow`'s target lacked `key` (the flow created it there).
    fn forget_absent(&self, _flow: &str, _key: &str) -> Result<()> {
        Ok(())
    }
    /// Makes `write` if the grant `fence` is still the lease's current one, checked in the
    /// same transaction (a takeover waits for it or makes it fail with `Fenced`). Returns
    /// what the plain call returns (an id, a count; 0 for none).
    fn fenced(&self, fence: &Fence, write: StateWrite) -> Result<i64>;

    /// Closes as `abandoned` the runs still `running` of `flow` (or of every flow) that
    /// another process than `keep` started (of process `of` only, when given): their
    /// process lost its lease or died. Returns how many.
    fn abandon_runs(
        &self,
        flow: Option<&str>,
        of: Option<&str>,
        keep: &str,
        at: DateTime<Utc>,
        why: &str,
    ) -> Result<usize>;

    /// Says that process `instance` (labelled `node`) is alive at `now`; returns every
    /// process on record.
    fn heartbeat(&self, instance: &str, node: &str, now: DateTime<Utc>) -> Result<Vec<NodeRecord>>;

    /// Deletes finished runs that finished before `runs_before`, and processes not seen
    /// since `nodes_before`.
    fn prune(&self, runs_before: DateTime<Utc>, nodes_before: DateTime<Utc>) -> Result<Pruned>;

    /// Bindings of a scope whose record was exported and whose post-actions have not all
    /// run (an export whose run was cut short).
    fn awaiting_actions(&self, scope: &Scope) -> Result<Vec<Binding>>;
}

/// A store behind `open`: the one `state.url` names.
pub type AnyStore = Box<dyn StateStore>;

/// The moment before which remembered deliveries are forgotten. Never before 1970: both
/// stores take that as "the beginning", and SQLite's text timestamps only sort by time for
/// positive years.
pub(crate) fn keep_since(at: DateTime<Utc>, keep: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(keep)
        .ok()
        .and_then(|k| at.checked_sub_signed(k))
        .unwrap_or(DateTime::UNIX_EPOCH)
        .max(DateTime::UNIX_EPOCH)
}

/// A JSON column stored as text (both stores keep JSON as text so key order is kept).
pub(crate) fn json_column(s: Option<String>) -> Result<Option<serde_json::Value>> {
    s.map(|s| serde_json::from_str(&s).map_err(|e| StateStoreError::Corrupt(e.to_string())))
        .transpose()
}

/// Opens the store a `state.url` names: `sqlite:PATH` (relative to `root`) or
/// `postgres://…` / `postgresql://…` (optionally `?schema=NAME`).
pub fn open(url: &str, root: &std::path::Path) -> Result<AnyStore> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Box::new(PostgresStore::open(url)?));
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StateStoreError::Url(redact_url(url)))?;
    let path = std::path::Path::new(path);
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        root.join(path)
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| StateStoreError::Folder {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(Box::new(SqliteStore::open(&path)?))
}
