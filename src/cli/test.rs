//! `erpsync test PATHS`: runs the offline tests (`*.test.yaml`) of each project below the
//! paths, with every system answered from the test's recorded or hand-written exchanges: no
//! network. Exit 0 when every test passes, 1 when one fails, 78 when a project or a test file
//! is invalid.

use std::path::PathBuf;
use std::process::ExitCode;

use super::output::FormatArgs;
use erpsync::authoring::{TestRunError, run_test, testfile};

/// Arguments of `erpsync test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Project folders (or flow files) whose `*.test.yaml` files to run; a folder of
    /// projects runs each project's tests.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Only the tests whose file name contains this text.
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
    #[command(flatten)]
    pub format: FormatArgs,
}

pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new()?;
    let json = args.format.is_json();
    let mut results = Vec::new();
    let (mut passed, mut failed, mut invalid) = (0usize, 0usize, 0usize);
    for project in erpsync::config::load::projects(&args.paths) {
        // Tests live in the project's folders; flow files given alone have none beside them
        // unless their folder holds some.
        let dirs: Vec<PathBuf> = project
            .iter()
            .map(|p| {
                if p.is_dir() {
                    p.clone()
                } else {
                    p.parent().map(PathBuf::from).unwrap_or_default()
                }
            })
            .collect();
        for file in testfile::find(&dirs) {
            let name = file.display().to_string();
            if args.filter.as_deref().is_some_and(|f| !name.contains(f)) {
                continue;
            }
            let cfg = match testfile::load(&file) {
                Ok(c) => c,
                Err(e) => {
                    invalid += 1;
                    crate::errln!("{e}");
                    results.push(serde_json::json!({"file": name, "result": "invalid", "problems": [e.to_string()]}));
                    continue;
                }
            };
            match rt.block_on(run_test(&project, &file, &cfg)) {
                Ok(outcome) => {
                    let problems: Vec<String> = outcome
                        .problems
                        .iter()
                        .map(|p| erpsync::redact::redact(p).into_owned())
                        .collect();
                    if outcome.passed() {
                        passed += 1;
                    } else {
                        failed += 1;
                    }
                    if !json {
                        let what = outcome
                            .description
                            .as_deref()
                            .map(|d| format!(" — {d}"))
                            .unwrap_or_default();
                        // On a terminal narrower than a line, it breaks to fit.
                        let shown = super::output::shown;
                        if outcome.passed() {
                            let runs: Vec<String> = outcome
                                .reports
                                .iter()
                                .map(|r| {
                                    let c = &r.counts;
                                    format!(
                                        "{}: read {}, created {}, updated {}, adopted {}, failed {}",
                                        r.flow, c.read, c.created, c.updated, c.adopted, c.failed
                                    )
                                })
                                .collect();
                            crate::outln!("{}", shown(&format!("ok    {name}{what}"), 6, 6));
                            for r in runs {
                                crate::outln!("{}", shown(&format!("        {r}"), 8, 10));
                            }
                        } else {
                            crate::outln!("{}", shown(&format!("FAIL  {name}{what}"), 6, 6));
                            for p in &problems {
                                crate::outln!("{}", shown(&format!("        {p}"), 8, 10));
                            }
                        }
                    }
                    results.push(serde_json::json!({
                        "file": name,
                        "result": if outcome.passed() { "pass" } else { "fail" },
                        "problems": problems,
                        "runs": outcome.reports,
                    }));
                }
                Err(TestRunError::InvalidProject { file, diagnostics }) => {
                    invalid += 1;
                    crate::errln!("{file}: the project is not valid with this test's `env`:");
                    crate::errout!("{}", super::validate::render_text(&diagnostics));
                    results.push(serde_json::json!({"file": name, "result": "invalid", "diagnostics": diagnostics}));
                }
                Err(e) => {
                    invalid += 1;
                    let text = erpsync::redact::redact(&e.to_string()).into_owned();
                    crate::errln!("{text}");
                    results.push(
                        serde_json::json!({"file": name, "result": "invalid", "problems": [text]}),
                    );
                }
            }
        }
    }
    let total = passed + failed + invalid;
    if json {
        super::output::json(&serde_json::json!({
            "ok": failed == 0 && invalid == 0 && total > 0,
            "passed": passed,
            "failed": failed,
            "invalid": invalid,
            "tests": results,
        }))?;
    } else {
        let mut line = format!("{passed} passed, {failed} failed");
        if invalid > 0 {
            line.push_str(&format!(", {invalid} invalid"));
        }
        crate::outln!("{line}");
    }
    if total == 0 {
        return Err(super::common::usage(format!(
            "no test files (`*.test.yaml`) below {}",
            args.paths
                .iter()
                .map(|p| format!("`{}`", p.display()))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(if invalid > 0 {
        ExitCode::from(super::EXIT_CONFIG)
    } else if failed > 0 {
        ExitCode::from(super::EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}
