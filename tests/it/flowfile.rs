//! What a flow file says must happen: rate limiting stays rate limiting whatever the error
//! rules say, related records are found under their normalised keys, one-way flows compare
//! with what the target holds, several flows on one entity pair each see their own fields,
//! manual and disabled flows run only when they should, and a dry run of several flows
//! predicts the run flow after flow.

use erpsync::engine::{Decision, RunReport};
use erpsync::sim::Faults;
use erpsync::sim::shop::Order;
use erpsync::state::StateStore;
use serde_json::json;

use crate::engine::Harness;

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
        assert!(h.store.failures(None).unwrap().is_empty());
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
        .set_stock("SKU-000002", crate::engine::WAREHOUSE, quantity)
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
