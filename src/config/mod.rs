//! The flow-file language: its model, loading and diagnostics. Nothing here runs.

pub mod diagnostic;
pub mod model;
pub mod node;

pub use diagnostic::{Code, Diagnostic};
