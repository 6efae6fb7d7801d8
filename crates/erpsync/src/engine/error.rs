//! What stops a build or a run of the engine, and a lease that cannot be taken.

use chrono::{DateTime, Utc};

use crate::connector::SystemStartError;
use crate::state::StateStoreError;

/// A compiled project whose systems cannot be started on this machine. Nothing the flow files
/// say ends here: compiling the project checked all of it.
#[derive(Debug, thiserror::Error)]
pub enum EngineBuildError {
    #[error(transparent)]
    System(#[from] SystemStartError),
}

/// A run that could not be carried out at all (records that fail are reported, not errors).
#[derive(Debug, thiserror::Error)]
pub enum EngineRunError {
    #[error("unknown flow `{0}`")]
    UnknownFlow(String),
    #[error("flow `{0}` is disabled")]
    Disabled(String),
    #[error(transparent)]
    State(#[from] crate::state::StateStoreError),
    #[error("flow `{flow}`: reading `{system}` failed: {message}")]
    Read {
        flow: String,
        system: String,
        message: String,
    },
    /// A system the flow calls went down during the run: the run stopped; records it had not
    /// synced stay behind the cursor for the next run, none is kept as a failure.
    #[error(
        "flow `{flow}` stopped: system `{system}` is down ({message}); records not synced yet are read again by the next run"
    )]
    SystemDown {
        flow: String,
        system: String,
        message: String,
    },
    #[error(transparent)]
    Lease(#[from] LeaseTakeError),
    /// The run lost its lease mid-way and stopped: what it had in flight is journaled as in
    /// doubt, and the next holder settles it.
    #[error(
        "flow `{0}` lost its lease mid-run and stopped; the next holder settles what was in flight"
    )]
    LeaseLost(String),
}

/// A flow's lease that could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseTakeError {
    #[error("flow `{flow}` is running on node `{node}` (process `{holder}`), lease until {until}")]
    Held {
        flow: String,
        node: String,
        holder: String,
        until: DateTime<Utc>,
    },
    #[error("flow `{0}` is already running in this process")]
    Busy(String),
    #[error("cannot take the lease of flow `{flow}`: {source}")]
    State {
        flow: String,
        source: StateStoreError,
    },
}
