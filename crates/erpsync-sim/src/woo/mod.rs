//! The WooCommerce simulator: the REST API v3 under `/wp-json/wc/v3` with Basic auth by
//! consumer key and secret, products (string prices, `stock_status` derived from
//! `stock_quantity`, unique SKUs, `/products/batch` with per-item errors), orders with
//! WooCommerce's statuses and `meta_data`, `page`/`per_page` paging with `X-WP-Total` and
//! `X-WP-TotalPages`, errors in the WordPress shape `{"code","message","data":{"status"}}`,
//! and signed `X-WC-Webhook-*` deliveries.
//!
//! Where the reference marks a fact as unverified, the simulator does what WordPress and
//! WooCommerce are documented to do, as remembered:
//! - The site runs in UTC, so `date_modified` equals `date_modified_gmt`; dates are printed
//!   `2026-03-01T08:00:00` (seconds, no zone) and stored at whole seconds. `modified_after`
//!   takes ISO 8601 with or without a zone (no zone means UTC) and is exclusive.
//! - `per_page` must be 1..=100 and `page` at least 1, else 400 `rest_invalid_param` with the
//!   WordPress `params` detail; a page past the last one is an empty list. The default order
//!   is `date` (creation) descending; `orderby` takes `date`, `id` or `modified`, `order` takes
//!   `asc` or `desc`. A `Link` header carries `rel="next"`/`rel="prev"`.
//! - Parameters are validated before anything is applied (a bad one changes nothing); prices
//!   given as JSON numbers are refused (`regular_price is not of type string.`), integers
//!   given as digit strings are taken, unknown fields are ignored.
//! - SKUs are unique case-insensitively (MySQL's default collation) and `?sku=` matches the
//!   same way; an empty SKU is not unique. A duplicate is 400 `product_invalid_sku`.
//! - Products and orders share one id sequence (both are posts); an order's `number` is its
//!   id. Orders are placed through the handle; the API reads and updates them (status, billing,
//!   `meta_data`, `customer_note`; line items are not edited).
//! - `meta_data` entries without an `id` replace the entry with the same key (WooCommerce's
//!   `update_meta_data`), with an `id` they replace that entry; a `null` value is stored.
//! - `/batch` takes at most 100 objects (else 413 `woocommerce_rest_request_entity_too_large`),
//!   answers 200 and puts a failed item as `{"id","error":{"code","message","data"}}`;
//!   batch deletes are permanent (`force`).
//! - Missing credentials are 401 `woocommerce_rest_cannot_view`, a wrong key or secret 401
//!   `woocommerce_rest_authentication_error`. Over plain HTTP the real plugin wants OAuth 1.0a;
//!   the simulator takes Basic auth as if TLS ended in front of it.
//! - Webhooks: `order.created` when an order is placed, `order.updated` on every later save,
//!   the body being the order as `GET /orders/{id}` shows it; setting a target first sends the
//!   ping `webhook_id=1` (form-encoded, not JSON). Stock is not reduced by orders.
//! - Shipment trackings, as the Shipment Tracking extension serves them under
//!   `/orders/{id}/shipment-trackings[/{tracking_id}]` (list, create, get, update), with one
//!   tracking per order here: there is no upsert, so a second POST is 422
//!   `woocommerce_rest_shipment_tracking_exists` and a changed AWB is a PUT of the one there
//!   (an unknown tracking id is 404). An order that does not exist is 404.
//! - Stock levels per location (as multi-location inventory plugins add them) under
//!   `/inventory-levels`: `GET ?sku=`, `POST {sku, location, quantity}` and
//!   `PUT /inventory-levels/{sku}/{location} {quantity}`, with no upsert: a PUT of a level that
//!   does not exist is 404 `woocommerce_rest_inventory_level_invalid`, a POST of one that does
//!   is 400 `woocommerce_rest_inventory_level_exists`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Map, Value, json};

use crate::faults::Faults;
use crate::handle::SimHandle;
use crate::server::{Core, Flavor, serve};
use crate::shop::{Limiter, TokenBucket};
use crate::table::Table;
use crate::webhook::{Outgoing, WebhookConfig, WebhookDelivery, WebhookHeaders, WebhookSender};
use erpsync_clock::{SharedClock, SystemClock};

mod auth;
mod fields;
mod inventory;
mod orders;
mod products;
mod resource;
mod trackings;

use auth::woo_layer;
pub use fields::Meta;
pub use orders::{Address, LineItem, WooOrder};
pub use products::WooProduct;
pub use trackings::ShipmentTracking;

/// Where the API lives below the site's address.
pub(crate) const API_PATH: &str = "/wp-json/wc/v3";
/// Largest `per_page` and the most objects a `/batch` call takes.
pub(crate) const MAX_PER_PAGE: usize = 100;

/// Header carrying `base64(HMAC-SHA256(raw body, secret))`.
pub const SIGNATURE_HEADER: &str = "X-WC-Webhook-Signature";
/// Header carrying the delivery id.
pub const DELIVERY_ID_HEADER: &str = "X-WC-Webhook-Delivery-ID";

/// How to start a WooCommerce simulator.
#[derive(Debug, Clone)]
pub struct WooOptions {
    /// Address to listen on; port 0 picks a free one.
    pub bind: SocketAddr,
    pub consumer_key: String,
    pub consumer_secret: String,
    /// Off by default: WooCommerce itself has none (a host or WAF may add one).
    pub rate_limit: Option<TokenBucket>,
    /// Where `order.created`/`order.updated` go; `None` sends nothing.
    pub webhook: Option<WebhookConfig>,
    pub faults: Faults,
    /// Seed of the fault generator.
    pub seed: u64,
    pub clock: SharedClock,
    /// First id of the post sequence products and orders share.
    pub first_id: u64,
}

impl Default for WooOptions {
    fn default() -> Self {
        WooOptions {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            consumer_key: "ck_demo".to_owned(),
            consumer_secret: "cs_demo".to_owned(),
            rate_limit: None,
            webhook: None,
            faults: Faults::default(),
            seed: 0,
            clock: Arc::new(SystemClock),
            first_id: 100,
        }
    }
}

impl WooOptions {
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }
}

#[derive(Debug)]
struct WooData {
    products: Table<WooProduct>,
    orders: Table<WooOrder>,
    /// Shipment trackings by order id.
    trackings: std::collections::BTreeMap<u64, ShipmentTracking>,
    /// Stock levels by (SKU, location).
    levels: std::collections::BTreeMap<(String, String), i64>,
    next_tracking: u64,
    next_id: u64,
    next_meta_id: u64,
    next_line_id: u64,
}

impl WooData {
    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

#[derive(Debug)]
struct WooState {
    core: Arc<Core>,
    consumer_key: String,
    consumer_secret: String,
    limiter: Mutex<Option<Limiter>>,
    data: Mutex<WooData>,
    webhooks: WebhookSender,
}

/// A WordPress REST error; `params` fills `data.params` of `rest_invalid_param`.
#[derive(Debug)]
struct WooError {
    status: u16,
    code: &'static str,
    message: String,
    params: Option<Map<String, Value>>,
}

impl WooError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        WooError {
            status,
            code,
            message: message.into(),
            params: None,
        }
    }

    /// 400 `rest_invalid_param` naming the parameter and why.
    fn param(name: &str, why: impl Into<String>) -> Self {
        let mut params = Map::new();
        params.insert(name.to_owned(), Value::String(why.into()));
        WooError {
            status: 400,
            code: "rest_invalid_param",
            message: format!("Invalid parameter(s): {name}"),
            params: Some(params),
        }
    }

    fn invalid_id(what: &str, status: u16) -> Self {
        let code = match what {
            "product" => "woocommerce_rest_product_invalid_id",
            _ => "woocommerce_rest_shop_order_invalid_id",
        };
        WooError::new(status, code, "Invalid ID.")
    }

    fn sku_taken() -> Self {
        WooError::new(400, "product_invalid_sku", "Invalid or duplicated SKU.")
    }

    fn body(&self) -> Value {
        let mut data = json!({ "status": self.status });
        if let Some(p) = &self.params {
            data["params"] = Value::Object(p.clone());
        }
        json!({ "code": self.code, "message": self.message, "data": data })
    }
}

impl IntoResponse for WooError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        (status, Json(self.body())).into_response()
    }
}

type WooResult = Result<Response, WooError>;

/// Starts WooCommerce simulators.
#[derive(Debug)]
pub struct WooSim;

impl WooSim {
    /// Binds, starts serving in the background and returns the handle.
    pub async fn start(opts: WooOptions) -> anyhow::Result<WooHandle> {
        let listener = tokio::net::TcpListener::bind(opts.bind).await?;
        let now = opts.clock.now();
        let core = Core::new(Flavor::Woo, &listener, opts.faults, opts.seed, opts.clock)?;
        let credentials = (opts.consumer_key.clone(), opts.consumer_secret.clone());
        let webhooks = WebhookSender::start_with(
            None,
            WebhookHeaders {
                signature: SIGNATURE_HEADER,
                delivery_id: DELIVERY_ID_HEADER,
            },
        )?;
        let state = Arc::new(WooState {
            core: core.clone(),
            consumer_key: opts.consumer_key,
            consumer_secret: opts.consumer_secret,
            limiter: Mutex::new(opts.rate_limit.map(|c| Limiter::new(c, now))),
            data: Mutex::new(WooData {
                products: Table::new(),
                orders: Table::new(),
                trackings: Default::default(),
                levels: Default::default(),
                next_tracking: 1,
                next_id: opts.first_id.max(1),
                next_meta_id: 1,
                next_line_id: 1,
            }),
            webhooks,
        });
        state.set_webhook(opts.webhook);
        let api = Router::new()
            .merge(products::routes())
            .merge(resource::routes::<WooOrder>())
            .merge(trackings::routes())
            .merge(inventory::routes())
            .route_layer(middleware::from_fn_with_state(state.clone(), woo_layer))
            .with_state(state.clone());
        let server = serve(listener, core.clone(), api, Router::new())?;
        Ok(WooHandle {
            sim: SimHandle::new(core, server, API_PATH, credentials),
            state,
        })
    }
}

impl WooState {
    /// The stamp of a change made now: whole seconds, as WordPress stores dates.
    fn now(&self) -> DateTime<Utc> {
        self.core.clock.now().trunc_subsecs(0)
    }

    /// Sets (or with `None` removes) the webhook target; a new target is sent the ping first.
    fn set_webhook(&self, webhook: Option<WebhookConfig>) {
        let ping = webhook.is_some();
        self.webhooks.set_config(webhook);
        if ping {
            self.webhooks.send_raw(Outgoing {
                event: "ping",
                body: "webhook_id=1".to_owned(),
                content_type: "application/x-www-form-urlencoded",
                extra: vec![("X-WC-Webhook-ID", "1".to_owned())],
                duplicate: false,
            });
        }
    }
}

// ---------------------------------------------------------------- handle

/// A running WooCommerce simulator; dereferences to the [`SimHandle`] (URL, counters, faults,
/// clock, consumer key and secret).
#[derive(Debug)]
pub struct WooHandle {
    sim: SimHandle,
    state: Arc<WooState>,
}

crate::handle::deref_to_sim!(WooHandle);

impl WooHandle {
    /// Changes (or with `None` removes) the rate limit; the bucket starts full.
    pub fn set_rate_limit(&self, bucket: Option<TokenBucket>) {
        let now = self.state.core.clock.now();
        *self.state.limiter.lock().unwrap() = bucket.map(|c| Limiter::new(c, now));
    }

    /// Sets where webhooks go (a new target is pinged first).
    pub fn set_webhook(&self, webhook: Option<WebhookConfig>) {
        self.state.set_webhook(webhook);
    }

    /// Every webhook delivery attempted so far.
    pub fn webhook_deliveries(&self) -> Vec<WebhookDelivery> {
        self.state.webhooks.log()
    }

    /// Waits until every queued webhook has been delivered (or has failed).
    pub async fn flush_webhooks(&self) {
        self.state.webhooks.flush().await
    }

    /// Stops the server and waits for it to end.
    pub async fn shutdown(self) {
        self.sim.shutdown().await
    }
}
