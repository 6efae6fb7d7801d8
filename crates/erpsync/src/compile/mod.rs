//! Turns a loaded project into runnable values: systems with their inheritance resolved,
//! compiled mappings, canonical entities and flows. Every reference is resolved and every
//! expression compiled here, so a broken flow file fails `erpsync validate`, never a run.

pub mod mapping;
pub mod project;
pub mod schedule;
pub mod settings;
pub mod types;
pub mod webhook;

mod check;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

pub use check::compile;
pub use mapping::{MapEnv, Mapping, NoRefs, RefResolver};
pub use schedule::Schedule;
pub use settings::{Conflict, Incremental, PostAction, Side, StatusTrigger, TransitionTrigger};
pub use webhook::{Webhook, WebhookKey};

pub use crate::expr::COMPOSITE_ID_SEPARATOR;

use crate::config::model::{
    DaemonConfig, Direction, FieldType, FlowConfig, Normalize, RateLimitConfig, SyncMode,
    SystemConfig, SystemRole,
};
use crate::connector::{Operation, SystemSpec};
use crate::expr::{JsonPath, JsonPathParseError, Predicate, Template, TemplateParseError};

/// A compiled project, ready to run.
#[derive(Debug)]
pub struct Project {
    pub root: PathBuf,
    pub vars: Value,
    pub entities: BTreeMap<String, Arc<Entity>>,
    /// Systems that can be called (abstract ones are only templates).
    pub systems: BTreeMap<String, Arc<SystemDef>>,
    /// Flows, with `for_each` expanded (`FLOW.SYSTEM`).
    pub flows: Vec<Arc<Flow>>,
    /// Incoming webhooks (`daemon.webhooks`), by name.
    pub webhooks: BTreeMap<String, Arc<Webhook>>,
    pub state_url: Option<String>,
    pub daemon: Option<DaemonConfig>,
}

/// A flow named to run that the project does not have.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown flow `{name}` (known: {})", known.join(", "))]
pub struct FlowSelectError {
    pub name: String,
    /// The ids of the project's flows, sorted.
    pub known: Vec<String>,
}

impl Project {
    pub fn flow(&self, id: &str) -> Option<&Arc<Flow>> {
        self.flows.iter().find(|f| f.id == id)
    }

    /// Flows selected by name (`orders` selects `orders` and every `orders.SHOP` copy), or
    /// every scheduled flow (enabled, with a `trigger.schedule`), in run order: a flow comes
    /// after the flows in its `after` list. A flow without a schedule is manual: it runs
    /// when named, required by another flow, chained with `then`, or notified by a webhook.
    pub fn select(&self, names: &[String]) -> Result<Vec<Arc<Flow>>, FlowSelectError> {
        self.select_with(names, &HashMap::new())
    }

    /// The flows a run picks, in `after` order: those named, or without names those that run
    /// by themselves — on (a switch in `switches`, set in the console, wins over the flow
    /// file's `enabled`) and with a schedule. `run --once` and `dry-run` pick alike.
    pub fn select_with(
        &self,
        names: &[String],
        switches: &HashMap<String, bool>,
    ) -> Result<Vec<Arc<Flow>>, FlowSelectError> {
        let mut chosen: Vec<Arc<Flow>> = Vec::new();
        if names.is_empty() {
            chosen.extend(
                self.flows
                    .iter()
                    .filter(|f| f.is_on(switches) && f.schedule.is_some())
                    .cloned(),
            );
        } else {
            for n in names {
                let hits: Vec<_> = self
                    .flows
                    .iter()
                    .filter(|f| &f.id == n || &f.name == n)
                    .cloned()
                    .collect();
                if hits.is_empty() {
                    let mut known: Vec<String> = self.flows.iter().map(|f| f.id.clone()).collect();
                    known.sort();
                    return Err(FlowSelectError {
                        name: n.clone(),
                        known,
                    });
                }
                chosen.extend(hits);
            }
        }
        // Stable topological order by `after`.
        let mut ordered: Vec<Arc<Flow>> = Vec::new();
        let mut remaining = chosen;
        while !remaining.is_empty() {
            let ready = remaining.iter().position(|f| {
                f.after
                    .iter()
                    .all(|a| !remaining.iter().any(|r| &r.name == a && r.id != f.id))
            });
            // A cycle cannot stop a run: take the next one as it comes.
            let i = ready.unwrap_or(0);
            ordered.push(remaining.remove(i));
        }
        Ok(ordered)
    }
}

impl Flow {
    /// The flow as its file declares it (includes and overrides applied, `for_each` not
    /// expanded): what `validate --print-config` shows. Running code reads the fields above.
    pub fn declared(&self) -> &DeclaredFlow {
        &self.declared
    }

    /// Whether the flow is on: its switch in `switches` (set by a person), else its flow file.
    pub(crate) fn is_on(&self, switches: &HashMap<String, bool>) -> bool {
        switches.get(&self.id).copied().unwrap_or(self.enabled)
    }
}

/// A system with what it inherits merged in.
#[derive(Debug, PartialEq)]
pub struct SystemDef {
    pub name: String,
    pub role: Option<SystemRole>,
    /// The merged configuration (operations included): only shown (`effective_config`),
    /// never run from.
    config: SystemConfig,
    pub operations: BTreeMap<String, Arc<Operation>>,
    /// Everything the running system is built from, checked: the engine builds it as is.
    pub spec: Arc<SystemSpec>,
    pub entities: BTreeMap<String, Arc<SystemEntity>>,
}

impl SystemDef {
    /// The system as it will run, merged with what it extends, as `validate --print-config`
    /// shows it (secrets not masked yet).
    pub fn effective_config(&self) -> Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }

    /// The address of the system's API, as the flow files write it.
    pub fn base_url(&self) -> &str {
        self.config
            .base_url
            .as_deref()
            .unwrap_or(self.spec.base_url.as_str())
    }

    /// The system's own `vars` (`{{system.NAME}}` in templates).
    pub fn system_vars(&self) -> &Value {
        &self.spec.system_vars
    }

    /// The system's request budget, if it has one.
    pub fn rate_limit(&self) -> Option<&RateLimitConfig> {
        self.spec.rate_limit.as_ref()
    }

    /// The same system at another address (a recording or replaying proxy).
    pub fn at(&self, base_url: &str) -> Result<SystemDef, url::ParseError> {
        let spec = self.spec.at(url::Url::parse(base_url)?);
        let mut config = self.config.clone();
        config.base_url = Some(base_url.to_string());
        Ok(self.with(config, spec))
    }

    /// The same system without a request budget (a replay answers at once).
    pub fn unlimited(&self) -> SystemDef {
        let mut config = self.config.clone();
        config.rate_limit = None;
        self.with(config, self.spec.unlimited())
    }

    fn with(&self, config: SystemConfig, spec: SystemSpec) -> SystemDef {
        SystemDef {
            name: self.name.clone(),
            role: self.role,
            config,
            operations: self.operations.clone(),
            entities: self.entities.clone(),
            spec: Arc::new(spec),
        }
    }
}

/// Why an entity's `id` does not compile: the JSONPath or the template it is does not parse.
#[derive(Debug, thiserror::Error)]
pub enum RecordIdParseError {
    #[error(transparent)]
    Path(#[from] JsonPathParseError),
    #[error(transparent)]
    Template(#[from] TemplateParseError),
}

/// Where a system's own id is in one of its records: a JSONPath, or a template that joins
/// several ids into a composite one (`{{template}}/{{id}}`).
#[derive(Debug, PartialEq)]
pub enum RecordId {
    Path(JsonPath),
    Template(Template),
}

impl RecordId {
    /// Compiles the `id` of a system entity: a text starting with `$` is a JSONPath.
    pub fn parse(text: &str) -> Result<RecordId, RecordIdParseError> {
        if text.starts_with('$') {
            Ok(RecordId::Path(JsonPath::parse(text)?))
        } else {
            Ok(RecordId::Template(Template::compile(text)?))
        }
    }

    /// The id of `record`, if it has one. A composite id with an empty part has none: a
    /// response that lacks one of the ids must not produce a half id.
    pub fn of(&self, record: &Value) -> Option<String> {
        self.of_in(record, None)
    }

    /// The id of a record of a nested listing, whose template may read its parent
    /// (`{{parent.id}}/{{id}}`: a variant known by its product's id and its own).
    pub fn of_in(&self, record: &Value, parent: Option<&Value>) -> Option<String> {
        match self {
            RecordId::Path(p) => p.first(record).and_then(types::key_text),
            RecordId::Template(t) => {
                let mut data = record.clone();
                if let (Some(parent), Value::Object(m)) = (parent, &mut data)
                    && !m.contains_key(mapping::PARENT)
                {
                    m.insert(mapping::PARENT.into(), parent.clone());
                }
                let text = t.render(&handlebars::Context::from(data)).ok()?;
                let whole =
                    !text.is_empty() && text.split(COMPOSITE_ID_SEPARATOR).all(|p| !p.is_empty());
                whole.then_some(text)
            }
        }
    }
}

/// How an entity lives in one system.
#[derive(Debug, PartialEq)]
pub struct SystemEntity {
    pub id: RecordId,
    pub list: Option<String>,
    /// Lists the records changed since `{{since}}`; incremental reads prefer it to `list`.
    pub changes: Option<String>,
    pub lookup: Option<String>,
    pub get: Option<String>,
    pub create: Option<String>,
    pub update: Option<String>,
    pub actions: BTreeMap<String, String>,
    pub read: Mapping,
    pub write: Mapping,
    /// The lookup tables its mappings see: the project's `vars`, overlaid by the tables in
    /// the system's own `vars`.
    pub tables: Arc<Value>,
}

/// A canonical entity.
#[derive(Debug, PartialEq)]
pub struct Entity {
    pub name: String,
    pub key: String,
    pub updated_at: Option<String>,
    pub fields: BTreeMap<String, CanonField>,
}

/// A canonical field.
#[derive(Debug, Clone, PartialEq)]
pub struct CanonField {
    pub ty: FieldType,
    pub scale: Option<u32>,
    pub normalize: Vec<Normalize>,
    pub volatile: bool,
}

/// A runnable flow.
#[derive(Debug, PartialEq)]
pub struct Flow {
    /// `NAME`, or `NAME.SYSTEM` for a `for_each` copy.
    pub id: String,
    /// Name in the flow file.
    pub name: String,
    /// What the flow is for.
    pub description: Option<String>,
    /// Whether the flow file enables it (a person's switch may override it: see `is_on`).
    pub enabled: bool,
    /// The canonical entity it moves.
    pub entity: String,
    /// The systems, `for_each` resolved.
    pub from: String,
    pub to: String,
    pub direction: Direction,
    pub mode: SyncMode,
    /// Canonical fields carried; empty: every field the target's `write` mapping uses.
    pub fields: Vec<String>,
    pub skip_nulls: bool,
    /// Runs for the record a delivery of this webhook names.
    pub webhook: Option<String>,
    /// Sends a record only when its status is one of these.
    pub on_status: Option<StatusTrigger>,
    /// Sends a record only when its status moved this way.
    pub on_transition: Option<TransitionTrigger>,
    /// Incremental reading: where the first run starts and the overlap of later runs.
    pub incremental: Option<Incremental>,
    /// The conflict rule, its `owners` named by side (`for_each` resolved).
    pub conflict: Option<Conflict>,
    /// Actions on the source record after the target accepted it, each with its operation.
    pub after_export: Vec<PostAction>,
    pub allow_edit_after_export: bool,
    pub export_once: bool,
    /// Flows (by name) this one runs after when they run together.
    pub after: Vec<String>,
    /// Canonical field the records are matched on.
    pub match_key: String,
    /// Normalisation of match keys: the match field's own, then the flow's `match.normalize`.
    pub normalize: Vec<Normalize>,
    pub filter: Option<Predicate>,
    pub schedule: Option<Schedule>,
    pub reconcile_schedule: Option<Schedule>,
    /// Whether reconciliation corrects the drift it finds (`reconcile.correct`), or only
    /// reports it.
    pub reconcile_corrects: bool,
    /// Chained flows (ids, resolved per copy) and the path of the keys they are scoped to.
    pub then: Vec<(String, Option<JsonPath>)>,
    /// Flows that must sync a related record first, and where that record is.
    pub requires: Vec<(String, JsonPath)>,
    /// The flow as its file declares it, overrides applied, for `validate --print-config`.
    declared: DeclaredFlow,
}

/// A flow's configuration as its file declares it, kept only to be shown: running code reads
/// the compiled fields of `Flow`, never this.
#[derive(Debug, PartialEq)]
pub struct DeclaredFlow(FlowConfig);

impl DeclaredFlow {
    pub(crate) fn new(config: FlowConfig) -> DeclaredFlow {
        DeclaredFlow(config)
    }

    /// The declaration as JSON, keys as the flow file writes them.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(&self.0).unwrap_or_default()
    }
}
