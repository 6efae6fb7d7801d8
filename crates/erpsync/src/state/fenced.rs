//! The state as a leased run sees it: reads as they are, every write made only while the
//! run's lease grant is still the current one (checked in the write's own transaction).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::operator::{FlowSwitch, RunLine};
use super::{
    Binding, Failure, Fence, Instance, JournalEntry, JournalState, Lease, NodeRecord, Pruned,
    Result, RunRecord, Scope, StateStore, StateWrite, SystemHealth,
};

fn owned(binding: Option<(&Scope, &Binding)>) -> Option<(Scope, Binding)> {
    binding.map(|(s, b)| (s.clone(), b.clone()))
}

/// A store whose writes are fenced by one lease grant.
#[derive(Debug)]
pub struct FencedStore {
    inner: Arc<dyn StateStore>,
    fence: Fence,
}

impl FencedStore {
    pub fn new(inner: Arc<dyn StateStore>, fence: Fence) -> Self {
        FencedStore { inner, fence }
    }

    fn write(&self, w: StateWrite) -> Result<i64> {
        self.inner.fenced(&self.fence, w)
    }
}

impl StateStore for FencedStore {
    fn bindings(&self, scope: &Scope, keys: &[String]) -> Result<HashMap<String, Binding>> {
        self.inner.bindings(scope, keys)
    }
    fn all_bindings(&self, scope: &Scope) -> Result<Vec<Binding>> {
        self.inner.all_bindings(scope)
    }
    fn binding_count(&self, scope: &Scope) -> Result<usize> {
        self.inner.binding_count(scope)
    }
    fn binding_by_id(&self, scope: &Scope, side_a: bool, id: &str) -> Result<Option<Binding>> {
        self.inner.binding_by_id(scope, side_a, id)
    }
    fn put_bindings(&self, scope: &Scope, bindings: &[Binding]) -> Result<()> {
        self.write(StateWrite::PutBindings(scope.clone(), bindings.to_vec()))
            .map(drop)
    }
    fn cursor(&self, flow: &str) -> Result<Option<DateTime<Utc>>> {
        self.inner.cursor(flow)
    }
    fn set_cursor(&self, flow: &str, at: DateTime<Utc>) -> Result<()> {
        self.write(StateWrite::SetCursor(flow.to_string(), at))
            .map(drop)
    }
    fn journal_begin(&self, entry: &JournalEntry) -> Result<i64> {
        self.write(StateWrite::JournalBegin(entry.clone()))
    }
    fn journal_finish(
        &self,
        id: i64,
        state: JournalState,
        binding: Option<(&Scope, &Binding)>,
    ) -> Result<()> {
        self.write(StateWrite::JournalFinish(id, state, owned(binding)))
            .map(drop)
    }
    fn journal_progress(&self, id: i64, payload: &Value) -> Result<()> {
        self.write(StateWrite::JournalProgress(id, payload.clone()))
            .map(drop)
    }
    fn journal_pending(&self, flow: Option<&str>) -> Result<Vec<JournalEntry>> {
        self.inner.journal_pending(flow)
    }
    fn journal_settle(
        &self,
        flow: &str,
        key: &str,
        binding: Option<(&Scope, &Binding)>,
    ) -> Result<usize> {
        self.write(StateWrite::JournalSettle(
            flow.to_string(),
            key.to_string(),
            owned(binding),
        ))
        .map(|n| usize::try_from(n).unwrap_or(0))
    }
    fn put_failure(&self, failure: &Failure) -> Result<i64> {
        self.write(StateWrite::PutFailure(failure.clone()))
    }
    fn clear_failure(&self, flow: &str, key: &str) -> Result<()> {
        self.write(StateWrite::ClearFailure(flow.to_string(), key.to_string()))
            .map(drop)
    }
    fn failures(&self, flow: Option<&str>) -> Result<Vec<Failure>> {
        self.inner.failures(flow)
    }
    fn failure(&self, id: i64) -> Result<Option<Failure>> {
        self.inner.failure(id)
    }
    fn discard_failure(&self, id: i64) -> Result<bool> {
        self.inner.discard_failure(id)
    }
    fn run_start(
        &self,
        flow: &str,
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
    }
    fn run_finish(
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
        .map(drop)
    }
    fn runs(&self, flow: Option<&str>, limit: usize) -> Result<Vec<RunRecord>> {
        self.inner.runs(flow, limit)
    }
    fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        node: &str,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
        take_from: Option<&str>,
    ) -> Result<Option<i64>> {
        self.inner
            .acquire_lease(name, holder, node, now, ttl, take_from)
    }
    fn renew_lease(
        &self,
        name: &str,
        token: i64,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<bool> {
        self.inner.renew_lease(name, token, now, ttl)
    }
    fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.inner.release_lease(name, holder)
    }
    fn leases(&self) -> Result<Vec<Lease>> {
        self.inner.leases()
    }
    fn claim_firing(&self, name: &str, at: DateTime<Utc>) -> Result<bool> {
        self.inner.claim_firing(name, at)
    }
    fn remember_delivery(
        &self,
        webhook: &str,
        id: &str,
        at: DateTime<Utc>,
        keep: std::time::Duration,
    ) -> Result<bool> {
        self.inner.remember_delivery(webhook, id, at, keep)
    }
    fn forget_delivery(&self, webhook: &str, id: &str) -> Result<()> {
        self.inner.forget_delivery(webhook, id)
    }
    fn fenced(&self, fence: &Fence, write: StateWrite) -> Result<i64> {
        self.inner.fenced(fence, write)
    }
    fn abandon_runs(
        &self,
        flow: Option<&str>,
        of: Option<&str>,
        keep: &str,
        at: DateTime<Utc>,
        why: &str,
    ) -> Result<usize> {
        self.inner.abandon_runs(flow, of, keep, at, why)
    }
    fn heartbeat(&self, instance: &str, node: &str, now: DateTime<Utc>) -> Result<Vec<NodeRecord>> {
        self.inner.heartbeat(instance, node, now)
    }
    fn prune(&self, runs_before: DateTime<Utc>, nodes_before: DateTime<Utc>) -> Result<Pruned> {
        self.inner.prune(runs_before, nodes_before)
    }
    fn awaiting_actions(&self, scope: &Scope) -> Result<Vec<Binding>> {
        self.inner.awaiting_actions(scope)
    }
    // Not sync state: what an operator reads (health, switches, run lines) and what a read
    // of a target lacked. A run that lost its lease may still leave these; none of them can
    // make a record be written twice or skipped.
    fn put_system_health(&self, health: &SystemHealth) -> Result<()> {
        self.inner.put_system_health(health)
    }
    fn system_health(&self) -> Result<Vec<SystemHealth>> {
        self.inner.system_health()
    }
    fn flow_switches(&self) -> Result<Vec<FlowSwitch>> {
        self.inner.flow_switches()
    }
    fn set_flow_switch(&self, switch: &FlowSwitch) -> Result<()> {
        self.inner.set_flow_switch(switch)
    }
    fn put_run_lines(&self, lines: &[RunLine]) -> Result<()> {
        self.inner.put_run_lines(lines)
    }
    fn run_lines(&self, run_id: i64) -> Result<Vec<RunLine>> {
        self.inner.run_lines(run_id)
    }
    fn run_lines_of_key(&self, key: &str, limit: usize) -> Result<Vec<RunLine>> {
        self.inner.run_lines_of_key(key, limit)
    }
    fn run(&self, id: i64) -> Result<Option<RunRecord>> {
        self.inner.run(id)
    }
    fn journal_of_key(&self, key: &str) -> Result<Vec<JournalEntry>> {
        self.inner.journal_of_key(key)
    }
    fn is_absent(&self, flow: &str, key: &str, since: DateTime<Utc>) -> Result<bool> {
        self.inner.is_absent(flow, key, since)
    }
    fn note_absent(&self, flow: &str, key: &str, at: DateTime<Utc>) -> Result<()> {
        self.inner.note_absent(flow, key, at)
    }
    fn forget_absent(&self, flow: &str, key: &str) -> Result<()> {
        self.inner.forget_absent(flow, key)
    }
}
