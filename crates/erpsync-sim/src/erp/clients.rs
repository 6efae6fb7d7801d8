//! Clients of the ERP simulator (`/api/clients`), listed through the shared routes
//! ([`super::resource`]) and created alone or with a sales order; an e-mail is unique whatever
//! its case.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::resource::{self, Drift, Listed};
use super::{ErpData, ErpError, ErpHandle, ErpResult, ErpState, business, json_body, ok};
use crate::server::ListQuery;
use crate::table::{Table, record, rfc3339};

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Client {
    pub id: u64,
    pub name: String,
    pub email: String,
    pub phone: String,
    pub vat_code: String,
    pub address: String,
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

record!(Client, id {
    /// Its e-mail, when it has one: clients without one are many.
    fn unique(&self) -> Vec<String> {
        if self.email.is_empty() {
            Vec::new()
        } else {
            vec![self.email.to_lowercase()]
        }
    }
});

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ClientInput {
    pub id: Option<u64>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub vat_code: Option<String>,
    pub address: Option<String>,
}

impl ErpData {
    pub(super) fn insert_client(
        &mut self,
        input: &ClientInput,
        now: DateTime<Utc>,
    ) -> Result<Client, ErpError> {
        let name = input.name.clone().unwrap_or_default();
        if name.trim().is_empty() {
            return Err(business("Numele clientului lipseste"));
        }
        let mut c = Client {
            id: 0,
            name,
            email: input.email.clone().unwrap_or_default(),
            phone: input.phone.clone().unwrap_or_default(),
            vat_code: input.vat_code.clone().unwrap_or_default(),
            address: input.address.clone().unwrap_or_default(),
            updated_at: now,
        };
        self.clients
            .save(None, &mut c, now)
            .map_err(|_| business(format!("Clientul cu emailul {} exista deja", c.email)))?;
        Ok(c)
    }
}

impl Listed for Client {
    const DRIFT: Drift = Drift::Never;

    resource::table!(clients);

    /// Filters on `email`, whatever its case.
    fn keep(list: &ListQuery) -> impl Fn(&Self) -> bool {
        let email = list.get("email").map(str::to_lowercase);
        move |c| email.as_ref().is_none_or(|e| c.email.to_lowercase() == *e)
    }
}

pub(super) fn routes() -> Router<Arc<ErpState>> {
    Router::new().route(
        "/api/clients",
        get(resource::list::<Client>).post(create_client),
    )
}

async fn create_client(State(state): State<Arc<ErpState>>, body: Bytes) -> ErpResult {
    let input: ClientInput = json_body(&body)?;
    let now = state.core.now();
    let c = state.data.lock().unwrap().insert_client(&input, now)?;
    ok(c)
}

impl ErpHandle {
    pub fn clients(&self) -> Vec<Client> {
        self.state.data.lock().unwrap().clients.all()
    }

    pub fn client_by_email(&self, email: &str) -> Option<Client> {
        let data = self.state.data.lock().unwrap();
        data.clients.find(&email.to_lowercase()).cloned()
    }
}
