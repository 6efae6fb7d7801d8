//! The seam: what a state store does, whatever keeps it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::lease::{Fence, Instance};
use super::model::*;
use super::operator::{FlowSwitch, RunLine};

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
    /// Replaces the payload of a pending write: a multi-step write keeps in it the steps
    /// sent and answered so far, so a crash between steps resumes where it stopped.
    fn journal_progress(&self, id: i64, payload: &Value) -> Result<()>;
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

/// The switches on record, by flow: what a person set wins over the flow file's `enabled`.
pub fn switches(store: &dyn StateStore) -> Result<HashMap<String, bool>> {
    Ok(store
        .flow_switches()?
        .into_iter()
        .map(|s| (s.flow, s.enabled))
        .collect())
}
