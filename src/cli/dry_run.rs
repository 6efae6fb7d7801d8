//! `erpsync dry-run FLOWS`: read live data, decide, and print what a run would do, with the
//! field-level changes. Nothing is written anywhere: no request other than reads, no state.

use std::process::ExitCode;

use super::common::{ProjectArgs, engine, load_project, open_state_read_only, summary_line};
use super::validate::Format;
use crate::engine::{Decision, RunOptions};

/// Arguments of `erpsync dry-run`.
#[derive(Debug, clap::Args)]
pub struct DryRunArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Only these flows; repeatable.
    #[arg(long = "flow")]
    pub flows: Vec<String>,
    /// Plan the reconciliation (full comparison) instead of the incremental run.
    #[arg(long)]
    pub reconcile: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Also list records that would be left alone.
    #[arg(long)]
    pub all: bool,
    /// The longest a system may make the dry run wait (a `Retry-After`, a lock-out), in
    /// seconds; a longer wait fails the read instead. Waits over 5 s are always announced.
    #[arg(long, value_name = "SECS")]
    pub max_wait: Option<u64>,
}

pub fn run(args: DryRunArgs) -> anyhow::Result<ExitCode> {
    let project = load_project(&args.project.paths)?;
    let store = open_state_read_only(&args.project, &project)?;
    let flows = project.select(&args.flows).map_err(anyhow::Error::msg)?;
    // One plan for every flow: what an earlier flow would bind, the next one sees.
    let engine = engine(project.clone(), store)?
        .planning()
        .one_shot(args.max_wait.map(std::time::Duration::from_secs));
    let rt = tokio::runtime::Runtime::new()?;
    let opts = RunOptions {
        dry_run: true,
        reconcile: args.reconcile,
        force: !args.flows.is_empty(),
        ..Default::default()
    };
    let mut reports = Vec::new();
    let mut ok = true;
    for flow in flows {
        if args.reconcile && flow.config.reconcile.is_none() {
            continue;
        }
        match rt.block_on(engine.run(&flow.id, &opts)) {
            Ok(r) => reports.push(r),
            Err(e) => {
                ok = false;
                eprintln!("{}: {}", flow.id, crate::redact::redact(&e.to_string()));
            }
        }
    }
    match args.format {
        Format::Json => {
            let text = serde_json::to_string_pretty(&reports)?;
            println!("{}", crate::redact::redact(&text));
        }
        Format::Text => {
            for r in &reports {
                println!("{}", summary_line(r));
                for rec in &r.records {
                    let quiet = matches!(
                        rec.decision,
                        Decision::Skip | Decision::Filtered | Decision::Locked
                    );
                    if quiet && !args.all {
                        continue;
                    }
                    let target = rec
                        .target
                        .as_deref()
                        .map(|t| format!(" → {t}"))
                        .unwrap_or_default();
                    let reason = rec
                        .reason
                        .as_deref()
                        .map(|r| format!("  ({r})"))
                        .unwrap_or_default();
                    println!(
                        "  {:<9} {}{target}{reason}",
                        format!("{:?}", rec.decision).to_lowercase(),
                        rec.key
                    );
                    for c in &rec.changes {
                        println!("      {}: {} → {}", c.field, c.old, c.new);
                    }
                }
                for e in &r.errors {
                    println!("  error: {}", crate::redact::redact(e));
                }
            }
            println!("dry run: nothing was written");
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FAILED)
    })
}
