//! Stock of the ERP simulator (`/api/stock`): one row per product and warehouse, with its own
//! stamp that moves only when the quantity does, listed through the shared routes
//! ([`super::resource`]) and set per product and warehouse.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::resource::{self, Drift, Listed};
use super::{ErpData, ErpError, ErpHandle, ErpResult, ErpState, business, json_body, ok};
use crate::server::ListQuery;
use crate::table::{Table, record, rfc3339};

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

record!(StockLevel);

impl Listed for StockLevel {
    const DRIFT: Drift = Drift::WhenMore;

    resource::table!(stock);

    /// Filters on `warehouse` and `code`.
    fn keep(list: &ListQuery) -> impl Fn(&Self) -> bool {
        let warehouse = list.get("warehouse").map(str::to_owned);
        let code = list.get("code").map(str::to_owned);
        move |s| {
            warehouse.as_ref().is_none_or(|w| s.warehouse == *w)
                && code.as_ref().is_none_or(|c| s.code == *c)
        }
    }
}

/// The stock list and the stock of one product in one warehouse.
pub(super) fn routes() -> Router<Arc<ErpState>> {
    Router::new()
        .route("/api/stock", get(resource::list::<StockLevel>))
        .route("/api/stock/{code}", put(put_stock))
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

impl ErpData {
    /// The stock row of a product in a warehouse.
    pub(super) fn stock_level(&self, code: &str, warehouse: &str) -> Option<&StockLevel> {
        let key = self
            .stock_keys
            .get(&(code.to_owned(), warehouse.to_owned()))?;
        self.stock.get(*key)
    }

    pub(super) fn set_stock(
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
}

impl ErpState {
    pub(super) fn check_warehouses(&self, stock: Option<&Vec<StockInput>>) -> Result<(), ErpError> {
        if let Some(s) = stock
            .into_iter()
            .flatten()
            .find(|s| !self.warehouses.contains(&s.warehouse))
        {
            return Err(business(format!("Gestiunea {} nu exista", s.warehouse)));
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct StockInput {
    pub warehouse: String,
    pub quantity: i64,
}

/// `POST /__sim/stock/{code}`: a stock movement (`{warehouse, quantity}`).
pub(super) fn control_routes() -> Router<Arc<ErpState>> {
    Router::new().route(
        "/__sim/stock/{code}",
        post(
            |State(state): State<Arc<ErpState>>,
             Path(code): Path<String>,
             Json(edit): Json<StockInput>| async move {
                let now = state.core.now();
                let mut data = state.data.lock().unwrap();
                if data.products.key_of(&code).is_none() {
                    return Err(business(format!("Produsul cu codul {code} nu exista")));
                }
                ok(data.set_stock(&code, &edit.warehouse, edit.quantity, now))
            },
        ),
    )
}

impl ErpHandle {
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
}
