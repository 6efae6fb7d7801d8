//! The flow-file language: every `…Config` type a YAML flow file can contain.
//!
//! These types only describe; `crate::compile` turns them into runnable values. Every field's
//! `///` doc becomes its description in `schemas/flow.schema.json`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod daemon;
mod entity;
mod flow;
mod mapping;
mod operation;
mod system;
mod webhook;

pub use daemon::*;
pub use entity::*;
pub use flow::*;
pub use mapping::*;
pub use operation::*;
pub use system::*;
pub use webhook::*;

/// One flow file. A project is a folder of such files; their sections are merged, and a name
/// (system, entity, flow, webhook) may be declared only once across the project.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FileConfig {
    /// Version of the flow-file language. Only `1` exists.
    #[serde(default)]
    pub version: Option<u32>,
    /// Other flow files or folders that belong to this project, relative to this file (e.g.
    /// shared entity definitions and platform systems: `[../common]`). An entry is a path (all
    /// it declares) or `{path, only}` naming the sections to take from it, e.g. another
    /// project's systems and entities without its flows: `{path: ../demo, only: [systems,
    /// entities]}`.
    #[serde(default)]
    pub include: Vec<IncludeConfig>,
    /// Free values shared by every template of the project, as `{{vars.NAME}}`.
    #[serde(default)]
    pub vars: BTreeMap<String, Value>,
    /// Named HTTP APIs (shops, ERPs). A system can `extends` another to reuse its operations and
    /// mappings, so several shops of the same platform are declared without copy-paste.
    #[serde(default)]
    pub systems: BTreeMap<String, SystemConfig>,
    /// Canonical records: the shape every system's records are mapped to and from, per entity.
    #[serde(default)]
    pub entities: BTreeMap<String, EntityConfig>,
    /// Flows: one entity moving between two systems.
    #[serde(default)]
    pub flows: BTreeMap<String, FlowConfig>,
    /// Where erpsync keeps bindings, cursors, runs and failures.
    #[serde(default)]
    pub state: Option<StateConfig>,
    /// Settings of the long-running daemon (`erpsync run`).
    #[serde(default)]
    pub daemon: Option<DaemonConfig>,
    /// Changes to declarations made in other files of the project (usually included ones),
    /// without redeclaring them.
    #[serde(default)]
    pub overrides: OverridesConfig,
}

/// One entry of `include`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum IncludeConfig {
    /// A file or folder, relative to this file: everything it declares is taken.
    All(String),
    /// A file or folder with the sections to take from it.
    Only(IncludeOnlyConfig),
}

impl IncludeConfig {
    /// The included file or folder, relative to the including file.
    pub fn path(&self) -> &str {
        match self {
            IncludeConfig::All(p) => p,
            IncludeConfig::Only(o) => &o.path,
        }
    }

    /// The sections taken; `None` means all of them.
    pub fn only(&self) -> Option<&[Section]> {
        match self {
            IncludeConfig::All(_) => None,
            IncludeConfig::Only(o) => Some(&o.only),
        }
    }
}

// Written by hand so that a wrong key or section of `{path, only}` is reported as such, not as
// "matches no variant".
impl<'de> Deserialize<'de> for IncludeConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = IncludeConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a path or `{path, only}`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IncludeConfig, E> {
                Ok(IncludeConfig::All(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<IncludeConfig, A::Error> {
                IncludeOnlyConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(IncludeConfig::Only)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// An include that takes only some sections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct IncludeOnlyConfig {
    /// File or folder, relative to this file.
    pub path: String,
    /// Sections taken from its files (and from what they include in turn); the others are
    /// left out. `flows` brings the `overrides` of those files too.
    pub only: Vec<Section>,
}

/// A section of a flow file, as named by an include's `only`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Section {
    /// `systems`, with their operations and per-entity mappings.
    Systems,
    /// `entities`.
    Entities,
    /// `flows`, and the `overrides` of the same files.
    Flows,
    /// `vars`.
    Vars,
    /// `state`.
    State,
    /// `daemon`, with its webhooks.
    Daemon,
}

impl Section {
    /// Every section.
    pub const ALL: [Section; 6] = [
        Section::Systems,
        Section::Entities,
        Section::Flows,
        Section::Vars,
        Section::State,
        Section::Daemon,
    ];
}

/// Changes to declarations of other files.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct OverridesConfig {
    /// Per flow name: the settings changed. The flow must be declared in the project (an
    /// included file counts); each flow may be overridden once.
    #[serde(default)]
    pub flows: BTreeMap<String, FlowOverrideConfig>,
}

/// Settings of a declared flow changed without redeclaring it. Unnamed settings keep their
/// declared values.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FlowOverrideConfig {
    /// Switches the flow on or off (see the flow's `enabled`).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Changes to the flow's trigger.
    #[serde(default)]
    pub trigger: Option<TriggerOverrideConfig>,
    /// Changes to the flow's reconciliation; a flow without one gets one when `schedule` is
    /// given.
    #[serde(default)]
    pub reconcile: Option<ReconcileOverrideConfig>,
}

/// Trigger settings an override may change.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TriggerOverrideConfig {
    /// New cron schedule (see the flow's `trigger.schedule`).
    #[serde(default)]
    pub schedule: Option<String>,
    /// New time zone of the schedule (IANA name).
    #[serde(default)]
    pub timezone: Option<String>,
}

/// Reconciliation settings an override may change.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ReconcileOverrideConfig {
    /// New cron schedule of the full comparison.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Correct the drift found (otherwise only report it).
    #[serde(default)]
    pub correct: Option<bool>,
}
