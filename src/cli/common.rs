//! What the commands that run flows share: loading the project, opening the state, printing
//! reports.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use crate::clock::SystemClock;
use crate::compile::Project;
use crate::engine::{Engine, RunReport};
use crate::state::{SqliteStore, StateStore};

/// Arguments that locate the project and its state.
#[derive(Debug, Clone, clap::Args)]
pub struct ProjectArgs {
    /// Flow files or the project folder.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// State database (`sqlite:PATH` or `postgres://…`); overrides the project's `state.url`.
    #[arg(long, env = "ERPSYNC_STATE")]
    pub state: Option<String>,
}

/// Why a project could not be started.
#[derive(Debug)]
pub struct InvalidProject(pub String);

impl std::fmt::Display for InvalidProject {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidProject {}

/// Loads and compiles the project; invalid flow files are an `InvalidProject` error.
pub fn load_project(paths: &[PathBuf]) -> anyhow::Result<Arc<Project>> {
    let (project, diags) = super::validate::check(paths);
    match project {
        Some(p) => Ok(Arc::new(p)),
        None => Err(InvalidProject(super::validate::render_text(&diags)).into()),
    }
}

/// The state URL in force: the flag, the project's `state.url`, or `sqlite:erpsync.sqlite`
/// in the project folder.
pub fn state_url(args: &ProjectArgs, project: &Project) -> String {
    args.state
        .clone()
        .or_else(|| project.state_url.clone())
        .unwrap_or_else(|| "sqlite:erpsync.sqlite".to_string())
}

/// Opens the state for writing.
pub fn open_state(args: &ProjectArgs, project: &Project) -> anyhow::Result<Arc<dyn StateStore>> {
    let url = state_url(args, project);
    let store = crate::state::open(&url, &project.root)
        .with_context(|| format!("opening state `{}`", crate::state::redact_url(&url)))?;
    Ok(Arc::from(store))
}

/// Opens the state for a dry run: an existing database is read, a missing one is not
/// created (an empty in-memory state stands in).
pub fn open_state_read_only(
    args: &ProjectArgs,
    project: &Project,
) -> anyhow::Result<Arc<dyn StateStore>> {
    let url = state_url(args, project);
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"));
    if let Some(p) = path {
        let p = Path::new(p);
        let full = if p.is_absolute() {
            p.to_path_buf()
        } else {
            project.root.join(p)
        };
        if !full.exists() {
            return Ok(Arc::new(SqliteStore::in_memory()?));
        }
    }
    open_state(args, project)
}

/// Builds the engine with the real clock.
pub fn engine(project: Arc<Project>, store: Arc<dyn StateStore>) -> anyhow::Result<Engine> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(Engine::new(project, store, Arc::new(SystemClock))?)
}

/// One line of totals for a run.
pub fn summary_line(r: &RunReport) -> String {
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
        ("locked", c.locked),
        ("filtered", c.filtered),
        ("corrected", c.corrected),
        ("overwrites", c.overwrites),
        ("in-doubt settled", c.resolved_in_doubt),
        ("failures cleared", c.failures_cleared),
    ] {
        if v > 0 {
            parts.push(format!("{n} {v}"));
        }
    }
    format!("{:<28} {}", r.flow, parts.join(", "))
}

/// The lines under a run's summary that name the failures it cleared.
pub fn cleared_lines(r: &RunReport) -> impl Iterator<Item = String> + '_ {
    r.cleared
        .iter()
        .map(|k| format!("    cleared {k}: synced; its kept failure is gone"))
}
