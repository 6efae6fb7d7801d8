//! `erpsync run FLOWS --once`: run flows now and exit.

use std::process::ExitCode;

use super::common::{ProjectArgs, cleared_lines, engine, load_project, open_state, summary_line};
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
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// With `--once`: the longest a system may make the run wait (a `Retry-After`, a
    /// lock-out), in seconds; a longer wait fails the call instead. Waits over 5 s are
    /// always announced.
    #[arg(long, value_name = "SECS")]
    pub max_wait: Option<u64>,
    /// Daemon: address of the HTTP server (webhooks, admin API, metrics); overrides
    /// `daemon.listen` (default `127.0.0.1:8700`).
    #[arg(long)]
    pub listen: Option<String>,
    /// Daemon: bearer token of the admin API; overrides `daemon.admin_token`.
    #[arg(long, env = "ERPSYNC_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Daemon: log format.
    #[arg(long, value_enum, default_value_t)]
    pub log_format: LogFormat,
    /// Daemon: do not reload when the flow files change (SIGHUP still reloads).
    #[arg(long)]
    pub no_watch: bool,
}

/// How the daemon writes its logs (to stderr).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if !args.once {
        return super::daemon::run(args);
    }
    let project = load_project(&args.project.paths)?;
    let store = open_state(&args.project, &project)?;
    // Without `--flow`, the flows that run by themselves: on (a switch set in the console
    // wins over the flow file) and with a schedule; a manual flow runs only when named.
    let names = if args.flows.is_empty() {
        let on = crate::daemon::flows_on(&project, store.as_ref())?;
        project
            .flows
            .iter()
            .filter(|f| f.schedule.is_some() && on.contains(&f.id))
            .map(|f| f.id.clone())
            .collect()
    } else {
        args.flows.clone()
    };
    let flows = if names.is_empty() {
        Vec::new()
    } else {
        project.select(&names).map_err(anyhow::Error::msg)?
    };
    let engine =
        engine(project.clone(), store)?.one_shot(args.max_wait.map(std::time::Duration::from_secs));
    let rt = tokio::runtime::Runtime::new()?;
    // What runs was chosen above, on or off included.
    let opts = RunOptions {
        reconcile: args.reconcile,
        full: args.full,
        force: true,
        ..Default::default()
    };
    let mut ok = true;
    let mut reports = Vec::new();
    for flow in flows {
        if args.reconcile && flow.config.reconcile.is_none() {
            continue;
        }
        match rt.block_on(engine.run(&flow.id, &opts)) {
            Ok(r) => {
                ok &= r.ok() && r.counts.failed == 0;
                if !args.json {
                    println!("{}", summary_line(&r));
                    for rec in r.records.iter().filter(|r| r.reason.is_some()) {
                        println!(
                            "    {:?} {}: {}",
                            rec.decision,
                            rec.key,
                            rec.reason.as_deref().unwrap_or("")
                        );
                    }
                    for line in cleared_lines(&r) {
                        println!("{line}");
                    }
                    for e in &r.errors {
                        println!("    error: {}", crate::redact::redact(e));
                    }
                }
                reports.push(r);
            }
            Err(e) => {
                ok = false;
                eprintln!("{}: {}", flow.id, crate::redact::redact(&e.to_string()));
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FAILED)
    })
}
