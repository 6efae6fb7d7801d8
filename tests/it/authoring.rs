//! Writing a flow for a new API as an integrator does, with the real binary from a folder
//! outside the checkout: `init` → `validate` → `call` against a live simulator (recorded) →
//! `test` offline; the shipped projects' offline tests; `run --record` replayed; and the
//! diffs a changed fixture or a bad test file produce.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use erpsync_sim::shop::Product;
use erpsync_sim::{ErpOptions, ErpSim, ShopOptions, ShopSim, seed_both};

fn erpsync_in(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_erpsync"));
    c.current_dir(dir);
    c
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Copies a folder recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_project_is_written_against_a_live_shop_and_tested_offline() {
    let shop = ShopSim::start(ShopOptions::unlimited()).await.unwrap();
    shop.create_product(Product::basic("SKU-A", "Bec 230V", 19.5, 4))
        .unwrap();
    shop.create_product(Product::basic("SKU-B", "Releu IP65", 42.0, 0))
        .unwrap();
    let (key, secret) = shop.credentials();
    let env = [
        ("SHOP_URL", shop.base_url()),
        ("SHOP_API_KEY", key.clone()),
        ("SHOP_API_SECRET", secret.clone()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = erpsync_in(dir.path())
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env_remove("ERPSYNC_STATE")
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        (out.status.code(), stdout, stderr)
    };

    // A project that is valid at once, with a test that passes at once.
    let (code, stdout, stderr) = run(&[
        "init",
        "shop-erp",
        "--shop",
        "merchantpro",
        "--erp",
        "blank",
    ]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    for f in [
        "erpsync.yaml",
        ".env.example",
        "common/entities.yaml",
        "schemas/flow.schema.json",
        "schemas/test.schema.json",
        "tests/products_to_erp.test.yaml",
    ] {
        assert!(
            dir.path().join("shop-erp").join(f).exists(),
            "{f}: {stdout}"
        );
    }
    let main = std::fs::read_to_string(dir.path().join("shop-erp/erpsync.yaml")).unwrap();
    assert!(main.starts_with("# yaml-language-server: $schema=schemas/flow.schema.json"));
    assert!(
        main.contains("\nstate:\n") && main.contains("\ndaemon:\n"),
        "{main}"
    );
    let env_example = std::fs::read_to_string(dir.path().join("shop-erp/.env.example")).unwrap();
    for var in ["SHOP_URL=", "SHOP_API_KEY=", "ERP_URL=", "ERP_TOKEN="] {
        assert!(env_example.contains(var), "{var} in {env_example}");
    }
    let (code, stdout, stderr) = run(&["validate", "shop-erp"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let (code, stdout, stderr) = run(&["test", "shop-erp"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("1 passed, 0 failed"), "{stdout}");
    let (code, _, stderr) = run(&[
        "init",
        "shop-erp",
        "--shop",
        "merchantpro",
        "--erp",
        "blank",
    ]);
    assert_eq!(code, Some(2), "a project is never written over: {stderr}");

    // One live request: what was sent, what came back, the records, each mapped field by
    // field with where it came from; kept for the offline test.
    let (code, stdout, stderr) = run(&[
        "call",
        "shop",
        "list_products",
        "-p",
        "shop-erp",
        "--since",
        "2026-01-01",
        "--record",
        "shop-erp/recorded/shop-products.exchanges.yaml",
    ]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("── request 1 ─ GET ") && stdout.contains("/api/v2/products?limit=100"),
        "{stdout}"
    );
    assert!(stdout.contains("authorization: ***"), "{stdout}");
    assert!(stdout.contains("── records ─ 2 extracted"), "{stdout}");
    assert!(
        stdout.contains("── mapped [1] ─ `product` key SKU-A"),
        "{stdout}"
    );
    let price_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("price"))
        .unwrap_or_default();
    assert!(
        price_line.contains("19.5") && price_line.contains("← $.price_gross"),
        "{stdout}"
    );
    assert!(
        stdout.contains("← template \"{{#if (eq status 'active')}}"),
        "{stdout}"
    );
    let recorded = std::fs::read_to_string(
        dir.path()
            .join("shop-erp/recorded/shop-products.exchanges.yaml"),
    )
    .unwrap();
    assert!(
        recorded.contains("SKU-A") && recorded.contains("***"),
        "{recorded}"
    );
    assert!(
        !recorded.contains(&secret) && !stdout.contains(&secret),
        "the shop's secret leaked:\n{recorded}"
    );
    // JSON output carries the same.
    let (code, stdout, _) = run(&["call", "shop", "list_products", "-p", "shop-erp", "--json"]);
    assert_eq!(code, Some(0));
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["records"].as_array().unwrap().len(), 2);
    assert_eq!(doc["mapped"][0]["canonical"]["sku"], "SKU-A");
    assert_eq!(doc["mapped"][0]["fields"][3]["from"], "$.sku");

    // Writes go to the live system only when asked; unknown names are usage errors.
    let (code, _, stderr) = run(&["call", "shop", "create_product", "-p", "shop-erp"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--allow-write"), "{stderr}");
    let (code, _, stderr) = run(&["call", "shop", "list_prodcts", "-p", "shop-erp"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("did you mean `list_products`"), "{stderr}");

    // The mapping, tested offline against what the shop answered.
    std::fs::write(
        dir.path().join("shop-erp/tests/products.test.yaml"),
        r#"description: the shop's products are planned into an empty ERP
flows: [products_to_erp]
dry_run: true
exchanges_from: [../recorded/shop-products.exchanges.yaml]
exchanges:
  - system: erp
    request: { method: GET, path: /products, query: { sku: SKU-A } }
    response: { body: { items: [] } }
  - system: erp
    request: { method: GET, path: /products, query: { sku: SKU-B } }
    response: { body: { items: [] } }
expect:
  flows:
    products_to_erp:
      status: ok
      counts: { read: 2, created: 2 }
      records:
        - { key: SKU-A, decision: create, target: erp, changes: { sku: SKU-A, name: Bec 230V, price: "19.50" } }
        - { key: SKU-B, decision: create, target: erp, changes: { sku: SKU-B, name: Releu IP65, price: "*" } }
"#,
    )
    .unwrap();
    let (code, stdout, stderr) = run(&["test", "shop-erp"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("2 passed, 0 failed"), "{stdout}");

    // The shop's answer changes under the test: the diff says what differs, record by
    // record and request by request.
    let path = dir
        .path()
        .join("shop-erp/recorded/shop-products.exchanges.yaml");
    std::fs::write(&path, recorded.replace("SKU-B", "SKU-C")).unwrap();
    let (code, stdout, stderr) = run(&["test", "shop-erp"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    for line in [
        "FAIL  shop-erp/tests/products.test.yaml — the shop's products are planned into an empty ERP",
        "products_to_erp: expected created 2, got 1",
        "products_to_erp: record `SKU-B`: expected create, but the run did not report it",
        "products_to_erp: record `SKU-C`: failed not expected (`erp.find_product` failed with status 400",
        "unexpected request: `erp` GET /products?sku=SKU-C (exchange #1: query `sku` is `SKU-C`, expected `SKU-A`; exchange #2: query `sku` is `SKU-C`, expected `SKU-B`)",
        "exchange #2 was never requested: `erp` GET /products?sku=SKU-B",
        "1 passed, 1 failed",
    ] {
        assert!(stdout.contains(line), "no `{line}` in:\n{stdout}");
    }
}

#[test]
fn committed_test_schema_matches_the_model() {
    let committed = std::fs::read_to_string(root().join("schemas/test.schema.json")).unwrap();
    assert!(
        committed == erpsync::authoring::testfile::schema_text(),
        "schemas/test.schema.json is stale: run `cargo run -- schema --test --output schemas/test.schema.json`"
    );
    // Unknown keys are refused by editors as by `erpsync test`.
    let schema: serde_json::Value = serde_json::from_str(&committed).unwrap();
    assert_eq!(schema["additionalProperties"], false, "{schema}");
}

#[test]
fn the_readme_example_test_file_is_a_valid_test_file() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme
        .find("# yaml-language-server: $schema=../schemas/test.schema.json")
        .expect("the README shows a test file");
    let end = start + readme[start..].find("\n```").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.test.yaml"), &readme[start..end]).unwrap();
    std::fs::write(
        dir.path().join("shop-orders.exchanges.yaml"),
        "exchanges:\n  - system: shop\n    request: { method: GET, path: /orders }\n    response: { body: { data: [] } }\n",
    )
    .unwrap();
    let cfg = erpsync::authoring::testfile::load(&dir.path().join("x.test.yaml")).unwrap();
    assert_eq!(cfg.flows, ["invoices"]);
    assert_eq!(cfg.exchanges.len(), 3, "its own two, then the recorded one");
    assert_eq!(cfg.exchanges[2].system, "shop");
    assert!(cfg.expect.flows["invoices"].records.is_some());
}

#[test]
fn the_shipped_projects_pass_their_offline_tests() {
    let out = erpsync_in(&root())
        .args(["test", "flows", "--format", "json"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["failed"], 0, "{stdout}");
    let files: Vec<&str> = doc["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["file"].as_str().unwrap())
        .collect();
    for project in [
        "demo",
        "demo-catalogue",
        "smartbill",
        "oblio",
        "tryton",
        "woocommerce",
    ] {
        assert!(
            files
                .iter()
                .any(|f| f.starts_with(&format!("flows/{project}/tests/"))),
            "no offline test of flows/{project}: {files:?}"
        );
    }
    for t in doc["tests"].as_array().unwrap() {
        assert_eq!(t["result"], "pass", "{t}");
        // A test that ran nothing would prove nothing.
        let read: u64 = t["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["counts"]["read"].as_u64().unwrap())
            .sum();
        assert!(read > 0, "{t}");
    }
    // Test files sit beside the flow files without being read as flow files.
    let out = erpsync_in(&root())
        .args(["validate", "flows"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
}

#[test]
fn a_changed_fixture_of_a_shipped_test_fails_with_a_readable_diff() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &root().join("flows/common"),
        &dir.path().join("flows/common"),
    );
    copy_dir(
        &root().join("flows/smartbill"),
        &dir.path().join("flows/smartbill"),
    );
    let test = dir.path().join("flows/smartbill/tests/invoice.test.yaml");
    let original = std::fs::read_to_string(&test).unwrap();
    // The invoice is expected with another quantity, and the shop's lock is not served.
    let changed = original
        .replace(
            "- { code: SKU-1, name: Bec 230V, quantity: 2, price: 19.5, taxPercentage: 19 }",
            "- { code: SKU-1, name: Bec 230V, quantity: 3, price: 19.5, taxPercentage: 19 }",
        )
        .replace(
            "request: { operation: lock_order, id: \"501\" }",
            "request: { operation: lock_order, id: \"502\" }",
        );
    assert_ne!(changed, original);
    std::fs::write(&test, changed).unwrap();
    let out = erpsync_in(dir.path())
        .args(["test", "flows/smartbill"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    for line in [
        "FAIL  flows/smartbill/tests/invoice.test.yaml",
        "`smartbill` POST /invoice (exchange #2): body.products[0].quantity: expected 3, got 2",
        "unexpected request: `shop` POST /orders/501/lock (no exchange for this method and path)",
        "exchange #3 was never requested: `shop` POST /orders/502/lock",
        "ok    flows/smartbill/tests/stock.test.yaml",
        "1 passed, 1 failed",
    ] {
        assert!(stdout.contains(line), "no `{line}` in:\n{stdout}");
    }

    // A test file with a mistyped key is a bad configuration (78), said with the key.
    std::fs::write(
        dir.path().join("flows/smartbill/tests/typo.test.yaml"),
        "flows: [stock]\nexpect:\n  flows:\n    stock:\n      count: { read: 1 }\n",
    )
    .unwrap();
    let out = erpsync_in(dir.path())
        .args(["test", "flows/smartbill", "--filter", "typo"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78), "{stdout}{stderr}");
    assert!(
        stderr.contains("typo.test.yaml") && stderr.contains("count"),
        "{stderr}"
    );
    // So is an exchange naming an operation the system does not have.
    std::fs::write(
        dir.path().join("flows/smartbill/tests/typo.test.yaml"),
        "flows: [stock]\nexchanges:\n  - system: shop\n    request: { operation: lock_ordr, id: \"1\" }\n    response: { body: {} }\n",
    )
    .unwrap();
    let out = erpsync_in(dir.path())
        .args(["test", "flows/smartbill", "--filter", "typo"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78), "{stdout}{stderr}");
    assert!(
        stderr.contains("exchanges[0]: system `shop` has no operation `lock_ordr`"),
        "{stderr}"
    );
    // A folder without tests is a usage error, not a pass.
    let out = erpsync_in(dir.path())
        .args(["test", "flows/common"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
}

#[test]
fn every_template_of_init_validates_and_passes_its_test() {
    let dir = tempfile::tempdir().unwrap();
    for shop in ["merchantpro", "woocommerce"] {
        for erp in ["smartbill", "oblio", "tryton", "blank"] {
            let name = format!("{shop}-{erp}");
            let out = erpsync_in(dir.path())
                .args(["init", &name, "--shop", shop, "--erp", erp])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(0), "{name}: {:?}", text(&out));
            // A WooCommerce shop's order flow takes its webhooks; the secret has no default.
            let main =
                std::fs::read_to_string(dir.path().join(&name).join("erpsync.yaml")).unwrap();
            let wired = main.contains("      webhook: woo_orders\n")
                && main.contains("secret: ${WOO_WEBHOOK_SECRET:-}");
            assert_eq!(
                wired,
                shop == "woocommerce" && erp != "blank",
                "{name}:\n{main}"
            );
            let out = erpsync_in(dir.path())
                .args(["validate", &name])
                .output()
                .unwrap();
            let (stdout, stderr) = text(&out);
            assert_eq!(out.status.code(), Some(0), "{name}: {stdout}{stderr}");
            assert!(stderr.is_empty(), "{name}: warnings: {stderr}");
            let out = erpsync_in(dir.path())
                .args(["test", &name])
                .output()
                .unwrap();
            let (stdout, stderr) = text(&out);
            assert_eq!(out.status.code(), Some(0), "{name}: {stdout}{stderr}");
            assert!(stdout.contains("1 passed, 0 failed"), "{name}: {stdout}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_run_replays_offline() {
    let shop = ShopSim::start(ShopOptions::unlimited()).await.unwrap();
    let erp = ErpSim::start(ErpOptions::unlimited()).await.unwrap();
    seed_both(&shop, &erp, 3, 0);
    shop.create_product(Product::basic("NEW-1", "Doar in magazin", 12.0, 1))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("flows/common"), &dir.path().join("common"));
    copy_dir(&root().join("flows/demo"), &dir.path().join("demo"));
    let (key, secret) = shop.credentials();
    let (id, client_secret) = erp.credentials();
    let env = [
        ("SHOP_URL", shop.base_url()),
        ("ERP_URL", erp.base_url()),
        ("SHOP_API_KEY", key),
        ("SHOP_API_SECRET", secret.clone()),
        ("ERP_CLIENT_ID", id),
        ("ERP_CLIENT_SECRET", client_secret.clone()),
        ("SHOP_REQUESTS_PER_SECOND", "1000".to_string()),
        ("ERP_REQUESTS_PER_SECOND", "1000".to_string()),
    ];
    let state = format!("sqlite:{}", dir.path().join("s.sqlite").display());
    let out = erpsync_in(dir.path())
        .args([
            "run",
            "--once",
            "demo",
            "--flow",
            "products",
            "--state",
            &state,
            "--init-state",
            "--record",
            "demo/tests/products.test.yaml",
        ])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stderr.contains("wrote the run as a test"), "{stderr}");
    let recorded =
        std::fs::read_to_string(dir.path().join("demo/tests/products.test.yaml")).unwrap();
    assert!(
        !recorded.contains(&secret) && !recorded.contains(&client_secret),
        "a secret leaked into the recording:\n{recorded}"
    );
    assert!(
        recorded.contains("decision: create") && recorded.contains("NEW-1"),
        "{recorded}"
    );
    // The shop's absolute links point at no real address in the recording.
    assert!(!recorded.contains(&shop.base_url()), "{recorded}");

    // A second run starts from the state the first left (bindings, cursor): the recording
    // carries it, so its replay sees the same state.
    shop.create_product(Product::basic("NEW-2", "Tot doar in magazin", 13.0, 1))
        .unwrap();
    let out = erpsync_in(dir.path())
        .args([
            "run",
            "--once",
            "demo",
            "--flow",
            "products",
            "--state",
            &state,
            "--record",
            "demo/tests/again.test.yaml",
        ])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let again = std::fs::read_to_string(dir.path().join("demo/tests/again.test.yaml")).unwrap();
    assert!(
        again.contains("bindings:") && again.contains("cursors:"),
        "{again}"
    );

    // Replayed with the simulators gone: the same plans, the same requests.
    drop(shop);
    drop(erp);
    let out = erpsync_in(dir.path())
        .args(["test", "demo"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("ok    demo/tests/products.test.yaml")
            && stdout.contains("ok    demo/tests/again.test.yaml"),
        "{stdout}"
    );
    assert!(stdout.contains("products: read 4, created 1"), "{stdout}");
    // The shipped test came along with the copy.
    assert!(stdout.contains("3 passed, 0 failed"), "{stdout}");
}
