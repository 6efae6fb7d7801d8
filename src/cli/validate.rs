//! `erpsync validate PATH…`: load, compile and report every problem.

use std::path::PathBuf;
use std::process::ExitCode;

pub use erpsync::compile::project::check;
use erpsync::config::Diagnostic;
pub use erpsync::config::diagnostic::render_text;

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
pub fn resolved(project: &erpsync::compile::Project) -> serde_json::Value {
    let systems: serde_json::Map<String, serde_json::Value> = project
        .systems
        .iter()
        .map(|(name, s)| {
            let mut v = s.effective_config();
            mask_secrets(&mut v, false);
            (name.clone(), v)
        })
        .collect();
    let flows: serde_json::Map<String, serde_json::Value> = project
        .flows
        .iter()
        .map(|f| {
            let mut v = f.declared().to_json();
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
        "state": project.state_url.as_deref().map(erpsync::state::redact_url),
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
                    *val = erpsync::redact::MASK.into();
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

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let mut all = Vec::new();
    let mut reports = Vec::new();
    for paths in erpsync::config::load::projects(&args.paths) {
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
