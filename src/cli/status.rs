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

/// Prints a table's `lines` (its fixed layout, the one a pipe gets) or, on a terminal
/// narrower than one of them, what `narrow` lays out for the terminal's width.
fn print_table(lines: &[String], screen: Option<usize>, narrow: impl FnOnce(usize) -> String) {
    match screen {
        Some(width) if lines.iter().any(|l| l.chars().count() > width) => {
            crate::out!("{}", narrow(width));
        }
        _ => {
            for line in lines {
                crate::outln!("{line}");
            }
        }
    }
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
    let screen = super::output::screen_width();
    // The flows' schedules, as fixed columns; a terminal narrower than them gets them as
    // `narrow_table` lays them out.
    let header = [
        "flow",
        "enabled",
        "schedule",
        "next run",
        "reconcile",
        "next reconcile",
        "failures",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r["flow"].as_str().unwrap_or("").to_string(),
                if r["enabled"] == true { "yes" } else { "no" }.to_string(),
                r["schedule"].as_str().unwrap_or("manual").to_string(),
                when(r.get("next_run")),
                r["reconcile"].as_str().unwrap_or("-").to_string(),
                when(r.get("next_reconcile")),
                r["failures"].to_string(),
            ]
        })
        .collect();
    let fixed = |c: &[String]| {
        format!(
            "{:<26} {:<8} {:<16} {:<24} {:<16} {:<24} {:>8}",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6]
        )
    };
    let header_cells: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let lines: Vec<String> = std::iter::once(&header_cells)
        .chain(&cells)
        .map(|c| fixed(c))
        .collect();
    print_table(&lines, screen, |width| {
        super::output::narrow_table(&header, &cells, &[6], width)
    });

    // Each flow's last run: a row of fixed columns, its error on a row of its own.
    let header = ["last run", "started", "outcome", "node", "counts"];
    let mut lines = vec![format!(
        "{:<26} {:<24} {:<11} {:<16} counts",
        "last run", "started", "outcome", "node"
    )];
    let mut cells = Vec::new();
    let mut errors = Vec::new();
    for r in &rows {
        let flow = r["flow"].as_str().unwrap_or("");
        let last = &r["last_run"];
        if last.is_null() {
            lines.push(format!("{:<26} {:<24} {:<11}", flow, "never", "-"));
            cells.push(vec![flow.to_string(), "never".into(), "-".into()]);
            continue;
        }
        let row = vec![
            flow.to_string(),
            when(last.get("started_at")),
            last["status"].as_str().unwrap_or("-").to_string(),
            last["node"].as_str().unwrap_or("-").to_string(),
            counts_text(&last["counts"]),
        ];
        lines.push(format!(
            "{:<26} {:<24} {:<11} {:<16} {}",
            row[0], row[1], row[2], row[3], row[4]
        ));
        cells.push(row);
        if let Some(e) = last["error"].as_str() {
            let e = erpsync::redact::redact(e);
            lines.push(format!("{:<26} error: {}", "", e));
            errors.push(format!("{flow}: error: {e}"));
        }
    }
    crate::outln!();
    print_table(&lines, screen, |width| {
        let mut text = super::output::narrow_table(&header, &cells, &[], width);
        for e in &errors {
            text.push_str(&super::output::fit(e, 2, 4, width));
            text.push('\n');
        }
        text
    });
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
