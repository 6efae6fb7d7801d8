//! The model of an offline test (`*.test.yaml` beside a project's flow files): the flows to
//! run, the state they start from, the HTTP exchanges that stand in for the systems, and what
//! the run must do. `erpsync schema --test` prints its JSON Schema.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::exchange::ExchangeConfig;

/// An offline test of a project's flows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestFileConfig {
    /// What the test shows, printed with its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Flows to run, in the project's run order (a name selects every per-shop copy).
    /// Empty: the scheduled flows, as `run --once` runs them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flows: Vec<String>,
    /// Plan only, as `dry-run` does: writes are decided and reported, never sent, so they
    /// need no exchange.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Run the flows' reconciliation (full comparison) instead of the incremental run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reconcile: bool,
    /// Read everything, ignoring the incremental cursors (as `run --full`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full: bool,
    /// Only the records with these keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Values of the flow files' `${VARS}` for this test; the process environment is not
    /// read, so a variable without a default must be given here. Base URLs need none:
    /// every system is served by the test.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// What erpsync knows before the run (empty: a first sync).
    #[serde(default, skip_serializing_if = "StateSeedConfig::is_empty")]
    pub state: StateSeedConfig,
    /// Files whose `exchanges` are served too, after this file's own (relative to this
    /// file), e.g. what `erpsync call --record` wrote.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exchanges_from: Vec<PathBuf>,
    /// The requests the systems get and the responses served. A request no exchange
    /// matches fails the test, and so does an exchange (not `optional`) never requested.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exchanges: Vec<ExchangeConfig>,
    /// What each flow's run must report.
    #[serde(default, skip_serializing_if = "ExpectConfig::is_empty")]
    pub expect: ExpectConfig,
}

/// The state a test starts from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateSeedConfig {
    /// Records already linked across two systems.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<BindingSeedConfig>,
    /// Incremental cursors by flow id: a run reads what changed since then.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cursors: BTreeMap<String, DateTime<Utc>>,
}

impl StateSeedConfig {
    fn is_empty(&self) -> bool {
        self.bindings.is_empty() && self.cursors.is_empty()
    }
}

/// A record known in two systems.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BindingSeedConfig {
    /// The canonical entity (`product`, `order`…).
    pub entity: String,
    /// The match key (normalised, as the flow's `match` makes it).
    pub key: String,
    /// The record's id in each of the two systems (`{shop: "12", erp: "P-12"}`); a side
    /// left out has no id there yet.
    #[serde(default)]
    pub ids: BTreeMap<String, String>,
    /// The canonical record last known in each system: what a run compares against.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub records: BTreeMap<String, Value>,
    /// Already exported by an export-once flow.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exported: bool,
    /// The export's `after_export` actions have run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub actions_done: bool,
    /// The two systems: the names in `ids` and `records`, when a side has neither.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub systems: Vec<String>,
}

/// What the runs must report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectConfig {
    /// By flow id: each flow named here must have run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub flows: BTreeMap<String, FlowExpectConfig>,
}

impl ExpectConfig {
    fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}

/// What one flow's run must report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowExpectConfig {
    /// `ok`, `partial` (some records failed) or `error` (the run failed as a whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Totals; those not named are not checked.
    #[serde(default, skip_serializing_if = "CountsExpectConfig::is_empty")]
    pub counts: CountsExpectConfig,
    /// The records written, adopted, in conflict, parked or failed, each with its decision;
    /// a record so decided that is not listed fails the test. Skipped, filtered and locked
    /// records are checked only when listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<RecordExpectConfig>>,
    /// Texts the run's errors must contain, one each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// Expected totals of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CountsExpectConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filtered: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<u64>,
}

impl CountsExpectConfig {
    fn is_empty(&self) -> bool {
        self.pairs().iter().all(|(_, v)| v.is_none())
    }

    /// Each total by name, with its expected value when one is given.
    pub fn pairs(&self) -> [(&'static str, Option<u64>); 10] {
        [
            ("read", self.read),
            ("created", self.created),
            ("updated", self.updated),
            ("adopted", self.adopted),
            ("skipped", self.skipped),
            ("conflicts", self.conflicts),
            ("parked", self.parked),
            ("locked", self.locked),
            ("filtered", self.filtered),
            ("failed", self.failed),
        ]
    }
}

/// One record's expected line in a run's report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordExpectConfig {
    /// The record's match key.
    pub key: String,
    /// `create`, `update`, `adopt`, `skip`, `conflict`, `park`, `locked`, `filtered` or
    /// `failed`.
    pub decision: String,
    /// The system written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The fields that change and their new values (`"*"`: any value); a changed field not
    /// named here fails the test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<BTreeMap<String, Value>>,
    /// A text the record's reason must contain (why it failed, was parked…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A test file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TestFileLoadError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
}

pub use crate::config::load::{is_exchanges_file, is_test_file, is_test_material};

/// Reads a test file, with the exchanges of its `exchanges_from` files after its own.
pub fn load(path: &Path) -> Result<TestFileConfig, TestFileLoadError> {
    let mut cfg = parse(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    for from in cfg.exchanges_from.clone() {
        let more = parse(&base.join(&from))?;
        cfg.exchanges.extend(more.exchanges);
    }
    Ok(cfg)
}

fn parse(path: &Path) -> Result<TestFileConfig, TestFileLoadError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TestFileLoadError::Read {
        path: shown.clone(),
        source,
    })?;
    serde_saphyr::from_str(&text).map_err(|e| TestFileLoadError::Parse {
        path: shown,
        message: e.to_string(),
    })
}

/// The test files below the given paths (folders walked recursively), sorted.
pub fn find(paths: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        if p.is_dir() {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    walk(&e.path(), out);
                }
            }
        } else if is_test_file(p) {
            out.push(p.to_path_buf());
        }
    }
    let mut out = Vec::new();
    for p in paths {
        walk(p, &mut out);
    }
    out.sort();
    out.dedup();
    out
}

/// The JSON Schema of test files.
pub fn schema() -> Value {
    serde_json::to_value(schemars::schema_for!(TestFileConfig)).unwrap_or_default()
}

/// The test-file schema's text, as committed in `schemas/test.schema.json`.
pub fn schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&schema()).unwrap_or_default();
    text.push('\n');
    text
}
