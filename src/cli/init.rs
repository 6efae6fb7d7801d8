//! `erpsync init DIR`: a new project from a template.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `erpsync init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The folder to create (it must not exist or be empty).
    pub dir: PathBuf,
}

pub fn run(_args: InitArgs) -> anyhow::Result<ExitCode> {
    Ok(ExitCode::SUCCESS)
}
