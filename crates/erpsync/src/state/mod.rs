//! erpsync's memory: bindings between the records of two systems, incremental cursors, the
//! write journal that makes exports exactly-once, failures kept for retry, run history, flow
//! leases and the webhook deliveries already accepted.
//! `Store` is the seam, one async handle per role (`Bindings`, `Journal`, `Failures`, `Runs`,
//! `Coordination`); SQLite is the embedded default (blocking calls run off the runtime's
//! workers), PostgreSQL serves several nodes (an async driver and a small pool).

mod blocking;
mod fenced;
mod ids;
pub(crate) mod lease;
mod migrate;
mod model;
mod open;
pub(crate) mod operator;
mod postgres;
mod sqlite;
mod store;

pub use ids::{FlowName, NativeId, RecordKey};
pub use lease::{Fence, Instance, LeaseLostError, provably_dead};
pub use model::{
    Adopted, Binding, Failure, JournalEntry, JournalState, Lease, NodeRecord, PairSide, Pruned,
    Result, RunRecord, Scope, StateStoreError, StateWrite, SystemHealth,
};
pub(crate) use model::{json_column, keep_since};
pub use open::open;
pub use operator::{FlowSwitch, RUN_LINES_RUNS_KEPT, RunLine};
pub use postgres::{PostgresStore, TlsSetupError, redact_url};
pub use sqlite::SqliteStore;
pub use store::{Bindings, Coordination, Failures, Journal, Runs, Store, switches};
