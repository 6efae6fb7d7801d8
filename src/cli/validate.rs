//! `erpsync validate PATH…`

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `erpsync validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Flow files or folders of flow files.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

pub fn run(_args: ValidateArgs) -> anyhow::Result<ExitCode> {
    Ok(ExitCode::SUCCESS)
}
