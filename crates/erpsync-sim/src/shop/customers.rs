//! Customers of the shop simulator (`/api/v2/customers`), served by the generic routes
//! ([`super::resource`]); an e-mail is unique whatever its case.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::resource::Plain;
use super::{ShopData, ShopError, ShopHandle};
use crate::seed;
use crate::table::{Table, patch, record, rfc3339};

/// A shop customer.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Customer {
    pub id: u64,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub phone: String,
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

record!(Customer, id {
    fn unique(&self) -> Vec<String> {
        vec![Customer::lookup_form(&self.email)]
    }
});

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CustomerInput {
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    phone: Option<String>,
    #[serde(rename = "id")]
    _id: Option<Value>,
    #[serde(rename = "updated_at")]
    _updated_at: Option<Value>,
}

impl CustomerInput {
    fn new(email: &str, first_name: &str, last_name: &str, phone: &str) -> Self {
        CustomerInput {
            email: Some(email.to_owned()),
            first_name: Some(first_name.to_owned()),
            last_name: Some(last_name.to_owned()),
            phone: Some(phone.to_owned()),
            ..CustomerInput::default()
        }
    }
}

impl Plain for Customer {
    const NAME: &'static str = "customer";
    const PATH: &'static str = "/api/v2/customers";
    const FIELDS: &'static [&'static str] = &[
        "id",
        "email",
        "first_name",
        "last_name",
        "phone",
        "updated_at",
    ];
    const FILTER: &'static str = "email";
    type Input = CustomerInput;

    fn lookup_form(value: &str) -> String {
        value.to_lowercase()
    }

    fn table(data: &mut ShopData) -> &mut Table<Self> {
        &mut data.customers
    }

    fn save(
        data: &mut ShopData,
        key: Option<u64>,
        input: CustomerInput,
        now: DateTime<Utc>,
    ) -> Result<Customer, ShopError> {
        let mut c = data
            .customers
            .draft(key, Customer::default)
            .map_err(|k| ShopError::not_found("customer", &k.to_string()))?;
        patch([
            (&mut c.email, input.email.map(|v| v.trim().to_owned())),
            (&mut c.first_name, input.first_name),
            (&mut c.last_name, input.last_name),
            (&mut c.phone, input.phone),
        ]);
        if c.email.is_empty() {
            return Err(ShopError::validation("`email` is required"));
        }
        data.customers.save(key, &mut c, now).map_err(|_| {
            ShopError::validation(format!(
                "a customer with email `{}` already exists",
                c.email
            ))
        })?;
        Ok(c)
    }
}

impl ShopHandle {
    pub fn customers(&self) -> Vec<Customer> {
        self.state.data.lock().unwrap().customers.all()
    }

    pub fn customer_by_email(&self, email: &str) -> Option<Customer> {
        let data = self.state.data.lock().unwrap();
        data.customers.find(&email.to_lowercase()).cloned()
    }

    pub fn create_customer(
        &self,
        email: &str,
        first_name: &str,
        last_name: &str,
        phone: &str,
    ) -> anyhow::Result<Customer> {
        let input = CustomerInput::new(email, first_name, last_name, phone);
        Ok(self.state.save::<Customer>(None, input)?)
    }

    /// Adds `n` generated customers.
    pub fn seed_customers(&self, n: usize, seed: u64) {
        let now = self.state.core.now();
        let mut data = self.state.data.lock().unwrap();
        for p in seed::people(n, seed) {
            let input = CustomerInput::new(&p.email, &p.first_name, &p.last_name, &p.phone);
            let _ = Customer::save(&mut data, None, input, now);
        }
    }
}
