//! `erpsync schema`: the JSON Schema of flow files (or, with `--test`, of offline test
//! files), generated from the model, so editors complete and check them while integrators
//! type. It prints to stdout unless `--output FILE` names a file; nothing is written anywhere
//! by default.

use std::path::PathBuf;
use std::process::ExitCode;

/// Where `--check` looks when given no file: the copy committed beside the shipped flows.
const COMMITTED: &str = "schemas/flow.schema.json";
/// The same for `--test`.
const COMMITTED_TEST: &str = "schemas/test.schema.json";

/// Arguments of `erpsync schema`.
#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// Write the schema to this file (`-`: stdout, the default). Point your flow files at it
    /// with `# yaml-language-server: $schema=PATH`.
    #[arg(long, short, value_name = "FILE", conflicts_with = "check")]
    pub output: Option<PathBuf>,
    /// Exit 1 when this file (default `schemas/flow.schema.json`, with `--test`
    /// `schemas/test.schema.json`) differs from the model.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = COMMITTED)]
    pub check: Option<PathBuf>,
    /// The schema of offline test files (`*.test.yaml`) instead of flow files.
    #[arg(long)]
    pub test: bool,
}

pub fn run(args: SchemaArgs) -> anyhow::Result<ExitCode> {
    let (text, committed, model) = if args.test {
        (
            erpsync::authoring::testfile::schema_text(),
            COMMITTED_TEST,
            "test-file model",
        )
    } else {
        (
            erpsync::config::schema_nav::flow_schema_text(),
            COMMITTED,
            "flow model",
        )
    };
    let check = args.check.as_ref().map(|f| {
        // `--check` alone names the flow schema's copy; with `--test`, the test schema's.
        if f.as_os_str() == COMMITTED {
            PathBuf::from(committed)
        } else {
            f.clone()
        }
    });
    if let Some(file) = &check {
        let current = std::fs::read_to_string(file).unwrap_or_default();
        if current == text {
            crate::outln!("{} is up to date", file.display());
            return Ok(ExitCode::SUCCESS);
        }
        crate::errln!(
            "{} is out of date with the {model}: run `erpsync schema{} --output {}`",
            file.display(),
            if args.test { " --test" } else { "" },
            file.display()
        );
        return Ok(ExitCode::from(super::EXIT_FAILED));
    }
    match &args.output {
        Some(file) if file.as_os_str() != "-" => {
            if let Some(dir) = file.parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(file, text)?;
            crate::errln!("wrote {}", file.display());
        }
        _ => crate::out!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
