//! `erpsync run FLOWS` without `--once`: the long-running scheduler.

use std::process::ExitCode;

use super::run::RunArgs;

pub fn run(_args: RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the daemon is not available yet; use `erpsync run --once`")
}
