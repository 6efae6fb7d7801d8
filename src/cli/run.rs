//! `erpsync run FLOWS --once`: run flows now and exit.

use std::process::ExitCode;

use std::sync::{Arc, Mutex};

use super::common::{ProjectArgs, engine, load_project, open_state, summary_line};
use crate::engine::{Interrupt, RunOptions};

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
    let flows = project.select(&args.flows).map_err(anyhow::Error::msg)?;
    let engine = engine(project.clone(), store)?;
    let rt = tokio::runtime::Runtime::new()?;
    let interrupt = Interrupt::default();
    let signal = Arc::new(Mutex::new(None));
    {
        let _entered = rt.enter();
        watch_signals(interrupt.clone(), signal.clone())?;
    }
    let opts = RunOptions {
        reconcile: args.reconcile,
        full: args.full,
        force: !args.flows.is_empty(),
        interrupt: Some(interrupt.clone()),
        ..Default::default()
    };
    let mut ok = true;
    let mut reports = Vec::new();
    for flow in flows {
        if interrupt.raised() {
            break;
        }
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
                    for e in &r.errors {
                        println!("    error: {}", crate::redact::redact(e));
                    }
                }
                if r.interrupted {
                    let which = signal
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .unwrap_or("a signal");
                    eprintln!(
                        "{}: interrupted by {which} after {} record(s); recorded as interrupted, the records not reached are read by the next run",
                        flow.id, r.counts.read
                    );
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
    if interrupt.raised() {
        eprintln!("erpsync: run stopped early");
        ok = false;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FAILED)
    })
}

/// SIGINT and SIGTERM stop the run between records (said on stderr); a second one quits at
/// once (what was sent is journaled, the next run settles it).
#[cfg(unix)]
fn watch_signals(
    interrupt: Interrupt,
    seen: Arc<Mutex<Option<&'static str>>>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(which);
        eprintln!(
            "erpsync: {which} received: finishing the record in hand, then stopping (again to quit at once)"
        );
        interrupt.raise();
        let again = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        eprintln!(
            "erpsync: {again} again: quitting now; writes in flight are settled by the next run"
        );
        std::process::exit(130);
    });
    Ok(())
}

#[cfg(not(unix))]
fn watch_signals(
    interrupt: Interrupt,
    seen: Arc<Mutex<Option<&'static str>>>,
) -> anyhow::Result<()> {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some("Ctrl-C");
            eprintln!("erpsync: Ctrl-C received: finishing the record in hand, then stopping");
            interrupt.raise();
        }
    });
    Ok(())
}
