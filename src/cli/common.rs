//! What the commands that run flows share: loading the project, opening the state, printing
//! reports.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use erpsync::clock::SystemClock;
use erpsync::compile::{Flow, Project};
use erpsync::engine::{Decision, Engine, RecordReport, RunReport};
use erpsync::state::{SqliteStore, Store};

/// Arguments that locate the project and its state.
#[derive(Debug, Clone, clap::Args)]
pub struct ProjectArgs {
    /// Flow files or the project folder.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// State database (`sqlite:PATH` or `postgres://…`); overrides the project's `state.url`.
    /// A relative `sqlite:` path given here is taken from the working directory.
    #[arg(long, env = "ERPSYNC_STATE")]
    pub state: Option<String>,
    /// Create the state database when it does not exist yet. Without it, only the database
    /// the project's own `state.url` names is created; any other missing one is an error, as
    /// a first sync against an empty state adopts or creates every record.
    #[arg(long)]
    pub init_state: bool,
}

/// `--index-memory`: the memory a run gives the target it reads in full.
#[derive(Debug, Clone, clap::Args)]
pub struct IndexMemoryArgs {
    /// MiB of the target a run reads in full (keys, ids, records) it keeps in memory before
    /// moving the rest to a temporary file, deleted when the run ends (default 8). Reading
    /// that file costs little: a larger bound mostly holds more memory.
    #[arg(long, value_name = "MIB", env = "ERPSYNC_INDEX_MEMORY")]
    pub index_memory: Option<usize>,
}

impl IndexMemoryArgs {
    /// The bound in bytes, when one was given.
    pub fn bytes(&self) -> Option<usize> {
        self.index_memory.map(|mib| mib.saturating_mul(1 << 20))
    }
}

/// Why a project could not be started: its diagnostics.
#[derive(Debug)]
pub struct InvalidProject(pub Vec<erpsync::config::Diagnostic>);

impl std::fmt::Display for InvalidProject {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&erpsync::config::diagnostic::render_text(&self.0))
    }
}

impl std::error::Error for InvalidProject {}

/// A command used wrongly (exit 2): an unknown flow, a missing state, arguments that do not
/// go together.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Shorthand for a usage error.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// Loads and compiles the project; invalid flow files are an `InvalidProject` error.
pub fn load_project(paths: &[PathBuf]) -> anyhow::Result<Arc<Project>> {
    let (project, diags) = erpsync::compile::project::check(paths);
    match project {
        Some(p) => Ok(Arc::new(p)),
        None => Err(InvalidProject(diags).into()),
    }
}

/// Selects flows by name; an unknown name is a usage error.
pub fn select_flows(project: &Project, names: &[String]) -> anyhow::Result<Vec<Arc<Flow>>> {
    project.select(names).map_err(|e| usage(e.to_string()))
}

/// Where the state URL in force came from: it decides how a relative `sqlite:` path is read
/// and whether a missing database may be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateOrigin {
    /// `--state` or `ERPSYNC_STATE`: relative to the working directory.
    Argument,
    /// The project's `state.url`: relative to the project folder, created when missing.
    Project,
    /// Nothing named one: `erpsync.sqlite` in the project folder.
    Default,
}

/// The state database a command uses.
#[derive(Debug, Clone)]
pub struct StateLocation {
    /// The URL, with a `sqlite:` path made absolute.
    pub url: String,
    pub origin: StateOrigin,
    /// The SQLite file, for `sqlite:` URLs.
    pub sqlite: Option<PathBuf>,
}

/// The file of a `sqlite:PATH` (or `sqlite://PATH`) URL, as written.
pub fn sqlite_path(url: &str) -> Option<&str> {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
}

/// Resolves the state in force: the flag, the project's `state.url`, or `erpsync.sqlite` in
/// the project folder. A relative `sqlite:` path from the command line is taken from the
/// working directory, one from a flow file from the project folder.
pub fn state_location(args: &ProjectArgs, project: &Project) -> anyhow::Result<StateLocation> {
    let (url, origin) = match (&args.state, &project.state_url) {
        (Some(u), _) => (u.clone(), StateOrigin::Argument),
        (None, Some(u)) => (u.clone(), StateOrigin::Project),
        (None, None) => ("sqlite:erpsync.sqlite".to_string(), StateOrigin::Default),
    };
    // Made absolute here: `state::open` would otherwise join the project folder to a path
    // that already starts with it (a project named by a relative path, `flows/demo`, kept
    // its state in `flows/demo/flows/demo/…`, and `status` looked for it where it belonged).
    let cwd = std::env::current_dir()?;
    let base = match origin {
        StateOrigin::Argument => cwd,
        StateOrigin::Project | StateOrigin::Default => cwd.join(&project.root),
    };
    Ok(resolve_url(&url, origin, &base))
}

/// Makes a `sqlite:` path absolute against `base`; other URLs are kept as they are.
pub fn resolve_url(url: &str, origin: StateOrigin, base: &Path) -> StateLocation {
    match sqlite_path(url) {
        Some(p) => {
            let p = Path::new(p);
            let full = if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            };
            StateLocation {
                url: format!("sqlite:{}", full.display()),
                origin,
                sqlite: Some(full),
            }
        }
        None => StateLocation {
            url: url.to_string(),
            origin,
            sqlite: None,
        },
    }
}

impl StateLocation {
    /// Whether the database is missing: a `sqlite:` file that does not exist.
    pub fn missing(&self) -> bool {
        self.sqlite.as_ref().is_some_and(|p| !p.exists())
    }

    /// Refuses a missing database unless it may be created here.
    fn check_exists(&self, init_state: bool) -> anyhow::Result<()> {
        if !self.missing() || init_state || self.origin == StateOrigin::Project {
            return Ok(());
        }
        let path = self.sqlite.as_deref().unwrap_or(Path::new("")).display();
        let named = match self.origin {
            StateOrigin::Argument => "named by `--state` (or `ERPSYNC_STATE`)",
            _ => "the default one, as the project has no `state.url`,",
        };
        Err(usage(format!(
            "state database `{path}` {named} does not exist: check the path, or pass \
             `--init-state` to start from an empty state (a first sync adopts or creates \
             every record)"
        )))
    }
}

/// Opens the state for writing; a missing database is created only with `--init-state` or
/// when the project's `state.url` names it.
pub async fn open_state(args: &ProjectArgs, project: &Project) -> anyhow::Result<Store> {
    let loc = state_location(args, project)?;
    loc.check_exists(args.init_state)?;
    let store = erpsync::state::open(&loc.url, &project.root)
        .await
        .with_context(|| format!("opening state `{}`", erpsync::state::redact_url(&loc.url)))?;
    Ok(store)
}

/// Opens the state for reading (dry runs, status, listings): an existing database is read;
/// a missing one is created only by `--init-state`, and is otherwise taken as empty when the
/// project's own `state.url` names it (the first run will create it).
pub async fn open_state_read_only(args: &ProjectArgs, project: &Project) -> anyhow::Result<Store> {
    let loc = state_location(args, project)?;
    loc.check_exists(args.init_state)?;
    if loc.missing() && !args.init_state {
        return Ok(SqliteStore::in_memory()?.into());
    }
    open_state(args, project).await
}

/// Builds the engine with the real clock.
/// The runtime of a command that runs flows and exits (`run --once`, `dry-run`): one thread
/// for the engine, its reads ahead and its concurrent writes, beside tokio's blocking pool
/// (the SQLite state). On a multi-thread runtime a page was parsed on one worker and its
/// records freed on another, and the allocator's locks cost more than the parallel parsing
/// won: the 100,000-product first sync of `cargo bench --bench catalog` took 5.95 CPU-s and
/// 54 MB there, 4.81 CPU-s and 48 MB here, and less wall time too (docs/benchmarks.md). The
/// daemon keeps the multi-thread runtime: it serves HTTP beside its runs.
pub fn one_shot_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

pub fn engine(project: Arc<Project>, store: Store) -> anyhow::Result<Engine> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(Engine::new(project, store, Arc::new(SystemClock))?)
}

/// The width of the flow's name before a run's totals (`summary_line`).
const FLOW_COLUMN: usize = 28;

/// One line of totals for a run.
fn summary_line(r: &RunReport) -> String {
    let c = &r.counts;
    let mut parts = vec![
        format!("read {}", c.read),
        format!("created {}", c.created),
        format!("updated {}", c.updated),
        format!("adopted {}", c.adopted),
        format!("skipped {}", c.skipped),
        format!("conflicts {}", c.conflicts),
        format!("failed {}", c.failed),
    ];
    for (n, v) in [
        ("parked", c.parked),
        ("already locked", c.locked),
        ("filtered", c.filtered),
        ("corrected", c.corrected),
        ("drift found (not corrected)", c.drifted),
        ("overwrites", c.overwrites),
        ("in-doubt settled", c.resolved_in_doubt),
        ("failures cleared", c.failures_cleared),
    ] {
        if v > 0 {
            parts.push(format!("{n} {v}"));
        }
    }
    let mut line = format!("{:<FLOW_COLUMN$} {}", r.flow, parts.join(", "));
    for (flow, c) in &r.required {
        let done: Vec<String> = [
            ("created", c.created),
            ("updated", c.updated),
            ("adopted", c.adopted),
            ("skipped", c.skipped),
            ("failed", c.failed),
        ]
        .iter()
        .filter(|(_, v)| *v > 0)
        .map(|(n, v)| format!("{n} {v}"))
        .collect();
        if !done.is_empty() {
            line.push_str(&format!(
                "; required first through `{flow}`: {}",
                done.join(", ")
            ));
        }
    }
    line
}

/// `summary_line` after `indent`, as stdout shows it: on a terminal narrower than the
/// line, broken into lines that fit, the totals kept in their column (see `output::fit`).
pub fn summary_shown(indent: &str, r: &RunReport) -> String {
    let line = format!("{indent}{}", summary_line(r));
    let totals_at = indent.chars().count() + r.flow.chars().count().max(FLOW_COLUMN) + 1;
    crate::cli::output::shown(&line, totals_at, totals_at)
}

/// A run's report as text: the totals, then each record with a reason (or, with `all`, each
/// record) and the changes of its fields, then the run's errors.
pub fn print_report(r: &RunReport, records: RecordLines) {
    crate::outln!("{}", summary_shown("", r));
    for rec in &r.records {
        if let Some(text) = record_text(rec, records) {
            crate::cli::output::stdout(format_args!("{text}"));
        }
    }
    for line in cleared_lines(r) {
        crate::outln!("{line}");
    }
    for e in &r.errors {
        crate::outln!("  error: {}", erpsync::redact::redact(e));
    }
}

/// One record as a text report lists it (its line, then its field changes and steps), or
/// `None` when the report leaves it out.
pub fn record_text(rec: &RecordReport, records: RecordLines) -> Option<String> {
    use std::fmt::Write as _;
    let shown = match records {
        RecordLines::WithReason => rec.reason.is_some(),
        RecordLines::Changes => !matches!(
            rec.decision,
            Decision::Skip | Decision::Filtered | Decision::Locked
        ),
        RecordLines::All => true,
    };
    if !shown {
        return None;
    }
    let target = rec
        .target
        .as_deref()
        .map(|t| format!(" → {t}"))
        .unwrap_or_default();
    let reason = rec
        .reason
        .as_deref()
        .map(|r| format!("  ({})", erpsync::redact::redact(r)))
        .unwrap_or_default();
    let mut text = format!("  {:<9} {}{target}{reason}\n", rec.decision.word(), rec.key);
    if records != RecordLines::WithReason {
        // On a terminal, a change too long for a row (a nested record's JSON) breaks after
        // its commas, the rows after the first indented under the field's name.
        for c in &rec.changes {
            let line = format!("      {}: {} → {}", c.field, c.old, c.new);
            let _ = writeln!(text, "{}", crate::cli::output::shown(&line, 6, 8));
        }
        for s in &rec.steps {
            let _ = writeln!(text, "      step {s}");
        }
    }
    Some(text)
}

/// Which records a text report lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordLines {
    /// Those with something to say (failures, conflicts, locks).
    WithReason,
    /// Those that would be written, with their field changes (dry runs).
    Changes,
    /// Every record, with its field changes.
    All,
}

/// The JSON document of `run --once`, `dry-run` and `failures retry`: every report, plus the
/// flows that could not run at all.
pub fn reports_json(
    dry_run: bool,
    reports: &[RunReport],
    errors: &[(String, String)],
) -> serde_json::Value {
    let ok = errors.is_empty() && reports.iter().all(|r| r.ok() && r.counts.failed == 0);
    serde_json::json!({
        "ok": ok,
        "dry_run": dry_run,
        "runs": reports,
        "errors": errors
            .iter()
            .map(|(flow, error)| serde_json::json!({"flow": flow, "error": erpsync::redact::redact(error)}))
            .collect::<Vec<_>>(),
    })
}

/// The lines under a run's summary that name the failures it cleared.
pub fn cleared_lines(r: &RunReport) -> impl Iterator<Item = String> + '_ {
    r.cleared
        .iter()
        .map(|k| format!("  cleared {k}: synced; its kept failure is gone"))
}
