//! Orders of the shop simulator (`/api/v2/orders`), on the generic routes
//! ([`super::resource`]) with their own hooks: a shipping state machine, a lock that keeps an
//! exported order's lines, customer and addresses (the ERP writes through it with
//! `override_lock=1`), numbers handed out in sequence, and the `order.created` and
//! `order.status_changed` webhooks; also the lock route and the control route.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::post;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::products::ProductType;
use super::resource::{self, Listed, Resource, Write, finish_page, project};
use super::{ShopData, ShopError, ShopHandle, ShopResult, ShopState, ok};
use crate::seed;
use crate::server::{ListQuery, cents, query_get};
use crate::table::{Table, patch, record, rfc3339};

/// The customer block of an order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OrderCustomer {
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub phone: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Address {
    pub first_name: String,
    pub last_name: String,
    pub company: String,
    pub address: String,
    pub city: String,
    pub county: String,
    pub country: String,
    pub zip: String,
    pub phone: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    #[serde(default)]
    pub name: String,
    pub quantity: i64,
    #[serde(default)]
    pub unit_price_gross: f64,
}

/// A shop order.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Order {
    pub id: String,
    pub number: String,
    pub channel_name: String,
    pub shipping_status: String,
    pub payment_status: String,
    pub payment_method_code: String,
    pub customer: OrderCustomer,
    pub billing_address: Address,
    pub shipping_address: Address,
    pub lines: Vec<OrderLine>,
    pub total_gross: f64,
    pub awb: Option<String>,
    pub invoice_number: Option<String>,
    pub invoice_url: Option<String>,
    pub locked: bool,
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl Order {
    /// An awaiting, unpaid web order with these lines (SKU, quantity, unit gross price).
    pub fn new(email: &str, lines: &[(&str, i64, f64)]) -> Self {
        Order {
            channel_name: "web".to_owned(),
            shipping_status: "awaiting".to_owned(),
            payment_status: "awaiting".to_owned(),
            payment_method_code: "cash_delivery".to_owned(),
            customer: OrderCustomer {
                email: email.to_owned(),
                ..OrderCustomer::default()
            },
            lines: lines
                .iter()
                .map(|(sku, quantity, price)| OrderLine {
                    sku: (*sku).to_owned(),
                    name: (*sku).to_owned(),
                    quantity: *quantity,
                    unit_price_gross: *price,
                })
                .collect(),
            ..Order::default()
        }
    }
}

record!(Order);

/// The shipping statuses in the order they are reached.
const SHIPPING_FLOW: &[&str] = &[
    "awaiting",
    "confirmed",
    "in_process",
    "shipped",
    "delivered",
];
const SHIPPING_OTHER: &[&str] = &["returned", "cancelled"];
/// Both spellings of cancelled appear in MerchantPro's own documentation.
const PAYMENT_STATUSES: &[&str] = &[
    "temporary",
    "awaiting",
    "paid",
    "failed",
    "canceled",
    "cancelled",
    "refunded",
    "rejected",
];

/// Whether the shop accepts a shipping status change: forward along the flow (steps may be
/// skipped, as a poller that misses one would need), cancelled before shipping, returned after.
fn shipping_transition_allowed(from: &str, to: &str) -> bool {
    if from == to {
        return true;
    }
    let rank = |s: &str| SHIPPING_FLOW.iter().position(|x| *x == s);
    match (rank(from), to) {
        (Some(a), "cancelled") => a < 3,
        (Some(a), "returned") => a >= 3,
        (Some(a), to) => rank(to).is_some_and(|b| b > a),
        (None, _) => false,
    }
}

/// Fields of an order POST or PATCH.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderInput {
    number: Option<String>,
    channel_name: Option<String>,
    shipping_status: Option<String>,
    payment_status: Option<String>,
    payment_method_code: Option<String>,
    customer: Option<OrderCustomer>,
    billing_address: Option<Address>,
    shipping_address: Option<Address>,
    lines: Option<Vec<OrderLine>>,
    awb: Option<String>,
    invoice_number: Option<String>,
    invoice_url: Option<String>,
    // Read-only: accepted and ignored, so a client may send back what it read.
    #[serde(rename = "id")]
    _id: Option<Value>,
    #[serde(rename = "total_gross")]
    _total_gross: Option<Value>,
    #[serde(rename = "locked")]
    _locked: Option<Value>,
    #[serde(rename = "created_at")]
    _created_at: Option<Value>,
    #[serde(rename = "updated_at")]
    _updated_at: Option<Value>,
}

const ORDER_FIELDS: &[&str] = &[
    "id",
    "number",
    "channel_name",
    "shipping_status",
    "payment_status",
    "payment_method_code",
    "customer",
    "billing_address",
    "shipping_address",
    "lines",
    "total_gross",
    "awb",
    "invoice_number",
    "invoice_url",
    "locked",
    "created_at",
    "updated_at",
];

/// What changed in an order that a webhook reports.
struct StatusChange {
    created: bool,
    changed: bool,
}

fn total(lines: &[OrderLine]) -> f64 {
    cents(
        lines
            .iter()
            .map(|l| l.quantity as f64 * l.unit_price_gross)
            .sum(),
    )
}

fn check_lines(lines: &[OrderLine]) -> Result<(), ShopError> {
    if lines.is_empty() {
        return Err(ShopError::validation("an order needs at least one line"));
    }
    if let Some(l) = lines.iter().find(|l| l.quantity <= 0 || l.sku.is_empty()) {
        return Err(ShopError::validation(format!(
            "line `{}` needs a SKU and a positive quantity",
            l.sku
        )));
    }
    Ok(())
}

/// Applies an API change to an order, enforcing the state machine and the lock. The lock
/// keeps the merchant from editing an exported order; the ERP, which owns it from then on,
/// writes through it with `override_lock`.
fn apply_order(o: &mut Order, input: OrderInput, override_lock: bool) -> Result<(), ShopError> {
    if o.locked && !override_lock {
        let blocked = [
            ("lines", input.lines.as_ref().is_some_and(|l| *l != o.lines)),
            (
                "customer",
                input.customer.as_ref().is_some_and(|c| *c != o.customer),
            ),
            (
                "billing_address",
                input
                    .billing_address
                    .as_ref()
                    .is_some_and(|a| *a != o.billing_address),
            ),
            (
                "shipping_address",
                input
                    .shipping_address
                    .as_ref()
                    .is_some_and(|a| *a != o.shipping_address),
            ),
        ];
        if let Some((field, _)) = blocked.iter().find(|(_, b)| *b) {
            return Err(ShopError::validation(format!(
                "order {} is locked: `{field}` cannot change",
                o.number
            )));
        }
    }
    if let Some(s) = input.shipping_status {
        if !SHIPPING_FLOW.contains(&s.as_str()) && !SHIPPING_OTHER.contains(&s.as_str()) {
            return Err(ShopError::validation(format!(
                "unknown shipping_status `{s}`"
            )));
        }
        if !shipping_transition_allowed(&o.shipping_status, &s) {
            return Err(ShopError::validation(format!(
                "shipping_status cannot go from `{}` to `{s}`",
                o.shipping_status
            )));
        }
        o.shipping_status = s;
    }
    if let Some(s) = input.payment_status {
        if !PAYMENT_STATUSES.contains(&s.as_str()) {
            return Err(ShopError::validation(format!(
                "unknown payment_status `{s}`"
            )));
        }
        o.payment_status = s;
    }
    if let Some(lines) = input.lines {
        check_lines(&lines)?;
        o.lines = lines;
        o.total_gross = total(&o.lines);
    }
    patch([
        (&mut o.number, input.number),
        (&mut o.channel_name, input.channel_name),
        (&mut o.payment_method_code, input.payment_method_code),
    ]);
    if let Some(v) = input.customer {
        o.customer = v;
    }
    patch([
        (&mut o.billing_address, input.billing_address),
        (&mut o.shipping_address, input.shipping_address),
    ]);
    o.set_documents(input.awb, input.invoice_number, input.invoice_url);
    Ok(())
}

impl Order {
    /// Sets the AWB and the invoice fields that are given; the others keep their value.
    fn set_documents(
        &mut self,
        awb: Option<String>,
        invoice_number: Option<String>,
        invoice_url: Option<String>,
    ) {
        patch([
            (&mut self.awb, awb.map(Some)),
            (&mut self.invoice_number, invoice_number.map(Some)),
            (&mut self.invoice_url, invoice_url.map(Some)),
        ]);
    }
}

impl ShopData {
    fn insert_order(&mut self, mut o: Order, now: DateTime<Utc>) -> Result<Order, ShopError> {
        check_lines(&o.lines)?;
        if o.customer.email.trim().is_empty() {
            return Err(ShopError::validation("`customer.email` is required"));
        }
        if o.number.is_empty() {
            while self
                .order_numbers
                .contains_key(&self.next_order_number.to_string())
            {
                self.next_order_number += 1;
            }
            o.number = self.next_order_number.to_string();
            self.next_order_number += 1;
        } else if self.order_numbers.contains_key(&o.number) {
            return Err(ShopError::validation(format!(
                "an order with number `{}` already exists",
                o.number
            )));
        }
        for (field, default) in [
            (&mut o.shipping_status, "awaiting"),
            (&mut o.payment_status, "awaiting"),
            (&mut o.channel_name, "web"),
        ] {
            if field.is_empty() {
                *field = default.to_owned();
            }
        }
        let key = self.orders.next_key();
        o.id = key.to_string();
        o.total_gross = total(&o.lines);
        o.created_at = now;
        o.updated_at = now;
        self.order_numbers.insert(o.number.clone(), key);
        self.orders.insert(key, o.clone());
        Ok(o)
    }
}

fn order_key(data: &ShopData, id: &str) -> Result<u64, ShopError> {
    id.parse::<u64>()
        .ok()
        .filter(|k| data.orders.get(*k).is_some())
        .ok_or_else(|| ShopError::not_found("order", id))
}

impl ShopState {
    fn notify(&self, o: &Order, change: StatusChange) {
        if !change.created && !change.changed {
            return;
        }
        let event = if change.created {
            "order.created"
        } else {
            "order.status_changed"
        };
        let payload = json!({
            "event": event,
            "id": o.id,
            "number": o.number,
            "shipping_status": o.shipping_status,
            "payment_status": o.payment_status,
            "occurred_at": self.core.clock.now().to_rfc3339_opts(SecondsFormat::Millis, true),
        });
        let duplicate = self.core.faults.get().duplicate_webhooks;
        self.webhooks.send(event, &payload, duplicate);
    }

    fn change_order(
        &self,
        key: u64,
        f: impl FnOnce(&mut Order) -> Result<(), ShopError>,
    ) -> Result<Order, ShopError> {
        let now = self.core.now();
        let (order, changed) = {
            let mut data = self.data.lock().unwrap();
            let before = data
                .orders
                .get(key)
                .cloned()
                .ok_or_else(|| ShopError::not_found("order", &key.to_string()))?;
            data.orders
                .try_update(key, now, f)
                .expect("the order exists")?;
            let after = data.orders.get(key).cloned().expect("the order exists");
            let changed = before.shipping_status != after.shipping_status
                || before.payment_status != after.payment_status;
            (after, changed)
        };
        self.notify(
            &order,
            StatusChange {
                created: false,
                changed,
            },
        );
        Ok(order)
    }

    fn add_order(&self, o: Order) -> Result<Order, ShopError> {
        let now = self.core.now();
        let order = self.data.lock().unwrap().insert_order(o, now)?;
        self.notify(
            &order,
            StatusChange {
                created: true,
                changed: false,
            },
        );
        Ok(order)
    }
}

impl Resource for Order {
    const NAME: &'static str = "order";
    const PATH: &'static str = "/api/v2/orders";

    fn table(data: &mut ShopData) -> &mut Table<Self> {
        &mut data.orders
    }

    /// Filters on `shipping_status` and `payment_status` (each a comma-separated list);
    /// `fields` picks what is shown.
    fn page(list: &ListQuery, table: &Table<Self>) -> Listed {
        let shipping = list.get("shipping_status");
        let payment = list.get("payment_status");
        let fields = list.get("fields");
        let page = list.page(table, |o| {
            shipping.is_none_or(|s| s.split(',').any(|x| x == o.shipping_status))
                && payment.is_none_or(|s| s.split(',').any(|x| x == o.payment_status))
        });
        finish_page(page, |o, list| match fields {
            None => list.push(o),
            Some(_) => list.push(&project(
                serde_json::to_value(o).expect("orders serialize"),
                fields,
            )),
        })
    }

    /// A new order may start in any status (it was born elsewhere): no transition check.
    fn create(state: &ShopState, req: &Write) -> Result<Self, ShopError> {
        let input: OrderInput = req.input(ORDER_FIELDS, Self::NAME)?;
        let mut o = Order::default();
        if let Some(s) = &input.shipping_status
            && !SHIPPING_FLOW.contains(&s.as_str())
            && !SHIPPING_OTHER.contains(&s.as_str())
        {
            return Err(ShopError::validation(format!(
                "unknown shipping_status `{s}`"
            )));
        }
        o.shipping_status = input.shipping_status.clone().unwrap_or_default();
        apply_order(
            &mut o,
            OrderInput {
                shipping_status: None,
                ..input
            },
            false,
        )?;
        state.add_order(o)
    }

    /// Enforces the state machine and, unless `override_lock=1`, the lock.
    fn change(state: &ShopState, id: &str, req: &Write) -> Result<Self, ShopError> {
        let input: OrderInput = req.input(ORDER_FIELDS, Self::NAME)?;
        let key = order_key(&state.data.lock().unwrap(), id)?;
        let override_lock = query_get(&req.pairs, "override_lock").is_some_and(|v| v == "1");
        state.change_order(key, |o| apply_order(o, input, override_lock))
    }
}

/// The generic routes, and `POST /api/v2/orders/{id}/lock`.
pub(super) fn routes() -> Router<Arc<ShopState>> {
    resource::routes::<Order>().route("/api/v2/orders/{id}/lock", post(lock_order))
}

async fn lock_order(State(state): State<Arc<ShopState>>, Path(id): Path<String>) -> ShopResult {
    let key = order_key(&state.data.lock().unwrap(), &id)?;
    let o = state.change_order(key, |o| {
        o.locked = true;
        Ok(())
    })?;
    ok(o)
}

/// A merchant's change to an order through the control API: any status (no state machine, no
/// lock), AWB and invoice fields.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrderEdit {
    pub shipping_status: Option<String>,
    pub payment_status: Option<String>,
    pub awb: Option<String>,
    pub invoice_number: Option<String>,
    pub invoice_url: Option<String>,
}

/// `POST /__sim/orders/{id}`: a merchant's change ([`OrderEdit`]).
pub(super) fn control_routes() -> Router<Arc<ShopState>> {
    resource::edit_route("/__sim/orders/{id}", |state, id, edit: OrderEdit| {
        let key = order_key(&state.data.lock().unwrap(), id)?;
        state.change_order(key, |o| {
            edit_order(o, edit);
            Ok(())
        })
    })
}

fn edit_order(o: &mut Order, edit: OrderEdit) {
    patch([
        (&mut o.shipping_status, edit.shipping_status),
        (&mut o.payment_status, edit.payment_status),
    ]);
    o.set_documents(edit.awb, edit.invoice_number, edit.invoice_url);
}

impl ShopHandle {
    pub fn order(&self, id: &str) -> Option<Order> {
        let key = id.parse().ok()?;
        self.state.data.lock().unwrap().orders.get(key).cloned()
    }

    pub fn order_by_number(&self, number: &str) -> Option<Order> {
        let data = self.state.data.lock().unwrap();
        let key = data.order_numbers.get(number)?;
        data.orders.get(*key).cloned()
    }

    /// Every order in id order.
    pub fn orders(&self) -> Vec<Order> {
        self.state.data.lock().unwrap().orders.all()
    }

    /// Places an order as a customer would (id, number, total and stamps are assigned);
    /// sends the `order.created` webhook.
    pub fn create_order(&self, o: Order) -> anyhow::Result<Order> {
        Ok(self.state.add_order(o)?)
    }

    /// Changes an order as a merchant would (no state machine, no lock), bumping `updated_at`
    /// and sending `order.status_changed` when a status changed.
    pub fn update_order(&self, id: &str, f: impl FnOnce(&mut Order)) -> Option<Order> {
        let key = id.parse().ok()?;
        self.state
            .change_order(key, |o| {
                f(o);
                Ok(())
            })
            .ok()
    }

    /// Sets the shipping status as a merchant would.
    pub fn set_shipping_status(&self, id: &str, status: &str) -> Option<Order> {
        self.update_order(id, |o| o.shipping_status = status.to_owned())
    }

    /// Adds `n` generated orders over the products present (seeding a small catalogue first
    /// when there is none), mostly awaiting; no webhooks are sent.
    pub fn seed_orders(&self, n: usize, seed: u64) -> Vec<Order> {
        if self.product_count() == 0 {
            self.seed_products(20, seed);
        }
        let now = self.state.core.now();
        let mut rng = StdRng::seed_from_u64(seed ^ 0x0_4de4);
        let people = seed::people(n.clamp(1, 50), seed);
        let mut data = self.state.data.lock().unwrap();
        let products: Vec<(String, String, f64)> = data
            .products
            .iter()
            .filter(|(_, p)| p.kind == ProductType::Basic)
            .take(1000)
            .map(|(_, p)| (p.sku.clone(), p.name.clone(), p.price_gross.unwrap_or(1.0)))
            .collect();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            if products.is_empty() {
                break;
            }
            let person = &people[i % people.len()];
            let lines = seed::order_lines(&mut rng, products.len())
                .into_iter()
                .map(|(j, quantity)| OrderLine {
                    sku: products[j].0.clone(),
                    name: products[j].1.clone(),
                    quantity,
                    unit_price_gross: products[j].2,
                })
                .collect();
            let shipping = match rng.random_range(0..10) {
                0..=5 => "awaiting",
                6 | 7 => "confirmed",
                8 => "in_process",
                _ => "shipped",
            };
            let address = Address {
                first_name: person.first_name.clone(),
                last_name: person.last_name.clone(),
                address: format!("Str. Exemplu nr. {}", rng.random_range(1..200)),
                city: "Bucuresti".to_owned(),
                county: "Bucuresti".to_owned(),
                country: "RO".to_owned(),
                zip: "010101".to_owned(),
                phone: person.phone.clone(),
                company: String::new(),
            };
            let o = Order {
                channel_name: "web".to_owned(),
                shipping_status: shipping.to_owned(),
                payment_status: if rng.random_bool(0.5) {
                    "paid"
                } else {
                    "awaiting"
                }
                .to_owned(),
                payment_method_code: "cash_delivery".to_owned(),
                customer: OrderCustomer {
                    email: person.email.clone(),
                    first_name: person.first_name.clone(),
                    last_name: person.last_name.clone(),
                    phone: person.phone.clone(),
                },
                billing_address: address.clone(),
                shipping_address: address,
                lines,
                ..Order::default()
            };
            if let Ok(o) = data.insert_order(o, now) {
                out.push(o);
            }
        }
        out
    }
}
