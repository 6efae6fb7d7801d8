//! Orders of the WooCommerce simulator (`/orders`), on the shared routes
//! ([`super::resource`]) with their own hooks: WooCommerce's statuses, `meta_data`,
//! `line_items` merged by id as WooCommerce does, and the `order.created` and `order.updated`
//! webhooks. Orders are placed through the handle; the API reads and changes them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use super::fields::{Meta, apply_meta, money, one_of, string_of, wp_date};
use super::products::WooProduct;
use super::resource::{Resource, WooList, to_json};
use super::{WooData, WooError, WooHandle, WooState};
use crate::table::{Record, Table};
use crate::webhook::Outgoing;

/// Order statuses the API accepts.
pub(crate) const ORDER_STATUSES: &[&str] = &[
    "pending",
    "processing",
    "on-hold",
    "completed",
    "cancelled",
    "refunded",
    "failed",
    "trash",
    "checkout-draft",
];

/// An order's billing or shipping address (`email` is only on billing).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Address {
    pub first_name: String,
    pub last_name: String,
    pub company: String,
    pub address_1: String,
    pub address_2: String,
    pub city: String,
    pub state: String,
    pub postcode: String,
    pub country: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub phone: String,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineItem {
    pub id: u64,
    pub name: String,
    pub product_id: u64,
    pub variation_id: u64,
    pub quantity: i64,
    pub subtotal: String,
    pub total: String,
    pub sku: String,
    /// Unit price: a number, unlike the totals.
    pub price: f64,
}

/// An order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WooOrder {
    pub id: u64,
    pub parent_id: u64,
    pub number: String,
    pub created_via: String,
    pub status: String,
    pub currency: String,
    pub total: String,
    pub customer_id: u64,
    pub customer_note: String,
    pub billing: Address,
    pub shipping: Address,
    pub payment_method: String,
    pub line_items: Vec<LineItem>,
    pub meta_data: Vec<Meta>,
    #[serde(with = "wp_date")]
    pub date_created: DateTime<Utc>,
    #[serde(with = "wp_date")]
    pub date_created_gmt: DateTime<Utc>,
    #[serde(with = "wp_date")]
    pub date_modified: DateTime<Utc>,
    #[serde(with = "wp_date")]
    pub date_modified_gmt: DateTime<Utc>,
}

impl WooOrder {
    /// A guest order in `pending` with lines of (SKU, quantity, unit price); ids, names,
    /// totals and dates are filled in when it is placed.
    pub fn new(email: &str, first_name: &str, last_name: &str, lines: &[(&str, i64, f64)]) -> Self {
        let billing = Address {
            first_name: first_name.to_owned(),
            last_name: last_name.to_owned(),
            city: "Cluj-Napoca".to_owned(),
            country: "RO".to_owned(),
            email: Some(email.to_owned()),
            phone: "0740000000".to_owned(),
            ..Address::default()
        };
        WooOrder {
            id: 0,
            parent_id: 0,
            number: String::new(),
            created_via: "checkout".to_owned(),
            status: "pending".to_owned(),
            currency: "RON".to_owned(),
            total: String::new(),
            customer_id: 0,
            customer_note: String::new(),
            shipping: Address {
                email: None,
                ..billing.clone()
            },
            billing,
            payment_method: "cod".to_owned(),
            line_items: lines
                .iter()
                .map(|(sku, quantity, price)| LineItem {
                    id: 0,
                    name: String::new(),
                    product_id: 0,
                    variation_id: 0,
                    quantity: *quantity,
                    subtotal: String::new(),
                    total: String::new(),
                    sku: (*sku).to_owned(),
                    price: *price,
                })
                .collect(),
            meta_data: Vec::new(),
            date_created: DateTime::UNIX_EPOCH,
            date_created_gmt: DateTime::UNIX_EPOCH,
            date_modified: DateTime::UNIX_EPOCH,
            date_modified_gmt: DateTime::UNIX_EPOCH,
        }
    }

    pub fn with_status(mut self, status: &str) -> Self {
        self.status = status.to_owned();
        self
    }

    /// The value of a `meta_data` key.
    pub fn meta(&self, key: &str) -> Option<&Value> {
        self.meta_data
            .iter()
            .find(|m| m.key == key)
            .map(|m| &m.value)
    }
}

impl Record for WooOrder {
    fn updated_at(&self) -> DateTime<Utc> {
        self.date_modified_gmt
    }
    fn set_updated_at(&mut self, t: DateTime<Utc>) {
        self.date_modified = t;
        self.date_modified_gmt = t;
    }
    fn set_key(&mut self, key: u64) {
        self.id = key;
    }
}

/// Applies an order body to a copy: status, billing, shipping, note and `meta_data`.
fn apply_order(
    o: &mut WooOrder,
    body: &Map<String, Value>,
    ids: &mut OrderIds,
) -> Result<(), WooError> {
    for (k, v) in body {
        match k.as_str() {
            "status" => o.status = one_of(k, v, ORDER_STATUSES)?,
            "customer_note" => o.customer_note = string_of(k, v)?,
            "meta_data" => apply_meta(&mut o.meta_data, v, &mut ids.meta)?,
            "line_items" => apply_line_items(o, v, ids)?,
            "billing" | "shipping" => {
                let fields = v
                    .as_object()
                    .ok_or_else(|| WooError::param(k, format!("{k} is not of type object.")))?;
                let address = if k == "billing" {
                    &mut o.billing
                } else {
                    &mut o.shipping
                };
                for (f, v) in fields {
                    let s = string_of(&format!("{k}[{f}]"), v)?;
                    match f.as_str() {
                        "first_name" => address.first_name = s,
                        "last_name" => address.last_name = s,
                        "company" => address.company = s,
                        "address_1" => address.address_1 = s,
                        "address_2" => address.address_2 = s,
                        "city" => address.city = s,
                        "state" => address.state = s,
                        "postcode" => address.postcode = s,
                        "country" => address.country = s,
                        "phone" => address.phone = s,
                        "email" if k == "billing" => address.email = Some(s),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// What an order change may take besides the order: the next meta and line ids, and the
/// catalogue new lines are priced from.
struct OrderIds<'a> {
    meta: u64,
    line: u64,
    products: &'a Table<WooProduct>,
}

/// Applies `line_items` as WooCommerce does: an entry with an `id` changes that line of the
/// order (an id of another order is refused) and a `quantity` of 0 removes it; an entry
/// without one adds a new line for its `sku` (or `product_id`). Lines the body does not name
/// stay as they are, so a body that lists the order's lines without their ids adds them a
/// second time. Totals not given are the unit price times the quantity; the order's total
/// follows its lines.
fn apply_line_items(o: &mut WooOrder, v: &Value, ids: &mut OrderIds) -> Result<(), WooError> {
    let items = v
        .as_array()
        .ok_or_else(|| WooError::param("line_items", "line_items is not of type array."))?;
    for (i, item) in items.iter().enumerate() {
        let item = item.as_object().ok_or_else(|| {
            WooError::param(
                "line_items",
                format!("line_items[{i}] is not of type object."),
            )
        })?;
        let quantity = match item.get("quantity") {
            None | Some(Value::Null) => None,
            Some(q) => Some(q.as_i64().filter(|q| *q >= 0).ok_or_else(|| {
                WooError::param(
                    "line_items",
                    format!("line_items[{i}][quantity] is not of type integer."),
                )
            })?),
        };
        let text = |name: &str| -> Result<Option<String>, WooError> {
            item.get(name)
                .filter(|v| !v.is_null())
                .map(|v| string_of(&format!("line_items[{i}][{name}]"), v))
                .transpose()
        };
        let (name, subtotal, total) = (text("name")?, text("subtotal")?, text("total")?);
        let id = item.get("id").and_then(Value::as_u64).filter(|id| *id > 0);
        let line = match id {
            Some(id) => {
                let at = o
                    .line_items
                    .iter()
                    .position(|l| l.id == id)
                    .ok_or_else(|| {
                        WooError::new(
                            400,
                            "woocommerce_rest_invalid_item_id",
                            "Order item ID provided is not associated with order.",
                        )
                    })?;
                if quantity == Some(0) {
                    o.line_items.remove(at);
                    continue;
                }
                &mut o.line_items[at]
            }
            // A zero quantity removes a line; without an id there is none to remove.
            None if quantity == Some(0) => continue,
            None => {
                let product =
                    match (text("sku")?, item.get("product_id").and_then(Value::as_u64)) {
                        (Some(sku), _) => ids.products.find(&sku.to_lowercase()),
                        (None, Some(pid)) => ids.products.get(pid),
                        (None, None) => None,
                    }
                    .ok_or_else(|| {
                        WooError::new(
                            400,
                            "woocommerce_rest_invalid_product_id",
                            "Product ID or SKU provided is invalid.",
                        )
                    })?;
                o.line_items.push(LineItem {
                    id: ids.line,
                    name: product.name.clone(),
                    product_id: product.id,
                    variation_id: 0,
                    quantity: 1,
                    subtotal: String::new(),
                    total: String::new(),
                    sku: product.sku.clone(),
                    price: product.price.parse().unwrap_or(0.0),
                });
                ids.line += 1;
                o.line_items.last_mut().expect("just added")
            }
        };
        if let Some(q) = quantity.filter(|q| *q > 0) {
            line.quantity = q;
        }
        if let Some(name) = name {
            line.name = name;
        }
        let amount = |given: Option<String>, price: f64, q: i64| match given {
            Some(t) => t.parse::<f64>().map(money).map_err(|_| {
                WooError::param(
                    "line_items",
                    format!("line_items[{i}] has a total that is not a number."),
                )
            }),
            None => Ok(money(price * q as f64)),
        };
        line.subtotal = amount(subtotal, line.price, line.quantity)?;
        line.total = amount(total, line.price, line.quantity)?;
        line.price = line.total.parse::<f64>().unwrap_or(0.0) / line.quantity as f64;
    }
    let total: f64 = o
        .line_items
        .iter()
        .filter_map(|l| l.total.parse::<f64>().ok())
        .sum();
    o.total = money(total);
    Ok(())
}

impl WooState {
    /// Queues `order.created` or `order.updated` with the order as the body.
    fn notify(&self, o: &WooOrder, event: &str) {
        let duplicate = self.core.faults.get().duplicate_webhooks;
        let topic = format!("order.{event}");
        self.webhooks.send_raw(Outgoing {
            event: &topic,
            body: to_json(o).to_string(),
            content_type: "application/json",
            extra: vec![
                ("X-WC-Webhook-Source", format!("{}/", self.core.base_url)),
                ("X-WC-Webhook-Topic", topic.clone()),
                ("X-WC-Webhook-Resource", "order".to_owned()),
                ("X-WC-Webhook-Event", event.to_owned()),
                ("X-WC-Webhook-ID", "1".to_owned()),
            ],
            duplicate,
        });
    }

    /// Changes order `id`; a refused change leaves it untouched. Sends `order.updated`.
    fn change_order(
        &self,
        id: u64,
        f: impl FnOnce(&mut WooOrder, &mut OrderIds) -> Result<(), WooError>,
    ) -> Result<WooOrder, WooError> {
        let now = self.now();
        let order = {
            let mut data = self.data.lock().unwrap();
            let WooData {
                orders,
                products,
                next_meta_id,
                next_line_id,
                ..
            } = &mut *data;
            let mut ids = OrderIds {
                meta: *next_meta_id,
                line: *next_line_id,
                products,
            };
            orders
                .try_update(id, now, |o| f(o, &mut ids))
                .ok_or_else(|| WooError::invalid_id("order", 400))??;
            (*next_meta_id, *next_line_id) = (ids.meta, ids.line);
            orders.get(id).cloned().expect("the order exists")
        };
        self.notify(&order, "updated");
        Ok(order)
    }

    /// Places an order: ids, number, names, product ids, totals and dates are filled in.
    fn place_order(&self, mut o: WooOrder) -> WooOrder {
        let now = self.now();
        let order = {
            let mut data = self.data.lock().unwrap();
            let id = data.take_id();
            for line in &mut o.line_items {
                line.id = data.next_line_id;
                data.next_line_id += 1;
                if let Some(p) = data.products.find(&line.sku.to_lowercase()) {
                    line.product_id = p.id;
                    if line.name.is_empty() {
                        line.name = p.name.clone();
                    }
                }
                let amount = line.price * line.quantity as f64;
                line.subtotal = money(amount);
                line.total = money(amount);
            }
            let total: f64 = o
                .line_items
                .iter()
                .map(|l| l.price * l.quantity as f64)
                .sum();
            o.total = money(total);
            o.number = id.to_string();
            o.date_created = now;
            o.date_created_gmt = now;
            for m in &mut o.meta_data {
                m.id = data.next_meta_id;
                data.next_meta_id += 1;
            }
            data.orders
                .save(Some(id), &mut o, now)
                .expect("orders hold no unique values");
            o
        };
        self.notify(&order, "created");
        order
    }
}

impl Resource for WooOrder {
    const NAME: &'static str = "order";
    const PATH: &'static str = "/orders";

    fn table(data: &mut WooData) -> &mut Table<Self> {
        &mut data.orders
    }

    /// Filters on statuses, comma-separated (`any` is every one but `trash`, which is only
    /// listed when asked for); an unknown status is refused.
    fn keep(list: &WooList) -> Result<impl Fn(&Self) -> bool, WooError> {
        let statuses: Option<Vec<String>> = match list.get("status") {
            None | Some("any") => None,
            Some(s) => {
                let wanted: Vec<String> = s.split(',').map(|x| x.trim().to_owned()).collect();
                if let Some(bad) = wanted
                    .iter()
                    .find(|w| !ORDER_STATUSES.contains(&w.as_str()))
                {
                    return Err(WooError::param(
                        "status",
                        format!(
                            "status[0] is not one of any, {} ({bad}).",
                            ORDER_STATUSES.join(", ")
                        ),
                    ));
                }
                Some(wanted)
            }
        };
        Ok(move |o: &WooOrder| match &statuses {
            Some(s) => s.contains(&o.status),
            None => o.status != "trash",
        })
    }

    /// Status, billing, shipping, note, `meta_data` and `line_items`; sends `order.updated`.
    fn change(state: &WooState, id: u64, body: &Map<String, Value>) -> Result<Self, WooError> {
        state.change_order(id, |o, ids| apply_order(o, body, ids))
    }
}

impl WooHandle {
    pub fn order(&self, id: u64) -> Option<WooOrder> {
        self.state.data.lock().unwrap().orders.get(id).cloned()
    }

    /// Every order in id order.
    pub fn orders(&self) -> Vec<WooOrder> {
        self.state.data.lock().unwrap().orders.all()
    }

    /// Places an order as a customer would at the checkout; sends `order.created`.
    pub fn place_order(&self, o: WooOrder) -> WooOrder {
        self.state.place_order(o)
    }

    /// Changes an order as a merchant would; sends `order.updated`.
    pub fn update_order(&self, id: u64, f: impl FnOnce(&mut WooOrder)) -> Option<WooOrder> {
        self.state
            .change_order(id, |o, _| {
                f(o);
                Ok(())
            })
            .ok()
    }
}
