//! `erpsync failures list|show|retry|discard|pending|settle`: the records that could not be
//! synced, manual re-sync once the cause is fixed (in the data, or in the flow file), and
//! writes of unknown outcome that only a person can settle.

use std::process::ExitCode;

use super::common::{ProjectArgs, cleared_lines, engine, load_project, open_state, summary_line};
use crate::engine::{Settlement, settle_pending};

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
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one failure: source record, payload, error and response.
    Show {
        #[command(flatten)]
        project: ProjectArgs,
        /// Failure id.
        #[arg(long)]
        id: i64,
    },
    /// Sync failed records again, with the current flow files.
    Retry {
        #[command(flatten)]
        project: ProjectArgs,
        /// Failure id; repeatable.
        #[arg(long)]
        id: Vec<i64>,
        /// Every kept failure.
        #[arg(long)]
        all: bool,
    },
    /// Forget a failure.
    Discard {
        #[command(flatten)]
        project: ProjectArgs,
        /// Failure id.
        #[arg(long)]
        id: i64,
    },
    /// List writes whose outcome is unknown (sent, answer lost), waiting to be settled.
    Pending {
        #[command(flatten)]
        project: ProjectArgs,
        /// Only this flow.
        #[arg(long)]
        flow: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
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

pub fn run(args: FailuresArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        FailuresAction::List {
            project,
            flow,
            json,
        } => {
            let p = load_project(&project.paths)?;
            let store = open_state(&project, &p)?;
            let failures = store.failures(flow.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&failures)?);
            } else if failures.is_empty() {
                println!("no failures");
            } else {
                for f in failures {
                    println!(
                        "{:>5}  {:<24} {:<16} attempts {:<3} {}",
                        f.id, f.flow, f.key, f.attempts, f.error
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        FailuresAction::Show { project, id } => {
            let p = load_project(&project.paths)?;
            let store = open_state(&project, &p)?;
            match store.failure(id)? {
                Some(f) => {
                    println!("{}", serde_json::to_string_pretty(&f)?);
                    Ok(ExitCode::SUCCESS)
                }
                None => anyhow::bail!("no failure with id {id}"),
            }
        }
        FailuresAction::Discard { project, id } => {
            let p = load_project(&project.paths)?;
            let store = open_state(&project, &p)?;
            if store.discard_failure(id)? {
                println!("discarded failure {id}");
                Ok(ExitCode::SUCCESS)
            } else {
                anyhow::bail!("no failure with id {id}")
            }
        }
        FailuresAction::Pending {
            project,
            flow,
            json,
        } => {
            let p = load_project(&project.paths)?;
            let store = open_state(&project, &p)?;
            let pending = store.journal_pending(flow.as_deref())?;
            if json {
                // Payloads may carry personal data or secrets: masked like failures.
                let masked: Vec<_> = pending
                    .into_iter()
                    .map(|mut e| {
                        e.payload = crate::redact::redact_json(&e.payload);
                        e
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&masked)?);
            } else if pending.is_empty() {
                println!("no pending writes");
            } else {
                for e in pending {
                    println!(
                        "{:<24} {:<16} to {:<12} {:<20} since {}",
                        e.flow,
                        e.key,
                        e.target,
                        e.operation,
                        e.created_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
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
            let store = open_state(&project, &p)?;
            let settlement = match target_id {
                Some(target_id) if !not_sent => Settlement::Sent { target_id },
                _ => Settlement::NotSent,
            };
            let settled = settle_pending(
                &p,
                store.as_ref(),
                chrono::Utc::now(),
                &flow,
                &key,
                &settlement,
            )?;
            let target = settled.first().map(|e| e.target.as_str()).unwrap_or("?");
            match settlement {
                Settlement::Sent { target_id } => println!(
                    "`{key}` bound to `{target_id}` in `{target}`; it will not be sent again"
                ),
                Settlement::NotSent => println!(
                    "pending write of `{key}` to `{target}` dropped; `erpsync failures retry` sends it again"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        FailuresAction::Retry { project, id, all } => {
            if id.is_empty() && !all {
                anyhow::bail!("name failures with --id, or retry them all with --all");
            }
            let p = load_project(&project.paths)?;
            let store = open_state(&project, &p)?;
            let engine = engine(p.clone(), store.clone())?;
            let rt = tokio::runtime::Runtime::new()?;
            let ids = (!all).then_some(id.as_slice());
            let mut ok = true;
            for (flow, report) in rt.block_on(engine.retry_failures(ids))? {
                match report {
                    Ok(r) => {
                        ok &= r.counts.failed == 0 && r.ok();
                        println!("{}", summary_line(&r));
                        for rec in &r.records {
                            if let Some(reason) = &rec.reason {
                                println!("    {:?} {}: {reason}", rec.decision, rec.key);
                            }
                        }
                        for line in cleared_lines(&r) {
                            println!("{line}");
                        }
                        for e in &r.errors {
                            println!("    error: {}", crate::redact::redact(e));
                        }
                    }
                    Err(e) => {
                        ok = false;
                        eprintln!("{flow}: {e}");
                    }
                }
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(super::EXIT_FAILED)
            })
        }
    }
}
