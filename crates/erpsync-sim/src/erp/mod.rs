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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use serde_json::json;

use crate::faults::Faults;
use crate::handle::SimHandle;
use crate::server::{Core, Flavor, JsonList, error_response, list_answer, serve};
use crate::table::Table;
use erpsync_clock::{SharedClock, SystemClock};

mod auth;
mod clients;
mod orders;
mod products;
mod purchases;
mod resource;
mod stock;
mod suppliers;

pub use auth::BurstLimit;
use auth::{Burst, erp_layer};
pub use clients::Client;
#[cfg(doc)]
pub(crate) use orders::SalesOrderEdit;
pub use orders::{ErpOrderDraft, Invoice, OrderClient, SalesLine, SalesOrder};
pub use products::ErpProduct;
pub use purchases::{Purchase, PurchaseInput, PurchaseLine, PurchaseSupplier, RECEPTION_SERIES};
pub use stock::StockLevel;
pub use suppliers::{Supplier, SupplierInput};

const DEFAULT_LIMIT: usize = 100;
/// Largest `limitPerPage` accepted.
pub(crate) const MAX_LIMIT: usize = 250;
/// Largest batch accepted by `POST /api/products/batch`.
pub(crate) const MAX_BATCH: usize = 100;

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
    Ok(Json(Answer {
        status: 200,
        status_message: "Success",
        data,
    })
    .into_response())
}

/// The success envelope.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Answer<T> {
    status: u16,
    status_message: &'static str,
    data: T,
}

/// A list in the success envelope, its records written as they were rendered.
fn ok_list(items: JsonList) -> ErpResult {
    Ok(list_answer(
        r#"{"status":200,"statusMessage":"Success","data":"#,
        items,
        b"}",
    ))
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
        let core = Core::new(Flavor::Erp, &listener, opts.faults, opts.seed, opts.clock)?;
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
            .merge(auth::routes())
            .merge(products::routes())
            .merge(stock::routes())
            .merge(clients::routes())
            .merge(suppliers::routes())
            .merge(purchases::routes())
            .merge(orders::routes())
            .route_layer(middleware::from_fn_with_state(state.clone(), erp_layer))
            .with_state(state.clone());
        let server = serve(
            listener,
            core.clone(),
            api,
            Router::new()
                .merge(orders::control_routes())
                .merge(stock::control_routes())
                .with_state(state.clone()),
        )?;
        Ok(ErpHandle {
            sim: SimHandle::new(core, server, "/api", credentials),
            state,
        })
    }
}

/// Reads a JSON body, answering 400 when it does not fit.
fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ErpError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("Cerere invalida: {e}")))
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

crate::handle::deref_to_sim!(ErpHandle);

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

    /// Stops the server and waits for it to end.
    pub async fn shutdown(self) {
        self.sim.shutdown().await
    }

    /// Serves until the server task ends (for the command-line runner).
    pub async fn wait(self) {
        self.sim.wait().await
    }
}
