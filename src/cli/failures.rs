//! `erpsync failures list|show|retry|discard`: the records that could not be synced, and
//! manual re-sync once the cause is fixed (in the data, or in the flow file).

use std::process::ExitCode;

use super::common::{ProjectArgs, engine, load_project, open_state, summary_line};
use crate::engine::RunOptions;

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
        FailuresAction::Retry { project, id, all } => {
            if id.is_empty() && !all {
                anyhow::bail!("name failures with --id, or retry them all with --all");
            }
            let p = load_project(&project.paths)?;
            let store = open_state(&project, &p)?;
            let chosen: Vec<_> = store
                .failures(None)?
                .into_iter()
                .filter(|f| all || id.contains(&f.id))
                .collect();
            let engine = engine(p.clone(), store.clone())?;
            let rt = tokio::runtime::Runtime::new()?;
            let mut by_flow: std::collections::BTreeMap<String, Vec<String>> = Default::default();
            for f in chosen {
                by_flow.entry(f.flow).or_default().push(f.key);
            }
            let mut ok = true;
            for (flow, keys) in by_flow {
                let opts = RunOptions {
                    keys: Some(keys),
                    force: true,
                    details: true,
                    ..Default::default()
                };
                match rt.block_on(engine.run(&flow, &opts)) {
                    Ok(r) => {
                        ok &= r.counts.failed == 0 && r.ok();
                        println!("{}", summary_line(&r));
                        for rec in &r.records {
                            if let Some(reason) = &rec.reason {
                                println!("    {:?} {}: {reason}", rec.decision, rec.key);
                            }
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
