//! Suppliers of the shop simulator (`/api/v2/suppliers`), for drop-shipping and product
//! sourcing. MerchantPro's documentation shows no suppliers resource (nor, as far as it was
//! read, a customers one): both are modelled on its product conventions — `data` envelope,
//! `meta.links.next` paging, `updated_after`, PATCH with `ignore_nonexistent_fields`, unknown
//! fields refused, validation errors as `{"error":{"name","message"}}` — and served by the same
//! routes as customers ([`super::resource`]). A fiscal code is unique whether or not it carries
//! the `RO` prefix.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::resource::Plain;
use super::{ShopData, ShopError, ShopHandle};
use crate::seed::fiscal_digits;
use crate::table::{Table, patch, record, rfc3339};

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

record!(Supplier, id {
    fn unique(&self) -> Vec<String> {
        vec![Supplier::lookup_form(&self.vat_code)]
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

impl Plain for Supplier {
    const NAME: &'static str = "supplier";
    const PATH: &'static str = "/api/v2/suppliers";
    const FIELDS: &'static [&'static str] = &[
        "id",
        "name",
        "vat_code",
        "email",
        "phone",
        "address",
        "status",
        "updated_at",
    ];
    /// A fiscal code is found with or without its `RO` prefix.
    const FILTER: &'static str = "vat_code";
    type Input = SupplierInput;

    fn lookup_form(value: &str) -> String {
        fiscal_digits(value)
    }

    fn table(data: &mut ShopData) -> &mut Table<Self> {
        &mut data.suppliers
    }

    /// Keeps fiscal codes unique.
    fn save(
        data: &mut ShopData,
        key: Option<u64>,
        input: SupplierInput,
        now: DateTime<Utc>,
    ) -> Result<Supplier, ShopError> {
        let mut s = data
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
        data.suppliers.save(key, &mut s, now).map_err(|_| {
            ShopError::validation(format!(
                "a supplier with vat_code `{}` already exists",
                s.vat_code
            ))
        })?;
        Ok(s)
    }
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
        Ok(self.state.save::<Supplier>(None, input)?)
    }

    /// Changes a supplier, bumping `updated_at`; fails as the API would.
    pub fn update_supplier(&self, id: u64, input: SupplierInput) -> anyhow::Result<Supplier> {
        Ok(self.state.save::<Supplier>(Some(id), input)?)
    }
}
