//! Suppliers of the ERP simulator: the partners goods are bought from, known by their fiscal
//! code (CUI, with or without the `RO` prefix of VAT payers). Listed like every other
//! resource (modification order, `updatedAfter`, offset paging); a fiscal code is unique, and
//! a business error (HTTP 200 with `errorText`) answers a missing name, a malformed code or a
//! code already in use.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::resource::{self, Drift, Listed, Read};
use super::{ErpData, ErpError, ErpHandle, ErpResult, ErpState, business, json_body, ok};
use crate::seed::{self, fiscal_digits};
use crate::server::ListQuery;
use crate::table::{Table, patch, record, rfc3339};

/// A supplier of the ERP.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Supplier {
    pub id: u64,
    pub name: String,
    /// Fiscal code as entered, e.g. `RO12345678`.
    pub vat_code: String,
    /// Trade-register number (`J40/123/2020`).
    pub reg_com: String,
    pub address: String,
    pub email: String,
    pub phone: String,
    pub iban: String,
    pub active: bool,
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

record!(Supplier, id {
    fn unique(&self) -> Vec<String> {
        vec![fiscal_digits(&self.vat_code)]
    }
});

/// Supplier fields of a POST or PUT; absent fields are left as they are.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupplierInput {
    pub name: Option<String>,
    pub vat_code: Option<String>,
    pub reg_com: Option<String>,
    pub address: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub iban: Option<String>,
    pub active: Option<bool>,
}

impl ErpState {
    /// Creates (`key` is `None`) or changes a supplier, keeping fiscal codes unique.
    fn save_supplier(&self, key: Option<u64>, input: SupplierInput) -> Result<Supplier, ErpError> {
        let now = self.core.now();
        let mut data = self.data.lock().unwrap();
        let mut s = data
            .suppliers
            .draft(key, || Supplier {
                active: true,
                ..Supplier::default()
            })
            .map_err(|k| ErpError::Http(404, format!("Furnizorul {k} nu exista")))?;
        patch([
            (&mut s.name, input.name),
            (
                &mut s.vat_code,
                input.vat_code.map(|v| v.trim().to_uppercase()),
            ),
            (&mut s.reg_com, input.reg_com),
            (&mut s.address, input.address),
            (&mut s.email, input.email),
            (&mut s.phone, input.phone),
            (&mut s.iban, input.iban),
        ]);
        if let Some(v) = input.active {
            s.active = v;
        }
        if s.name.trim().is_empty() {
            return Err(business("Numele furnizorului lipseste"));
        }
        let digits = fiscal_digits(&s.vat_code);
        let well_formed = s.vat_code.strip_prefix("RO").unwrap_or(&s.vat_code).trim() == digits
            && (2..=10).contains(&digits.len());
        if !well_formed {
            return Err(business(format!(
                "Codul fiscal `{}` al furnizorului este invalid",
                s.vat_code
            )));
        }
        data.suppliers.save(key, &mut s, now).map_err(|_| {
            business(format!(
                "Furnizorul cu codul fiscal {} exista deja",
                s.vat_code
            ))
        })?;
        Ok(s)
    }
}

impl Listed for Supplier {
    /// Unlike the other lists, this one drifts its first row on the last page too.
    const DRIFT: Drift = Drift::Always;

    resource::table!(suppliers);

    /// Searching by fiscal code ignores the `RO` prefix, as the ERP's own search does.
    fn keep(list: &ListQuery) -> impl Fn(&Self) -> bool {
        let code = list.get("vatCode").map(fiscal_digits);
        move |s| {
            code.as_ref()
                .is_none_or(|c| fiscal_digits(&s.vat_code) == *c)
        }
    }
}

impl Read for Supplier {
    fn missing(id: u64) -> ErpError {
        ErpError::Http(404, format!("Furnizorul {id} nu exista"))
    }
}

pub(super) fn routes() -> Router<Arc<ErpState>> {
    Router::new()
        .route(
            "/api/suppliers",
            get(resource::list::<Supplier>).post(create_supplier),
        )
        .route(
            "/api/suppliers/{id}",
            get(resource::read::<Supplier>).put(put_supplier),
        )
}

async fn create_supplier(State(state): State<Arc<ErpState>>, body: Bytes) -> ErpResult {
    ok(state.save_supplier(None, json_body(&body)?)?)
}

async fn put_supplier(
    State(state): State<Arc<ErpState>>,
    Path(id): Path<u64>,
    body: Bytes,
) -> ErpResult {
    ok(state.save_supplier(Some(id), json_body(&body)?)?)
}

impl ErpHandle {
    /// Every supplier in creation order.
    pub fn suppliers(&self) -> Vec<Supplier> {
        self.state.data.lock().unwrap().suppliers.all()
    }

    /// The supplier with this fiscal code (the `RO` prefix does not matter).
    pub fn supplier_by_vat(&self, vat_code: &str) -> Option<Supplier> {
        let data = self.state.data.lock().unwrap();
        data.suppliers.find(&fiscal_digits(vat_code)).cloned()
    }

    /// Adds a supplier as a purchasing clerk would.
    pub fn create_supplier(&self, input: SupplierInput) -> anyhow::Result<Supplier> {
        Ok(self.state.save_supplier(None, input)?)
    }

    /// Changes a supplier, bumping `updatedAt`; fails as the API would (duplicate or malformed
    /// fiscal code, no name).
    pub fn update_supplier(&self, id: u64, input: SupplierInput) -> anyhow::Result<Supplier> {
        Ok(self.state.save_supplier(Some(id), input)?)
    }

    /// Adds `n` generated suppliers (fiscal codes already present are skipped).
    pub fn seed_suppliers(&self, n: usize, seed: u64) -> Vec<Supplier> {
        seed::companies(n, seed)
            .into_iter()
            .filter_map(|c| {
                self.create_supplier(SupplierInput {
                    name: Some(c.name),
                    vat_code: Some(c.vat_code),
                    address: Some(c.address),
                    email: Some(c.email),
                    phone: Some(c.phone),
                    ..SupplierInput::default()
                })
                .ok()
            })
            .collect()
    }
}
