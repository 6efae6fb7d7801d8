//! The engine: runs flows. A run reads the source page by page, maps each record to the
//! canonical record, matches it to the target, decides (create, update, skip, conflict…)
//! and — unless it is a dry run — applies the decision: journal, send, bind. The engine knows
//! flows, not HTTP: it talks to systems only through their operations.

pub mod canonical;
mod lease;
mod report;
mod run;
mod settle;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use lease::{DEFAULT_LEASE_TTL_SECS, HeldLease, LeaseTakeError};
pub use report::{Counts, Decision, RecordReport, RunReport};
pub use settle::{PendingSettleError, Settlement, settle_pending};

use crate::clock::SharedClock;
use crate::compile::Project;
use crate::config::model::Normalize;
use crate::connector::{CompileProblem, HttpSystem};
use crate::state::{FencedStore, Instance, StateStore};

/// A project that cannot be turned into callable systems.
#[derive(Debug, thiserror::Error)]
pub enum EngineBuildError {
    #[error("system `{system}` cannot be built: {}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    System {
        system: String,
        problems: Vec<CompileProblem>,
    },
}

/// A run that could not be carried out at all (records that fail are reported, not errors).
#[derive(Debug, thiserror::Error)]
pub enum EngineRunError {
    #[error("unknown flow `{0}`")]
    UnknownFlow(String),
    #[error("flow `{0}` is disabled")]
    Disabled(String),
    #[error(transparent)]
    State(#[from] crate::state::StateStoreError),
    #[error("flow `{flow}`: reading `{system}` failed: {message}")]
    Read {
        flow: String,
        system: String,
        message: String,
    },
    #[error(transparent)]
    Lease(#[from] LeaseTakeError),
    /// The run lost its lease mid-way and stopped: what it had in flight is journaled as in
    /// doubt, and the next holder settles it.
    #[error(
        "flow `{0}` lost its lease mid-run and stopped; the next holder settles what was in flight"
    )]
    LeaseLost(String),
}

/// Asks a run to stop between records (SIGINT or SIGTERM on a one-shot run): the record in
/// hand is finished, post-actions of the records exported go out, the cursor stays.
#[derive(Debug, Clone, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    pub fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What a run does.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Plan only: read live data, decide, report; write nothing anywhere.
    pub dry_run: bool,
    /// Compare everything on both sides and correct drift, ignoring the cursor.
    pub reconcile: bool,
    /// Read everything, ignoring the cursor (but without the target-side comparison).
    pub full: bool,
    /// Only these keys (webhooks, chained flows, retries of failures).
    pub keys: Option<Vec<String>>,
    /// Keep a line per record in the report (dry runs always do).
    pub details: bool,
    /// Run a disabled flow anyway (manual re-sync).
    pub force: bool,
    /// Raised to stop the run between records.
    pub interrupt: Option<Interrupt>,
}

impl RunOptions {
    /// A manual re-sync of these records (what retrying a stored failure does): only those
    /// keys, disabled flows included, a line per record in the report.
    pub fn retry(keys: Vec<String>) -> Self {
        RunOptions {
            keys: Some(keys),
            force: true,
            details: true,
            ..Default::default()
        }
    }
}

/// Runs the flows of a project against its systems, remembering in a state store.
#[derive(Debug, Clone)]
pub struct Engine {
    pub project: Arc<Project>,
    pub systems: BTreeMap<String, Arc<HttpSystem>>,
    pub store: Arc<dyn StateStore>,
    pub clock: SharedClock,
    /// Key normalisation per entity, from the flows that sync it (used to resolve `ref`).
    key_normalize: HashMap<String, Vec<Normalize>>,
    /// This process, as runs and leases name it.
    pub instance: Instance,
}

impl Engine {
    /// Builds every system of the project. Systems are shared by all flows, so a system's
    /// rate-limit budget is shared by every flow and shop that calls it.
    pub fn new(
        project: Arc<Project>,
        store: Arc<dyn StateStore>,
        clock: SharedClock,
    ) -> Result<Self, EngineBuildError> {
        let mut systems = BTreeMap::new();
        for (name, def) in &project.systems {
            let http = HttpSystem::build(
                name,
                &def.config,
                def.operations.clone(),
                project.vars.clone(),
                clock.clone(),
            )
            .map_err(|problems| EngineBuildError::System {
                system: name.clone(),
                problems,
            })?;
            systems.insert(name.clone(), Arc::new(http));
        }
        let mut key_normalize = HashMap::new();
        for f in &project.flows {
            key_normalize
                .entry(f.config.entity.clone())
                .or_insert_with(|| f.normalize.clone());
        }
        let node = project.daemon.as_ref().and_then(|d| d.node_id.as_deref());
        let instance = Instance::current(node);
        Ok(Engine {
            project,
            systems,
            store,
            clock,
            key_normalize,
            instance,
        })
    }

    /// Runs one flow now, holding its lease (dry runs, which write nothing, take none).
    pub async fn run(&self, flow_id: &str, opts: &RunOptions) -> Result<RunReport, EngineRunError> {
        self.check(flow_id, opts)?;
        if opts.dry_run {
            return self.run_leased(flow_id, opts, None).await;
        }
        let lease = self.take_lease(flow_id)?;
        self.run_leased(flow_id, opts, Some(&lease)).await
    }

    fn check(
        &self,
        flow_id: &str,
        opts: &RunOptions,
    ) -> Result<Arc<crate::compile::Flow>, EngineRunError> {
        let flow = self
            .project
            .flow(flow_id)
            .ok_or_else(|| EngineRunError::UnknownFlow(flow_id.to_string()))?
            .clone();
        if !flow.config.enabled && !opts.force {
            return Err(EngineRunError::Disabled(flow_id.to_string()));
        }
        Ok(flow)
    }

    /// Runs one flow under a lease already taken (`take_lease`): every state write of the
    /// run is fenced by the lease's grant, and every remote write checks the lease first.
    pub async fn run_leased(
        &self,
        flow_id: &str,
        opts: &RunOptions,
        lease: Option<&HeldLease>,
    ) -> Result<RunReport, EngineRunError> {
        let flow = self.check(flow_id, opts)?;
        let Some(lease) = lease else {
            return run::run_flow(self, &flow, opts).await;
        };
        let fenced = Engine {
            store: Arc::new(FencedStore::new(
                self.store.clone(),
                lease.watch.fence.clone(),
            )),
            ..self.clone()
        };
        let result = crate::state::lease::with_watch(
            Some(lease.watch.clone()),
            run::run_flow(&fenced, &flow, opts),
        )
        .await;
        match result {
            Err(EngineRunError::State(crate::state::StateStoreError::Fenced(_))) => {
                lease.watch.lose();
                Err(EngineRunError::LeaseLost(flow_id.to_string()))
            }
            other => other,
        }
    }

    /// Runs the stored failures `ids` again (all of them with `None`), each flow once for its
    /// failed keys, with the flow files as they are now; a record that succeeds leaves the
    /// failure store. One report (or error) per flow, in flow-name order.
    pub async fn retry_failures(
        &self,
        ids: Option<&[i64]>,
    ) -> Result<Vec<(String, Result<RunReport, EngineRunError>)>, EngineRunError> {
        let mut by_flow: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in self.store.failures(None)? {
            if ids.is_none_or(|ids| ids.contains(&f.id)) {
                by_flow.entry(f.flow).or_default().push(f.key);
            }
        }
        let mut out = Vec::with_capacity(by_flow.len());
        for (flow, keys) in by_flow {
            let report = self.run(&flow, &RunOptions::retry(keys)).await;
            out.push((flow, report));
        }
        Ok(out)
    }
}
