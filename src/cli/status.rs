//! `erpsync status FLOWS`: each flow's state from the state database — enabled, schedule,
//! cursor, last run and its counts, failures kept — without contacting any system.

use std::process::ExitCode;

use super::common::{ProjectArgs, load_project, open_state_read_only};

/// Arguments of `erpsync status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let project = load_project(&args.project.paths)?;
    let store = open_state_read_only(&args.project, &project)?;
    let mut rows = Vec::new();
    for flow in &project.flows {
        let last = store.runs(Some(&flow.id), 1)?.into_iter().next();
        let failures = store.failures(Some(&flow.id))?.len();
        let cursor = store.cursor(&flow.id)?;
        rows.push(serde_json::json!({
            "flow": flow.id,
            "enabled": flow.config.enabled,
            "from": flow.from,
            "to": flow.to,
            "schedule": flow.schedule.as_ref().map(|s| s.source().to_string()),
            "cursor": cursor,
            "last_run": last,
            "failures": failures,
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<26} {:<8} {:<18} {:<22} {:<8} {:>8}",
        "flow", "enabled", "schedule", "last run", "status", "failures"
    );
    for r in &rows {
        let last = &r["last_run"];
        let when = last["started_at"]
            .as_str()
            .map(|s| s.chars().take(19).collect::<String>())
            .unwrap_or_else(|| "never".into());
        println!(
            "{:<26} {:<8} {:<18} {:<22} {:<8} {:>8}",
            r["flow"].as_str().unwrap_or(""),
            if r["enabled"] == true { "yes" } else { "no" },
            r["schedule"].as_str().unwrap_or("manual"),
            when,
            last["status"].as_str().unwrap_or("-"),
            r["failures"],
        );
    }
    Ok(ExitCode::SUCCESS)
}
