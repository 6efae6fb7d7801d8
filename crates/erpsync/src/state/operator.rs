//! What the operator's console keeps besides the sync state proper: each flow's on/off switch
//! (it outlives restarts and reloads, and overrides the flow file's `enabled`) and a bounded
//! per-record report of each run. Its tables come in a migration step of their own
//! (`OPERATOR_SCHEMA` in each store), after the sync tables.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Per-record lines kept of one run, at most: failures and writes first, then the rest.
pub(crate) const RUN_LINES_PER_RUN: usize = 500;

/// Runs whose per-record lines are kept: those of older runs are dropped as new ones come.
pub const RUN_LINES_RUNS_KEPT: i64 = 1000;

/// A flow switched on or off by a person; it wins over the flow file's `enabled`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowSwitch {
    pub flow: String,
    pub enabled: bool,
    pub changed_at: DateTime<Utc>,
    /// Who switched it (`console`, `api`, or the role that did).
    pub changed_by: String,
}

/// One record's outcome in a run, as kept after it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunLine {
    pub run_id: i64,
    pub flow: String,
    pub key: String,
    /// `create`, `update`, `adopt`, `skip`, `failed`… (the engine's decision).
    pub decision: String,
    /// The system written.
    pub target: Option<String>,
    /// The field changes (as the dry run shows them), JSON.
    pub changes: Option<serde_json::Value>,
    pub reason: Option<String>,
}

/// The order lines are kept in when a run has more than `RUN_LINES_PER_RUN`: what a person
/// looks for first.
pub(crate) fn line_rank(decision: &str) -> u8 {
    match decision {
        "failed" => 0,
        "park" | "conflict" => 1,
        "create" | "update" => 2,
        "adopt" | "locked" => 3,
        _ => 4,
    }
}
