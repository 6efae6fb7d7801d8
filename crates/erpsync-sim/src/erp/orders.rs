//! Sales orders of the ERP simulator (`/api/orders`): numbered per series, with optional
//! idempotency keys, a client found or recorded on the way, listed through the shared routes
//! ([`super::resource`]); an accountant sets their status and AWB and issues their invoice
//! through the control API.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::clients::ClientInput;
use super::resource::{self, Drift, Listed};
use super::{ErpData, ErpError, ErpHandle, ErpResult, ErpState, bad, business, json_body, ok};
use crate::seed;
use crate::server::{ListQuery, cents};
use crate::table::{Table, record, rfc3339};

/// The client as carried on a sales order.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct OrderClient {
    pub id: u64,
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SalesLine {
    pub code: String,
    #[serde(default)]
    pub name: String,
    pub quantity: i64,
    /// Unit price with VAT.
    #[serde(default)]
    pub price: f64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Invoice {
    pub series: String,
    pub number: u64,
    pub url: String,
}

/// A sales order (the document a shop order becomes, or one taken by phone).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SalesOrder {
    pub id: u64,
    pub series_name: String,
    pub number: u64,
    /// The shop's order number; `None` for orders born in the ERP.
    pub reference: Option<String>,
    pub channel: String,
    /// `new`, `confirmed`, `invoiced`, `shipped`, `delivered` or `cancelled`.
    pub status: String,
    pub client: OrderClient,
    pub lines: Vec<SalesLine>,
    pub total: f64,
    pub currency: String,
    pub shipping: Value,
    pub awb: Option<String>,
    pub invoice: Option<Invoice>,
    pub idempotency_key: Option<String>,
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

record!(SalesOrder);

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderRequest {
    series_name: Option<String>,
    idempotency_key: Option<String>,
    reference: Option<String>,
    channel: Option<String>,
    client: Option<ClientInput>,
    lines: Vec<LineRequest>,
    shipping: Option<Value>,
    currency: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LineRequest {
    code: String,
    quantity: i64,
    price: Option<f64>,
    name: Option<String>,
}

impl ErpState {
    /// Creates a sales order, or returns the one created earlier with the same idempotency key
    /// (`true` in the second place).
    fn place_order(&self, req: OrderRequest) -> Result<(SalesOrder, bool), ErpError> {
        let now = self.core.now();
        let mut data = self.data.lock().unwrap();
        if let Some(key) = req.idempotency_key.as_ref().filter(|_| self.idempotency)
            && let Some(id) = data.idempotency.get(key)
        {
            return Ok((data.orders.get(*id).cloned().expect("indexed"), true));
        }
        let series = req
            .series_name
            .clone()
            .unwrap_or_else(|| self.series[0].clone());
        if !self.series.contains(&series) {
            return Err(business(format!("Seria {series} nu exista")));
        }
        if req.lines.is_empty() {
            return Err(bad("Comanda nu are produse"));
        }
        let mut lines = Vec::with_capacity(req.lines.len());
        for l in &req.lines {
            let p = data
                .products
                .find(&l.code)
                .ok_or_else(|| business(format!("Produsul cu codul {} nu exista", l.code)))?;
            if l.quantity <= 0 {
                return Err(business(format!(
                    "Cantitatea pentru produsul {} este invalida",
                    l.code
                )));
            }
            lines.push(SalesLine {
                code: l.code.clone(),
                name: l.name.clone().unwrap_or_else(|| p.name.clone()),
                quantity: l.quantity,
                price: l.price.unwrap_or(p.price),
            });
        }
        let client = match &req.client {
            None => return Err(business("Clientul lipseste")),
            Some(c) => {
                let found = match (c.id, &c.email) {
                    (Some(id), _) => Some(
                        data.clients
                            .get(id)
                            .cloned()
                            .ok_or_else(|| business(format!("Clientul cu id {id} nu exista")))?,
                    ),
                    (None, Some(email)) => data.clients.find(&email.to_lowercase()).cloned(),
                    (None, None) => None,
                };
                match found {
                    Some(c) => c,
                    // Like SmartBill's `saveToDb`: a named client not yet known is recorded.
                    None if c.name.as_ref().is_some_and(|n| !n.trim().is_empty()) => {
                        data.insert_client(c, now)?
                    }
                    None => return Err(business("Clientul nu exista")),
                }
            }
        };
        let number = {
            let next = data.series_next.entry(series.clone()).or_insert(1);
            let n = *next;
            *next += 1;
            n
        };
        let key = data.orders.next_key();
        let order = SalesOrder {
            id: key,
            series_name: series,
            number,
            reference: req.reference,
            channel: req.channel.unwrap_or_else(|| "online".to_owned()),
            status: "new".to_owned(),
            client: OrderClient {
                id: client.id,
                name: client.name,
                email: client.email,
            },
            total: cents(lines.iter().map(|l| l.quantity as f64 * l.price).sum()),
            lines,
            currency: req.currency.unwrap_or_else(|| "RON".to_owned()),
            shipping: req.shipping.unwrap_or(Value::Null),
            awb: None,
            invoice: None,
            idempotency_key: req.idempotency_key.clone(),
            created_at: now,
            updated_at: now,
        };
        if let Some(k) = req.idempotency_key {
            data.idempotency.insert(k, key);
        }
        data.orders.insert(key, order.clone());
        Ok((order, false))
    }
}

fn order_json(o: &SalesOrder, duplicate: Option<bool>) -> Value {
    let mut v = serde_json::to_value(o).expect("orders serialize");
    if let Some(d) = duplicate {
        v["duplicate"] = Value::Bool(d);
    }
    v
}

async fn create_order(State(state): State<Arc<ErpState>>, body: Bytes) -> ErpResult {
    let req: OrderRequest = json_body(&body)?;
    let (order, duplicate) = state.place_order(req)?;
    ok(order_json(&order, Some(duplicate)))
}

impl Listed for SalesOrder {
    const DRIFT: Drift = Drift::WhenMore;

    resource::table!(orders);

    /// Filters on `reference` and `status`.
    fn keep(list: &ListQuery) -> impl Fn(&Self) -> bool {
        let reference = list.get("reference").map(str::to_owned);
        let status = list.get("status").map(str::to_owned);
        move |o| {
            reference
                .as_ref()
                .is_none_or(|r| o.reference.as_ref() == Some(r))
                && status.as_ref().is_none_or(|s| o.status == *s)
        }
    }
}

/// Orders are read by an id that may not be a number (then not found).
pub(super) fn routes() -> Router<Arc<ErpState>> {
    Router::new()
        .route(
            "/api/orders",
            get(resource::list::<SalesOrder>).post(create_order),
        )
        .route("/api/orders/{id}", get(get_order))
}

async fn get_order(State(state): State<Arc<ErpState>>, Path(id): Path<String>) -> ErpResult {
    let data = state.data.lock().unwrap();
    let o = id
        .parse::<u64>()
        .ok()
        .and_then(|k| data.orders.get(k))
        .ok_or_else(|| ErpError::Http(404, format!("Comanda {id} nu exista")))?;
    ok(order_json(o, None))
}

/// An accountant's change to a sales order through the control API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SalesOrderEdit {
    pub status: Option<String>,
    pub awb: Option<String>,
    /// Issue the invoice (status becomes `invoiced`).
    #[serde(default)]
    pub invoice: bool,
    pub lines: Option<Vec<SalesLine>>,
}

/// A sales order born in the ERP (phone, counter), with no shop reference.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErpOrderDraft {
    #[serde(default = "phone")]
    pub channel: String,
    pub client_name: String,
    pub client_email: String,
    /// (code, quantity); prices come from the products.
    pub lines: Vec<(String, i64)>,
    #[serde(default)]
    pub series: Option<String>,
}

fn phone() -> String {
    "phone".to_owned()
}

/// `POST /__sim/orders/{id}` (an accountant's [`SalesOrderEdit`]) and `POST /__sim/orders`
/// (an [`ErpOrderDraft`] born in the ERP).
pub(super) fn control_routes() -> Router<Arc<ErpState>> {
    Router::new()
        .route(
            "/__sim/orders/{id}",
            post(
                |State(state): State<Arc<ErpState>>,
                 Path(id): Path<u64>,
                 Json(edit): Json<SalesOrderEdit>| async move {
                    match state.edit_order(id, edit) {
                        Some(o) => ok(order_json(&o, None)),
                        None => Err(ErpError::Http(404, format!("Comanda {id} nu exista"))),
                    }
                },
            ),
        )
        .route(
            "/__sim/orders",
            post(
                |State(state): State<Arc<ErpState>>, Json(draft): Json<ErpOrderDraft>| async move {
                    let (o, _) = state.place_order(draft_request(draft))?;
                    ok(order_json(&o, None))
                },
            ),
        )
}

fn draft_request(d: ErpOrderDraft) -> OrderRequest {
    OrderRequest {
        series_name: d.series,
        channel: Some(d.channel),
        client: Some(ClientInput {
            name: Some(d.client_name),
            email: Some(d.client_email),
            ..ClientInput::default()
        }),
        lines: d
            .lines
            .into_iter()
            .map(|(code, quantity)| LineRequest {
                code,
                quantity,
                price: None,
                name: None,
            })
            .collect(),
        ..OrderRequest::default()
    }
}

impl ErpState {
    fn change_order(
        &self,
        id: u64,
        f: impl FnOnce(&mut SalesOrder, &mut u64),
    ) -> Option<SalesOrder> {
        let now = self.core.now();
        let mut data = self.data.lock().unwrap();
        let mut invoice_next = data.invoice_next;
        data.orders
            .try_update(id, now, |o| {
                f(o, &mut invoice_next);
                Ok::<_, ()>(())
            })?
            .ok()?;
        data.invoice_next = invoice_next;
        data.orders.get(id).cloned()
    }

    fn edit_order(&self, id: u64, edit: SalesOrderEdit) -> Option<SalesOrder> {
        let base = self.core.base_url.clone();
        let series = self.invoice_series.clone();
        self.change_order(id, |o, invoice_next| {
            if let Some(s) = edit.status {
                o.status = s;
            }
            if edit.awb.is_some() {
                o.awb = edit.awb;
            }
            if let Some(lines) = edit.lines {
                o.total = cents(lines.iter().map(|l| l.quantity as f64 * l.price).sum());
                o.lines = lines;
            }
            if edit.invoice && o.invoice.is_none() {
                let number = *invoice_next;
                *invoice_next += 1;
                o.invoice = Some(Invoice {
                    url: format!("{base}/invoices/{series}/{number}"),
                    series,
                    number,
                });
                o.status = "invoiced".to_owned();
            }
        })
    }
}

impl ErpHandle {
    pub fn order(&self, id: u64) -> Option<SalesOrder> {
        self.state.data.lock().unwrap().orders.get(id).cloned()
    }

    /// Every sales order in creation order.
    pub fn orders(&self) -> Vec<SalesOrder> {
        self.state.data.lock().unwrap().orders.all()
    }

    /// Sales orders carrying this shop reference (more than one means a duplicate export).
    pub fn orders_by_reference(&self, reference: &str) -> Vec<SalesOrder> {
        let data = self.state.data.lock().unwrap();
        data.orders
            .iter()
            .filter(|(_, o)| o.reference.as_deref() == Some(reference))
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Creates an order born in the ERP (no shop reference).
    pub fn create_order(&self, draft: ErpOrderDraft) -> anyhow::Result<SalesOrder> {
        Ok(self.state.place_order(draft_request(draft))?.0)
    }

    /// Changes an order as an accountant would, bumping `updatedAt`.
    pub fn update_order(&self, id: u64, f: impl FnOnce(&mut SalesOrder)) -> Option<SalesOrder> {
        self.state.change_order(id, |o, _| f(o))
    }

    pub fn set_order_status(&self, id: u64, status: &str) -> Option<SalesOrder> {
        self.update_order(id, |o| o.status = status.to_owned())
    }

    pub fn set_awb(&self, id: u64, awb: &str) -> Option<SalesOrder> {
        self.update_order(id, |o| o.awb = Some(awb.to_owned()))
    }

    /// Issues the invoice (next number of the invoice series) and marks the order invoiced;
    /// an order already invoiced keeps its invoice.
    pub fn issue_invoice(&self, id: u64) -> Option<SalesOrder> {
        self.state.edit_order(
            id,
            SalesOrderEdit {
                invoice: true,
                ..SalesOrderEdit::default()
            },
        )
    }

    /// Replaces the lines (and the total) of an order.
    pub fn set_order_lines(&self, id: u64, lines: Vec<SalesLine>) -> Option<SalesOrder> {
        self.state.edit_order(
            id,
            SalesOrderEdit {
                lines: Some(lines),
                ..SalesOrderEdit::default()
            },
        )
    }

    /// Adds `n` orders born in the ERP (phone orders) over the products present, seeding a
    /// small catalogue first when there is none.
    pub fn seed_orders(&self, n: usize, seed: u64) -> Vec<SalesOrder> {
        if self.product_count() == 0 {
            self.seed_products(20, seed);
        }
        let codes: Vec<String> = {
            let data = self.state.data.lock().unwrap();
            data.products
                .iter()
                .take(1000)
                .map(|(_, p)| p.code.clone())
                .collect()
        };
        let people = seed::people(n.clamp(1, 50), seed);
        let mut rng = StdRng::seed_from_u64(seed ^ 0x0e_4de4);
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let person = &people[i % people.len()];
            let draft = ErpOrderDraft {
                channel: "phone".to_owned(),
                client_name: format!("{} {}", person.first_name, person.last_name),
                client_email: person.email.clone(),
                lines: seed::order_lines(&mut rng, codes.len())
                    .into_iter()
                    .map(|(j, q)| (codes[j].clone(), q))
                    .collect(),
                series: None,
            };
            if let Ok(o) = self.create_order(draft) {
                out.push(o);
            }
        }
        out
    }
}
