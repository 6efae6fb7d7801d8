//! The commands as a user runs them: the demo, run/dry-run output and exit codes, the
//! failure store (list, show, retry, discard) after a record fails and the cause is fixed,
//! and `status` naming the node that runs a flow.

use std::process::Command;

use erpsync::state::SqliteStore;
use erpsync_sim::erp::ErpProduct;
use erpsync_sim::shop::{Order, Product};
use erpsync_sim::{ErpOptions, ErpSim, ShopOptions, ShopSim, seed_both};

use crate::support::project::{sim_env, write_demo_project};

fn erpsync() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_erpsync"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// A tiny catalogue and other seeds (a newcomer's first tries) end in agreement too: the
/// goods received and the orders placed fit what the catalogue holds, and an order seeded as
/// already shipped is history, not an export the flow missed.
#[test]
fn the_demo_agrees_with_a_tiny_catalogue_and_any_seed() {
    for (products, seed) in [("1", "1"), ("5", "4"), ("3", "9"), ("40", "3")] {
        let out = erpsync()
            .args([
                "demo",
                "--no-rate-limit",
                "--products",
                products,
                "--seed",
                seed,
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("0 disagreements, 0 failed records"),
            "--products {products} --seed {seed}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_demo_ends_with_both_sides_in_agreement() {
    let out = erpsync()
        .args([
            "demo",
            "--no-rate-limit",
            "--products",
            "40",
            "--orders",
            "10",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for phase in [
        "first sync",
        "incremental sync",
        "reconciliation",
        "quiet run",
    ] {
        assert!(stdout.contains(phase), "no `{phase}` in:\n{stdout}");
    }
    assert!(
        stdout.contains("0 disagreements, 0 failed records"),
        "{stdout}"
    );
    // Every flow's report adds up: each record read is counted once, under one decision.
    for line in stdout.lines().filter(|l| l.contains(" read ")) {
        let main = line.split("; required").next().unwrap();
        let decided: u64 = main
            .split(", ")
            .skip(1)
            .filter(|p| !p.starts_with("corrected") && !p.starts_with("overwrites"))
            .filter(|p| !p.starts_with("in-doubt"))
            .map(|p| p.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
            .sum();
        let read: u64 = main
            .split(", ")
            .next()
            .unwrap()
            .rsplit_once(' ')
            .unwrap()
            .1
            .parse()
            .unwrap();
        assert_eq!(read, decided, "does not add up: {line}");
        assert!(!line.contains(", locked"), "locked records say so: {line}");
    }
    // Customers created on demand for the orders are reported with them.
    let orders = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("orders_to_erp"))
        .unwrap();
    assert!(
        orders.contains("required first through `customers_to_erp`: created"),
        "{orders}"
    );
    // The quiet run wrote nothing.
    let quiet = stdout.split("quiet run").nth(1).unwrap();
    let quiet = quiet.split("== final check").next().unwrap();
    for line in quiet.lines().filter(|l| l.contains("read")) {
        assert!(line.contains("created 0, updated 0"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_can_be_listed_shown_retried_and_discarded() {
    let shop = ShopSim::start(ShopOptions::unlimited()).await.unwrap();
    let erp = ErpSim::start(ErpOptions::unlimited()).await.unwrap();
    seed_both(&shop, &erp, 5, 2);
    shop.create_product(Product::basic("GHOST-9", "Lipsa din ERP", 12.0, 1))
        .unwrap();
    let mut bad = Order::new("x@example.com", &[("GHOST-9", 1, 12.0)]);
    bad.shipping_status = "confirmed".into();
    let bad = shop.create_order(bad).unwrap();
    let mut bad2 = Order::new("y@example.com", &[("GHOST-8", 1, 12.0)]);
    bad2.shipping_status = "confirmed".into();
    let _ = shop.create_product(Product::basic("GHOST-8", "Tot lipsa", 12.0, 1));
    let bad2 = shop.create_order(bad2).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let project = write_demo_project(dir.path());
    let state = format!("sqlite:{}", dir.path().join("state.sqlite").display());
    let mut envs = sim_env(&shop, &erp);
    envs.push(("ERPSYNC_STATE", state));
    let run = |args: &[&str]| {
        let out = erpsync()
            .args(args)
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // The dry run shows the two exports to come, field by field, and writes nothing (the
    // ERP's refusal can only show when it is asked).
    let (code, stdout, _) = run(&[
        "dry-run",
        &project,
        "--flow",
        "orders_to_erp",
        "--init-state",
    ]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("created 2"), "{stdout}");
    assert!(
        stdout.contains(&format!("create    {} → erp", bad.number)),
        "{stdout}"
    );
    assert!(stdout.contains("status: null → \"confirmed\""), "{stdout}");
    assert!(stdout.contains("dry run: nothing was written"));
    assert_eq!(erp.counters().writes(), 0);
    // On a terminal of 80 columns, a change too long for a row (an order's customer as
    // JSON) breaks after a comma, the rest indented under the field's name.
    let line = format!(
        "{} dry-run {project} --flow orders_to_erp --init-state",
        env!("CARGO_BIN_EXE_erpsync")
    );
    let (screen, rows) = crate::support::terminal::rows_at_width(80, &line, |c| {
        c.envs(envs.iter().map(|(k, v)| (*k, v.as_str())));
    });
    let customer = rows
        .iter()
        .position(|r| r.starts_with("      customer: null → {"))
        .unwrap_or_else(|| panic!("{screen}"));
    assert!(
        rows[customer].ends_with(',') && rows[customer + 1] == "        \"phone\":\"\"}",
        "{screen}"
    );

    let (code, stdout, _) = run(&[
        "run",
        "--once",
        &project,
        "--flow",
        "orders_to_erp",
        "--init-state",
    ]);
    assert_eq!(code, 1, "failed records make the run exit 1: {stdout}");
    assert!(stdout.contains("failed 2"), "{stdout}");

    // For people: a header, each failure with its time (and offset) and its error below.
    let (code, stdout, _) = run(&["failures", "list", &project]);
    assert_eq!(code, 0);
    let mut lines = stdout.lines();
    let header = lines.next().unwrap();
    for column in ["id", "flow", "record", "attempts", "last failed"] {
        assert!(header.contains(column), "{header}");
    }
    let row = lines.next().unwrap();
    assert!(row.contains("orders_to_erp"), "{row}");
    let offset = regex_like_offset(row);
    assert!(offset, "a time with its offset in: {row}");
    assert!(lines.next().unwrap().starts_with("       "), "{stdout}");
    // On a terminal of 80 columns, the same list fits the screen: columns as wide as their
    // content, the error broken to the width (through the pipe above, rows of 90).
    let line = format!("{} failures list {project}", env!("CARGO_BIN_EXE_erpsync"));
    let (screen, rows) = crate::support::terminal::rows_at_width(80, &line, |c| {
        c.envs(envs.iter().map(|(k, v)| (*k, v.as_str())));
    });
    assert!(rows.iter().any(|r| r.contains("attempts")), "{screen}");
    assert!(
        stdout.lines().any(|l| l.chars().count() > 80),
        "the piped list keeps its wider rows: {stdout}"
    );
    let (code, stdout, _) = run(&["status", &project]);
    assert_eq!(code, 0);
    assert!(stdout.contains("partial"), "{stdout}");
    assert!(stdout.contains("failed 2"), "{stdout}");

    let (code, stdout, _) = run(&["status", &project, "--json"]);
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let orders = status
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["flow"] == "orders_to_erp")
        .unwrap();
    assert_eq!(
        (
            orders["failures"].as_u64(),
            orders["last_run"]["status"].as_str()
        ),
        (Some(2), Some("partial"))
    );

    let (code, stdout, _) = run(&["failures", "list", &project, "--json"]);
    assert_eq!(code, 0);
    let list: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{stdout}");
    let first = list
        .iter()
        .find(|f| f["key"] == bad.number.as_str())
        .unwrap();
    let first_id = first["id"].as_i64().unwrap().to_string();
    let error = first["error"].as_str().unwrap();
    assert!(error.contains("GHOST-9"), "{error}");

    let (code, stdout, _) = run(&[
        "failures", "show", &project, "--id", &first_id, "--format", "json",
    ]);
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shown["payload"]["lines"][0]["code"], "GHOST-9");
    assert_eq!(shown["source_record"]["number"], bad.number.as_str());
    let (code, stdout, _) = run(&["failures", "show", &project, "--id", &first_id]);
    assert_eq!(code, 0);
    for part in ["error: ", "record:", "payload:", "response:", "GHOST-9"] {
        assert!(stdout.contains(part), "no `{part}` in:\n{stdout}");
    }

    // Fix the cause of the first, retry it by id: it goes through exactly once.
    erp.create_product(ErpProduct::new("GHOST-9", "Acum exista", 12.0))
        .unwrap();
    let (code, stdout, _) = run(&["failures", "retry", &project, "--id", &first_id]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("created 1"), "{stdout}");
    assert_eq!(erp.orders_by_reference(&bad.number).len(), 1);

    let (_, stdout, _) = run(&["failures", "list", &project, "--format", "json"]);
    let left: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(left[0]["key"], bad2.number.as_str(), "{left:#}");
    // The second is given up on: every failure of the flow (that one now).
    let (code, stdout, _) = run(&["failures", "discard", &project, "--flow", "orders_to_erp"]);
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), "discarded 1 failure");
    let (code, stdout, _) = run(&["failures", "list", &project]);
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), "no failures");
    let (code, _, stderr) = run(&["failures", "retry", &project]);
    assert_eq!(code, 2, "retry needs --id, --flow or --all: {stderr}");
}

#[test]
fn status_names_the_node_running_a_flow_while_it_holds_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite");
    let state = format!("sqlite:{}", path.display());
    let status = |json: bool| {
        let mut args = vec!["status", "flows/demo", "--state", &state, "--init-state"];
        if json {
            args.push("--json");
        }
        let out = erpsync().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(!status(false).contains("running on"));

    // `erpsync status` reads the real time: an hour is far beyond how long it takes.
    let now = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 0);
    let store = erpsync::state::Store::from(SqliteStore::open(&path).unwrap());
    let hour = std::time::Duration::from_secs(3600);
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert!(
        rt.block_on(
            store
                .coordination
                .try_lease("flow:stock", "node-b", now, hour)
        )
        .unwrap()
    );
    drop(store);
    let rows: serde_json::Value = serde_json::from_str(&status(true)).unwrap();
    let row = |flow: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["flow"] == flow)
            .unwrap()
            .clone()
    };
    assert_eq!(row("stock")["lease"]["holder"], "node-b");
    let shown: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(row("stock")["lease"]["expires_at"].clone()).unwrap();
    assert_eq!(shown, now + chrono::Duration::hours(1));
    assert_eq!(row("products")["lease"], serde_json::Value::Null);
    // The next runs, scheduled and reconciliation, as times with their offset.
    let next: chrono::DateTime<chrono::FixedOffset> =
        serde_json::from_value(row("products")["next_run"].clone()).unwrap();
    assert!(
        next > now && next <= now + chrono::Duration::minutes(16),
        "{next}"
    );
    assert!(row("stock")["next_reconcile"].is_string(), "{rows:#}");
    let text = status(false);
    let products = text.lines().find(|l| l.starts_with("products ")).unwrap();
    assert!(regex_like_offset(products), "{products}");
    let text = status(false);
    let line = text
        .lines()
        .skip_while(|l| !l.starts_with("running on"))
        .find(|l| l.starts_with("stock "))
        .unwrap_or_else(|| panic!("no lease line for `stock` in:\n{text}"));
    assert!(line.contains("node-b"), "{line}");
}

#[test]
fn an_invalid_project_is_refused_with_exit_78_by_every_command() {
    let bad = "tests/fixtures/flows/invalid/five_problems.yaml";
    for args in [
        vec!["run", "--once", bad],
        vec!["dry-run", bad],
        vec!["failures", "list", bad],
    ] {
        let out = erpsync().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(78), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("5 problems found"));
        // Asked for JSON, a tool gets the diagnostics as JSON on stdout.
        let out = erpsync()
            .args(&args)
            .args(["--format", "json"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{args:?}");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["valid"], false);
        assert_eq!(doc["diagnostics"].as_array().unwrap().len(), 5, "{doc:#}");
        assert!(doc["diagnostics"][0]["code"].is_string(), "{doc:#}");
    }
}

/// A flow file whose incremental overlap is too large to be a span of time is refused by
/// `validate` and by a run alike, run from a folder outside the checkout: the run never
/// starts with a cursor moved forward by a wrapped overlap.
#[test]
fn an_overlap_too_large_for_a_span_of_time_is_refused_before_any_run() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        crate::support::project::demo_yaml("http://127.0.0.1:9", "http://127.0.0.1:9", dir.path());
    let huge = "overlap_secs: 18446744073709551615";
    let mut parts = text.splitn(2, "overlap_secs: 60");
    let text = format!("{}{huge}{}", parts.next().unwrap(), parts.next().unwrap());
    let file = dir.path().join("demo.yaml");
    std::fs::write(&file, text).unwrap();
    let file = file.to_str().unwrap();
    for args in [vec!["validate", file], vec!["run", "--once", file]] {
        let out = Command::new(env!("CARGO_BIN_EXE_erpsync"))
            .current_dir(dir.path())
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {stderr}");
        assert!(
            stderr.contains(
                "`overlap_secs` 18446744073709551615 is too large to be a span of time\n  at `flows.stock.incremental.overlap_secs`"
            ),
            "{args:?}: {stderr}"
        );
    }
    assert!(!dir.path().join("state.sqlite").exists(), "no run started");
}

/// Runs `erpsync ARGS` in `dir` with its stdout's reader gone before anything is written.
fn with_stdout_closed(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_erpsync"))
        .current_dir(dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let state = format!("sqlite:{}", dir.path().join("s.sqlite").display());
    let demo = format!("{repo}/flows/demo");
    let bad = format!("{repo}/tests/fixtures/flows/invalid/five_problems.yaml");
    for (args, code) in [
        (vec!["validate", "--format", "json", &demo], 0),
        (vec!["validate", "--format", "json", &bad], 78),
        (vec!["validate", &demo], 0),
        (vec!["schema"], 0),
        (
            vec!["failures", "list", &demo, "--state", &state, "--init-state"],
            0,
        ),
        (vec!["status", &demo, "--state", &state, "--init-state"], 0),
        (vec!["completions", "bash"], 0),
        (vec!["man"], 0),
        (vec!["demo", "--write-flows", "out"], 0),
    ] {
        let (got, stderr) = with_stdout_closed(dir.path(), &args);
        assert_eq!(got, Some(code), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // Through a shell pipeline, as people type it.
    let bin = env!("CARGO_BIN_EXE_erpsync");
    let out = Command::new("bash")
        .current_dir(dir.path())
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {bin} validate --format json {demo} | head -c 10; \
             {bin} failures list {demo} --state {state} --init-state | head -1"
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn the_demo_runs_from_any_folder_and_refuses_a_bare_state_path() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_erpsync"))
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[
        "demo",
        "--no-rate-limit",
        "--products",
        "30",
        "--orders",
        "3",
        "--state",
        "sqlite:demo.sqlite",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("0 disagreements, 0 failed records"),
        "{stdout}"
    );
    // A relative `sqlite:` path is taken from the working directory.
    assert!(dir.path().join("demo.sqlite").exists());

    let out = run(&["demo", "--state", "sqlite:demo.sqlite"]);
    assert_eq!(out.status.code(), Some(2), "an existing state is refused");
    let out = run(&["demo", "--state", "demo.sqlite"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "error: `--state` takes `sqlite:PATH` (the demo keeps its state in SQLite), not `demo.sqlite`"
    );
    let out = run(&["demo", "--state", "sqlite:missing/dir/x.sqlite"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "said once: {stderr}");
    assert!(stderr.contains("missing/dir"), "{stderr}");
}

#[test]
fn schema_prints_to_stdout_and_writes_only_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_erpsync"))
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let committed = erpsync::config::schema_nav::flow_schema_text();
    for args in [vec!["schema"], vec!["schema", "--output", "-"]] {
        let out = run(&args);
        assert!(out.status.success(), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), committed, "{args:?}");
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "nothing written by default: {left:?}");

    let out = run(&["schema", "--output", "project/flow.schema.json"]);
    assert!(out.status.success());
    let path = dir.path().join("project/flow.schema.json");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), committed);
    let out = run(&["schema", "--check", "project/flow.schema.json"]);
    assert_eq!(out.status.code(), Some(0));
    std::fs::write(&path, "{}").unwrap();
    let out = run(&["schema", "--check", "project/flow.schema.json"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_state_that_does_not_exist_is_created_only_when_asked() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    // The demo project without its own `state.url`.
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    let text = std::fs::read_to_string(format!("{repo}/flows/demo/demo.yaml")).unwrap();
    let text = text
        .replace(
            "include: [../common]",
            &format!("include: [{repo}/flows/common]"),
        )
        .replace(
            "state:\n  url: sqlite:../../target/demo/erpsync.sqlite\n",
            "",
        );
    std::fs::write(project.join("demo.yaml"), text).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_erpsync"))
            .current_dir(dir.path())
            .args(args)
            // Nothing listens there: a run that got past the state check would fail (1).
            .env("SHOP_URL", "http://127.0.0.1:9")
            .env("ERP_URL", "http://127.0.0.1:9")
            .env_remove("ERPSYNC_STATE")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let typo = dir.path().join("nonexistent/dir/x.sqlite");
    let typo_url = format!("sqlite:{}", typo.display());
    for verb in [
        vec!["run", "--once"],
        vec!["dry-run"],
        vec!["status"],
        vec!["failures", "list"],
    ] {
        let mut args = verb.clone();
        args.extend(["project", "--state", &typo_url]);
        let (code, stderr) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("--init-state"), "{stderr}");
        assert!(!dir.path().join("nonexistent").exists(), "{args:?}");
        // Nor the default state in the project folder.
        let mut args = verb.clone();
        args.push("project");
        let (code, stderr) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(!project.join("erpsync.sqlite").exists(), "{args:?}");
    }
    // `--init-state` creates it; a relative path is taken from the working directory.
    let (code, stderr) = run(&[
        "failures",
        "list",
        "project",
        "--state",
        "sqlite:here.sqlite",
        "--init-state",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(dir.path().join("here.sqlite").exists());
    assert!(!project.join("here.sqlite").exists());
    // Now that it exists, no flag is needed.
    let (code, stderr) = run(&["status", "project", "--state", "sqlite:here.sqlite"]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_prints_the_settings_the_shipped_flows_take() {
    use std::io::BufRead as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_erpsync"))
        .args([
            "sim",
            "--shop-port",
            "0",
            "--erp-port",
            "0",
            "--woo-port",
            "0",
            "--no-rate-limit",
            "--products",
            "5",
            "--orders",
            "2",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _sim = KillOnDrop(child);
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let done = line.contains("press Ctrl-C");
        lines.push(line);
        if done {
            break;
        }
    }
    let mut env: Vec<(String, String)> = Vec::new();
    for line in lines.iter().filter(|l| l.starts_with("  flows/")) {
        for word in line.split_whitespace().filter(|w| w.contains('=')) {
            let (k, v) = word.split_once('=').unwrap();
            env.push((k.to_string(), v.to_string()));
        }
    }
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    for name in ["SHOP_URL", "ERP_URL", "WOO_URL", "ERP_CLIENT_SECRET"] {
        assert!(names.contains(&name), "{name} in {lines:#?}");
    }
    // The token request as printed is accepted.
    let token = lines.iter().find(|l| l.contains("token: curl")).unwrap();
    let url = token.split_whitespace().nth(5).unwrap();
    let body = token.split("-d '").nth(1).unwrap().trim_end_matches('\'');
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{token}");

    // And the flows run against the simulators with exactly those values.
    let dir = tempfile::tempdir().unwrap();
    let state = format!("sqlite:{}", dir.path().join("s.sqlite").display());
    for project in ["flows/demo", "flows/woocommerce"] {
        let out = erpsync()
            .args(["dry-run", project, "--state", &state, "--init-state"])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("SHOP_REQUESTS_PER_SECOND", "1000")
            .env("ERP_REQUESTS_PER_SECOND", "1000")
            .env("WOO_REQUESTS_PER_SECOND", "1000")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{project}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A child process that is stopped when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_sync_conflict_names_the_rule_as_the_flow_file_does() {
    let shop = ShopSim::start(ShopOptions::unlimited()).await.unwrap();
    let erp = ErpSim::start(ErpOptions::unlimited()).await.unwrap();
    seed_both(&shop, &erp, 3, 4);
    shop.create_product(Product::basic("DIFF-1", "Acelasi produs", 10.0, 0))
        .unwrap();
    erp.create_product(ErpProduct::new("DIFF-1", "Acelasi produs", 12.0))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = format!("sqlite:{}", dir.path().join("s.sqlite").display());
    let out = erpsync()
        .args([
            "dry-run",
            "flows/demo",
            "--flow",
            "products",
            "--key",
            "DIFF-1",
            "--format",
            "json",
            "--state",
            &state,
            "--init-state",
        ])
        .envs(sim_env(&shop, &erp))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let run = &doc["runs"][0];
    assert_eq!(
        (
            run["flow"].as_str(),
            run["status"].as_str(),
            run["run_id"].is_null()
        ),
        (Some("products"), Some("ok"), true)
    );
    for t in ["started_at", "finished_at"] {
        chrono::DateTime::parse_from_rfc3339(run[t].as_str().unwrap()).unwrap();
    }
    // `--key` picks the one record.
    let records = run["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{records:#?}");
    let reason = records[0]["reason"].as_str().unwrap();
    assert_eq!(records[0]["decision"], "conflict");
    assert!(reason.contains("resolved by `erp_wins`"), "{reason}");
    assert!(!reason.contains("both sides changed"), "{reason}");
    assert_eq!(run["counts"]["read"], 1, "{run:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_commands_log_like_the_daemon() {
    let shop = ShopSim::start(ShopOptions::unlimited()).await.unwrap();
    let erp = ErpSim::start(ErpOptions::unlimited()).await.unwrap();
    seed_both(&shop, &erp, 3, 6);
    let dir = tempfile::tempdir().unwrap();
    let state = format!("sqlite:{}", dir.path().join("s.sqlite").display());
    let (key, secret) = shop.credentials();
    let (id, client_secret) = erp.credentials();
    let env = [
        ("SHOP_URL", shop.base_url()),
        ("ERP_URL", erp.base_url()),
        ("SHOP_API_KEY", key),
        ("SHOP_API_SECRET", secret.clone()),
        ("ERP_CLIENT_ID", id),
        ("ERP_CLIENT_SECRET", client_secret.clone()),
    ];
    let run = |extra: &[&str], log: Option<&str>| {
        let mut c = erpsync();
        c.args(["run", "--once", "flows/demo", "--flow", "products"])
            .args(["--state", &state, "--init-state"])
            .args(extra)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env_remove("ERPSYNC_LOG");
        if let Some(l) = log {
            c.env("ERPSYNC_LOG", l);
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Quiet by default: the report on stdout, nothing on stderr.
    let (stdout, stderr) = run(&[], None);
    assert!(stdout.contains("products"), "{stdout}");
    assert_eq!(stderr, "", "a one-shot run logs only problems by default");

    // -vv: each HTTP request, as JSON lines with plain values and the area as target.
    let (_, stderr) = run(&["-vv", "--log-format", "json"], None);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let request = lines
        .iter()
        .find(|l| l["message"] == "request" && l["target"] == "connector")
        .unwrap_or_else(|| panic!("no request line in {stderr}"));
    assert!(request["status"].is_u64(), "{request}");
    assert!(request["duration_ms"].is_u64(), "{request}");
    assert!(request["method"].is_string() && request["url"].is_string());
    assert!(lines.iter().any(|l| l["target"] == "engine"), "{stderr}");
    assert!(!stderr.contains("erpsync::"), "{stderr}");
    assert!(!stderr.contains(&client_secret) && !stderr.contains(&secret));

    // ERPSYNC_LOG takes the area words.
    let (_, stderr) = run(&[], Some("connector=debug"));
    assert!(stderr.contains(" connector: request"), "{stderr}");
    assert!(!stderr.contains(" engine: "), "{stderr}");
    assert!(!stderr.contains('\x1b'), "no colours into a pipe: {stderr}");
}

#[test]
fn diagnostics_say_what_to_do_and_print_config_shows_what_was_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop.yaml");
    std::fs::write(
        &file,
        r#"entities:
  product: { key: sku, fields: { sku: string } }
systems:
  shop:
    base_url: ${ERPSYNC_T_SHOP_URLL}/api/v2
    auth: { kind: basic, username: "${ERPSYNC_T_KEY}", password: "${ERPSYNC_T_SECRET}" }
    rate_limit: { per_second: "${ERPSYNC_T_RATE}", burst: 4 }
    operations:
      list: { path: /p, records: $.data }
    entities:
      product: { list: list, lookup: list, update: list, read: { sku: $.sku } }
flows:
  f:
    entity: product
    from: shop
    to: shop
    mode: update
    trigger: { schedule: "*/2 * * *" }
"#,
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let out = erpsync()
        .args(["validate", file])
        .env("ERPSYNC_T_SHOP_URL", "http://shop.example")
        .env("ERPSYNC_T_KEY", "k")
        .env("ERPSYNC_T_SECRET", "s3cret-value-77")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains(
            "environment variable `ERPSYNC_T_SHOP_URLL` is not set\n  at `systems.shop.base_url`\n  help: did you mean `ERPSYNC_T_SHOP_URL`?"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("`*/2 * * *`: it has 4 fields; 5 (minute hour"),
        "{stderr}"
    );
    // The unset rate is one problem, not also a wrong type.
    assert!(!stderr.contains("E004"), "{stderr}");
    assert!(stderr.contains("3 problems found"), "{stderr}");

    let out = erpsync()
        .args(["validate", "--print-config", file])
        .env("ERPSYNC_T_SHOP_URLL", "http://shop.example")
        .env("ERPSYNC_T_KEY", "k")
        .env("ERPSYNC_T_SECRET", "s3cret-value-77")
        .env("ERPSYNC_T_RATE", "2")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Still invalid (the cron): nothing resolved to show, the problem on stderr.
    assert_eq!(out.status.code(), Some(78), "{stdout}");
    let fixed = std::fs::read_to_string(file)
        .unwrap()
        .replace("*/2 * * *", "*/2 * * * *");
    std::fs::write(file, fixed).unwrap();
    let out = erpsync()
        .args(["validate", "--print-config", file])
        .env("ERPSYNC_T_SHOP_URLL", "http://shop.example")
        .env("ERPSYNC_T_KEY", "k")
        .env("ERPSYNC_T_SECRET", "s3cret-value-77")
        .env("ERPSYNC_T_RATE", "2")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let config: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let shop = &config["systems"]["shop"];
    assert_eq!(shop["base_url"], "http://shop.example/api/v2");
    assert_eq!(shop["auth"]["password"], "***");
    assert_eq!(shop["rate_limit"]["per_second"], 2.0);
    assert_eq!(config["flows"]["f"]["trigger"]["schedule"], "*/2 * * * *");
    assert!(!stdout.contains("s3cret-value-77"));
}

/// Whether a line holds a time with its UTC offset (`2026-03-01 10:00:00 +02:00`).
fn regex_like_offset(line: &str) -> bool {
    line.split_whitespace().any(|w| {
        (w.starts_with('+') || w.starts_with('-'))
            && w.len() == 6
            && w.as_bytes()[3] == b':'
            && w[1..3].chars().all(|c| c.is_ascii_digit())
    })
}

/// Issue 14.4: `dry-run` prints each record as it is planned, through a pipe as in a script,
/// for people and as one JSON document for tools, with every record of a listing of several
/// pages and the flow's totals after its records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_dry_run_prints_every_record_and_one_json_document() {
    let p = crate::support::binary::Project::start(0, |_| {}).await;
    // 230 products only in the ERP: three pages of the shop's listing to create.
    for i in 0..230 {
        p.erp
            .create_product(ErpProduct::new(&format!("STREAM-{i:03}"), "Produs", 10.0))
            .unwrap();
    }
    let out = p.run(&["dry-run", "--flow", "products", "--format", "json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::support::binary::text(&out)
    );
    // Records are written in chunks of 64 KB: this document spans more than one.
    assert!(stdout.len() > 65536, "{} bytes", stdout.len());
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (doc["ok"].as_bool(), doc["dry_run"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(doc["errors"], serde_json::json!([]));
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{doc:#}");
    let run = &runs[0];
    assert_eq!(
        (run["flow"].as_str(), run["status"].as_str()),
        (Some("products"), Some("ok"))
    );
    assert_eq!(run["counts"]["created"], 230, "{run:#}");
    let records = run["records"].as_array().unwrap();
    let mut keys: Vec<&str> = records.iter().map(|r| r["key"].as_str().unwrap()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 230);
    assert!(
        records
            .iter()
            .all(|r| r["decision"] == "create" && r["target"] == "shop")
    );
    assert!(
        records[0]["changes"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "{:#}",
        records[0]
    );

    // For people: the records' lines, then the flow's totals.
    let out = p.run(&["dry-run", "--flow", "products"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    let creates = lines
        .iter()
        .filter(|l| l.starts_with("  create    STREAM-"))
        .count();
    assert_eq!(creates, 230, "{stdout}");
    let totals = lines
        .iter()
        .position(|l| l.starts_with("products"))
        .unwrap();
    assert!(lines[totals].contains("created 230"), "{stdout}");
    assert!(
        lines[..totals]
            .iter()
            .any(|l| l.starts_with("  create    STREAM-"))
    );
    assert_eq!(lines.last(), Some(&"dry run: nothing was written"));
    assert_eq!(p.shop.products().len(), 0, "a dry run writes nothing");
}

/// A dry run whose flow cannot be planned (a system that does not answer) still exits 1 with
/// a JSON document that parses, the flow's error in its run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_dry_run_json_says_why_a_flow_could_not_be_planned() {
    let p = crate::support::binary::Project::start(3, |_| {}).await;
    // Nothing listens there: the ERP's listing cannot be read.
    let out = p
        .command(&["dry-run", "--flow", "products", "--format", "json"])
        .env("ERP_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        crate::support::binary::text(&out)
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["ok"], false, "{doc:#}");
    let run = &doc["runs"][0];
    assert_eq!(
        (run["flow"].as_str(), run["status"].as_str()),
        (Some("products"), Some("error"))
    );
    assert!(
        run["errors"][0]
            .as_str()
            .unwrap()
            .contains("reading `erp` failed"),
        "{doc:#}"
    );
    assert_eq!(run["records"], serde_json::json!([]));
}

/// A state file as an earlier release left it (schema version 6: bindings naming their scope
/// by its entity and systems, binding id indexes led by those, stored records with their
/// fields in another order)
/// is upgraded in place by the next run of the real binary, which finds every product in
/// step and writes nothing; a price changed afterwards is the one write of the run after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_of_the_release_before_is_upgraded_and_nothing_is_written_twice() {
    let shop = ShopSim::start(ShopOptions::unlimited()).await.unwrap();
    let erp = ErpSim::start(ErpOptions::unlimited()).await.unwrap();
    let items = seed_both(&shop, &erp, 12, 7);
    let dir = tempfile::tempdir().unwrap();
    let project = write_demo_project(dir.path());
    let path = dir.path().join("state.sqlite");
    let mut envs = sim_env(&shop, &erp);
    envs.push(("ERPSYNC_STATE", format!("sqlite:{}", path.display())));
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--once", &project, "--flow", "products"];
        args.extend_from_slice(extra);
        let out = erpsync()
            .args(&args)
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{stdout}{out:?}");
        stdout
    };
    run(&["--init-state"]);
    let writes = shop.counters().writes();

    // The bindings as this release keeps them: bases packed, read back whole.
    let bindings = {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let kinds: Vec<String> = conn
            .prepare("SELECT DISTINCT typeof(base_a) FROM bindings")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(kinds, ["blob"]);
        let (entity, a, b): (String, String, String) = conn
            .query_row("SELECT entity, sys_a, sys_b FROM scopes", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        let store = erpsync::state::Store::from(SqliteStore::open(&path).unwrap());
        store
            .bindings
            .all_bindings(&erpsync::state::Scope::new(&entity, &a, &b))
            .await
            .unwrap()
    };
    assert!(bindings.len() >= items.len(), "{} bindings", bindings.len());

    // Back to what the release before wrote.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        // Its bindings named their scope by its three texts, and its id indexes were led
        // by them.
        conn.execute_batch(
            "CREATE TABLE old_bindings (
                 entity TEXT NOT NULL, sys_a TEXT NOT NULL, sys_b TEXT NOT NULL, key TEXT NOT NULL,
                 id_a TEXT, id_b TEXT, base_a TEXT, base_b TEXT, exported_at TEXT, parked TEXT,
                 actions_done INTEGER NOT NULL DEFAULT 0, base_b_delta TEXT,
                 PRIMARY KEY (entity, sys_a, sys_b, key));
             INSERT INTO old_bindings
                 SELECT s.entity, s.sys_a, s.sys_b, b.key, b.id_a, b.id_b, b.base_a, b.base_b,
                     b.exported_at, b.parked, b.actions_done, b.base_b_delta
                 FROM bindings b JOIN scopes s ON s.id = b.scope;
             DROP TABLE bindings; DROP TABLE scopes;
             ALTER TABLE old_bindings RENAME TO bindings;
             CREATE INDEX bindings_id_a ON bindings (entity, sys_a, sys_b, id_a);
             CREATE INDEX bindings_id_b ON bindings (entity, sys_a, sys_b, id_b);
             CREATE INDEX bindings_awaiting ON bindings (entity, sys_a, sys_b)
                 WHERE exported_at IS NOT NULL AND actions_done = 0;
             PRAGMA user_version = 6;",
        )
        .unwrap();
        // Its bases were JSON text (each side whole, here); their fields in another order
        // are the same record.
        for b in &bindings {
            let Some(serde_json::Value::Object(fields)) = b.base_a.clone() else {
                panic!("{b:?}");
            };
            let reversed: serde_json::Map<_, _> = fields.into_iter().rev().collect();
            conn.execute(
                "UPDATE bindings SET base_a = ?1, base_b = ?2, base_b_delta = NULL WHERE key = ?3",
                rusqlite::params![
                    serde_json::Value::Object(reversed).to_string(),
                    b.base_b.as_ref().map(|v| v.to_string()),
                    b.key
                ],
            )
            .unwrap();
        }
    }

    // Read in full and compared with every stored record: all in step.
    let stdout = run(&["--full"]);
    let n = items.len();
    assert!(
        stdout.contains(&format!(
            "read {n}, created 0, updated 0, adopted 0, skipped {n}"
        )),
        "{stdout}"
    );
    assert_eq!(shop.counters().writes(), writes, "{stdout}");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 10);
    // The binding indexes of this release: by key, and the exports awaiting post-actions;
    // the id indexes of the release before are gone.
    let indexes: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'bindings'
             ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(
        indexes,
        ["bindings_awaiting", "sqlite_autoindex_bindings_1"]
    );
    drop(conn);

    // One price changed in the ERP: one write, to that product.
    let changed = &items[3];
    erp.update_product(&changed.sku, |p| p.price += 7.0)
        .unwrap();
    let stdout = run(&[]);
    assert!(stdout.contains("updated 1"), "{stdout}");
    assert_eq!(shop.counters().writes(), writes + 1, "{stdout}");
}

/// The demo project's products flow made one way, from the ERP into the shop: the shop is
/// the target a run reads in full.
fn products_from_the_erp(doc: &mut serde_json::Value) {
    let flow = doc["flows"]["products"].as_object_mut().unwrap();
    flow.remove("direction");
    flow.remove("conflict");
    flow.insert("from".into(), "erp".into());
    flow.insert("to".into(), "shop".into());
}

/// `--index-memory` (or `ERPSYNC_INDEX_MEMORY`) bounds what a run keeps of the target it
/// reads in full: at 0 the shop's listing goes to a temporary file from its first record,
/// `-v` says so, and the plan and the run are the ones the default bound gives. Where no
/// temporary file can be made (`TMPDIR` names no folder), the index stays in memory, says
/// so, and plans the same. A value that is not a number is refused before anything runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_memory_bound_moves_the_target_to_a_file_and_changes_no_decision() {
    let p = crate::support::binary::Project::start(260, products_from_the_erp).await;
    let changed = p.raise_erp_prices(13, 7.0);
    let moved = "it moves to a temporary file";
    let plan_in = |extra: &[&str], env: Option<&str>, tmp: Option<&std::path::Path>| {
        let mut c = p.command(&["dry-run", "--flow", "products", "--format", "json", "-v"]);
        c.args(extra).env_remove("ERPSYNC_INDEX_MEMORY");
        if let Some(v) = env {
            c.env("ERPSYNC_INDEX_MEMORY", v);
        }
        if let Some(tmp) = tmp {
            c.env("TMPDIR", tmp);
        }
        let out = c.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            crate::support::binary::text(&out)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let run = doc["runs"][0].clone();
        let mut records: Vec<(String, String)> = run["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["key"].to_string(), r.to_string()))
            .collect();
        records.sort();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (run["counts"].clone(), records, stderr)
    };
    let plan = |extra: &[&str], env: Option<&str>| plan_in(extra, env, None);
    let (counts, records, stderr) = plan(&[], None);
    assert!(
        !stderr.contains(moved),
        "260 products fit in 8 MiB: {stderr}"
    );
    assert_eq!(counts["adopted"], 260 - changed.len(), "{counts}");
    assert_eq!(counts["updated"], changed.len(), "{counts}");
    for (extra, env) in [(&["--index-memory", "0"][..], None), (&[][..], Some("0"))] {
        let (c, r, stderr) = plan(extra, env);
        assert!(stderr.contains(moved), "{extra:?} {env:?}: {stderr}");
        assert_eq!((c, r.len()), (counts.clone(), records.len()));
        assert!(r == records, "the same records planned, field for field");
    }
    let nowhere = p.dir.path().join("no such folder");
    let (c, r, stderr) = plan_in(&[], Some("0"), Some(&nowhere));
    assert!(
        stderr.contains("no temporary file for the target index; it stays in memory"),
        "{stderr}"
    );
    assert!(!stderr.contains(moved), "{stderr}");
    assert_eq!((c, r.len()), (counts.clone(), records.len()));
    assert!(r == records, "the same records planned without a file");

    // The run itself, on a file from the first record, writes the changed prices only.
    let before = p.shop.products();
    let out = p.run(&[
        "run",
        "--once",
        "--flow",
        "products",
        "--index-memory",
        "0",
        "-v",
    ]);
    let text = crate::support::binary::text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains(moved), "{text}");
    assert!(
        text.contains(&format!("updated {}", changed.len())),
        "{text}"
    );
    let after = p.shop.products();
    let differ = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b.price_gross != a.price_gross)
        .count();
    assert_eq!(differ, changed.len());
    for sku in &changed {
        let erp = p
            .erp
            .products()
            .into_iter()
            .find(|e| &e.code == sku)
            .unwrap();
        let shop = after.iter().find(|s| &s.sku == sku).unwrap();
        assert_eq!(shop.price_gross, Some(erp.price), "{sku}");
    }

    // Not a number: a usage error naming the option, and nothing run.
    let out = p
        .command(&["run", "--once", "--flow", "products"])
        .env("ERPSYNC_INDEX_MEMORY", "lots")
        .output()
        .unwrap();
    let text = crate::support::binary::text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("--index-memory"), "{text}");
}

/// A run killed (SIGKILL) while its target index is in its temporary file leaves nothing in
/// the temporary folder, and the next run does the rest of the job: each changed price
/// written once over the two runs, the shop then equal to the ERP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_with_its_index_in_a_file_leaves_no_file_and_the_next_run_finishes() {
    use std::io::BufRead;
    let p = crate::support::binary::Project::start(1000, products_from_the_erp).await;
    let changed = p.raise_erp_prices(20, 3.0);
    let tmp = p.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    // Slow pages: the shop's listing (ten pages) is still being read when the run is killed.
    p.shop.faults().set(erpsync_sim::Faults {
        latency_ms: 40,
        ..Default::default()
    });
    let writes = p.shop.counters().writes();
    let args = ["run", "--once", "--flow", "products", "--index-memory", "0"];
    let mut child = p
        .command(&args)
        .arg("-v")
        .env("TMPDIR", &tmp)
        .env_remove("ERPSYNC_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (moved, moved_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("it moves to a temporary file") {
                let _ = moved.send(());
            }
        }
    });
    moved_rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the index moved to its file");
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed before the end: {status}");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "nothing left behind: {left:?}");

    p.shop.faults().set(erpsync_sim::Faults::default());
    let out = p.command(&args).env("TMPDIR", &tmp).output().unwrap();
    finished_with_each_change_once(&p, &out, writes, &changed);
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}

/// A first sync that finished after a kill or a wait (`out`, the run that finished): it exits
/// 0, each of the `changed` prices was written once since the shop had taken `writes`, and the
/// shop's prices are the ERP's.
fn finished_with_each_change_once(
    p: &crate::support::binary::Project,
    out: &std::process::Output,
    writes: u64,
    changed: &[String],
) {
    let text = crate::support::binary::text(out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(
        p.shop.counters().writes() - writes,
        changed.len() as u64,
        "each changed price written once: {text}"
    );
    for sku in changed {
        let erp = p.erp.product(sku).unwrap().price;
        let shop = p.shop.product_by_sku(sku).unwrap().price_gross.unwrap();
        assert!((erp - shop).abs() < 0.005, "{sku}: {erp} vs {shop}");
    }
}

/// A first sync of 1,000 products, 50 of them with a price changed on the ERP, whose ERP
/// pages are slow (ten of 100, 60 ms each): still reading them when a test steps in.
struct SlowFirstSync {
    p: crate::support::binary::Project,
    changed: Vec<String>,
    /// The shop's writes before the first sync.
    writes: u64,
    db: std::path::PathBuf,
}

const FIRST_SYNC: [&str; 4] = ["run", "--once", "--flow", "products"];

impl SlowFirstSync {
    async fn start() -> Self {
        let p = crate::support::binary::Project::start(1000, products_from_the_erp).await;
        let changed = p.raise_erp_prices(20, 3.0);
        p.erp.faults().set(erpsync_sim::Faults {
            latency_ms: 60,
            ..Default::default()
        });
        let writes = p.shop.counters().writes();
        let db = p.dir.path().join("state.sqlite");
        SlowFirstSync {
            p,
            changed,
            writes,
            db,
        }
    }

    /// How many bindings the state file holds.
    fn bound(&self) -> i64 {
        rusqlite::Connection::open(&self.db)
            .and_then(|c| c.query_row("SELECT COUNT(*) FROM bindings", [], |r| r.get(0)))
            .unwrap_or(0)
    }

    /// Waits, the run still going, until more than the updates bound one at a time are
    /// stored: a page's adoptions written together.
    fn until_a_page_is_stored(&self, child: &mut std::process::Child) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while self.bound() < 100 {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the run ended before a page of adoptions was stored"
            );
            assert!(std::time::Instant::now() < deadline, "no page stored");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// The run that finished the first sync (`out`): it exits 0, each changed price was
    /// written once, every product is bound, and a run after it writes nothing.
    fn finished(&self, out: &std::process::Output) {
        let p = &self.p;
        finished_with_each_change_once(p, out, self.writes, &self.changed);
        assert_eq!(self.bound(), 1000, "{}", crate::support::binary::text(out));
        let before = p.shop.counters().writes();
        let out = p.run(&FIRST_SYNC);
        let text = crate::support::binary::text(&out);
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert_eq!(
            p.shop.counters().writes(),
            before,
            "nothing written again: {text}"
        );
        assert!(text.contains("created 0, updated 0, adopted 0"), "{text}");
    }
}

/// A first sync killed (SIGKILL) once a page of adoptions is in the state file and the
/// next page's still held in memory: the next run adopts the rest and writes each changed
/// price once over the two runs; every product ends bound, and a run after that writes
/// nothing. Run from the project's folder, outside the checkout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_sync_killed_between_pages_of_adoptions_loses_and_repeats_nothing() {
    let sync = SlowFirstSync::start().await;
    let mut child = sync.p.spawn(&FIRST_SYNC);
    sync.until_a_page_is_stored(&mut child);
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success(), "killed before the end");
    let partial = sync.bound();
    assert!(
        (100..1000).contains(&partial),
        "{partial} bound when killed"
    );

    sync.p.erp.faults().set(erpsync_sim::Faults::default());
    sync.finished(&sync.p.run(&FIRST_SYNC));
}

/// A first sync whose state file another process locks while the run is writing to it (an
/// `sqlite3` shell, a backup): the run waits for the lock rather than failing or giving up,
/// then goes on; each changed price is written once, every product ends bound, and a run
/// after it has nothing to do. Run from the project's folder, outside the checkout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_sync_waits_for_a_state_file_another_process_locks_and_loses_nothing() {
    let sync = SlowFirstSync::start().await;
    let mut child = sync
        .p
        .command(&FIRST_SYNC)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    sync.until_a_page_is_stored(&mut child);
    let other = rusqlite::Connection::open(&sync.db).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let at_lock = sync.bound();
    // Longer than the rest of the run takes unlocked (nine pages of 60 ms).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run waits for the lock: it has bindings to store"
    );
    assert_eq!(
        sync.bound(),
        at_lock,
        "nothing stored while the file was locked"
    );
    other.execute_batch("COMMIT").unwrap();
    sync.finished(&child.wait_with_output().unwrap());
}

/// A first stock sync as a person runs it, a dry run on a terminal from the project's folder:
/// the shop's catalogue is read once, page by page, and no product is asked for alone
/// before that read (each would cost a request of the shop's rate limit); every level is
/// planned as adopted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_stock_dry_run_on_a_terminal_reads_the_shop_once_without_single_lookups() {
    let p = crate::support::binary::Project::start(300, |_| {}).await;
    p.shop.counters().keep_log();
    let screen = p.on_terminal("dry-run --flow stock");
    assert!(screen.contains("adopted 300"), "{screen}");
    assert_eq!(
        crate::support::sims::product_reads(&p.shop),
        (0, 3),
        "300 products read in 3 pages, none alone"
    );
}

/// A first product sync's dry run as a person runs it (on a terminal) and as a script runs it
/// (through a pipe, as JSON), from the project's folder: the records the shop holds alike
/// planned as adopted, the changed prices as updates of `price`, and nothing stored, so the
/// run that follows adopts and updates exactly those; a second run has nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_sync_dry_run_plans_what_the_run_does_and_stores_nothing() {
    let p = crate::support::binary::Project::start(300, products_from_the_erp).await;
    let changed = p.raise_erp_prices(17, 5.0);
    let alike = 300 - changed.len();
    let screen = p.on_terminal("dry-run --flow products");
    for said in [
        format!("adopted {alike}"),
        format!("updated {}", changed.len()),
        "dry run: nothing was written".to_string(),
    ] {
        assert!(screen.contains(&said), "{said}: {screen}");
    }
    let out = p.run(&["dry-run", "--flow", "products", "--format", "json"]);
    let text = crate::support::binary::text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = &doc["runs"][0];
    assert_eq!(
        (
            run["counts"]["adopted"].as_u64(),
            run["counts"]["updated"].as_u64()
        ),
        (Some(alike as u64), Some(changed.len() as u64)),
        "{text}"
    );
    let records = run["records"].as_array().unwrap();
    let mut updates: Vec<&str> = records
        .iter()
        .filter(|r| r["decision"] == "update")
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    updates.sort_unstable();
    assert_eq!(updates, changed, "the changed prices, and only they");
    assert!(
        records
            .iter()
            .filter(|r| r["decision"] == "update")
            .all(|r| r["changes"].to_string().contains("price")),
        "{text}"
    );
    assert_eq!(
        records.iter().filter(|r| r["decision"] == "adopt").count(),
        alike
    );

    let out = p.run(&["run", "--once", "--flow", "products"]);
    let text = crate::support::binary::text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!("adopted {alike}"))
            && text.contains(&format!("updated {}", changed.len())),
        "the dry runs stored no binding: {text}"
    );
    let out = p.run(&["run", "--once", "--flow", "products"]);
    let text = crate::support::binary::text(&out);
    assert!(
        text.contains("updated 0") && text.contains("adopted 0"),
        "{text}"
    );
}

/// `-v` on a terminal: a log line that comes while the progress line is drawn starts a line of
/// its own (the progress line is cleared first and drawn again after it), rather than being
/// glued to the end of the progress text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_on_a_terminal_do_not_tear_the_progress_line() {
    let p = crate::support::binary::Project::start(300, products_from_the_erp).await;
    // Slow pages: the progress line is drawn before the shop's listing moves to its file.
    p.shop.faults().set(erpsync_sim::Faults {
        latency_ms: 60,
        ..Default::default()
    });
    let screen = p.on_terminal("dry-run --flow products --index-memory 0 -v");
    assert!(
        screen.contains(" products: "),
        "no progress line drawn:\n{screen}"
    );
    // What each log line's row holds before it, once the terminal has applied the carriage
    // returns and line clears: nothing.
    let logs: Vec<&str> = screen
        .split('\n')
        .filter(|row| row.contains(" INFO "))
        .collect();
    assert!(
        logs.iter()
            .any(|row| row.contains("moves to a temporary file")),
        "{screen}"
    );
    for row in logs {
        // The terminal ends each row with "\r\n".
        let row = row.trim_end_matches('\r');
        let shown = row.rsplit('\r').next().unwrap_or(row);
        let shown = shown.trim_start_matches("\x1b[2K");
        assert!(
            shown.starts_with("20"),
            "a log line glued to the progress line: {row:?}"
        );
    }
}

/// The daemon takes `--index-memory` too: started as a person starts it (`erpsync run`, from
/// its own folder, the admin token in the environment), a run asked for through the admin API
/// moves the shop's listing to its file at once, says so in the daemon's log, and writes the
/// changed prices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_with_the_index_memory_it_was_started_with() {
    const TOKEN: &str = "index-memory-admin";
    let p = crate::support::binary::Project::start(120, |doc| {
        products_from_the_erp(doc);
        // Run when asked only, so no firing of the schedule is running when the test asks.
        doc["flows"]["products"]["trigger"] = serde_json::json!({"manual": true});
    })
    .await;
    let changed = p.raise_erp_prices(11, 3.0);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = p.dir.path().join("daemon.log");
    let mut c = p.command(&["run", "--index-memory", "0", "--no-watch"]);
    c.args(["--listen", &format!("127.0.0.1:{port}")])
        .env("ERPSYNC_ADMIN_TOKEN", TOKEN)
        .env_remove("ERPSYNC_LOG")
        .env_remove("ERPSYNC_INDEX_MEMORY")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _daemon = Kill(c.spawn().unwrap());
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let wait = || tokio::time::sleep(std::time::Duration::from_millis(50));
    // Asked as soon as the admin API answers.
    loop {
        let asked = http
            .post(format!("http://127.0.0.1:{port}/api/flows/products/run"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({}))
            .send()
            .await;
        match asked {
            Ok(r) if r.status().is_success() => break,
            _ if std::time::Instant::now() < deadline => wait().await,
            other => panic!("the daemon did not take the run: {other:?}"),
        }
    }
    let written = || {
        changed.iter().all(|sku| {
            let erp = p
                .erp
                .products()
                .into_iter()
                .find(|e| &e.code == sku)
                .unwrap();
            p.shop
                .products()
                .iter()
                .any(|s| &s.sku == sku && s.price_gross == Some(erp.price))
        })
    };
    while !written() {
        assert!(
            std::time::Instant::now() < deadline,
            "prices not written: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        wait().await;
    }
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    while !logged().contains("run finished flow=products") {
        assert!(std::time::Instant::now() < deadline, "{}", logged());
        wait().await;
    }
    assert!(
        logged().contains("it moves to a temporary file"),
        "{}",
        logged()
    );
    // One write per changed price (other flows may fire on their schedules meanwhile, and
    // write elsewhere).
    let updates = p.shop.counters().count("PATCH", "/api/v2/products/{id}")
        + p.shop.counters().count("PUT", "/api/v2/products/{id}");
    assert_eq!(updates, changed.len() as u64, "{}", logged());
}

/// The demo on a terminal of 80 columns, the width a new terminal window opens at: each
/// flow's totals and the final verdict are broken between totals into rows that fit, the
/// totals kept in their column, instead of being cut mid-word by the terminal (`skip` /
/// `ped 0`). Through a pipe the same lines stay whole (the other demo tests read one line
/// per flow).
#[test]
fn the_demo_on_an_80_column_terminal_breaks_totals_between_words() {
    let dir = tempfile::tempdir().unwrap();
    let line = format!(
        "{} demo --no-rate-limit --products 40 --orders 8",
        env!("CARGO_BIN_EXE_erpsync")
    );
    let (screen, rows) = crate::support::terminal::rows_at_width(80, &line, |c| {
        c.current_dir(dir.path());
    });
    assert!(
        screen.contains("░ 0/21 first sync"),
        "no progress bar drawn:\n{screen}"
    );
    let flows = rows
        .iter()
        .filter(|r| r.starts_with("  ") && r.contains(" read "))
        .count();
    assert!(flows >= 20, "{flows} flows' totals in:\n{screen}");
    let mut continued = 0;
    let mut logical: Vec<String> = Vec::new();
    for row in &rows {
        if row.starts_with(&" ".repeat(31)) && !row.trim().is_empty() {
            continued += 1;
            let last = logical
                .last_mut()
                .expect("a continuation after a first row");
            last.push(' ');
            last.push_str(row.trim_start());
        } else {
            logical.push(row.clone());
        }
    }
    assert!(
        continued >= flows,
        "{continued} continuation rows:\n{screen}"
    );
    for l in logical.iter().filter(|l| l.contains(" read ")) {
        assert!(
            l.contains(", skipped ") && l.contains(", conflicts 0, failed 0"),
            "totals lost or cut: {l:?}"
        );
    }
    // The verdict, 82 columns here, breaks after its comma and is whole when joined.
    let at = rows
        .iter()
        .position(|r| r.contains("suppliers compared: 0 disagreements,"))
        .unwrap_or_else(|| panic!("{screen}"));
    assert_eq!(rows[at + 1].trim(), "0 failed records", "{screen}");
}

/// `run` in a terminal pane of 50 columns (beside an editor, a split of a 100-column
/// window): the progress line it redraws while a flow goes on is cut to the row with `…`,
/// where it wrapped before and every redraw left a row behind; the run's totals break
/// between words and nothing is lost from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_in_a_narrow_terminal_keeps_its_progress_line_to_one_row() {
    let shop = ShopSim::start(ShopOptions::unlimited()).await.unwrap();
    let erp = ErpSim::start(ErpOptions::unlimited()).await.unwrap();
    // Products only the ERP has: each one a create in the shop, at the pace the flow keeps
    // (40 requests a second), so the run lasts long enough for its line to be drawn.
    for i in 0..60 {
        erp.create_product(ErpProduct::new(
            &format!("NARROW-{i:03}"),
            "Produs de proba",
            10.0 + f64::from(i),
        ))
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let project = write_demo_project(dir.path());
    let mut envs = sim_env(&shop, &erp);
    envs.push((
        "ERPSYNC_STATE",
        format!("sqlite:{}", dir.path().join("state.sqlite").display()),
    ));
    envs.push(("SHOP_REQUESTS_PER_SECOND", "40".into()));
    let line = format!(
        "{} run --once {project} --flow products --init-state",
        env!("CARGO_BIN_EXE_erpsync")
    );
    let (screen, rows) = tokio::task::block_in_place(|| {
        crate::support::terminal::rows_at_width(50, &line, |c| {
            c.current_dir(dir.path())
                .envs(envs.iter().map(|(k, v)| (*k, v.as_str())));
        })
    });
    assert!(
        screen.contains("products: ") && screen.contains(" records, "),
        "no progress line drawn:\n{screen}"
    );
    let totals = rows
        .iter()
        .skip_while(|r| !r.trim_start().starts_with("products"))
        .map(|r| r.trim())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(totals.contains("created 60,"), "{screen}");
    assert_eq!(shop.products().len(), 60);
}

/// `status` on a terminal of 80 columns: its tables (128 columns and more when piped) are
/// laid out to fit, the columns that do not fit beside the flow's name under it, every
/// column still there; through a pipe the fixed layout stays, one row per flow.
#[test]
fn status_on_an_80_column_terminal_fits_its_tables_to_the_screen() {
    let dir = tempfile::tempdir().unwrap();
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flows/demo");
    let args = format!(
        "status {} --state sqlite:state.sqlite --init-state",
        demo.display()
    );
    let line = format!("{} {args}", env!("CARGO_BIN_EXE_erpsync"));
    let (screen, rows) = crate::support::terminal::rows_at_width(80, &line, |c| {
        c.current_dir(dir.path());
    });
    for column in [
        "enabled",
        "schedule",
        "next run",
        "reconcile",
        "next reconcile",
        "failures",
        "started",
        "outcome",
    ] {
        assert!(screen.contains(column), "no `{column}`:\n{screen}");
    }
    // Each flow named once per table it is split into, with its schedule and its last run.
    let stock = rows.iter().filter(|r| r.starts_with("stock ")).count();
    assert!(stock >= 3, "{screen}");

    let out = erpsync()
        .current_dir(dir.path())
        .args(args.split(' '))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let header = stdout.lines().next().unwrap();
    assert!(
        header.starts_with("flow ") && header.ends_with("next reconcile           failures"),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().filter(|r| r.starts_with("stock ")).count(),
        2,
        "{stdout}"
    );
}

/// The demo's project copied alone to another folder, as a person copies an example to
/// start from: its `include: [../common]` cannot be read there. `validate` says so once,
/// with how many unknown names it leaves for later, instead of a screen of "unknown system
/// `erp`" about systems the file itself declares.
#[test]
fn a_project_copied_without_its_shared_folder_is_told_what_is_missing_once() {
    let dir = tempfile::tempdir().unwrap();
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flows/demo/demo.yaml");
    std::fs::create_dir_all(dir.path().join("mine")).unwrap();
    std::fs::copy(demo, dir.path().join("mine/demo.yaml")).unwrap();
    let out = erpsync()
        .current_dir(dir.path())
        .args(["validate", "mine"])
        .output()
        .unwrap();
    let text = crate::support::stdout_and_stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(text.contains("error[E001]: cannot include"), "{text}");
    assert!(
        text.contains("problems of unknown names are not shown"),
        "{text}"
    );
    assert!(!text.contains("unknown system `erp`"), "{text}");
    assert!(text.contains("1 problem found"), "{text}");
}

/// `--help` on a terminal of 80 columns wraps each command's line to the screen, the
/// continuation under the description's column, rather than letting the terminal cut words.
#[test]
fn help_on_an_80_column_terminal_wraps_to_the_screen() {
    let dir = tempfile::tempdir().unwrap();
    for args in ["--help", "run --help", "failures --help"] {
        let line = format!("{} {args}", env!("CARGO_BIN_EXE_erpsync"));
        let (screen, rows) = crate::support::terminal::rows_at_width(80, &line, |c| {
            c.current_dir(dir.path());
        });
        assert!(screen.contains("Usage: erpsync"), "{screen}");
        // The commands' descriptions (up to 110 columns) continue on rows of their own,
        // under the description column (15 columns in).
        if args == "--help" {
            let under = " ".repeat(15);
            assert!(
                rows.iter()
                    .any(|r| r.starts_with(&under) && !r[15..].starts_with(' ')),
                "{screen}"
            );
        }
    }
}

/// A project started with `init` and its offline tests run on a terminal of 80 columns: the
/// line of a passed test (its file and description) breaks between words to fit, and so does
/// every other row.
#[test]
fn offline_tests_on_an_80_column_terminal_fit_the_screen() {
    let dir = tempfile::tempdir().unwrap();
    let out = erpsync()
        .current_dir(dir.path())
        .args([
            "init",
            "shopx",
            "--shop",
            "merchantpro",
            "--erp",
            "smartbill",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let line = format!("{} test .", env!("CARGO_BIN_EXE_erpsync"));
    let (screen, rows) = crate::support::terminal::rows_at_width(80, &line, |c| {
        c.current_dir(dir.path().join("shopx"));
    });
    let ok = rows
        .iter()
        .position(|r| r.starts_with("ok    ./tests/invoices.test.yaml — "))
        .unwrap_or_else(|| panic!("{screen}"));
    // Its description continues on the next row, under the file's name.
    let next = &rows[ok + 1];
    assert!(
        next.starts_with("      ") && !next[6..].starts_with(' '),
        "{screen}"
    );
    assert!(screen.contains("1 passed, 0 failed"), "{screen}");
}

/// A state file of a later release (a schema step this one does not know) is refused before
/// anything is read or written: what the step changed, this release cannot read right. Run
/// from the project's folder, through a pipe and on a terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_of_a_later_release_is_refused_and_left_as_it_is() {
    let p = crate::support::binary::Project::start(3, |_| {}).await;
    let args = ["run", "--once", "--flow", "products"];
    let out = p.run(&args);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let path = p.dir.path().join("state.sqlite");
    let version = |set: Option<i64>| {
        let conn = rusqlite::Connection::open(&path).unwrap();
        if let Some(v) = set {
            conn.pragma_update(None, "user_version", v).unwrap();
        }
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
            .unwrap()
    };
    let later = version(None) + 1;
    version(Some(later));
    let writes = p.shop.counters().writes();
    let refusal = format!(
        "the state file was written by a later release of erpsync (schema step {later}; this release knows steps up to {})",
        later - 1
    );

    let out = p.run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(stderr.contains(&refusal), "{stderr}");

    let line = format!(
        "{} {} {} --state {}",
        env!("CARGO_BIN_EXE_erpsync"),
        args.join(" "),
        p.path.display(),
        p.state
    );
    let mut c = crate::support::terminal::command(&line);
    c.envs(p.env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("NO_COLOR", "1")
        .current_dir(p.dir.path())
        .stdin(std::process::Stdio::null());
    let screen = String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned();
    assert!(screen.contains(&refusal), "{screen}");
    assert_ne!(
        crate::support::terminal::exit_status(&screen),
        Some(0),
        "{screen}"
    );
    assert_ne!(
        crate::support::terminal::exit_status(&screen),
        None,
        "{screen}"
    );

    assert_eq!(p.shop.counters().writes(), writes);
    assert_eq!(version(None), later);
}
