//! Products of the WooCommerce simulator (`/products`), on the shared routes
//! ([`super::resource`]) with their own hooks: string prices, `stock_status` derived from
//! `stock_quantity`, SKUs unique whatever their case, a `sku` and a `status` filter; also POST
//! of a new product and `/products/batch`, whose items fail one by one.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::fields::{
    Meta, apply_meta, boolean_of, integer_of, money, one_of, price_of, string_of, wp_date,
};
use super::resource::{self, Resource, WooList, body_object, to_json};
use super::{API_PATH, MAX_PER_PAGE, WooData, WooError, WooHandle, WooResult, WooState};
use crate::seed::{self, CatalogueItem};
use crate::table::{Record, Table};

const PRODUCT_STATUSES: &[&str] = &["draft", "pending", "private", "publish"];
const STOCK_STATUSES: &[&str] = &["instock", "outofstock", "onbackorder"];
const PRODUCT_TYPES: &[&str] = &["simple", "grouped", "external", "variable"];

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

impl Resource for WooProduct {
    const NAME: &'static str = "product";
    const PATH: &'static str = "/products";

    fn table(data: &mut WooData) -> &mut Table<Self> {
        &mut data.products
    }

    /// Filters on `status` (`any` is every one) and on SKUs, comma-separated, whatever their
    /// case.
    fn keep(list: &WooList) -> Result<impl Fn(&Self) -> bool, WooError> {
        let skus: Option<Vec<String>> = list
            .get("sku")
            .map(|s| s.split(',').map(|x| x.trim().to_lowercase()).collect());
        let status = list.get("status").filter(|s| *s != "any");
        Ok(move |p: &WooProduct| {
            status.is_none_or(|s| p.status == s)
                && skus
                    .as_ref()
                    .is_none_or(|skus| skus.contains(&p.sku.to_lowercase()))
        })
    }

    fn change(state: &WooState, id: u64, body: &Map<String, Value>) -> Result<Self, WooError> {
        let now = state.now();
        state.data.lock().unwrap().update_product(id, body, now)
    }
}

/// The shared routes, POST of a new product, and the batch.
pub(super) fn routes() -> Router<Arc<WooState>> {
    resource::routes::<WooProduct>()
        .route(&format!("{API_PATH}/products"), post(create_product))
        .route(&format!("{API_PATH}/products/batch"), post(batch_products))
}

async fn create_product(State(state): State<Arc<WooState>>, body: Bytes) -> WooResult {
    let body = body_object(&body)?;
    let now = state.now();
    let p = state.data.lock().unwrap().create_product(&body, now)?;
    Ok((StatusCode::CREATED, Json(to_json(&p))).into_response())
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

impl WooHandle {
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
}
