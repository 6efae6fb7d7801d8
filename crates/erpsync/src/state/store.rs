//! The seam: what a state store does, whatever keeps it, split by role. A `Store` is one
//! handle per role; a store's backend serves every role, and a wrapper (fencing, a test that
//! counts reads) replaces only the role it changes. Every call is async: a backend that
//! blocks (SQLite) runs its calls off the runtime's workers.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::ids::{FlowName, RecordKey};
use super::lease::{Fence, Instance};
use super::model::*;
use super::operator::{FlowSwitch, RunLine};

#[async_trait]
pub trait Bindings: Send + Sync + std::fmt::Debug {
    /// The bindings of the given keys that exist, by key.
    async fn bindings(
        &self,
        scope: &Scope,
        keys: &[RecordKey<'_>],
    ) -> Result<HashMap<String, Binding>>;
    /// Every binding of a scope.
    async fn all_bindings(&self, scope: &Scope) -> Result<Vec<Binding>>;
    /// How many bindings a scope has (how big the synced catalogue is).
    async fn binding_count(&self, scope: &Scope) -> Result<usize>;
    /// Inserts or replaces bindings, atomically. The store takes them as they are: each
    /// implementation hands them to another thread or keeps them in a write record.
    async fn put_bindings(&self, scope: &Scope, bindings: Vec<Binding>) -> Result<()>;
    /// `put_bindings` of `bindings` and of the bindings `adopted` stand for, atomically. A
    /// store that keeps bases packed stores each adoption's packed record as it is.
    async fn put_held(
        &self,
        scope: &Scope,
        mut bindings: Vec<Binding>,
        adopted: Vec<Adopted>,
    ) -> Result<()> {
        for a in &adopted {
            bindings.push(a.binding()?);
        }
        self.put_bindings(scope, bindings).await
    }

    async fn cursor(&self, flow: FlowName<'_>) -> Result<Option<DateTime<Utc>>>;
    async fn set_cursor(&self, flow: FlowName<'_>, at: DateTime<Utc>) -> Result<()>;
    /// Whether a full read of `flow`'s target made at or after `since` lacked `key` (a target
    /// that cannot be searched by key is not read again to learn it). A store that does not
    /// keep this answers false, and the engine remembers within its own process only.
    async fn is_absent(
        &self,
        _flow: FlowName<'_>,
        _key: RecordKey<'_>,
        _since: DateTime<Utc>,
    ) -> Result<bool> {
        Ok(false)
    }
    /// Remembers that the full read of `flow`'s target made at `at` lacked `key`.
    async fn note_absent(
        &self,
        _flow: FlowName<'_>,
        _key: RecordKey<'_>,
        _at: DateTime<Utc>,
    ) -> Result<()> {
        Ok(())
    }
    /// Forgets that `flow`'s target lacked `key` (the flow created it there).
    async fn forget_absent(&self, _flow: FlowName<'_>, _key: RecordKey<'_>) -> Result<()> {
        Ok(())
    }

    /// Bindings of a scope whose record was exported and whose post-actions have not all
    /// run (an export whose run was cut short).
    async fn awaiting_actions(&self, scope: &Scope) -> Result<Vec<Binding>>;
}

#[async_trait]
pub trait Journal: Send + Sync + std::fmt::Debug {
    /// Records the intent of a write; returns its id.
    async fn journal_begin(&self, entry: &JournalEntry) -> Result<i64>;
    /// Records the outcome of a write, together with the binding it produced, atomically.
    async fn journal_finish(
        &self,
        id: i64,
        state: JournalState,
        binding: Option<(&Scope, &Binding)>,
    ) -> Result<()>;
    /// Replaces the payload of a pending write: a multi-step write keeps in it the steps
    /// sent and answered so far, so a crash between steps resumes where it stopped.
    async fn journal_progress(&self, id: i64, payload: &Value) -> Result<()>;
    /// Writes whose outcome is not known (crash or timeout after sending), of one flow or
    /// of every flow, oldest first.
    async fn journal_pending(&self, flow: Option<FlowName<'_>>) -> Result<Vec<JournalEntry>>;
    /// Settles by hand the pending writes of one record: they are removed, and `binding`,
    /// when given (the write was applied), is stored with them, atomically. Returns how many
    /// entries were settled.
    async fn journal_settle(
        &self,
        flow: FlowName<'_>,
        key: RecordKey<'_>,
        binding: Option<(&Scope, &Binding)>,
    ) -> Result<usize>;
    /// The journal entries of a record key still kept (writes in doubt), oldest first.
    async fn journal_of_key(&self, key: RecordKey<'_>) -> Result<Vec<JournalEntry>>;
}

#[async_trait]
pub trait Failures: Send + Sync + std::fmt::Debug {
    /// Keeps a failed record (one per flow and key; a repeated failure updates it).
    async fn put_failure(&self, failure: &Failure) -> Result<i64>;
    async fn clear_failure(&self, flow: FlowName<'_>, key: RecordKey<'_>) -> Result<()>;
    async fn failures(&self, flow: Option<FlowName<'_>>) -> Result<Vec<Failure>>;
    async fn failure(&self, id: i64) -> Result<Option<Failure>>;
    async fn discard_failure(&self, id: i64) -> Result<bool>;
}

#[async_trait]
pub trait Runs: Send + Sync + std::fmt::Debug {
    /// Records a run started by process `instance` of node `node`.
    async fn run_start(
        &self,
        flow: FlowName<'_>,
        kind: &str,
        at: DateTime<Utc>,
        instance: &Instance,
    ) -> Result<i64>;
    async fn run_finish(
        &self,
        id: i64,
        at: DateTime<Utc>,
        status: &str,
        counts: &Value,
        error: Option<&str>,
    ) -> Result<()>;
    async fn runs(&self, flow: Option<FlowName<'_>>, limit: usize) -> Result<Vec<RunRecord>>;
    /// One run by id.
    async fn run(&self, id: i64) -> Result<Option<RunRecord>>;

    /// Closes as `abandoned` the runs still `running` of `flow` (or of every flow) that
    /// another process than `keep` started (of process `of` only, when given): their
    /// process lost its lease or died. Returns how many.
    async fn abandon_runs(
        &self,
        flow: Option<FlowName<'_>>,
        of: Option<&str>,
        keep: &str,
        at: DateTime<Utc>,
        why: &str,
    ) -> Result<usize>;
    /// Keeps the per-record lines of a finished run; lines of runs older than the newest
    /// `operator::RUN_LINES_RUNS_KEPT` are dropped.
    async fn put_run_lines(&self, lines: &[RunLine]) -> Result<()>;
    /// The per-record lines kept of a run, in the order the run made them.
    async fn run_lines(&self, run_id: i64) -> Result<Vec<RunLine>>;
    /// The lines of one record key across runs, newest run first.
    async fn run_lines_of_key(&self, key: RecordKey<'_>, limit: usize) -> Result<Vec<RunLine>>;
    /// Every flow switched on or off by a person, by flow.
    async fn flow_switches(&self) -> Result<Vec<FlowSwitch>>;
    /// Switches a flow on or off (replacing an earlier switch).
    async fn set_flow_switch(&self, switch: &FlowSwitch) -> Result<()>;

    /// Keeps what was last seen of a system's reachability (replacing what was kept).
    async fn put_system_health(&self, health: &SystemHealth) -> Result<()>;
    /// What was last seen of each system, by name.
    async fn system_health(&self) -> Result<Vec<SystemHealth>>;
}

#[async_trait]
pub trait Coordination: Send + Sync + std::fmt::Debug {
    /// Grants the lease `name` to `holder` (labelled `node`) until `now + ttl`, with a
    /// fencing token larger than any granted before: when nobody holds it, it expired, its
    /// holder is `holder` itself, or its holder is `take_from` (a holder proven dead). None
    /// when another holder keeps it. Nodes must keep their clocks in step (NTP) to well
    /// within `ttl`.
    async fn acquire_lease(
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
    async fn renew_lease(
        &self,
        name: &str,
        token: i64,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<bool>;
    /// Takes or renews a lease (`acquire_lease` labelled with the holder itself): true when
    /// `holder` holds it now.
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<bool> {
        Ok(self
            .acquire_lease(name, holder, holder, now, ttl, None)
            .await?
            .is_some())
    }
    /// Gives a lease up, if `holder` still holds it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;
    /// Every lease on record, by name, expired ones included (see `Lease::held_at`).
    async fn leases(&self) -> Result<Vec<Lease>>;
    /// Claims the firing of schedule `name` at `at`: true for the first node only, so a
    /// schedule that fires on every node runs once. Later firings are claimed afresh.
    async fn claim_firing(&self, name: &str, at: DateTime<Utc>) -> Result<bool>;

    /// Remembers that delivery `id` of webhook `webhook` arrived at `at`: true the first
    /// time, false when it is remembered already, so of several nodes receiving the same
    /// delivery at once exactly one is told true. Deliveries that arrived more than `keep`
    /// before `at` are forgotten first (and one of them arriving again counts as new).
    async fn remember_delivery(
        &self,
        webhook: &str,
        id: &str,
        at: DateTime<Utc>,
        keep: std::time::Duration,
    ) -> Result<bool>;
    /// Forgets a delivery, so the sender's next attempt is accepted (its flows could not be
    /// started).
    async fn forget_delivery(&self, webhook: &str, id: &str) -> Result<()>;
    /// Makes `write` if the grant `fence` is still the lease's current one, checked in the
    /// same transaction (a takeover waits for it or makes it fail with `Fenced`). Returns
    /// what the plain call returns (an id, a count; 0 for none).
    async fn fenced(&self, fence: &Fence, write: StateWrite) -> Result<i64>;

    /// Says that process `instance` (labelled `node`) is alive at `now`; returns every
    /// process on record.
    async fn heartbeat(
        &self,
        instance: &str,
        node: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<NodeRecord>>;

    /// Deletes finished runs that finished before `runs_before`, and processes not seen
    /// since `nodes_before`.
    async fn prune(
        &self,
        runs_before: DateTime<Utc>,
        nodes_before: DateTime<Utc>,
    ) -> Result<Pruned>;
}
/// Where erpsync keeps its state: one handle per role, each call atomic. Cloning shares the
/// handles.
#[derive(Clone, Debug)]
pub struct Store {
    /// Bindings between records, cursors, targets' known-absent keys.
    pub bindings: Arc<dyn Bindings>,
    /// The write journal that makes exports exactly-once.
    pub journal: Arc<dyn Journal>,
    /// Failed records kept for retry.
    pub failures: Arc<dyn Failures>,
    /// Run history and per-record lines, flow switches, systems' health.
    pub runs: Arc<dyn Runs>,
    /// What nodes agree on: leases, fenced writes, schedule firings, webhook deliveries,
    /// processes alive.
    pub coordination: Arc<dyn Coordination>,
}

impl Store {
    /// A store whose every role is served by `backend`.
    pub fn of<B>(backend: Arc<B>) -> Self
    where
        B: Bindings + Journal + Failures + Runs + Coordination + 'static,
    {
        Store {
            bindings: backend.clone(),
            journal: backend.clone(),
            failures: backend.clone(),
            runs: backend.clone(),
            coordination: backend,
        }
    }
}

/// The switches on record, by flow: what a person set wins over the flow file's `enabled`.
pub async fn switches(store: &Store) -> Result<HashMap<String, bool>> {
    Ok(store
        .runs
        .flow_switches()
        .await?
        .into_iter()
        .map(|s| (s.flow, s.enabled))
        .collect())
}
