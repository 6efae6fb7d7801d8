//! `erpsync run FLOWS --once`: run flows now and exit.

use std::process::ExitCode;

use std::sync::{Arc, Mutex};

use super::common::{
    IndexMemoryArgs, ProjectArgs, RecordLines, engine, load_project, one_shot_runtime, open_state,
    print_report, reports_json, select_flows,
};
use super::output::FormatArgs;
use super::progress::Progress;
use erpsync::engine::{Interrupt, RunOptions};

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
    #[command(flatten)]
    pub index_memory: IndexMemoryArgs,
    /// Daemon: address of the HTTP server (webhooks, admin API, metrics); overrides
    /// `daemon.listen` (default `127.0.0.1:8700`).
    #[arg(long)]
    pub listen: Option<String>,
    /// Daemon: bearer token of the admin API; overrides `daemon.admin_token`.
    #[arg(long, env = "ERPSYNC_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// With `--once`: write the run as an offline test to FILE (`erpsync test` replays it):
    /// the state the flows started from, every HTTP exchange with secrets masked, and what
    /// each flow did.
    #[arg(long, value_name = "FILE", requires = "once")]
    pub record: Option<std::path::PathBuf>,
    /// Daemon: do not reload when the flow files change (SIGHUP still reloads).
    #[arg(long)]
    pub no_watch: bool,
}

/// `erpsync run --once`; without `--once` the command starts the daemon (`cli::daemon`).
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let project = load_project(&args.project.paths)?;
    let flows = select_flows(&project, &args.flows)?;
    let rt = one_shot_runtime()?;
    let store = rt.block_on(open_state(&args.project, &project))?;
    // Without `--flow`, the flows that run by themselves: on (a switch set in the console
    // wins over the flow file) and with a schedule; a manual flow runs only when named.
    let flows = if args.flows.is_empty() {
        project
            .select_with(&[], &rt.block_on(erpsync::state::switches(&store))?)
            .map_err(anyhow::Error::msg)?
    } else {
        flows
    };
    let recorder = match &args.record {
        Some(_) => Some(rt.block_on(super::record::Recorder::start(&project, &store, &flows))?),
        None => None,
    };
    let project = match &recorder {
        Some(r) => r.project(&project)?,
        None => project,
    };
    let engine = engine(project.clone(), store)?
        .one_shot(args.max_wait.map(std::time::Duration::from_secs))
        .index_memory(args.index_memory.bytes());
    let interrupt = Interrupt::default();
    let signal = Arc::new(Mutex::new(None));
    {
        let _entered = rt.enter();
        watch_signals(interrupt.clone(), signal.clone())?;
    }
    let progress = Progress::start();
    // What runs was chosen above, on or off included.
    let opts = RunOptions {
        reconcile: args.reconcile,
        full: args.full,
        force: true,
        keys: (!args.keys.is_empty()).then(|| args.keys.clone()),
        progress: progress.counter(),
        interrupt: Some(interrupt.clone()),
        details: recorder.is_some(),
        ..Default::default()
    };
    let names: Vec<String> = flows.iter().map(|f| f.id.clone()).collect();
    let json = args.format.is_json();
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for flow in flows {
        if interrupt.raised() {
            break;
        }
        if args.reconcile && flow.reconcile_schedule.is_none() {
            continue;
        }
        progress.flow(&flow.id);
        let result = rt.block_on(engine.run(&flow.id, &opts));
        progress.suspend(|| match &result {
            Ok(r) => {
                if !json {
                    print_report(r, RecordLines::WithReason);
                }
                if r.interrupted {
                    let which = signal
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .unwrap_or("a signal");
                    crate::errln!(
                        "{}: interrupted by {which} after {} record(s); recorded as interrupted, the records not reached are read by the next run",
                        flow.id,
                        r.counts.read
                    );
                }
            }
            Err(e) if !json => {
                crate::errln!("{}: {}", flow.id, erpsync::redact::redact(&e.to_string()))
            }
            Err(_) => {}
        });
        match result {
            Ok(r) => reports.push(r),
            Err(e) => errors.push((flow.id.clone(), e.to_string())),
        }
    }
    progress.finish();
    if let (Some(r), Some(file)) = (&recorder, &args.record) {
        let asked = super::record::RecordedRun {
            flows: &names,
            reconcile: args.reconcile,
            full: args.full,
            keys: &args.keys,
        };
        let n = r.write(file, asked, &reports)?;
        crate::errln!(
            "wrote the run as a test to {} ({n} exchange(s))",
            file.display()
        );
    }
    let doc = reports_json(false, &reports, &errors);
    if json {
        super::output::json(&doc)?;
    }
    let mut ok = doc["ok"] == true;
    if interrupt.raised() {
        crate::errln!("erpsync: run stopped early");
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
