//! Stock levels per location, as multi-location inventory plugins add them under
//! `/inventory-levels`: listed by SKU, created once per SKU and location (no upsert), then
//! changed with a PUT.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::fields::{integer_of, string_of};
use super::resource::body_object;
use super::{API_PATH, WooError, WooHandle, WooResult, WooState};
use crate::server::{query_get, query_pairs};

/// The level list (by SKU), a new level, and a level's change.
pub(super) fn routes() -> Router<Arc<WooState>> {
    Router::new()
        .route(
            &format!("{API_PATH}/inventory-levels"),
            get(list_levels).post(create_level),
        )
        .route(
            &format!("{API_PATH}/inventory-levels/{{sku}}/{{location}}"),
            put(update_level),
        )
}

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

impl WooHandle {
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
}
