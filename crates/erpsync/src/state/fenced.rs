//! The state as a leased run sees it: reads as they are, every write made only while the
//! run's lease grant is still the current one (checked in the write's own transaction).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::ids::{FlowName, RecordKey};
use super::operator::{FlowSwitch, RunLine};
use super::store::{Bindings, Coordination, Failures, Journal, Runs, Store};
use super::{
    Adopted, Binding, Failure, Fence, Instance, JournalEntry, JournalState, Result, RunRecord,
    Scope, StateWrite, SystemHealth,
};

fn owned(binding: Option<(&Scope, &Binding)>) -> Option<(Scope, Binding)> {
    binding.map(|(s, b)| (s.clone(), b.clone()))
}

impl Store {
    /// This store with the writes of its sync roles fenced by one lease grant. Coordination
    /// is left as it is: leases are what fences, not what is fenced.
    pub(crate) fn fenced(&self, fence: Fence) -> Store {
        Store {
            bindings: Arc::new(Fenced {
                inner: self.bindings.clone(),
                coordination: self.coordination.clone(),
                fence: fence.clone(),
            }),
            journal: Arc::new(Fenced {
                inner: self.journal.clone(),
                coordination: self.coordination.clone(),
                fence: fence.clone(),
            }),
            failures: Arc::new(Fenced {
                inner: self.failures.clone(),
                coordination: self.coordination.clone(),
                fence: fence.clone(),
            }),
            runs: Arc::new(Fenced {
                inner: self.runs.clone(),
                coordination: self.coordination.clone(),
                fence: fence.clone(),
            }),
            coordination: self.coordination.clone(),
        }
    }
}

/// One role of a store whose writes are fenced by one lease grant.
#[derive(Debug)]
struct Fenced<R: ?Sized> {
    inner: Arc<R>,
    coordination: Arc<dyn Coordination>,
    fence: Fence,
}

impl<R: ?Sized> Fenced<R> {
    async fn write(&self, w: StateWrite) -> Result<i64> {
        self.coordination.fenced(&self.fence, w).await
    }
}

#[async_trait]
impl Bindings for Fenced<dyn Bindings> {
    async fn bindings(
        &self,
        scope: &Scope,
        keys: &[RecordKey<'_>],
    ) -> Result<HashMap<String, Binding>> {
        self.inner.bindings(scope, keys).await
    }
    async fn all_bindings(&self, scope: &Scope) -> Result<Vec<Binding>> {
        self.inner.all_bindings(scope).await
    }
    async fn binding_count(&self, scope: &Scope) -> Result<usize> {
        self.inner.binding_count(scope).await
    }
    async fn put_bindings(&self, scope: &Scope, bindings: Vec<Binding>) -> Result<()> {
        self.write(StateWrite::PutBindings(scope.clone(), bindings))
            .await
            .map(drop)
    }
    async fn put_held(
        &self,
        scope: &Scope,
        bindings: Vec<Binding>,
        adopted: Vec<Adopted>,
    ) -> Result<()> {
        self.write(StateWrite::PutHeld(scope.clone(), bindings, adopted))
            .await
            .map(drop)
    }
    async fn cursor(&self, flow: FlowName<'_>) -> Result<Option<DateTime<Utc>>> {
        self.inner.cursor(flow).await
    }
    async fn set_cursor(&self, flow: FlowName<'_>, at: DateTime<Utc>) -> Result<()> {
        self.write(StateWrite::SetCursor(flow.to_string(), at))
            .await
            .map(drop)
    }
    // What a read of a target lacked is not sync state: a run that lost its lease may still
    // note it; it cannot make a record be written twice or skipped.
    async fn is_absent(
        &self,
        flow: FlowName<'_>,
        key: RecordKey<'_>,
        since: DateTime<Utc>,
    ) -> Result<bool> {
        self.inner.is_absent(flow, key, since).await
    }
    async fn note_absent(
        &self,
        flow: FlowName<'_>,
        key: RecordKey<'_>,
        at: DateTime<Utc>,
    ) -> Result<()> {
        self.inner.note_absent(flow, key, at).await
    }
    async fn forget_absent(&self, flow: FlowName<'_>, key: RecordKey<'_>) -> Result<()> {
        self.inner.forget_absent(flow, key).await
    }
    async fn awaiting_actions(&self, scope: &Scope) -> Result<Vec<Binding>> {
        self.inner.awaiting_actions(scope).await
    }
}

#[async_trait]
impl Journal for Fenced<dyn Journal> {
    async fn journal_begin(&self, entry: &JournalEntry) -> Result<i64> {
        self.write(StateWrite::JournalBegin(entry.clone())).await
    }
    async fn journal_finish(
        &self,
        id: i64,
        state: JournalState,
        binding: Option<(&Scope, &Binding)>,
    ) -> Result<()> {
        self.write(StateWrite::JournalFinish(id, state, owned(binding)))
            .await
            .map(drop)
    }
    async fn journal_progress(&self, id: i64, payload: &Value) -> Result<()> {
        self.write(StateWrite::JournalProgress(id, payload.clone()))
            .await
            .map(drop)
    }
    async fn journal_pending(&self, flow: Option<FlowName<'_>>) -> Result<Vec<JournalEntry>> {
        self.inner.journal_pending(flow).await
    }
    async fn journal_settle(
        &self,
        flow: FlowName<'_>,
        key: RecordKey<'_>,
        binding: Option<(&Scope, &Binding)>,
    ) -> Result<usize> {
        self.write(StateWrite::JournalSettle {
            flow: flow.to_string(),
            key: key.to_string(),
            binding: owned(binding),
        })
        .await
        .map(|n| usize::try_from(n).unwrap_or(0))
    }
    async fn journal_of_key(&self, key: RecordKey<'_>) -> Result<Vec<JournalEntry>> {
        self.inner.journal_of_key(key).await
    }
}

#[async_trait]
impl Failures for Fenced<dyn Failures> {
    async fn put_failure(&self, failure: &Failure) -> Result<i64> {
        self.write(StateWrite::PutFailure(failure.clone())).await
    }
    async fn clear_failure(&self, flow: FlowName<'_>, key: RecordKey<'_>) -> Result<()> {
        self.write(StateWrite::ClearFailure {
            flow: flow.to_string(),
            key: key.to_string(),
        })
        .await
        .map(drop)
    }
    async fn failures(&self, flow: Option<FlowName<'_>>) -> Result<Vec<Failure>> {
        self.inner.failures(flow).await
    }
    async fn failure(&self, id: i64) -> Result<Option<Failure>> {
        self.inner.failure(id).await
    }
    async fn discard_failure(&self, id: i64) -> Result<bool> {
        self.inner.discard_failure(id).await
    }
}

#[async_trait]
impl Runs for Fenced<dyn Runs> {
    async fn run_start(
        &self,
        flow: FlowName<'_>,
        kind: &str,
        at: DateTime<Utc>,
        instance: &Instance,
    ) -> Result<i64> {
        self.write(StateWrite::RunStart {
            flow: flow.to_string(),
            kind: kind.to_string(),
            at,
            instance: instance.clone(),
        })
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
        self.write(StateWrite::RunFinish {
            id,
            at,
            status: status.to_string(),
            counts: counts.clone(),
            error: error.map(str::to_string),
        })
        .await
        .map(drop)
    }
    async fn runs(&self, flow: Option<FlowName<'_>>, limit: usize) -> Result<Vec<RunRecord>> {
        self.inner.runs(flow, limit).await
    }
    async fn run(&self, id: i64) -> Result<Option<RunRecord>> {
        self.inner.run(id).await
    }
    async fn abandon_runs(
        &self,
        flow: Option<FlowName<'_>>,
        of: Option<&str>,
        keep: &str,
        at: DateTime<Utc>,
        why: &str,
    ) -> Result<usize> {
        self.inner.abandon_runs(flow, of, keep, at, why).await
    }
    // Not sync state: what an operator reads (health, switches, run lines). A run that lost
    // its lease may still leave these; none of them can make a record be written twice or
    // skipped.
    async fn put_run_lines(&self, lines: &[RunLine]) -> Result<()> {
        self.inner.put_run_lines(lines).await
    }
    async fn run_lines(&self, run_id: i64) -> Result<Vec<RunLine>> {
        self.inner.run_lines(run_id).await
    }
    async fn run_lines_of_key(&self, key: RecordKey<'_>, limit: usize) -> Result<Vec<RunLine>> {
        self.inner.run_lines_of_key(key, limit).await
    }
    async fn flow_switches(&self) -> Result<Vec<FlowSwitch>> {
        self.inner.flow_switches().await
    }
    async fn set_flow_switch(&self, switch: &FlowSwitch) -> Result<()> {
        self.inner.set_flow_switch(switch).await
    }
    async fn put_system_health(&self, health: &SystemHealth) -> Result<()> {
        self.inner.put_system_health(health).await
    }
    async fn system_health(&self) -> Result<Vec<SystemHealth>> {
        self.inner.system_health().await
    }
}
