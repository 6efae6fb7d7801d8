//! Products of the shop simulator (`/api/v2/products`), on the generic routes
//! ([`super::resource`]) with their own hooks: `basic` and `multi_variant` products whose
//! variants hold stock and prices, SKUs unique across products and variants, the real fields the
//! simulator does not model accepted (and kept with `keep_unmodelled`), a `status` and a `sku`
//! filter, `include=variants` and `fields` on lists; also DELETE and the control route.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::delete;
use chrono::{DateTime, Utc};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use super::resource::{self, Listed, Resource, Write, finish_page, parse_id, project};
use super::{ShopData, ShopError, ShopHandle, ShopResult, ShopState};
use crate::seed::{self, CatalogueItem};
use crate::server::{JsonList, ListQuery, cents, query_get};
use crate::table::{Rfc3339, Table, UniqueValueTakenError, patch, record};

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

/// A shop product. It is shown as `ProductView` writes it: a field added here is added
/// there too (the test `sim::listed_records_are_the_records_read_alone` lists them).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Product {
    pub id: u64,
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
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Real MerchantPro fields the simulator does not model (`meta_title`, `cost_gross`…),
    /// kept and served back only when [`ShopOptions::keep_unmodelled`] is on.
    pub extra: Map<String, Value>,
}

/// A product as the shop shows it: its fields in the API's order, its variants only where
/// they are asked for (a list shows them with `include=variants`), then the fields it does
/// not model.
struct ProductView<'a> {
    product: &'a Product,
    variants: bool,
}

impl Serialize for ProductView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.product;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("id", &p.id)?;
        m.serialize_entry("type", &p.kind)?;
        m.serialize_entry("sku", &p.sku)?;
        m.serialize_entry("ext_ref", &p.ext_ref)?;
        m.serialize_entry("name", &p.name)?;
        m.serialize_entry("description", &p.description)?;
        m.serialize_entry("status", &p.status)?;
        m.serialize_entry("price_net", &p.price_net)?;
        m.serialize_entry("price_gross", &p.price_gross)?;
        m.serialize_entry("tax_id", &p.tax_id)?;
        m.serialize_entry("stock", &p.stock)?;
        m.serialize_entry("weight", &p.weight)?;
        if self.variants {
            m.serialize_entry("variants", &p.variants)?;
        }
        m.serialize_entry("created_at", &Rfc3339(&p.created_at))?;
        m.serialize_entry("updated_at", &Rfc3339(&p.updated_at))?;
        for (k, v) in &p.extra {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// A product read alone, or answered to a write, shows its variants.
impl Serialize for Product {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ProductView {
            product: self,
            variants: true,
        }
        .serialize(s)
    }
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

record!(Product, id {
    /// Its SKU and its variants': a SKU names one product in the whole shop.
    fn unique(&self) -> Vec<String> {
        std::iter::once(&self.sku)
            .chain(self.variants.iter().map(|v| &v.sku))
            .cloned()
            .collect()
    }
});

fn product_json(p: &Product, with_variants: bool, fields: Option<&str>) -> Value {
    let view = ProductView {
        product: p,
        variants: with_variants,
    };
    project(
        serde_json::to_value(view).expect("products serialize"),
        fields,
    )
}

/// Adds a product to a list page: written straight from the product unless only some
/// `fields` are asked for.
fn push_product(list: &mut JsonList, p: &Product, with_variants: bool, fields: Option<&str>) {
    match fields {
        None => list.push(&ProductView {
            product: p,
            variants: with_variants,
        }),
        Some(_) => list.push(&product_json(p, with_variants, fields)),
    }
}

impl Resource for Product {
    const NAME: &'static str = "product";
    const PATH: &'static str = "/api/v2/products";

    fn table(data: &mut ShopData) -> &mut Table<Self> {
        &mut data.products
    }

    /// Filters on `status`; `sku` finds the product with that SKU (or a variant with it) in
    /// the index; `include=variants` and `fields` shape what is shown.
    fn page(list: &ListQuery, table: &Table<Self>) -> Listed {
        let with_variants = list
            .get("include")
            .is_some_and(|i| i.split(',').any(|x| x == "variants"));
        let fields = list.get("fields");
        let status = list.get("status");
        if let Some(sku) = list.get("sku") {
            let mut items = JsonList::default();
            if let Some(p) = table
                .find(sku)
                .filter(|p| list.offset == 0 && status.is_none_or(|s| p.status == s))
            {
                push_product(&mut items, p, with_variants, fields);
            }
            return (items, false, None);
        }
        let page = list.page(table, |p| status.is_none_or(|s| p.status == s));
        finish_page(page, |p, list| push_product(list, p, with_variants, fields))
    }

    fn shown(&self, pairs: &[(String, String)]) -> Value {
        product_json(self, true, query_get(pairs, "fields"))
    }

    fn create(state: &ShopState, req: &Write) -> Result<Self, ShopError> {
        let body = req.object()?;
        let now = state.core.now();
        let mut data = state.data.lock().unwrap();
        let mut p = Product {
            status: "active".to_owned(),
            tax_id: 1,
            ..Product::default()
        };
        let mut last_variant_id = data.last_variant_id;
        let flags = (req.ignore_unknown(), state.keep_unmodelled);
        apply_product(&mut p, &body, flags, &mut last_variant_id)?;
        data.last_variant_id = last_variant_id;
        data.insert_product(p, now)
    }

    fn change(state: &ShopState, id: &str, req: &Write) -> Result<Self, ShopError> {
        let key = parse_id(id, Self::NAME)?;
        let body = req.object()?;
        let flags = (req.ignore_unknown(), state.keep_unmodelled);
        let now = state.core.now();
        let mut data = state.data.lock().unwrap();
        data.update_product(key, now, |p, last| apply_product(p, &body, flags, last))
    }
}

/// The generic routes, and DELETE of one product.
pub(super) fn routes() -> Router<Arc<ShopState>> {
    resource::routes::<Product>().route("/api/v2/products/{id}", delete(delete_product))
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

fn sku_taken(taken: UniqueValueTakenError) -> ShopError {
    let sku = taken.value;
    ShopError::validation(format!("a product with SKU `{sku}` already exists"))
}

async fn delete_product(State(state): State<Arc<ShopState>>, Path(id): Path<String>) -> ShopResult {
    let key = parse_id(&id, "product")?;
    let mut data = state.data.lock().unwrap();
    data.products
        .remove(key)
        .ok_or_else(|| ShopError::not_found("product", &id))?;
    Ok(StatusCode::NO_CONTENT.into_response())
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

/// `POST /__sim/products/{id}`: a merchant's change ([`ProductEdit`]).
pub(super) fn control_routes() -> Router<Arc<ShopState>> {
    resource::edit_route("/__sim/products/{id}", |state, id, edit: ProductEdit| {
        let key = parse_id(id, "product")?;
        let now = state.core.now();
        let mut data = state.data.lock().unwrap();
        data.update_product(key, now, |p, _| {
            edit_product(p, edit);
            Ok(())
        })
    })
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

impl ShopHandle {
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
}
