//! Stateful simulators of a shop API (MerchantPro-style), WooCommerce's REST API v3 and an ERP
//! API (SmartBill/Oblio-style), served over real HTTP on loopback, for tests, benchmarks and the
//! demo.
//!
//! Start one with [`ShopSim::start`], [`WooSim::start`] or [`ErpSim::start`]; the returned
//! handle gives direct
//! access to the records, and through the [`SimHandle`] both dereference to, the base URL,
//! request counters and live fault settings.
//!
//! Both also answer a control API that is neither counted nor rate-limited, for people trying
//! flows by hand and for out-of-process tests: `GET /__sim/counters`,
//! `POST /__sim/counters/reset`, `GET|POST /__sim/faults` (a [`Faults`] document),
//! `POST /__sim/faults/fail-next` (a [`FailRule`]), and per simulator
//! `POST /__sim/orders/{id}` (shop: [`shop::OrderEdit`]; ERP: [`erp::SalesOrderEdit`]),
//! `POST /__sim/products/{id}` (shop: [`shop::ProductEdit`]), `POST /__sim/orders` (ERP:
//! [`erp::ErpOrderDraft`]) and `POST /__sim/stock/{code}` (ERP: `{warehouse, quantity}`).

pub mod counters;
pub mod erp;
pub mod faults;
mod handle;
pub mod seed;
mod server;
pub mod shop;
mod table;
pub mod webhook;
pub mod woo;

pub use counters::{Counters, RouteCount};
pub use erp::{BurstLimit, ErpHandle, ErpOptions, ErpSim};
pub use faults::{FailRule, FaultControl, Faults};
pub use handle::SimHandle;
pub use seed::{CatalogueItem, catalogue};
pub use shop::{ShopHandle, ShopOptions, ShopSim, TokenBucket};
pub use webhook::{WebhookConfig, WebhookDelivery};
pub use woo::{WooHandle, WooOptions, WooSim};

/// Fills both simulators with the same `n`-item catalogue (same SKUs, prices and stock): the
/// usual start of a test or bench of product and stock flows. Returns the catalogue.
pub fn seed_both(shop: &ShopHandle, erp: &ErpHandle, n: usize, seed: u64) -> Vec<CatalogueItem> {
    let items = catalogue(n, seed);
    shop.seed_catalogue(&items);
    erp.seed_catalogue(&items);
    items
}
