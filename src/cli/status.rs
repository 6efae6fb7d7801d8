//! `erpsync status FLOWS`: each flow's state from the state database — enabled, schedule,
//! cursor, last run and its counts, failures kept, the node holding its lease, the systems
//! last seen down — without contacting any system.

use std::collections::HashMap;
use std::process::ExitCode;

use super::common::{ProjectArgs, load_project, open_state_read_only};
use crate::clock::{Clock as _, SystemClock};
use crate::state::Lease;

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
    let now = SystemClock.now();
    let leases: HashMap<String, Lease> = store
        .leases()?
        .into_iter()
        .filter(|l| l.held_at(now))
        .filter_map(|l| Some((l.flow()?.to_string(), l)))
        .collect();
    // Systems a run or a probe last saw down (by their circuit breaker).
    let down: Vec<crate::state::SystemHealth> = store
        .system_health()?
        .into_iter()
        .filter(|h| h.down && project.systems.contains_key(&h.system))
        .collect();
    let mut rows = Vec::new();
    for flow in &project.flows {
        let lease = leases
            .get(&flow.id)
            .map(|l| serde_json::json!({"holder": l.holder, "expires_at": l.expires_at}));
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
            "lease": lease,
            "systems_down": down
                .iter()
                .filter(|h| h.system == flow.from || h.system == flow.to)
                .map(|h| h.system.clone())
                .collect::<Vec<_>>(),
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
    // Only while some node runs a flow: most of the time none does.
    let held: Vec<_> = rows.iter().filter(|r| !r["lease"].is_null()).collect();
    if !held.is_empty() {
        println!(
            "\n{:<26} {:<30} {:<22}",
            "running on", "node", "lease until"
        );
        for r in held {
            let lease = &r["lease"];
            println!(
                "{:<26} {:<30} {:<22}",
                r["flow"].as_str().unwrap_or(""),
                lease["holder"].as_str().unwrap_or(""),
                lease["expires_at"]
                    .as_str()
                    .map(|s| s.chars().take(19).collect::<String>())
                    .unwrap_or_default(),
            );
        }
    }
    if !down.is_empty() {
        let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
            t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "\n{:<16} {:<20} {:>8}  {:<20} last error",
            "system down", "since", "failures", "next probe"
        );
        for h in &down {
            println!(
                "{:<16} {:<20} {:>8}  {:<20} {}",
                h.system,
                time(h.down_since),
                h.consecutive_failures,
                time(h.next_probe),
                crate::redact::redact(h.last_error.as_deref().unwrap_or("-")),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
