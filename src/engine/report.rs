//! What a run did (or, in a dry run, would do), per record and in totals.

use serde::Serialize;
use serde_json::Value;

use super::canonical::FieldChange;

/// The decision for one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Created in the target.
    Create,
    /// Updated in the target (or, bidirectional, in the source too).
    Update,
    /// Found on both sides on a first sync and linked, nothing to write.
    Adopt,
    /// Unchanged since the last sync: nothing written.
    Skip,
    /// Both sides changed; resolved by the flow's conflict rule.
    Conflict,
    /// Both sides changed and the rule says a person decides; nothing written.
    Park,
    /// Already exported and locked: source edits are not sent.
    Locked,
    /// Not eligible (filter, status trigger).
    Filtered,
    /// Could not be synced; kept in the failure store.
    Failed,
}

/// One record's line in a report.
#[derive(Debug, Clone, Serialize)]
pub struct RecordReport {
    pub key: String,
    pub decision: Decision,
    /// Which system is written (`to`, or `from` for the other half of a bidirectional flow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Totals of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub read: u64,
    pub created: u64,
    pub updated: u64,
    pub adopted: u64,
    pub skipped: u64,
    pub conflicts: u64,
    pub parked: u64,
    pub locked: u64,
    pub filtered: u64,
    pub failed: u64,
    /// Reconciliation: records whose target had drifted and was corrected.
    pub corrected: u64,
    /// Updates that overwrote an edit made on the target since the last sync.
    pub overwrites: u64,
    /// Writes whose outcome was unknown and that were settled by a lookup.
    pub resolved_in_doubt: u64,
}

/// The report of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    pub flow: String,
    pub kind: String,
    pub dry_run: bool,
    pub counts: Counts,
    /// Per-record lines (dry runs, or when details are asked for); failures always.
    pub records: Vec<RecordReport>,
    /// Problems of the run as a whole (a listing that failed, a post-action that failed).
    pub errors: Vec<String>,
    /// Canonical records written, for chained flows.
    #[serde(skip)]
    pub touched: Vec<Value>,
    /// The run was asked to stop (SIGINT/SIGTERM) and did so between records: the records
    /// not reached are read again by the next run.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

impl RunReport {
    /// Whether the run as a whole succeeded (records may still have failed).
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && !self.interrupted
    }

    pub(crate) fn count(&mut self, d: Decision) {
        let c = &mut self.counts;
        match d {
            Decision::Create => c.created += 1,
            Decision::Update => c.updated += 1,
            Decision::Adopt => c.adopted += 1,
            Decision::Skip => c.skipped += 1,
            Decision::Conflict => c.conflicts += 1,
            Decision::Park => c.parked += 1,
            Decision::Locked => c.locked += 1,
            Decision::Filtered => c.filtered += 1,
            Decision::Failed => c.failed += 1,
        }
    }
}
