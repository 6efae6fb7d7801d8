//! `erpsync validate PATH…`: load, compile and report every problem.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Diagnostic;
use crate::config::diagnostic::Code;
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
    /// Print each valid project as erpsync resolved it (includes, `extends`, `${VARS}` and
    /// defaults applied), secrets masked, as JSON.
    #[arg(long)]
    pub print_config: bool,
}

/// Keys whose values are secrets wherever they appear in a resolved project.
const SECRET_KEYS: &[&str] = &[
    "password",
    "token",
    "secret",
    "client_secret",
    "admin_token",
    "api_key",
    "value",
];

/// A project as it will run: every system merged with what it extends, every flow, the
/// state and daemon settings. Secret values are masked.
pub fn resolved(project: &crate::compile::Project) -> serde_json::Value {
    let systems: serde_json::Map<String, serde_json::Value> = project
        .systems
        .iter()
        .map(|(name, s)| {
            let mut v = serde_json::to_value(&s.config).unwrap_or_default();
            mask_secrets(&mut v, false);
            (name.clone(), v)
        })
        .collect();
    let flows: serde_json::Map<String, serde_json::Value> = project
        .flows
        .iter()
        .map(|f| {
            let mut v = serde_json::to_value(&f.config).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("from".into(), f.from.clone().into());
                o.insert("to".into(), f.to.clone().into());
            }
            (f.id.clone(), v)
        })
        .collect();
    let mut daemon = serde_json::to_value(&project.daemon).unwrap_or_default();
    mask_secrets(&mut daemon, false);
    serde_json::json!({
        "root": project.root.display().to_string(),
        "state": project.state_url.as_deref().map(crate::state::redact_url),
        "daemon": daemon,
        "systems": systems,
        "flows": flows,
    })
}

/// Masks the values of secret-like keys (`password`, `token`…); inside `auth`, `value` too.
fn mask_secrets(v: &mut serde_json::Value, in_auth: bool) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                let secret = SECRET_KEYS.contains(&k.as_str()) && (k != "value" || in_auth);
                if secret && val.is_string() {
                    *val = crate::redact::MASK.into();
                } else {
                    mask_secrets(val, in_auth || k == "auth");
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                mask_secrets(item, in_auth);
            }
        }
        _ => {}
    }
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
    explain_unset_variables(&mut diags);
    diags.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
    if diags.iter().any(Diagnostic::is_error) {
        (None, diags)
    } else {
        (compiled, diags)
    }
}

/// An unset `${VAR}` is one problem: the errors about the value it left behind at the same
/// place are dropped, and a set variable with a close name is suggested.
fn explain_unset_variables(diags: &mut Vec<Diagnostic>) {
    let unset: Vec<(PathBuf, String)> = diags
        .iter()
        .filter(|d| d.code == Code::Secret)
        .map(|d| (d.file.clone(), d.path.clone()))
        .collect();
    diags.retain(|d| {
        d.code == Code::Secret
            || !unset.iter().any(|(file, path)| {
                *file == d.file && (d.path == *path || d.path.starts_with(&format!("{path}.")))
            })
    });
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .collect();
    for d in diags.iter_mut().filter(|d| d.code == Code::Secret) {
        let Some(var) = d
            .message
            .strip_prefix("environment variable `")
            .and_then(|m| m.strip_suffix("` is not set"))
        else {
            continue;
        };
        d.suggestion = similar_variable(var, &names);
    }
}

/// A set variable that is likely what was meant: the same name in another case, or one a
/// typo or two away (closer than for keys: variable names share long prefixes).
fn similar_variable(var: &str, names: &[String]) -> Option<String> {
    if let Some(n) = names.iter().find(|n| n.eq_ignore_ascii_case(var)) {
        return Some(n.clone());
    }
    names
        .iter()
        .map(|n| (strsim::damerau_levenshtein(var, n), n))
        .filter(|(d, n)| *d <= (n.len().max(var.len()) / 6).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n.clone())
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
        let mut report = serde_json::json!({
            "project": name,
            "valid": project.is_some(),
            "systems": project.as_ref().map(|p| p.systems.len()).unwrap_or(0),
            "flows": project.as_ref().map(|p| p.flows.len()).unwrap_or(0),
        });
        if args.print_config
            && let Some(p) = &project
        {
            report["config"] = resolved(p);
        }
        reports.push(report);
        if args.format.get() == Format::Text
            && !args.print_config
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
    if args.print_config && args.format.get() == Format::Text {
        // The resolved projects on stdout; problems, as always, on stderr.
        let configs: Vec<&serde_json::Value> =
            reports.iter().filter_map(|r| r.get("config")).collect();
        match configs.as_slice() {
            [one] => super::output::json(one)?,
            many => super::output::json(many)?,
        }
    }
    match args.format.get() {
        Format::Json => {
            let out = serde_json::json!({
                "valid": !diags.iter().any(Diagnostic::is_error),
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
    Ok(if !diags.iter().any(Diagnostic::is_error) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_CONFIG)
    })
}
