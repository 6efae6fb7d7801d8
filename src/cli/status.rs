//! `erpsync status FLOWS`: each flow's state from the state database — enabled, schedule
//! and next run, reconciliation and its next run, cursor, last run with its outcome and
//! counts, failures kept, the node holding its lease, the systems last seen down — without
//! contacting any system.

use std::collections::HashMap;
use std::process::ExitCode;

use super::common::{ProjectArgs, load_project, open_state_read_only};
use super::output::FormatArgs;
use erpsync::clock::{Clock as _, SystemClock};
use erpsync::state::provably_dead;
use erpsync::state::{FlowName, Lease};

/// Arguments of `erpsync status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub format: FormatArgs,
}

/// A time as `status` prints it: local, with its offset.
fn when(t: Option<&serde_json::Value>) -> String {
    t.and_then(|v| serde_json::from_value::<chrono::DateTime<chrono::Utc>>(v.clone()).ok())
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M %:z")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

/// `created 3, updated 1, failed 2` — the non-zero counts of a run.
fn counts_text(counts: &serde_json::Value) -> String {
    let parts: Vec<String> = counts
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| *k != "read" && v.as_u64().is_some_and(|n| n > 0))
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let read = counts["read"].as_u64().unwrap_or(0);
    if parts.is_empty() {
        format!("read {read}, nothing to do")
    } else {
        format!("read {read}, {}", parts.join(", "))
    }
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    tokio::runtime::Runtime::new()?.block_on(status(args))
}

async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let project = load_project(&args.project.paths)?;
    let store = open_state_read_only(&args.project, &project).await?;
    let now = SystemClock.now();
    let leases: HashMap<String, Lease> = store
        .coordination
        .leases()
        .await?
        .into_iter()
        .filter(|l| l.held_at(now))
        .filter_map(|l| Some((l.flow()?.to_string(), l)))
        .collect();
    // Systems a run or a probe last saw down (by their circuit breaker).
    let down: Vec<erpsync::state::SystemHealth> = store
        .runs
        .system_health()
        .await?
        .into_iter()
        .filter(|h| h.down && project.systems.contains_key(&h.system))
        .collect();
    let mut rows = Vec::new();
    for flow in &project.flows {
        let held = leases.get(&flow.id);
        let lease = held.map(
            |l| serde_json::json!({"holder": l.holder, "node": l.node, "expires_at": l.expires_at}),
        );
        let mut last = store
            .runs
            .runs(Some(FlowName::new(&flow.id)), 1)
            .await?
            .into_iter()
            .next();
        // A run still marked running whose process holds no live lease of the flow is not
        // running: its process died or lost the flow (the next holder closes it for good).
        if let Some(r) = last.as_mut()
            && r.status == "running"
            && held
                .is_none_or(|l| Some(&l.holder) != r.instance.as_ref() || provably_dead(&l.holder))
        {
            r.status = "abandoned".into();
        }
        let failures = store
            .failures
            .failures(Some(FlowName::new(&flow.id)))
            .await?
            .len();
        let cursor = store.bindings.cursor(FlowName::new(&flow.id)).await?;
        rows.push(serde_json::json!({
            "flow": flow.id,
            "enabled": flow.enabled,
            "from": flow.from,
            "to": flow.to,
            "schedule": flow.schedule.as_ref().map(|s| s.source().to_string()),
            "next_run": flow.schedule.as_ref().filter(|_| flow.enabled).and_then(|s| s.next_after(now)),
            "reconcile": flow.reconcile_schedule.as_ref().map(|s| s.source().to_string()),
            "next_reconcile": flow.reconcile_schedule.as_ref().filter(|_| flow.enabled).and_then(|s| s.next_after(now)),
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
    if args.format.is_json() {
        super::output::json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    crate::outln!(
        "{:<26} {:<8} {:<16} {:<24} {:<16} {:<24} {:>8}",
        "flow",
        "enabled",
        "schedule",
        "next run",
        "reconcile",
        "next reconcile",
        "failures"
    );
    for r in &rows {
        crate::outln!(
            "{:<26} {:<8} {:<16} {:<24} {:<16} {:<24} {:>8}",
            r["flow"].as_str().unwrap_or(""),
            if r["enabled"] == true { "yes" } else { "no" },
            r["schedule"].as_str().unwrap_or("manual"),
            when(r.get("next_run")),
            r["reconcile"].as_str().unwrap_or("-"),
            when(r.get("next_reconcile")),
            r["failures"],
        );
    }
    crate::outln!(
        "\n{:<26} {:<24} {:<11} {:<16} counts",
        "last run",
        "started",
        "outcome",
        "node"
    );
    for r in &rows {
        let last = &r["last_run"];
        if last.is_null() {
            crate::outln!(
                "{:<26} {:<24} {:<11}",
                r["flow"].as_str().unwrap_or(""),
                "never",
                "-"
            );
            continue;
        }
        crate::outln!(
            "{:<26} {:<24} {:<11} {:<16} {}",
            r["flow"].as_str().unwrap_or(""),
            when(last.get("started_at")),
            last["status"].as_str().unwrap_or("-"),
            last["node"].as_str().unwrap_or("-"),
            counts_text(&last["counts"]),
        );
        if let Some(e) = last["error"].as_str() {
            crate::outln!("{:<26} error: {}", "", erpsync::redact::redact(e));
        }
    }
    // Only while some node runs a flow: most of the time none does.
    let held: Vec<_> = rows.iter().filter(|r| !r["lease"].is_null()).collect();
    if !held.is_empty() {
        crate::outln!(
            "\n{:<26} {:<30} {:<22}",
            "running on",
            "node",
            "lease until"
        );
        for r in held {
            let lease = &r["lease"];
            crate::outln!(
                "{:<26} {:<30} {:<22}",
                r["flow"].as_str().unwrap_or(""),
                format!(
                    "{} ({})",
                    lease["node"].as_str().unwrap_or(""),
                    lease["holder"].as_str().unwrap_or("")
                ),
                when(lease.get("expires_at")),
            );
        }
    }
    if !down.is_empty() {
        let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
            when(t.and_then(|t| serde_json::to_value(t).ok()).as_ref())
        };
        crate::outln!(
            "\n{:<16} {:<24} {:>8}  {:<24} last error",
            "system down",
            "since",
            "failures",
            "next probe"
        );
        for h in &down {
            crate::outln!(
                "{:<16} {:<24} {:>8}  {:<24} {}",
                h.system,
                time(h.down_since),
                h.consecutive_failures,
                time(h.next_probe),
                erpsync::redact::redact(h.last_error.as_deref().unwrap_or("-")),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
