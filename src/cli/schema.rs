//! `erpsync schema [--check]`: the JSON Schema of flow files, generated from the model, so
//! editors complete and check flow files while integrators type.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `erpsync schema`.
#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// Exit 1 when the file differs from the model instead of writing it.
    #[arg(long)]
    pub check: bool,
    /// Where the schema is.
    #[arg(long, default_value = "schemas/flow.schema.json")]
    pub output: PathBuf,
}

/// The schema text, as committed.
pub fn schema_text() -> String {
    let mut text =
        serde_json::to_string_pretty(crate::config::schema_nav::flow_schema()).unwrap_or_default();
    text.push('\n');
    text
}

pub fn run(args: SchemaArgs) -> anyhow::Result<ExitCode> {
    let text = schema_text();
    if args.check {
        let current = std::fs::read_to_string(&args.output).unwrap_or_default();
        if current == text {
            println!("{} is up to date", args.output.display());
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!(
            "{} is out of date with the flow model: run `erpsync schema` and commit it",
            args.output.display()
        );
        return Ok(ExitCode::from(super::EXIT_FAILED));
    }
    if let Some(dir) = args.output.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.output, text)?;
    println!("wrote {}", args.output.display());
    Ok(ExitCode::SUCCESS)
}
