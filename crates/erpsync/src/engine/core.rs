//! The engine itself: a project, its systems and a state store, and what a dry run of several
//! flows remembers between them (the plan).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::clock::SharedClock;
use crate::compile::Flow;
use crate::compile::Project;
use crate::config::model::Normalize;
use crate::connector::HttpSystem;
use crate::state::{Binding, FlowName, Instance, RecordKey, Scope, Store};

use super::error::EngineBuildError;

/// Runs the flows of a project against its systems, remembering in a state store.
#[derive(Debug, Clone)]
pub struct Engine {
    pub project: Arc<Project>,
    pub systems: BTreeMap<String, Arc<HttpSystem>>,
    pub store: Store,
    pub(crate) clock: SharedClock,
    /// Key normalisation per entity, from the flows that sync it (used to resolve `ref`).
    pub(super) key_normalize: HashMap<String, Vec<Normalize>>,
    /// The bindings the dry runs of this engine would have made, by scope and key: a dry run
    /// of several flows carries one flow's effects into the next (see `planning`).
    pub(super) plan: Option<Arc<Mutex<PlannedBindings>>>,
    /// The records the dry runs of this engine would create, as the native payload sent, by
    /// system and listing (see `listing`) and key: a later flow of the plan looking for one
    /// in that system finds it, as the real run would.
    pub(super) created: Arc<Mutex<PlannedCreates>>,
    /// What the flows still to be planned can read of the plan (see `plan_ahead`); `None`:
    /// not told, so the plan keeps everything.
    pub(super) needs: Arc<Mutex<Option<PlanNeeds>>>,
    /// Per flow, the keys a full read of a target that cannot be searched by key did not
    /// have, and when it was read: a later run does not read the whole target again to learn
    /// the same thing, for `KNOWN_ABSENT_FOR`. Kept here and, where the store keeps it (SQLite),
    /// in the state, so separate `run --once` processes profit as well.
    pub(super) absent: Arc<Mutex<HashMap<String, KnownAbsent>>>,
    /// This process, as runs and leases name it.
    pub(crate) instance: Instance,
    /// What a run's target index keeps in memory before it moves to a temporary file,
    /// where the run's own options do not say (`index_memory`); `None`: the default bound.
    pub(super) index_memory: Option<usize>,
}

/// The bindings a dry run of a project would make so far, by scope and key.
type PlannedBindings = HashMap<Scope, HashMap<String, Binding>>;

/// The native payloads of the records a dry run would create, by (system, listing) and key.
type PlannedCreates = HashMap<(String, String), HashMap<String, serde_json::Value>>;

/// What the flows a plan still serves can read of it: the bindings of these entities (the
/// ones they sync or refer to) and the records planned to be created in these systems.
#[derive(Debug, Default)]
pub(super) struct PlanNeeds {
    entities: HashSet<String>,
    systems: HashSet<String>,
    /// Flows already counted.
    seen: HashSet<String>,
}

impl PlanNeeds {
    /// Adds what `flow` reads, and what the flows it runs on the way read; false when a flow
    /// it names is not in the project (then nothing can be left out).
    fn add_flow(&mut self, project: &Project, flow: &Flow) -> bool {
        if !self.seen.insert(flow.id.clone()) {
            return true;
        }
        self.entities.insert(flow.entity.clone());
        self.systems.insert(flow.from.clone());
        self.systems.insert(flow.to.clone());
        self.add_brought(project, flow)
    }

    /// Adds what `flow` brings with it: the entities its mappings refer to (`ref`), and the
    /// flows it runs on the way (`requires`, `then`) with all they read.
    fn add_brought(&mut self, project: &Project, flow: &Flow) -> bool {
        for system in [&flow.from, &flow.to] {
            if let Some(se) = project
                .systems
                .get(system)
                .and_then(|d| d.entities.get(&flow.entity))
            {
                let refs = se.read.referenced_entities();
                let refs = refs.into_iter().chain(se.write.referenced_entities());
                self.entities.extend(refs.map(|(_, entity)| entity));
            }
        }
        let brought = flow.requires.iter().map(|(id, _)| id);
        let brought = brought.chain(flow.then.iter().map(|(id, _)| id));
        for id in brought.collect::<Vec<_>>() {
            match project.flow(id) {
                Some(other) => {
                    if !self.add_flow(project, other) {
                        return false;
                    }
                }
                None => return false,
            }
        }
        true
    }
}

/// The id a record a dry run would create stands under in the plan: the real id is only
/// known once the target answers.
pub(crate) const PLANNED_ID: &str = "(planned)";

/// What a system's entity lists its records with: entities of one system that list with
/// the same operation (a shop's product and stock) see the same records.
pub(crate) fn listing(entity: &str, def: &crate::compile::SystemEntity) -> String {
    def.list
        .clone()
        .or_else(|| def.lookup.clone())
        .unwrap_or_else(|| format!("entity {entity}"))
}

/// How long a key a full read of the target did not have is taken to be still missing: a
/// record that appears in the target meanwhile is found at the latest this much later (or
/// by the next reconciliation, which always reads the target).
pub(crate) const KNOWN_ABSENT_FOR: std::time::Duration = std::time::Duration::from_secs(3600);

/// Keys a full read of a flow's target lacked.
#[derive(Debug, Default)]
pub(crate) struct KnownAbsent {
    pub(crate) read_at: Option<chrono::DateTime<chrono::Utc>>,
    pub(crate) keys: std::collections::HashSet<String>,
}

impl Engine {
    /// Builds every system of the project from its spec, as compiled. Systems are shared by
    /// all flows, so a system's rate-limit budget is shared by every flow and shop that calls
    /// it. Only what the machine lacks can stop it (see `SystemStartError`): the flow files
    /// were checked when the project was compiled.
    pub fn new(
        project: Arc<Project>,
        store: Store,
        clock: SharedClock,
    ) -> Result<Self, EngineBuildError> {
        let mut systems = BTreeMap::new();
        for (name, def) in &project.systems {
            let http = HttpSystem::new(def.spec.clone(), clock.clone())?;
            systems.insert(name.clone(), Arc::new(http));
        }
        let mut key_normalize = HashMap::new();
        for f in &project.flows {
            key_normalize
                .entry(f.entity.clone())
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
            plan: None,
            created: Arc::new(Mutex::new(HashMap::new())),
            needs: Arc::new(Mutex::new(None)),
            absent: Arc::new(Mutex::new(HashMap::new())),
            instance,
            index_memory: None,
        })
    }

    /// Keeps in the state store what changed in the reachability of these systems, so
    /// `erpsync status` (another process) shows a system that is down. A store that cannot
    /// take it is logged, never fatal.
    pub(crate) async fn record_system_health<'a>(
        &self,
        systems: impl IntoIterator<Item = &'a str>,
    ) {
        for name in systems {
            let Some(http) = self.systems.get(name) else {
                continue;
            };
            let Some(h) = http.take_unreported_health() else {
                continue;
            };
            let health = crate::state::SystemHealth {
                system: name.to_string(),
                down: h.down,
                down_since: h.down_since,
                consecutive_failures: h.consecutive_failures,
                last_error: h.last_error,
                next_probe: h.next_probe,
                checked_at: self.clock.now(),
            };
            if let Err(e) = self.store.runs.put_system_health(&health).await {
                tracing::warn!(system = name, error = %crate::redact::redact(&e.to_string()), "cannot keep the system's health");
            }
        }
    }

    /// An engine for a run watched from a terminal (`run --once`, `dry-run`): each wait of
    /// a system longer than a few seconds is printed to stderr (system, why, until when) as
    /// well as logged, and, with `max_wait`, a system asking for a longer one fails the call
    /// at once instead of holding the run (a lock-out of ten minutes).
    pub fn one_shot(self, max_wait: Option<std::time::Duration>) -> Self {
        let announce: crate::connector::WaitAnnouncer =
            Arc::new(|n: &crate::connector::WaitNotice| eprintln!("erpsync: {n}"));
        for s in self.systems.values() {
            s.set_waits(max_wait, Some(announce.clone()));
        }
        self
    }

    /// An engine whose runs keep at most `bytes` of their target index (keys, ids, packed
    /// records) in memory before moving it to a private temporary file (`None`: 8 MiB).
    /// More memory, fewer reads and writes of that file: the bound is the operator's trade
    /// of memory for CPU (`--index-memory`). A run's own `RunOptions::index_spill_bytes`
    /// wins.
    pub fn index_memory(mut self, bytes: Option<usize>) -> Self {
        self.index_memory = bytes;
        self
    }

    /// The bound `index_memory` set, if any.
    pub fn index_memory_bound(&self) -> Option<usize> {
        self.index_memory
    }

    /// An engine whose dry runs remember, in memory, the bindings their decisions would make
    /// (adoptions, and the bases updates would move), so that the dry run of the next flow
    /// sees them as the real run would: one plan for a project, flow after flow.
    pub fn planning(mut self) -> Self {
        self.plan = Some(Arc::new(Mutex::new(HashMap::new())));
        self
    }

    /// The stored bindings of `keys`, with the plan's over them.
    pub(crate) async fn bindings(
        &self,
        scope: &Scope,
        keys: &[String],
    ) -> Result<HashMap<String, Binding>, crate::state::StateStoreError> {
        let typed: Vec<RecordKey> = keys.iter().map(|k| RecordKey::new(k)).collect();
        let mut found = self.store.bindings.bindings(scope, &typed).await?;
        if let Some(plan) = &self.plan {
            let plan = plan.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(planned) = plan.get(scope) {
                for k in keys {
                    if let Some(b) = planned.get(k) {
                        found.insert(k.clone(), b.clone());
                    }
                }
            }
        }
        Ok(found)
    }

    /// Whether a full read of `flow`'s target, recent enough, lacked `key`: remembered by
    /// this engine, or by the state store (so `run --once` from cron profits too).
    pub(crate) async fn known_absent(&self, flow: &str, key: &str) -> bool {
        let now = self.clock.now();
        let age = chrono::Duration::from_std(KNOWN_ABSENT_FOR).unwrap_or_default();
        let in_memory = {
            let absent = self.absent.lock().unwrap_or_else(|e| e.into_inner());
            absent
                .get(flow)
                .is_some_and(|a| a.read_at.is_some_and(|t| now - t < age) && a.keys.contains(key))
        };
        in_memory
            || self
                .store
                .bindings
                .is_absent(FlowName::new(flow), RecordKey::new(key), now - age)
                .await
                .unwrap_or(false)
    }

    /// Remembers that the full read of `flow`'s target made at `read_at` lacked `key` (a read
    /// made later starts the list afresh), in the state store too when `persist`.
    pub(crate) async fn note_absent(
        &self,
        flow: &str,
        read_at: chrono::DateTime<chrono::Utc>,
        key: &str,
        persist: bool,
    ) {
        if persist
            && let Err(e) = self
                .store
                .bindings
                .note_absent(FlowName::new(flow), RecordKey::new(key), read_at)
                .await
        {
            tracing::warn!(flow, key, error = %e, "cannot remember a missing key");
        }
        let mut absent = self.absent.lock().unwrap_or_else(|e| e.into_inner());
        let a = absent.entry(flow.to_string()).or_default();
        if a.read_at != Some(read_at) {
            if a.read_at.is_some_and(|t| t > read_at) {
                return;
            }
            *a = KnownAbsent {
                read_at: Some(read_at),
                keys: Default::default(),
            };
        }
        a.keys.insert(key.to_string());
    }

    /// Forgets what `flow`'s target lacked (it was created there).
    pub(crate) async fn forget_absent(&self, flow: &str, key: &str) {
        if let Err(e) = self
            .store
            .bindings
            .forget_absent(FlowName::new(flow), RecordKey::new(key))
            .await
        {
            tracing::warn!(flow, key, error = %e, "cannot forget a missing key");
        }
        let mut absent = self.absent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = absent.get_mut(flow) {
            a.keys.remove(key);
        }
    }

    /// Tells a planning engine which flows its plan still serves: `current`, about to be
    /// planned, and `later`, planned after it. From then on the plan keeps only what those can
    /// read: the bindings of the entities they sync or refer to, and the records planned to
    /// be created in the systems they touch. What `current` plans of its own entity is kept
    /// only if a flow it runs on the way (`requires`, `then`) or a later flow reads it, so
    /// the dry run of one flow holds none of its records. What earlier flows planned is kept
    /// while `current` or a later flow can read it, and let go after.
    pub fn plan_ahead(&self, current: &str, later: &[&str]) {
        let project = &self.project;
        let mut needs = PlanNeeds::default();
        let complete = project
            .flow(current)
            .is_some_and(|f| needs.add_brought(project, f))
            && later
                .iter()
                .all(|id| project.flow(id).is_some_and(|f| needs.add_flow(project, f)));
        let needs = complete.then_some(needs);
        if let (Some(plan), Some(n), Some(f)) = (&self.plan, &needs, project.flow(current)) {
            // `current` reads what earlier flows planned for its own entity and systems.
            let mut plan = plan.lock().unwrap_or_else(|e| e.into_inner());
            plan.retain(|scope, _| scope.entity == f.entity || n.entities.contains(&scope.entity));
            let mut created = self.created.lock().unwrap_or_else(|e| e.into_inner());
            created.retain(|(system, _), _| {
                *system == f.from || *system == f.to || n.systems.contains(system)
            });
        }
        *self.needs.lock().unwrap_or_else(|e| e.into_inner()) = needs;
    }

    /// The bindings the plan holds for `scope`, by key: what the dry runs so far would have
    /// stored there (none when this engine keeps no plan).
    pub fn planned_bindings(&self, scope: &Scope) -> Vec<Binding> {
        let Some(plan) = &self.plan else {
            return Vec::new();
        };
        let plan = plan.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Binding> = plan
            .get(scope)
            .into_iter()
            .flatten()
            .map(|(_, b)| b.clone())
            .collect();
        out.sort_by(|x, y| x.key.cmp(&y.key));
        out
    }

    /// How many bindings and planned creates the plan holds now.
    pub fn plan_held(&self) -> (usize, usize) {
        let bindings = self.plan.as_ref().map_or(0, |plan| {
            let plan = plan.lock().unwrap_or_else(|e| e.into_inner());
            plan.values().map(HashMap::len).sum()
        });
        let created = self.created.lock().unwrap_or_else(|e| e.into_inner());
        (bindings, created.values().map(HashMap::len).sum())
    }

    /// Whether the plan keeps what is planned for `entity`, or created in `system`.
    fn plan_keeps(&self, entity: Option<&str>, system: Option<&str>) -> bool {
        let needs = self.needs.lock().unwrap_or_else(|e| e.into_inner());
        needs.as_ref().is_none_or(|n| {
            entity.is_none_or(|e| n.entities.contains(e))
                && system.is_none_or(|s| n.systems.contains(s))
        })
    }

    /// Whether the plan keeps the bindings of `scope` (a flow planned later reads them).
    fn plans_bindings_of(&self, scope: &Scope) -> bool {
        self.plan.is_some() && self.plan_keeps(Some(&scope.entity), None)
    }

    /// Remembers a binding a dry run would write, where `plans_bindings_of` says the plan
    /// keeps it; `binding` makes it only then.
    pub(crate) fn plan_binding<E>(
        &self,
        scope: &Scope,
        binding: impl FnOnce() -> Result<Binding, E>,
    ) -> Result<(), E> {
        let Some(plan) = self.plan.as_ref().filter(|_| self.plans_bindings_of(scope)) else {
            return Ok(());
        };
        let b = binding()?;
        let mut plan = plan.lock().unwrap_or_else(|e| e.into_inner());
        plan.entry(scope.clone())
            .or_default()
            .insert(b.key.clone(), b);
        Ok(())
    }

    /// Remembers a record a dry run would create in `system` (see `listing`) under `key`,
    /// with the native payload it would send; false when this engine keeps no plan.
    pub(crate) fn plan_create(
        &self,
        system: &str,
        listing: String,
        key: &str,
        payload: serde_json::Value,
    ) -> bool {
        if self.plan.is_none() {
            return false;
        }
        if !self.plan_keeps(None, Some(system)) {
            return true;
        }
        let mut created = self.created.lock().unwrap_or_else(|e| e.into_inner());
        created
            .entry((system.to_string(), listing))
            .or_default()
            .insert(key.to_string(), payload);
        true
    }

    /// The native payload of the record a dry run of this plan would have created in
    /// `system` under `key`, if any.
    pub(crate) fn planned_create(
        &self,
        system: &str,
        listing: String,
        key: &str,
    ) -> Option<serde_json::Value> {
        self.plan.as_ref()?;
        let created = self.created.lock().unwrap_or_else(|e| e.into_inner());
        created
            .get(&(system.to_string(), listing))?
            .get(key)
            .cloned()
    }

    /// The native payloads of the records the dry runs of this plan would have created in
    /// `system` (see `listing`), in key order.
    pub(crate) fn planned_creates(&self, system: &str, listing: String) -> Vec<serde_json::Value> {
        if self.plan.is_none() {
            return Vec::new();
        }
        let created = self.created.lock().unwrap_or_else(|e| e.into_inner());
        let Some(of) = created.get(&(system.to_string(), listing)) else {
            return Vec::new();
        };
        let mut keys: Vec<&String> = of.keys().collect();
        keys.sort();
        keys.into_iter().map(|k| of[k].clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shipped project that validates starts, and its engine runs the very specs that
    /// validation compiled: none is compiled again, none can fail on the flow files.
    #[test]
    fn a_validated_project_starts_from_the_specs_it_was_compiled_with() {
        let flows = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../flows");
        let all = crate::config::load::projects(&[flows]);
        assert!(!all.is_empty());
        for paths in all {
            let (project, diags) = crate::compile::project::check(&paths);
            let project = Arc::new(project.unwrap_or_else(|| panic!("{paths:?}: {diags:?}")));
            let store: crate::state::Store = crate::state::SqliteStore::in_memory().unwrap().into();
            let clock: SharedClock = Arc::new(crate::clock::SystemClock);
            let engine = Engine::new(project.clone(), store, clock)
                .unwrap_or_else(|e| panic!("{paths:?}: {e}"));
            assert_eq!(
                engine.systems.keys().collect::<Vec<_>>(),
                project.systems.keys().collect::<Vec<_>>()
            );
            for (name, def) in &project.systems {
                assert!(
                    Arc::ptr_eq(engine.systems[name].spec(), &def.spec),
                    "{paths:?}: system `{name}` was compiled again"
                );
            }
        }
    }
}
