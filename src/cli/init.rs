//! `erpsync init DIR --shop … --erp …`: a new project from a template — the shipped flows of
//! a shop platform and an ERP (or a blank ERP with example operations), the canonical
//! entities, the schemas the files point at, an `.env.example` of every variable, state and
//! daemon sections, and an offline test that `erpsync test` runs at once.

use std::path::PathBuf;
use std::process::ExitCode;

use super::common::usage;
use erpsync::authoring::templates::{Erp, Shop, compose};

/// Arguments of `erpsync init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The folder to create (it may exist, empty).
    pub dir: PathBuf,
    /// The shop platform.
    #[arg(long, value_enum)]
    pub shop: Shop,
    /// The ERP: a shipped one, or `blank` for one of your own.
    #[arg(long, value_enum)]
    pub erp: Erp,
}

pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    if args.dir.exists()
        && std::fs::read_dir(&args.dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(usage(format!(
            "`{}` exists and is not empty: name a new folder",
            args.dir.display()
        )));
    }
    let files = compose(args.shop, args.erp)?;
    for (path, text) in &files {
        let full = args.dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&full, text)?;
    }
    let dir = args.dir.display();
    crate::outln!("created {dir}:");
    for path in files.keys() {
        crate::outln!("  {}", path.display());
    }
    crate::outln!(
        "next: cd {dir}; cp .env.example .env and fill it in; erpsync validate .; erpsync test ."
    );
    Ok(ExitCode::SUCCESS)
}
