//! `erpsync sim`: serve the simulators until interrupted.

use std::process::ExitCode;

/// Arguments of `erpsync sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {}

pub fn run(_args: SimArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the simulators are not built yet")
}
