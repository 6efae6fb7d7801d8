//! A store kept by blocking calls (SQLite, the file):
//! the calls themselves, and the adapter that runs each on tokio's blocking pool so no
//! runtime worker waits on a lock, a busy file or the network. The short calls a run makes
//! for each page and record are made on the caller's thread when nothing makes them wait
//! (`Blocking::at_once`), and only otherwise on the pool.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::ids::{FlowName, RecordKey};
use super::lease::{Fence, Instance};
use super::model::*;
use super::operator::{FlowSwitch, RunLine};
use super::store::{Bindings, Coordination, Failures, Journal, Runs};

/// A store whose calls block. Implementations must make each call atomic.
pub(crate) trait Blocking: Send + Sync + std::fmt::Debug + 'static {
    /// Makes the call `f` on the caller's thread if it can be made without waiting: `None`
    /// when it would have had to wait (the store busy with another call, another process
    /// holding its lock), and then `f` changed nothing. Only for calls of one atomic step
    /// (one transaction, or one read). By default every call goes to the blocking pool.
    fn at_once<R>(&self, f: &dyn Fn(&Self) -> Result<R>) -> Option<Result<R>> {
        let _ = f;
        None
    }

    /// The bindings of the given keys that exist.
    fn bindings(&self, scope: &Scope, keys: &[String]) -> Result<HashMap<String, Binding>>;
    /// Every binding of a scope.
    fn all_bindings(&self, scope: &Scope) -> Result<Vec<Binding>>;
    /// How many bindings a scope has (how big the synced catalogue is).
    fn binding_count(&self, scope: &Scope) -> Result<usize>;
    /// A binding as the store writes it. Made by the caller, on its own thread, before
    /// `put_binding_rows`: the thread that writes then frees a few strings instead of every
    /// node of two records (memory freed on another thread than the one that allocated it
    /// contends for the allocator's locks).
    type BindingRow: Send + Sync + 'static;
    fn binding_row(b: &Binding) -> Self::BindingRow;
    /// The row of the binding `a` stands for.
    fn adopted_row(a: &Adopted) -> Result<Self::BindingRow> {
        Ok(Self::binding_row(&a.binding()?))
    }
    /// Inserts or replaces bindings, already made rows, atomically; under `fence` when
    /// given (as `fenced` makes a `StateWrite::PutBindings`).
    fn put_binding_rows(
        &self,
        fence: Option<&Fence>,
        scope: &Scope,
        rows: &[Self::BindingRow],
    ) -> Result<()>;

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
    fn fenced(&self, fence: &Fence, write: &StateWrite) -> Result<i64>;

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

/// A blocking store served async: a call runs on tokio's blocking pool, and the caller's
/// task waits for it without holding a worker (a write waiting up to the busy timeout for
/// another process's lock leaves the other tasks running); a run's short calls are made at
/// once when they need not wait (`call_at_once`).
#[derive(Debug)]
pub(crate) struct OffRuntime<S>(pub Arc<S>);

impl<S: Blocking> OffRuntime<S> {
    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&S) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let store = self.0.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StateStoreError::Stopped(e.to_string()))?
    }

    /// A call a run makes for each page or record (a page's bindings, a journal entry, a
    /// cursor): made at once on the caller's thread when nothing makes it wait, and
    /// otherwise on the blocking pool as `call`. The hand-over to the pool and back costs
    /// two thread switches a call: without it a 100,000-product first sync took 6 – 27%
    /// less CPU (docs/benchmarks.md).
    async fn call_at_once<R: Send + 'static>(
        &self,
        f: impl Fn(&S) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        match self.0.at_once(&f) {
            Some(out) => out,
            None => self.call(f).await,
        }
    }
}

/// Bindings made rows on the caller's thread, and freed there (see `Blocking::binding_row`).
fn rows_of<S: Blocking>(bindings: Vec<Binding>) -> Vec<S::BindingRow> {
    bindings.iter().map(S::binding_row).collect()
}

/// Bindings and adoptions made rows on the caller's thread (as `rows_of`).
fn held_rows_of<S: Blocking>(
    bindings: Vec<Binding>,
    adopted: Vec<Adopted>,
) -> Result<Vec<S::BindingRow>> {
    let mut rows = rows_of::<S>(bindings);
    rows.reserve(adopted.len());
    for a in &adopted {
        rows.push(S::adopted_row(a)?);
    }
    Ok(rows)
}

#[async_trait]
impl<S: Blocking> Bindings for OffRuntime<S> {
    async fn bindings(
        &self,
        scope: &Scope,
        keys: &[RecordKey<'_>],
    ) -> Result<HashMap<String, Binding>> {
        let scope = scope.clone();
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        self.call_at_once(move |s| s.bindings(&scope, &keys)).await
    }
    async fn all_bindings(&self, scope: &Scope) -> Result<Vec<Binding>> {
        let scope = scope.clone();
        self.call(move |s| s.all_bindings(&scope)).await
    }
    async fn binding_count(&self, scope: &Scope) -> Result<usize> {
        let scope = scope.clone();
        self.call(move |s| s.binding_count(&scope)).await
    }
    async fn put_bindings(&self, scope: &Scope, bindings: Vec<Binding>) -> Result<()> {
        self.put_held(scope, bindings, Vec::new()).await
    }
    async fn put_held(
        &self,
        scope: &Scope,
        bindings: Vec<Binding>,
        adopted: Vec<Adopted>,
    ) -> Result<()> {
        let scope = scope.clone();
        let rows = held_rows_of::<S>(bindings, adopted)?;
        self.call_at_once(move |s| s.put_binding_rows(None, &scope, &rows))
            .await
    }
    async fn cursor(&self, flow: FlowName<'_>) -> Result<Option<DateTime<Utc>>> {
        let flow = flow.to_string();
        self.call_at_once(move |s| s.cursor(&flow)).await
    }
    async fn set_cursor(&self, flow: FlowName<'_>, at: DateTime<Utc>) -> Result<()> {
        let flow = flow.to_string();
        self.call_at_once(move |s| s.set_cursor(&flow, at)).await
    }
    async fn is_absent(
        &self,
        flow: FlowName<'_>,
        key: RecordKey<'_>,
        since: DateTime<Utc>,
    ) -> Result<bool> {
        let flow = flow.to_string();
        let key = key.to_string();
        self.call_at_once(move |s| s.is_absent(&flow, &key, since))
            .await
    }
    async fn note_absent(
        &self,
        flow: FlowName<'_>,
        key: RecordKey<'_>,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let flow = flow.to_string();
        let key = key.to_string();
        self.call_at_once(move |s| s.note_absent(&flow, &key, at))
            .await
    }
    async fn forget_absent(&self, flow: FlowName<'_>, key: RecordKey<'_>) -> Result<()> {
        let flow = flow.to_string();
        let key = key.to_string();
        self.call_at_once(move |s| s.forget_absent(&flow, &key))
            .await
    }
    async fn awaiting_actions(&self, scope: &Scope) -> Result<Vec<Binding>> {
        let scope = scope.clone();
        self.call(move |s| s.awaiting_actions(&scope)).await
    }
}

#[async_trait]
impl<S: Blocking> Journal for OffRuntime<S> {
    async fn journal_begin(&self, entry: &JournalEntry) -> Result<i64> {
        let entry = entry.clone();
        self.call_at_once(move |s| s.journal_begin(&entry)).await
    }
    async fn journal_finish(
        &self,
        id: i64,
        state: JournalState,
        binding: Option<(&Scope, &Binding)>,
    ) -> Result<()> {
        let binding = binding.map(|(s, b)| (s.clone(), b.clone()));
        self.call_at_once(move |s| {
            s.journal_finish(id, state, binding.as_ref().map(|(s, b)| (s, b)))
        })
        .await
    }
    async fn journal_progress(&self, id: i64, payload: &Value) -> Result<()> {
        let payload = payload.clone();
        self.call_at_once(move |s| s.journal_progress(id, &payload))
            .await
    }
    async fn journal_pending(&self, flow: Option<FlowName<'_>>) -> Result<Vec<JournalEntry>> {
        let flow = flow.map(|f| f.to_string());
        self.call(move |s| s.journal_pending(flow.as_deref())).await
    }
    async fn journal_settle(
        &self,
        flow: FlowName<'_>,
        key: RecordKey<'_>,
        binding: Option<(&Scope, &Binding)>,
    ) -> Result<usize> {
        let flow = flow.to_string();
        let key = key.to_string();
        let binding = binding.map(|(s, b)| (s.clone(), b.clone()));
        self.call(move |s| s.journal_settle(&flow, &key, binding.as_ref().map(|(s, b)| (s, b))))
            .await
    }
    async fn journal_of_key(&self, key: RecordKey<'_>) -> Result<Vec<JournalEntry>> {
        let key = key.to_string();
        self.call(move |s| s.journal_of_key(&key)).await
    }
}

#[async_trait]
impl<S: Blocking> Failures for OffRuntime<S> {
    async fn put_failure(&self, failure: &Failure) -> Result<i64> {
        let failure = failure.clone();
        self.call_at_once(move |s| s.put_failure(&failure)).await
    }
    async fn clear_failure(&self, flow: FlowName<'_>, key: RecordKey<'_>) -> Result<()> {
        let flow = flow.to_string();
        let key = key.to_string();
        self.call_at_once(move |s| s.clear_failure(&flow, &key))
            .await
    }
    async fn failures(&self, flow: Option<FlowName<'_>>) -> Result<Vec<Failure>> {
        let flow = flow.map(|f| f.to_string());
        self.call(move |s| s.failures(flow.as_deref())).await
    }
    async fn failure(&self, id: i64) -> Result<Option<Failure>> {
        self.call(move |s| s.failure(id)).await
    }
    async fn discard_failure(&self, id: i64) -> Result<bool> {
        self.call(move |s| s.discard_failure(id)).await
    }
}

#[async_trait]
impl<S: Blocking> Runs for OffRuntime<S> {
    async fn run_start(
        &self,
        flow: FlowName<'_>,
        kind: &str,
        at: DateTime<Utc>,
        instance: &Instance,
    ) -> Result<i64> {
        let flow = flow.to_string();
        let kind = kind.to_string();
        let instance = instance.clone();
        self.call(move |s| s.run_start(&flow, &kind, at, &instance))
            .await
    }
    async fn run_finish(
        &self,
        id: i64,
        at: DateTime<Utc>,
        status: &str,
        counts: &Value,
        error: Option<&str>,
    ) -> Result<()> {
        let status = status.to_string();
        let counts = counts.clone();
        let error = error.map(str::to_string);
        self.call(move |s| s.run_finish(id, at, &status, &counts, error.as_deref()))
            .await
    }
    async fn runs(&self, flow: Option<FlowName<'_>>, limit: usize) -> Result<Vec<RunRecord>> {
        let flow = flow.map(|f| f.to_string());
        self.call(move |s| s.runs(flow.as_deref(), limit)).await
    }
    async fn run(&self, id: i64) -> Result<Option<RunRecord>> {
        self.call(move |s| s.run(id)).await
    }
    async fn abandon_runs(
        &self,
        flow: Option<FlowName<'_>>,
        of: Option<&str>,
        keep: &str,
        at: DateTime<Utc>,
        why: &str,
    ) -> Result<usize> {
        let flow = flow.map(|f| f.to_string());
        let of = of.map(str::to_string);
        let keep = keep.to_string();
        let why = why.to_string();
        self.call(move |s| s.abandon_runs(flow.as_deref(), of.as_deref(), &keep, at, &why))
            .await
    }
    async fn put_run_lines(&self, lines: &[RunLine]) -> Result<()> {
        let lines = lines.to_vec();
        self.call(move |s| s.put_run_lines(&lines)).await
    }
    async fn run_lines(&self, run_id: i64) -> Result<Vec<RunLine>> {
        self.call(move |s| s.run_lines(run_id)).await
    }
    async fn run_lines_of_key(&self, key: RecordKey<'_>, limit: usize) -> Result<Vec<RunLine>> {
        let key = key.to_string();
        self.call(move |s| s.run_lines_of_key(&key, limit)).await
    }
    async fn flow_switches(&self) -> Result<Vec<FlowSwitch>> {
        self.call(move |s| s.flow_switches()).await
    }
    async fn set_flow_switch(&self, switch: &FlowSwitch) -> Result<()> {
        let switch = switch.clone();
        self.call(move |s| s.set_flow_switch(&switch)).await
    }
    async fn put_system_health(&self, health: &SystemHealth) -> Result<()> {
        let health = health.clone();
        self.call(move |s| s.put_system_health(&health)).await
    }
    async fn system_health(&self) -> Result<Vec<SystemHealth>> {
        self.call(move |s| s.system_health()).await
    }
}

#[async_trait]
impl<S: Blocking> Coordination for OffRuntime<S> {
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        node: &str,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
        take_from: Option<&str>,
    ) -> Result<Option<i64>> {
        let name = name.to_string();
        let holder = holder.to_string();
        let node = node.to_string();
        let take_from = take_from.map(str::to_string);
        self.call(move |s| s.acquire_lease(&name, &holder, &node, now, ttl, take_from.as_deref()))
            .await
    }
    async fn renew_lease(
        &self,
        name: &str,
        token: i64,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<bool> {
        let name = name.to_string();
        self.call(move |s| s.renew_lease(&name, token, now, ttl))
            .await
    }
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<bool> {
        let name = name.to_string();
        let holder = holder.to_string();
        self.call(move |s| s.try_lease(&name, &holder, now, ttl))
            .await
    }
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let name = name.to_string();
        let holder = holder.to_string();
        self.call(move |s| s.release_lease(&name, &holder)).await
    }
    async fn leases(&self) -> Result<Vec<Lease>> {
        self.call(move |s| s.leases()).await
    }
    async fn claim_firing(&self, name: &str, at: DateTime<Utc>) -> Result<bool> {
        let name = name.to_string();
        self.call(move |s| s.claim_firing(&name, at)).await
    }
    async fn remember_delivery(
        &self,
        webhook: &str,
        id: &str,
        at: DateTime<Utc>,
        keep: std::time::Duration,
    ) -> Result<bool> {
        let webhook = webhook.to_string();
        let id = id.to_string();
        self.call(move |s| s.remember_delivery(&webhook, &id, at, keep))
            .await
    }
    async fn forget_delivery(&self, webhook: &str, id: &str) -> Result<()> {
        let webhook = webhook.to_string();
        let id = id.to_string();
        self.call(move |s| s.forget_delivery(&webhook, &id)).await
    }
    async fn fenced(&self, fence: &Fence, write: StateWrite) -> Result<i64> {
        let fence = fence.clone();
        let (scope, rows) = match write {
            StateWrite::PutBindings(scope, bindings) => (scope, rows_of::<S>(bindings)),
            StateWrite::PutHeld(scope, bindings, adopted) => {
                (scope, held_rows_of::<S>(bindings, adopted)?)
            }
            write => return self.call_at_once(move |s| s.fenced(&fence, &write)).await,
        };
        self.call_at_once(move |s| s.put_binding_rows(Some(&fence), &scope, &rows).map(|()| 0))
            .await
    }
    async fn heartbeat(
        &self,
        instance: &str,
        node: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<NodeRecord>> {
        let instance = instance.to_string();
        let node = node.to_string();
        self.call(move |s| s.heartbeat(&instance, &node, now)).await
    }
    async fn prune(
        &self,
        runs_before: DateTime<Utc>,
        nodes_before: DateTime<Utc>,
    ) -> Result<Pruned> {
        self.call(move |s| s.prune(runs_before, nodes_before)).await
    }
}
