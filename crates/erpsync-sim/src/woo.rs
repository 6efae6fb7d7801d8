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
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::faults::Faults;
use super::handle::SimHandle;
use super::seed::{self, CatalogueItem};
use super::server::{Core, Flavor, ListQuery, error_response, query_get, query_pairs, serve};
use super::shop::{Limiter, TokenBucket, basic_credentials};
use super::table::{Record, Since, Table};
use super::webhook::{Outgoing, WebhookConfig, WebhookDelivery, WebhookHeaders, WebhookSender};
use erpsync_clock::{SharedClock, SystemClock};

/// Where the API lives below the site's address.
pub(crate) const API_PATH: &str = "/wp-json/wc/v3";
/// Largest `per_page` and the most objects a `/batch` call takes.
pub(crate) const MAX_PER_PAGE: usize = 100;
const DEFAULT_PER_PAGE: usize = 10;
/// Order statuses the API accepts.
pub(crate) const ORDER_STATUSES: &[&str] = &[
    "pending",
    "processing",
    "on-hold",
    "completed",
    "cancelled",
    "refunded",
    "failed",
    "trash",
    "checkout-draft",
];
const PRODUCT_STATUSES: &[&str] = &["draft", "pending", "private", "publish"];
const STOCK_STATUSES: &[&str] = &["instock", "outofstock", "onbackorder"];
const PRODUCT_TYPES: &[&str] = &["simple", "grouped", "external", "variable"];

/// Header carrying `base64(HMAC-SHA256(raw body, secret))`.
pub const SIGNATURE_HEADER: &str = "X-WC-Webhook-Signature";
/// Header carrying the delivery id.
pub const DELIVERY_ID_HEADER: &str = "X-WC-Webhook-Delivery-ID";

/// WordPress's date format: seconds, no zone.
mod wp_date {
    use chrono::{DateTime, Utc};
    use serde::Serializer;

    pub(crate) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.format("%Y-%m-%dT%H:%M:%S").to_string())
    }
}

/// One `meta_data` entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Meta {
    pub id: u64,
    pub key: String,
    pub value: Value,
}

/// A product (`simple` unless changed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WooProduct {
    pub id: u64,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub sku: String,
    /// The price paid: `sale_price` when set, else `regular_price`.
    pub price: String,
    pub regular_price: String,
    pub sale_price: String,
    pub manage_stock: bool,
    pub stock_quantity: Option<i64>,
    pub stock_status: String,
    pub meta_data: Vec<Meta>,
    #[serde(with = "wp_date")]
    pub date_created: DateTime<Utc>,
    #[serde(with = "wp_date")]
    pub date_created_gmt: DateTime<Utc>,
    #[serde(with = "wp_date")]
    pub date_modified: DateTime<Utc>,
    #[serde(with = "wp_date")]
    pub date_modified_gmt: DateTime<Utc>,
}

impl WooProduct {
    /// A published simple product with managed stock.
    pub fn simple(sku: &str, name: &str, regular_price: &str, stock: i64) -> Self {
        let mut p = WooProduct {
            id: 0,
            name: name.to_owned(),
            kind: "simple".to_owned(),
            status: "publish".to_owned(),
            sku: sku.to_owned(),
            price: String::new(),
            regular_price: regular_price.to_owned(),
            sale_price: String::new(),
            manage_stock: true,
            stock_quantity: Some(stock),
            stock_status: "instock".to_owned(),
            meta_data: Vec::new(),
            date_created: DateTime::UNIX_EPOCH,
            date_created_gmt: DateTime::UNIX_EPOCH,
            date_modified: DateTime::UNIX_EPOCH,
            date_modified_gmt: DateTime::UNIX_EPOCH,
        };
        p.derive();
        p
    }

    /// What WooCommerce computes on save: the active price and the stock status.
    fn derive(&mut self) {
        self.price = if self.sale_price.is_empty() {
            self.regular_price.clone()
        } else {
            self.sale_price.clone()
        };
        if self.manage_stock {
            let q = self.stock_quantity.unwrap_or(0);
            self.stock_quantity = Some(q);
            if self.stock_status != "onbackorder" || q > 0 {
                self.stock_status = if q > 0 { "instock" } else { "outofstock" }.to_owned();
            }
        } else {
            self.stock_quantity = None;
        }
    }
}

impl Record for WooProduct {
    fn updated_at(&self) -> DateTime<Utc> {
        self.date_modified_gmt
    }
    fn set_updated_at(&mut self, t: DateTime<Utc>) {
        self.date_modified = t;
        self.date_modified_gmt = t;
    }
    fn set_key(&mut self, key: u64) {
        self.id = key;
    }
    fn unique(&self) -> Vec<String> {
        if self.sku.is_empty() {
            Vec::new()
        } else {
            vec![self.sku.to_lowercase()]
        }
    }
}

/// An order's billing or shipping address (`email` is only on billing).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Address {
    pub first_name: String,
    pub last_name: String,
    pub company: String,
    pub address_1: String,
    pub address_2: String,
    pub city: String,
    pub state: String,
    pub postcode: String,
    pub country: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub phone: String,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineItem {
    pub id: u64,
    pub name: String,
    pub product_id: u64,
    pub variation_id: u64,
    pub quantity: i64,
    pub subtotal: String,
    pub total: String,
    pub sku: String,
    /// Unit price: a number, unlike the totals.
    pub price: f64,
}

/// An order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WooOrder {
    pub id: u64,
    pub parent_id: u64,
    pub number: String,
    pub created_via: String,
    pub status: String,
    pub currency: String,
    pub total: String,
    pub customer_id: u64,
    pub customer_note: String,
    pub billing: Address,
    pub shipping: Address,
    pub payment_method: String,
    pub line_items: Vec<LineItem>,
    pub meta_data: Vec<Meta>,
    #[serde(with = "wp_date")]
    pub date_created: DateTime<Utc>,
    #[serde(with = "wp_date")]
    pub date_created_gmt: DateTime<Utc>,
    #[serde(with = "wp_date")]
    pub date_modified: DateTime<Utc>,
    #[serde(with = "wp_date")]
    pub date_modified_gmt: DateTime<Utc>,
}

impl WooOrder {
    /// A guest order in `pending` with lines of (SKU, quantity, unit price); ids, names,
    /// totals and dates are filled in when it is placed.
    pub fn new(email: &str, first_name: &str, last_name: &str, lines: &[(&str, i64, f64)]) -> Self {
        let billing = Address {
            first_name: first_name.to_owned(),
            last_name: last_name.to_owned(),
            city: "Cluj-Napoca".to_owned(),
            country: "RO".to_owned(),
            email: Some(email.to_owned()),
            phone: "0740000000".to_owned(),
            ..Address::default()
        };
        WooOrder {
            id: 0,
            parent_id: 0,
            number: String::new(),
            created_via: "checkout".to_owned(),
            status: "pending".to_owned(),
            currency: "RON".to_owned(),
            total: String::new(),
            customer_id: 0,
            customer_note: String::new(),
            shipping: Address {
                email: None,
                ..billing.clone()
            },
            billing,
            payment_method: "cod".to_owned(),
            line_items: lines
                .iter()
                .map(|(sku, quantity, price)| LineItem {
                    id: 0,
                    name: String::new(),
                    product_id: 0,
                    variation_id: 0,
                    quantity: *quantity,
                    subtotal: String::new(),
                    total: String::new(),
                    sku: (*sku).to_owned(),
                    price: *price,
                })
                .collect(),
            meta_data: Vec::new(),
            date_created: DateTime::UNIX_EPOCH,
            date_created_gmt: DateTime::UNIX_EPOCH,
            date_modified: DateTime::UNIX_EPOCH,
            date_modified_gmt: DateTime::UNIX_EPOCH,
        }
    }

    pub fn with_status(mut self, status: &str) -> Self {
        self.status = status.to_owned();
        self
    }

    /// The value of a `meta_data` key.
    pub fn meta(&self, key: &str) -> Option<&Value> {
        self.meta_data
            .iter()
            .find(|m| m.key == key)
            .map(|m| &m.value)
    }
}

impl Record for WooOrder {
    fn updated_at(&self) -> DateTime<Utc> {
        self.date_modified_gmt
    }
    fn set_updated_at(&mut self, t: DateTime<Utc>) {
        self.date_modified = t;
        self.date_modified_gmt = t;
    }
    fn set_key(&mut self, key: u64) {
        self.id = key;
    }
}

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

/// The shipment tracking of an order (as the Shipment Tracking extension serves it under
/// `/orders/{id}/shipment-trackings`). An order has at most one here: a second POST is
/// refused with 422, so a changed AWB is an update of the one there.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShipmentTracking {
    pub tracking_id: String,
    pub tracking_provider: String,
    pub tracking_number: String,
    pub date_shipped: String,
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
        let core = Core::new(
            Flavor::Woo,
            listener.local_addr()?,
            opts.faults,
            opts.seed,
            opts.clock,
        );
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
            .route(
                "/wp-json/wc/v3/products",
                get(list_products).post(create_product),
            )
            .route("/wp-json/wc/v3/products/batch", post(batch_products))
            .route(
                "/wp-json/wc/v3/products/{id}",
                get(get_product)
                    .put(update_product)
                    .patch(update_product)
                    .post(update_product),
            )
            .route("/wp-json/wc/v3/orders", get(list_orders))
            .route(
                "/wp-json/wc/v3/orders/{id}",
                get(get_order)
                    .put(update_order)
                    .patch(update_order)
                    .post(update_order),
            )
            .route(
                "/wp-json/wc/v3/orders/{id}/shipment-trackings",
                get(list_trackings).post(create_tracking),
            )
            .route(
                "/wp-json/wc/v3/orders/{id}/shipment-trackings/{tracking_id}",
                get(get_tracking).put(update_tracking),
            )
            .route(
                "/wp-json/wc/v3/inventory-levels",
                get(list_levels).post(create_level),
            )
            .route(
                "/wp-json/wc/v3/inventory-levels/{sku}/{location}",
                put(update_level),
            )
            .route_layer(middleware::from_fn_with_state(state.clone(), woo_layer))
            .with_state(state.clone());
        let server = serve(listener, core.clone(), api, Router::new())?;
        Ok(WooHandle {
            sim: SimHandle::new(core, server, API_PATH, credentials),
            state,
        })
    }
}

/// Rate limit (when set), then Basic auth.
async fn woo_layer(State(state): State<Arc<WooState>>, req: Request, next: Next) -> Response {
    if let Some(limiter) = state.limiter.lock().unwrap().as_mut()
        && let Err(retry) = limiter.take(state.core.clock.now())
    {
        return error_response(
            Flavor::Woo,
            429,
            "woocommerce_rest_too_many_requests",
            "Too many requests.",
            retry,
        );
    }
    let error = match basic_credentials(&req) {
        None => WooError::new(
            401,
            "woocommerce_rest_cannot_view",
            "Sorry, you cannot list resources.",
        ),
        Some((k, _)) if k != state.consumer_key => WooError::new(
            401,
            "woocommerce_rest_authentication_error",
            "Consumer key is invalid.",
        ),
        Some((_, s)) if s != state.consumer_secret => WooError::new(
            401,
            "woocommerce_rest_authentication_error",
            "Invalid signature - provided signature does not match.",
        ),
        Some(_) => return next.run(req).await,
    };
    error.into_response()
}

// ---------------------------------------------------------------- lists

#[derive(Debug, Clone, Copy, PartialEq)]
enum OrderBy {
    Date,
    Id,
    Modified,
}

/// A list request: paging, order and `modified_after`.
struct WooList {
    query: ListQuery,
    page: usize,
    orderby: OrderBy,
    desc: bool,
}

impl WooList {
    fn read(query: Option<&str>) -> Result<WooList, WooError> {
        let pairs = query_pairs(query);
        let number = |key: &str, default: usize, max: usize| -> Result<usize, WooError> {
            match query_get(&pairs, key) {
                None => Ok(default),
                Some(v) => v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        if max == usize::MAX {
                            WooError::param(
                                key,
                                format!("{key} must be greater than or equal to 1"),
                            )
                        } else {
                            WooError::param(
                                key,
                                format!(
                                    "{key} must be between 1 (inclusive) and {max} (inclusive)"
                                ),
                            )
                        }
                    }),
            }
        };
        let per_page = number("per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE)?;
        let page = number("page", 1, usize::MAX)?;
        let orderby = match query_get(&pairs, "orderby").unwrap_or("date") {
            "date" => OrderBy::Date,
            "id" => OrderBy::Id,
            "modified" => OrderBy::Modified,
            _ => {
                return Err(WooError::param(
                    "orderby",
                    "orderby is not one of date, id and modified.",
                ));
            }
        };
        let desc = match query_get(&pairs, "order").unwrap_or("desc") {
            "desc" => true,
            "asc" => false,
            _ => {
                return Err(WooError::param(
                    "order",
                    "order is not one of asc and desc.",
                ));
            }
        };
        let since = match query_get(&pairs, "modified_after") {
            None | Some("") => Since::All,
            Some(v) => Since::After(
                parse_wp_date(v)
                    .ok_or_else(|| WooError::param("modified_after", "Invalid date."))?,
            ),
        };
        Ok(WooList {
            query: ListQuery {
                pairs,
                offset: (page - 1) * per_page,
                limit: per_page,
                since,
            },
            page,
            orderby,
            desc,
        })
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.query.get(key)
    }

    fn per_page(&self) -> usize {
        self.query.limit
    }

    fn in_time(&self, t: DateTime<Utc>) -> bool {
        match self.query.since {
            Since::All => true,
            Since::After(s) => t > s,
            Since::AtOrAfter(s) => t >= s,
        }
    }

    /// The requested page of `table` among the rows `keep` accepts, the number of those
    /// rows, and the key a `page_drift` fault would change.
    fn select<T: Record + Clone>(
        &self,
        table: &Table<T>,
        keep: impl Fn(&T) -> bool,
    ) -> (Vec<T>, usize, Option<u64>) {
        let total = table
            .iter()
            .filter(|(_, r)| self.in_time(r.updated_at()) && keep(r))
            .count();
        if self.orderby == OrderBy::Modified && !self.desc {
            // The table's own order: pages resume where the last one ended.
            let page = self.query.page(table, &keep);
            let drift = page.drift_key();
            let rows = page.rows.iter().map(|(_, r)| (*r).clone()).collect();
            return (rows, total, drift);
        }
        let mut rows: Vec<(u64, &T)> = table
            .iter()
            .filter(|(_, r)| self.in_time(r.updated_at()) && keep(r))
            .collect();
        if self.orderby == OrderBy::Modified {
            rows.sort_by_key(|(k, r)| (r.updated_at(), *k));
        }
        // Ids grow with creation, so `date` and `id` order alike.
        if self.desc {
            rows.reverse();
        }
        let page: Vec<(u64, &T)> = rows
            .into_iter()
            .skip(self.query.offset)
            .take(self.query.limit)
            .collect();
        let drift = page
            .first()
            .map(|(k, _)| *k)
            .filter(|_| self.query.offset + self.query.limit < total);
        let rows = page.into_iter().map(|(_, r)| r.clone()).collect();
        (rows, total, drift)
    }

    /// The page as a JSON array with `X-WP-Total`, `X-WP-TotalPages` and `Link`.
    fn respond(&self, base_url: &str, path: &str, items: Vec<Value>, total: usize) -> Response {
        let pages = total.div_ceil(self.per_page());
        let mut headers = HeaderMap::new();
        headers.insert("X-WP-Total", HeaderValue::from(total));
        headers.insert("X-WP-TotalPages", HeaderValue::from(pages));
        let link = |page: usize, rel: &str| {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in self.query.pairs.iter().filter(|(k, _)| k != "page") {
                ser.append_pair(k, v);
            }
            ser.append_pair("page", &page.to_string());
            format!("<{base_url}{path}?{}>; rel=\"{rel}\"", ser.finish())
        };
        let mut links = Vec::new();
        if self.page > 1 && self.page <= pages + 1 {
            links.push(link(self.page - 1, "prev"));
        }
        if self.page < pages {
            links.push(link(self.page + 1, "next"));
        }
        if !links.is_empty()
            && let Ok(v) = HeaderValue::from_str(&links.join(", "))
        {
            headers.insert("Link", v);
        }
        (headers, Json(Value::Array(items))).into_response()
    }
}

/// ISO 8601 as WordPress takes it: with a zone, or without one (the site's, UTC here).
fn parse_wp_date(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
                .ok()
                .map(|t| t.and_utc())
        })
}

fn to_json(v: &impl Serialize) -> Value {
    serde_json::to_value(v).expect("records serialize")
}

fn parse_id(id: &str, what: &str, status: u16) -> Result<u64, WooError> {
    id.parse().map_err(|_| WooError::invalid_id(what, status))
}

fn body_object(body: &Bytes) -> Result<Map<String, Value>, WooError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(WooError::new(
            400,
            "rest_invalid_json",
            "Invalid JSON body passed.",
        )),
    }
}

// ---------------------------------------------------------------- field checks

fn string_of(key: &str, v: &Value) -> Result<String, WooError> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| WooError::param(key, format!("{key} is not of type string.")))
}

fn one_of(key: &str, v: &Value, allowed: &[&str]) -> Result<String, WooError> {
    let s = string_of(key, v)?;
    if allowed.contains(&s.as_str()) {
        Ok(s)
    } else {
        Err(WooError::param(
            key,
            format!("{key} is not one of {}.", allowed.join(", ")),
        ))
    }
}

/// An integer, or a string of digits (WordPress's `rest_is_integer`).
fn integer_of(key: &str, v: &Value) -> Result<i64, WooError> {
    v.as_i64()
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        .ok_or_else(|| WooError::param(key, format!("{key} is not of type integer.")))
}

/// A boolean, or one of the strings and numbers WordPress takes for one.
fn boolean_of(key: &str, v: &Value) -> Result<bool, WooError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if matches!(s.as_str(), "true" | "1") => Ok(true),
        Value::String(s) if matches!(s.as_str(), "false" | "0" | "") => Ok(false),
        Value::Number(n) if n.as_i64() == Some(1) => Ok(true),
        Value::Number(n) if n.as_i64() == Some(0) => Ok(false),
        _ => Err(WooError::param(
            key,
            format!("{key} is not of type boolean."),
        )),
    }
}

/// A price: a string holding a decimal number, or empty.
fn price_of(key: &str, v: &Value) -> Result<String, WooError> {
    let s = string_of(key, v)?;
    if s.is_empty() || s.trim().parse::<f64>().is_ok() {
        Ok(s.trim().to_owned())
    } else {
        Err(WooError::param(key, format!("{key} is not a valid price.")))
    }
}

/// Applies `meta_data` entries: by `id` when given, else by key, else appended.
fn apply_meta(meta: &mut Vec<Meta>, v: &Value, next_meta_id: &mut u64) -> Result<(), WooError> {
    let items = v
        .as_array()
        .ok_or_else(|| WooError::param("meta_data", "meta_data is not of type array."))?;
    for item in items {
        let key = item
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                WooError::param("meta_data", "meta_data[0][key] is not of type string.")
            })?
            .to_owned();
        let value = item.get("value").cloned().unwrap_or(Value::Null);
        let by_id = item.get("id").and_then(Value::as_u64);
        let existing = match by_id {
            Some(id) => meta.iter_mut().find(|m| m.id == id),
            None => meta.iter_mut().find(|m| m.key == key),
        };
        match existing {
            Some(m) => {
                m.key = key;
                m.value = value;
            }
            None => {
                meta.push(Meta {
                    id: *next_meta_id,
                    key,
                    value,
                });
                *next_meta_id += 1;
            }
        }
    }
    Ok(())
}

/// Applies a product body to a copy; unknown fields are ignored.
fn apply_product(
    p: &mut WooProduct,
    body: &Map<String, Value>,
    next_meta_id: &mut u64,
) -> Result<(), WooError> {
    for (k, v) in body {
        match k.as_str() {
            "name" => p.name = string_of(k, v)?,
            "type" => p.kind = one_of(k, v, PRODUCT_TYPES)?,
            "status" => p.status = one_of(k, v, PRODUCT_STATUSES)?,
            "sku" => p.sku = string_of(k, v)?.trim().to_owned(),
            "regular_price" => p.regular_price = price_of(k, v)?,
            "sale_price" => p.sale_price = price_of(k, v)?,
            "manage_stock" => p.manage_stock = boolean_of(k, v)?,
            "stock_quantity" => p.stock_quantity = Some(integer_of(k, v)?),
            "stock_status" => p.stock_status = one_of(k, v, STOCK_STATUSES)?,
            "meta_data" => apply_meta(&mut p.meta_data, v, next_meta_id)?,
            _ => {}
        }
    }
    p.derive();
    Ok(())
}

// ---------------------------------------------------------------- products

impl WooData {
    /// Creates a product from a request body.
    fn create_product(
        &mut self,
        body: &Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<WooProduct, WooError> {
        let mut p = WooProduct::simple("", "", "", 0);
        p.manage_stock = false;
        p.stock_quantity = None;
        apply_product(&mut p, body, &mut self.next_meta_id)?;
        self.insert_product(p, now)
    }

    fn insert_product(
        &mut self,
        mut p: WooProduct,
        now: DateTime<Utc>,
    ) -> Result<WooProduct, WooError> {
        if p.unique().iter().any(|s| self.products.key_of(s).is_some()) {
            return Err(WooError::sku_taken());
        }
        let id = self.take_id();
        p.date_created = now;
        p.date_created_gmt = now;
        p.derive();
        self.products
            .save(Some(id), &mut p, now)
            .map_err(|_| WooError::sku_taken())?;
        Ok(p)
    }

    /// Changes product `id` with a request body; nothing changes when it is refused.
    fn update_product(
        &mut self,
        id: u64,
        body: &Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<WooProduct, WooError> {
        let mut p = self
            .products
            .get(id)
            .cloned()
            .ok_or_else(|| WooError::invalid_id("product", 400))?;
        let mut next_meta_id = self.next_meta_id;
        apply_product(&mut p, body, &mut next_meta_id)?;
        self.products
            .save(Some(id), &mut p, now)
            .map_err(|_| WooError::sku_taken())?;
        self.next_meta_id = next_meta_id;
        Ok(p)
    }
}

impl WooState {
    /// The stamp of a change made now: whole seconds, as WordPress stores dates.
    fn now(&self) -> DateTime<Utc> {
        self.core.clock.now().trunc_subsecs(0)
    }
}

async fn list_products(State(state): State<Arc<WooState>>, RawQuery(q): RawQuery) -> WooResult {
    let list = WooList::read(q.as_deref())?;
    let skus: Option<Vec<String>> = list
        .get("sku")
        .map(|s| s.split(',').map(|x| x.trim().to_lowercase()).collect());
    let status = list.get("status").filter(|s| *s != "any");
    let mut data = state.data.lock().unwrap();
    let (rows, total, drift) = list.select(&data.products, |p| {
        status.is_none_or(|s| p.status == s)
            && skus
                .as_ref()
                .is_none_or(|skus| skus.contains(&p.sku.to_lowercase()))
    });
    state.core.drift(&mut data.products, drift);
    let items = rows.iter().map(to_json).collect();
    Ok(list.respond(
        &state.core.base_url,
        "/wp-json/wc/v3/products",
        items,
        total,
    ))
}

async fn get_product(State(state): State<Arc<WooState>>, Path(id): Path<String>) -> WooResult {
    let id = parse_id(&id, "product", 404)?;
    let data = state.data.lock().unwrap();
    let p = data
        .products
        .get(id)
        .ok_or_else(|| WooError::invalid_id("product", 404))?;
    Ok(Json(to_json(p)).into_response())
}

async fn create_product(State(state): State<Arc<WooState>>, body: Bytes) -> WooResult {
    let body = body_object(&body)?;
    let now = state.now();
    let p = state.data.lock().unwrap().create_product(&body, now)?;
    Ok((StatusCode::CREATED, Json(to_json(&p))).into_response())
}

async fn update_product(
    State(state): State<Arc<WooState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> WooResult {
    let id = parse_id(&id, "product", 400)?;
    let body = body_object(&body)?;
    let now = state.now();
    let p = state.data.lock().unwrap().update_product(id, &body, now)?;
    Ok(Json(to_json(&p)).into_response())
}

/// A failed batch item: `{"id","error":{"code","message","data"}}`.
fn batch_error(id: u64, e: WooError) -> Value {
    json!({ "id": id, "error": e.body() })
}

async fn batch_products(State(state): State<Arc<WooState>>, body: Bytes) -> WooResult {
    let body = body_object(&body)?;
    let list = |key: &str| -> Vec<Value> {
        body.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (creates, updates, deletes) = (list("create"), list("update"), list("delete"));
    if creates.len() + updates.len() + deletes.len() > MAX_PER_PAGE {
        return Err(WooError::new(
            413,
            "woocommerce_rest_request_entity_too_large",
            format!("Unable to accept more than {MAX_PER_PAGE} items for this request."),
        ));
    }
    let now = state.now();
    let faults = &state.core.faults;
    let failure_rate = faults.get().batch_failure_rate;
    let injected = || {
        WooError::new(
            500,
            "woocommerce_rest_batch_item_failed",
            "The item could not be saved (injected).",
        )
    };
    let mut data = state.data.lock().unwrap();
    let mut out = Map::new();
    if !creates.is_empty() {
        let items = creates
            .iter()
            .map(|item| {
                let result = match item.as_object() {
                    _ if faults.roll(failure_rate) => Err(injected()),
                    Some(m) => data.create_product(m, now),
                    None => Err(WooError::new(400, "rest_invalid_json", "Invalid item.")),
                };
                result
                    .map(|p| to_json(&p))
                    .unwrap_or_else(|e| batch_error(0, e))
            })
            .collect();
        out.insert("create".into(), Value::Array(items));
    }
    if !updates.is_empty() {
        let items = updates
            .iter()
            .map(|item| {
                let id = item
                    .get("id")
                    .and_then(|v| integer_of("id", v).ok())
                    .unwrap_or(0);
                let result = match item.as_object() {
                    _ if faults.roll(failure_rate) => Err(injected()),
                    Some(m) if id > 0 => data.update_product(id as u64, m, now),
                    _ => Err(WooError::invalid_id("product", 400)),
                };
                result
                    .map(|p| to_json(&p))
                    .unwrap_or_else(|e| batch_error(id.max(0) as u64, e))
            })
            .collect();
        out.insert("update".into(), Value::Array(items));
    }
    if !deletes.is_empty() {
        let items = deletes
            .iter()
            .map(|v| {
                let id = integer_of("id", v).unwrap_or(0).max(0) as u64;
                match data.products.remove(id) {
                    Some(p) => to_json(&p),
                    None => batch_error(id, WooError::invalid_id("product", 400)),
                }
            })
            .collect();
        out.insert("delete".into(), Value::Array(items));
    }
    Ok(Json(Value::Object(out)).into_response())
}

// ---------------------------------------------------------------- orders

/// Applies an order body to a copy: status, billing, shipping, note and `meta_data`.
fn apply_order(
    o: &mut WooOrder,
    body: &Map<String, Value>,
    ids: &mut OrderIds,
) -> Result<(), WooError> {
    for (k, v) in body {
        match k.as_str() {
            "status" => o.status = one_of(k, v, ORDER_STATUSES)?,
            "customer_note" => o.customer_note = string_of(k, v)?,
            "meta_data" => apply_meta(&mut o.meta_data, v, &mut ids.meta)?,
            "line_items" => apply_line_items(o, v, ids)?,
            "billing" | "shipping" => {
                let fields = v
                    .as_object()
                    .ok_or_else(|| WooError::param(k, format!("{k} is not of type object.")))?;
                let address = if k == "billing" {
                    &mut o.billing
                } else {
                    &mut o.shipping
                };
                for (f, v) in fields {
                    let s = string_of(&format!("{k}[{f}]"), v)?;
                    match f.as_str() {
                        "first_name" => address.first_name = s,
                        "last_name" => address.last_name = s,
                        "company" => address.company = s,
                        "address_1" => address.address_1 = s,
                        "address_2" => address.address_2 = s,
                        "city" => address.city = s,
                        "state" => address.state = s,
                        "postcode" => address.postcode = s,
                        "country" => address.country = s,
                        "phone" => address.phone = s,
                        "email" if k == "billing" => address.email = Some(s),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// What an order change may take besides the order: the next meta and line ids, and the
/// catalogue new lines are priced from.
struct OrderIds<'a> {
    meta: u64,
    line: u64,
    products: &'a Table<WooProduct>,
}

/// Applies `line_items` as WooCommerce does: an entry with an `id` changes that line of the
/// order (an id of another order is refused) and a `quantity` of 0 removes it; an entry
/// without one adds a new line for its `sku` (or `product_id`). Lines the body does not name
/// stay as they are, so a body that lists the order's lines without their ids adds them a
/// second time. Totals not given are the unit price times the quantity; the order's total
/// follows its lines.
fn apply_line_items(o: &mut WooOrder, v: &Value, ids: &mut OrderIds) -> Result<(), WooError> {
    let items = v
        .as_array()
        .ok_or_else(|| WooError::param("line_items", "line_items is not of type array."))?;
    for (i, item) in items.iter().enumerate() {
        let item = item.as_object().ok_or_else(|| {
            WooError::param(
                "line_items",
                format!("line_items[{i}] is not of type object."),
            )
        })?;
        let quantity = match item.get("quantity") {
            None | Some(Value::Null) => None,
            Some(q) => Some(q.as_i64().filter(|q| *q >= 0).ok_or_else(|| {
                WooError::param(
                    "line_items",
                    format!("line_items[{i}][quantity] is not of type integer."),
                )
            })?),
        };
        let text = |name: &str| -> Result<Option<String>, WooError> {
            item.get(name)
                .filter(|v| !v.is_null())
                .map(|v| string_of(&format!("line_items[{i}][{name}]"), v))
                .transpose()
        };
        let (name, subtotal, total) = (text("name")?, text("subtotal")?, text("total")?);
        let id = item.get("id").and_then(Value::as_u64).filter(|id| *id > 0);
        let line = match id {
            Some(id) => {
                let at = o
                    .line_items
                    .iter()
                    .position(|l| l.id == id)
                    .ok_or_else(|| {
                        WooError::new(
                            400,
                            "woocommerce_rest_invalid_item_id",
                            "Order item ID provided is not associated with order.",
                        )
                    })?;
                if quantity == Some(0) {
                    o.line_items.remove(at);
                    continue;
                }
                &mut o.line_items[at]
            }
            // A zero quantity removes a line; without an id there is none to remove.
            None if quantity == Some(0) => continue,
            None => {
                let product =
                    match (text("sku")?, item.get("product_id").and_then(Value::as_u64)) {
                        (Some(sku), _) => ids.products.find(&sku.to_lowercase()),
                        (None, Some(pid)) => ids.products.get(pid),
                        (None, None) => None,
                    }
                    .ok_or_else(|| {
                        WooError::new(
                            400,
                            "woocommerce_rest_invalid_product_id",
                            "Product ID or SKU provided is invalid.",
                        )
                    })?;
                o.line_items.push(LineItem {
                    id: ids.line,
                    name: product.name.clone(),
                    product_id: product.id,
                    variation_id: 0,
                    quantity: 1,
                    subtotal: String::new(),
                    total: String::new(),
                    sku: product.sku.clone(),
                    price: product.price.parse().unwrap_or(0.0),
                });
                ids.line += 1;
                o.line_items.last_mut().expect("just added")
            }
        };
        if let Some(q) = quantity.filter(|q| *q > 0) {
            line.quantity = q;
        }
        if let Some(name) = name {
            line.name = name;
        }
        let amount = |given: Option<String>, price: f64, q: i64| match given {
            Some(t) => t.parse::<f64>().map(money).map_err(|_| {
                WooError::param(
                    "line_items",
                    format!("line_items[{i}] has a total that is not a number."),
                )
            }),
            None => Ok(money(price * q as f64)),
        };
        line.subtotal = amount(subtotal, line.price, line.quantity)?;
        line.total = amount(total, line.price, line.quantity)?;
        line.price = line.total.parse::<f64>().unwrap_or(0.0) / line.quantity as f64;
    }
    let total: f64 = o
        .line_items
        .iter()
        .filter_map(|l| l.total.parse::<f64>().ok())
        .sum();
    o.total = money(total);
    Ok(())
}

fn money(x: f64) -> String {
    format!("{:.2}", super::server::cents(x))
}

impl WooState {
    /// Queues `order.created` or `order.updated` with the order as the body.
    fn notify(&self, o: &WooOrder, event: &str) {
        let duplicate = self.core.faults.get().duplicate_webhooks;
        let topic = format!("order.{event}");
        self.webhooks.send_raw(Outgoing {
            event: &topic,
            body: to_json(o).to_string(),
            content_type: "application/json",
            extra: vec![
                ("X-WC-Webhook-Source", format!("{}/", self.core.base_url)),
                ("X-WC-Webhook-Topic", topic.clone()),
                ("X-WC-Webhook-Resource", "order".to_owned()),
                ("X-WC-Webhook-Event", event.to_owned()),
                ("X-WC-Webhook-ID", "1".to_owned()),
            ],
            duplicate,
        });
    }

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

    /// Changes order `id`; a refused change leaves it untouched. Sends `order.updated`.
    fn change_order(
        &self,
        id: u64,
        f: impl FnOnce(&mut WooOrder, &mut OrderIds) -> Result<(), WooError>,
    ) -> Result<WooOrder, WooError> {
        let now = self.now();
        let order = {
            let mut data = self.data.lock().unwrap();
            let WooData {
                orders,
                products,
                next_meta_id,
                next_line_id,
                ..
            } = &mut *data;
            let mut ids = OrderIds {
                meta: *next_meta_id,
                line: *next_line_id,
                products,
            };
            orders
                .try_update(id, now, |o| f(o, &mut ids))
                .ok_or_else(|| WooError::invalid_id("order", 400))??;
            (*next_meta_id, *next_line_id) = (ids.meta, ids.line);
            orders.get(id).cloned().expect("the order exists")
        };
        self.notify(&order, "updated");
        Ok(order)
    }

    /// Places an order: ids, number, names, product ids, totals and dates are filled in.
    fn place_order(&self, mut o: WooOrder) -> WooOrder {
        let now = self.now();
        let order = {
            let mut data = self.data.lock().unwrap();
            let id = data.take_id();
            for line in &mut o.line_items {
                line.id = data.next_line_id;
                data.next_line_id += 1;
                if let Some(p) = data.products.find(&line.sku.to_lowercase()) {
                    line.product_id = p.id;
                    if line.name.is_empty() {
                        line.name = p.name.clone();
                    }
                }
                let amount = line.price * line.quantity as f64;
                line.subtotal = money(amount);
                line.total = money(amount);
            }
            let total: f64 = o
                .line_items
                .iter()
                .map(|l| l.price * l.quantity as f64)
                .sum();
            o.total = money(total);
            o.number = id.to_string();
            o.date_created = now;
            o.date_created_gmt = now;
            for m in &mut o.meta_data {
                m.id = data.next_meta_id;
                data.next_meta_id += 1;
            }
            data.orders
                .save(Some(id), &mut o, now)
                .expect("orders hold no unique values");
            o
        };
        self.notify(&order, "created");
        order
    }
}

async fn list_orders(State(state): State<Arc<WooState>>, RawQuery(q): RawQuery) -> WooResult {
    let list = WooList::read(q.as_deref())?;
    let statuses: Option<Vec<String>> = match list.get("status") {
        None | Some("any") => None,
        Some(s) => {
            let wanted: Vec<String> = s.split(',').map(|x| x.trim().to_owned()).collect();
            if let Some(bad) = wanted
                .iter()
                .find(|w| !ORDER_STATUSES.contains(&w.as_str()))
            {
                return Err(WooError::param(
                    "status",
                    format!(
                        "status[0] is not one of any, {} ({bad}).",
                        ORDER_STATUSES.join(", ")
                    ),
                ));
            }
            Some(wanted)
        }
    };
    let mut data = state.data.lock().unwrap();
    let (rows, total, drift) = list.select(&data.orders, |o| {
        // `trash` is only listed when asked for.
        match &statuses {
            Some(s) => s.contains(&o.status),
            None => o.status != "trash",
        }
    });
    state.core.drift(&mut data.orders, drift);
    let items = rows.iter().map(to_json).collect();
    Ok(list.respond(&state.core.base_url, "/wp-json/wc/v3/orders", items, total))
}

async fn get_order(State(state): State<Arc<WooState>>, Path(id): Path<String>) -> WooResult {
    let id = parse_id(&id, "order", 404)?;
    let data = state.data.lock().unwrap();
    let o = data
        .orders
        .get(id)
        .ok_or_else(|| WooError::invalid_id("order", 404))?;
    Ok(Json(to_json(o)).into_response())
}

async fn update_order(
    State(state): State<Arc<WooState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> WooResult {
    let id = parse_id(&id, "order", 400)?;
    let body = body_object(&body)?;
    let o = state.change_order(id, |o, ids| apply_order(o, &body, ids))?;
    Ok(Json(to_json(&o)).into_response())
}

// ---------------------------------------------------------------- shipment trackings

/// The order of a tracking path, which must exist (404 otherwise).
fn tracked_order(data: &WooData, id: &str) -> Result<u64, WooError> {
    let id = parse_id(id, "order", 404)?;
    data.orders
        .get(id)
        .map(|_| id)
        .ok_or_else(|| WooError::invalid_id("order", 404))
}

fn tracking_not_found() -> WooError {
    WooError::new(
        404,
        "woocommerce_rest_shipment_tracking_invalid_id",
        "Invalid tracking ID.",
    )
}

/// Applies the fields of a tracking body; `tracking_number` must not end up empty.
fn apply_tracking(t: &mut ShipmentTracking, body: &Map<String, Value>) -> Result<(), WooError> {
    for (k, v) in body {
        match k.as_str() {
            "tracking_provider" => t.tracking_provider = string_of(k, v)?,
            "tracking_number" => t.tracking_number = string_of(k, v)?,
            "date_shipped" => t.date_shipped = string_of(k, v)?,
            _ => {}
        }
    }
    if t.tracking_number.trim().is_empty() {
        return Err(WooError::param("tracking_number", "must not be empty"));
    }
    Ok(())
}

async fn list_trackings(State(state): State<Arc<WooState>>, Path(id): Path<String>) -> WooResult {
    let data = state.data.lock().unwrap();
    let id = tracked_order(&data, &id)?;
    let list: Vec<Value> = data.trackings.get(&id).map(to_json).into_iter().collect();
    Ok(Json(Value::Array(list)).into_response())
}

async fn get_tracking(
    State(state): State<Arc<WooState>>,
    Path((id, tracking_id)): Path<(String, String)>,
) -> WooResult {
    let data = state.data.lock().unwrap();
    let id = tracked_order(&data, &id)?;
    let t = data
        .trackings
        .get(&id)
        .filter(|t| t.tracking_id == tracking_id)
        .ok_or_else(tracking_not_found)?;
    Ok(Json(to_json(t)).into_response())
}

async fn create_tracking(
    State(state): State<Arc<WooState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> WooResult {
    let body = body_object(&body)?;
    let mut data = state.data.lock().unwrap();
    let id = tracked_order(&data, &id)?;
    if data.trackings.contains_key(&id) {
        return Err(WooError::new(
            422,
            "woocommerce_rest_shipment_tracking_exists",
            "The order already has a shipment tracking.",
        ));
    }
    let mut t = ShipmentTracking {
        tracking_id: format!("trk-{}", data.next_tracking),
        tracking_provider: String::new(),
        tracking_number: String::new(),
        date_shipped: String::new(),
    };
    apply_tracking(&mut t, &body)?;
    data.next_tracking += 1;
    data.trackings.insert(id, t.clone());
    Ok((StatusCode::CREATED, Json(to_json(&t))).into_response())
}

async fn update_tracking(
    State(state): State<Arc<WooState>>,
    Path((id, tracking_id)): Path<(String, String)>,
    body: Bytes,
) -> WooResult {
    let body = body_object(&body)?;
    let mut data = state.data.lock().unwrap();
    let id = tracked_order(&data, &id)?;
    let t = data
        .trackings
        .get_mut(&id)
        .filter(|t| t.tracking_id == tracking_id)
        .ok_or_else(tracking_not_found)?;
    let mut changed = t.clone();
    apply_tracking(&mut changed, &body)?;
    *t = changed.clone();
    Ok(Json(to_json(&changed)).into_response())
}

// ---------------------------------------------------------------- inventory levels

fn level_json(sku: &str, location: &str, quantity: i64) -> Value {
    json!({ "sku": sku, "location": location, "quantity": quantity })
}

async fn list_levels(State(state): State<Arc<WooState>>, RawQuery(q): RawQuery) -> WooResult {
    let pairs = query_pairs(q.as_deref());
    let sku = query_get(&pairs, "sku");
    let data = state.data.lock().unwrap();
    let list: Vec<Value> = data
        .levels
        .iter()
        .filter(|((s, _), _)| sku.is_none_or(|w| w == s))
        .map(|((s, l), q)| level_json(s, l, *q))
        .collect();
    Ok(Json(Value::Array(list)).into_response())
}

async fn create_level(State(state): State<Arc<WooState>>, body: Bytes) -> WooResult {
    let body = body_object(&body)?;
    let field = |k: &str| -> Result<String, WooError> {
        let v = body
            .get(k)
            .ok_or_else(|| WooError::param(k, "is required"))?;
        string_of(k, v)
    };
    let (sku, location) = (field("sku")?, field("location")?);
    let quantity = integer_of("quantity", body.get("quantity").unwrap_or(&Value::Null))?;
    let mut data = state.data.lock().unwrap();
    let key = (sku.clone(), location.clone());
    if data.levels.contains_key(&key) {
        return Err(WooError::new(
            400,
            "woocommerce_rest_inventory_level_exists",
            "The product already has a stock level at this location.",
        ));
    }
    data.levels.insert(key, quantity);
    Ok((
        StatusCode::CREATED,
        Json(level_json(&sku, &location, quantity)),
    )
        .into_response())
}

async fn update_level(
    State(state): State<Arc<WooState>>,
    Path((sku, location)): Path<(String, String)>,
    body: Bytes,
) -> WooResult {
    let body = body_object(&body)?;
    let quantity = integer_of("quantity", body.get("quantity").unwrap_or(&Value::Null))?;
    let mut data = state.data.lock().unwrap();
    let Some(level) = data.levels.get_mut(&(sku.clone(), location.clone())) else {
        return Err(WooError::new(
            404,
            "woocommerce_rest_inventory_level_invalid",
            "No stock level of this product at this location.",
        ));
    };
    *level = quantity;
    Ok(Json(level_json(&sku, &location, quantity)).into_response())
}

// ---------------------------------------------------------------- handle

/// A running WooCommerce simulator; dereferences to the [`SimHandle`] (URL, counters, faults,
/// clock, consumer key and secret).
#[derive(Debug)]
pub struct WooHandle {
    sim: SimHandle,
    state: Arc<WooState>,
}

impl Deref for WooHandle {
    type Target = SimHandle;

    fn deref(&self) -> &SimHandle {
        &self.sim
    }
}

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

    // ---- products

    pub fn product(&self, id: u64) -> Option<WooProduct> {
        self.state.data.lock().unwrap().products.get(id).cloned()
    }

    /// The product with this SKU (case-insensitive).
    pub fn product_by_sku(&self, sku: &str) -> Option<WooProduct> {
        let data = self.state.data.lock().unwrap();
        data.products.find(&sku.to_lowercase()).cloned()
    }

    /// Every product in id order.
    pub fn products(&self) -> Vec<WooProduct> {
        self.state.data.lock().unwrap().products.all()
    }

    /// Adds a product (id and dates are assigned); fails on a SKU already in use.
    pub fn create_product(&self, p: WooProduct) -> anyhow::Result<WooProduct> {
        let now = self.state.now();
        let mut data = self.state.data.lock().unwrap();
        data.insert_product(p, now)
            .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))
    }

    /// Changes a product as a merchant would in the admin, bumping `date_modified_gmt`.
    pub fn update_product(&self, id: u64, f: impl FnOnce(&mut WooProduct)) -> Option<WooProduct> {
        let now = self.state.now();
        let mut data = self.state.data.lock().unwrap();
        let mut p = data.products.get(id)?.clone();
        f(&mut p);
        p.derive();
        data.products.save(Some(id), &mut p, now).ok()?;
        Some(p)
    }

    // ---- orders

    pub fn order(&self, id: u64) -> Option<WooOrder> {
        self.state.data.lock().unwrap().orders.get(id).cloned()
    }

    /// Every order in id order.
    pub fn orders(&self) -> Vec<WooOrder> {
        self.state.data.lock().unwrap().orders.all()
    }

    /// Places an order as a customer would at the checkout; sends `order.created`.
    pub fn place_order(&self, o: WooOrder) -> WooOrder {
        self.state.place_order(o)
    }

    /// Changes an order as a merchant would; sends `order.updated`.
    pub fn update_order(&self, id: u64, f: impl FnOnce(&mut WooOrder)) -> Option<WooOrder> {
        self.state
            .change_order(id, |o, _| {
                f(o);
                Ok(())
            })
            .ok()
    }

    /// The stock level of a SKU at a location, if there is one.
    pub fn level(&self, sku: &str, location: &str) -> Option<i64> {
        self.state
            .data
            .lock()
            .unwrap()
            .levels
            .get(&(sku.to_owned(), location.to_owned()))
            .copied()
    }

    /// The shipment tracking of an order, if it has one.
    pub fn tracking(&self, order_id: u64) -> Option<ShipmentTracking> {
        self.state
            .data
            .lock()
            .unwrap()
            .trackings
            .get(&order_id)
            .cloned()
    }

    // ---- seeding

    /// Adds one simple product per catalogue item, prices as strings with cents (SKUs
    /// already present are skipped).
    pub fn seed_catalogue(&self, items: &[CatalogueItem]) {
        let now = self.state.now();
        let mut data = self.state.data.lock().unwrap();
        for item in items {
            let p = WooProduct::simple(&item.sku, &item.name, &money(item.price_gross), item.stock);
            let _ = data.insert_product(p, now);
        }
    }

    /// Adds `n` generated products (`SKU-000001`…), the ERP simulator's catalogue.
    pub fn seed_products(&self, n: usize, seed: u64) -> Vec<CatalogueItem> {
        let items = seed::catalogue(n, seed);
        self.seed_catalogue(&items);
        items
    }

    /// Stops the server and waits for it to end.
    pub async fn shutdown(self) {
        self.sim.shutdown().await
    }
}
