//! The daemon's core: the engine in force (swapped whole on reload), at most one run per flow
//! at a time (across nodes too: a run holds the flow's lease in the state store), keyed runs
//! queued behind a running one, chained flows, and draining on shutdown.
//!
//! Here the daemon, its flows' slots and its accounting of work; runs are started and carried
//! out in `run`, the flows' leases taken in `lease`, what the daemon knows shown in `status`,
//! and new flow files put in force in `reload`.

mod lease;
mod reload;
mod run;
mod status;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{Notify, broadcast};

use super::metrics::Metrics;
use super::scheduler::Plan;
use crate::clock::SharedClock;
use crate::compile::Project;
use crate::engine::{Engine, EngineBuildError};
use crate::state::Store;

pub use reload::ConfigReloadError;
pub use status::{FlowStatus, LastRun};

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

    /// Sets what the target index of every run from now on keeps in memory before it moves to
    /// a temporary file (`--index-memory`; see `Engine::index_memory`). Runs already
    /// going keep theirs; a reload carries it into the new engine.
    pub fn set_index_memory(&self, bytes: Option<usize>) {
        let mut engine = self.engine.write().unwrap_or_else(|e| e.into_inner());
        *engine = Arc::new((**engine).clone().index_memory(bytes));
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn clock(&self) -> &SharedClock {
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
    pub(crate) fn viewer_token(&self) -> Option<String> {
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
    pub(crate) fn grace(&self) -> Duration {
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
    pub(crate) fn node_clashes(&self) -> Vec<String> {
        self.clashes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Runs going on (or accepted and about to start) now.
    pub(crate) fn in_flight(&self) -> usize {
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

    /// Stops taking work: triggers are refused and the scheduler fires nothing more.
    pub(crate) fn shutdown(&self) {
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
