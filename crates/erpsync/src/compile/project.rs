//! Loading a project as every command and the daemon's reload do: read the flow files, compile
//! them, and gather every problem, an unset `${VAR}` explained once.

use std::path::PathBuf;

use crate::config::Diagnostic;
use crate::config::diagnostic::Code;
use crate::config::env::ProcessEnv;

/// Loads and compiles a project, returning every problem found.
pub fn check(paths: &[PathBuf]) -> (Option<super::Project>, Vec<Diagnostic>) {
    check_with_env(paths, &ProcessEnv)
}

/// `check`, with `${VAR}` values from `env`.
pub fn check_with_env(
    paths: &[PathBuf],
    env: &dyn crate::config::env::EnvSource,
) -> (Option<super::Project>, Vec<Diagnostic>) {
    let (project, mut diags) = crate::config::load(paths, env);
    let (compiled, more) = super::compile(&project);
    diags.extend(more);
    explain_unset_variables(&mut diags);
    explain_failed_includes(&mut diags);
    diags.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
    if diags.iter().any(Diagnostic::is_error) {
        (None, diags)
    } else {
        (compiled, diags)
    }
}

/// An include that cannot be read is one problem: what it would declare (systems, entities,
/// operations) is unknown until it loads, so every "unknown name" after it may be its echo
/// (the shipped demo copied without `../common` gave 24 of them, `unknown system \`erp\`` for
/// an `erp` the file declares among them). Those are left out, and the include's problem
/// says how many; the include's own error keeps the project refused.
fn explain_failed_includes(diags: &mut Vec<Diagnostic>) {
    let failed_include = |d: &Diagnostic| d.code == Code::Io && d.path.starts_with("include.");
    if !diags.iter().any(failed_include) {
        return;
    }
    let before = diags.len();
    diags.retain(|d| d.code != Code::UnknownName);
    let left_out = before - diags.len();
    if left_out == 0 {
        return;
    }
    for d in diags.iter_mut().filter(|d| failed_include(d)) {
        let count = if left_out == 1 {
            "1 problem of unknown names is".to_string()
        } else {
            format!("{left_out} problems of unknown names are")
        };
        d.help = Some(format!(
            "{count} not shown: they may be names this include declares, and are checked \
             once it loads"
        ));
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
