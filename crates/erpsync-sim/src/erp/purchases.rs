//! Goods received from suppliers: the reception note (NIR) an ERP records when a delivery
//! arrives. Each line raises the product's stock in the receiving warehouse, moving that stock
//! row's stamp, so the stock an incremental read asks for after a delivery is exactly what it
//! brought. A note is all or nothing: an unknown supplier, warehouse or product, or a
//! quantity that is not positive, is a business error (HTTP 200 with `errorText`) and
//! changes no stock. Notes are numbered in their own series and listed like the other
//! resources.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::resource::{self, Drift, Listed, Read};
use super::{ErpData, ErpError, ErpHandle, ErpResult, ErpState, business, json_body, ok};
use crate::seed::fiscal_digits;
use crate::server::{ListQuery, cents};
use crate::table::{Table, record, rfc3339};

/// Series of reception notes.
pub const RECEPTION_SERIES: &str = "NIR";

/// A reception note.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Purchase {
    pub id: u64,
    pub series_name: String,
    pub number: u64,
    pub supplier: PurchaseSupplier,
    pub warehouse: String,
    pub lines: Vec<PurchaseLine>,
    /// Cost without VAT.
    pub total: f64,
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

record!(Purchase, id);

/// The supplier as carried on a reception note.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PurchaseSupplier {
    pub id: u64,
    pub name: String,
    pub vat_code: String,
}

/// One product received.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PurchaseLine {
    pub code: String,
    pub quantity: i64,
    /// Unit cost without VAT.
    #[serde(default)]
    pub price: f64,
}

/// A delivery to record: the supplier by fiscal code (the `RO` prefix does not matter).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PurchaseInput {
    pub supplier_vat_code: String,
    pub warehouse: String,
    pub lines: Vec<PurchaseLine>,
}

impl ErpState {
    fn receive(&self, input: PurchaseInput) -> Result<Purchase, ErpError> {
        let now = self.core.now();
        let mut data = self.data.lock().unwrap();
        let supplier = data
            .suppliers
            .find(&fiscal_digits(&input.supplier_vat_code))
            .cloned()
            .ok_or_else(|| {
                business(format!(
                    "Furnizorul cu codul fiscal {} nu exista",
                    input.supplier_vat_code
                ))
            })?;
        if !self.warehouses.contains(&input.warehouse) {
            return Err(business(format!("Gestiunea {} nu exista", input.warehouse)));
        }
        if input.lines.is_empty() {
            return Err(business("Nota de receptie nu are produse"));
        }
        for line in &input.lines {
            if data.products.key_of(&line.code).is_none() {
                return Err(business(format!(
                    "Produsul cu codul {} nu exista",
                    line.code
                )));
            }
            if line.quantity <= 0 {
                return Err(business(format!(
                    "Cantitatea receptionata din {} trebuie sa fie pozitiva",
                    line.code
                )));
            }
        }
        for line in &input.lines {
            let had = data
                .stock_level(&line.code, &input.warehouse)
                .map_or(0, |s| s.quantity);
            data.set_stock(&line.code, &input.warehouse, had + line.quantity, now);
        }
        let number = {
            let next = data
                .series_next
                .entry(RECEPTION_SERIES.to_owned())
                .or_insert(1);
            let n = *next;
            *next += 1;
            n
        };
        let mut note = Purchase {
            id: 0,
            series_name: RECEPTION_SERIES.to_owned(),
            number,
            supplier: PurchaseSupplier {
                id: supplier.id,
                name: supplier.name,
                vat_code: supplier.vat_code,
            },
            warehouse: input.warehouse,
            total: cents(
                input
                    .lines
                    .iter()
                    .map(|l| l.price * l.quantity as f64)
                    .sum(),
            ),
            lines: input.lines,
            updated_at: now,
        };
        data.purchases
            .save(None, &mut note, now)
            .expect("reception notes have no unique values");
        Ok(note)
    }
}

impl Listed for Purchase {
    const DRIFT: Drift = Drift::Never;

    resource::table!(purchases);

    fn keep(_list: &ListQuery) -> impl Fn(&Self) -> bool {
        |_| true
    }
}

impl Read for Purchase {
    fn missing(id: u64) -> ErpError {
        ErpError::Http(404, format!("Nota de receptie {id} nu exista"))
    }
}

pub(super) fn routes() -> Router<Arc<ErpState>> {
    Router::new()
        .route(
            "/api/purchases",
            get(resource::list::<Purchase>).post(create_purchase),
        )
        .route("/api/purchases/{id}", get(resource::read::<Purchase>))
}

async fn create_purchase(State(state): State<Arc<ErpState>>, body: Bytes) -> ErpResult {
    ok(state.receive(json_body(&body)?)?)
}

impl ErpHandle {
    /// Records goods received from a supplier, raising stock in `warehouse`; fails as the API
    /// would, changing nothing.
    pub fn receive_goods(
        &self,
        supplier_vat_code: &str,
        warehouse: &str,
        lines: &[(&str, i64, f64)],
    ) -> anyhow::Result<Purchase> {
        Ok(self.state.receive(PurchaseInput {
            supplier_vat_code: supplier_vat_code.to_owned(),
            warehouse: warehouse.to_owned(),
            lines: lines
                .iter()
                .map(|(code, quantity, price)| PurchaseLine {
                    code: (*code).to_owned(),
                    quantity: *quantity,
                    price: *price,
                })
                .collect(),
        })?)
    }

    /// Every reception note in creation order.
    pub fn purchases(&self) -> Vec<Purchase> {
        self.state.data.lock().unwrap().purchases.all()
    }
}
