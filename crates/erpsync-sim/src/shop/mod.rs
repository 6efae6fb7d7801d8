//! The shop simulator, MerchantPro-style: Basic auth with lock-out, products with variants,
//! orders with a shipping state machine and locking, customers, suppliers, `meta.links.next`
//! paging with absolute URLs, a token-bucket rate limit and signed outbound webhooks.
//!
//! Lists are ordered by modification time, oldest first; `updated_after` is exclusive.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

use crate::faults::Faults;
use crate::handle::SimHandle;
use crate::server::{Core, Flavor, error_response, serve};
use crate::table::Table;
use crate::webhook::{WebhookConfig, WebhookDelivery, WebhookSender};
use erpsync_clock::{SharedClock, SystemClock};

mod auth;
mod customers;
mod orders;
mod products;
mod resource;
mod suppliers;

pub use auth::TokenBucket;
use auth::{AuthState, shop_layer};
pub(crate) use auth::{Limiter, basic_credentials};
pub use customers::Customer;
pub use orders::{Address, Order, OrderCustomer, OrderLine};
pub use products::{Product, ProductType, Variant, VariantOption};
pub use suppliers::{Supplier, SupplierInput};
// The control API's bodies, which the crate's documentation names.
#[cfg(doc)]
pub(crate) use {orders::OrderEdit, products::ProductEdit};

/// Largest `limit` a list accepts.
pub(crate) const MAX_LIMIT: usize = 100;
const DEFAULT_LIMIT: usize = 20;

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
        let core = Core::new(Flavor::Shop, &listener, opts.faults, opts.seed, opts.clock)?;
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
            .merge(products::routes())
            .merge(orders::routes())
            .merge(resource::routes::<Customer>())
            .merge(resource::routes::<Supplier>())
            .route_layer(middleware::from_fn_with_state(state.clone(), shop_layer))
            .with_state(state.clone());
        let server = serve(
            listener,
            core.clone(),
            api,
            Router::new()
                .merge(products::control_routes())
                .merge(orders::control_routes())
                .with_state(state.clone()),
        )?;
        Ok(ShopHandle {
            sim: SimHandle::new(core, server, "/api/v2", credentials),
            state,
        })
    }
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

crate::handle::deref_to_sim!(ShopHandle);

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

    /// Stops the server and waits for it to end.
    pub async fn shutdown(self) {
        self.sim.shutdown().await
    }

    /// Serves until the server task ends (for the command-line runner).
    pub async fn wait(self) {
        self.sim.wait().await
    }
}
