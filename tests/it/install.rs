//! erpsync as a user gets it: installed by `cargo install --path . --root DIR`, run from a
//! folder that is not the repository, on a terminal (a pseudo-terminal through `script`) and
//! through a pipe; and every example command of the README, run as written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use erpsync_sim::{ErpHandle, ErpOptions, ErpSim, ShopHandle, ShopOptions, ShopSim, seed_both};

/// The binary as `cargo install` puts it. Installing reuses the build `cargo test` already
/// made (`--debug`, the same target folder), so it copies rather than compiles again.
fn installed() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("installed");
        // A fresh root, as on a new machine: an earlier install of another package with the
        // same binary (before the workspace, the package was `erpsync`) would be refused.
        let _ = std::fs::remove_dir_all(&root);
        let target = Path::new(env!("CARGO_BIN_EXE_erpsync"))
            .ancestors()
            .nth(2)
            .unwrap()
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let started = Instant::now();
        let mut install = Command::new(cargo);
        // What `cargo test` sets for the test process (`OUT_DIR`, `CARGO_PKG_*`…) is not a
        // user's environment: left in, build scripts that watch it (ring's) see a change and
        // everything above them compiles again.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            let set_by_cargo = (k.starts_with("CARGO_") && k != "CARGO_HOME")
                || k == "OUT_DIR"
                || k == "LD_LIBRARY_PATH";
            if set_by_cargo {
                install.env_remove(k);
            }
        }
        let out = install
            .args(["install", "--debug", "--offline", "--locked", "--path"])
            .arg(env!("CARGO_MANIFEST_DIR"))
            .arg("--root")
            .arg(&root)
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cargo install failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("cargo install took {:.1?}", started.elapsed());
        root.join("bin/erpsync")
    })
}

/// The simulators, seeded as `erpsync demo` seeds them, with the variables the shipped demo
/// flows read.
struct Sims {
    shop: ShopHandle,
    erp: ErpHandle,
}

impl Sims {
    async fn start() -> Self {
        let shop = ShopSim::start(ShopOptions::unlimited()).await.unwrap();
        let erp = ErpSim::start(ErpOptions::unlimited()).await.unwrap();
        seed_both(&shop, &erp, 30, 5);
        shop.seed_orders(6, 5);
        erp.seed_suppliers(4, 5);
        Sims { shop, erp }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let (key, secret) = self.shop.credentials();
        let (id, client_secret) = self.erp.credentials();
        vec![
            ("SHOP_URL", self.shop.base_url()),
            ("ERP_URL", self.erp.base_url()),
            ("SHOP_API_KEY", key),
            ("SHOP_API_SECRET", secret),
            ("ERP_CLIENT_ID", id),
            ("ERP_CLIENT_SECRET", client_secret),
            ("SHOP_REQUESTS_PER_SECOND", "1000".into()),
            ("ERP_REQUESTS_PER_SECOND", "1000".into()),
        ]
    }
}

/// How a command is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Through {
    /// Stdout and stderr on a pseudo-terminal, as people type commands.
    Terminal,
    /// Stdout and stderr into pipes, as scripts and CI run them.
    Pipe,
}

/// Runs `bin ARGS` in `dir`; the output is stdout then stderr (merged on a terminal).
fn run_in(
    bin: &Path,
    dir: &Path,
    args: &[&str],
    env: &[(&str, String)],
    how: Through,
) -> (Option<i32>, String) {
    let mut cmd = match how {
        Through::Pipe => {
            let mut c = Command::new(bin);
            c.args(args);
            c
        }
        Through::Terminal => {
            let line = std::iter::once(bin.display().to_string())
                .chain(args.iter().map(|a| shell_quote(a)))
                .collect::<Vec<_>>()
                .join(" ");
            crate::support::terminal::command(&line)
        }
    };
    let out: Output = cmd
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env_remove("ERPSYNC_STATE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = crate::support::stdout_and_stderr(&out);
    let code = match how {
        Through::Pipe => out.status.code(),
        Through::Terminal => crate::support::terminal::exit_status(&text),
    };
    (code, text)
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_installed_binary_works_from_any_folder_on_a_terminal_and_through_a_pipe() {
    let started = Instant::now();
    let bin = installed();
    let dir = tempfile::tempdir().unwrap();
    let sims = Sims::start().await;
    let env = sims.env();
    let (code, text) = run_in(
        bin,
        dir.path(),
        &["demo", "--write-flows", "flows"],
        &[],
        Through::Pipe,
    );
    assert_eq!(code, Some(0), "{text}");

    // (arguments, exit code, what the output says)
    let commands: &[(&[&str], i32, &str)] = &[
        (
            &[
                "demo",
                "--no-rate-limit",
                "--products",
                "40",
                "--orders",
                "8",
            ],
            0,
            "0 disagreements, 0 failed records",
        ),
        (&["validate", "flows/demo"], 0, "flows/demo: ok"),
        (
            &["validate", "--format", "json", "flows/demo"],
            0,
            "\"valid\": true",
        ),
        (&["schema", "--output", "-"], 0, "\"$schema\""),
        (
            &["dry-run", "flows/demo"],
            0,
            "dry run: nothing was written",
        ),
        // The plan as JSON, written in chunks of whole records: the document reaches its end.
        (
            &["dry-run", "flows/demo", "--format", "json"],
            0,
            "\"ok\": true",
        ),
        (&["run", "--once", "flows/demo"], 0, "suppliers"),
        (
            &["run", "--once", "flows/demo", "--format", "json"],
            0,
            "\"run_id\"",
        ),
        // The runs above, found where they kept their state (a project named by a relative
        // path once kept it in `flows/demo/flows/demo/`, and `status` showed none).
        (&["status", "flows/demo"], 0, "read "),
        (&["failures", "list", "flows/demo"], 0, "no failures"),
        (
            &["failures", "pending", "flows/demo"],
            0,
            "no pending writes",
        ),
        (&["completions", "bash"], 0, "complete"),
        (&["man"], 0, ".TH erpsync"),
        (
            &["run", "--once", "flows/demo", "--flow", "nope"],
            2,
            "unknown flow `nope`",
        ),
    ];
    for how in [Through::Terminal, Through::Pipe] {
        for (args, code, says) in commands {
            let t = Instant::now();
            let (got, text) = run_in(bin, dir.path(), args, &env, how);
            assert_eq!(got, Some(*code), "{how:?} {args:?}:\n{text}");
            assert!(
                text.contains(says),
                "{how:?} {args:?}: no `{says}` in:\n{text}"
            );
            assert!(!text.contains("panicked"), "{how:?} {args:?}:\n{text}");
            eprintln!("{how:?} {args:?}: {:.1?}", t.elapsed());
        }
    }
    // A run shows its progress on a terminal, and not into a pipe.
    let args = ["dry-run", "flows/demo"];
    let (_, text) = run_in(bin, dir.path(), &args, &env, Through::Terminal);
    assert!(text.contains(" written, "), "no progress line in:\n{text}");
    let (_, text) = run_in(bin, dir.path(), &args, &env, Through::Pipe);
    assert!(!text.contains(" written, "), "{text}");
    // Logs are coloured on a terminal, unless NO_COLOR says otherwise.
    let args = ["run", "--once", "flows/demo", "-v"];
    let (_, text) = run_in(bin, dir.path(), &args, &env, Through::Terminal);
    assert!(text.contains("\x1b[32m"), "{text}");
    let mut no_color = env.clone();
    no_color.push(("NO_COLOR", "1".into()));
    let (_, text) = run_in(bin, dir.path(), &args, &no_color, Through::Terminal);
    assert!(text.contains(" INFO engine: run finished"), "{text}");
    assert!(!text.contains("\x1b[32m"), "{text}");
    // The written project keeps to its folder: the state beside its flow file (not in a
    // `target/` of the folder it was written from), and each file's schema comment names a
    // schema written with it, for editors.
    assert!(dir.path().join("flows/demo/erpsync.sqlite").is_file());
    assert!(!dir.path().join("target").exists());
    for file in ["flows/demo/demo.yaml", "flows/common/entities.yaml"] {
        let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
        let schema = text
            .lines()
            .find_map(|l| l.strip_prefix("# yaml-language-server: $schema="))
            .unwrap_or_else(|| panic!("{file}: no schema comment"));
        let at = dir.path().join(file).parent().unwrap().join(schema);
        assert!(at.is_file(), "{file}: its schema `{schema}` is not there");
    }
    eprintln!("whole test: {:.1?}", started.elapsed());
}

/// Commands of the README that this test does not run, each with where it is tested.
const NOT_RUN: &[(&str, &str)] = &[
    (
        "cargo install",
        "the installed-binary test above runs `cargo install`",
    ),
    (
        "cargo run -- demo",
        "`erpsync demo` is run (the same command)",
    ),
    ("cargo test", "this is the test suite"),
    (
        "ERPSYNC_OFFLINE=1",
        "this is the test suite, without PostgreSQL, Tryton and the browser",
    ),
    ("cargo bench", "benchmarks, run by hand"),
    (
        "docker ",
        "needs a container engine: .ci/image runs the Dockerfile's steps",
    ),
    (
        "erpsync sim",
        "serves until interrupted: cli::sim_prints_the_settings_the_shipped_flows_take",
    ),
    (
        "erpsync failures settle",
        "needs a write in doubt: settle::writes_of_unknown_outcome_are_settled_by_hand",
    ),
];

/// The shell commands of the README's `sh` blocks, continuation lines joined and comments
/// dropped.
fn readme_commands() -> Vec<String> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let code = match line.find(" #") {
            Some(i) if !line[..i].contains('\'') => &line[..i],
            _ => line,
        };
        let code = code.trim();
        if code.is_empty() || code.starts_with('#') {
            continue;
        }
        match code.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(code);
                out.push(std::mem::take(&mut pending));
            }
        }
    }
    out
}

/// Whether a command is the daemon (`erpsync run` without `--once`): the daemon tests run it.
fn is_daemon(command: &str) -> bool {
    command.split_whitespace().any(|w| w == "run")
        && command.contains("erpsync run")
        && !command.contains("--once")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_command_runs_as_written() {
    let bin = installed();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo.join("flows"), &dir.path().join("flows"));
    let sims = Sims::start().await;
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let commands = readme_commands();
    assert!(commands.len() > 20, "{commands:#?}");
    let mut ran = 0;
    for command in &commands {
        if let Some((_, why)) = NOT_RUN.iter().find(|(p, _)| command.starts_with(p)) {
            eprintln!("not run: {command} ({why})");
            continue;
        }
        if is_daemon(command) {
            eprintln!("not run: {command} (the daemon: tests/it/daemon.rs)");
            continue;
        }
        let first = command.split_whitespace().next().unwrap();
        assert!(
            ["erpsync", "mkdir"].contains(&first),
            "a README command this test does not know: `{command}`; run it here or name it in NOT_RUN"
        );
        // The demo as written takes ~50 s under the simulators' real rate limits.
        let command = if command.starts_with("erpsync demo") {
            format!("{command} --no-rate-limit")
        } else {
            command.clone()
        };
        let out = Command::new("bash")
            .args(["-c", &format!("set -o pipefail; {command}")])
            .current_dir(dir.path())
            .env("PATH", &path)
            .env("HOME", dir.path())
            .envs(sims.env())
            .env_remove("ERPSYNC_STATE")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "`{command}` exited {:?}:\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ran += 1;
    }
    assert!(ran >= 15, "only {ran} commands ran");
    // What the commands were to leave behind.
    let home = dir.path();
    assert!(
        home.join(".local/share/bash-completion/completions/erpsync")
            .exists()
    );
    assert!(home.join(".local/share/man/man1/erpsync.1").exists());
    assert_eq!(
        std::fs::read_to_string(home.join("schemas/flow.schema.json")).unwrap(),
        erpsync::config::schema_nav::flow_schema_text()
    );
}

#[test]
fn the_readme_lists_every_variable_of_every_shipped_project() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(repo.join("README.md")).unwrap();
    for entry in std::fs::read_dir(repo.join("flows")).unwrap() {
        let folder = entry.unwrap().path();
        let name = folder.file_name().unwrap().to_str().unwrap().to_string();
        // The variables table follows the table of what each project does.
        let row = readme
            .lines()
            .filter(|l| l.starts_with(&format!("| `flows/{name}` | ")))
            .nth(1)
            .unwrap_or_else(|| panic!("no variables row for flows/{name} in README.md"));
        // The flow files; the offline tests in `tests/` read no variable.
        for file in std::fs::read_dir(&folder).unwrap() {
            let file = file.unwrap().path();
            if file.is_dir() {
                continue;
            }
            let text = std::fs::read_to_string(file).unwrap();
            for var in text.split("${").skip(1) {
                let var: String = var
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || *c == '_' || c.is_ascii_digit())
                    .collect();
                if var.is_empty() {
                    continue;
                }
                assert!(
                    row.contains(&format!("`{var}`")),
                    "`{var}` of flows/{name} is not in its README row:\n{row}"
                );
            }
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}
