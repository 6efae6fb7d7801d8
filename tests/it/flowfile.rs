//! What a flow file says must happen: rate limiting stays rate limiting whatever the error
//! rules say, related records are found under their normalised keys, one-way flows compare
//! with what the target holds, several flows on one entity pair each see their own fields,
//! manual and disabled flows run only when they should, and a dry run of several flows
//! predicts the run flow after flow.

use erpsync::engine::{Decision, RunReport};
use erpsync::state::{FlowName, Store};
use erpsync_sim::Faults;
use erpsync_sim::shop::Order;
use serde_json::json;

use crate::support::harness::Harness;
use crate::support::project::sim_env;

/// A flow's counts and its decisions by key.
type Outcome = (erpsync::engine::Counts, Vec<(String, Decision)>);

fn outcome(r: &RunReport) -> Outcome {
    let mut d: Vec<(String, Decision)> = r
        .records
        .iter()
        .map(|x| (x.key.clone(), x.decision))
        .collect();
    d.sort_by(|a, b| a.0.cmp(&b.0));
    (r.counts.clone(), d)
}

/// `flows`, in order, planned by a dry run over the state as it is (which writes nothing),
/// then run: what each was predicted to do and what it did.
async fn plan_then_run(
    h: &Harness,
    edit: impl FnOnce(&mut serde_json::Value),
    flows: &[&str],
) -> (Vec<Outcome>, Vec<Outcome>) {
    let plan_engine =
        crate::support::harness::build(&h.shop, &h.erp, &h.dir, h.store.clone(), &h.clock, edit)
            .planning();
    let dry = erpsync::engine::RunOptions {
        dry_run: true,
        ..Default::default()
    };
    h.reset_counters();
    let mut planned = Vec::new();
    for (i, f) in flows.iter().enumerate() {
        // As `erpsync dry-run` does: the plan keeps only what the flows after it read.
        plan_engine.plan_ahead(f, &flows[i + 1..]);
        planned.push(outcome(&plan_engine.run(f, &dry).await.unwrap()));
    }
    assert_eq!(h.writes(), (0, 0), "a dry run writes nothing");
    let mut ran = Vec::new();
    for f in flows {
        ran.push(outcome(&h.run(f).await));
    }
    (planned, ran)
}

/// Every flow `run --once` runs, in its order, as one report per flow.
async fn run_all(h: &Harness) -> Vec<RunReport> {
    let flows = h.engine.project.select(&[]).unwrap();
    let mut out = Vec::new();
    for f in flows {
        out.push(h.run(&f.id).await);
    }
    out
}

fn place(h: &Harness, email: &str, status: &str, skus: &[(&str, i64)]) -> Order {
    let lines: Vec<(&str, i64, f64)> = skus
        .iter()
        .map(|(s, q)| {
            let price = h.shop.product_by_sku(s).unwrap().price_gross.unwrap();
            (*s, *q, price)
        })
        .collect();
    let mut o = Order::new(email, &lines);
    o.customer.first_name = "Maria".into();
    o.customer.last_name = "Stan".into();
    o.shipping_status = status.into();
    h.shop.create_order(o).unwrap()
}

fn failures(reports: &[RunReport]) -> Vec<String> {
    reports
        .iter()
        .flat_map(|r| {
            r.records
                .iter()
                .filter(|x| x.decision == Decision::Failed)
                .map(move |x| format!("{}/{}: {:?}", r.flow, x.key, x.reason))
                .chain(r.errors.iter().map(move |e| format!("{}: {e}", r.flow)))
        })
        .collect()
}

/// Issue 17.1: the shipped demo flows (MerchantPro's `4xx` error rule included) run through
/// shops and an ERP that answer one request in five with a 429, with and without a
/// `Retry-After`, and no record fails: every 429 is waited out and retried.
#[tokio::test]
async fn shipped_flows_wait_out_injected_429s_without_failed_records() {
    for retry_after in [Some(1), None] {
        let h = Harness::new(30, |_| {}).await;
        let faults = Faults {
            rate_limit_rate: 0.2,
            retry_after_secs: retry_after,
            ..Faults::default()
        };
        h.shop.faults().set(faults.clone());
        h.erp.faults().set(faults);
        for i in 0..4 {
            place(
                &h,
                &format!("buyer{i}@example.com"),
                "confirmed",
                &[("SKU-000001", 1), ("SKU-000002", 2)],
            );
        }
        let reports = run_all(&h).await;
        assert_eq!(failures(&reports), Vec::<String>::new(), "{retry_after:?}");
        let created: u64 = reports.iter().map(|r| r.counts.created).sum();
        assert!(created >= 4, "the orders were exported: {reports:#?}");
        let limited: u64 = h
            .engine
            .systems
            .values()
            .map(|s| s.stats().snapshot().responses_4xx)
            .sum();
        assert!(limited >= 10, "429s were injected ({limited})");
        assert!(h.store.failures.failures(None).await.unwrap().is_empty());
    }
}

/// Issue 17.2: an order whose buyer's e-mail is written with capitals and a trailing space
/// creates that customer through `requires` under its normalised key, and the order's `ref`
/// to the customer finds it there; keys named from outside (`then`, a webhook, a retry) are
/// normalised the same way.
#[tokio::test]
async fn requires_ref_and_named_keys_use_the_normalised_key() {
    let h = Harness::new(5, |_| {}).await;
    let order = place(
        &h,
        "Maria.Stan@Example.com ",
        "confirmed",
        &[("SKU-000001", 1)],
    );
    let r = h.run("orders_to_erp").await;
    assert_eq!(failures(std::slice::from_ref(&r)), Vec::<String>::new());
    assert_eq!(r.counts.created, 1, "{r:#?}");
    let client = h.erp.client_by_email("maria.stan@example.com").unwrap();
    let exported = h.erp.orders_by_reference(&order.number);
    assert_eq!(exported.len(), 1);
    assert_eq!(exported[0].client.id, client.id);

    // A key written as a person would type it selects the record all the same.
    let quantity = h.shop.product_by_sku("SKU-000002").unwrap().stock.unwrap() + 5;
    h.erp
        .set_stock("SKU-000002", crate::support::project::WAREHOUSE, quantity)
        .unwrap();
    let r = h
        .run_with(
            "stock",
            erpsync::engine::RunOptions {
                keys: Some(vec![" sku-000002".into()]),
                details: true,
                ..Default::default()
            },
        )
        .await;
    let keys: Vec<(&str, Decision)> = r
        .records
        .iter()
        .map(|x| (x.key.as_str(), x.decision))
        .collect();
    assert_eq!(keys, [("SKU-000002", Decision::Update)], "{r:#?}");
    assert_eq!(
        h.shop.product_by_sku("SKU-000002").unwrap().stock,
        Some(quantity)
    );
}

/// Issue 17.3: a `create_missing` flow adopts a pair whose prices differ (it may not update);
/// a one-way `update` flow on the same pair then compares the shop's price with the ERP's
/// last known one, not with its own last reading of the shop, and corrects it on its first
/// run — and only once.
#[tokio::test]
async fn an_adopted_pair_that_differs_is_updated_by_the_update_flow() {
    let h = Harness::new(3, |doc| {
        doc["flows"] = json!({
            "adopt": {"entity": "product", "from": "shop", "to": "erp", "mode": "create_missing"},
            "prices": {"entity": "product", "from": "shop", "to": "erp", "mode": "update",
                       "fields": ["price"]},
        });
    })
    .await;
    let p = h.shop.product_by_sku("SKU-000001").unwrap();
    h.shop.update_product(p.id, |p| {
        p.price_gross = Some(p.price_gross.unwrap() + 10.0)
    });
    let shop_price = p.price_gross.unwrap() + 10.0;
    let adopt = h.run("adopt").await;
    assert_eq!(adopt.counts.adopted, 3, "{adopt:#?}");
    assert_ne!(erp_price(&h, "SKU-000001"), shop_price);

    h.reset_counters();
    let prices = h.run("prices").await;
    let updated: Vec<&str> = prices
        .records
        .iter()
        .filter(|r| r.decision == Decision::Update)
        .map(|r| r.key.as_str())
        .collect();
    assert_eq!(updated, ["SKU-000001"], "{prices:#?}");
    assert_eq!(erp_price(&h, "SKU-000001"), shop_price);
    assert_eq!(h.writes(), (0, 1));

    h.reset_counters();
    let again = h.run("prices").await;
    assert_eq!(again.counts.updated, 0, "{again:#?}");
    assert_eq!(h.writes(), (0, 0), "nothing unchanged is written");
}

fn erp_price(h: &Harness, sku: &str) -> f64 {
    h.erp
        .products()
        .into_iter()
        .find(|p| p.code == sku)
        .unwrap()
        .price
}

/// Issue 17.4: two flows from the ERP to the shop on the order pair, one carrying the status
/// and one the AWB, each write their own field although the other ran first; what they wrote
/// is not sent back by the flow going the other way.
#[tokio::test]
async fn two_flows_on_one_pair_each_see_their_own_fields() {
    let h = Harness::new(3, |doc| {
        let flows = doc["flows"].as_object_mut().unwrap();
        flows.remove("orders_from_erp");
        flows.insert(
            "status_back".into(),
            json!({"entity": "order", "from": "erp", "to": "shop", "mode": "update",
                   "fields": ["status"], "skip_nulls": true}),
        );
        flows.insert(
            "awb_back".into(),
            json!({"entity": "order", "from": "erp", "to": "shop", "mode": "update",
                   "fields": ["awb"], "skip_nulls": true}),
        );
    })
    .await;
    let order = place(&h, "ana@example.com", "confirmed", &[("SKU-000001", 1)]);
    let r = h.run("orders_to_erp").await;
    assert_eq!(r.counts.created, 1, "{r:#?}");
    let erp_order = h.erp.orders_by_reference(&order.number).remove(0);
    h.erp.set_order_status(erp_order.id, "shipped").unwrap();
    h.erp.set_awb(erp_order.id, "AWB-123").unwrap();

    let status = h.run("status_back").await;
    assert_eq!(status.counts.updated, 1, "{status:#?}");
    let awb = h.run("awb_back").await;
    assert_eq!(
        awb.counts.updated, 1,
        "the AWB flow saw its own change: {awb:#?}"
    );
    let shop_order = h.shop.order_by_number(&order.number).unwrap();
    assert_eq!(shop_order.awb.as_deref(), Some("AWB-123"));
    assert_eq!(shop_order.shipping_status, "shipped");

    // Nothing to do the second time, in either flow; the export flow keeps the order locked.
    h.reset_counters();
    for f in ["status_back", "awb_back", "orders_to_erp"] {
        let r = h.run(f).await;
        assert_eq!(r.counts.updated + r.counts.created, 0, "{f}: {r:#?}");
    }
    assert_eq!(h.writes(), (0, 0));
}

/// Issue 17.5: `run --once` without `--flow` runs the scheduled flows; the manual customers
/// flow runs only for the buyers of exported orders (through `requires`), not for every
/// customer of the shop. A disabled flow never runs through `requires`: `validate` refuses
/// an enabled flow requiring one, and a disabled flow run by hand fails the record clearly.
#[tokio::test]
async fn manual_and_disabled_flows_run_only_when_they_should() {
    let h = Harness::new(3, |_| {}).await;
    let selected: Vec<String> = h
        .engine
        .project
        .select(&[])
        .unwrap()
        .iter()
        .map(|f| f.id.clone())
        .collect();
    assert!(
        !selected.contains(&"customers_to_erp".to_string()),
        "{selected:?}"
    );
    assert!(
        selected.contains(&"orders_to_erp".to_string()),
        "{selected:?}"
    );
    h.shop.seed_customers(6, 3);
    place(&h, "buyer@example.com", "confirmed", &[("SKU-000001", 1)]);
    let reports = run_all(&h).await;
    assert_eq!(failures(&reports), Vec::<String>::new());
    let clients: Vec<String> = h.erp.clients().into_iter().map(|c| c.email).collect();
    assert_eq!(
        clients,
        ["buyer@example.com"],
        "only the buyer of the exported order"
    );

    // Both disabled: valid; run by hand, the order fails and says why.
    let mut h = h;
    h.reload(|doc| {
        doc["flows"]["customers_to_erp"]["enabled"] = json!(false);
        doc["flows"]["orders_to_erp"]["enabled"] = json!(false);
    });
    place(&h, "other@example.com", "confirmed", &[("SKU-000002", 1)]);
    let r = h
        .run_with(
            "orders_to_erp",
            erpsync::engine::RunOptions {
                force: true,
                details: true,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(r.counts.failed, 1, "{r:#?}");
    let failed = r.records.iter().find(|x| x.decision == Decision::Failed);
    let reason = failed.and_then(|x| x.reason.clone()).unwrap_or_default();
    assert!(
        reason.contains("required flow `customers_to_erp` is disabled"),
        "{reason}"
    );
    assert!(h.erp.client_by_email("other@example.com").is_none());
}

#[test]
fn an_enabled_flow_requiring_a_disabled_one_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let mut doc = crate::support::project::demo_project();
    doc["flows"]["customers_to_erp"]["enabled"] = json!(false);
    let file = dir.path().join("project.yaml");
    std::fs::write(&file, serde_yaml_text(&doc)).unwrap();
    let (project, diags) = erpsync::compile::project::check(std::slice::from_ref(&file));
    assert!(project.is_none());
    let d: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
    assert_eq!(diags.len(), 1, "{d:#?}");
    assert_eq!(diags[0].code.as_str(), "E011");
    assert_eq!(diags[0].path, "flows.orders_to_erp.requires.0.flow");
    assert!(
        d[0].contains("requires flow `customers_to_erp`, which is disabled"),
        "{}",
        d[0]
    );
}

/// JSON is YAML; pretty-printed, every value is on a line of its own, so positions differ.
fn serde_yaml_text(doc: &serde_json::Value) -> String {
    serde_json::to_string_pretty(doc).unwrap()
}

/// Issue 17.6: a dry run of two flows on one engine predicts the real run flow after flow:
/// the products the first flow adopts are bound for the second, which skips them instead
/// of adopting them a second time.
#[tokio::test]
async fn a_dry_run_of_several_flows_carries_each_flows_effects_into_the_next() {
    let edit = |doc: &mut serde_json::Value| {
        doc["flows"] = json!({
            "to_erp": {"entity": "product", "from": "shop", "to": "erp", "mode": "create_missing"},
            "to_shop": {"entity": "product", "from": "erp", "to": "shop", "mode": "create_missing",
                        "after": ["to_erp"]},
        });
    };
    let h = Harness::new(6, edit).await;
    // One product only in the shop: `to_erp` creates it, `to_shop` then reads it back from
    // the ERP, bound.
    let mut only_in_shop = h.shop.products().remove(0);
    only_in_shop.sku = "SHOP-ONLY-1".into();
    h.shop.create_product(only_in_shop).unwrap();
    let plan_engine =
        crate::support::harness::build(&h.shop, &h.erp, &h.dir, h.store.clone(), &h.clock, edit)
            .planning();
    let dry = erpsync::engine::RunOptions {
        dry_run: true,
        ..Default::default()
    };
    let mut planned = Vec::new();
    let flows = ["to_erp", "to_shop"];
    for (i, f) in flows.iter().enumerate() {
        plan_engine.plan_ahead(f, &flows[i + 1..]);
        planned.push(plan_engine.run(f, &dry).await.unwrap().counts);
    }
    h.reset_counters();
    let mut ran = Vec::new();
    for f in ["to_erp", "to_shop"] {
        ran.push(h.run(f).await.counts);
    }
    assert_eq!((ran[0].adopted, ran[0].created), (6, 1));
    assert_eq!((ran[1].read, ran[1].skipped), (7, 7), "{:#?}", ran[1]);
    assert_eq!(planned, ran, "the dry run predicted the run");
}

/// Issue 17.6: what a flow would create is part of the plan. The products the first flow
/// would create in the shop are there for the stock flow's dry run after it, which predicts
/// the stock updates the run then makes for them instead of "not in `shop`", whether the
/// shop is searched by SKU or read in full.
#[tokio::test]
async fn a_dry_run_sees_the_records_an_earlier_flow_of_the_plan_would_create() {
    for searchable in [true, false] {
        let edit = move |doc: &mut serde_json::Value| {
            if !searchable {
                // The shop's stock without `lookup`: found by reading the shop in full.
                doc["systems"]["shop"]["entities"] = json!({"stock": {
                    "list": "list_products", "update": "update_product",
                    "read": {"sku": "$.sku", "quantity": {"path": "$.stock", "default": 0}},
                    "write": {"stock": "$.quantity"}
                }});
            }
            doc["flows"] = json!({
                "products": {"entity": "product", "from": "erp", "to": "shop",
                             "mode": "create_missing"},
                "stock": {"entity": "stock", "from": "erp", "to": "shop", "mode": "update",
                          "after": ["products"],
                          "incremental": {"start": "2026-01-01", "overlap_secs": 0}},
            });
        };
        let h = Harness::new(6, edit).await;
        let mut new_in_shop = Vec::new();
        for p in h.erp.products().into_iter().take(2) {
            let id = h.shop.product_by_sku(&p.code).unwrap().id;
            h.shop.delete_product(id).unwrap();
            h.erp
                .set_stock(&p.code, crate::support::project::WAREHOUSE, 7)
                .unwrap();
            new_in_shop.push(p.code);
        }
        let (planned, ran) = plan_then_run(&h, edit, &["products", "stock"]).await;
        assert_eq!(ran[0].0.created, 2, "{:#?}", ran[0]);
        for sku in &new_in_shop {
            assert!(
                ran[1].1.contains(&(sku.clone(), Decision::Update)),
                "the run sets the stock of the new product {sku}: {:#?}",
                ran[1]
            );
            assert_eq!(h.shop.product_by_sku(sku).unwrap().stock, Some(7));
        }
        assert_eq!(
            planned, ran,
            "the dry run predicted the run (shop searchable: {searchable})"
        );
    }
}

/// A plan holds only what the flows still to be planned read: the dry run of one flow keeps
/// none of its records (so a catalogue of any size is planned in flat memory), and in a plan
/// of products then stock, the products to be created in the shop stay for the stock flow
/// while the product bindings, which the stock flow never reads, are let go.
#[tokio::test]
async fn a_plan_keeps_only_what_the_flows_after_it_read() {
    let edit = |doc: &mut serde_json::Value| {
        doc["flows"] = json!({
            "products": {"entity": "product", "from": "erp", "to": "shop",
                         "mode": "create_missing"},
            "stock": {"entity": "stock", "from": "erp", "to": "shop", "mode": "update",
                      "after": ["products"]},
        });
    };
    let h = Harness::new(6, edit).await;
    for p in h.erp.products().into_iter().take(2) {
        let id = h.shop.product_by_sku(&p.code).unwrap().id;
        h.shop.delete_product(id).unwrap();
    }
    let dry = erpsync::engine::RunOptions {
        dry_run: true,
        ..Default::default()
    };
    let plan = || {
        crate::support::harness::build(&h.shop, &h.erp, &h.dir, h.store.clone(), &h.clock, edit)
            .planning()
    };

    // Alone, `products` plans 2 creates and 4 adoptions and keeps none of them.
    let alone = plan();
    alone.plan_ahead("products", &[]);
    let r = alone.run("products", &dry).await.unwrap();
    assert_eq!((r.counts.created, r.counts.adopted), (2, 4), "{r:#?}");
    assert_eq!(alone.plan_held(), (0, 0));

    // Followed by `stock`: the creates in the shop are kept for it, the bindings are not.
    let both = plan();
    both.plan_ahead("products", &["stock"]);
    both.run("products", &dry).await.unwrap();
    assert_eq!(both.plan_held(), (0, 2));
    both.plan_ahead("stock", &[]);
    let r = both.run("stock", &dry).await.unwrap();
    assert_eq!(r.counts.failed, 0, "{r:#?}");
    assert_eq!(both.plan_held(), (0, 2), "still there for the stock flow");
    // A flow the project does not have: the plan cannot tell what it reads, and keeps all.
    both.plan_ahead("unrelated", &[]);
    assert_eq!(
        both.plan_held(),
        (0, 2),
        "an unknown flow: nothing is left out"
    );

    // Told nothing, a plan keeps everything, as before.
    let all = plan();
    all.run("products", &dry).await.unwrap();
    assert_eq!(all.plan_held(), (6, 2));
}

/// Issue 17.6, both ways: the products an earlier flow would create in the shop are among
/// the shop's records when a later bidirectional flow's dry run reads it in full, so it
/// predicts what the run then does with them (nothing: they are in step), instead of looking
/// for them by an id they do not have yet.
#[tokio::test]
async fn a_bidirectional_dry_run_reads_what_an_earlier_flow_would_create_in_its_target() {
    let edit = |doc: &mut serde_json::Value| {
        doc["flows"] = json!({
            "new_in_shop": {"entity": "product", "from": "erp", "to": "shop",
                            "mode": "create_missing", "export_once": true},
            "products": {"entity": "product", "from": "erp", "to": "shop",
                         "direction": "bidirectional", "fields": ["sku", "name", "price"],
                         "conflict": {"rule": "erp_wins"}, "after": ["new_in_shop"]},
        });
    };
    let h = Harness::new(6, edit).await;
    let mut new_in_shop = Vec::new();
    for p in h.erp.products().into_iter().take(2) {
        let id = h.shop.product_by_sku(&p.code).unwrap().id;
        h.shop.delete_product(id).unwrap();
        new_in_shop.push(p.code);
    }
    let (planned, ran) = plan_then_run(&h, edit, &["new_in_shop", "products"]).await;
    assert_eq!(ran[0].0.created, 2, "{:#?}", ran[0]);
    assert_eq!(ran[1].0.failed, 0, "{:#?}", ran[1]);
    for sku in &new_in_shop {
        assert!(h.shop.product_by_sku(sku).is_some());
    }
    assert_eq!(planned, ran, "the dry run predicted the run");
}

/// Issue 17.6, both ways, records only the target side holds: the bidirectional flow reads
/// its source from a cursor that predates nothing new there, so the products an earlier flow
/// would create in the shop reach it only through the shop's changes. The dry run reads them
/// there, as the run will, instead of never seeing them.
#[tokio::test]
async fn a_bidirectional_dry_run_merges_back_what_an_earlier_flow_would_create_in_its_target() {
    let edit = |doc: &mut serde_json::Value| {
        doc["flows"] = json!({
            "new_in_shop": {"entity": "product", "from": "erp", "to": "shop",
                            "mode": "create_missing"},
            "products": {"entity": "product", "from": "erp", "to": "shop",
                         "direction": "bidirectional", "fields": ["sku", "name", "price"],
                         "conflict": {"rule": "erp_wins"}, "after": ["new_in_shop"],
                         "incremental": {"start": "2026-01-01", "overlap_secs": 0}},
        });
    };
    let h = Harness::new(6, edit).await;
    let mut new_in_shop = Vec::new();
    for p in h.erp.products().into_iter().take(2) {
        let id = h.shop.product_by_sku(&p.code).unwrap().id;
        h.shop.delete_product(id).unwrap();
        new_in_shop.push(p.code);
    }
    // The bidirectional flow last ran after every change there is: its source has nothing new.
    h.later(10);
    h.store
        .bindings
        .set_cursor(
            FlowName::new("products"),
            erpsync::clock::Clock::now(&h.clock),
        )
        .await
        .unwrap();
    h.later(10);
    let (planned, ran) = plan_then_run(&h, edit, &["new_in_shop", "products"]).await;
    assert_eq!(ran[0].0.created, 2, "{:#?}", ran[0]);
    assert_eq!(
        ran[1].0.read, 2,
        "the run reads the two new products among the shop's changes: {:#?}",
        ran[1]
    );
    assert_eq!(planned, ran, "the dry run predicted the run");
}

/// Issue 17.7: a stock record whose SKU the shop does not have, when the shop cannot be
/// searched by SKU, costs one full read of the shop; the next runs within the bounded age
/// remember that it is missing instead of reading the whole catalogue again, and after that
/// age (or in a reconciliation) the shop is read again.
#[tokio::test]
async fn a_missing_key_does_not_cost_a_full_read_on_every_run() {
    a_missing_key_costs_one_full_read(None).await;
}

/// The behaviour above on a state store of the caller's (the harness's SQLite with `None`).
pub async fn a_missing_key_costs_one_full_read(store: Option<Store>) {
    let edit = |doc: &mut serde_json::Value| {
        doc["systems"]["shop"]["entities"] = json!({"stock": {
            "list": "list_products", "update": "update_product",
            "read": {"sku": "$.sku", "quantity": {"path": "$.stock", "default": 0}},
            "write": {"stock": "$.quantity"}
        }});
        doc["flows"] = json!({"stock": {"entity": "stock", "from": "erp", "to": "shop",
            "mode": "update", "incremental": {"start": "2026-01-01", "overlap_secs": 0}}});
    };
    let mut h = Harness::new(5, edit).await;
    let store: Store = store.unwrap_or_else(|| h.store.clone());
    // A new process each time, as `run --once` from cron: only the state remembers.
    let reload = |h: &mut Harness| {
        h.engine =
            crate::support::harness::build(&h.shop, &h.erp, &h.dir, store.clone(), &h.clock, edit);
    };
    reload(&mut h);
    let only_in_erp = h.erp.products().remove(0).code;
    let p = h.shop.product_by_sku(&only_in_erp).unwrap();
    h.shop.delete_product(p.id).unwrap();
    let listings = |h: &Harness| h.shop.counters().route("/api/v2/products");
    let first = h.run("stock").await;
    assert_eq!(first.counts.failed, 0, "{first:#?}");
    let after_first = listings(&h);
    assert!(after_first >= 1, "the shop was read to look for the SKU");

    for i in 0..3 {
        h.later(5);
        h.erp
            .set_stock(&only_in_erp, crate::support::project::WAREHOUSE, 3 + i)
            .unwrap();
        reload(&mut h);
        let r = h.run("stock").await;
        let missing = r.records.iter().find(|x| x.key == only_in_erp);
        assert_eq!(missing.map(|x| x.decision), Some(Decision::Skip), "{r:#?}");
    }
    assert_eq!(
        listings(&h),
        after_first,
        "no further full read of the shop"
    );

    h.later(61);
    h.erp
        .set_stock(&only_in_erp, crate::support::project::WAREHOUSE, 40)
        .unwrap();
    reload(&mut h);
    h.run("stock").await;
    assert!(
        listings(&h) > after_first,
        "read again once the memory is too old"
    );
}

/// Issue 17.8: flow files that passed `validate` but could only fail (or misbehave) at run
/// time. Each is refused by the real binary with exit 78, its code and its place, and the
/// message names the mistake.
#[test]
fn the_corpus_of_broken_flow_files_is_refused_with_code_and_place() {
    let table: &[(&str, &str, u32, u32, &str)] = &[
        ("jsonpath_rfc", "E005", 14, 35, "unexpected `b` at column 5"),
        (
            "write_unknown_field",
            "E008",
            15,
            37,
            "`nmae` is not a field of entity `product`",
        ),
        (
            "write_unknown_variable",
            "E008",
            15,
            36,
            "`recod` is not a field of entity",
        ),
        (
            "op_unknown_variable",
            "E008",
            8,
            54,
            "did you mean `record`?",
        ),
        (
            "unknown_system_var",
            "E008",
            14,
            35,
            "did you mean `location`?",
        ),
        (
            "webhook_key_system",
            "E008",
            8,
            12,
            "`system` and `vars` are not available",
        ),
        (
            "system_header_variable",
            "E008",
            7,
            27,
            "did you mean `system`?",
        ),
        (
            "id_template_system",
            "E008",
            12,
            13,
            "an `id` template is rendered over the record alone",
        ),
        (
            "error_message_variable",
            "E008",
            8,
            91,
            "did you mean `body`?",
        ),
        (
            "filter_unknown_field",
            "E008",
            22,
            13,
            "unknown field of entity `product` `nmae`",
        ),
        (
            "helper_missing_args",
            "E006",
            9,
            33,
            "helper `urlencode` needs 1 argument, given 0",
        ),
        (
            "partial",
            "E006",
            9,
            33,
            "partials (`{{> name}}`) are not supported",
        ),
        (
            "target_in_read",
            "E008",
            13,
            35,
            "they belong in a `write` mapping",
        ),
        (
            "reconcile_report_bidirectional",
            "E011",
            23,
            52,
            "has no drift to leave alone",
        ),
        (
            "step_unknown_step",
            "E004",
            15,
            25,
            "`updte` is not an earlier step (earlier steps: update)",
        ),
        (
            "list_with_steps",
            "E004",
            14,
            15,
            "operation `list` has `steps`: a listing is one paginated request",
        ),
        ("cron_never", "E007", 22, 26, "`0 0 31 2 *` never fires"),
        ("cron_past_year", "E007", 22, 26, "never fires"),
        ("empty_project", "E012", 1, 1, "no systems and no flows"),
        (
            "override_unknown_flow",
            "E008",
            24,
            5,
            "no flow `prodcts` to override",
        ),
    ];
    let dir = crate::support::repo().join("tests/fixtures/flows/invalid/single");
    let outside = tempfile::tempdir().unwrap();
    for (name, code, line, col, needle) in table {
        let file = dir.join(format!("{name}.yaml"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_erpsync"))
            .args(["validate", file.to_str().unwrap()])
            .current_dir(outside.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{name}: {stderr}");
        let head = format!("{}:{line}:{col}: error[{code}]", file.display());
        assert!(
            stderr.starts_with(&head),
            "{name}: expected `{head}` in\n{stderr}"
        );
        assert!(
            stderr.contains(needle),
            "{name}: `{needle}` not in\n{stderr}"
        );
        assert!(stderr.contains("1 problem found"), "{name}: {stderr}");
    }
    // Helpers short of arguments, one by one.
    for t in [
        "{{concat}}",
        "{{lookup}}",
        "{{lookup record}}",
        "{{replace a 'x'}}",
        "{{#if}}x{{/if}}",
    ] {
        assert!(erpsync::expr::Template::compile(t).is_err(), "{t}");
    }
    for t in [
        "{{now}}",
        "{{concat a}}",
        "{{lookup vars.t k}}",
        "{{json (list)}}",
    ] {
        assert!(erpsync::expr::Template::compile(t).is_ok(), "{t}");
    }
}

/// Issue 17.8: `system` values, the looked-up ones included, are available to read and write
/// mappings as they are to operations: a stock read as `{{system.…}}` is not silently 0.
#[tokio::test]
async fn system_values_reach_read_mappings() {
    let h = Harness::new(2, |doc| {
        let erp = &mut doc["systems"]["erp"];
        erp["vars"]["bonus"] = json!(1000);
        erp["entities"]["stock"]["read"]["quantity"] =
            json!({"template": "{{add quantity system.bonus}}", "type": "integer"});
        doc["flows"] = json!({"stock": {"entity": "stock", "from": "erp", "to": "shop",
            "mode": "update"}});
    })
    .await;
    let dry = h
        .run_with(
            "stock",
            erpsync::engine::RunOptions {
                dry_run: true,
                ..Default::default()
            },
        )
        .await;
    let changes: Vec<i64> = dry
        .records
        .iter()
        .flat_map(|r| r.changes.iter())
        .filter(|c| c.field == "quantity")
        .map(|c| c.new.as_i64().unwrap())
        .collect();
    assert_eq!(changes.len(), 2, "{dry:#?}");
    assert!(changes.iter().all(|q| *q >= 1000), "{changes:?}");
}

fn validate(dir: &std::path::Path, name: &str, text: &str) -> (i32, String) {
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_erpsync"))
        .args(["validate", file.to_str().unwrap()])
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 17.9: messages that say what to do: a file over the YAML node budget, an unquoted
/// JSONPath with `[ ]` inside a flow mapping, a filter whose existence test lets null
/// through, and a status class covering 429.
#[test]
fn messages_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let mut big = String::from("vars:\n  big:\n");
    for _ in 0..130_000 {
        big.push_str("    - [1]\n");
    }
    let (code, err) = validate(dir.path(), "big.yaml", &big);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("more than 250,000 YAML nodes"), "{err}");
    assert!(!err.contains("Nodes {"), "{err}");

    let (code, err) = validate(
        dir.path(),
        "flow_map.yaml",
        "systems:\n  s:\n    entities:\n      product:\n        read: { price: $.variants[0].price }\n",
    );
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("quote a JSONPath"), "{err}");

    let base = std::fs::read_to_string(
        crate::support::repo()
            .join("tests/fixtures/flows/invalid/single/filter_unknown_field.yaml"),
    )
    .unwrap();
    let filtered = base.replace("@.nmae != null", "@.name && @.sku == 'A'");
    let (code, err) = validate(dir.path(), "filter.yaml", &filtered);
    assert_eq!(code, 0, "a warning leaves the project valid: {err}");
    assert!(
        err.contains("warning[W002]: `@.name` only asks whether"),
        "{err}"
    );
    assert!(err.contains("write `@.name != null`"), "{err}");
    assert!(err.contains("1 warning"), "{err}");

    let broad = base
        .replace("    filter: \"@.nmae != null\"\n", "")
        .replace(
            "    base_url: http://127.0.0.1:1\n",
            "    base_url: http://127.0.0.1:1\n    errors: [{ status: [\"4xx\"], action: fail }]\n",
        );
    let (code, err) = validate(dir.path(), "broad.yaml", &broad);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning[W001]: this status class covers 429"),
        "{err}"
    );
}

/// Issue 12 item 9, as a user runs it: the ERP locks the client out for ten minutes; `run
/// --once --max-wait 2` does not sleep through it but ends at once, saying which system
/// asked to wait, why and until when.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_with_max_wait_does_not_sleep_through_a_lockout() {
    use erpsync_sim::{ErpOptions, ErpSim, FailRule, ShopOptions, ShopSim, seed_both};
    let shop = ShopSim::start(ShopOptions::unlimited()).await.unwrap();
    let erp = ErpSim::start(ErpOptions::unlimited()).await.unwrap();
    seed_both(&shop, &erp, 3, 2);
    erp.faults()
        .fail_next(FailRule::new("GET", "/api/stock", 429, 10).retry_after(600));
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project.yaml");
    std::fs::write(
        &project,
        serde_json::to_string_pretty(&crate::support::project::demo_project()).unwrap(),
    )
    .unwrap();
    let state = format!("sqlite:{}", dir.path().join("state.sqlite").display());
    let started = std::time::Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_erpsync"))
        .args([
            "run",
            "--once",
            project.to_str().unwrap(),
            "--flow",
            "stock",
        ])
        .args(["--max-wait", "2", "--init-state"])
        .envs(sim_env(&shop, &erp))
        .env("ERPSYNC_STATE", state)
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    let text = crate::support::stdout_and_stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{text}"
    );
    assert!(
        text.contains("`erp` asks to slow down (status 429, Retry-After): a wait of 600 s"),
        "{text}"
    );
    assert!(
        text.contains("longer than the 2 s this run may wait"),
        "{text}"
    );
    assert!(text.contains("until 20"), "{text}");
}

/// Issue 12 item 9: the shipped budgets leave headroom under each documented limit
/// (MerchantPro 4 requests a second; SmartBill, and the simulated ERP that stands for it,
/// 30 calls in 10 s before a 10-minute lock-out): what the token bucket lets through in
/// the worst window stays within the limit, and the sustained rate within 80% of it.
#[test]
fn shipped_budgets_leave_headroom_under_the_documented_limits() {
    // (project, system, calls allowed, window in seconds)
    let limits = [
        ("flows/demo", "shop", 4.0, 1.0),
        ("flows/demo", "erp", 30.0, 10.0),
        ("flows/smartbill", "shop", 4.0, 1.0),
        ("flows/smartbill", "smartbill", 30.0, 10.0),
        ("flows/oblio", "shop", 4.0, 1.0),
        ("flows/woocommerce", "erp", 30.0, 10.0),
    ];
    for (dir, system, calls, window) in limits {
        let path = crate::support::repo().join(dir);
        let (project, diags) = erpsync::compile::project::check(std::slice::from_ref(&path));
        let project = project.unwrap_or_else(|| panic!("{dir}: {diags:#?}"));
        let rl = project.systems[system]
            .rate_limit()
            .cloned()
            .unwrap_or_else(|| panic!("{dir}: `{system}` has no budget"));
        let worst = f64::from(rl.burst) + rl.per_second * window;
        assert!(
            worst <= calls,
            "{dir}: `{system}` may send {worst} calls in {window} s (limit {calls})"
        );
        assert!(
            rl.per_second * window <= 0.8 * calls,
            "{dir}: `{system}` sustains {} calls a second (limit {})",
            rl.per_second,
            calls / window
        );
    }
}

/// Issue 17.6, as a user runs it: `erpsync dry-run` of a project prints, flow after flow,
/// the lines `erpsync run --once` then prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_of_a_project_prints_what_the_run_then_does() {
    use erpsync_sim::{ErpOptions, ErpSim, ShopOptions, ShopSim, seed_both};
    let shop = ShopSim::start(ShopOptions::unlimited()).await.unwrap();
    let erp = ErpSim::start(ErpOptions::unlimited()).await.unwrap();
    seed_both(&shop, &erp, 6, 4);
    // Two products only in the ERP: `to_shop` creates them, and `to_stock` then sets their
    // stock in the shop.
    for p in erp.products().into_iter().take(2) {
        shop.delete_product(shop.product_by_sku(&p.code).unwrap().id)
            .unwrap();
        erp.set_stock(&p.code, crate::support::project::WAREHOUSE, 7)
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut doc = crate::support::project::demo_project();
    doc["flows"] = json!({
        "to_erp": {"entity": "product", "from": "shop", "to": "erp", "mode": "create_missing",
                   "trigger": {"schedule": "*/15 * * * *"}},
        "to_shop": {"entity": "product", "from": "erp", "to": "shop", "mode": "create_missing",
                    "after": ["to_erp"], "trigger": {"schedule": "*/15 * * * *"}},
        "to_stock": {"entity": "stock", "from": "erp", "to": "shop", "mode": "update",
                     "after": ["to_shop"], "trigger": {"schedule": "*/15 * * * *"}},
    });
    let project = dir.path().join("project.yaml");
    std::fs::write(&project, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let mut envs = sim_env(&shop, &erp);
    envs.push((
        "ERPSYNC_STATE",
        format!("sqlite:{}", dir.path().join("state.sqlite").display()),
    ));
    let run = |args: Vec<&str>| {
        let envs = envs.clone();
        let dir = dir.path().to_path_buf();
        let args: Vec<String> = args.into_iter().map(str::to_string).collect();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_erpsync"))
                .args(&args)
                .arg("--init-state")
                .envs(envs)
                .current_dir(dir)
                .output()
                .await
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert_eq!(out.status.code(), Some(0), "{stdout}");
            // The summary line of each flow.
            stdout
                .lines()
                .filter(|l| l.starts_with("to_"))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
        }
    };
    let p = project.to_str().unwrap();
    let planned = run(vec!["dry-run", p]).await;
    let ran = run(vec!["run", "--once", p]).await;
    assert_eq!(planned.len(), 3, "{planned:?}");
    assert!(
        ran[1].contains("created 2, updated 0, adopted 0, skipped 4"),
        "{ran:?}"
    );
    assert!(ran[2].contains("updated 2"), "{ran:?}");
    assert_eq!(planned, ran);
}
