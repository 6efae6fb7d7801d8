//! Writing flows for a new API: what `erpsync call`, `erpsync test`, `--record` and
//! `erpsync init` stand on. A recording proxy shows and keeps the exchanges with a live
//! system; a replay server answers from them, so a project's flows are tested offline; the
//! templates start a project.

pub mod exchange;
pub mod proxy;
pub mod replay;
pub mod runner;
pub mod server;
pub mod templates;
pub mod testfile;

pub use exchange::{ExchangeConfig, RequestConfig, ResponseConfig};
pub use runner::{
    BindingSeedError, ExchangeResolveError, OperationNameError, TestOutcome, TestRunError,
    TestSetupError, redirect, run_test,
};
pub use testfile::TestFileConfig;
