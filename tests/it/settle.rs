//! `erpsync failures pending|settle` through the binary: an ERP that can neither be searched
//! for orders nor de-duplicates them loses the answers to two order exports, one applied and
//! one not. Runs hold both back; a person settles them and each order ends up there once.

use std::collections::HashMap;
use std::process::{Command, Output};

use erpsync_sim::{ErpOptions, ErpSim, FailRule, Faults, ShopOptions, ShopSim, seed_both};
use serde_json::json;

use crate::support::binary::text;
use crate::support::project::{demo_project, sim_env};
use crate::support::sims::confirm_order;

struct Cli {
    project: std::path::PathBuf,
    state: String,
    env: HashMap<&'static str, String>,
}

impl Cli {
    /// `erpsync VERB SUBVERB PROJECT --state STATE REST…`
    fn run(&self, args: &[&str]) -> Output {
        let (verb, rest) = args.split_at(2);
        Command::new(env!("CARGO_BIN_EXE_erpsync"))
            .args(verb)
            .arg(&self.project)
            .args(["--state", &self.state, "--init-state"])
            .args(rest)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "off")
            .output()
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_unknown_outcome_are_settled_by_hand() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let shop = ShopSim::start(ShopOptions::unlimited()).await.unwrap();
    let erp = ErpSim::start(ErpOptions::unlimited()).await.unwrap();
    let items = seed_both(&shop, &erp, 5, 3);
    let mut numbers = Vec::new();
    for (i, item) in items.iter().take(2).enumerate() {
        numbers.push(confirm_order(&shop, i, &[(item, 1)]).number);
    }
    let (applied, lost) = (numbers[0].as_str(), numbers[1].as_str());

    // Orders cannot be looked up or listed in this ERP, and it takes no idempotency key.
    let mut doc = demo_project();
    let erp_sys = &mut doc["systems"]["erp"];
    erp_sys["operations"]["create_order"]
        .as_object_mut()
        .unwrap()
        .remove("idempotency_key");
    let order = erp_sys["entities"]["order"].as_object_mut().unwrap();
    order.remove("lookup");
    order.remove("list");
    erp_sys.as_object_mut().unwrap().remove("rate_limit");
    erp_sys["retry"] = json!({"max_attempts": 2, "initial_backoff_ms": 5, "max_backoff_ms": 10});
    doc["systems"]["shop"]["rate_limit"] = json!({"per_second": 1000.0, "burst": 1000});
    doc["flows"]
        .as_object_mut()
        .unwrap()
        .remove("orders_from_erp");
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project.yaml");
    std::fs::write(&project, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let cli = Cli {
        project,
        state: format!("sqlite:{}", dir.path().join("state.sqlite").display()),
        env: sim_env(&shop, &erp).into_iter().collect(),
    };

    // The first export is applied and its answer lost; the second is lost before it applies.
    erp.faults().set(Faults {
        rules: vec![
            FailRule::new("POST", "/api/orders", 503, 1).after_apply(),
            FailRule::new("POST", "/api/orders", 503, 1),
        ],
        ..Faults::default()
    });
    let export = ["run", "--once", "--flow", "orders_to_erp"];
    let first = cli.run(&export);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    erp.faults().set(Faults::default());
    let count = |n: &str| erp.orders_by_reference(n).len();
    assert_eq!((count(applied), count(lost)), (1, 0));

    // Nothing can tell whether they arrived: every run holds them back.
    let held = cli.run(&export);
    assert_eq!(held.status.code(), Some(1), "{}", text(&held));
    assert!(text(&held).contains("held back"), "{}", text(&held));
    assert_eq!((count(applied), count(lost)), (1, 0));

    let pending = cli.run(&["failures", "pending"]);
    assert!(pending.status.success(), "{}", text(&pending));
    let listed = text(&pending);
    assert!(
        listed.contains(applied) && listed.contains(lost),
        "{listed}"
    );
    let json_list = cli.run(&["failures", "pending", "--json"]);
    let entries: serde_json::Value = serde_json::from_slice(&json_list.stdout).unwrap();
    assert_eq!(entries.as_array().unwrap().len(), 2, "{entries:#}");

    // One of the two options is required, and only one.
    let neither = cli.run(&[
        "failures",
        "settle",
        "--flow",
        "orders_to_erp",
        "--key",
        lost,
    ]);
    assert_eq!(neither.status.code(), Some(2), "{}", text(&neither));
    let unknown = cli.run(&[
        "failures",
        "settle",
        "--flow",
        "orders_to_erp",
        "--key",
        "NOPE",
        "--not-sent",
    ]);
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown));
    assert!(
        text(&unknown).contains("no pending write of `NOPE`"),
        "{}",
        text(&unknown)
    );

    // Checked by hand: the first arrived, the second did not.
    let erp_id = erp.orders_by_reference(applied)[0].id.to_string();
    let bound = cli.run(&[
        "failures",
        "settle",
        "--flow",
        "orders_to_erp",
        "--key",
        applied,
        "--target-id",
        &erp_id,
    ]);
    assert!(bound.status.success(), "{}", text(&bound));
    let dropped = cli.run(&[
        "failures",
        "settle",
        "--flow",
        "orders_to_erp",
        "--key",
        lost,
        "--not-sent",
    ]);
    assert!(dropped.status.success(), "{}", text(&dropped));
    let none = cli.run(&["failures", "pending"]);
    assert!(text(&none).contains("no pending writes"), "{}", text(&none));

    // The settled one is no failure any more; the dropped one is retried and sent once.
    let retry = cli.run(&["failures", "retry", "--all"]);
    assert!(retry.status.success(), "{}", text(&retry));
    let again = cli.run(&export);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!((count(applied), count(lost)), (1, 1));
    let list = cli.run(&["failures", "list"]);
    assert!(text(&list).contains("no failures"), "{}", text(&list));
}
