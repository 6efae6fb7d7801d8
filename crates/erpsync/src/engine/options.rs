//! How a run is asked for: its options, and the interrupt a one-shot run listens to.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::report::{RecordReport, RunProgress};

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
    /// Live totals for a progress display, updated as records are decided.
    pub progress: Option<std::sync::Arc<RunProgress>>,
    /// Raised to stop the run between records.
    pub interrupt: Option<Interrupt>,
    /// Where each record's line goes as soon as it is decided, instead of the report's
    /// `records`: a long dry run is printed as it is planned, in memory that does not grow
    /// with the catalogue.
    pub sink: Option<RecordSink>,
    /// Text (keys, ids and records) the index of the target a run reads in full keeps in
    /// memory before it moves to a private temporary file, deleted when the run ends.
    /// `None`: 8 MiB. A small bound trades memory for lookups on disk; `Some(0)` moves the
    /// index to disk at its first record.
    pub index_spill_bytes: Option<usize>,
}

/// Takes a run's record lines one by one, as they are decided (see `RunOptions::sink`).
#[derive(Clone)]
pub struct RecordSink(Arc<dyn Fn(RecordReport) + Send + Sync>);

impl RecordSink {
    pub fn new(f: impl Fn(RecordReport) + Send + Sync + 'static) -> Self {
        RecordSink(Arc::new(f))
    }

    pub(crate) fn send(&self, record: RecordReport) {
        (self.0)(record)
    }
}

impl std::fmt::Debug for RecordSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordSink")
    }
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
