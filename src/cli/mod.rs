//! Command-line interface: one file per command. Exit codes: 0 ok, 1 a run failed, 2 usage,
//! 78 invalid flow files.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code of a run that failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code of invalid flow files (EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

/// erpsync keeps online shops and an ERP in sync, driven by YAML flow files.
#[derive(Debug, Parser)]
#[command(name = "erpsync", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check flow files and report every problem with its place.
    Validate(crate::cli::validate::ValidateArgs),
    /// Write the JSON Schema of flow files, or check that the committed one is current.
    Schema(crate::cli::schema::SchemaArgs),
    /// Run flows: once (`--once`), or as a daemon.
    Run(run::RunArgs),
    /// Show what a run would do, record by record, without writing anything.
    DryRun(dry_run::DryRunArgs),
    /// Each flow's state: schedule, last run, failures kept.
    Status(status::StatusArgs),
    /// List, show, retry or discard records that could not be synced; settle writes of
    /// unknown outcome.
    Failures(failures::FailuresArgs),
    /// The whole sync against built-in simulators, with a final check that both sides agree.
    Demo(demo::DemoArgs),
    /// Run the shop and ERP simulators (for trying flows by hand).
    Sim(Box<crate::sim::cli::SimArgs>),
}

pub mod common;
pub mod daemon;
pub mod demo;
pub mod dry_run;
pub mod failures;
pub mod run;
pub mod schema;
pub mod status;
pub mod validate;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Schema(args) => schema::run(args),
        Command::Run(args) => run::run(args),
        Command::Demo(args) => demo::run(args),
        Command::DryRun(args) => dry_run::run(args),
        Command::Failures(args) => failures::run(args),
        Command::Status(args) => status::run(args),
        Command::Sim(args) => crate::sim::cli::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(err) if err.is::<common::InvalidProject>() => {
            eprint!("{err}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(err) => {
            eprintln!("error: {}", crate::redact::redact(&format!("{err:#}")));
            ExitCode::from(EXIT_FAILED)
        }
    }
}
