//! The shop simulator, MerchantPro-style: Basic auth with lock-out, products with variants,
//! orders with a shipping state machine and locking, customers, suppliers, `meta.links.next`
//! paging with absolute URLs, a token-bucket rate limit and signed outbound webhooks.
//!
//! Lists are ordered by modification time, oldest first; `updated_after` is exclusive.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::faults::Faults;
use super::handle::SimHandle;
use super::seed::{self, CatalogueItem};
use super::server::{
    Core, Flavor, ListQuery, cents, error_response, query_get, query_pairs, serve,
};
mod resource;
mod suppliers;
use resource::Resource;
pub use suppliers::{Supplier, SupplierInput};

use super::table::{Page, Record, Since, Table, parse_time, patch, record, rfc3339};
use super::webhook::{WebhookConfig, WebhookDelivery, WebhookSender};
use erpsync_clock::{SharedClock, SystemClock};

/// Largest `limit` a list accepts.
pub(crate) const MAX_LIMIT: usize = 100;
const DEFAULT_LIMIT: usize = 20;

/// `basic` or `multi_variant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProductType {
    #[default]
    Basic,
    MultiVariant,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct VariantOption {
    pub name: String,
    pub value: String,
}

/// A variant of a `multi_variant` product: stock and prices live here.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Variant {
    pub id: u64,
    pub sku: String,
    pub ext_ref: Option<String>,
    pub stock: i64,
    pub price_gross: f64,
    pub price_net: f64,
    pub variant_options: Vec<VariantOption>,
}

/// A shop product.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Product {
    pub id: u64,
    #[serde(rename = "type")]
    pub kind: ProductType,
    pub sku: String,
    pub ext_ref: Option<String>,
    pub name: String,
    pub description: String,
    pub status: String,
    pub price_net: Option<f64>,
    pub price_gross: Option<f64>,
    pub tax_id: u64,
    pub stock: Option<i64>,
    pub weight: Option<f64>,
    pub variants: Vec<Variant>,
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
    /// Real MerchantPro fields the simulator does not model (`meta_title`, `cost_gross`…),
    /// kept and served back only when [`ShopOptions::keep_unmodelled`] is on.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Product {
    /// An active `basic` product with 19 % VAT (`tax_id` 1).
    pub fn basic(sku: &str, name: &str, price_gross: f64, stock: i64) -> Self {
        Product {
            sku: sku.to_owned(),
            name: name.to_owned(),
            status: "active".to_owned(),
            price_gross: Some(price_gross),
            price_net: Some(cents(price_gross / 1.19)),
            tax_id: 1,
            stock: Some(stock),
            ..Product::default()
        }
    }
}

/// The customer block of an order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OrderCustomer {
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub phone: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Address {
    pub first_name: String,
    pub last_name: String,
    pub company: String,
    pub address: String,
    pub city: String,
    pub county: String,
    pub country: String,
    pub zip: String,
    pub phone: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    #[serde(default)]
    pub name: String,
    pub quantity: i64,
    #[serde(default)]
    pub unit_price_gross: f64,
}

/// A shop order.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Order {
    pub id: String,
    pub number: String,
    pub channel_name: String,
    pub shipping_status: String,
    pub payment_status: String,
    pub payment_method_code: String,
    pub customer: OrderCustomer,
    pub billing_address: Address,
    pub shipping_address: Address,
    pub lines: Vec<OrderLine>,
    pub total_gross: f64,
    pub awb: Option<String>,
    pub invoice_number: Option<String>,
    pub invoice_url: Option<String>,
    pub locked: bool,
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl Order {
    /// An awaiting, unpaid web order with these lines (SKU, quantity, unit gross price).
    pub fn new(email: &str, lines: &[(&str, i64, f64)]) -> Self {
        Order {
            channel_name: "web".to_owned(),
            shipping_status: "awaiting".to_owned(),
            payment_status: "awaiting".to_owned(),
            payment_method_code: "cash_delivery".to_owned(),
            customer: OrderCustomer {
                email: email.to_owned(),
                ..OrderCustomer::default()
            },
            lines: lines
                .iter()
                .map(|(sku, quantity, price)| OrderLine {
                    sku: (*sku).to_owned(),
                    name: (*sku).to_owned(),
                    quantity: *quantity,
                    unit_price_gross: *price,
                })
                .collect(),
            ..Order::default()
        }
    }
}

/// A shop customer.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Customer {
    pub id: u64,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub phone: String,
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

record!(Product, id {
    /// Its SKU and its variants': a SKU names one product in the whole shop.
    fn unique(&self) -> Vec<String> {
        std::iter::once(&self.sku)
            .chain(self.variants.iter().map(|v| &v.sku))
            .cloned()
            .collect()
    }
});
record!(Order);
record!(Customer, id {
    fn unique(&self) -> Vec<String> {
        vec![Customer::lookup_form(&self.email)]
    }
});

/// The shipping statuses in the order they are reached.
const SHIPPING_FLOW: &[&str] = &[
    "awaiting",
    "confirmed",
    "in_process",
    "shipped",
    "delivered",
];
const SHIPPING_OTHER: &[&str] = &["returned", "cancelled"];
/// Both spellings of cancelled appear in MerchantPro's own documentation.
const PAYMENT_STATUSES: &[&str] = &[
    "temporary",
    "awaiting",
    "paid",
    "failed",
    "canceled",
    "cancelled",
    "refunded",
    "rejected",
];

/// Whether the shop accepts a shipping status change: forward along the flow (steps may be
/// skipped, as a poller that misses one would need), cancelled before shipping, returned after.
pub(crate) fn shipping_transition_allowed(from: &str, to: &str) -> bool {
    if from == to {
        return true;
    }
    let rank = |s: &str| SHIPPING_FLOW.iter().position(|x| *x == s);
    match (rank(from), to) {
        (Some(a), "cancelled") => a < 3,
        (Some(a), "returned") => a >= 3,
        (Some(a), to) => rank(to).is_some_and(|b| b > a),
        (None, _) => false,
    }
}

/// The token bucket in front of the API (MerchantPro allows about 4 requests a second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    pub rate_per_sec: f64,
    pub burst: f64,
    /// Send `Retry-After` with the 429 (the real server's habit is unverified).
    pub send_retry_after: bool,
}

impl Default for TokenBucket {
    fn default() -> Self {
        TokenBucket {
            rate_per_sec: 4.0,
            burst: 4.0,
            send_retry_after: true,
        }
    }
}

/// How to start a shop simulator.
#[derive(Debug, Clone)]
pub struct ShopOptions {
    /// Address to listen on; port 0 picks a free one.
    pub bind: SocketAddr,
    pub api_key: String,
    pub api_secret: String,
    /// Consecutive bad credentials answered 401 before the lock-out (403) starts.
    pub max_bad_auth: u32,
    /// How long the lock-out lasts.
    pub auth_lockout: Duration,
    /// `None` turns rate limiting off.
    pub rate_limit: Option<TokenBucket>,
    /// Answer `limit` over 100 with the largest page instead of 400.
    pub clamp_limit: bool,
    pub webhook: Option<WebhookConfig>,
    pub faults: Faults,
    /// Seed of the fault generator.
    pub seed: u64,
    pub clock: SharedClock,
    /// Number of the first order created here.
    pub first_order_number: u64,
    /// Keep the real product fields the simulator does not model (SEO texts, costs, category
    /// name…) and serve them back, instead of accepting and dropping them: for wider products.
    pub keep_unmodelled: bool,
}

impl Default for ShopOptions {
    fn default() -> Self {
        ShopOptions {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key: "demo-key".to_owned(),
            api_secret: "demo-secret".to_owned(),
            max_bad_auth: 5,
            auth_lockout: Duration::from_secs(900),
            rate_limit: Some(TokenBucket::default()),
            clamp_limit: false,
            webhook: None,
            faults: Faults::default(),
            seed: 0,
            clock: Arc::new(SystemClock),
            first_order_number: 1001,
            keep_unmodelled: false,
        }
    }
}

impl ShopOptions {
    /// Defaults without a rate limit: what most engine tests want.
    pub fn unlimited() -> Self {
        ShopOptions {
            rate_limit: None,
            ..ShopOptions::default()
        }
    }

    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }
}

#[derive(Debug)]
struct ShopData {
    products: Table<Product>,
    last_variant_id: u64,
    orders: Table<Order>,
    order_numbers: HashMap<String, u64>,
    next_order_number: u64,
    customers: Table<Customer>,
    suppliers: Table<Supplier>,
}

#[derive(Debug, Default)]
struct AuthState {
    bad: u32,
    locked_until: Option<DateTime<Utc>>,
}

/// A [`TokenBucket`] in use (both shop simulators put one in front of their API).
#[derive(Debug)]
pub(crate) struct Limiter {
    config: TokenBucket,
    tokens: f64,
    last: DateTime<Utc>,
}

impl Limiter {
    /// A full bucket at `now`.
    pub fn new(config: TokenBucket, now: DateTime<Utc>) -> Self {
        Limiter {
            config,
            tokens: config.burst,
            last: now,
        }
    }

    /// Takes a token; without one, the `Retry-After` seconds to answer (when it is sent).
    pub fn take(&mut self, now: DateTime<Utc>) -> Result<(), Option<u64>> {
        let elapsed = (now - self.last).num_milliseconds().max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * self.config.rate_per_sec).min(self.config.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - self.tokens) / self.config.rate_per_sec).ceil() as u64;
        Err(self.config.send_retry_after.then_some(wait.max(1)))
    }
}

#[derive(Debug)]
struct ShopState {
    core: Arc<Core>,
    api_key: String,
    api_secret: String,
    max_bad_auth: u32,
    auth_lockout: Duration,
    clamp_limit: bool,
    keep_unmodelled: bool,
    auth: Mutex<AuthState>,
    limiter: Mutex<Option<Limiter>>,
    data: Mutex<ShopData>,
    webhooks: WebhookSender,
}

/// An error answer: `{"error":{"name","message"}}`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct ShopError {
    status: u16,
    name: &'static str,
    message: String,
}

impl ShopError {
    fn validation(message: impl Into<String>) -> Self {
        ShopError {
            status: 400,
            name: "ValidationError",
            message: message.into(),
        }
    }
    fn not_found(what: &str, id: &str) -> Self {
        ShopError {
            status: 404,
            name: "NotFound",
            message: format!("{what} {id} not found"),
        }
    }
}

impl IntoResponse for ShopError {
    fn into_response(self) -> Response {
        error_response(Flavor::Shop, self.status, self.name, &self.message, None)
    }
}

type ShopResult = Result<Response, ShopError>;

/// A success answer: the record in the `data` envelope.
fn ok(record: impl Serialize) -> ShopResult {
    Ok(Json(json!({ "data": record })).into_response())
}

/// A `201 Created` answer with the new record.
fn created(record: impl Serialize) -> ShopResult {
    Ok((StatusCode::CREATED, Json(json!({ "data": record }))).into_response())
}

/// Starts shop simulators.
#[derive(Debug)]
pub struct ShopSim;

impl ShopSim {
    /// Binds, starts serving in the background and returns the handle.
    pub async fn start(opts: ShopOptions) -> anyhow::Result<ShopHandle> {
        let listener = tokio::net::TcpListener::bind(opts.bind).await?;
        let now = opts.clock.now();
        let core = Core::new(
            Flavor::Shop,
            listener.local_addr()?,
            opts.faults,
            opts.seed,
            opts.clock,
        );
        let credentials = (opts.api_key.clone(), opts.api_secret.clone());
        let state = Arc::new(ShopState {
            core: core.clone(),
            api_key: opts.api_key,
            api_secret: opts.api_secret,
            max_bad_auth: opts.max_bad_auth,
            auth_lockout: opts.auth_lockout,
            clamp_limit: opts.clamp_limit,
            keep_unmodelled: opts.keep_unmodelled,
            auth: Mutex::new(AuthState::default()),
            limiter: Mutex::new(opts.rate_limit.map(|config| Limiter::new(config, now))),
            data: Mutex::new(ShopData {
                products: Table::new(),
                last_variant_id: 0,
                orders: Table::new(),
                order_numbers: HashMap::new(),
                next_order_number: opts.first_order_number,
                customers: Table::new(),
                suppliers: Table::new(),
            }),
            webhooks: WebhookSender::start(opts.webhook)?,
        });
        let api = Router::new()
            .route("/api/v2/products", get(list_products).post(create_product))
            .route(
                "/api/v2/products/{id}",
                get(get_product).patch(patch_product).delete(delete_product),
            )
            .route("/api/v2/orders", get(list_orders).post(create_order))
            .route("/api/v2/orders/{id}", get(get_order).patch(patch_order))
            .route("/api/v2/orders/{id}/lock", post(lock_order))
            .merge(resource::routes::<Customer>())
            .merge(resource::routes::<Supplier>())
            .route_layer(middleware::from_fn_with_state(state.clone(), shop_layer))
            .with_state(state.clone());
        let server = serve(
            listener,
            core.clone(),
            api,
            shop_control_routes(state.clone()),
        )?;
        Ok(ShopHandle {
            sim: SimHandle::new(core, server, "/api/v2", credentials),
            state,
        })
    }
}

/// Rate limit, then Basic auth with lock-out after repeated failures.
async fn shop_layer(State(state): State<Arc<ShopState>>, req: Request, next: Next) -> Response {
    let t = state.core.clock.now();
    if let Some(limiter) = state.limiter.lock().unwrap().as_mut()
        && let Err(retry) = limiter.take(t)
    {
        return error_response(
            Flavor::Shop,
            429,
            "TooManyRequests",
            "rate limit exceeded",
            retry,
        );
    }
    let good =
        basic_credentials(&req).is_some_and(|(k, s)| k == state.api_key && s == state.api_secret);
    {
        let mut auth = state.auth.lock().unwrap();
        if let Some(until) = auth.locked_until {
            if t < until {
                return forbidden();
            }
            *auth = AuthState::default();
        }
        if good {
            auth.bad = 0;
        } else {
            auth.bad += 1;
            if auth.bad > state.max_bad_auth {
                auth.locked_until =
                    Some(t + chrono::Duration::from_std(state.auth_lockout).unwrap_or_default());
                return forbidden();
            }
            return error_response(
                Flavor::Shop,
                401,
                "Unauthorized",
                "invalid API key or secret",
                None,
            );
        }
    }
    next.run(req).await
}

fn forbidden() -> Response {
    error_response(
        Flavor::Shop,
        403,
        "Forbidden",
        "too many failed authentication attempts",
        None,
    )
}

pub(crate) fn basic_credentials(req: &Request) -> Option<(String, String)> {
    use base64::Engine as _;
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (k, s) = text.split_once(':')?;
    Some((k.to_owned(), s.to_owned()))
}

// ---------------------------------------------------------------- paging

/// Reads a list request: `limit`, `page` and `updated_after`.
fn list_query(state: &ShopState, query: Option<&str>) -> Result<ListQuery, ShopError> {
    let pairs = query_pairs(query);
    let number = |key: &str, default: usize| -> Result<usize, ShopError> {
        match query_get(&pairs, key) {
            None => Ok(default),
            Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                ShopError::validation(format!("`{key}` must be a positive integer"))
            }),
        }
    };
    let mut limit = number("limit", DEFAULT_LIMIT)?;
    if limit > MAX_LIMIT {
        if !state.clamp_limit {
            return Err(ShopError::validation(format!(
                "`limit` must be at most {MAX_LIMIT}"
            )));
        }
        limit = MAX_LIMIT;
    }
    let page = number("page", 1)?;
    let since = match query_get(&pairs, "updated_after") {
        None => Since::All,
        Some(v) => parse_time(v).map(Since::After).ok_or_else(|| {
            ShopError::validation("`updated_after` must be an RFC 3339 timestamp")
        })?,
    };
    Ok(ListQuery {
        pairs,
        offset: (page - 1) * limit,
        limit,
        since,
    })
}

fn page_url(state: &ShopState, path: &str, pairs: &[(String, String)], page: usize) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(k, _)| k != "page") {
        ser.append_pair(k, v);
    }
    ser.append_pair("page", &page.to_string());
    format!("{}{path}?{}", state.core.base_url, ser.finish())
}

fn list_body(
    state: &ShopState,
    path: &str,
    list: &ListQuery,
    items: Vec<Value>,
    has_more: bool,
) -> Response {
    let page = list.offset / list.limit + 1;
    let mut links = Map::new();
    links.insert(
        "current".into(),
        page_url(state, path, &list.pairs, page).into(),
    );
    if has_more {
        links.insert(
            "next".into(),
            page_url(state, path, &list.pairs, page + 1).into(),
        );
    }
    Json(json!({"data": items, "meta": {"links": links}})).into_response()
}

/// Keeps only the requested `fields` (always keeping `id`).
fn project(mut v: Value, fields: Option<&str>) -> Value {
    if let (Some(fields), Value::Object(map)) = (fields, &mut v) {
        let keep: Vec<&str> = fields.split(',').map(str::trim).collect();
        map.retain(|k, _| k == "id" || keep.contains(&k.as_str()));
    }
    v
}

fn product_json(p: &Product, with_variants: bool, fields: Option<&str>) -> Value {
    let mut v = serde_json::to_value(p).expect("products serialize");
    if !with_variants && let Value::Object(map) = &mut v {
        map.remove("variants");
    }
    project(v, fields)
}

/// Renders a page and notes the key a `page_drift` fault would change.
fn finish_page<T: Record>(
    page: Page<'_, T>,
    render: impl Fn(&T) -> Value,
) -> (Vec<Value>, bool, Option<u64>) {
    let items = page.rows.iter().map(|(_, r)| render(r)).collect();
    (items, page.has_more, page.drift_key())
}

// ---------------------------------------------------------------- products

async fn list_products(State(state): State<Arc<ShopState>>, RawQuery(q): RawQuery) -> ShopResult {
    let list = list_query(&state, q.as_deref())?;
    let with_variants = list
        .get("include")
        .is_some_and(|i| i.split(',').any(|x| x == "variants"));
    let fields = list.get("fields");
    let status = list.get("status");
    let mut data = state.data.lock().unwrap();
    let data = &mut *data;
    let (items, has_more, first) = if let Some(sku) = list.get("sku") {
        // An exact SKU (of the product or one of its variants) is an index lookup.
        let items: Vec<Value> = data
            .products
            .find(sku)
            .filter(|p| list.offset == 0 && status.is_none_or(|s| p.status == s))
            .map(|p| product_json(p, with_variants, fields))
            .into_iter()
            .collect();
        (items, false, None)
    } else {
        let page = list.page(&data.products, |p| status.is_none_or(|s| p.status == s));
        finish_page(page, |p| product_json(p, with_variants, fields))
    };
    state.core.drift(&mut data.products, first);
    Ok(list_body(
        &state,
        "/api/v2/products",
        &list,
        items,
        has_more,
    ))
}

fn parse_id(id: &str, what: &str) -> Result<u64, ShopError> {
    id.parse().map_err(|_| ShopError::not_found(what, id))
}

async fn get_product(
    State(state): State<Arc<ShopState>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ShopResult {
    let pairs = query_pairs(q.as_deref());
    let key = parse_id(&id, "product")?;
    let data = state.data.lock().unwrap();
    let p = data
        .products
        .get(key)
        .ok_or_else(|| ShopError::not_found("product", &id))?;
    ok(product_json(p, true, query_get(&pairs, "fields")))
}

fn body_object(body: &Bytes) -> Result<Map<String, Value>, ShopError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ShopError::validation("the body must be a JSON object")),
        Err(e) => Err(ShopError::validation(format!("invalid JSON: {e}"))),
    }
}

fn ignore_unknown(pairs: &[(String, String)]) -> bool {
    query_get(pairs, "ignore_nonexistent_fields").is_some_and(|v| v == "1" || v == "true")
}

/// Reads a POST or PATCH body of a `what` into its input type: with `ignore`, fields not in
/// `fields` are dropped first; the read-only `id` and `updated_at` a client may send back as it
/// read them always are.
fn parse_input<T: DeserializeOwned>(
    mut body: Map<String, Value>,
    ignore: bool,
    fields: &[&str],
    what: &str,
) -> Result<T, ShopError> {
    if ignore {
        body.retain(|k, _| fields.contains(&k.as_str()));
    }
    body.remove("id");
    body.remove("updated_at");
    serde_json::from_value(Value::Object(body))
        .map_err(|e| ShopError::validation(format!("invalid {what}: {e}")))
}

/// Real MerchantPro product fields the simulator accepts and does not model.
const PRODUCT_UNMODELLED: &[&str] = &[
    "inventory_enabled",
    "stock_reserved",
    "allow_backorders",
    "meta_title",
    "meta_description",
    "url",
    "old_price_net",
    "old_price_gross",
    "cost_net",
    "cost_gross",
    "tax_value",
    "tax_name",
    "quantity_multiplier",
    "category_id",
    "category_name",
    "categories",
    "images",
    "variant_attributes",
];
const PARENT_FORBIDDEN_ON_MULTI: &[&str] = &["stock", "price_net", "price_gross", "weight"];

fn f64_of(key: &str, v: &Value) -> Result<f64, ShopError> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| ShopError::validation(format!("`{key}` must be a number")))
}

fn i64_of(key: &str, v: &Value) -> Result<i64, ShopError> {
    let x = f64_of(key, v)?;
    if x.fract() != 0.0 {
        return Err(ShopError::validation(format!("`{key}` must be an integer")));
    }
    Ok(x as i64)
}

fn string_of(key: &str, v: &Value) -> Result<String, ShopError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(ShopError::validation(format!("`{key}` must be a string"))),
    }
}

fn opt<T>(
    key: &str,
    v: &Value,
    f: impl Fn(&str, &Value) -> Result<T, ShopError>,
) -> Result<Option<T>, ShopError> {
    if v.is_null() {
        Ok(None)
    } else {
        f(key, v).map(Some)
    }
}

fn unknown_field(key: &str, ignore: bool) -> Result<(), ShopError> {
    if ignore {
        Ok(())
    } else {
        Err(ShopError::validation(format!(
            "unknown field `{key}` (send `ignore_nonexistent_fields=1` to skip unknown fields)"
        )))
    }
}

/// Applies the fields of a POST or PATCH body to `p`.
fn apply_product(
    p: &mut Product,
    body: &Map<String, Value>,
    (ignore, keep_unmodelled): (bool, bool),
    last_variant_id: &mut u64,
) -> Result<(), ShopError> {
    for (k, v) in body {
        match k.as_str() {
            "id" | "created_at" | "updated_at" => {}
            "type" => {
                p.kind = serde_json::from_value(v.clone()).map_err(|_| {
                    ShopError::validation("`type` must be `basic` or `multi_variant`")
                })?
            }
            "sku" => p.sku = string_of(k, v)?,
            "ext_ref" => p.ext_ref = opt(k, v, string_of)?,
            "name" => p.name = string_of(k, v)?,
            "description" => p.description = opt(k, v, string_of)?.unwrap_or_default(),
            "status" => p.status = string_of(k, v)?,
            "price_net" => p.price_net = opt(k, v, f64_of)?,
            "price_gross" => p.price_gross = opt(k, v, f64_of)?,
            "weight" => p.weight = opt(k, v, f64_of)?,
            "stock" => p.stock = opt(k, v, i64_of)?,
            "tax_id" => p.tax_id = i64_of(k, v)?.max(0) as u64,
            "variants" => apply_variants(p, v, ignore, last_variant_id)?,
            k if PRODUCT_UNMODELLED.contains(&k) => {
                if keep_unmodelled {
                    p.extra.insert(k.to_owned(), v.clone());
                }
            }
            k => unknown_field(k, ignore)?,
        }
    }
    if p.kind == ProductType::MultiVariant {
        if let Some(k) = PARENT_FORBIDDEN_ON_MULTI
            .iter()
            .find(|k| body.get(**k).is_some_and(|v| !v.is_null()))
        {
            return Err(ShopError::validation(format!(
                "`{k}` cannot be set on a multi_variant product: stock, prices and weight live on its variants"
            )));
        }
        p.stock = None;
        p.price_net = None;
        p.price_gross = None;
        p.weight = None;
    }
    if p.sku.trim().is_empty() {
        return Err(ShopError::validation("`sku` is required"));
    }
    if p.name.trim().is_empty() {
        return Err(ShopError::validation("`name` is required"));
    }
    Ok(())
}

fn apply_variants(
    p: &mut Product,
    v: &Value,
    ignore: bool,
    last_variant_id: &mut u64,
) -> Result<(), ShopError> {
    let items = v
        .as_array()
        .ok_or_else(|| ShopError::validation("`variants` must be an array"))?;
    for item in items {
        let obj = item
            .as_object()
            .ok_or_else(|| ShopError::validation("each variant must be an object"))?;
        let by_id = obj.get("id").and_then(Value::as_u64);
        let by_sku = obj.get("sku").and_then(Value::as_str);
        let pos = p
            .variants
            .iter()
            .position(|x| by_id.is_some_and(|id| x.id == id) || by_sku.is_some_and(|s| x.sku == s));
        let idx = match pos {
            Some(i) => i,
            None => {
                *last_variant_id += 1;
                p.variants.push(Variant {
                    id: *last_variant_id,
                    ..Variant::default()
                });
                p.variants.len() - 1
            }
        };
        let var = &mut p.variants[idx];
        for (k, v) in obj {
            match k.as_str() {
                "id" => {}
                "sku" => var.sku = string_of(k, v)?,
                "ext_ref" => var.ext_ref = opt(k, v, string_of)?,
                "stock" => var.stock = i64_of(k, v)?,
                "price_gross" => var.price_gross = f64_of(k, v)?,
                "price_net" => var.price_net = f64_of(k, v)?,
                "variant_options" => {
                    var.variant_options = serde_json::from_value(v.clone()).map_err(|_| {
                        ShopError::validation("`variant_options` must be [{name, value}]")
                    })?
                }
                "inventory_enabled" => {}
                k => unknown_field(&format!("variants.{k}"), ignore)?,
            }
        }
        if var.sku.trim().is_empty() {
            return Err(ShopError::validation("each variant needs a `sku`"));
        }
    }
    Ok(())
}

impl ShopData {
    fn insert_product(&mut self, mut p: Product, now: DateTime<Utc>) -> Result<Product, ShopError> {
        // The id is handed out before the SKU check: a refused create still uses one up.
        let key = self.products.next_key();
        p.created_at = now;
        // Variants placed through the handle get ids as the API gives them.
        for v in p.variants.iter_mut().filter(|v| v.id == 0) {
            self.last_variant_id += 1;
            v.id = self.last_variant_id;
        }
        self.products
            .save(Some(key), &mut p, now)
            .map_err(sku_taken)?;
        Ok(p)
    }

    fn update_product(
        &mut self,
        key: u64,
        now: DateTime<Utc>,
        f: impl FnOnce(&mut Product, &mut u64) -> Result<(), ShopError>,
    ) -> Result<Product, ShopError> {
        let mut last_variant_id = self.last_variant_id;
        let mut p = self
            .products
            .get(key)
            .cloned()
            .ok_or_else(|| ShopError::not_found("product", &key.to_string()))?;
        f(&mut p, &mut last_variant_id)?;
        self.products
            .save(Some(key), &mut p, now)
            .map_err(sku_taken)?;
        self.last_variant_id = last_variant_id;
        Ok(p)
    }
}

fn sku_taken(sku: String) -> ShopError {
    ShopError::validation(format!("a product with SKU `{sku}` already exists"))
}

async fn create_product(
    State(state): State<Arc<ShopState>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ShopResult {
    let pairs = query_pairs(q.as_deref());
    let body = body_object(&body)?;
    let now = state.core.now();
    let mut data = state.data.lock().unwrap();
    let mut p = Product {
        status: "active".to_owned(),
        tax_id: 1,
        ..Product::default()
    };
    let mut last_variant_id = data.last_variant_id;
    let flags = (ignore_unknown(&pairs), state.keep_unmodelled);
    apply_product(&mut p, &body, flags, &mut last_variant_id)?;
    data.last_variant_id = last_variant_id;
    let p = data.insert_product(p, now)?;
    created(product_json(&p, true, None))
}

async fn patch_product(
    State(state): State<Arc<ShopState>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ShopResult {
    let pairs = query_pairs(q.as_deref());
    let key = parse_id(&id, "product")?;
    let body = body_object(&body)?;
    let ignore = ignore_unknown(&pairs);
    let now = state.core.now();
    let mut data = state.data.lock().unwrap();
    let flags = (ignore, state.keep_unmodelled);
    let p = data.update_product(key, now, |p, last| apply_product(p, &body, flags, last))?;
    ok(product_json(&p, true, None))
}

async fn delete_product(State(state): State<Arc<ShopState>>, Path(id): Path<String>) -> ShopResult {
    let key = parse_id(&id, "product")?;
    let mut data = state.data.lock().unwrap();
    data.products
        .remove(key)
        .ok_or_else(|| ShopError::not_found("product", &id))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------- orders

/// Fields of an order POST or PATCH.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderInput {
    number: Option<String>,
    channel_name: Option<String>,
    shipping_status: Option<String>,
    payment_status: Option<String>,
    payment_method_code: Option<String>,
    customer: Option<OrderCustomer>,
    billing_address: Option<Address>,
    shipping_address: Option<Address>,
    lines: Option<Vec<OrderLine>>,
    awb: Option<String>,
    invoice_number: Option<String>,
    invoice_url: Option<String>,
    // Read-only: accepted and ignored, so a client may send back what it read.
    #[serde(rename = "id")]
    _id: Option<Value>,
    #[serde(rename = "total_gross")]
    _total_gross: Option<Value>,
    #[serde(rename = "locked")]
    _locked: Option<Value>,
    #[serde(rename = "created_at")]
    _created_at: Option<Value>,
    #[serde(rename = "updated_at")]
    _updated_at: Option<Value>,
}

const ORDER_FIELDS: &[&str] = &[
    "id",
    "number",
    "channel_name",
    "shipping_status",
    "payment_status",
    "payment_method_code",
    "customer",
    "billing_address",
    "shipping_address",
    "lines",
    "total_gross",
    "awb",
    "invoice_number",
    "invoice_url",
    "locked",
    "created_at",
    "updated_at",
];

fn order_input(body: Map<String, Value>, ignore: bool) -> Result<OrderInput, ShopError> {
    parse_input(body, ignore, ORDER_FIELDS, "order")
}

/// What changed in an order that a webhook reports.
struct StatusChange {
    created: bool,
    changed: bool,
}

fn total(lines: &[OrderLine]) -> f64 {
    cents(
        lines
            .iter()
            .map(|l| l.quantity as f64 * l.unit_price_gross)
            .sum(),
    )
}

fn check_lines(lines: &[OrderLine]) -> Result<(), ShopError> {
    if lines.is_empty() {
        return Err(ShopError::validation("an order needs at least one line"));
    }
    if let Some(l) = lines.iter().find(|l| l.quantity <= 0 || l.sku.is_empty()) {
        return Err(ShopError::validation(format!(
            "line `{}` needs a SKU and a positive quantity",
            l.sku
        )));
    }
    Ok(())
}

/// Applies an API change to an order, enforcing the state machine and the lock. The lock
/// keeps the merchant from editing an exported order; the ERP, which owns it from then on,
/// writes through it with `override_lock`.
fn apply_order(o: &mut Order, input: OrderInput, override_lock: bool) -> Result<(), ShopError> {
    if o.locked && !override_lock {
        let blocked = [
            ("lines", input.lines.as_ref().is_some_and(|l| *l != o.lines)),
            (
                "customer",
                input.customer.as_ref().is_some_and(|c| *c != o.customer),
            ),
            (
                "billing_address",
                input
                    .billing_address
                    .as_ref()
                    .is_some_and(|a| *a != o.billing_address),
            ),
            (
                "shipping_address",
                input
                    .shipping_address
                    .as_ref()
                    .is_some_and(|a| *a != o.shipping_address),
            ),
        ];
        if let Some((field, _)) = blocked.iter().find(|(_, b)| *b) {
            return Err(ShopError::validation(format!(
                "order {} is locked: `{field}` cannot change",
                o.number
            )));
        }
    }
    if let Some(s) = input.shipping_status {
        if !SHIPPING_FLOW.contains(&s.as_str()) && !SHIPPING_OTHER.contains(&s.as_str()) {
            return Err(ShopError::validation(format!(
                "unknown shipping_status `{s}`"
            )));
        }
        if !shipping_transition_allowed(&o.shipping_status, &s) {
            return Err(ShopError::validation(format!(
                "shipping_status cannot go from `{}` to `{s}`",
                o.shipping_status
            )));
        }
        o.shipping_status = s;
    }
    if let Some(s) = input.payment_status {
        if !PAYMENT_STATUSES.contains(&s.as_str()) {
            return Err(ShopError::validation(format!(
                "unknown payment_status `{s}`"
            )));
        }
        o.payment_status = s;
    }
    if let Some(lines) = input.lines {
        check_lines(&lines)?;
        o.lines = lines;
        o.total_gross = total(&o.lines);
    }
    patch([
        (&mut o.number, input.number),
        (&mut o.channel_name, input.channel_name),
        (&mut o.payment_method_code, input.payment_method_code),
    ]);
    if let Some(v) = input.customer {
        o.customer = v;
    }
    patch([
        (&mut o.billing_address, input.billing_address),
        (&mut o.shipping_address, input.shipping_address),
    ]);
    o.set_documents(input.awb, input.invoice_number, input.invoice_url);
    Ok(())
}

impl Order {
    /// Sets the AWB and the invoice fields that are given; the others keep their value.
    fn set_documents(
        &mut self,
        awb: Option<String>,
        invoice_number: Option<String>,
        invoice_url: Option<String>,
    ) {
        patch([
            (&mut self.awb, awb.map(Some)),
            (&mut self.invoice_number, invoice_number.map(Some)),
            (&mut self.invoice_url, invoice_url.map(Some)),
        ]);
    }
}

impl ShopData {
    fn insert_order(&mut self, mut o: Order, now: DateTime<Utc>) -> Result<Order, ShopError> {
        check_lines(&o.lines)?;
        if o.customer.email.trim().is_empty() {
            return Err(ShopError::validation("`customer.email` is required"));
        }
        if o.number.is_empty() {
            while self
                .order_numbers
                .contains_key(&self.next_order_number.to_string())
            {
                self.next_order_number += 1;
            }
            o.number = self.next_order_number.to_string();
            self.next_order_number += 1;
        } else if self.order_numbers.contains_key(&o.number) {
            return Err(ShopError::validation(format!(
                "an order with number `{}` already exists",
                o.number
            )));
        }
        for (field, default) in [
            (&mut o.shipping_status, "awaiting"),
            (&mut o.payment_status, "awaiting"),
            (&mut o.channel_name, "web"),
        ] {
            if field.is_empty() {
                *field = default.to_owned();
            }
        }
        let key = self.orders.next_key();
        o.id = key.to_string();
        o.total_gross = total(&o.lines);
        o.created_at = now;
        o.updated_at = now;
        self.order_numbers.insert(o.number.clone(), key);
        self.orders.insert(key, o.clone());
        Ok(o)
    }
}

fn order_key(data: &ShopData, id: &str) -> Result<u64, ShopError> {
    id.parse::<u64>()
        .ok()
        .filter(|k| data.orders.get(*k).is_some())
        .ok_or_else(|| ShopError::not_found("order", id))
}

impl ShopState {
    fn notify(&self, o: &Order, change: StatusChange) {
        if !change.created && !change.changed {
            return;
        }
        let event = if change.created {
            "order.created"
        } else {
            "order.status_changed"
        };
        let payload = json!({
            "event": event,
            "id": o.id,
            "number": o.number,
            "shipping_status": o.shipping_status,
            "payment_status": o.payment_status,
            "occurred_at": self.core.clock.now().to_rfc3339_opts(SecondsFormat::Millis, true),
        });
        let duplicate = self.core.faults.get().duplicate_webhooks;
        self.webhooks.send(event, &payload, duplicate);
    }

    fn change_order(
        &self,
        key: u64,
        f: impl FnOnce(&mut Order) -> Result<(), ShopError>,
    ) -> Result<Order, ShopError> {
        let now = self.core.now();
        let (order, changed) = {
            let mut data = self.data.lock().unwrap();
            let before = data
                .orders
                .get(key)
                .cloned()
                .ok_or_else(|| ShopError::not_found("order", &key.to_string()))?;
            data.orders
                .try_update(key, now, f)
                .expect("the order exists")?;
            let after = data.orders.get(key).cloned().expect("the order exists");
            let changed = before.shipping_status != after.shipping_status
                || before.payment_status != after.payment_status;
            (after, changed)
        };
        self.notify(
            &order,
            StatusChange {
                created: false,
                changed,
            },
        );
        Ok(order)
    }

    fn add_order(&self, o: Order) -> Result<Order, ShopError> {
        let now = self.core.now();
        let order = self.data.lock().unwrap().insert_order(o, now)?;
        self.notify(
            &order,
            StatusChange {
                created: true,
                changed: false,
            },
        );
        Ok(order)
    }
}

async fn list_orders(State(state): State<Arc<ShopState>>, RawQuery(q): RawQuery) -> ShopResult {
    let list = list_query(&state, q.as_deref())?;
    let shipping = list.get("shipping_status");
    let payment = list.get("payment_status");
    let fields = list.get("fields");
    let mut data = state.data.lock().unwrap();
    let page = list.page(&data.orders, |o| {
        shipping.is_none_or(|s| s.split(',').any(|x| x == o.shipping_status))
            && payment.is_none_or(|s| s.split(',').any(|x| x == o.payment_status))
    });
    let (items, has_more, first) = finish_page(page, |o| {
        project(serde_json::to_value(o).expect("orders serialize"), fields)
    });
    state.core.drift(&mut data.orders, first);
    Ok(list_body(&state, "/api/v2/orders", &list, items, has_more))
}

async fn get_order(State(state): State<Arc<ShopState>>, Path(id): Path<String>) -> ShopResult {
    let data = state.data.lock().unwrap();
    let key = order_key(&data, &id)?;
    ok(data.orders.get(key))
}

async fn create_order(
    State(state): State<Arc<ShopState>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ShopResult {
    let pairs = query_pairs(q.as_deref());
    let input = order_input(body_object(&body)?, ignore_unknown(&pairs))?;
    let mut o = Order::default();
    if let Some(s) = &input.shipping_status
        && !SHIPPING_FLOW.contains(&s.as_str())
        && !SHIPPING_OTHER.contains(&s.as_str())
    {
        return Err(ShopError::validation(format!(
            "unknown shipping_status `{s}`"
        )));
    }
    // A new order may start in any status (it was born elsewhere), so no transition check.
    o.shipping_status = input.shipping_status.clone().unwrap_or_default();
    apply_order(
        &mut o,
        OrderInput {
            shipping_status: None,
            ..input
        },
        false,
    )?;
    let o = state.add_order(o)?;
    created(o)
}

async fn patch_order(
    State(state): State<Arc<ShopState>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ShopResult {
    let pairs = query_pairs(q.as_deref());
    let input = order_input(body_object(&body)?, ignore_unknown(&pairs))?;
    let key = order_key(&state.data.lock().unwrap(), &id)?;
    let override_lock = query_get(&pairs, "override_lock").is_some_and(|v| v == "1");
    let o = state.change_order(key, |o| apply_order(o, input, override_lock))?;
    ok(o)
}

async fn lock_order(State(state): State<Arc<ShopState>>, Path(id): Path<String>) -> ShopResult {
    let key = order_key(&state.data.lock().unwrap(), &id)?;
    let o = state.change_order(key, |o| {
        o.locked = true;
        Ok(())
    })?;
    ok(o)
}

// ---------------------------------------------------------------- customers

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerInput {
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    phone: Option<String>,
    #[serde(rename = "id")]
    _id: Option<Value>,
    #[serde(rename = "updated_at")]
    _updated_at: Option<Value>,
}

impl Resource for Customer {
    const NAME: &'static str = "customer";
    const PATH: &'static str = "/api/v2/customers";
    const FIELDS: &'static [&'static str] = &[
        "id",
        "email",
        "first_name",
        "last_name",
        "phone",
        "updated_at",
    ];
    const FILTER: &'static str = "email";
    type Input = CustomerInput;

    fn lookup_form(value: &str) -> String {
        value.to_lowercase()
    }

    fn table(data: &mut ShopData) -> &mut Table<Self> {
        &mut data.customers
    }

    fn save(
        data: &mut ShopData,
        key: Option<u64>,
        input: CustomerInput,
        now: DateTime<Utc>,
    ) -> Result<Customer, ShopError> {
        let mut c = data
            .customers
            .draft(key, Customer::default)
            .map_err(|k| ShopError::not_found("customer", &k.to_string()))?;
        patch([
            (&mut c.email, input.email.map(|v| v.trim().to_owned())),
            (&mut c.first_name, input.first_name),
            (&mut c.last_name, input.last_name),
            (&mut c.phone, input.phone),
        ]);
        if c.email.is_empty() {
            return Err(ShopError::validation("`email` is required"));
        }
        data.customers.save(key, &mut c, now).map_err(|_| {
            ShopError::validation(format!(
                "a customer with email `{}` already exists",
                c.email
            ))
        })?;
        Ok(c)
    }
}

// ---------------------------------------------------------------- control API

/// A merchant's change to an order through the control API: any status (no state machine, no
/// lock), AWB and invoice fields.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrderEdit {
    pub shipping_status: Option<String>,
    pub payment_status: Option<String>,
    pub awb: Option<String>,
    pub invoice_number: Option<String>,
    pub invoice_url: Option<String>,
}

/// A merchant's change to a product through the control API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProductEdit {
    pub stock: Option<i64>,
    pub price_gross: Option<f64>,
    pub name: Option<String>,
    pub status: Option<String>,
}

fn shop_control_routes(state: Arc<ShopState>) -> Router {
    Router::new()
        .route(
            "/__sim/orders/{id}",
            post(
                |State(state): State<Arc<ShopState>>,
                 Path(id): Path<String>,
                 Json(edit): Json<OrderEdit>| async move {
                    let key = order_key(&state.data.lock().unwrap(), &id)?;
                    let o = state.change_order(key, |o| {
                        edit_order(o, edit);
                        Ok(())
                    })?;
                    ok(o)
                },
            ),
        )
        .route(
            "/__sim/products/{id}",
            post(
                |State(state): State<Arc<ShopState>>,
                 Path(id): Path<String>,
                 Json(edit): Json<ProductEdit>| async move {
                    let key = parse_id(&id, "product")?;
                    let now = state.core.now();
                    let p = state
                        .data
                        .lock()
                        .unwrap()
                        .update_product(key, now, |p, _| {
                            edit_product(p, edit);
                            Ok(())
                        })?;
                    ok(p)
                },
            ),
        )
        .with_state(state)
}

fn edit_order(o: &mut Order, edit: OrderEdit) {
    patch([
        (&mut o.shipping_status, edit.shipping_status),
        (&mut o.payment_status, edit.payment_status),
    ]);
    o.set_documents(edit.awb, edit.invoice_number, edit.invoice_url);
}

fn edit_product(p: &mut Product, edit: ProductEdit) {
    if let Some(v) = edit.stock {
        p.stock = Some(v);
    }
    if let Some(v) = edit.price_gross {
        p.price_gross = Some(v);
        p.price_net = Some(cents(v / 1.19));
    }
    patch([(&mut p.name, edit.name), (&mut p.status, edit.status)]);
}

// ---------------------------------------------------------------- handle

/// A running shop simulator; what it shares with the ERP's handle (address, counters, faults,
/// clock, credentials) is on the [`SimHandle`] it dereferences to. Dropping it stops the
/// server.
#[derive(Debug)]
pub struct ShopHandle {
    sim: SimHandle,
    state: Arc<ShopState>,
}

impl Deref for ShopHandle {
    type Target = SimHandle;

    fn deref(&self) -> &SimHandle {
        &self.sim
    }
}

impl ShopHandle {
    /// Changes (or with `None` removes) the rate limit; the bucket starts full.
    pub fn set_rate_limit(&self, bucket: Option<TokenBucket>) {
        let now = self.state.core.clock.now();
        *self.state.limiter.lock().unwrap() = bucket.map(|config| Limiter::new(config, now));
    }

    pub fn set_webhook(&self, webhook: Option<WebhookConfig>) {
        self.state.webhooks.set_config(webhook);
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

    pub fn product(&self, id: u64) -> Option<Product> {
        self.state.data.lock().unwrap().products.get(id).cloned()
    }

    /// The product with this SKU, or the parent of the variant with it.
    pub fn product_by_sku(&self, sku: &str) -> Option<Product> {
        self.state.data.lock().unwrap().products.find(sku).cloned()
    }

    /// Every product in id order.
    pub fn products(&self) -> Vec<Product> {
        self.state.data.lock().unwrap().products.all()
    }

    pub fn product_count(&self) -> usize {
        self.state.data.lock().unwrap().products.len()
    }

    /// Adds a product (id and stamps are assigned); fails on a SKU already in use.
    pub fn create_product(&self, p: Product) -> anyhow::Result<Product> {
        let now = self.state.core.now();
        let mut data = self.state.data.lock().unwrap();
        Ok(data.insert_product(p, now)?)
    }

    /// Changes a product as a merchant would in the admin, bumping `updated_at`.
    pub fn update_product(&self, id: u64, f: impl FnOnce(&mut Product)) -> Option<Product> {
        let now = self.state.core.now();
        let mut data = self.state.data.lock().unwrap();
        data.update_product(id, now, |p, _| {
            f(p);
            Ok(())
        })
        .ok()
    }

    pub fn delete_product(&self, id: u64) -> Option<Product> {
        self.state.data.lock().unwrap().products.remove(id)
    }

    // ---- orders

    pub fn order(&self, id: &str) -> Option<Order> {
        let key = id.parse().ok()?;
        self.state.data.lock().unwrap().orders.get(key).cloned()
    }

    pub fn order_by_number(&self, number: &str) -> Option<Order> {
        let data = self.state.data.lock().unwrap();
        let key = data.order_numbers.get(number)?;
        data.orders.get(*key).cloned()
    }

    /// Every order in id order.
    pub fn orders(&self) -> Vec<Order> {
        self.state.data.lock().unwrap().orders.all()
    }

    /// Places an order as a customer would (id, number, total and stamps are assigned);
    /// sends the `order.created` webhook.
    pub fn create_order(&self, o: Order) -> anyhow::Result<Order> {
        Ok(self.state.add_order(o)?)
    }

    /// Changes an order as a merchant would (no state machine, no lock), bumping `updated_at`
    /// and sending `order.status_changed` when a status changed.
    pub fn update_order(&self, id: &str, f: impl FnOnce(&mut Order)) -> Option<Order> {
        let key = id.parse().ok()?;
        self.state
            .change_order(key, |o| {
                f(o);
                Ok(())
            })
            .ok()
    }

    /// Sets the shipping status as a merchant would.
    pub fn set_shipping_status(&self, id: &str, status: &str) -> Option<Order> {
        self.update_order(id, |o| o.shipping_status = status.to_owned())
    }

    // ---- customers

    pub fn customers(&self) -> Vec<Customer> {
        self.state.data.lock().unwrap().customers.all()
    }

    pub fn customer_by_email(&self, email: &str) -> Option<Customer> {
        let data = self.state.data.lock().unwrap();
        data.customers.find(&email.to_lowercase()).cloned()
    }

    pub fn create_customer(
        &self,
        email: &str,
        first_name: &str,
        last_name: &str,
        phone: &str,
    ) -> anyhow::Result<Customer> {
        let input = CustomerInput {
            email: Some(email.to_owned()),
            first_name: Some(first_name.to_owned()),
            last_name: Some(last_name.to_owned()),
            phone: Some(phone.to_owned()),
            ..CustomerInput::default()
        };
        Ok(self.state.save::<Customer>(None, input)?)
    }

    // ---- seeding

    /// Adds one `basic` product per catalogue item (SKUs already present are skipped).
    pub fn seed_catalogue(&self, items: &[CatalogueItem]) {
        let now = self.state.core.now();
        let mut data = self.state.data.lock().unwrap();
        for item in items {
            let mut p = Product {
                id: 0,
                kind: ProductType::Basic,
                sku: item.sku.clone(),
                ext_ref: None,
                name: item.name.clone(),
                description: String::new(),
                status: "active".to_owned(),
                price_net: Some(item.price_net()),
                price_gross: Some(item.price_gross),
                tax_id: 1,
                stock: Some(item.stock),
                weight: Some(item.weight),
                variants: Vec::new(),
                created_at: now,
                updated_at: now,
                extra: Map::new(),
            };
            // A SKU already present keeps its product.
            let _ = data.products.save(None, &mut p, now);
        }
    }

    /// Adds `n` generated products (`SKU-000001`…).
    pub fn seed_products(&self, n: usize, seed: u64) -> Vec<CatalogueItem> {
        let items = seed::catalogue(n, seed);
        self.seed_catalogue(&items);
        items
    }

    /// Adds `n` generated customers.
    pub fn seed_customers(&self, n: usize, seed: u64) {
        let now = self.state.core.now();
        let mut data = self.state.data.lock().unwrap();
        for p in seed::people(n, seed) {
            let input = CustomerInput {
                email: Some(p.email),
                first_name: Some(p.first_name),
                last_name: Some(p.last_name),
                phone: Some(p.phone),
                ..CustomerInput::default()
            };
            let _ = Customer::save(&mut data, None, input, now);
        }
    }

    /// Adds `n` generated orders over the products present (seeding a small catalogue first
    /// when there is none), mostly awaiting; no webhooks are sent.
    pub fn seed_orders(&self, n: usize, seed: u64) -> Vec<Order> {
        if self.product_count() == 0 {
            self.seed_products(20, seed);
        }
        let now = self.state.core.now();
        let mut rng = StdRng::seed_from_u64(seed ^ 0x0_4de4);
        let people = seed::people(n.clamp(1, 50), seed);
        let mut data = self.state.data.lock().unwrap();
        let products: Vec<(String, String, f64)> = data
            .products
            .iter()
            .filter(|(_, p)| p.kind == ProductType::Basic)
            .take(1000)
            .map(|(_, p)| (p.sku.clone(), p.name.clone(), p.price_gross.unwrap_or(1.0)))
            .collect();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            if products.is_empty() {
                break;
            }
            let person = &people[i % people.len()];
            let lines = seed::order_lines(&mut rng, products.len())
                .into_iter()
                .map(|(j, quantity)| OrderLine {
                    sku: products[j].0.clone(),
                    name: products[j].1.clone(),
                    quantity,
                    unit_price_gross: products[j].2,
                })
                .collect();
            let shipping = match rng.random_range(0..10) {
                0..=5 => "awaiting",
                6 | 7 => "confirmed",
                8 => "in_process",
                _ => "shipped",
            };
            let address = Address {
                first_name: person.first_name.clone(),
                last_name: person.last_name.clone(),
                address: format!("Str. Exemplu nr. {}", rng.random_range(1..200)),
                city: "Bucuresti".to_owned(),
                county: "Bucuresti".to_owned(),
                country: "RO".to_owned(),
                zip: "010101".to_owned(),
                phone: person.phone.clone(),
                company: String::new(),
            };
            let o = Order {
                channel_name: "web".to_owned(),
                shipping_status: shipping.to_owned(),
                payment_status: if rng.random_bool(0.5) {
                    "paid"
                } else {
                    "awaiting"
                }
                .to_owned(),
                payment_method_code: "cash_delivery".to_owned(),
                customer: OrderCustomer {
                    email: person.email.clone(),
                    first_name: person.first_name.clone(),
                    last_name: person.last_name.clone(),
                    phone: person.phone.clone(),
                },
                billing_address: address.clone(),
                shipping_address: address,
                lines,
                ..Order::default()
            };
            if let Ok(o) = data.insert_order(o, now) {
                out.push(o);
            }
        }
        out
    }

    /// Stops the server and waits for it to end.
    pub async fn shutdown(self) {
        self.sim.shutdown().await
    }

    /// Serves until the server task ends (for the command-line runner).
    pub async fn wait(self) {
        self.sim.wait().await
    }
}
