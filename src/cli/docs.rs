//! `erpsync completions SHELL` and `erpsync man`: shell completions and the man page, both
//! generated from the command definitions, so they never drift from `--help`.

use std::process::ExitCode;

/// Arguments of `erpsync completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell, e.g. `bash` (`erpsync completions bash > /etc/bash_completion.d/erpsync`).
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Arguments of `erpsync man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {}

/// `cmd`: the command definitions of `erpsync`.
pub fn completions(args: CompletionsArgs, mut cmd: clap::Command) -> anyhow::Result<ExitCode> {
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "erpsync", &mut buf);
    crate::out!("{}", String::from_utf8_lossy(&buf));
    Ok(ExitCode::SUCCESS)
}

/// The page documents `erpsync` and, one section each, its commands.
pub fn man(_args: ManArgs, cmd: clap::Command) -> anyhow::Result<ExitCode> {
    let mut buf = Vec::new();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    man.render_options_section(&mut buf)?;
    buf.extend_from_slice(b".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        render_command(&mut buf, &format!("erpsync {}", sub.get_name()), sub);
    }
    buf.extend_from_slice(EXIT_STATUS.as_bytes());
    man.render_version_section(&mut buf)?;
    crate::out!("{}", String::from_utf8_lossy(&buf));
    Ok(ExitCode::SUCCESS)
}

const EXIT_STATUS: &str = ".SH \"EXIT STATUS\"\n.TP\n0\nok\n.TP\n1\na run failed or has \
failed records\n.TP\n2\nusage: unknown flow, missing state, arguments that do not go together\n\
.TP\n78\ninvalid flow files\n.SH ENVIRONMENT\n.TP\nERPSYNC_STATE\nthe state database, as \
\\fB\\-\\-state\\fR\n.TP\nERPSYNC_LOG\nwhich log lines are shown, e.g. \\fBconnector=debug\\fR\n\
.TP\nERPSYNC_ADMIN_TOKEN\nthe daemon's admin API token\n.TP\nERPSYNC_INDEX_MEMORY\nMiB of a \
target index kept in memory, as \\fB\\-\\-index\\-memory\\fR\n.TP\nNO_COLOR\nno colours in logs\n";

/// One command (and its own subcommands) as a man page section: usage, about, options.
fn render_command(buf: &mut Vec<u8>, name: &str, cmd: &clap::Command) {
    let mut usage = cmd.clone().bin_name(name.to_string());
    let usage = usage.render_usage().to_string();
    let usage = usage.trim_start_matches("Usage: ");
    buf.extend_from_slice(format!(".SS \"{name}\"\n\\fB{}\\fR\n.br\n", roff(usage)).as_bytes());
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        buf.extend_from_slice(format!("{}\n", roff(&about.to_string())).as_bytes());
    }
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        let mut flag = String::new();
        if let Some(s) = arg.get_short() {
            flag.push_str(&format!("-{s}"));
        }
        if let Some(l) = arg.get_long() {
            if !flag.is_empty() {
                flag.push_str(", ");
            }
            flag.push_str(&format!("--{l}"));
        }
        if flag.is_empty() {
            flag = arg
                .get_value_names()
                .and_then(|v| v.first())
                .map(|v| v.to_string())
                .unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
        }
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        buf.extend_from_slice(
            format!(".TP\n\\fB{}\\fR\n{}\n", roff(&flag), roff(&help)).as_bytes(),
        );
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        render_command(buf, &format!("{name} {}", sub.get_name()), sub);
    }
}

/// Text escaped for roff: backslashes, and dashes and dots that would read as commands.
fn roff(text: &str) -> String {
    let text = text.replace('\\', "\\\\").replace('-', "\\-");
    text.lines()
        .map(|l| {
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
