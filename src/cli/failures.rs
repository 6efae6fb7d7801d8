//! `erpsync failures list|show|retry|discard|pending|settle`: the records that could not be
//! synced, manual re-sync once the cause is fixed (in the data, or in the flow file), and
//! writes of unknown outcome that only a person can settle.

use std::process::ExitCode;

use super::common::{
    ProjectArgs, RecordLines, engine, load_project, open_state, open_state_read_only, print_report,
    reports_json, select_flows, usage,
};
use super::output::FormatArgs;
use erpsync::compile::Project;
use erpsync::engine::{Settlement, settle_pending};
use erpsync::state::{FlowName, Store};

/// Arguments of `erpsync failures`.
#[derive(Debug, clap::Args)]
pub struct FailuresArgs {
    #[command(subcommand)]
    pub action: FailuresAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum FailuresAction {
    /// List kept failures.
    List {
        #[command(flatten)]
        project: ProjectArgs,
        /// Only this flow.
        #[arg(long)]
        flow: Option<String>,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Show one failure: source record, payload, error and response.
    Show {
        #[command(flatten)]
        project: ProjectArgs,
        /// Failure id.
        #[arg(long)]
        id: i64,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Sync failed records again, with the current flow files.
    Retry {
        #[command(flatten)]
        project: ProjectArgs,
        #[command(flatten)]
        pick: Pick,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Forget failures: the records are not retried (a later run that changes them still
    /// syncs them).
    Discard {
        #[command(flatten)]
        project: ProjectArgs,
        #[command(flatten)]
        pick: Pick,
    },
    /// List writes whose outcome is unknown (sent, answer lost), waiting to be settled.
    Pending {
        #[command(flatten)]
        project: ProjectArgs,
        /// Only this flow.
        #[arg(long)]
        flow: Option<String>,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Settle a write of unknown outcome after checking the target by hand.
    Settle {
        #[command(flatten)]
        project: ProjectArgs,
        /// The flow that made the write.
        #[arg(long)]
        flow: String,
        /// The record's key (e.g. the order number).
        #[arg(long)]
        key: String,
        /// It arrived: its id in the target. The record is bound and never sent again.
        #[arg(
            long,
            required_unless_present = "not_sent",
            conflicts_with = "not_sent"
        )]
        target_id: Option<String>,
        /// It did not arrive: forget the write, so it is sent again.
        #[arg(long)]
        not_sent: bool,
    },
}

/// Which failures `retry` and `discard` act on: by id, every one of some flows, or all.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = true)]
pub struct Pick {
    /// Failure id; repeatable.
    #[arg(long)]
    id: Vec<i64>,
    /// Every failure of this flow (a name selects every per-shop copy); repeatable.
    #[arg(long = "flow")]
    flows: Vec<String>,
    /// Every kept failure (of the `--flow`s, when given).
    #[arg(long)]
    all: bool,
}

impl Pick {
    /// The ids picked, checked against the store: an unknown id or flow is a usage error.
    async fn ids(&self, project: &Project, store: &Store) -> anyhow::Result<Vec<i64>> {
        if !self.id.is_empty() && (self.all || !self.flows.is_empty()) {
            return Err(usage(
                "give failures by `--id`, or by `--flow`/`--all`, not both",
            ));
        }
        let failures = store.failures.failures(None).await?;
        if !self.id.is_empty() {
            for id in &self.id {
                if !failures.iter().any(|f| f.id == *id) {
                    return Err(usage(format!("no failure with id {id}")));
                }
            }
            return Ok(self.id.clone());
        }
        let flows: Vec<String> = if self.flows.is_empty() {
            Vec::new()
        } else {
            select_flows(project, &self.flows)?
                .iter()
                .map(|f| f.id.clone())
                .collect()
        };
        Ok(failures
            .iter()
            .filter(|f| flows.is_empty() || flows.contains(&f.flow))
            .map(|f| f.id)
            .collect())
    }
}

/// A time as the failure store's listings print it: local, with its offset.
fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

/// Text cut into lines of at most `width` characters, at spaces where it can.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for para in text.lines() {
        let mut line = String::new();
        for word in para.split(' ') {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}

/// A JSON value pretty-printed and indented under its heading.
fn block(label: &str, value: Option<&serde_json::Value>) {
    match value {
        None | Some(serde_json::Value::Null) => crate::outln!("{label}: none"),
        Some(v) => {
            crate::outln!("{label}:");
            let text = serde_json::to_string_pretty(v).unwrap_or_default();
            for line in erpsync::redact::redact(&text).lines() {
                crate::outln!("  {line}");
            }
        }
    }
}

pub fn run(args: FailuresArgs) -> anyhow::Result<ExitCode> {
    tokio::runtime::Runtime::new()?.block_on(act(args))
}

async fn act(args: FailuresArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        FailuresAction::List {
            project,
            flow,
            format,
        } => {
            let p = load_project(&project.paths)?;
            let store = open_state_read_only(&project, &p).await?;
            let failures = store
                .failures
                .failures(flow.as_deref().map(FlowName::new))
                .await?;
            if format.is_json() {
                super::output::json(&failures)?;
            } else if failures.is_empty() {
                crate::outln!("no failures");
            } else {
                // Through a pipe, fixed columns and errors in rows of 90; on a terminal,
                // the flow and record columns as wide as their longest name and errors
                // broken to the screen's width, so rows do not wrap.
                let screen = super::output::screen_width();
                let (flow_w, key_w, error_w) = match screen {
                    Some(w) => (
                        failures
                            .iter()
                            .map(|f| f.flow.chars().count())
                            .max()
                            .unwrap_or(0)
                            .max(4),
                        failures
                            .iter()
                            .map(|f| f.key.chars().count())
                            .max()
                            .unwrap_or(0)
                            .max(6),
                        w.saturating_sub(8).clamp(30, 90),
                    ),
                    None => (24, 20, 90),
                };
                let row = |id: &dyn std::fmt::Display,
                           flow: &str,
                           key: &str,
                           attempts: &dyn std::fmt::Display,
                           last: &str| {
                    let line =
                        format!("{id:>5}  {flow:<flow_w$} {key:<key_w$} {attempts:>8}  {last:<26}");
                    match screen {
                        Some(_) => line.trim_end().to_string(),
                        None => line,
                    }
                };
                crate::outln!(
                    "{}",
                    row(&"id", "flow", "record", &"attempts", "last failed")
                );
                for f in &failures {
                    crate::outln!(
                        "{}",
                        row(&f.id, &f.flow, &f.key, &f.attempts, &when(f.updated_at))
                    );
                    for line in wrap(&erpsync::redact::redact(&f.error), error_w) {
                        crate::outln!("       {line}");
                    }
                }
                crate::outln!(
                    "{} failure{}; `erpsync failures show --id N` for the record, payload and response",
                    failures.len(),
                    if failures.len() == 1 { "" } else { "s" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        FailuresAction::Show {
            project,
            id,
            format,
        } => {
            let p = load_project(&project.paths)?;
            let store = open_state_read_only(&project, &p).await?;
            let Some(f) = store.failures.failure(id).await? else {
                return Err(usage(format!("no failure with id {id}")));
            };
            if format.is_json() {
                super::output::json(&f)?;
                return Ok(ExitCode::SUCCESS);
            }
            crate::outln!("failure {}: flow `{}`, record `{}`", f.id, f.flow, f.key);
            crate::outln!(
                "attempts {}, first failed {}, last {}",
                f.attempts,
                when(f.created_at),
                when(f.updated_at)
            );
            crate::outln!("error: {}", erpsync::redact::redact(&f.error));
            if let Some(status) = f.status {
                crate::outln!("status: {status}");
            }
            block("record", Some(&f.source_record));
            block("payload", f.payload.as_ref());
            block("response", f.response.as_ref());
            Ok(ExitCode::SUCCESS)
        }
        FailuresAction::Discard { project, pick } => {
            let p = load_project(&project.paths)?;
            let store = open_state(&project, &p).await?;
            let ids = pick.ids(&p, &store).await?;
            for id in &ids {
                store.failures.discard_failure(*id).await?;
            }
            crate::outln!(
                "discarded {} failure{}",
                ids.len(),
                if ids.len() == 1 { "" } else { "s" }
            );
            Ok(ExitCode::SUCCESS)
        }
        FailuresAction::Pending {
            project,
            flow,
            format,
        } => {
            let p = load_project(&project.paths)?;
            let store = open_state_read_only(&project, &p).await?;
            let pending = store
                .journal
                .journal_pending(flow.as_deref().map(FlowName::new))
                .await?;
            if format.is_json() {
                // Payloads may carry personal data or secrets: masked like failures.
                let masked: Vec<_> = pending
                    .into_iter()
                    .map(|mut e| {
                        e.payload = erpsync::redact::redact_json(&e.payload);
                        e
                    })
                    .collect();
                super::output::json(&masked)?;
            } else if pending.is_empty() {
                crate::outln!("no pending writes");
            } else {
                for e in pending {
                    crate::outln!(
                        "{:<24} {:<16} to {:<12} {:<20} since {}",
                        e.flow,
                        e.key,
                        e.target,
                        e.operation,
                        when(e.created_at)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        FailuresAction::Settle {
            project,
            flow,
            key,
            target_id,
            not_sent,
        } => {
            let p = load_project(&project.paths)?;
            let store = open_state(&project, &p).await?;
            let settlement = match target_id {
                Some(target_id) if !not_sent => Settlement::Sent { target_id },
                _ => Settlement::NotSent,
            };
            let settled =
                settle_pending(&p, &store, chrono::Utc::now(), &flow, &key, &settlement).await?;
            let target = settled.first().map(|e| e.target.as_str()).unwrap_or("?");
            match settlement {
                Settlement::Sent { target_id } => crate::outln!(
                    "`{key}` bound to `{target_id}` in `{target}`; it will not be sent again"
                ),
                Settlement::NotSent => crate::outln!(
                    "pending write of `{key}` to `{target}` dropped; `erpsync failures retry` sends it again"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        FailuresAction::Retry {
            project,
            pick,
            format,
        } => {
            let p = load_project(&project.paths)?;
            let store = open_state(&project, &p).await?;
            let ids = pick.ids(&p, &store).await?;
            let engine = engine(p.clone(), store.clone())?;
            let mut reports = Vec::new();
            let mut errors = Vec::new();
            if !ids.is_empty() {
                for (flow, report) in engine.retry_failures(Some(&ids)).await? {
                    match report {
                        Ok(r) => {
                            if !format.is_json() {
                                print_report(&r, RecordLines::WithReason);
                            }
                            reports.push(r);
                        }
                        Err(e) => {
                            if !format.is_json() {
                                crate::errln!(
                                    "{flow}: {}",
                                    erpsync::redact::redact(&e.to_string())
                                );
                            }
                            errors.push((flow, e.to_string()));
                        }
                    }
                }
            } else if !format.is_json() {
                crate::outln!("no failures to retry");
            }
            let doc = reports_json(false, &reports, &errors);
            if format.is_json() {
                super::output::json(&doc)?;
            }
            Ok(if doc["ok"] == true {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(super::EXIT_FAILED)
            })
        }
    }
}
