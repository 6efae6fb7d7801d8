//! The generic HTTP connector: operations compiled from the flow files, executed against a
//! system's API with its auth, rate-limit budget, retry and error policy, and pagination.

mod auth;
mod breaker;
mod decode;
mod error;
mod operation;
mod paginate;
mod problem;
mod ratelimit;
mod records;
mod retry;
mod rules;
mod spec;
mod stats;
mod steps;
mod system;

pub use breaker::Health;
pub use error::CallError;
pub(crate) use operation::request_texts;
pub use operation::{Operation, Step};
pub use problem::{CompileProblem, ProblemKind};
pub use records::{Extracted, RecordsPath};
pub use rules::lint_rules;
pub use spec::SystemSpec;
pub use stats::{ConnectorStats, StatsSnapshot};
pub use steps::{NoStepLog, PlannedStep, StepAnswer, StepLog, StepLogError};
pub use system::{
    ANNOUNCE_WAITS_FROM, CallInput, CallOutput, HttpSystem, Page, SystemStartError, WaitAnnouncer,
    WaitNotice,
};
