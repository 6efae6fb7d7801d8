//! Command-line interface: one file per command. Exit codes: 0 ok, 1 a run failed or has
//! failed records, 2 usage, 78 invalid flow files.

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

pub use exit::{EXIT_CONFIG, EXIT_FAILED, EXIT_USAGE, error_chain};

/// erpsync keeps online shops and an ERP in sync, driven by YAML flow files.
#[derive(Debug, Parser)]
#[command(name = "erpsync", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: logging::LogArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check flow files and report every problem with its place.
    Validate(crate::cli::validate::ValidateArgs),
    /// Print the JSON Schema of flow files (`--test`: of test files; `--output FILE` writes
    /// it), or check a copy.
    Schema(crate::cli::schema::SchemaArgs),
    /// Run flows: once (`--once`), or as a daemon.
    Run(run::RunArgs),
    /// Show what a run would do, record by record, without writing anything.
    DryRun(dry_run::DryRunArgs),
    /// Each flow's state: schedule and next runs, last run and its counts, failures kept.
    Status(status::StatusArgs),
    /// List, show, retry or discard records that could not be synced; settle writes of
    /// unknown outcome.
    Failures(failures::FailuresArgs),
    /// The whole sync against built-in simulators, with a final check that both sides agree.
    Demo(demo::DemoArgs),
    /// Run one operation against the live system: the request, the raw response, the
    /// records and each one mapped to its entity, field by field.
    Call(call::CallArgs),
    /// Run the projects' offline tests (`*.test.yaml`): recorded or hand-written exchanges
    /// stand in for the systems; no network.
    Test(test::TestArgs),
    /// Start a project from a template: a shop platform and an ERP, with a test skeleton.
    Init(init::InitArgs),
    /// Run the shop and ERP simulators (for trying flows by hand).
    Sim(Box<crate::cli::sim::SimArgs>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(docs::CompletionsArgs),
    /// Print the man page (roff), generated from these commands.
    Man(docs::ManArgs),
}

impl Command {
    /// Whether the command was asked for JSON output.
    fn wants_json(&self) -> bool {
        use failures::FailuresAction as F;
        match self {
            Command::Run(a) => a.format.is_json(),
            Command::DryRun(a) => a.format.is_json(),
            Command::Status(a) => a.format.is_json(),
            Command::Call(a) => a.format.is_json(),
            Command::Test(a) => a.format.is_json(),
            Command::Failures(a) => match &a.action {
                F::List { format, .. }
                | F::Show { format, .. }
                | F::Retry { format, .. }
                | F::Pending { format, .. } => format.is_json(),
                F::Discard { .. } | F::Settle { .. } => false,
            },
            _ => false,
        }
    }
}

pub mod call;
pub mod common;
pub mod daemon;
pub mod demo;
pub mod docs;
pub mod dry_run;
mod exit;
pub mod failures;
pub mod init;
pub mod logging;
pub mod output;
pub mod progress;
pub mod record;
pub mod run;
pub mod schema;
pub mod sim;
pub mod status;
pub mod test;
pub mod validate;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon and the simulators say what they do; one-shot commands print a report and
    // log only what goes wrong, unless asked (`-v`, `ERPSYNC_LOG`).
    let daemon = matches!(&cli.command, Command::Run(a) if !a.once)
        || matches!(cli.command, Command::Sim(_));
    // Offline tests report their own differences; the engine's warnings about the failures
    // a test provokes would only bury them.
    let quiet = matches!(cli.command, Command::Test(_));
    let level = if daemon {
        tracing::Level::INFO
    } else if quiet {
        tracing::Level::ERROR
    } else {
        tracing::Level::WARN
    };
    logging::init(&cli.log, level);
    let json = cli.command.wants_json();
    let result = match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Schema(args) => schema::run(args),
        Command::Run(args) if !args.once => daemon::run(args),
        Command::Run(args) => run::run(args),
        Command::Demo(args) => demo::run(args),
        Command::DryRun(args) => dry_run::run(args),
        Command::Failures(args) => failures::run(args),
        Command::Status(args) => status::run(args),
        Command::Call(args) => call::run(args),
        Command::Test(args) => test::run(args),
        Command::Init(args) => init::run(args),
        Command::Sim(args) => crate::cli::sim::run(*args),
        Command::Completions(args) => docs::completions(args, Cli::command()),
        Command::Man(args) => docs::man(args, Cli::command()),
    };
    match result {
        Ok(code) => code,
        Err(err) if err.is::<common::InvalidProject>() => {
            crate::errout!("{err}");
            // A tool that asked for JSON gets the diagnostics as `validate` gives them.
            if json && let Some(invalid) = err.downcast_ref::<common::InvalidProject>() {
                let doc = serde_json::json!({"valid": false, "diagnostics": invalid.0});
                let _ = output::json(&doc);
            }
            ExitCode::from(EXIT_CONFIG)
        }
        Err(err) if err.is::<common::UsageError>() => {
            crate::errln!("error: {}", erpsync::redact::redact(&err.to_string()));
            ExitCode::from(EXIT_USAGE)
        }
        Err(err) => {
            crate::errln!("error: {}", erpsync::redact::redact(&error_chain(&err)));
            ExitCode::from(EXIT_FAILED)
        }
    }
}
