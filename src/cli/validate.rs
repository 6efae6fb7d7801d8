//! `erpsync validate PATH…`: load, compile and report every problem.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Diagnostic;
use crate::config::env::ProcessEnv;

pub use super::output::Format;
use super::output::FormatArgs;

/// Arguments of `erpsync validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Flow files or folders of flow files.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub format: FormatArgs,
}

/// Loads and compiles a project, returning every problem found.
pub fn check(paths: &[PathBuf]) -> (Option<crate::compile::Project>, Vec<Diagnostic>) {
    check_with_env(paths, &ProcessEnv)
}

/// `check`, with `${VAR}` values from `env`.
pub fn check_with_env(
    paths: &[PathBuf],
    env: &dyn crate::config::env::EnvSource,
) -> (Option<crate::compile::Project>, Vec<Diagnostic>) {
    let (project, mut diags) = crate::config::load(paths, env);
    let (compiled, more) = crate::compile::compile(&project);
    diags.extend(more);
    diags.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
    if diags.is_empty() {
        (compiled, diags)
    } else {
        (None, diags)
    }
}

/// Renders diagnostics as text, secrets masked.
pub fn render_text(diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&crate::redact::redact(&d.to_string()));
        out.push_str("\n\n");
    }
    out.push_str(&format!(
        "{} problem{} found\n",
        diags.len(),
        if diags.len() == 1 { "" } else { "s" }
    ));
    out
}

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let mut all = Vec::new();
    let mut reports = Vec::new();
    for paths in crate::config::load::projects(&args.paths) {
        let (project, diags) = check(&paths);
        let name = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" ");
        reports.push(serde_json::json!({
            "project": name,
            "valid": diags.is_empty(),
            "systems": project.as_ref().map(|p| p.systems.len()).unwrap_or(0),
            "flows": project.as_ref().map(|p| p.flows.len()).unwrap_or(0),
        }));
        if args.format.get() == Format::Text
            && let Some(p) = &project
        {
            crate::outln!(
                "{name}: ok ({} systems, {} entities, {} flows)",
                p.systems.len(),
                p.entities.len(),
                p.flows.len(),
            );
        }
        all.extend(diags);
    }
    let diags = all;
    match args.format.get() {
        Format::Json => {
            let out = serde_json::json!({
                "valid": diags.is_empty(),
                "projects": reports,
                "diagnostics": diags,
            });
            super::output::json(&out)?;
        }
        Format::Text => {
            if !diags.is_empty() {
                crate::errout!("{}", render_text(&diags));
            }
        }
    }
    Ok(if diags.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_CONFIG)
    })
}
