//! erpsync: a declarative shop <-> ERP synchronisation engine.
//!
//! Flow files (`config`) are compiled (`compile`) into runnable systems and flows, which the
//! engine (`engine`) executes through the generic HTTP connector (`connector`), keeping its
//! memory in a state store (`state`); the daemon (`daemon`) runs them unattended.

pub mod authoring;
pub mod compile;
pub mod config;
pub mod connector;
pub mod daemon;
pub mod engine;
pub mod expr;
pub(crate) mod json;
pub mod redact;
pub mod state;

/// Time as a seam (the `erpsync-clock` crate, shared with the simulators).
pub use erpsync_clock as clock;
