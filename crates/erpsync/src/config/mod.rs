//! The flow-file language: its model, loading and diagnostics. Nothing here runs.

pub mod diagnostic;
pub mod env;
pub mod load;
pub mod model;
pub mod node;
pub mod schema_doc;
pub mod schema_nav;

pub use diagnostic::{Code, Diagnostic, Problem, Severity};
pub use load::{Decl, ProjectConfig, load};
