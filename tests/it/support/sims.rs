//! The shop and ERP simulators, started on a test's clock.

use std::sync::Arc;

use erpsync::clock::{ManualClock, SharedClock};
use erpsync_sim::seed::CatalogueItem;
use erpsync_sim::shop::Order;
use erpsync_sim::{ErpHandle, ErpOptions, ErpSim, ShopHandle, ShopOptions, ShopSim};

/// A shop and an ERP simulator without rate limits, both on `clock`.
pub async fn sims(clock: &ManualClock) -> (ShopHandle, ErpHandle) {
    let shared: SharedClock = Arc::new(clock.clone());
    let shop = ShopSim::start(ShopOptions::unlimited().with_clock(shared.clone()))
        .await
        .unwrap();
    let erp = ErpSim::start(ErpOptions::unlimited().with_clock(shared))
        .await
        .unwrap();
    (shop, erp)
}

/// A confirmed shop order of `client` (`client{n}@example.com`, "Client{n} Test") for the
/// catalogue items and quantities of `lines`, at their gross prices.
pub fn confirm_order(shop: &ShopHandle, client: usize, lines: &[(&CatalogueItem, i64)]) -> Order {
    let lines: Vec<(&str, i64, f64)> = lines
        .iter()
        .map(|(item, quantity)| (item.sku.as_str(), *quantity, item.price_gross))
        .collect();
    let mut o = Order::new(&format!("client{client}@example.com"), &lines);
    o.customer.first_name = format!("Client{client}");
    o.customer.last_name = "Test".into();
    o.shipping_status = "confirmed".into();
    shop.create_order(o).unwrap()
}

/// The shop's product reads in its log (`Counters::keep_log`): products asked for alone (by
/// `sku`), and list pages read.
pub fn product_reads(shop: &ShopHandle) -> (usize, usize) {
    let log = shop.counters().log();
    let products: Vec<_> = log
        .iter()
        .filter(|x| x.method == "GET" && x.route == "/api/v2/products")
        .collect();
    let single = products.iter().filter(|x| x.query.contains("sku=")).count();
    (single, products.len() - single)
}
