//! The daemon's core: the engine in force (swapped whole on reload), at most one run per flow
//! at a time (across nodes too: a run holds the flow's lease in the state store), keyed runs
//! queued behind a running one, chained flows, and draining on shutdown.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{Notify, broadcast};

use super::metrics::{Metrics, status_of};
use super::reload::ReloadChanges;
use super::scheduler::Plan;
use crate::clock::SharedClock;
use crate::compile::Project;
use crate::engine::{
    Counts, Engine, EngineBuildError, HeldLease, LeaseTakeError, RunOptions, RunReport,
};
use crate::redact::redact;
use crate::state::{Lease, Store};

/// Seconds in-flight runs get to finish after a shutdown request, unless configured.
const DEFAULT_GRACE_SECS: u64 = 30;

/// Why a run was started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "by", content = "name")]
pub enum Cause {
    /// The flow's cron schedule.
    Schedule,
    /// The flow's `reconcile` schedule.
    Reconcile,
    /// The admin API (or a test) asked for it.
    Manual,
    /// A retry of kept failures.
    Retry,
    /// An incoming webhook, by name.
    Webhook(String),
    /// The flow named here finished and lists this one under `then`.
    Chain(String),
    /// Writes left in doubt by a process that died, settled at start-up.
    Recovery,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Schedule => f.write_str("schedule"),
            Cause::Reconcile => f.write_str("reconcile"),
            Cause::Manual => f.write_str("manual"),
            Cause::Retry => f.write_str("retry"),
            Cause::Webhook(n) => write!(f, "webhook `{n}`"),
            Cause::Chain(n) => write!(f, "chained from `{n}`"),
            Cause::Recovery => f.write_str("recovery"),
        }
    }
}

/// What happened, for whoever listens (tests, future SSE of the admin API).
#[derive(Debug, Clone, PartialEq)]
pub enum DaemonEvent {
    RunStarted {
        flow: String,
        cause: Cause,
    },
    RunFinished {
        flow: String,
        status: String,
    },
    RunSkipped {
        flow: String,
    },
    Reloaded {
        accepted: bool,
    },
    /// The circuit breaker of this system took it as down (see `health.rs`).
    SystemDown {
        system: String,
    },
    /// A system that was down answers again.
    SystemUp {
        system: String,
    },
}

/// The last finished run of a flow.
#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    pub kind: String,
    pub cause: Cause,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// `ok`, `partial` (some records failed) or `error`.
    pub status: String,
    pub counts: Counts,
    pub error: Option<String>,
}

/// What the daemon knows of one flow between runs.
#[derive(Debug, Default)]
struct FlowState {
    running: Option<(DateTime<Utc>, Cause)>,
    /// Keys asked for (webhooks, chains) while the flow was running: they run right after.
    pending: BTreeSet<String>,
    /// Causes of the pending keys, for the log of the follow-up run.
    pending_cause: Option<Cause>,
    last: Option<LastRun>,
    last_error: Option<(DateTime<Utc>, String)>,
    skipped: u64,
}

/// A flow as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FlowStatus {
    pub id: String,
    pub description: Option<String>,
    /// Whether the flow is on: its switch when a person set one, else its flow file.
    pub enabled: bool,
    /// The switch a person set (console, admin API), if any.
    pub switched: Option<bool>,
    pub from: String,
    pub to: String,
    pub schedule: Option<String>,
    pub reconcile_schedule: Option<String>,
    pub webhook: Option<String>,
    pub running_since: Option<DateTime<Utc>>,
    pub next_run: Option<DateTime<Utc>>,
    pub next_reconcile: Option<DateTime<Utc>>,
    pub last_run: Option<LastRun>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub skipped_runs: u64,
    pub queued_keys: usize,
    /// The node running the flow now, by the flow's lease in the state database (any node
    /// sharing it, this one included); absent when no node holds it, or when the database
    /// cannot say (a warning is logged).
    pub lease_holder: Option<String>,
    /// Until when that node holds the lease unless it renews it.
    pub lease_until: Option<DateTime<Utc>>,
}

/// A request to run a flow that was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerRefusedError {
    #[error("the daemon is shutting down")]
    ShuttingDown,
    #[error("unknown flow `{0}`")]
    UnknownFlow(String),
    #[error("flow `{0}` is disabled")]
    Disabled(String),
    #[error("flow `{0}` is already running")]
    Busy(String),
    /// Another live process holds the flow's lease: nothing was started or queued here.
    #[error("flow `{flow}` is running on node `{node}`")]
    Elsewhere {
        flow: String,
        node: String,
        /// When the holder's lease runs out unless it renews it.
        until: DateTime<Utc>,
    },
    /// The state database cannot say who holds the flow.
    #[error("flow `{0}` cannot be started: the state database is unavailable")]
    StateUnavailable(String),
}

/// A request to run a flow that was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Triggered {
    /// The run started.
    Started,
    /// The flow is running; the keys run right after it.
    Queued,
}

/// A daemon that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonStartError {
    #[error(transparent)]
    Engine(#[from] EngineBuildError),
}

/// A reload that was refused; the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ConfigReloadError {
    #[error("the new flow files have {count} problem(s); keeping the running configuration")]
    Invalid { count: usize, diagnostics: String },
    #[error("the new flow files cannot be started: {0}")]
    Engine(#[from] EngineBuildError),
}

enum Slot {
    Taken,
    Queued,
    Busy,
}

/// The long-running daemon. Everything it does goes through here, so tests drive it directly:
/// `tick` for the scheduler, `trigger` for the admin API and webhooks, `shutdown` + `drain`
/// for SIGTERM, `reload` for SIGHUP.
#[derive(Debug)]
pub struct Daemon {
    pub(super) paths: Vec<PathBuf>,
    pub(super) store: Store,
    pub(super) clock: SharedClock,
    engine: RwLock<Arc<Engine>>,
    flows: Mutex<HashMap<String, FlowState>>,
    pub(super) plan: Mutex<Plan>,
    /// Flows switched on or off by a person, by flow (see `switches.rs`).
    pub(super) switches: Mutex<HashMap<String, bool>>,
    /// Systems last noticed down (see `health.rs`), so each change is told once.
    pub(super) down: Mutex<BTreeSet<String>>,
    /// What the notifier remembers (see `notify.rs`).
    pub(super) notify: Mutex<super::notify::NotifyState>,
    /// Woken when the plan changes, so the scheduler loop does not sleep past a new firing.
    pub(super) replanned: Notify,
    pub metrics: Metrics,
    events: broadcast::Sender<DaemonEvent>,
    stopping: AtomicBool,
    work: AtomicUsize,
    idle: Notify,
    admin_token: Option<String>,
    /// Processes of the state database that carry this node's label, alive by their
    /// heartbeat: `daemon.node_id` given to two nodes.
    pub(super) clashes: Mutex<Vec<String>>,
}

/// Counts accepted work until dropped, even when a run panics.
pub(super) struct WorkGuard(Arc<Daemon>);

impl Drop for WorkGuard {
    fn drop(&mut self) {
        if self.0.work.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Frees a flow's slot if a run ends by panic; a run that ends normally frees it under the
/// same lock that checks for queued keys, so none slips in between.
struct SlotGuard {
    daemon: Arc<Daemon>,
    flow: String,
    armed: bool,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut flows = self.daemon.flows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = flows.get_mut(&self.flow) {
            s.running = None;
        }
    }
}

impl Daemon {
    /// A daemon over a compiled project. `admin_token` overrides `daemon.admin_token`.
    pub async fn new(
        paths: Vec<PathBuf>,
        project: Arc<Project>,
        store: Store,
        clock: SharedClock,
        admin_token: Option<String>,
    ) -> Result<Arc<Self>, DaemonStartError> {
        let engine = Engine::new(project, store.clone(), clock.clone())?;
        if let Some(t) = &admin_token {
            crate::redact::register(t);
        }
        let (events, _) = broadcast::channel(1024);
        let now = clock.now();
        let switches = super::switches::read_switches(&store).await;
        let mut plan = Plan::default();
        plan.sync(&engine.project, |f| f.is_on(&switches), now);
        let daemon = Arc::new(Daemon {
            paths,
            store,
            clock,
            engine: RwLock::new(Arc::new(engine)),
            flows: Mutex::new(HashMap::new()),
            plan: Mutex::new(plan),
            switches: Mutex::new(switches),
            down: Mutex::new(BTreeSet::new()),
            notify: Mutex::new(Default::default()),
            replanned: Notify::new(),
            metrics: Metrics::default(),
            events,
            stopping: AtomicBool::new(false),
            work: AtomicUsize::new(0),
            idle: Notify::new(),
            admin_token,
            clashes: Mutex::new(Vec::new()),
        });
        daemon.notify_baseline().await;
        Ok(daemon)
    }

    /// The engine in force; a run keeps the one it started with across a reload.
    pub fn engine(&self) -> Arc<Engine> {
        self.engine
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<DaemonEvent> {
        self.events.subscribe()
    }

    pub(super) fn emit(&self, e: DaemonEvent) {
        let _ = self.events.send(e);
    }

    /// The bearer token the admin API requires, if one is set.
    pub fn admin_token(&self) -> Option<String> {
        self.admin_token.clone().or_else(|| {
            self.engine()
                .project
                .daemon
                .as_ref()
                .and_then(|d| d.admin_token.clone())
                .filter(|t| !t.is_empty())
        })
    }

    /// The bearer token of read-only access (`daemon.viewer_token`), if one is set.
    pub fn viewer_token(&self) -> Option<String> {
        let t = self
            .engine()
            .project
            .daemon
            .as_ref()
            .and_then(|d| d.viewer_token.clone())
            .filter(|t| !t.is_empty());
        if let Some(t) = &t {
            crate::redact::register(t);
        }
        t
    }

    /// How long in-flight runs may take after a shutdown request.
    pub fn grace(&self) -> Duration {
        let secs = self
            .engine()
            .project
            .daemon
            .as_ref()
            .and_then(|d| d.shutdown_grace_secs)
            .unwrap_or(DEFAULT_GRACE_SECS);
        Duration::from_secs(secs)
    }

    /// This node's label (`daemon.node_id`, default the host name).
    pub fn node_id(&self) -> String {
        self.engine().instance.node.clone()
    }

    /// This process, unique among the nodes sharing the state.
    pub fn instance_id(&self) -> String {
        self.engine().instance.id.clone()
    }

    /// Other live processes that carry this node's label.
    pub fn node_clashes(&self) -> Vec<String> {
        self.clashes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes the flow's lease, or says why not (logged).
    async fn take_lease(&self, flow: &str) -> Result<HeldLease, TriggerRefusedError> {
        match self.engine().take_lease(flow).await {
            Ok(l) => Ok(l),
            Err(LeaseTakeError::Held { node, until, .. }) => Err(TriggerRefusedError::Elsewhere {
                flow: flow.to_string(),
                node,
                until,
            }),
            Err(LeaseTakeError::Busy(_)) => Err(TriggerRefusedError::Busy(flow.to_string())),
            Err(e @ LeaseTakeError::State { .. }) => {
                tracing::error!(flow, error = %redact(&e.to_string()), "cannot take the flow's lease");
                Err(TriggerRefusedError::StateUnavailable(flow.to_string()))
            }
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Runs going on (or accepted and about to start) now.
    pub fn in_flight(&self) -> usize {
        self.work.load(Ordering::SeqCst)
    }

    /// Whether a flow is running now.
    pub fn is_running(&self, flow: &str) -> bool {
        self.flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(flow)
            .is_some_and(|s| s.running.is_some())
    }

    pub(super) fn work_guard(self: &Arc<Self>) -> WorkGuard {
        self.work.fetch_add(1, Ordering::SeqCst);
        WorkGuard(self.clone())
    }

    /// Frees a flow's slot taken by `acquire` when its run does not start after all.
    fn release_slot(&self, flow: &str) {
        let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = flows.get_mut(flow) {
            s.running = None;
        }
    }

    /// Takes the flow's slot; a busy flow queues the keys of a keyed request.
    fn acquire(&self, flow: &str, keys: Option<&[String]>, cause: &Cause) -> Slot {
        let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        let s = flows.entry(flow.to_string()).or_default();
        if s.running.is_none() {
            s.running = Some((self.clock.now(), cause.clone()));
            return Slot::Taken;
        }
        match keys {
            Some(keys) => {
                s.pending.extend(keys.iter().cloned());
                s.pending_cause.get_or_insert_with(|| cause.clone());
                Slot::Queued
            }
            None => {
                s.skipped += 1;
                Slot::Busy
            }
        }
    }

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
    pub(super) async fn run_scheduled(
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
    async fn run_held(
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

    /// A scheduled run skipped because another node holds the flow is tried once more just
    /// after that node's lease would run out: if that node died, this one takes the flow over
    /// then, not at the next firing. (A live holder has renewed it by then: nothing happens.)
    /// Paced on wall time, like lease renewal.
    fn retry_when_lease_ends(
        self: &Arc<Self>,
        flow: String,
        opts: RunOptions,
        cause: Cause,
    ) -> futures::future::BoxFuture<'_, ()> {
        // Boxed: the run it starts may come back here.
        Box::pin(async move {
            let name = Lease::of_flow(&flow);
            let Ok(leases) = self.store.coordination.leases().await else {
                return;
            };
            let Some(until) = leases
                .into_iter()
                .find(|l| l.name == name)
                .map(|l| l.expires_at)
            else {
                return;
            };
            let ttl = self.engine().lease_ttl();
            let wait = (until - self.clock.now())
                .to_std()
                .unwrap_or_default()
                .min(ttl)
                + Duration::from_millis(500);
            let d = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                if d.is_stopping() {
                    return;
                }
                if !matches!(d.acquire(&flow, None, &cause), Slot::Taken) {
                    return;
                }
                match d.take_lease(&flow).await {
                    Ok(lease) => {
                        let _guard = d.work_guard();
                        tracing::info!(flow, %cause, "the flow's lease ran out; this node takes the flow over");
                        d.run_held(flow, opts, cause, Some(lease)).await;
                    }
                    Err(_) => d.release_slot(&flow),
                }
            });
        })
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

    /// Every flow with what the daemon knows of it.
    pub async fn flow_statuses(&self) -> Vec<FlowStatus> {
        // Asked before the locks are taken: the store may make us wait.
        let now = self.clock.now();
        let leases: HashMap<String, Lease> = match self.store.coordination.leases().await {
            Ok(list) => list
                .into_iter()
                .filter(|l| l.held_at(now))
                .filter_map(|l| Some((l.flow()?.to_string(), l)))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %redact(&e.to_string()), "cannot read the flow leases");
                HashMap::new()
            }
        };
        let switches = self.flow_switches();
        let engine = self.engine();
        let plan = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        let flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        engine
            .project
            .flows
            .iter()
            .map(|f| {
                let s = flows.get(&f.id);
                FlowStatus {
                    id: f.id.clone(),
                    description: f.description.clone(),
                    enabled: f.is_on(&switches),
                    switched: switches.get(&f.id).copied(),
                    from: f.from.clone(),
                    to: f.to.clone(),
                    schedule: f.schedule.as_ref().map(|s| s.source().to_string()),
                    reconcile_schedule: f
                        .reconcile_schedule
                        .as_ref()
                        .map(|s| s.source().to_string()),
                    webhook: f.webhook.clone(),
                    running_since: s.and_then(|s| s.running.as_ref().map(|r| r.0)),
                    next_run: plan.next(&f.id, false),
                    next_reconcile: plan.next(&f.id, true),
                    last_run: s.and_then(|s| s.last.clone()),
                    last_error: s.and_then(|s| s.last_error.as_ref().map(|e| e.1.clone())),
                    last_error_at: s.and_then(|s| s.last_error.as_ref().map(|e| e.0)),
                    skipped_runs: s.map_or(0, |s| s.skipped),
                    queued_keys: s.map_or(0, |s| s.pending.len()),
                    lease_holder: leases.get(&f.id).map(|l| l.holder.clone()),
                    lease_until: leases.get(&f.id).map(|l| l.expires_at),
                }
            })
            .collect()
    }

    /// Failures waiting per flow, for metrics.
    pub async fn failures_pending(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for f in &self.engine().project.flows {
            out.insert(f.id.clone(), 0);
        }
        match self.store.failures.failures(None).await {
            Ok(list) => {
                for f in list {
                    *out.entry(f.flow).or_default() += 1;
                }
            }
            Err(e) => tracing::warn!(error = %redact(&e.to_string()), "cannot count failures"),
        }
        out
    }

    /// The metrics page.
    pub async fn render_metrics(&self) -> String {
        let mut out = self.metrics.render(
            &self.engine(),
            &self.failures_pending().await,
            self.in_flight(),
        );
        let label = self.node_id().replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str(&format!(
            "# HELP erpsync_node_id_clash Other live processes that use this node's `daemon.node_id`.\n\
             # TYPE erpsync_node_id_clash gauge\n\
             erpsync_node_id_clash{{node=\"{label}\"}} {}\n",
            self.node_clashes().len()
        ));
        out
    }

    /// Validates the flow files again and, when they are valid, puts them in force. Runs going
    /// on finish with the configuration they started with; invalid files change nothing.
    /// Says what changed (see `ReloadChanges`).
    pub async fn reload(&self) -> Result<ReloadChanges, ConfigReloadError> {
        let result = self.try_reload().await;
        match &result {
            Ok(changes) => {
                self.metrics.reload("accepted");
                tracing::info!(
                    flows = self.engine().project.flows.len(),
                    changed_systems = ?changes.systems,
                    changed_entities = ?changes.entities,
                    changed_flows = ?changes.flows,
                    changed_webhooks = ?changes.webhooks,
                    "configuration reloaded"
                );
            }
            Err(e) => {
                self.metrics.reload("rejected");
                let detail = match e {
                    ConfigReloadError::Invalid { diagnostics, .. } => diagnostics.clone(),
                    other => redact(&other.to_string()).into_owned(),
                };
                let message = redact(&e.to_string()).into_owned();
                tracing::error!(diagnostics = %detail, "{message}");
            }
        }
        self.emit(DaemonEvent::Reloaded {
            accepted: result.is_ok(),
        });
        result
    }

    async fn try_reload(&self) -> Result<ReloadChanges, ConfigReloadError> {
        let (project, diags) = crate::compile::project::check(&self.paths);
        let Some(project) = project else {
            return Err(ConfigReloadError::Invalid {
                count: diags.len(),
                diagnostics: crate::config::diagnostic::render_text(&diags),
            });
        };
        let old = self.engine();
        if project.state_url != old.project.state_url {
            tracing::warn!("`state.url` changed; it takes effect at the next start");
        }
        let old_daemon = old.project.daemon.as_ref().map(|d| &d.listen);
        if project.daemon.as_ref().map(|d| &d.listen) != old_daemon {
            tracing::warn!("`daemon.listen` changed; it takes effect at the next start");
        }
        let changes = ReloadChanges::between(&old.project, &project);
        let mut engine = Engine::new(Arc::new(project), self.store.clone(), self.clock.clone())?;
        keep_unchanged_systems(&old, &mut engine);
        *self.switches.lock().unwrap_or_else(|e| e.into_inner()) =
            super::switches::read_switches(&self.store).await;
        let project = engine.project.clone();
        *self.engine.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(engine);
        self.replan(&project);
        Ok(changes)
    }

    /// Stops taking work: triggers are refused and the scheduler fires nothing more.
    pub fn shutdown(&self) {
        if !self.stopping.swap(true, Ordering::SeqCst) {
            tracing::info!(in_flight = self.in_flight(), "shutting down");
            self.replanned.notify_waiters();
        }
    }

    /// Waits until the runs going on have finished, at most `grace`. True when they did.
    /// The grace is wall-clock time on purpose: it bounds how long the process takes to exit.
    pub async fn drain(&self, grace: Duration) -> bool {
        let done = async {
            loop {
                let idle = self.idle.notified();
                if self.in_flight() == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(grace, done).await.is_ok()
    }
}

/// A system whose spec did not change keeps its running self: client, token and rate-limit
/// budget (an ERP that locks clients out after a burst must not see the budget reset by a
/// reload), breaker and counters. A change of its entity mappings alone keeps it too.
fn keep_unchanged_systems(old: &Engine, new: &mut Engine) {
    for (name, sys) in new.systems.iter_mut() {
        if let Some(prev) = old.systems.get(name)
            && prev.spec() == sys.spec()
        {
            *sys = prev.clone();
        }
    }
}
