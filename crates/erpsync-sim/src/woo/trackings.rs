//! Shipment trackings, as the Shipment Tracking extension serves them under
//! `/orders/{id}/shipment-trackings[/{tracking_id}]`: one per order here, so a second POST is
//! 422 and a changed AWB is a PUT of the one there.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Map, Value};

use super::fields::string_of;
use super::resource::{body_object, parse_id, to_json};
use super::{API_PATH, WooData, WooError, WooHandle, WooResult, WooState};

/// The trackings of an order, a new one, and one by id.
pub(super) fn routes() -> Router<Arc<WooState>> {
    Router::new()
        .route(
            &format!("{API_PATH}/orders/{{id}}/shipment-trackings"),
            get(list_trackings).post(create_tracking),
        )
        .route(
            &format!("{API_PATH}/orders/{{id}}/shipment-trackings/{{tracking_id}}"),
            get(get_tracking).put(update_tracking),
        )
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

impl WooHandle {
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
}
