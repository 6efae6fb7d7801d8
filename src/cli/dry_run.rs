//! `erpsync dry-run FLOWS`: read live data, decide, and print what a run would do, with the
//! field-level changes. Nothing is written anywhere: no request other than reads, no state.
//! It exits 1 when it predicts failures, so it can gate a change in CI.

use std::process::ExitCode;

use super::common::{
    ProjectArgs, RecordLines, engine, load_project, open_state_read_only, print_report,
    reports_json, select_flows,
};
use super::output::FormatArgs;
use super::progress::Progress;
use crate::engine::RunOptions;

/// Arguments of `erpsync dry-run`.
#[derive(Debug, clap::Args)]
pub struct DryRunArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Only these flows; repeatable.
    #[arg(long = "flow")]
    pub flows: Vec<String>,
    /// Only the records with these keys (e.g. an order number); repeatable.
    #[arg(long = "key", value_name = "KEY")]
    pub keys: Vec<String>,
    /// Plan the reconciliation (full comparison) instead of the incremental run.
    #[arg(long)]
    pub reconcile: bool,
    #[command(flatten)]
    pub format: FormatArgs,
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
    let flows = select_flows(&project, &args.flows)?;
    let store = open_state_read_only(&args.project, &project)?;
    // Without `--flow`, what `run --once` would run: switches set in the console count.
    let flows = if args.flows.is_empty() {
        project
            .select_with(&[], &crate::state::switches(store.as_ref())?)
            .map_err(anyhow::Error::msg)?
    } else {
        flows
    };
    // One plan for every flow: what an earlier flow would bind, the next one sees.
    let engine = engine(project.clone(), store)?
        .planning()
        .one_shot(args.max_wait.map(std::time::Duration::from_secs));
    let rt = tokio::runtime::Runtime::new()?;
    let progress = Progress::start();
    let opts = RunOptions {
        dry_run: true,
        reconcile: args.reconcile,
        force: !args.flows.is_empty(),
        keys: (!args.keys.is_empty()).then(|| args.keys.clone()),
        progress: progress.counter(),
        ..Default::default()
    };
    let json = args.format.is_json();
    let lines = if args.all {
        RecordLines::All
    } else {
        RecordLines::Changes
    };
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for flow in flows {
        if args.reconcile && flow.reconcile_schedule.is_none() {
            continue;
        }
        progress.flow(&flow.id);
        let result = rt.block_on(engine.run(&flow.id, &opts));
        progress.suspend(|| match &result {
            Ok(r) if !json => print_report(r, lines),
            Err(e) if !json => {
                crate::errln!("{}: {}", flow.id, crate::redact::redact(&e.to_string()))
            }
            _ => {}
        });
        match result {
            Ok(r) => reports.push(r),
            Err(e) => errors.push((flow.id.clone(), e.to_string())),
        }
    }
    progress.finish();
    let doc = reports_json(true, &reports, &errors);
    if json {
        super::output::json(&doc)?;
    } else {
        crate::outln!("dry run: nothing was written");
    }
    Ok(if doc["ok"] == true {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FAILED)
    })
}
