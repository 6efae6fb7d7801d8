//! The generic HTTP connector: operations compiled from the flow files, executed against a
//! system's API with its auth, rate-limit budget, retry and error policy, and pagination.

mod auth;
mod breaker;
mod decode;
mod error;
mod operation;
mod paginate;
mod ratelimit;
mod retry;
mod rules;
mod stats;
mod system;

pub use breaker::Health;
pub use error::CallError;
pub use operation::{CompileProblem, Operation, ProblemKind};
pub use rules::lint_rules;
pub use stats::{ConnectorStats, StatsSnapshot};
pub use system::{
    ANNOUNCE_WAITS_FROM, CallInput, CallOutput, HttpSystem, Page, WaitAnnouncer, WaitNotice,
};
