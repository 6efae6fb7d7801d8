//! The commands as a user runs them: the demo, run/dry-run output and exit codes, the
//! failure store (list, show, retry, discard) after a record fails and the cause is fixed,
//! and `status` naming the node that runs a flow.

use std::process::Command;

use erpsync::sim::erp::ErpProduct;
use erpsync::sim::shop::{Order, Product};
use erpsync::sim::{ErpOptions, ErpSim, ShopOptions, ShopSim, seed_both};
use erpsync::state::{SqliteStore, StateStore};

use crate::engine::demo_project;

fn erpsync() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_erpsync"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
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
    let project = dir.path().join("project.yaml");
    std::fs::write(
        &project,
        serde_json::to_string_pretty(&demo_project()).unwrap(),
    )
    .unwrap();
    let project = project.to_str().unwrap().to_string();
    let state = format!("sqlite:{}", dir.path().join("state.sqlite").display());
    let (key, secret) = shop.credentials();
    let (id, client_secret) = erp.credentials();
    let envs = [
        ("SHOP_URL", shop.base_url()),
        ("ERP_URL", erp.base_url()),
        ("SHOP_API_KEY", key),
        ("SHOP_API_SECRET", secret),
        ("ERP_CLIENT_ID", id),
        ("ERP_CLIENT_SECRET", client_secret),
        ("ERPSYNC_STATE", state),
    ];
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
    let second_id = list
        .iter()
        .find(|f| f["key"] == bad2.number.as_str())
        .unwrap()["id"]
        .as_i64()
        .unwrap()
        .to_string();
    let error = first["error"].as_str().unwrap();
    assert!(error.contains("GHOST-9"), "{error}");

    let (code, stdout, _) = run(&[
        "failures", "show", &project, "--id", &first_id, "--format", "json",
    ]);
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shown["payload"]["lines"][0]["code"], "GHOST-9");
    assert_eq!(shown["source_record"]["number"], bad.number.as_str());

    // Fix the cause of the first, retry it by id: it goes through exactly once.
    erp.create_product(ErpProduct::new("GHOST-9", "Acum exista", 12.0))
        .unwrap();
    let (code, stdout, _) = run(&["failures", "retry", &project, "--id", &first_id]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("created 1"), "{stdout}");
    assert_eq!(erp.orders_by_reference(&bad.number).len(), 1);

    // The second is given up on.
    let (code, _, _) = run(&["failures", "discard", &project, "--id", &second_id]);
    assert_eq!(code, 0);
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
    let store = SqliteStore::open(&path).unwrap();
    let hour = std::time::Duration::from_secs(3600);
    assert!(store.try_lease("flow:stock", "node-b", now, hour).unwrap());
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
    }
}
