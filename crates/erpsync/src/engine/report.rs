//! What a run did (or, in a dry run, would do), per record and in totals.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
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

impl Decision {
    /// The decision as reports and test files write it (`create`, `adopt`…).
    pub fn word(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
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
    /// The steps a multi-step write sends (dry runs): `create: POST /orders/12/trackings`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub steps: Vec<String>,
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
    /// Reconciliation with `correct: false`: records whose target had drifted, reported and
    /// left as they are (counted as skipped too).
    pub drifted: u64,
    /// Updates that overwrote an edit made on the target since the last sync.
    pub overwrites: u64,
    /// Writes whose outcome was unknown and that were settled by a lookup.
    pub resolved_in_doubt: u64,
    /// Records kept in the failure store that this run synced: their failures are cleared.
    pub failures_cleared: u64,
}

impl Counts {
    /// Adds another run's totals to these.
    pub(crate) fn add(&mut self, o: &Counts) {
        self.read += o.read;
        self.created += o.created;
        self.updated += o.updated;
        self.adopted += o.adopted;
        self.skipped += o.skipped;
        self.conflicts += o.conflicts;
        self.parked += o.parked;
        self.locked += o.locked;
        self.filtered += o.filtered;
        self.failed += o.failed;
        self.corrected += o.corrected;
        self.drifted += o.drifted;
        self.overwrites += o.overwrites;
        self.resolved_in_doubt += o.resolved_in_doubt;
        self.failures_cleared += o.failures_cleared;
    }

    /// Records decided: each counted once, under one decision. A run's `read` equals this
    /// (a reconciliation's `corrected` and `overwrites` are kinds of update, not records).
    pub fn decided(&self) -> u64 {
        self.created
            + self.updated
            + self.adopted
            + self.skipped
            + self.conflicts
            + self.parked
            + self.locked
            + self.filtered
            + self.failed
    }
}

/// The report of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    /// The run's id in the state store (`None` for a dry run, which records nothing).
    pub run_id: Option<i64>,
    pub flow: String,
    /// `ok`, `partial` (some records failed) or `error` (the run as a whole failed).
    pub status: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub kind: String,
    pub dry_run: bool,
    pub counts: Counts,
    /// Per-record lines (dry runs, or when details are asked for); failures always.
    pub records: Vec<RecordReport>,
    /// Problems of the run as a whole (a listing that failed, a system that went down).
    pub errors: Vec<String>,
    /// Keys whose kept failure this run cleared, because they synced.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cleared: Vec<String>,
    /// The system whose listing could not be read, when that is what ended the run: the
    /// daemon marks it down until a run reads it again.
    #[serde(skip)]
    pub unreachable: Option<String>,
    /// Records synced on demand through `requires` (e.g. the customers of exported orders),
    /// per required flow.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub required: std::collections::BTreeMap<String, Counts>,
    /// Canonical records written, for chained flows.
    #[serde(skip)]
    pub touched: Vec<Value>,
    /// Live totals shared with a progress display.
    #[serde(skip)]
    pub progress: Option<Arc<RunProgress>>,
    /// The run was asked to stop (SIGINT/SIGTERM) and did so between records: the records
    /// not reached are read again by the next run.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// Totals of a run while it goes on, read by a progress display on another thread.
#[derive(Debug, Default)]
pub struct RunProgress {
    /// Records decided.
    pub done: AtomicU64,
    /// Records created or updated (or that would be, in a dry run).
    pub written: AtomicU64,
    pub failed: AtomicU64,
    /// Records the run will decide, when known: the keys of a run scoped to some, or the
    /// count a listing tells (its operation's `total`); 0 when not known.
    pub total: AtomicU64,
}

impl RunProgress {
    /// Starts counting a new run.
    pub fn reset(&self) {
        for c in [&self.done, &self.written, &self.failed, &self.total] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

impl RunReport {
    /// Whether the run as a whole succeeded (records may still have failed).
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && !self.interrupted
    }

    /// The outcome as the run history and JSON reports name it.
    pub(crate) fn outcome(&self) -> &'static str {
        if !self.ok() {
            "error"
        } else if self.counts.failed > 0 {
            "partial"
        } else {
            "ok"
        }
    }

    pub(crate) fn count(&mut self, d: Decision) {
        if let Some(p) = &self.progress {
            p.done.fetch_add(1, Ordering::Relaxed);
            match d {
                Decision::Create | Decision::Update | Decision::Conflict => {
                    p.written.fetch_add(1, Ordering::Relaxed);
                }
                Decision::Failed => {
                    p.failed.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
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
