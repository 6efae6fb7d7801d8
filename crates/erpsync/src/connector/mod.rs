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
pub use operation::Operation;
pub(crate) use operation::request_texts;
pub use problem::CompileProblem;
pub(crate) use problem::ProblemKind;
pub(crate) use records::{Extracted, RecordsPath};
pub(crate) use rules::lint_rules;
pub use spec::SystemSpec;
pub use stats::{ConnectorStats, StatsSnapshot};
pub(crate) use steps::{StepAnswer, StepLog, StepLogError};
pub(crate) use system::ListingReader;
pub use system::{
    CallInput, CallOutput, HttpSystem, Page, SystemStartError, WaitAnnouncer, WaitNotice,
};
