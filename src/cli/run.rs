//! `erpsync run FLOWS --once`: run flows now and exit.

use std::process::ExitCode;

use super::common::{
    ProjectArgs, RecordLines, engine, load_project, open_state, print_report, reports_json,
    select_flows,
};
use super::output::FormatArgs;
use super::progress::Progress;
use crate::engine::RunOptions;

/// Arguments of `erpsync run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Run the selected flows once and exit (without it, erpsync runs as a daemon).
    #[arg(long)]
    pub once: bool,
    /// Only these flows (a name selects every per-shop copy); repeatable.
    #[arg(long = "flow")]
    pub flows: Vec<String>,
    /// Full comparison of both sides, correcting drift (for flows with `reconcile`).
    #[arg(long)]
    pub reconcile: bool,
    /// Ignore the incremental cursor and read everything.
    #[arg(long)]
    pub full: bool,
    /// With `--once`: the longest a system may make the run wait (a `Retry-After`, a
    /// lock-out), in seconds; a longer wait fails the call instead. Waits over 5 s are
    /// always announced.
    #[arg(long, value_name = "SECS")]
    pub max_wait: Option<u64>,
    /// Only the records with these keys (e.g. an order number); repeatable.
    #[arg(long = "key", value_name = "KEY")]
    pub keys: Vec<String>,
    #[command(flatten)]
    pub format: FormatArgs,
    /// Daemon: address of the HTTP server (webhooks, admin API, metrics); overrides
    /// `daemon.listen` (default `127.0.0.1:8700`).
    #[arg(long)]
    pub listen: Option<String>,
    /// Daemon: bearer token of the admin API; overrides `daemon.admin_token`.
    #[arg(long, env = "ERPSYNC_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Daemon: do not reload when the flow files change (SIGHUP still reloads).
    #[arg(long)]
    pub no_watch: bool,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if !args.once {
        return super::daemon::run(args);
    }
    let project = load_project(&args.project.paths)?;
    let flows = select_flows(&project, &args.flows)?;
    let store = open_state(&args.project, &project)?;
    // Without `--flow`, the flows that run by themselves: on (a switch set in the console
    // wins over the flow file) and with a schedule; a manual flow runs only when named.
    let flows = if args.flows.is_empty() {
        let on = crate::daemon::flows_on(&project, store.as_ref())?;
        let names: Vec<String> = project
            .flows
            .iter()
            .filter(|f| f.schedule.is_some() && on.contains(&f.id))
            .map(|f| f.id.clone())
            .collect();
        if names.is_empty() {
            Vec::new()
        } else {
            project.select(&names).map_err(anyhow::Error::msg)?
        }
    } else {
        flows
    };
    let engine =
        engine(project.clone(), store)?.one_shot(args.max_wait.map(std::time::Duration::from_secs));
    let rt = tokio::runtime::Runtime::new()?;
    let progress = Progress::start();
    // What runs was chosen above, on or off included.
    let opts = RunOptions {
        reconcile: args.reconcile,
        full: args.full,
        force: true,
        keys: (!args.keys.is_empty()).then(|| args.keys.clone()),
        progress: progress.counter(),
        ..Default::default()
    };
    let json = args.format.is_json();
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for flow in flows {
        if args.reconcile && flow.config.reconcile.is_none() {
            continue;
        }
        progress.flow(&flow.id);
        let result = rt.block_on(engine.run(&flow.id, &opts));
        progress.suspend(|| match &result {
            Ok(r) if !json => print_report(r, RecordLines::WithReason),
            Ok(_) => {}
            Err(e) if !json => {
                crate::errln!("{}: {}", flow.id, crate::redact::redact(&e.to_string()))
            }
            Err(_) => {}
        });
        match result {
            Ok(r) => reports.push(r),
            Err(e) => errors.push((flow.id.clone(), e.to_string())),
        }
    }
    progress.finish();
    let doc = reports_json(false, &reports, &errors);
    if json {
        super::output::json(&doc)?;
    }
    Ok(if doc["ok"] == true {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FAILED)
    })
}
