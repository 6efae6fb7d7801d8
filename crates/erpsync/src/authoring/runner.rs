//! Runs one offline test: the project compiled with the test's `${VARS}`, every system
//! pointed at a replay server, a state in memory seeded from the test, the flows run (or
//! planned), and the reports compared with the expectations. What differs is returned as
//! readable lines, never panicked on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use serde_json::Value;

use super::exchange::{ExchangeConfig, short, subset_diff};
use super::replay::Replay;
use super::testfile::{BindingSeedConfig, FlowExpectConfig, RecordExpectConfig, TestFileConfig};
use crate::compile::{Flow, Project};
use crate::engine::{Decision, Engine, RecordReport, RunOptions, RunReport};
use crate::state::{Binding, FlowName, Scope, SqliteStore, Store};

/// The result of one test.
#[derive(Debug)]
pub struct TestOutcome {
    pub file: PathBuf,
    pub description: Option<String>,
    /// What differs from the expectations; empty when the test passed.
    pub problems: Vec<String>,
    /// The reports of the flows that ran.
    pub reports: Vec<RunReport>,
}

impl TestOutcome {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// A test that could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum TestRunError {
    #[error("{file}: the project is not valid with this test's variables")]
    InvalidProject {
        file: String,
        diagnostics: Vec<crate::config::Diagnostic>,
    },
    #[error("{file}: {source}")]
    Setup {
        file: String,
        source: TestSetupError,
    },
}

/// Why a test's offline world (replay servers, state, engine) could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TestSetupError {
    #[error("exchanges[{index}]: {source}")]
    Exchange {
        index: usize,
        source: ExchangeResolveError,
    },
    #[error("cannot start the replay servers: {0}")]
    Replay(std::io::Error),
    #[error("a replay server's address: {0}")]
    ReplayAddress(url::ParseError),
    #[error(transparent)]
    State(#[from] crate::state::StateStoreError),
    #[error(transparent)]
    Binding(#[from] BindingSeedError),
    #[error("state.cursors: unknown flow `{0}`")]
    UnknownCursorFlow(String),
    #[error("flows: {0}")]
    Flows(crate::compile::FlowSelectError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineBuildError),
}

/// Why a test's `state.bindings` entry cannot be seeded; `place` names the entry.
#[derive(Debug, thiserror::Error)]
pub enum BindingSeedError {
    #[error("{place}: unknown entity `{entity}`")]
    UnknownEntity { place: String, entity: String },
    #[error("{place}: a binding links two systems; it names {}", listed(.systems))]
    NotTwoSystems { place: String, systems: Vec<String> },
    #[error("{place}: unknown system `{system}`")]
    UnknownSystem { place: String, system: String },
}

fn listed(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// Why an exchange's request cannot be matched to its system.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeResolveError {
    #[error("unknown system `{system}` (known: {})", .known.join(", "))]
    UnknownSystem { system: String, known: Vec<String> },
    #[error("system `{system}` {source}")]
    Operation {
        system: String,
        source: OperationNameError,
    },
    #[error("the path of `{name}`: {source}")]
    Path {
        name: String,
        source: crate::expr::TemplateRenderError,
    },
    #[error("give the request an `operation`, or a `method` and a `path`")]
    Incomplete,
}

/// Why an exchange's `operation` names no single request; the message follows "system `x`".
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum OperationNameError {
    #[error("has no operation `{name}` (known: {})", .known.join(", "))]
    Unknown { name: String, known: Vec<String> },
    #[error(
        "operation `{op}` sends several requests: name one of its steps as `{op}.STEP` \
         (steps: {})",
        .steps.join(", ")
    )]
    SeveralSteps { op: String, steps: Vec<String> },
    #[error("operation `{op}` has no step `{step}` (steps: {})", .steps.join(", "))]
    UnknownStep {
        op: String,
        step: String,
        steps: Vec<String>,
    },
}

/// The same project with each named system's `base_url` replaced.
pub fn redirect(
    project: &Project,
    urls: &BTreeMap<String, String>,
) -> Result<Project, url::ParseError> {
    let mut systems = BTreeMap::new();
    for (name, def) in &project.systems {
        let def = match urls.get(name) {
            Some(u) => Arc::new(def.at(u)?),
            None => def.clone(),
        };
        systems.insert(name.clone(), def);
    }
    Ok(Project {
        root: project.root.clone(),
        vars: project.vars.clone(),
        entities: project.entities.clone(),
        systems,
        flows: project.flows.clone(),
        webhooks: project.webhooks.clone(),
        state_url: project.state_url.clone(),
        daemon: project.daemon.clone(),
    })
}

/// The `${VARS}` of a test: its own `env` only. The machine's environment is never read,
/// so a test passes or fails the same on a laptop with real credentials set and in CI.
struct TestEnv<'a>(&'a BTreeMap<String, String>);

impl crate::config::env::EnvSource for TestEnv<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

/// Bindings by scope (entity, side a, side b).
type SeededBindings = BTreeMap<(String, String, String), Vec<Binding>>;

/// The bindings a test's state names, by scope.
fn seed_bindings(
    project: &Project,
    seeds: &[BindingSeedConfig],
) -> Result<SeededBindings, BindingSeedError> {
    let mut out = SeededBindings::new();
    for (i, b) in seeds.iter().enumerate() {
        let place = format!("state.bindings[{i}] (`{}`)", b.key);
        if !project.entities.contains_key(&b.entity) {
            return Err(BindingSeedError::UnknownEntity {
                place,
                entity: b.entity.clone(),
            });
        }
        let mut systems: Vec<String> = b
            .systems
            .iter()
            .chain(b.ids.keys())
            .chain(b.records.keys())
            .cloned()
            .collect();
        systems.sort();
        systems.dedup();
        if systems.len() != 2 {
            return Err(BindingSeedError::NotTwoSystems { place, systems });
        }
        for s in &systems {
            if !project.systems.contains_key(s) {
                return Err(BindingSeedError::UnknownSystem {
                    place,
                    system: s.clone(),
                });
            }
        }
        let scope = Scope::new(&b.entity, &systems[0], &systems[1]);
        let binding = Binding {
            key: b.key.clone(),
            id_a: b.ids.get(&scope.a).cloned(),
            id_b: b.ids.get(&scope.b).cloned(),
            base_a: b.records.get(&scope.a).cloned(),
            base_b: b.records.get(&scope.b).cloned(),
            exported_at: b.exported.then(Utc::now),
            parked: None,
            actions_done: b.actions_done,
            bases_equal: false,
        };
        out.entry((scope.entity, scope.a, scope.b))
            .or_default()
            .push(binding);
    }
    Ok(out)
}

/// Checks an exchange's system, and fills in the method and path of one given by
/// `operation`.
fn resolve_request(project: &Project, e: &mut ExchangeConfig) -> Result<(), ExchangeResolveError> {
    let Some(def) = project.systems.get(&e.system) else {
        return Err(ExchangeResolveError::UnknownSystem {
            system: e.system.clone(),
            known: project.systems.keys().cloned().collect(),
        });
    };
    let r = &mut e.request;
    if let Some(name) = &r.operation {
        let op = request_of(&def.operations, name).map_err(|source| {
            ExchangeResolveError::Operation {
                system: e.system.clone(),
                source,
            }
        })?;
        if r.method.is_empty() {
            r.method = serde_json::to_value(op.method())
                .ok()
                .and_then(|v| v.as_str().map(str::to_ascii_uppercase))
                .unwrap_or_default();
        }
        if r.path.is_empty() {
            let ctx = serde_json::json!({
                "id": r.id, "key": r.key, "vars": project.vars,
                "system": def.system_vars(),
            });
            let rendered = op
                .path
                .render(&handlebars::Context::from(ctx))
                .map_err(|source| ExchangeResolveError::Path {
                    name: name.clone(),
                    source,
                })?;
            // A path may carry fixed query parameters (`/x?f=a`): they are the query's.
            let path = rendered.split('?').next().unwrap_or_default();
            r.path = if path.starts_with('/') {
                path.to_string()
            } else {
                format!("/{path}")
            };
        }
    }
    if r.method.is_empty() || r.path.is_empty() {
        return Err(ExchangeResolveError::Incomplete);
    }
    Ok(())
}

/// The request an exchange's `operation` names: an operation's, or one step's of a
/// multi-step operation (`update_order.create_tracking`). Errors finish "system `x` …".
fn request_of<'a>(
    operations: &'a BTreeMap<String, Arc<crate::connector::Operation>>,
    name: &str,
) -> Result<&'a crate::connector::Operation, OperationNameError> {
    let unknown = || OperationNameError::Unknown {
        name: name.to_string(),
        known: operations.keys().cloned().collect(),
    };
    let (op_name, step) = match operations.get(name) {
        Some(_) => (name, None),
        None => match name.split_once('.') {
            Some((op, step)) if operations.contains_key(op) => (op, Some(step)),
            _ => return Err(unknown()),
        },
    };
    let op = &operations[op_name];
    let steps = || op.steps().iter().map(|s| s.name().to_string()).collect();
    match step {
        None if op.steps().is_empty() => Ok(op),
        None => Err(OperationNameError::SeveralSteps {
            op: op_name.to_string(),
            steps: steps(),
        }),
        Some(step) => op
            .steps()
            .iter()
            .find(|s| s.name() == step)
            .map(|s| &s.op)
            .ok_or_else(|| OperationNameError::UnknownStep {
                op: op_name.to_string(),
                step: step.to_string(),
                steps: steps(),
            }),
    }
}

/// Runs one test against the project at `project_paths`.
pub async fn run_test(
    project_paths: &[PathBuf],
    file: &Path,
    cfg: &TestFileConfig,
) -> Result<TestOutcome, TestRunError> {
    let shown = file.display().to_string();
    let env = TestEnv(&cfg.env);
    let (project, diagnostics) = crate::compile::project::check_with_env(project_paths, &env);
    let Some(project) = project else {
        return Err(TestRunError::InvalidProject {
            file: shown,
            diagnostics,
        });
    };
    let (engine, flows, replay) =
        set_up(&project, cfg)
            .await
            .map_err(|source| TestRunError::Setup {
                file: shown,
                source,
            })?;
    let mut problems = Vec::new();
    let (reports, ran) = run_flows(&engine, &flows, cfg, &mut problems).await;
    for name in cfg.expect.flows.keys() {
        if !ran.contains(name) {
            problems.push(format!(
                "{name}: expected to run, but it did not (flows run: {})",
                if ran.is_empty() {
                    "none".to_string()
                } else {
                    ran.join(", ")
                }
            ));
        }
    }
    problems.extend(replay.problems());
    Ok(TestOutcome {
        file: file.to_path_buf(),
        description: cfg.description.clone(),
        problems,
        reports,
    })
}

/// The test's offline world: replay servers answering for every system, a state in memory
/// seeded from the test, and an engine over both; with the flows the test runs.
async fn set_up(
    project: &Project,
    cfg: &TestFileConfig,
) -> Result<(Engine, Vec<Arc<Flow>>, Replay), TestSetupError> {
    let mut exchanges = cfg.exchanges.clone();
    for (index, e) in exchanges.iter_mut().enumerate() {
        resolve_request(project, e).map_err(|source| TestSetupError::Exchange { index, source })?;
    }
    let replay = Replay::start(project.systems.keys().cloned(), exchanges)
        .await
        .map_err(TestSetupError::Replay)?;
    let mut project = redirect(project, &replay.urls).map_err(TestSetupError::ReplayAddress)?;
    // The replay answers at once: a system's budget would only make the test slow.
    for def in project.systems.values_mut() {
        *def = Arc::new(def.unlimited());
    }
    let project = Arc::new(project);
    let store = seeded_store(&project, cfg).await?;
    let flows = project.select(&cfg.flows).map_err(TestSetupError::Flows)?;
    let mut engine = Engine::new(project.clone(), store, Arc::new(crate::clock::SystemClock))?;
    if cfg.dry_run {
        engine = engine.planning();
    }
    // A system asking to wait is answered at once: a test must not sleep.
    for s in engine.systems.values() {
        s.set_waits(Some(std::time::Duration::from_secs(5)), None);
    }
    Ok((engine, flows, replay))
}

/// A state in memory holding the test's bindings and cursors.
async fn seeded_store(project: &Project, cfg: &TestFileConfig) -> Result<Store, TestSetupError> {
    let store: Store = SqliteStore::in_memory()?.into();
    for ((entity, a, b), bindings) in seed_bindings(project, &cfg.state.bindings)? {
        let scope = Scope::new(&entity, &a, &b);
        store.bindings.put_bindings(&scope, bindings).await?;
    }
    for (flow, at) in &cfg.state.cursors {
        if project.flow(flow).is_none() {
            return Err(TestSetupError::UnknownCursorFlow(flow.clone()));
        }
        store.bindings.set_cursor(FlowName::new(flow), *at).await?;
    }
    Ok(store)
}

/// Runs the test's flows, comparing each report with what the test expects; returns the
/// reports and the ids of the flows that ran.
async fn run_flows(
    engine: &Engine,
    flows: &[Arc<Flow>],
    cfg: &TestFileConfig,
    problems: &mut Vec<String>,
) -> (Vec<RunReport>, Vec<String>) {
    let opts = RunOptions {
        dry_run: cfg.dry_run,
        reconcile: cfg.reconcile,
        full: cfg.full,
        keys: (!cfg.keys.is_empty()).then(|| cfg.keys.clone()),
        details: true,
        force: true,
        ..Default::default()
    };
    let (mut reports, mut ran) = (Vec::new(), Vec::new());
    for flow in flows {
        if cfg.reconcile && flow.reconcile_schedule.is_none() {
            continue;
        }
        ran.push(flow.id.clone());
        let expected = cfg.expect.flows.get(&flow.id);
        match engine.run(&flow.id, &opts).await {
            Ok(r) => {
                match expected {
                    Some(exp) => compare(&flow.id, &r, exp, problems),
                    None => problems.extend(
                        r.errors
                            .iter()
                            .map(|e| format!("{}: run error: {e}", flow.id)),
                    ),
                }
                reports.push(r);
            }
            Err(e) => {
                let text = crate::redact::redact(&e.to_string()).into_owned();
                let wanted = expected.is_some_and(|x| {
                    x.status.as_deref() == Some("error")
                        && x.errors.iter().all(|w| text.contains(w.as_str()))
                });
                if !wanted {
                    problems.push(format!("{}: the run failed: {text}", flow.id));
                }
            }
        }
    }
    (reports, ran)
}

/// Whether a record with this decision must be listed when a flow's records are expected.
fn must_be_listed(d: Decision) -> bool {
    !matches!(d, Decision::Skip | Decision::Filtered | Decision::Locked)
}

/// Compares a run's report with what the test expects of it.
fn compare(flow: &str, r: &RunReport, exp: &FlowExpectConfig, out: &mut Vec<String>) {
    compare_outcome(flow, r, exp, out);
    let Some(records) = &exp.records else {
        return;
    };
    for want in records {
        match r.records.iter().find(|g| g.key == want.key) {
            Some(got) => compare_record(&format!("{flow}: record `{}`", want.key), got, want, out),
            None => out.push(format!(
                "{flow}: record `{}`: expected {}, but the run did not report it",
                want.key, want.decision
            )),
        }
    }
    for got in &r.records {
        if must_be_listed(got.decision) && !records.iter().any(|w| w.key == got.key) {
            out.push(format!(
                "{flow}: record `{}`: {} not expected{}",
                got.key,
                got.decision.word(),
                reason_note(got)
            ));
        }
    }
}

/// ` (reason)` when the record has one.
fn reason_note(got: &RecordReport) -> String {
    got.reason
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default()
}

/// `errors` joined, or `none`.
fn errors_text(errors: &[String]) -> String {
    if errors.is_empty() {
        "none".to_string()
    } else {
        errors.join("; ")
    }
}

/// Compares a run's status, counts and errors with the expected ones.
fn compare_outcome(flow: &str, r: &RunReport, exp: &FlowExpectConfig, out: &mut Vec<String>) {
    if let Some(status) = &exp.status
        && status != &r.status
    {
        let errors = if r.errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.errors.join("; "))
        };
        out.push(format!(
            "{flow}: expected status `{status}`, got `{}`{errors}",
            r.status
        ));
    }
    let counts = serde_json::to_value(&r.counts).unwrap_or_default();
    for (name, want) in exp.counts.pairs() {
        let Some(want) = want else { continue };
        let got = counts.get(name).and_then(Value::as_u64).unwrap_or(0);
        if got != want {
            out.push(format!("{flow}: expected {name} {want}, got {got}"));
        }
    }
    for want in &exp.errors {
        if !r.errors.iter().any(|e| e.contains(want.as_str())) {
            out.push(format!(
                "{flow}: expected an error containing `{want}`, got {}",
                errors_text(&r.errors)
            ));
        }
    }
    if exp.status.is_none() && exp.errors.is_empty() {
        for e in &r.errors {
            out.push(format!("{flow}: run error: {e}"));
        }
    }
}

/// Compares one reported record with its expectation; `place` names it in the messages.
fn compare_record(
    place: &str,
    got: &RecordReport,
    want: &RecordExpectConfig,
    out: &mut Vec<String>,
) {
    let decision = got.decision.word();
    if decision != want.decision {
        out.push(format!(
            "{place}: expected {}, got {decision}{}",
            want.decision,
            reason_note(got)
        ));
    }
    if let Some(t) = &want.target
        && got.target.as_deref() != Some(t.as_str())
    {
        out.push(format!(
            "{place}: expected target `{t}`, got `{}`",
            got.target.as_deref().unwrap_or("none")
        ));
    }
    if let Some(reason) = &want.reason
        && !got
            .reason
            .as_deref()
            .unwrap_or("")
            .contains(reason.as_str())
    {
        out.push(format!(
            "{place}: expected a reason containing `{reason}`, got `{}`",
            got.reason.as_deref().unwrap_or("none")
        ));
    }
    if let Some(changes) = &want.changes {
        compare_changes(place, got, changes, out);
    }
}

/// Compares a record's changes with the expected ones: each expected field changes to (a
/// superset of) its value, and no other field changes.
fn compare_changes(
    place: &str,
    got: &RecordReport,
    changes: &BTreeMap<String, Value>,
    out: &mut Vec<String>,
) {
    for (field, value) in changes {
        match got.changes.iter().find(|c| &c.field == field) {
            None => out.push(format!(
                "{place}: expected `{field}` to change to {}, it does not change",
                short(value)
            )),
            Some(c) => {
                let mut d = Vec::new();
                subset_diff(value, &c.new, "", &mut d);
                if !d.is_empty() {
                    out.push(format!(
                        "{place}: `{field}` changes to {}, expected {}",
                        short(&c.new),
                        short(value)
                    ));
                }
            }
        }
    }
    for c in got
        .changes
        .iter()
        .filter(|c| !changes.contains_key(&c.field))
    {
        out.push(format!(
            "{place}: `{}` changes ({} → {}), not expected",
            c.field,
            short(&c.old),
            short(&c.new)
        ));
    }
}

/// The expectations a report meets exactly: what `run --record` writes down.
pub fn expectations_of(r: &RunReport) -> FlowExpectConfig {
    use super::testfile::CountsExpectConfig;
    let c = &r.counts;
    let nz = |v: u64| (v > 0).then_some(v);
    FlowExpectConfig {
        status: Some(r.status.clone()),
        counts: CountsExpectConfig {
            read: Some(c.read),
            created: nz(c.created),
            updated: nz(c.updated),
            adopted: nz(c.adopted),
            skipped: nz(c.skipped),
            conflicts: nz(c.conflicts),
            parked: nz(c.parked),
            locked: nz(c.locked),
            filtered: nz(c.filtered),
            failed: nz(c.failed),
        },
        records: Some(
            r.records
                .iter()
                .filter(|g| must_be_listed(g.decision))
                .map(|g| RecordExpectConfig {
                    key: g.key.clone(),
                    decision: g.decision.word(),
                    target: g.target.clone(),
                    changes: Some(
                        g.changes
                            .iter()
                            .map(|c| (c.field.clone(), crate::redact::redact_json(&c.new)))
                            .collect(),
                    ),
                    reason: None,
                })
                .collect(),
        ),
        errors: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::HttpMethod;
    use crate::connector::Operation;
    use serde_json::json;

    #[test]
    fn an_exchange_names_an_operation_or_one_of_its_steps() {
        let op =
            |v: Value| Arc::new(Operation::compile(&serde_json::from_value(v).unwrap()).unwrap());
        let ops: BTreeMap<String, Arc<Operation>> = [
            ("get".to_string(), op(json!({"path": "/p/{{id}}"}))),
            (
                "put".to_string(),
                op(json!({"steps": [
                    {"name": "update", "method": "PUT", "path": "/p/{{id}}"},
                    {"name": "create", "method": "POST", "path": "/p",
                     "on": {"step": "update", "status": [404]}}
                ]})),
            ),
        ]
        .into();
        assert_eq!(request_of(&ops, "get").unwrap().path.source(), "/p/{{id}}");
        let create = request_of(&ops, "put.create").unwrap();
        assert_eq!(
            (create.method(), create.path.source()),
            (HttpMethod::Post, "/p")
        );
        assert_eq!(
            request_of(&ops, "put").unwrap_err().to_string(),
            "operation `put` sends several requests: name one of its steps as `put.STEP` \
             (steps: update, create)"
        );
        assert_eq!(
            request_of(&ops, "put.nope").unwrap_err().to_string(),
            "operation `put` has no step `nope` (steps: update, create)"
        );
        assert_eq!(
            request_of(&ops, "gte").unwrap_err().to_string(),
            "has no operation `gte` (known: get, put)"
        );
    }
}
