//! Suppliers of the shop simulator (`/api/v2/suppliers`), for drop-shipping and product
//! sourcing. MerchantPro's documentation shows no suppliers resource (nor, as far as it was
//! read, a customers one): both are modelled on its product conventions — `data` envelope,
//! `meta.links.next` paging, `updated_after`, PATCH with `ignore_nonexistent_fields`, unknown
//! fields refused, validation errors as `{"error":{"name","message"}}`. A fiscal code is unique
//! whether or not it carries the `RO` prefix.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    ShopData, ShopError, ShopHandle, ShopResult, ShopState, body_object, finish_page,
    ignore_unknown, list_body, paging, parse_id, since,
};
use crate::sim::seed::fiscal_digits;
use crate::sim::server::{filter_key, query_get, query_pairs};
use crate::sim::table::{patch, record, rfc3339};

/// A shop supplier.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Supplier {
    pub id: u64,
    pub name: String,
    pub vat_code: String,
    pub email: String,
    pub phone: String,
    pub address: String,
    /// `active` or `inactive`.
    pub status: String,
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

record!(Supplier {
    fn set_key(&mut self, key: u64) {
        self.id = key;
    }

    fn unique(&self) -> Vec<String> {
        vec![fiscal_digits(&self.vat_code)]
    }
});

/// Fields of a POST or PATCH; absent fields are left as they are.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupplierInput {
    pub name: Option<String>,
    pub vat_code: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub address: Option<String>,
    pub status: Option<String>,
}

const FIELDS: &[&str] = &[
    "id",
    "name",
    "vat_code",
    "email",
    "phone",
    "address",
    "status",
    "updated_at",
];

fn supplier_input(mut body: Map<String, Value>, ignore: bool) -> Result<SupplierInput, ShopError> {
    if ignore {
        body.retain(|k, _| FIELDS.contains(&k.as_str()));
    }
    // Read-only fields a client may echo back.
    body.remove("id");
    body.remove("updated_at");
    serde_json::from_value(Value::Object(body))
        .map_err(|e| ShopError::validation(format!("invalid supplier: {e}")))
}

impl ShopData {
    /// Creates (`key` is `None`) or changes a supplier, keeping fiscal codes unique.
    pub(super) fn save_supplier(
        &mut self,
        key: Option<u64>,
        input: SupplierInput,
        now: DateTime<Utc>,
    ) -> Result<Supplier, ShopError> {
        let mut s = self
            .suppliers
            .draft(key, || Supplier {
                status: "active".to_owned(),
                ..Supplier::default()
            })
            .map_err(|k| ShopError::not_found("supplier", &k.to_string()))?;
        patch([
            (&mut s.name, input.name),
            (&mut s.vat_code, input.vat_code.map(|v| v.trim().to_owned())),
            (&mut s.email, input.email),
            (&mut s.phone, input.phone),
            (&mut s.address, input.address),
            (&mut s.status, input.status),
        ]);
        if s.name.trim().is_empty() {
            return Err(ShopError::validation("`name` is required"));
        }
        if !["active", "inactive"].contains(&s.status.as_str()) {
            return Err(ShopError::validation(format!(
                "`status` must be `active` or `inactive`, not `{}`",
                s.status
            )));
        }
        // Shops check what customers will see; ERPs take the address as typed.
        let email_ok = s.email.is_empty()
            || s.email.split_once('@').is_some_and(|(user, host)| {
                !user.is_empty() && host.contains('.') && !s.email.contains(char::is_whitespace)
            });
        if !email_ok {
            return Err(ShopError::validation(format!(
                "`email` `{}` is not a valid e-mail address",
                s.email
            )));
        }
        if fiscal_digits(&s.vat_code).is_empty() {
            return Err(ShopError::validation("`vat_code` is required"));
        }
        self.suppliers.save(key, &mut s, now).map_err(|_| {
            ShopError::validation(format!(
                "a supplier with vat_code `{}` already exists",
                s.vat_code
            ))
        })?;
        Ok(s)
    }
}

pub(super) async fn list_suppliers(
    State(state): State<Arc<ShopState>>,
    RawQuery(q): RawQuery,
) -> ShopResult {
    let pairs = query_pairs(q.as_deref());
    let paging = paging(&state, &pairs)?;
    let since = since(&pairs)?;
    let code = query_get(&pairs, "vat_code").map(fiscal_digits);
    let mut data = state.data.lock().unwrap();
    let page = data.suppliers.page(
        since,
        &filter_key(&pairs),
        (paging.page - 1) * paging.limit,
        paging.limit,
        |s| {
            code.as_ref()
                .is_none_or(|c| fiscal_digits(&s.vat_code) == *c)
        },
    );
    let (items, has_more, first) = finish_page(page, |s| {
        serde_json::to_value(s).expect("suppliers serialize")
    });
    state.core.drift(&mut data.suppliers, first);
    Ok(list_body(
        &state,
        "/api/v2/suppliers",
        &pairs,
        &paging,
        items,
        has_more,
    ))
}

pub(super) async fn get_supplier(
    State(state): State<Arc<ShopState>>,
    Path(id): Path<String>,
) -> ShopResult {
    let key = parse_id(&id, "supplier")?;
    let data = state.data.lock().unwrap();
    let s = data
        .suppliers
        .get(key)
        .ok_or_else(|| ShopError::not_found("supplier", &id))?;
    Ok(Json(json!({"data": s})).into_response())
}

pub(super) async fn create_supplier(
    State(state): State<Arc<ShopState>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ShopResult {
    let pairs = query_pairs(q.as_deref());
    let input = supplier_input(body_object(&body)?, ignore_unknown(&pairs))?;
    let now = state.core.now();
    let s = state.data.lock().unwrap().save_supplier(None, input, now)?;
    Ok((StatusCode::CREATED, Json(json!({"data": s}))).into_response())
}

pub(super) async fn patch_supplier(
    State(state): State<Arc<ShopState>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ShopResult {
    let pairs = query_pairs(q.as_deref());
    let key = parse_id(&id, "supplier")?;
    let input = supplier_input(body_object(&body)?, ignore_unknown(&pairs))?;
    let now = state.core.now();
    let s = state
        .data
        .lock()
        .unwrap()
        .save_supplier(Some(key), input, now)?;
    Ok(Json(json!({"data": s})).into_response())
}

impl ShopHandle {
    /// Every supplier in creation order.
    pub fn suppliers(&self) -> Vec<Supplier> {
        self.state.data.lock().unwrap().suppliers.all()
    }

    /// The supplier with this fiscal code (the `RO` prefix does not matter).
    pub fn supplier_by_vat(&self, vat_code: &str) -> Option<Supplier> {
        let data = self.state.data.lock().unwrap();
        data.suppliers.find(&fiscal_digits(vat_code)).cloned()
    }

    /// Adds a supplier as the merchant would in the admin.
    pub fn create_supplier(&self, input: SupplierInput) -> anyhow::Result<Supplier> {
        let now = self.state.core.now();
        let mut data = self.state.data.lock().unwrap();
        Ok(data.save_supplier(None, input, now)?)
    }

    /// Changes a supplier, bumping `updated_at`; fails as the API would.
    pub fn update_supplier(&self, id: u64, input: SupplierInput) -> anyhow::Result<Supplier> {
        let now = self.state.core.now();
        let mut data = self.state.data.lock().unwrap();
        Ok(data.save_supplier(Some(id), input, now)?)
    }
}
