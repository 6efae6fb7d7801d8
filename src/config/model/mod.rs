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
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FileConfig {
    /// Version of the flow-file language. Only `1` exists.
    #[serde(default)]
    pub version: Option<u32>,
    /// Other flow files or folders that belong to this project, relative to this file (e.g.
    /// shared entity definitions and platform systems: `[../common]`).
    #[serde(default)]
    pub include: Vec<String>,
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
}
