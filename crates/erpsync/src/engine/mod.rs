//! The engine: runs flows. A run reads the source page by page, maps each record to the
//! canonical record, matches it to the target, decides (create, update, skip, conflict…)
//! and — unless it is a dry run — applies the decision: journal, send, bind. The engine knows
//! flows, not HTTP: it talks to systems only through their operations.

pub mod canonical;
mod core;
mod decide;
mod error;
mod lease;
mod options;
mod report;
mod run;
mod run_lines;
mod settle;

pub use core::*;
pub use error::{EngineBuildError, EngineRunError, LeaseTakeError};
pub use lease::HeldLease;
pub use options::{Interrupt, RecordSink, RunOptions};
pub use report::{Counts, Decision, RecordReport, RunProgress, RunReport};
pub use settle::{PendingSettleError, Settlement, settle_pending};
