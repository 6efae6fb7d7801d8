//! Products of the ERP simulator (`/api/products`), known by their code: listed through the
//! shared routes ([`super::resource`]) with their stock in every warehouse, read and changed
//! by code, and upserted in batches whose items answer one by one (a batch may fail in part).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post, put};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::resource::{self, Drift, Listed};
use super::stock::StockInput;
use super::{
    ErpData, ErpError, ErpHandle, ErpResult, ErpState, MAX_BATCH, bad, business, json_body, ok,
};
use crate::seed::{self, CatalogueItem};
use crate::server::ListQuery;
use crate::table::{Table, record, rfc3339};

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

record!(ErpProduct {
    fn unique(&self) -> Vec<String> {
        vec![self.code.clone()]
    }
});

/// A product as the ERP shows it: its fields, then its stock in every warehouse.
#[derive(Serialize)]
pub(super) struct ShownProduct<'a> {
    #[serde(flatten)]
    product: &'a ErpProduct,
    stock: Vec<ShownLevel<'a>>,
}

#[derive(Serialize)]
struct ShownLevel<'a> {
    warehouse: &'a str,
    quantity: i64,
}

impl ErpData {
    fn product_shown<'a>(&self, p: &'a ErpProduct, warehouses: &'a [String]) -> ShownProduct<'a> {
        let stock = warehouses
            .iter()
            .map(|w| ShownLevel {
                warehouse: w,
                quantity: self.stock_level(&p.code, w).map_or(0, |s| s.quantity),
            })
            .collect();
        ShownProduct { product: p, stock }
    }

    fn product_json(&self, p: &ErpProduct, warehouses: &[String]) -> Value {
        serde_json::to_value(self.product_shown(p, warehouses)).expect("products serialize")
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

impl Listed for ErpProduct {
    const DRIFT: Drift = Drift::WhenMore;

    resource::table!(products);

    fn keep(_list: &ListQuery) -> impl Fn(&Self) -> bool {
        |_| true
    }

    /// `code` finds the product with that code in the index.
    fn exact<'t>(list: &ListQuery, table: &'t Table<Self>) -> Option<Option<&'t Self>> {
        list.get("code").map(|code| table.find(code))
    }

    /// With its stock in every warehouse.
    fn shown<'a>(&'a self, state: &'a ErpState, data: &'a ErpData) -> impl Serialize + 'a {
        data.product_shown(self, &state.warehouses)
    }
}

/// Products are read and changed by code, and written in batches too.
pub(super) fn routes() -> Router<Arc<ErpState>> {
    Router::new()
        .route(
            "/api/products",
            get(resource::list::<ErpProduct>).post(create_product),
        )
        .route("/api/products/batch", post(batch_products))
        .route("/api/products/{code}", put(put_product).get(get_product))
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

impl ErpHandle {
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
}
