//! `erpsync validate PATH…`: load, compile and report every problem.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Diagnostic;
use crate::config::env::ProcessEnv;

/// Output formats of diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people: `file:line:col: error[CODE]: message` with help lines.
    #[default]
    Text,
    /// For tools: a JSON object with a `diagnostics` list.
    Json,
}

/// Arguments of `erpsync validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Flow files or folders of flow files.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
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
    if diags.iter().any(Diagnostic::is_error) {
        (None, diags)
    } else {
        (compiled, diags)
    }
}

/// Renders diagnostics as text, secrets masked.
pub fn render_text(diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&crate::redact::redact(&d.to_string()));
        out.push_str("\n\n");
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    if errors > 0 || warnings == 0 {
        out.push_str(&format!("{errors} problem{} found", plural(errors)));
        if warnings > 0 {
            out.push_str(&format!(", and {warnings} warning{}", plural(warnings)));
        }
    } else {
        out.push_str(&format!("{warnings} warning{}", plural(warnings)));
    }
    out.push('\n');
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
            "valid": project.is_some(),
            "systems": project.as_ref().map(|p| p.systems.len()).unwrap_or(0),
            "flows": project.as_ref().map(|p| p.flows.len()).unwrap_or(0),
        }));
        if args.format == Format::Text
            && let Some(p) = &project
        {
            println!(
                "{name}: ok ({} systems, {} entities, {} flows)",
                p.systems.len(),
                p.entities.len(),
                p.flows.len(),
            );
        }
        all.extend(diags);
    }
    let diags = all;
    match args.format {
        Format::Json => {
            let out = serde_json::json!({
                "valid": !diags.iter().any(Diagnostic::is_error),
                "projects": reports,
                "diagnostics": diags,
            });
            println!(
                "{}",
                crate::redact::redact(&serde_json::to_string_pretty(&out)?)
            );
        }
        Format::Text => {
            if !diags.is_empty() {
                eprint!("{}", render_text(&diags));
            }
        }
    }
    Ok(if !diags.iter().any(Diagnostic::is_error) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_CONFIG)
    })
}
