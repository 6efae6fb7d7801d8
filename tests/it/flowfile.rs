//! What a flow file says must happen: rate limiting stays rate limiting whatever the error
//! rules say, related records are found under their normalised keys, one-way flows compare
//! with what the target holds, several flows on one entity pair each see their own fields,
//! manual and disabled flows run only when they should, and a dry run of several flows
//! predicts the run flow after flow.

use erpsync::engine::{Decision, RunReport};
use erpsync::sim::Faults;
use erpsync::sim::shop::Order;
use erpsync::state::StateStore;

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
