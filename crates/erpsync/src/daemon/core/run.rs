//! Runs: asked for (the admin API, webhooks, chains) or fired by the scheduler, carried out
//! while the flow's slot and lease are held, with the keys queued meanwhile run after them and
//! the flows chained after them started.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{Cause, Daemon, DaemonEvent, LastRun, Slot, SlotGuard, TriggerRefusedError, Triggered};
use crate::daemon::metrics::status_of;
use crate::engine::{Counts, Engine, HeldLease, RunOptions, RunReport};
use crate::redact::redact;

impl Daemon {
    /// Asks for a run now; it goes on in the background. A flow that is running takes the
    /// keys of a keyed request right after; an unkeyed request for it is refused.
    pub fn trigger<'a>(
        self: &'a Arc<Self>,
        flow: &'a str,
        opts: RunOptions,
        cause: Cause,
    ) -> futures::future::BoxFuture<'a, Result<Triggered, TriggerRefusedError>> {
        // Boxed: a run it starts may trigger the flows chained after it.
        Box::pin(async move {
            if self.is_stopping() {
                return Err(TriggerRefusedError::ShuttingDown);
            }
            let engine = self.engine();
            let Some(f) = engine.project.flow(flow) else {
                return Err(TriggerRefusedError::UnknownFlow(flow.to_string()));
            };
            if !opts.force && !self.flow_enabled(f) {
                return Err(TriggerRefusedError::Disabled(flow.to_string()));
            }
            match self.acquire(flow, opts.keys.as_deref(), &cause) {
                Slot::Taken => {
                    // The lease is taken before answering: a request another node must serve
                    // is refused now, not accepted and then skipped.
                    let lease = match self.take_lease(flow).await {
                        Ok(l) => l,
                        Err(e) => {
                            self.release_slot(flow);
                            tracing::info!(flow, %cause, reason = %e, "run not started");
                            self.metrics.run_skipped(flow);
                            return Err(e);
                        }
                    };
                    let guard = self.work_guard();
                    let d = self.clone();
                    let flow = flow.to_string();
                    tokio::spawn(async move {
                        let _guard = guard;
                        d.run_held(flow, opts, cause, Some(lease)).await;
                    });
                    Ok(Triggered::Started)
                }
                Slot::Queued => {
                    tracing::debug!(flow, %cause, "flow is running; keys queued behind it");
                    Ok(Triggered::Queued)
                }
                Slot::Busy => Err(TriggerRefusedError::Busy(flow.to_string())),
            }
        })
    }

    /// A scheduled run: skipped, and counted, when the previous run of the flow still goes on.
    /// Every node fires the same schedules; the first to claim a firing runs it.
    pub(crate) async fn run_scheduled(
        self: &Arc<Self>,
        flow: String,
        cause: Cause,
        fired: DateTime<Utc>,
    ) {
        if self.is_stopping() {
            return;
        }
        let firing = format!(
            "{flow}:{}",
            if cause == Cause::Reconcile {
                "reconcile"
            } else {
                "sync"
            }
        );
        let engine = self.engine();
        let switched_off = match engine.project.flow(&flow) {
            Some(f) => !self.flow_enabled_now(f).await,
            None => false,
        };
        if switched_off {
            tracing::info!(flow, %cause, "flow is switched off; run skipped");
            self.metrics.run_skipped(&flow);
            self.emit(DaemonEvent::RunSkipped { flow });
            return;
        }
        match self.store.coordination.claim_firing(&firing, fired).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(flow, %cause, %fired, "another node took this firing");
                self.emit(DaemonEvent::RunSkipped { flow });
                return;
            }
            Err(e) => {
                tracing::error!(flow, error = %redact(&e.to_string()), "cannot claim the firing; run skipped");
                self.emit(DaemonEvent::RunSkipped { flow });
                return;
            }
        }
        match self.acquire(&flow, None, &cause) {
            Slot::Taken => {
                let opts = RunOptions {
                    reconcile: cause == Cause::Reconcile,
                    ..Default::default()
                };
                self.run_held(flow, opts, cause, None).await;
            }
            _ => {
                tracing::warn!(flow, %cause, "previous run still going; this one is skipped");
                self.metrics.run_skipped(&flow);
                self.emit(DaemonEvent::RunSkipped { flow });
            }
        }
    }

    /// Whether no keys are queued behind the flow's run.
    fn pending_is_empty(&self, flow: &str) -> bool {
        let flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        flows.get(flow).is_none_or(|s| s.pending.is_empty())
    }

    /// Runs a flow whose slot is held, then the keys queued meanwhile, then frees the slot.
    pub(super) async fn run_held(
        self: &Arc<Self>,
        flow: String,
        mut opts: RunOptions,
        mut cause: Cause,
        lease: Option<HeldLease>,
    ) {
        let mut slot = SlotGuard {
            daemon: self.clone(),
            flow: flow.clone(),
            armed: true,
        };
        let lease = match lease {
            Some(l) => Ok(l),
            None => self.take_lease(&flow).await,
        };
        let mut lease = match lease {
            Ok(l) => l,
            Err(e) => {
                // Keys queued meanwhile stay queued for this node's next run; the scheduled
                // poll finds those records anyway.
                tracing::info!(flow, %cause, reason = %e, "run skipped");
                self.metrics.run_skipped(&flow);
                if matches!(e, TriggerRefusedError::Elsewhere { .. })
                    && matches!(cause, Cause::Schedule | Cause::Reconcile)
                {
                    self.retry_when_lease_ends(flow.clone(), opts, cause).await;
                }
                self.emit(DaemonEvent::RunSkipped { flow });
                return;
            }
        };
        loop {
            self.execute(&flow, &opts, &cause, &lease).await;
            if self.pending_is_empty(&flow) {
                // Released before the slot is freed: a run this node starts next must not
                // lose the lease to this release.
                lease.release().await;
                let done = {
                    let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
                    let s = flows.entry(flow.clone()).or_default();
                    if s.pending.is_empty() {
                        s.running = None;
                    }
                    s.running.is_none()
                };
                if done {
                    slot.armed = false;
                    return;
                }
                // Keys came while the lease was being released: the flow's lease again.
                lease = match self.take_lease(&flow).await {
                    Ok(l) => l,
                    Err(e) => {
                        let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
                        let s = flows.entry(flow.clone()).or_default();
                        tracing::warn!(flow, keys = s.pending.len(), reason = %e, "queued keys left to the node that holds the flow");
                        s.pending.clear();
                        s.pending_cause = None;
                        s.running = None;
                        slot.armed = false;
                        return;
                    }
                };
            }
            let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
            let s = flows.entry(flow.clone()).or_default();
            let keys: Vec<String> = std::mem::take(&mut s.pending).into_iter().collect();
            cause = s.pending_cause.take().unwrap_or(Cause::Manual);
            if !lease.held() {
                // Another node has the flow now; the scheduled poll there finds these.
                tracing::warn!(
                    flow,
                    keys = keys.len(),
                    "lease lost; queued keys left to the node that holds the flow"
                );
                drop(lease);
                s.running = None;
                slot.armed = false;
                return;
            }
            if self.is_stopping() {
                // The scheduled poll picks these records up after the restart.
                tracing::warn!(
                    flow,
                    keys = keys.len(),
                    "shutting down; queued keys dropped"
                );
                drop(lease);
                s.running = None;
                slot.armed = false;
                return;
            }
            s.running = Some((self.clock.now(), cause.clone()));
            opts = RunOptions {
                keys: Some(keys),
                force: opts.force,
                ..Default::default()
            };
        }
    }

    /// One run: engine, metrics, state of the flow, events, chained flows.
    async fn execute(
        self: &Arc<Self>,
        flow: &str,
        opts: &RunOptions,
        cause: &Cause,
        lease: &HeldLease,
    ) {
        let engine = self.engine();
        let started = self.clock.now();
        self.emit(DaemonEvent::RunStarted {
            flow: flow.to_string(),
            cause: cause.clone(),
        });
        tracing::info!(flow, %cause, keys = opts.keys.as_ref().map(Vec::len), "run started");
        // Every record gets a line, so the run's per-record report is kept (bounded).
        let opts = RunOptions {
            details: true,
            ..opts.clone()
        };
        let result = engine.run_leased(flow, &opts, Some(lease)).await;
        let finished = self.clock.now();
        let seconds = (finished - started).num_milliseconds().max(0) as f64 / 1000.0;
        let (status, last) = match &result {
            Ok(r) => {
                self.metrics.run_finished(flow, Ok(r), seconds);
                let error = r.errors.first().map(|e| redact(e).into_owned());
                if let Some(e) = &error {
                    tracing::warn!(flow, error = %e, "run failed");
                }
                let status = status_of(r);
                (
                    status,
                    LastRun {
                        kind: r.kind.clone(),
                        cause: cause.clone(),
                        started_at: started,
                        finished_at: finished,
                        status: status.to_string(),
                        counts: r.counts.clone(),
                        error,
                    },
                )
            }
            Err(e) => {
                let kind = if opts.reconcile { "reconcile" } else { "sync" };
                self.metrics.run_finished(flow, Err(kind), seconds);
                let error = redact(&e.to_string()).into_owned();
                tracing::warn!(flow, error = %error, "run could not be carried out");
                (
                    "error",
                    LastRun {
                        kind: if opts.reconcile { "reconcile" } else { "sync" }.to_string(),
                        cause: cause.clone(),
                        started_at: started,
                        finished_at: finished,
                        status: "error".to_string(),
                        counts: Counts::default(),
                        error: Some(error),
                    },
                )
            }
        };
        {
            let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
            let s = flows.entry(flow.to_string()).or_default();
            if let Some(e) = &last.error {
                s.last_error = Some((finished, e.clone()));
            }
            s.last = Some(last);
        }
        // Before the run is said to be finished, so whoever waits for that sees it.
        self.note_health();
        self.emit(DaemonEvent::RunFinished {
            flow: flow.to_string(),
            status: status.to_string(),
        });
        if let Ok(report) = &result {
            self.chain(&engine, flow, report).await;
        }
        if engine
            .project
            .daemon
            .as_ref()
            .is_some_and(|d| d.notify.is_some())
        {
            let d = self.clone();
            tokio::spawn(async move {
                d.notify_check().await;
            });
        }
    }

    /// Runs the flows listed under `then`, scoped to the keys found in the records written.
    async fn chain(self: &Arc<Self>, engine: &Engine, flow: &str, report: &RunReport) {
        let Some(f) = engine.project.flow(flow) else {
            return;
        };
        if report.touched.is_empty() || report.dry_run {
            return;
        }
        for (target, path) in &f.then {
            let keys = match path {
                Some(p) => {
                    let mut keys = BTreeSet::new();
                    for rec in &report.touched {
                        keys.extend(
                            p.query(rec)
                                .into_iter()
                                .filter_map(crate::compile::types::key_text),
                        );
                    }
                    if keys.is_empty() {
                        continue;
                    }
                    Some(keys.into_iter().collect::<Vec<_>>())
                }
                None => None,
            };
            let n = keys.as_ref().map(Vec::len);
            let opts = RunOptions {
                keys,
                ..Default::default()
            };
            match self
                .trigger(target, opts, Cause::Chain(flow.to_string()))
                .await
            {
                Ok(how) => {
                    tracing::info!(flow = %target, from = flow, keys = n, ?how, "chained run")
                }
                Err(e) => {
                    tracing::info!(flow = %target, from = flow, reason = %e, "chained run not started")
                }
            }
        }
    }
}
