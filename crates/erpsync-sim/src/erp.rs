//! The ERP simulator, SmartBill/Oblio-style: client-credentials tokens that expire, the
//! `status`/`statusMessage`/`data` envelope with business errors answered as HTTP 200 and an
//! `errorText`, offset paging without totals, per-warehouse stock with its own stamps, sales
//! orders numbered per series with optional idempotency keys, suppliers keyed by fiscal code
//! and the goods received from them, and a burst limit that locks the client out.
//!
//! Lists are ordered by modification time, oldest first; `updatedAfter` is exclusive,
//! `changedSince` inclusive.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::faults::Faults;
use super::handle::SimHandle;
use super::seed::{self, CatalogueItem};
use super::server::{
    Core, Flavor, ListQuery, cents, error_response, query_get, query_pairs, serve,
};
use super::table::{Since, Table, parse_time, record, rfc3339};
use erpsync_clock::{SharedClock, SystemClock};

mod purchases;
mod suppliers;
pub use purchases::{Purchase, PurchaseInput, PurchaseLine, PurchaseSupplier, RECEPTION_SERIES};
pub use suppliers::{Supplier, SupplierInput};

/// Route of the token endpoint (not behind the bearer check, not a write in the counters).
pub(crate) const TOKEN_ROUTE: &str = "/api/authorize/token";
const DEFAULT_LIMIT: usize = 100;
/// Largest `limitPerPage` accepted.
pub(crate) const MAX_LIMIT: usize = 250;
/// Largest batch accepted by `POST /api/products/batch`.
pub(crate) const MAX_BATCH: usize = 100;

/// A product of the ERP; `code` is the SKU. Stock lives in [`StockLevel`]s.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErpProduct {
    pub code: String,
    pub name: String,
    /// Price with VAT.
    pub price: f64,
    pub vat_percentage: f64,
    pub currency: String,
    pub measuring_unit: String,
    pub active: bool,
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
    /// Further fields served as they are (descriptions, SEO texts, costs…), set through the
    /// handle: empty unless a test or bench wants a wider product.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl ErpProduct {
    /// An active product priced in RON with 19 % VAT, sold by the piece.
    pub fn new(code: &str, name: &str, price: f64) -> Self {
        ErpProduct {
            code: code.to_owned(),
            name: name.to_owned(),
            price,
            vat_percentage: 19.0,
            currency: "RON".to_owned(),
            measuring_unit: "buc".to_owned(),
            active: true,
            updated_at: DateTime::default(),
            extra: serde_json::Map::new(),
        }
    }
}

/// Stock of one product in one warehouse; its stamp moves only when the quantity does.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StockLevel {
    pub code: String,
    pub warehouse: String,
    pub quantity: i64,
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Client {
    pub id: u64,
    pub name: String,
    pub email: String,
    pub phone: String,
    pub vat_code: String,
    pub address: String,
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

/// The client as carried on a sales order.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct OrderClient {
    pub id: u64,
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SalesLine {
    pub code: String,
    #[serde(default)]
    pub name: String,
    pub quantity: i64,
    /// Unit price with VAT.
    #[serde(default)]
    pub price: f64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Invoice {
    pub series: String,
    pub number: u64,
    pub url: String,
}

/// A sales order (the document a shop order becomes, or one taken by phone).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SalesOrder {
    pub id: u64,
    pub series_name: String,
    pub number: u64,
    /// The shop's order number; `None` for orders born in the ERP.
    pub reference: Option<String>,
    pub channel: String,
    /// `new`, `confirmed`, `invoiced`, `shipped`, `delivered` or `cancelled`.
    pub status: String,
    pub client: OrderClient,
    pub lines: Vec<SalesLine>,
    pub total: f64,
    pub currency: String,
    pub shipping: Value,
    pub awb: Option<String>,
    pub invoice: Option<Invoice>,
    pub idempotency_key: Option<String>,
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

record!(ErpProduct {
    fn unique(&self) -> Vec<String> {
        vec![self.code.clone()]
    }
});
record!(StockLevel);
record!(Client, id {
    /// Its e-mail, when it has one: clients without one are many.
    fn unique(&self) -> Vec<String> {
        if self.email.is_empty() {
            Vec::new()
        } else {
            vec![self.email.to_lowercase()]
        }
    }
});
record!(SalesOrder);

/// "More than `max_calls` in `window`, then locked out for `lockout`" (SmartBill: 30 calls per
/// 10 s, then 10 minutes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurstLimit {
    pub max_calls: u32,
    pub window: Duration,
    pub lockout: Duration,
    /// Status answered while locked out (429, or 403 as some ERPs do).
    pub status: u16,
}

impl Default for BurstLimit {
    fn default() -> Self {
        BurstLimit {
            max_calls: 30,
            window: Duration::from_secs(10),
            lockout: Duration::from_secs(600),
            status: 429,
        }
    }
}

/// How to start an ERP simulator.
#[derive(Debug, Clone)]
pub struct ErpOptions {
    pub bind: SocketAddr,
    pub client_id: String,
    pub client_secret: String,
    /// Lifetime of an access token.
    pub token_ttl: Duration,
    /// `None` turns the burst limit off.
    pub burst_limit: Option<BurstLimit>,
    /// Sales-order series; the first is used when a request names none.
    pub series: Vec<String>,
    pub invoice_series: String,
    pub warehouses: Vec<String>,
    pub faults: Faults,
    /// Seed of the fault generator and of tokens.
    pub seed: u64,
    pub clock: SharedClock,
    /// Whether an order sent again with the idempotency key of one placed earlier returns
    /// that order (true) or is placed once more (false: an ERP that de-duplicates nothing).
    pub idempotency: bool,
}

impl Default for ErpOptions {
    fn default() -> Self {
        ErpOptions {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            client_id: "demo@erp.example".to_owned(),
            client_secret: "demo-erp-secret".to_owned(),
            token_ttl: Duration::from_secs(3600),
            burst_limit: Some(BurstLimit::default()),
            series: vec!["CMD".to_owned()],
            invoice_series: "FCT".to_owned(),
            warehouses: vec!["Depozit central".to_owned(), "Magazin".to_owned()],
            faults: Faults::default(),
            seed: 0,
            clock: Arc::new(SystemClock),
            idempotency: true,
        }
    }
}

impl ErpOptions {
    /// Defaults without the burst limit: what most engine tests want.
    pub fn unlimited() -> Self {
        ErpOptions {
            burst_limit: None,
            ..ErpOptions::default()
        }
    }

    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }
}

#[derive(Debug)]
struct ErpData {
    products: Table<ErpProduct>,
    stock: Table<StockLevel>,
    stock_keys: HashMap<(String, String), u64>,
    clients: Table<Client>,
    suppliers: Table<Supplier>,
    purchases: Table<Purchase>,
    orders: Table<SalesOrder>,
    idempotency: HashMap<String, u64>,
    series_next: HashMap<String, u64>,
    invoice_next: u64,
    tokens: HashMap<String, DateTime<Utc>>,
    rng: StdRng,
}

#[derive(Debug)]
struct Burst {
    config: BurstLimit,
    calls: VecDeque<DateTime<Utc>>,
    locked_until: Option<DateTime<Utc>>,
}

#[derive(Debug)]
struct ErpState {
    core: Arc<Core>,
    client_id: String,
    client_secret: String,
    token_ttl: Duration,
    series: Vec<String>,
    invoice_series: String,
    warehouses: Vec<String>,
    burst: Mutex<Option<Burst>>,
    data: Mutex<ErpData>,
    idempotency: bool,
}

/// A failed request.
#[derive(Debug, thiserror::Error)]
enum ErpError {
    /// Non-2xx with `{"status","statusMessage"}`.
    #[error("{1}")]
    Http(u16, String),
    /// HTTP 200 with a non-empty `errorText` and no data: only the body tells.
    #[error("{0}")]
    Business(String),
}

fn bad(message: impl Into<String>) -> ErpError {
    ErpError::Http(400, message.into())
}

fn business(message: impl Into<String>) -> ErpError {
    ErpError::Business(message.into())
}

impl IntoResponse for ErpError {
    fn into_response(self) -> Response {
        match self {
            ErpError::Http(status, message) => {
                error_response(Flavor::Erp, status, "", &message, None)
            }
            ErpError::Business(text) => Json(json!({
                "status": 200,
                "statusMessage": "Success",
                "errorText": text,
                "data": null,
            }))
            .into_response(),
        }
    }
}

type ErpResult = Result<Response, ErpError>;

fn ok(data: impl Serialize) -> ErpResult {
    Ok(Json(json!({"status": 200, "statusMessage": "Success", "data": data})).into_response())
}

/// Starts ERP simulators.
#[derive(Debug)]
pub struct ErpSim;

impl ErpSim {
    /// Binds, starts serving in the background and returns the handle.
    pub async fn start(opts: ErpOptions) -> anyhow::Result<ErpHandle> {
        anyhow::ensure!(!opts.series.is_empty(), "the ERP needs at least one series");
        anyhow::ensure!(
            !opts.warehouses.is_empty(),
            "the ERP needs at least one warehouse"
        );
        let listener = tokio::net::TcpListener::bind(opts.bind).await?;
        let core = Core::new(
            Flavor::Erp,
            listener.local_addr()?,
            opts.faults,
            opts.seed,
            opts.clock,
        );
        let credentials = (opts.client_id.clone(), opts.client_secret.clone());
        let state = Arc::new(ErpState {
            core: core.clone(),
            client_id: opts.client_id,
            client_secret: opts.client_secret,
            token_ttl: opts.token_ttl,
            series: opts.series,
            invoice_series: opts.invoice_series,
            warehouses: opts.warehouses,
            idempotency: opts.idempotency,
            burst: Mutex::new(opts.burst_limit.map(|config| Burst {
                config,
                calls: VecDeque::new(),
                locked_until: None,
            })),
            data: Mutex::new(ErpData {
                products: Table::new(),
                stock: Table::new(),
                stock_keys: HashMap::new(),
                clients: Table::new(),
                suppliers: Table::new(),
                purchases: Table::new(),
                orders: Table::new(),
                idempotency: HashMap::new(),
                series_next: HashMap::new(),
                invoice_next: 1,
                tokens: HashMap::new(),
                rng: StdRng::seed_from_u64(opts.seed ^ 0x70_6b65),
            }),
        });
        let api = Router::new()
            .route(TOKEN_ROUTE, post(token))
            .route("/api/products", get(list_products).post(create_product))
            .route("/api/products/batch", post(batch_products))
            .route("/api/products/{code}", put(put_product).get(get_product))
            .route("/api/stock", get(list_stock))
            .route("/api/stock/{code}", put(put_stock))
            .route("/api/clients", get(list_clients).post(create_client))
            .route(
                "/api/suppliers",
                get(suppliers::list_suppliers).post(suppliers::create_supplier),
            )
            .route(
                "/api/suppliers/{id}",
                get(suppliers::get_supplier).put(suppliers::put_supplier),
            )
            .route(
                "/api/purchases",
                get(purchases::list_purchases).post(purchases::create_purchase),
            )
            .route("/api/purchases/{id}", get(purchases::get_purchase))
            .route("/api/orders", get(list_orders).post(create_order))
            .route("/api/orders/{id}", get(get_order))
            .route_layer(middleware::from_fn_with_state(state.clone(), erp_layer))
            .with_state(state.clone());
        let server = serve(
            listener,
            core.clone(),
            api,
            erp_control_routes(state.clone()),
        )?;
        Ok(ErpHandle {
            sim: SimHandle::new(core, server, "/api", credentials),
            state,
        })
    }
}

fn ceil_secs(d: chrono::Duration) -> u64 {
    let ms = d.num_milliseconds().max(0) as u64;
    ms.div_ceil(1000).max(1)
}

/// Burst limit with lock-out, then the bearer token (except on the token endpoint).
async fn erp_layer(State(state): State<Arc<ErpState>>, req: Request, next: Next) -> Response {
    let t = state.core.clock.now();
    if let Some(burst) = state.burst.lock().unwrap().as_mut() {
        if let Some(until) = burst.locked_until {
            if t < until {
                return locked_out(burst.config.status, until - t);
            }
            burst.locked_until = None;
            burst.calls.clear();
        }
        let window = chrono::Duration::from_std(burst.config.window).unwrap_or_default();
        while burst.calls.front().is_some_and(|c| *c <= t - window) {
            burst.calls.pop_front();
        }
        burst.calls.push_back(t);
        if burst.calls.len() > burst.config.max_calls as usize {
            let lockout = chrono::Duration::from_std(burst.config.lockout).unwrap_or_default();
            burst.locked_until = Some(t + lockout);
            return locked_out(burst.config.status, lockout);
        }
    }
    let is_token_route = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|m| m.as_str() == TOKEN_ROUTE);
    if !is_token_route {
        let token = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let expiry = token.and_then(|tok| state.data.lock().unwrap().tokens.get(tok).copied());
        match expiry {
            None => {
                return ErpError::Http(401, "Token invalid sau lipsa".into()).into_response();
            }
            Some(expires) if t >= expires => {
                return ErpError::Http(401, "Token expirat".into()).into_response();
            }
            Some(_) => {}
        }
    }
    next.run(req).await
}

fn locked_out(status: u16, remaining: chrono::Duration) -> Response {
    error_response(
        Flavor::Erp,
        status,
        "",
        "Prea multe cereri: acces blocat temporar",
        Some(ceil_secs(remaining)),
    )
}

fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ErpError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("Cerere invalida: {e}")))
}

#[derive(Debug, Deserialize)]
struct TokenRequest {
    client_id: String,
    client_secret: String,
    grant_type: String,
}

async fn token(State(state): State<Arc<ErpState>>, body: Bytes) -> ErpResult {
    let req: TokenRequest = json_body(&body)?;
    if req.grant_type != "client_credentials" {
        return Err(bad("grant_type must be client_credentials"));
    }
    if req.client_id != state.client_id || req.client_secret != state.client_secret {
        return Err(ErpError::Http(401, "Invalid client credentials".into()));
    }
    let t = state.core.clock.now();
    let mut data = state.data.lock().unwrap();
    let access_token = format!("{:032x}", data.rng.random::<u128>());
    let ttl = chrono::Duration::from_std(state.token_ttl).unwrap_or_default();
    data.tokens.insert(access_token.clone(), t + ttl);
    // Oblio answers the token request without the status envelope.
    Ok(Json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": state.token_ttl.as_secs(),
        "request_time": t.timestamp(),
    }))
    .into_response())
}

// ---------------------------------------------------------------- paging

/// Reads a list request: `limitPerPage`, `offset`, `updatedAfter` and `changedSince`.
fn list_query(query: Option<&str>) -> Result<ListQuery, ErpError> {
    let pairs = query_pairs(query);
    let number = |key: &str, default: usize| -> Result<usize, ErpError> {
        match query_get(&pairs, key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| bad(format!("`{key}` trebuie sa fie un numar"))),
        }
    };
    let limit = number("limitPerPage", DEFAULT_LIMIT)?;
    if limit == 0 || limit > MAX_LIMIT {
        return Err(bad(format!(
            "`limitPerPage` trebuie sa fie intre 1 si {MAX_LIMIT}"
        )));
    }
    let offset = number("offset", 0)?;
    let time = |key: &str| -> Result<Option<DateTime<Utc>>, ErpError> {
        query_get(&pairs, key)
            .map(|v| parse_time(v).ok_or_else(|| bad(format!("`{key}` nu este o data RFC 3339"))))
            .transpose()
    };
    let since = match (time("updatedAfter")?, time("changedSince")?) {
        (Some(t), _) => Since::After(t),
        (None, Some(t)) => Since::AtOrAfter(t),
        (None, None) => Since::All,
    };
    Ok(ListQuery {
        pairs,
        offset,
        limit,
        since,
    })
}

// ---------------------------------------------------------------- products

impl ErpData {
    /// The stock row of a product in a warehouse.
    fn stock_level(&self, code: &str, warehouse: &str) -> Option<&StockLevel> {
        let key = self
            .stock_keys
            .get(&(code.to_owned(), warehouse.to_owned()))?;
        self.stock.get(*key)
    }

    fn product_json(&self, p: &ErpProduct, warehouses: &[String]) -> Value {
        let mut v = serde_json::to_value(p).expect("products serialize");
        let stock: Vec<Value> = warehouses
            .iter()
            .map(|w| {
                let quantity = self.stock_level(&p.code, w).map_or(0, |s| s.quantity);
                json!({"warehouse": w, "quantity": quantity})
            })
            .collect();
        v["stock"] = Value::Array(stock);
        v
    }

    fn set_stock(
        &mut self,
        code: &str,
        warehouse: &str,
        quantity: i64,
        now: DateTime<Utc>,
    ) -> StockLevel {
        let id = (code.to_owned(), warehouse.to_owned());
        match self.stock_keys.get(&id).copied() {
            Some(key) => {
                let unchanged = self.stock.get(key).is_some_and(|s| s.quantity == quantity);
                if !unchanged {
                    self.stock
                        .try_update(key, now, |s| {
                            s.quantity = quantity;
                            Ok::<_, ()>(())
                        })
                        .expect("the stock row exists")
                        .expect("infallible");
                }
                self.stock.get(key).cloned().expect("the stock row exists")
            }
            None => {
                let key = self.stock.next_key();
                let row = StockLevel {
                    code: id.0.clone(),
                    warehouse: id.1.clone(),
                    quantity,
                    updated_at: now,
                };
                self.stock_keys.insert(id, key);
                self.stock.insert(key, row.clone());
                row
            }
        }
    }

    fn insert_product(
        &mut self,
        mut p: ErpProduct,
        warehouses: &[String],
        now: DateTime<Utc>,
    ) -> Result<ErpProduct, ErpError> {
        self.products
            .save(None, &mut p, now)
            .map_err(|code| business(format!("Produsul cu codul {code} exista deja")))?;
        for w in warehouses {
            self.set_stock(&p.code, w, 0, now);
        }
        Ok(p)
    }
}

/// Product fields of a POST, PUT or batch item.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProductInput {
    code: Option<String>,
    name: Option<String>,
    price: Option<f64>,
    vat_percentage: Option<f64>,
    currency: Option<String>,
    measuring_unit: Option<String>,
    active: Option<bool>,
    stock: Option<Vec<StockInput>>,
}

#[derive(Debug, Deserialize)]
struct StockInput {
    warehouse: String,
    quantity: i64,
}

fn apply_product_input(p: &mut ErpProduct, input: &ProductInput) -> Result<(), ErpError> {
    if let Some(v) = &input.name {
        p.name = v.clone();
    }
    if let Some(v) = input.price {
        if v < 0.0 {
            return Err(business(format!(
                "Pretul produsului {} este invalid",
                p.code
            )));
        }
        p.price = v;
    }
    if let Some(v) = input.vat_percentage {
        p.vat_percentage = v;
    }
    if let Some(v) = &input.currency {
        p.currency = v.clone();
    }
    if let Some(v) = &input.measuring_unit {
        p.measuring_unit = v.clone();
    }
    if let Some(v) = input.active {
        p.active = v;
    }
    if p.name.trim().is_empty() {
        return Err(business(format!("Produsul {} nu are denumire", p.code)));
    }
    Ok(())
}

impl ErpState {
    fn check_warehouses(&self, stock: Option<&Vec<StockInput>>) -> Result<(), ErpError> {
        if let Some(s) = stock
            .into_iter()
            .flatten()
            .find(|s| !self.warehouses.contains(&s.warehouse))
        {
            return Err(business(format!("Gestiunea {} nu exista", s.warehouse)));
        }
        Ok(())
    }

    /// Creates or (when `existing`) updates a product from `input`.
    fn save_product(
        &self,
        data: &mut ErpData,
        input: &ProductInput,
        create: bool,
        code: &str,
    ) -> Result<Value, ErpError> {
        let now = self.core.now();
        self.check_warehouses(input.stock.as_ref())?;
        match (data.products.key_of(code), create) {
            (None, true) => {
                let mut p = ErpProduct::new(code, "", 0.0);
                apply_product_input(&mut p, input)?;
                data.insert_product(p, &self.warehouses, now)?;
            }
            (Some(_), true) => {
                return Err(business(format!("Produsul cu codul {code} exista deja")));
            }
            (None, false) => {
                return Err(business(format!("Produsul cu codul {code} nu exista")));
            }
            (Some(key), false) => {
                data.products
                    .try_update(key, now, |p| apply_product_input(p, input))
                    .expect("the product exists")?;
            }
        }
        for s in input.stock.iter().flatten() {
            data.set_stock(code, &s.warehouse, s.quantity, now);
        }
        let p = data.products.find(code).expect("just saved");
        Ok(data.product_json(p, &self.warehouses))
    }
}

async fn list_products(State(state): State<Arc<ErpState>>, RawQuery(q): RawQuery) -> ErpResult {
    let list = list_query(q.as_deref())?;
    let mut data = state.data.lock().unwrap();
    if let Some(code) = list.get("code") {
        let items: Vec<Value> = data
            .products
            .find(code)
            .filter(|_| list.offset == 0)
            .map(|p| data.product_json(p, &state.warehouses))
            .into_iter()
            .collect();
        return ok(items);
    }
    let page = list.page(&data.products, |_| true);
    let first = page.drift_key();
    let items: Vec<Value> = page
        .rows
        .iter()
        .map(|(_, p)| data.product_json(p, &state.warehouses))
        .collect();
    state.core.drift(&mut data.products, first);
    ok(items)
}

async fn get_product(State(state): State<Arc<ErpState>>, Path(code): Path<String>) -> ErpResult {
    let data = state.data.lock().unwrap();
    let p = data
        .products
        .find(&code)
        .ok_or_else(|| business(format!("Produsul cu codul {code} nu exista")))?;
    ok(data.product_json(p, &state.warehouses))
}

async fn create_product(State(state): State<Arc<ErpState>>, body: Bytes) -> ErpResult {
    let input: ProductInput = json_body(&body)?;
    let code = input
        .code
        .clone()
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| bad("Codul produsului lipseste"))?;
    let mut data = state.data.lock().unwrap();
    ok(state.save_product(&mut data, &input, true, &code)?)
}

async fn put_product(
    State(state): State<Arc<ErpState>>,
    Path(code): Path<String>,
    body: Bytes,
) -> ErpResult {
    let input: ProductInput = json_body(&body)?;
    if input.code.as_ref().is_some_and(|c| *c != code) {
        return Err(bad("Codul din cerere difera de cel din adresa"));
    }
    let mut data = state.data.lock().unwrap();
    ok(state.save_product(&mut data, &input, false, &code)?)
}

#[derive(Debug, Deserialize)]
struct BatchRequest {
    items: Vec<Value>,
}

/// Upserts each item; each answers on its own, so part of a batch can fail.
async fn batch_products(State(state): State<Arc<ErpState>>, body: Bytes) -> ErpResult {
    let req: BatchRequest = json_body(&body)?;
    if req.items.len() > MAX_BATCH {
        return Err(bad(format!("Maxim {MAX_BATCH} produse intr-un lot")));
    }
    let failure_rate = state.core.faults.get().batch_failure_rate;
    let mut data = state.data.lock().unwrap();
    let mut results = Vec::with_capacity(req.items.len());
    for item in req.items {
        let code = item
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let outcome = (|| {
            if code.trim().is_empty() {
                return Err("Codul produsului lipseste".to_owned());
            }
            let input: ProductInput =
                serde_json::from_value(item).map_err(|e| format!("Produs invalid: {e}"))?;
            if state.core.faults.roll(failure_rate) {
                return Err("Eroare temporara, reincercati".to_owned());
            }
            let create = data.products.key_of(&code).is_none();
            state
                .save_product(&mut data, &input, create, &code)
                .map_err(|e| e.to_string())
        })();
        results.push(match outcome {
            Ok(_) => json!({"code": code, "ok": true}),
            Err(text) => json!({"code": code, "ok": false, "errorText": text}),
        });
    }
    ok(results)
}

// ---------------------------------------------------------------- stock

async fn list_stock(State(state): State<Arc<ErpState>>, RawQuery(q): RawQuery) -> ErpResult {
    let list = list_query(q.as_deref())?;
    let warehouse = list.get("warehouse");
    let code = list.get("code");
    let mut data = state.data.lock().unwrap();
    let page = list.page(&data.stock, |s| {
        warehouse.is_none_or(|w| s.warehouse == w) && code.is_none_or(|c| s.code == c)
    });
    let first = page.drift_key();
    let items: Vec<StockLevel> = page.rows.iter().map(|(_, s)| (*s).clone()).collect();
    state.core.drift(&mut data.stock, first);
    ok(items)
}

async fn put_stock(
    State(state): State<Arc<ErpState>>,
    Path(code): Path<String>,
    body: Bytes,
) -> ErpResult {
    let input: StockInput = json_body(&body)?;
    let now = state.core.now();
    let mut data = state.data.lock().unwrap();
    if data.products.key_of(&code).is_none() {
        return Err(business(format!("Produsul cu codul {code} nu exista")));
    }
    state.check_warehouses(Some(&vec![StockInput {
        warehouse: input.warehouse.clone(),
        quantity: input.quantity,
    }]))?;
    ok(data.set_stock(&code, &input.warehouse, input.quantity, now))
}

// ---------------------------------------------------------------- clients

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClientInput {
    id: Option<u64>,
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    vat_code: Option<String>,
    address: Option<String>,
}

impl ErpData {
    fn insert_client(
        &mut self,
        input: &ClientInput,
        now: DateTime<Utc>,
    ) -> Result<Client, ErpError> {
        let name = input.name.clone().unwrap_or_default();
        if name.trim().is_empty() {
            return Err(business("Numele clientului lipseste"));
        }
        let mut c = Client {
            id: 0,
            name,
            email: input.email.clone().unwrap_or_default(),
            phone: input.phone.clone().unwrap_or_default(),
            vat_code: input.vat_code.clone().unwrap_or_default(),
            address: input.address.clone().unwrap_or_default(),
            updated_at: now,
        };
        self.clients
            .save(None, &mut c, now)
            .map_err(|_| business(format!("Clientul cu emailul {} exista deja", c.email)))?;
        Ok(c)
    }
}

async fn list_clients(State(state): State<Arc<ErpState>>, RawQuery(q): RawQuery) -> ErpResult {
    let list = list_query(q.as_deref())?;
    let email = list.get("email").map(str::to_lowercase);
    let data = state.data.lock().unwrap();
    let page = list.page(&data.clients, |c| {
        email.as_ref().is_none_or(|e| c.email.to_lowercase() == *e)
    });
    let items: Vec<Client> = page.rows.iter().map(|(_, c)| (*c).clone()).collect();
    ok(items)
}

async fn create_client(State(state): State<Arc<ErpState>>, body: Bytes) -> ErpResult {
    let input: ClientInput = json_body(&body)?;
    let now = state.core.now();
    let c = state.data.lock().unwrap().insert_client(&input, now)?;
    ok(c)
}

// ---------------------------------------------------------------- orders

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderRequest {
    series_name: Option<String>,
    idempotency_key: Option<String>,
    reference: Option<String>,
    channel: Option<String>,
    client: Option<ClientInput>,
    lines: Vec<LineRequest>,
    shipping: Option<Value>,
    currency: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LineRequest {
    code: String,
    quantity: i64,
    price: Option<f64>,
    name: Option<String>,
}

impl ErpState {
    /// Creates a sales order, or returns the one created earlier with the same idempotency key
    /// (`true` in the second place).
    fn place_order(&self, req: OrderRequest) -> Result<(SalesOrder, bool), ErpError> {
        let now = self.core.now();
        let mut data = self.data.lock().unwrap();
        if let Some(key) = req.idempotency_key.as_ref().filter(|_| self.idempotency)
            && let Some(id) = data.idempotency.get(key)
        {
            return Ok((data.orders.get(*id).cloned().expect("indexed"), true));
        }
        let series = req
            .series_name
            .clone()
            .unwrap_or_else(|| self.series[0].clone());
        if !self.series.contains(&series) {
            return Err(business(format!("Seria {series} nu exista")));
        }
        if req.lines.is_empty() {
            return Err(bad("Comanda nu are produse"));
        }
        let mut lines = Vec::with_capacity(req.lines.len());
        for l in &req.lines {
            let p = data
                .products
                .find(&l.code)
                .ok_or_else(|| business(format!("Produsul cu codul {} nu exista", l.code)))?;
            if l.quantity <= 0 {
                return Err(business(format!(
                    "Cantitatea pentru produsul {} este invalida",
                    l.code
                )));
            }
            lines.push(SalesLine {
                code: l.code.clone(),
                name: l.name.clone().unwrap_or_else(|| p.name.clone()),
                quantity: l.quantity,
                price: l.price.unwrap_or(p.price),
            });
        }
        let client = match &req.client {
            None => return Err(business("Clientul lipseste")),
            Some(c) => {
                let found = match (c.id, &c.email) {
                    (Some(id), _) => Some(
                        data.clients
                            .get(id)
                            .cloned()
                            .ok_or_else(|| business(format!("Clientul cu id {id} nu exista")))?,
                    ),
                    (None, Some(email)) => data.clients.find(&email.to_lowercase()).cloned(),
                    (None, None) => None,
                };
                match found {
                    Some(c) => c,
                    // Like SmartBill's `saveToDb`: a named client not yet known is recorded.
                    None if c.name.as_ref().is_some_and(|n| !n.trim().is_empty()) => {
                        data.insert_client(c, now)?
                    }
                    None => return Err(business("Clientul nu exista")),
                }
            }
        };
        let number = {
            let next = data.series_next.entry(series.clone()).or_insert(1);
            let n = *next;
            *next += 1;
            n
        };
        let key = data.orders.next_key();
        let order = SalesOrder {
            id: key,
            series_name: series,
            number,
            reference: req.reference,
            channel: req.channel.unwrap_or_else(|| "online".to_owned()),
            status: "new".to_owned(),
            client: OrderClient {
                id: client.id,
                name: client.name,
                email: client.email,
            },
            total: cents(lines.iter().map(|l| l.quantity as f64 * l.price).sum()),
            lines,
            currency: req.currency.unwrap_or_else(|| "RON".to_owned()),
            shipping: req.shipping.unwrap_or(Value::Null),
            awb: None,
            invoice: None,
            idempotency_key: req.idempotency_key.clone(),
            created_at: now,
            updated_at: now,
        };
        if let Some(k) = req.idempotency_key {
            data.idempotency.insert(k, key);
        }
        data.orders.insert(key, order.clone());
        Ok((order, false))
    }
}

fn order_json(o: &SalesOrder, duplicate: Option<bool>) -> Value {
    let mut v = serde_json::to_value(o).expect("orders serialize");
    if let Some(d) = duplicate {
        v["duplicate"] = Value::Bool(d);
    }
    v
}

async fn create_order(State(state): State<Arc<ErpState>>, body: Bytes) -> ErpResult {
    let req: OrderRequest = json_body(&body)?;
    let (order, duplicate) = state.place_order(req)?;
    ok(order_json(&order, Some(duplicate)))
}

async fn list_orders(State(state): State<Arc<ErpState>>, RawQuery(q): RawQuery) -> ErpResult {
    let list = list_query(q.as_deref())?;
    let reference = list.get("reference");
    let status = list.get("status");
    let mut data = state.data.lock().unwrap();
    let page = list.page(&data.orders, |o| {
        reference.is_none_or(|r| o.reference.as_deref() == Some(r))
            && status.is_none_or(|s| o.status == s)
    });
    let first = page.drift_key();
    let items: Vec<Value> = page.rows.iter().map(|(_, o)| order_json(o, None)).collect();
    state.core.drift(&mut data.orders, first);
    ok(items)
}

async fn get_order(State(state): State<Arc<ErpState>>, Path(id): Path<String>) -> ErpResult {
    let data = state.data.lock().unwrap();
    let o = id
        .parse::<u64>()
        .ok()
        .and_then(|k| data.orders.get(k))
        .ok_or_else(|| ErpError::Http(404, format!("Comanda {id} nu exista")))?;
    ok(order_json(o, None))
}

// ---------------------------------------------------------------- control API

/// An accountant's change to a sales order through the control API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SalesOrderEdit {
    pub status: Option<String>,
    pub awb: Option<String>,
    /// Issue the invoice (status becomes `invoiced`).
    #[serde(default)]
    pub invoice: bool,
    pub lines: Option<Vec<SalesLine>>,
}

/// A sales order born in the ERP (phone, counter), with no shop reference.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErpOrderDraft {
    #[serde(default = "phone")]
    pub channel: String,
    pub client_name: String,
    pub client_email: String,
    /// (code, quantity); prices come from the products.
    pub lines: Vec<(String, i64)>,
    #[serde(default)]
    pub series: Option<String>,
}

fn phone() -> String {
    "phone".to_owned()
}

#[derive(Debug, Deserialize)]
struct StockEdit {
    warehouse: String,
    quantity: i64,
}

fn erp_control_routes(state: Arc<ErpState>) -> Router {
    Router::new()
        .route(
            "/__sim/orders/{id}",
            post(
                |State(state): State<Arc<ErpState>>,
                 Path(id): Path<u64>,
                 Json(edit): Json<SalesOrderEdit>| async move {
                    match state.edit_order(id, edit) {
                        Some(o) => ok(order_json(&o, None)),
                        None => Err(ErpError::Http(404, format!("Comanda {id} nu exista"))),
                    }
                },
            ),
        )
        .route(
            "/__sim/orders",
            post(
                |State(state): State<Arc<ErpState>>, Json(draft): Json<ErpOrderDraft>| async move {
                    let (o, _) = state.place_order(draft_request(draft))?;
                    ok(order_json(&o, None))
                },
            ),
        )
        .route(
            "/__sim/stock/{code}",
            post(
                |State(state): State<Arc<ErpState>>,
                 Path(code): Path<String>,
                 Json(edit): Json<StockEdit>| async move {
                    let now = state.core.now();
                    let mut data = state.data.lock().unwrap();
                    if data.products.key_of(&code).is_none() {
                        return Err(business(format!("Produsul cu codul {code} nu exista")));
                    }
                    ok(data.set_stock(&code, &edit.warehouse, edit.quantity, now))
                },
            ),
        )
        .with_state(state)
}

fn draft_request(d: ErpOrderDraft) -> OrderRequest {
    OrderRequest {
        series_name: d.series,
        channel: Some(d.channel),
        client: Some(ClientInput {
            name: Some(d.client_name),
            email: Some(d.client_email),
            ..ClientInput::default()
        }),
        lines: d
            .lines
            .into_iter()
            .map(|(code, quantity)| LineRequest {
                code,
                quantity,
                price: None,
                name: None,
            })
            .collect(),
        ..OrderRequest::default()
    }
}

impl ErpState {
    fn change_order(
        &self,
        id: u64,
        f: impl FnOnce(&mut SalesOrder, &mut u64),
    ) -> Option<SalesOrder> {
        let now = self.core.now();
        let mut data = self.data.lock().unwrap();
        let mut invoice_next = data.invoice_next;
        data.orders
            .try_update(id, now, |o| {
                f(o, &mut invoice_next);
                Ok::<_, ()>(())
            })?
            .ok()?;
        data.invoice_next = invoice_next;
        data.orders.get(id).cloned()
    }

    fn edit_order(&self, id: u64, edit: SalesOrderEdit) -> Option<SalesOrder> {
        let base = self.core.base_url.clone();
        let series = self.invoice_series.clone();
        self.change_order(id, |o, invoice_next| {
            if let Some(s) = edit.status {
                o.status = s;
            }
            if edit.awb.is_some() {
                o.awb = edit.awb;
            }
            if let Some(lines) = edit.lines {
                o.total = cents(lines.iter().map(|l| l.quantity as f64 * l.price).sum());
                o.lines = lines;
            }
            if edit.invoice && o.invoice.is_none() {
                let number = *invoice_next;
                *invoice_next += 1;
                o.invoice = Some(Invoice {
                    url: format!("{base}/invoices/{series}/{number}"),
                    series,
                    number,
                });
                o.status = "invoiced".to_owned();
            }
        })
    }
}

// ---------------------------------------------------------------- handle

/// A running ERP simulator; what it shares with the shop's handle (address, counters, faults,
/// clock, credentials) is on the [`SimHandle`] it dereferences to. Dropping it stops the
/// server.
#[derive(Debug)]
pub struct ErpHandle {
    sim: SimHandle,
    state: Arc<ErpState>,
}

impl Deref for ErpHandle {
    type Target = SimHandle;

    fn deref(&self) -> &SimHandle {
        &self.sim
    }
}

impl ErpHandle {
    pub fn warehouses(&self) -> Vec<String> {
        self.state.warehouses.clone()
    }

    /// Changes (or with `None` removes) the burst limit, forgetting past calls.
    pub fn set_burst_limit(&self, limit: Option<BurstLimit>) {
        *self.state.burst.lock().unwrap() = limit.map(|config| Burst {
            config,
            calls: VecDeque::new(),
            locked_until: None,
        });
    }

    // ---- products and stock

    pub fn product(&self, code: &str) -> Option<ErpProduct> {
        self.state.data.lock().unwrap().products.find(code).cloned()
    }

    /// Every product in creation order.
    pub fn products(&self) -> Vec<ErpProduct> {
        self.state.data.lock().unwrap().products.all()
    }

    pub fn product_count(&self) -> usize {
        self.state.data.lock().unwrap().products.len()
    }

    /// Adds a product with zero stock in every warehouse; fails on a code in use.
    pub fn create_product(&self, p: ErpProduct) -> anyhow::Result<ErpProduct> {
        let now = self.state.core.now();
        let mut data = self.state.data.lock().unwrap();
        Ok(data.insert_product(p, &self.state.warehouses, now)?)
    }

    /// Changes a product as an accountant would, bumping `updatedAt` (not the code).
    pub fn update_product(
        &self,
        code: &str,
        f: impl FnOnce(&mut ErpProduct),
    ) -> Option<ErpProduct> {
        let now = self.state.core.now();
        let mut data = self.state.data.lock().unwrap();
        let key = data.products.key_of(code)?;
        data.products
            .try_update(key, now, |p| {
                f(p);
                p.code = code.to_owned();
                Ok::<_, ()>(())
            })?
            .ok()?;
        data.products.get(key).cloned()
    }

    /// Stock of one product in one warehouse.
    pub fn stock(&self, code: &str, warehouse: &str) -> Option<StockLevel> {
        let data = self.state.data.lock().unwrap();
        data.stock_level(code, warehouse).cloned()
    }

    /// Total stock of a product over every warehouse.
    pub fn total_stock(&self, code: &str) -> i64 {
        self.state
            .warehouses
            .iter()
            .filter_map(|w| self.stock(code, w))
            .map(|s| s.quantity)
            .sum()
    }

    /// Sets stock as a stock movement would, bumping the row's `updatedAt` when it changes.
    pub fn set_stock(&self, code: &str, warehouse: &str, quantity: i64) -> Option<StockLevel> {
        let now = self.state.core.now();
        let mut data = self.state.data.lock().unwrap();
        data.products.key_of(code)?;
        Some(data.set_stock(code, warehouse, quantity, now))
    }

    // ---- clients

    pub fn clients(&self) -> Vec<Client> {
        self.state.data.lock().unwrap().clients.all()
    }

    pub fn client_by_email(&self, email: &str) -> Option<Client> {
        let data = self.state.data.lock().unwrap();
        data.clients.find(&email.to_lowercase()).cloned()
    }

    // ---- orders

    pub fn order(&self, id: u64) -> Option<SalesOrder> {
        self.state.data.lock().unwrap().orders.get(id).cloned()
    }

    /// Every sales order in creation order.
    pub fn orders(&self) -> Vec<SalesOrder> {
        self.state.data.lock().unwrap().orders.all()
    }

    /// Sales orders carrying this shop reference (more than one means a duplicate export).
    pub fn orders_by_reference(&self, reference: &str) -> Vec<SalesOrder> {
        let data = self.state.data.lock().unwrap();
        data.orders
            .iter()
            .filter(|(_, o)| o.reference.as_deref() == Some(reference))
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Creates an order born in the ERP (no shop reference).
    pub fn create_order(&self, draft: ErpOrderDraft) -> anyhow::Result<SalesOrder> {
        Ok(self.state.place_order(draft_request(draft))?.0)
    }

    /// Changes an order as an accountant would, bumping `updatedAt`.
    pub fn update_order(&self, id: u64, f: impl FnOnce(&mut SalesOrder)) -> Option<SalesOrder> {
        self.state.change_order(id, |o, _| f(o))
    }

    pub fn set_order_status(&self, id: u64, status: &str) -> Option<SalesOrder> {
        self.update_order(id, |o| o.status = status.to_owned())
    }

    pub fn set_awb(&self, id: u64, awb: &str) -> Option<SalesOrder> {
        self.update_order(id, |o| o.awb = Some(awb.to_owned()))
    }

    /// Issues the invoice (next number of the invoice series) and marks the order invoiced;
    /// an order already invoiced keeps its invoice.
    pub fn issue_invoice(&self, id: u64) -> Option<SalesOrder> {
        self.state.edit_order(
            id,
            SalesOrderEdit {
                invoice: true,
                ..SalesOrderEdit::default()
            },
        )
    }

    /// Replaces the lines (and the total) of an order.
    pub fn set_order_lines(&self, id: u64, lines: Vec<SalesLine>) -> Option<SalesOrder> {
        self.state.edit_order(
            id,
            SalesOrderEdit {
                lines: Some(lines),
                ..SalesOrderEdit::default()
            },
        )
    }

    // ---- seeding

    /// Adds every catalogue item (codes already present are skipped); its stock goes to the
    /// first warehouse, the others start at zero.
    pub fn seed_catalogue(&self, items: &[CatalogueItem]) {
        let now = self.state.core.now();
        let warehouses = &self.state.warehouses;
        let mut data = self.state.data.lock().unwrap();
        for item in items {
            let mut p = ErpProduct {
                code: item.sku.clone(),
                name: item.name.clone(),
                price: item.price_gross,
                vat_percentage: item.vat_percentage,
                currency: "RON".to_owned(),
                measuring_unit: "buc".to_owned(),
                active: true,
                updated_at: now,
                extra: serde_json::Map::new(),
            };
            if data.products.save(None, &mut p, now).is_err() {
                continue;
            }
            for (i, w) in warehouses.iter().enumerate() {
                data.set_stock(&item.sku, w, if i == 0 { item.stock } else { 0 }, now);
            }
        }
    }

    /// Adds `n` generated products (`SKU-000001`…).
    pub fn seed_products(&self, n: usize, seed: u64) -> Vec<CatalogueItem> {
        let items = seed::catalogue(n, seed);
        self.seed_catalogue(&items);
        items
    }

    /// Adds `n` orders born in the ERP (phone orders) over the products present, seeding a
    /// small catalogue first when there is none.
    pub fn seed_orders(&self, n: usize, seed: u64) -> Vec<SalesOrder> {
        if self.product_count() == 0 {
            self.seed_products(20, seed);
        }
        let codes: Vec<String> = {
            let data = self.state.data.lock().unwrap();
            data.products
                .iter()
                .take(1000)
                .map(|(_, p)| p.code.clone())
                .collect()
        };
        let people = seed::people(n.clamp(1, 50), seed);
        let mut rng = StdRng::seed_from_u64(seed ^ 0x0e_4de4);
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let person = &people[i % people.len()];
            let draft = ErpOrderDraft {
                channel: "phone".to_owned(),
                client_name: format!("{} {}", person.first_name, person.last_name),
                client_email: person.email.clone(),
                lines: seed::order_lines(&mut rng, codes.len())
                    .into_iter()
                    .map(|(j, q)| (codes[j].clone(), q))
                    .collect(),
                series: None,
            };
            if let Ok(o) = self.create_order(draft) {
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
