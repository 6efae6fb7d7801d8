//! The WooCommerce simulator over real HTTP (auth, paging bounds and headers, string prices,
//! duplicate SKUs, batch per-item errors, webhooks), `flows/woocommerce` end to end against it
//! and the ERP simulator on a manual clock, and a WooCommerce shop beside the MerchantPro one
//! against one ERP in one state store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::support::repo;
use axum::body::Bytes;
use axum::http::HeaderMap;
use erpsync::clock::ManualClock;
use erpsync::compile::project::check_with_env;
use erpsync::config::env::Overrides;
use erpsync::daemon::{Daemon, ServeOptions, serve};
use erpsync::engine::{Engine, RunOptions, RunReport};
use erpsync::state::{FlowName, SqliteStore, Store};
use erpsync_sim::erp::{ErpProduct, SalesLine};
use erpsync_sim::shop::Order;
use erpsync_sim::webhook::sign;
use erpsync_sim::woo::{WooOrder, WooProduct};
use erpsync_sim::{
    ErpHandle, ErpOptions, ErpSim, ShopHandle, ShopOptions, ShopSim, WebhookConfig, WooHandle,
    WooOptions, WooSim, seed_both,
};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

fn manual_clock() -> ManualClock {
    ManualClock::new("2026-03-01T08:00:00Z".parse().unwrap())
}

async fn woo(clock: &ManualClock) -> WooHandle {
    let _ = rustls::crypto::ring::default_provider().install_default();
    WooSim::start(WooOptions::default().with_clock(Arc::new(clock.clone())))
        .await
        .unwrap()
}

fn http() -> Client {
    crate::support::http(Duration::from_secs(10))
}

/// A call with the simulator's own consumer key and secret.
async fn call(
    w: &WooHandle,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, HeaderMap, Value) {
    let (key, secret) = w.credentials();
    call_as(w, method, path, body, Some((&key, &secret))).await
}

async fn call_as(
    w: &WooHandle,
    method: Method,
    path: &str,
    body: Option<Value>,
    auth: Option<(&str, &str)>,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = http().request(method, format!("{}{path}", w.api_url()));
    if let Some((k, s)) = auth {
        req = req.basic_auth(k, Some(s));
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name).unwrap().to_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------
// The simulator

#[tokio::test]
async fn woo_needs_the_consumer_key_and_answers_in_the_wordpress_error_shape() {
    let w = woo(&manual_clock()).await;
    let (s, _, b) = call_as(&w, Method::GET, "/products", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(b["code"], "woocommerce_rest_cannot_view");
    assert_eq!(b["data"]["status"], 401);
    let (s, _, b) = call_as(
        &w,
        Method::GET,
        "/products",
        None,
        Some(("ck_wrong", "cs_demo")),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(b["code"], "woocommerce_rest_authentication_error");
    assert!(b["message"].is_string());
    let (s, _, _) = call_as(
        &w,
        Method::GET,
        "/products",
        None,
        Some(("ck_demo", "cs_wrong")),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, b) = call(&w, Method::GET, "/products", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, json!([]));
    let (s, _, b) = call(&w, Method::GET, "/products/999999", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        b,
        json!({"code": "woocommerce_rest_product_invalid_id", "message": "Invalid ID.", "data": {"status": 404}})
    );
}

#[tokio::test]
async fn woo_pages_with_total_headers_and_refuses_per_page_out_of_range() {
    let clock = manual_clock();
    let w = woo(&clock).await;
    w.seed_products(25, 1);
    for bad in ["0", "101", "x"] {
        let (s, _, b) = call(&w, Method::GET, &format!("/products?per_page={bad}"), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "per_page={bad}");
        assert_eq!(b["code"], "rest_invalid_param");
        assert!(b["data"]["params"]["per_page"].is_string(), "{b}");
    }
    let (s, _, b) = call(&w, Method::GET, "/products?page=0", None).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("rest_invalid_param"))
    );

    // The default is 10 a page, newest first.
    let (_, h, b) = call(&w, Method::GET, "/products", None).await;
    assert_eq!(b.as_array().unwrap().len(), 10);
    assert_eq!(
        (header(&h, "X-WP-Total"), header(&h, "X-WP-TotalPages")),
        ("25".into(), "3".into())
    );
    assert_eq!(b[0]["sku"], "SKU-000025");
    assert!(header(&h, "Link").contains("rel=\"next\""));

    // Oldest change first, page by page, until X-WP-TotalPages.
    clock.advance(Duration::from_secs(5));
    let p = w.product_by_sku("SKU-000003").unwrap();
    w.update_product(p.id, |p| p.name = "Schimbat".into());
    let mut seen = Vec::new();
    for page in 1..=3 {
        let (_, h, b) = call(
            &w,
            Method::GET,
            &format!("/products?orderby=modified&order=asc&per_page=10&page={page}"),
            None,
        )
        .await;
        assert_eq!(header(&h, "X-WP-TotalPages"), "3");
        seen.extend(
            b.as_array()
                .unwrap()
                .iter()
                .map(|p| p["sku"].as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(seen.last().unwrap(), "SKU-000003");
    let (_, h, b) = call(
        &w,
        Method::GET,
        "/products?orderby=modified&order=asc&modified_after=2026-03-01T08:00:00",
        None,
    )
    .await;
    assert_eq!(header(&h, "X-WP-Total"), "1");
    assert_eq!(b[0]["sku"], "SKU-000003");
    assert_eq!(b[0]["date_modified_gmt"], "2026-03-01T08:00:05");
}

#[tokio::test]
async fn woo_prices_are_strings_and_stock_status_follows_the_quantity() {
    let w = woo(&manual_clock()).await;
    let (s, _, b) = call(
        &w,
        Method::POST,
        "/products",
        Some(json!({"name": "Bec", "sku": "BEC-1", "regular_price": 12.5})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["code"], "rest_invalid_param");
    assert_eq!(
        b["data"]["params"]["regular_price"],
        "regular_price is not of type string."
    );
    assert!(
        w.product_by_sku("BEC-1").is_none(),
        "a refused request changes nothing"
    );

    let (s, _, b) = call(
        &w,
        Method::POST,
        "/products",
        Some(json!({"name": "Bec", "sku": "BEC-1", "regular_price": "12.50", "manage_stock": true, "stock_quantity": 0})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        (b["regular_price"].clone(), b["price"].clone()),
        (json!("12.50"), json!("12.50"))
    );
    assert_eq!(b["stock_status"], "outofstock");
    let id = b["id"].as_u64().unwrap();
    let (_, _, b) = call(
        &w,
        Method::PUT,
        &format!("/products/{id}"),
        Some(json!({"stock_quantity": "7", "sale_price": "9.99"})),
    )
    .await;
    assert_eq!(
        (b["stock_quantity"].clone(), b["stock_status"].clone()),
        (json!(7), json!("instock"))
    );
    assert_eq!(b["price"], "9.99");

    // `?sku=` is an exact lookup, case-insensitive like the database.
    let (_, _, b) = call(&w, Method::GET, "/products?sku=bec-1", None).await;
    assert_eq!(b.as_array().unwrap().len(), 1);
    let (_, _, b) = call(&w, Method::GET, "/products?sku=BEC", None).await;
    assert_eq!(b, json!([]));
}

#[tokio::test]
async fn woo_refuses_a_duplicate_sku_and_batches_report_errors_per_item() {
    let w = woo(&manual_clock()).await;
    w.create_product(WooProduct::simple("LED-1", "Banda LED", "45.00", 3))
        .unwrap();
    let (s, _, b) = call(
        &w,
        Method::POST,
        "/products",
        Some(json!({"name": "Alta", "sku": "led-1", "regular_price": "1.00"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        b,
        json!({"code": "product_invalid_sku", "message": "Invalid or duplicated SKU.", "data": {"status": 400}})
    );

    let led = w.product_by_sku("LED-1").unwrap();
    let (s, _, b) = call(
        &w,
        Method::POST,
        "/products/batch",
        Some(json!({
            "create": [
                {"name": "Nou", "sku": "NOU-1", "regular_price": "10.00"},
                {"name": "Dublura", "sku": "LED-1", "regular_price": "10.00"}
            ],
            "update": [
                {"id": led.id, "regular_price": "39.90"},
                {"id": 987654, "regular_price": "1.00"}
            ]
        })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "partial failure is still a 200");
    assert_eq!(b["create"][0]["sku"], "NOU-1");
    assert_eq!(b["create"][1]["id"], 0);
    assert_eq!(b["create"][1]["error"]["code"], "product_invalid_sku");
    assert_eq!(b["update"][0]["regular_price"], "39.90");
    assert_eq!(b["update"][1]["id"], 987654);
    assert_eq!(
        b["update"][1]["error"]["code"],
        "woocommerce_rest_product_invalid_id"
    );
    assert_eq!(w.product_by_sku("LED-1").unwrap().regular_price, "39.90");

    let too_many: Vec<Value> = (0..101).map(|i| json!({"name": format!("P{i}")})).collect();
    let (s, _, b) = call(
        &w,
        Method::POST,
        "/products/batch",
        Some(json!({ "create": too_many })),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(b["code"], "woocommerce_rest_request_entity_too_large");
    assert!(w.product_by_sku("P0").is_none());
}

#[tokio::test]
async fn woo_orders_filter_by_status_update_meta_and_send_signed_webhooks() {
    let clock = manual_clock();
    let w = woo(&clock).await;
    w.seed_products(3, 1);
    let (tx, mut rx) = mpsc::unbounded_channel::<(HeaderMap, Bytes)>();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |h: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                tx.send((h, body)).unwrap();
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    w.set_webhook(Some(WebhookConfig {
        url,
        secret: "s3cret".into(),
    }));

    let o = w.place_order(
        WooOrder::new("ana@example.com", "Ana", "Pop", &[("SKU-000001", 2, 10.5)])
            .with_status("processing"),
    );
    assert_eq!(o.total, "21.00");
    assert_eq!(o.number, o.id.to_string());
    w.place_order(WooOrder::new(
        "ion@example.com",
        "Ion",
        "Rus",
        &[("SKU-000002", 1, 3.0)],
    ));
    w.flush_webhooks().await;

    let (h, body) = rx.recv().await.unwrap();
    assert_eq!(&body[..], b"webhook_id=1", "a new webhook is pinged first");
    assert!(header(&h, "content-type").starts_with("application/x-www-form-urlencoded"));
    let (h, body) = rx.recv().await.unwrap();
    assert_eq!(header(&h, "X-WC-Webhook-Signature"), sign(&body, "s3cret"));
    assert_eq!(header(&h, "X-WC-Webhook-Topic"), "order.created");
    assert_eq!(header(&h, "X-WC-Webhook-Resource"), "order");
    assert_eq!(header(&h, "X-WC-Webhook-Event"), "created");
    assert!(!header(&h, "X-WC-Webhook-Delivery-ID").is_empty());
    let payload: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(payload["id"], o.id);
    assert_eq!(payload["line_items"][0]["price"], 10.5);
    assert_eq!(payload["total"], "21.00");

    let (_, h, b) = call(&w, Method::GET, "/orders?status=processing", None).await;
    assert_eq!(header(&h, "X-WP-Total"), "1");
    assert_eq!(b[0]["billing"]["email"], "ana@example.com");
    let (s, _, b) = call(&w, Method::GET, "/orders?status=paid", None).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("rest_invalid_param"))
    );

    clock.advance(Duration::from_secs(60));
    let path = format!("/orders/{}", o.id);
    let (s, _, b) = call(
        &w,
        Method::PUT,
        &path,
        Some(json!({"status": "completed", "meta_data": [{"key": "_awb", "value": "AWB-1"}]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["status"], "completed");
    let (_, _, b) = call(
        &w,
        Method::PUT,
        &path,
        Some(json!({"meta_data": [{"key": "_awb", "value": "AWB-2"}]})),
    )
    .await;
    assert_eq!(
        b["meta_data"].as_array().unwrap().len(),
        1,
        "same key, same entry"
    );
    assert_eq!(w.order(o.id).unwrap().meta("_awb"), Some(&json!("AWB-2")));
    let (s, _, b) = call(&w, Method::PUT, &path, Some(json!({"status": "shipped"}))).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("rest_invalid_param"))
    );
    w.flush_webhooks().await;
    let (h, _) = rx.recv().await.unwrap();
    assert_eq!(header(&h, "X-WC-Webhook-Topic"), "order.created");
    let (h, _) = rx.recv().await.unwrap();
    assert_eq!(header(&h, "X-WC-Webhook-Topic"), "order.updated");
    assert_eq!(w.counters().writes(), 3);
}

// ---------------------------------------------------------------------------------------
// flows/woocommerce end to end

struct WooHarness {
    woo: WooHandle,
    erp: ErpHandle,
    clock: ManualClock,
    _dir: tempfile::TempDir,
    engine: Engine,
}

/// `flows/woocommerce` as JSON, `include` made absolute and the state section dropped.
fn woo_project() -> Value {
    let text = std::fs::read_to_string(repo().join("flows/woocommerce/woocommerce.yaml")).unwrap();
    let mut doc = erpsync::config::node::parse(&text).unwrap().value;
    doc["include"] = json!([repo().join("flows/common").display().to_string()]);
    doc.as_object_mut().unwrap().remove("state");
    doc
}

fn engine_for(
    doc: &Value,
    dir: &tempfile::TempDir,
    env: Vec<(&str, String)>,
    clock: &ManualClock,
) -> Engine {
    let file = dir.path().join("project.yaml");
    std::fs::write(&file, serde_json::to_string_pretty(doc).unwrap()).unwrap();
    let env = Overrides(
        env.into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<HashMap<_, _>>(),
    );
    let (project, diags) = check_with_env(&[file], &env);
    let project = project.unwrap_or_else(|| panic!("{diags:#?}"));
    let store = Store::from(SqliteStore::open(&dir.path().join("state.sqlite")).unwrap());
    Engine::new(Arc::new(project), store, Arc::new(clock.clone())).unwrap()
}

fn env_of(woo: &WooHandle, erp: &ErpHandle) -> Vec<(&'static str, String)> {
    let (key, secret) = woo.credentials();
    let (id, client_secret) = erp.credentials();
    vec![
        ("WOO_URL", woo.base_url()),
        ("WOO_CONSUMER_KEY", key),
        ("WOO_CONSUMER_SECRET", secret),
        ("ERP_URL", erp.base_url()),
        ("ERP_CLIENT_ID", id),
        ("ERP_CLIENT_SECRET", client_secret),
    ]
}

impl WooHarness {
    /// Both simulators seeded with the same `n` catalogue items.
    async fn new(n: usize) -> WooHarness {
        Self::with(n, |_| {}).await
    }

    /// As `new`, with the project changed by `edit`.
    async fn with(n: usize, edit: impl FnOnce(&mut Value)) -> WooHarness {
        let clock = manual_clock();
        let woo = woo(&clock).await;
        let erp = ErpSim::start(ErpOptions::unlimited().with_clock(Arc::new(clock.clone())))
            .await
            .unwrap();
        let items = woo.seed_products(n, 1);
        erp.seed_catalogue(&items);
        let dir = tempfile::tempdir().unwrap();
        let mut doc = woo_project();
        edit(&mut doc);
        let engine = engine_for(&doc, &dir, env_of(&woo, &erp), &clock);
        WooHarness {
            woo,
            erp,
            clock,
            _dir: dir,
            engine,
        }
    }

    async fn run(&self, flow: &str) -> RunReport {
        let opts = RunOptions {
            details: true,
            ..Default::default()
        };
        self.engine
            .run(flow, &opts)
            .await
            .unwrap_or_else(|e| panic!("{flow}: {e}"))
    }

    fn later(&self, minutes: u64) {
        self.clock.advance(Duration::from_secs(minutes * 60));
    }

    fn reset_counters(&self) {
        self.woo.counters().reset();
        self.erp.counters().reset();
    }

    fn writes(&self) -> (u64, u64) {
        (self.woo.counters().writes(), self.erp.counters().writes())
    }
}

#[tokio::test]
async fn woo_first_sync_adopts_matching_skus_creates_missing_ones_and_writes_nothing_unchanged() {
    let h = WooHarness::new(20).await;
    h.woo
        .create_product(WooProduct::simple(
            "WOO-ONLY-1",
            "Doar in magazin",
            "59.90",
            3,
        ))
        .unwrap();
    h.erp
        .create_product(ErpProduct::new("ERP-ONLY-1", "Doar in ERP", 120.0))
        .unwrap();
    h.reset_counters();

    let r = h.run("products").await;
    assert_eq!(
        (r.counts.adopted, r.counts.created, r.counts.failed),
        (20, 2, 0),
        "{r:#?}"
    );
    assert_eq!(h.erp.product("WOO-ONLY-1").unwrap().price, 59.9);
    let created = h.woo.product_by_sku("ERP-ONLY-1").unwrap();
    assert_eq!(created.regular_price, "120.00", "a string with cents");
    assert_eq!(
        (created.kind.as_str(), created.status.as_str()),
        ("simple", "publish")
    );
    assert_eq!(h.writes(), (1, 1), "adoption wrote nothing");

    // A price changed in the shop reaches the ERP; nothing else is written.
    h.later(10);
    let p = h.woo.product_by_sku("SKU-000004").unwrap();
    h.woo
        .update_product(p.id, |p| p.regular_price = "77.70".into());
    h.reset_counters();
    let r = h.run("products").await;
    assert_eq!((r.counts.updated, r.counts.failed), (1, 0), "{r:#?}");
    assert_eq!(h.erp.product("SKU-000004").unwrap().price, 77.7);
    assert_eq!(h.writes(), (0, 1));

    h.later(10);
    h.reset_counters();
    let r = h.run("products").await;
    assert_eq!(
        (r.counts.created, r.counts.updated, r.counts.failed),
        (0, 0, 0),
        "{r:#?}"
    );
    assert_eq!(h.writes(), (0, 0), "nothing unchanged is written");
}

/// WooCommerce's pages are the list itself (`records: $`). A listing page answered with a
/// 200 and a JSON object (an error served as a success, by a plugin or a proxy) is not a page
/// of one record whose listing then ends: the run stops with the reason, and neither side is
/// given what it could not see. A lookup answered so fails its record instead of saying "not
/// found". Once the shop answers again, everything is adopted and nothing created.
#[tokio::test]
async fn woo_an_object_answered_for_a_list_creates_nothing() {
    let error = r#"{"code":"maintenance","message":"Magazinul este in mentenanta"}"#;
    let answered = |query: &str| {
        erpsync_sim::FailRule::new("GET", "/wp-json/wc/v3/products", 200, 1_000)
            .with_query(query)
            .with_body(error)
    };

    // The listing of the products flow, both ways.
    let h = WooHarness::new(30).await;
    h.reset_counters();
    h.woo.faults().fail_next(answered("orderby=modified"));
    let e = match h.engine.run("products", &RunOptions::default()).await {
        Ok(r) => format!("{:?} {:#?}", r.errors, r.counts),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("page 1: the answer is an object, not a list of records")
            && e.contains("mentenanta"),
        "{e}"
    );
    assert_eq!((h.woo.products().len(), h.erp.product_count()), (30, 30));
    assert_eq!(h.writes(), (0, 0));
    h.woo.faults().clear();
    let r = h.run("products").await;
    assert_eq!((r.counts.adopted, r.counts.created), (30, 0), "{r:#?}");

    // The lookups of a one-way flow from the ERP into the shop.
    let h = WooHarness::with(10, |doc| {
        let f = &mut doc["flows"]["products"];
        f["direction"] = json!("one_way");
        f["from"] = json!("erp");
        f["to"] = json!("woo");
        f.as_object_mut().unwrap().remove("conflict");
    })
    .await;
    h.reset_counters();
    h.woo.faults().fail_next(answered("sku="));
    let r = h.run("products").await;
    assert_eq!((r.counts.failed, r.counts.created), (10, 0), "{r:#?}");
    for rec in &r.records {
        let reason = rec.reason.as_deref().unwrap_or_default();
        assert!(reason.contains("not a list of records"), "{reason}");
    }
    assert_eq!(h.writes(), (0, 0), "no create sent");
    h.woo.faults().clear();
    let r = h.run("products").await;
    assert_eq!(
        (r.counts.adopted, r.counts.created, r.counts.failed),
        (10, 0, 0),
        "{r:#?}"
    );
    assert_eq!(h.woo.products().len(), 10);
}

#[tokio::test]
async fn woo_stock_from_the_erp_reaches_woocommerce_incrementally_and_by_reconciliation() {
    let h = WooHarness::new(10).await;
    h.run("products").await;
    h.later(5);
    h.reset_counters();
    let r = h.run("stock").await;
    assert_eq!(r.counts.failed, 0, "{r:#?}");
    assert_eq!(h.writes().0, 0, "the seeded stock already agrees");

    h.later(5);
    h.erp.set_stock("SKU-000002", "Depozit central", 42);
    h.reset_counters();
    let r = h.run("stock").await;
    assert_eq!((r.counts.updated, r.counts.failed), (1, 0), "{r:#?}");
    let p = h.woo.product_by_sku("SKU-000002").unwrap();
    assert_eq!(
        (p.stock_quantity, p.stock_status.as_str()),
        (Some(42), "instock")
    );
    assert_eq!(h.writes(), (1, 0));

    // Drift behind erpsync's back is corrected by reconciliation.
    h.later(5);
    let id = h.woo.product_by_sku("SKU-000005").unwrap().id;
    let erp_qty = h
        .erp
        .stock("SKU-000005", "Depozit central")
        .unwrap()
        .quantity;
    h.woo
        .update_product(id, |p| p.stock_quantity = Some(erp_qty + 13));
    h.reset_counters();
    let r = h
        .engine
        .run(
            "stock",
            &RunOptions {
                reconcile: true,
                details: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((r.counts.updated, r.counts.failed), (1, 0), "{r:#?}");
    assert_eq!(h.writes(), (1, 0));
    assert_eq!(h.woo.product(id).unwrap().stock_quantity, Some(erp_qty));
}

/// Issue 17.1 for `flows/woocommerce`: its `4xx` error rule no longer turns a 429 into a
/// failed record: with one request in five answered 429 on both sides, every scheduled flow
/// runs without a failure and the paid order reaches the ERP.
#[tokio::test]
async fn woo_flows_wait_out_injected_429s_without_failed_records() {
    let h = WooHarness::new(20).await;
    let faults = erpsync_sim::Faults {
        rate_limit_rate: 0.2,
        ..Default::default()
    };
    h.woo.faults().set(faults.clone());
    h.erp.faults().set(faults);
    let paid = h.woo.place_order(
        WooOrder::new("ana@example.com", "Ana", "Pop", &[("SKU-000002", 2, 15.25)])
            .with_status("processing"),
    );
    for f in h.engine.project.select(&[]).unwrap() {
        let r = h.run(&f.id).await;
        let failed: Vec<_> = r
            .records
            .iter()
            .filter(|x| x.decision == erpsync::engine::Decision::Failed)
            .collect();
        assert!(failed.is_empty() && r.errors.is_empty(), "{}: {r:#?}", f.id);
    }
    assert_eq!(
        h.erp
            .orders_by_reference(&format!("WC-{}", paid.number))
            .len(),
        1
    );
    let limited: u64 = h
        .engine
        .systems
        .values()
        .map(|s| s.stats().snapshot().responses_4xx)
        .sum();
    assert!(limited >= 5, "429s were injected ({limited})");
}

#[tokio::test]
async fn woo_a_processing_order_reaches_the_erp_once_and_status_and_awb_come_back() {
    let h = WooHarness::new(5).await;
    h.run("products").await;
    let pending = h.woo.place_order(WooOrder::new(
        "ion@example.com",
        "Ion",
        "Rus",
        &[("SKU-000001", 1, 20.0)],
    ));
    let paid = h.woo.place_order(
        WooOrder::new("ana@example.com", "Ana", "Pop", &[("SKU-000002", 2, 15.25)])
            .with_status("processing"),
    );
    h.later(3);
    h.reset_counters();
    let r = h.run("orders_to_erp").await;
    assert_eq!((r.counts.created, r.counts.failed), (1, 0), "{r:#?}");
    let number = format!("WC-{}", paid.number);
    let in_erp = h.erp.orders_by_reference(&number);
    assert_eq!(in_erp.len(), 1);
    assert_eq!(in_erp[0].total, 30.5);
    assert_eq!(in_erp[0].client.email, "ana@example.com");
    assert!(
        h.erp
            .orders_by_reference(&format!("WC-{}", pending.number))
            .is_empty()
    );

    // A second run sends nothing, even after the order changed in the shop.
    h.later(3);
    h.woo
        .update_order(paid.id, |o| o.customer_note = "suna inainte".into());
    h.reset_counters();
    let r = h.run("orders_to_erp").await;
    assert_eq!((r.counts.created, r.counts.failed), (0, 0), "{r:#?}");
    assert_eq!(h.erp.counters().writes(), 0);
    assert_eq!(h.erp.orders_by_reference(&number).len(), 1);

    // The ERP ships it with an AWB and invoices it: all of it comes back.
    h.later(3);
    let erp_id = in_erp[0].id;
    h.erp.set_awb(erp_id, "AWB-777");
    h.erp.set_order_status(erp_id, "shipped");
    h.later(3);
    let r = h.run("orders_from_erp").await;
    assert_eq!((r.counts.updated, r.counts.failed), (1, 0), "{r:#?}");
    let back = h.woo.order(paid.id).unwrap();
    assert_eq!(back.status, "completed");
    assert_eq!(back.meta("_erpsync_awb"), Some(&json!("AWB-777")));

    h.later(3);
    h.reset_counters();
    let r = h.run("orders_from_erp").await;
    assert_eq!((r.counts.updated, r.counts.failed), (0, 0), "{r:#?}");
    assert_eq!(h.writes(), (0, 0));
    let r = h.run("orders_to_erp").await;
    assert_eq!((r.counts.created, r.counts.failed), (0, 0), "{r:#?}");
    assert_eq!(h.erp.orders_by_reference(&number).len(), 1);
}

// ---------------------------------------------------------------------------------------
// Multi-step operations: an order's shipment tracking

const TRACKINGS: &str = "/wp-json/wc/v3/orders/{id}/shipment-trackings";
const TRACKING: &str = "/wp-json/wc/v3/orders/{id}/shipment-trackings/{tracking_id}";

/// A paid order exported to the ERP, shipped there with `awb`; returns the shop order id and
/// the ERP order id.
async fn shipped_order(h: &WooHarness, awb: &str) -> (u64, u64) {
    h.run("products").await;
    let paid = h.woo.place_order(
        WooOrder::new("ana@example.com", "Ana", "Pop", &[("SKU-000002", 2, 15.25)])
            .with_status("processing"),
    );
    h.later(3);
    let r = h.run("orders_to_erp").await;
    assert_eq!((r.counts.created, r.counts.failed), (1, 0), "{r:#?}");
    let erp_id = h.erp.orders_by_reference(&format!("WC-{}", paid.number))[0].id;
    h.later(3);
    h.erp.set_awb(erp_id, awb);
    h.erp.set_order_status(erp_id, "shipped");
    h.later(3);
    (paid.id, erp_id)
}

#[tokio::test]
async fn woo_the_first_awb_creates_the_tracking_and_a_changed_one_falls_back_to_updating_it() {
    let h = WooHarness::new(5).await;
    let (order, erp_id) = shipped_order(&h, "AWB-1").await;

    // First AWB: the order and a new tracking; the fallback steps do not run.
    h.reset_counters();
    let r = h.run("orders_from_erp").await;
    assert_eq!((r.counts.updated, r.counts.failed), (1, 0), "{r:#?}");
    let c = h.woo.counters();
    assert_eq!(c.count("PUT", "/wp-json/wc/v3/orders/{id}"), 1);
    assert_eq!(c.count("POST", TRACKINGS), 1);
    assert_eq!(
        (c.count("GET", TRACKINGS), c.count("PUT", TRACKING)),
        (0, 0)
    );
    let first = h.woo.tracking(order).expect("a tracking was created");
    assert_eq!(first.tracking_number, "AWB-1");
    assert_eq!(first.tracking_provider, "Fan Courier");

    // The carrier changes the AWB: the create is refused (422), the tracking there is found
    // and updated through the id the find step read.
    h.erp.set_awb(erp_id, "AWB-2");
    h.later(3);
    h.reset_counters();
    let r = h.run("orders_from_erp").await;
    assert_eq!((r.counts.updated, r.counts.failed), (1, 0), "{r:#?}");
    let c = h.woo.counters();
    assert_eq!(c.count("POST", TRACKINGS), 1);
    assert_eq!(c.status(422), 1);
    assert_eq!(
        (c.count("GET", TRACKINGS), c.count("PUT", TRACKING)),
        (1, 1)
    );
    let now = h.woo.tracking(order).unwrap();
    assert_eq!(now.tracking_number, "AWB-2");
    assert_eq!(
        now.tracking_id, first.tracking_id,
        "the same tracking, updated"
    );
    assert_eq!(
        h.woo.order(order).unwrap().meta("_erpsync_awb"),
        Some(&json!("AWB-2"))
    );
}

/// A paid order of two lines, exported; the ERP then changes one line's quantity, drops the
/// other and adds a third. Returns the shop order and its line ids before the change.
async fn order_whose_lines_the_erp_changed(h: &WooHarness) -> (u64, Vec<u64>) {
    h.run("products").await;
    let paid = h.woo.place_order(
        WooOrder::new(
            "ana@example.com",
            "Ana",
            "Pop",
            &[("SKU-000001", 1, 20.0), ("SKU-000002", 2, 15.25)],
        )
        .with_status("processing"),
    );
    h.later(3);
    let r = h.run("orders_to_erp").await;
    assert_eq!((r.counts.created, r.counts.failed), (1, 0), "{r:#?}");
    let erp = h.erp.orders_by_reference(&format!("WC-{}", paid.number))[0].clone();
    let line = |code: &str, quantity, price| SalesLine {
        code: code.into(),
        name: erp
            .lines
            .iter()
            .find(|l| l.code == code)
            .map(|l| l.name.clone())
            .unwrap_or_else(|| h.woo.product_by_sku(code).unwrap().name),
        quantity,
        price,
    };
    h.later(3);
    h.erp.set_order_lines(
        erp.id,
        vec![line("SKU-000002", 3, 15.25), line("SKU-000003", 1, 9.5)],
    );
    h.later(3);
    let ids = paid.line_items.iter().map(|l| l.id).collect();
    (paid.id, ids)
}

#[tokio::test]
async fn woo_lines_changed_in_the_erp_are_merged_into_the_orders_own_lines() {
    let h = WooHarness::new(5).await;
    let (order, ids) = order_whose_lines_the_erp_changed(&h).await;
    h.reset_counters();
    let r = h.run("orders_from_erp").await;
    assert_eq!((r.counts.updated, r.counts.failed), (1, 0), "{r:#?}");
    assert_eq!(
        h.woo.counters().count("PUT", "/wp-json/wc/v3/orders/{id}"),
        1
    );
    let back = h.woo.order(order).unwrap();
    let lines: Vec<(&str, i64, &str)> = back
        .line_items
        .iter()
        .map(|l| (l.sku.as_str(), l.quantity, l.total.as_str()))
        .collect();
    assert_eq!(
        lines,
        vec![("SKU-000002", 3, "45.75"), ("SKU-000003", 1, "9.50")],
        "the dropped line is removed, the changed one changed, the new one added"
    );
    assert_eq!(
        back.line_items[0].id, ids[1],
        "the changed line is the order's own, not a copy"
    );
    assert!(!ids.contains(&back.line_items[1].id));
    assert_eq!(back.total, "55.25");

    // Nothing changed since: nothing is written.
    h.later(3);
    h.reset_counters();
    let r = h.run("orders_from_erp").await;
    assert_eq!((r.counts.updated, r.counts.failed), (0, 0), "{r:#?}");
    assert_eq!(h.writes(), (0, 0));
}

#[tokio::test]
async fn woo_lines_written_without_merge_are_added_to_the_order_a_second_time() {
    // The same write without `merge`: WooCommerce takes lines without ids as new ones.
    let h = WooHarness::with(5, |doc| {
        let items = &mut doc["systems"]["woo"]["entities"]["order"]["write"]["line_items"];
        items.as_object_mut().unwrap().remove("merge");
    })
    .await;
    let (order, _) = order_whose_lines_the_erp_changed(&h).await;
    let r = h.run("orders_from_erp").await;
    assert_eq!((r.counts.updated, r.counts.failed), (1, 0), "{r:#?}");
    let skus: Vec<String> = h
        .woo
        .order(order)
        .unwrap()
        .line_items
        .iter()
        .map(|l| l.sku.clone())
        .collect();
    assert_eq!(
        skus,
        vec!["SKU-000001", "SKU-000002", "SKU-000002", "SKU-000003"],
        "the old lines stay and the ERP's are added beside them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn woo_a_dry_run_lists_the_steps_an_update_would_send() {
    let h = WooHarness::new(5).await;
    let (order, _) = shipped_order(&h, "AWB-9").await;
    h.reset_counters();
    let opts = RunOptions {
        dry_run: true,
        ..Default::default()
    };
    let r = h.engine.run("orders_from_erp", &opts).await.unwrap();
    assert_eq!(h.woo.counters().writes(), 0);
    let rec = r
        .records
        .iter()
        .find(|r| r.decision == erpsync::engine::Decision::Update)
        .expect("the order would be updated");
    assert_eq!(
        rec.steps,
        [
            format!("order: PUT /orders/{order}"),
            format!(
                "create_tracking: POST /orders/{order}/shipment-trackings (if `{{{{record.awb}}}}`)"
            ),
            format!(
                "find_tracking: GET /orders/{order}/shipment-trackings (when `create_tracking` answered 422)"
            ),
            // A path that reads an earlier step's answer is shown as written.
            "update_tracking: PUT /orders/{{id}}/shipment-trackings/\
             {{steps.find_tracking.record.tracking_id}} (when `find_tracking` succeeded)"
                .to_string(),
        ]
    );

    // The same plan as a person reads it from `erpsync dry-run`.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_erpsync"))
        .args([
            "dry-run",
            h._dir.path().join("project.yaml").to_str().unwrap(),
            "--flow",
            "orders_from_erp",
            "--state",
            &format!("sqlite:{}", h._dir.path().join("state.sqlite").display()),
        ])
        .envs(env_of(&h.woo, &h.erp))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    for line in [
        format!("      step order: PUT /orders/{order}\n"),
        format!("      step create_tracking: POST /orders/{order}/shipment-trackings (if"),
        "      step find_tracking: GET".to_string(),
        "      step update_tracking: PUT".to_string(),
    ] {
        assert!(stdout.contains(&line), "`{line}` not in:\n{stdout}");
    }
    assert_eq!(h.woo.counters().writes(), 0);
}

#[tokio::test]
async fn woo_a_tracking_create_whose_answer_was_lost_is_resumed_without_a_second_tracking() {
    let h = WooHarness::new(5).await;
    let (order, _) = shipped_order(&h, "AWB-5").await;
    // The shop applies the create and then answers 503: the outcome is unknown to erpsync.
    h.woo.faults().fail_next(
        erpsync_sim::FailRule::new(
            "POST",
            &format!("/wp-json/wc/v3/orders/{order}/shipment-trackings"),
            503,
            1,
        )
        .after_apply(),
    );
    h.reset_counters();
    let r = h.run("orders_from_erp").await;
    assert_eq!(r.counts.failed, 1, "{r:#?}");
    assert_eq!(h.woo.tracking(order).unwrap().tracking_number, "AWB-5");
    let failure = h
        .engine
        .store
        .failures
        .failures(Some(FlowName::new("orders_from_erp")))
        .await
        .unwrap();
    assert_eq!(failure.len(), 1);
    assert!(
        failure[0].error.contains("step `create_tracking`"),
        "{}",
        failure[0].error
    );
    let response = failure[0]
        .response
        .as_ref()
        .expect("the step's request is kept");
    assert_eq!(response["step"], "create_tracking");
    assert_eq!(response["request"]["method"], "POST");
    assert_eq!(
        response["request"]["path"],
        format!("/orders/{order}/shipment-trackings")
    );
    assert_eq!(response["request"]["body"]["tracking_number"], "AWB-5");
    let pending = h
        .engine
        .store
        .journal
        .journal_pending(Some(FlowName::new("orders_from_erp")))
        .await
        .unwrap();
    assert_eq!(pending.len(), 1, "the step in doubt stays journaled");
    assert_eq!(
        pending[0].payload["steps"]["sent"],
        json!(["create_tracking"])
    );

    // The next run resumes the write: the create is sent again only because a refusal is
    // taken over (422 → find → update); no second tracking is made.
    h.later(3);
    h.reset_counters();
    let r = h.run("orders_from_erp").await;
    assert_eq!(r.counts.failed, 0, "{r:#?}");
    assert_eq!(r.counts.resolved_in_doubt, 1, "{r:#?}");
    assert_eq!(h.woo.counters().status(201), 0, "nothing created twice");
    assert!(h.woo.counters().status(422) >= 1);
    let t = h.woo.tracking(order).unwrap();
    assert_eq!(
        (t.tracking_id.as_str(), t.tracking_number.as_str()),
        ("trk-1", "AWB-5")
    );
    assert!(
        h.engine
            .store
            .journal
            .journal_pending(Some(FlowName::new("orders_from_erp")))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        h.engine
            .store
            .failures
            .failures(Some(FlowName::new("orders_from_erp")))
            .await
            .unwrap()
            .is_empty()
    );
}

/// A product created in WooCommerce in two steps: the product (a POST, journaled), then its
/// stock through the id the first step answered.
fn two_step_create(doc: &mut Value) {
    doc["systems"]["woo"]["operations"]["create_product"] = json!({
        "steps": [
            {"name": "product", "method": "POST", "path": "/products",
             "body": "{{record}}", "record": "$"},
            {"name": "stock", "method": "PUT",
             "path": "/products/{{steps.product.record.id}}",
             "body": {"manage_stock": true, "stock_quantity": 7}, "record": "$"}
        ]
    });
}

#[tokio::test]
async fn woo_a_fault_between_the_steps_of_a_create_resumes_without_a_second_create() {
    let h = WooHarness::with(3, two_step_create).await;
    h.run("products").await;
    h.erp
        .create_product(ErpProduct::new("STEP-1", "Doi pasi", 12.5))
        .unwrap();
    h.later(3);
    // A dry run of the bidirectional flow lists both steps of the create.
    let plan = h
        .engine
        .run(
            "products",
            &RunOptions {
                dry_run: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let create = plan.records.iter().find(|r| r.key == "STEP-1").unwrap();
    assert_eq!(
        create.steps,
        [
            "product: POST /products",
            "stock: PUT /products/{{steps.product.record.id}}"
        ],
        "{plan:#?}"
    );
    // The product is created; every attempt of the step after it fails.
    h.woo.faults().fail_next(erpsync_sim::FailRule::new(
        "PUT",
        "/wp-json/wc/v3/products/",
        503,
        5,
    ));
    h.reset_counters();
    let r = h.run("products").await;
    assert_eq!(r.counts.failed, 1, "{r:#?}");
    assert!(
        r.records
            .iter()
            .any(|r| r.key == "STEP-1" && r.decision == erpsync::engine::Decision::Failed),
        "{r:#?}"
    );
    let made = h
        .woo
        .product_by_sku("STEP-1")
        .expect("the first step created it");
    assert_eq!(h.woo.counters().count("POST", "/wp-json/wc/v3/products"), 1);
    let failure = &h
        .engine
        .store
        .failures
        .failures(Some(FlowName::new("products")))
        .await
        .unwrap()[0];
    assert!(failure.error.contains("step `stock`"), "{}", failure.error);
    assert_eq!(
        failure.response.as_ref().unwrap()["request"]["path"],
        format!("/products/{}", made.id),
        "the failed step's request, with the id the first step answered"
    );

    // The next run resumes the create: the product is not posted again, its stock is set,
    // and it is bound to the ERP's record.
    h.later(3);
    h.reset_counters();
    let r = h.run("products").await;
    assert_eq!(
        (r.counts.failed, r.counts.resolved_in_doubt),
        (0, 1),
        "{r:#?}"
    );
    assert_eq!(h.woo.counters().count("POST", "/wp-json/wc/v3/products"), 0);
    let woo: Vec<_> = h
        .woo
        .products()
        .into_iter()
        .filter(|p| p.sku == "STEP-1")
        .collect();
    assert_eq!(woo.len(), 1);
    assert_eq!(woo[0].stock_quantity, Some(7));
    assert!(
        h.engine
            .store
            .journal
            .journal_pending(Some(FlowName::new("products")))
            .await
            .unwrap()
            .is_empty()
    );
    h.later(3);
    h.reset_counters();
    let r = h.run("products").await;
    assert_eq!((r.counts.created, r.counts.failed), (0, 0), "{r:#?}");
    assert_eq!(h.woo.counters().writes(), 0);
}

#[tokio::test]
async fn woo_a_step_whose_answer_was_lost_and_that_nothing_guards_is_not_sent_again() {
    let h = WooHarness::with(3, two_step_create).await;
    h.run("products").await;
    h.erp
        .create_product(ErpProduct::new("STEP-2", "Pierdut", 9.0))
        .unwrap();
    h.later(3);
    // The shop creates the product and answers 503: erpsync cannot know it did.
    h.woo.faults().fail_next(
        erpsync_sim::FailRule::new("POST", "/wp-json/wc/v3/products", 503, 1).after_apply(),
    );
    let r = h.run("products").await;
    assert_eq!(r.counts.failed, 1, "{r:#?}");
    h.later(3);
    h.reset_counters();
    let r = h.run("products").await;
    assert_eq!(h.woo.counters().count("POST", "/wp-json/wc/v3/products"), 0);
    assert_eq!((r.counts.created, r.counts.adopted), (0, 0), "{r:#?}");
    let said = |needle: &str| {
        r.records.iter().any(|rec| {
            rec.key == "STEP-2"
                && rec.decision == erpsync::engine::Decision::Failed
                && rec.reason.as_deref().is_some_and(|x| x.contains(needle))
        })
    };
    assert!(
        said("step `product`") && said("not sent a second time"),
        "{r:#?}"
    );
    assert!(said("not sent again until it is settled"), "{r:#?}");
    let failure = &h
        .engine
        .store
        .failures
        .failures(Some(FlowName::new("products")))
        .await
        .unwrap()[0];
    assert_eq!(failure.key, "STEP-2");
    let pending = h
        .engine
        .store
        .journal
        .journal_pending(Some(FlowName::new("products")))
        .await
        .unwrap();
    assert_eq!(pending.len(), 1, "held for a person to settle");
    assert_eq!(
        h.woo
            .products()
            .iter()
            .filter(|p| p.sku == "STEP-2")
            .count(),
        1
    );
}

/// Stock written as a level per location, which the shop does not upsert: update it, and
/// create it when the update answers 404.
fn stock_levels(doc: &mut Value) {
    let woo = &mut doc["systems"]["woo"];
    woo["operations"]["set_level"] = json!({
        "steps": [
            {"name": "update", "method": "PUT", "path": "/inventory-levels/{{key}}/main",
             "body": {"quantity": "{{record.stock_quantity}}"}},
            {"name": "create", "method": "POST", "path": "/inventory-levels",
             "on": {"step": "update", "status": [404]},
             "body": {"sku": "{{key}}", "location": "main",
                      "quantity": "{{record.stock_quantity}}"}}
        ]
    });
    woo["entities"]["stock"]["update"] = json!("set_level");
}

#[tokio::test]
async fn woo_a_missing_stock_level_is_created_when_its_update_answers_404() {
    const LEVELS: &str = "/wp-json/wc/v3/inventory-levels";
    const LEVEL: &str = "/wp-json/wc/v3/inventory-levels/{sku}/{location}";
    let h = WooHarness::with(4, stock_levels).await;
    h.run("products").await;
    h.later(5);
    h.erp.set_stock("SKU-000002", "Depozit central", 42);
    h.reset_counters();
    let r = h.run("stock").await;
    assert_eq!((r.counts.updated, r.counts.failed), (1, 0), "{r:#?}");
    let c = h.woo.counters();
    assert_eq!((c.count("PUT", LEVEL), c.status(404)), (1, 1));
    assert_eq!(c.count("POST", LEVELS), 1, "the fallback created it");
    assert_eq!(h.woo.level("SKU-000002", "main"), Some(42));

    // Now it exists: the update succeeds and the create is not sent.
    h.later(5);
    h.erp.set_stock("SKU-000002", "Depozit central", 17);
    h.reset_counters();
    let r = h.run("stock").await;
    assert_eq!((r.counts.updated, r.counts.failed), (1, 0), "{r:#?}");
    let c = h.woo.counters();
    assert_eq!((c.count("PUT", LEVEL), c.count("POST", LEVELS)), (1, 0));
    assert_eq!(h.woo.level("SKU-000002", "main"), Some(17));
    assert!(
        h.engine
            .store
            .journal
            .journal_pending(Some(FlowName::new("stock")))
            .await
            .unwrap()
            .is_empty()
    );

    // A create the shop refuses (the level is missing, the POST is answered 400), with no
    // step to take it over, fails the record with the step's request and answer.
    h.later(5);
    h.erp.set_stock("SKU-000003", "Depozit central", 5);
    h.woo.faults().fail_next(erpsync_sim::FailRule::new(
        "POST",
        "/wp-json/wc/v3/inventory-levels",
        400,
        1,
    ));
    let r = h.run("stock").await;
    assert_eq!(r.counts.failed, 1, "{r:#?}");
    let failure = &h
        .engine
        .store
        .failures
        .failures(Some(FlowName::new("stock")))
        .await
        .unwrap()[0];
    assert!(failure.error.contains("step `create`"), "{}", failure.error);
    let response = failure.response.as_ref().unwrap();
    assert_eq!(response["status"], 400);
    assert_eq!(response["request"]["body"]["sku"], "SKU-000003");
    assert!(
        h.engine
            .store
            .journal
            .journal_pending(Some(FlowName::new("stock")))
            .await
            .unwrap()
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------
// Two shops, one ERP

#[tokio::test]
async fn woo_and_merchantpro_shops_share_one_erp_and_each_order_reaches_it_once() {
    let clock = manual_clock();
    let woo = woo(&clock).await;
    let shop: ShopHandle =
        ShopSim::start(ShopOptions::unlimited().with_clock(Arc::new(clock.clone())))
            .await
            .unwrap();
    let erp = ErpSim::start(ErpOptions::unlimited().with_clock(Arc::new(clock.clone())))
        .await
        .unwrap();
    let items = seed_both(&shop, &erp, 5, 1);
    woo.seed_catalogue(&items);

    // One project: the WooCommerce file plus the MerchantPro shop of flows/demo and its
    // order flows, in one state store.
    let mut doc = woo_project();
    let demo_text = std::fs::read_to_string(repo().join("flows/demo/demo.yaml")).unwrap();
    let demo = erpsync::config::node::parse(&demo_text).unwrap().value;
    doc["systems"]["shop"] = demo["systems"]["shop"].clone();
    let flows = doc["flows"].as_object_mut().unwrap();
    flows.insert(
        "mp_customers_to_erp".into(),
        json!({"entity": "customer", "from": "shop", "to": "erp", "mode": "create_missing",
               "trigger": {"manual": true}}),
    );
    let mut mp_orders = demo["flows"]["orders_to_erp"].clone();
    mp_orders["requires"] = json!([{ "flow": "mp_customers_to_erp", "record": "$.customer" }]);
    mp_orders["after"] = json!([]);
    mp_orders.as_object_mut().unwrap().remove("then");
    mp_orders.as_object_mut().unwrap().remove("trigger");
    mp_orders["trigger"] = json!({"schedule": "*/2 * * * *", "on_status": {"field": "status", "in": ["confirmed", "processing"]}});
    flows.insert("mp_orders_to_erp".into(), mp_orders);
    let dir = tempfile::tempdir().unwrap();
    let (key, secret) = shop.credentials();
    let mut env = env_of(&woo, &erp);
    env.extend([
        ("SHOP_URL", shop.base_url()),
        ("SHOP_API_KEY", key),
        ("SHOP_API_SECRET", secret),
    ]);
    let engine = engine_for(&doc, &dir, env, &clock);
    let run = |flow: &'static str| {
        let engine = &engine;
        async move {
            let r = engine.run(flow, &RunOptions::default()).await.unwrap();
            assert_eq!(r.counts.failed, 0, "{flow}: {r:#?}");
            r
        }
    };

    // The same buyer in both shops; numbers that would collide without the `WC-` prefix.
    let mut woo_numbers = Vec::new();
    for item in &items[..3] {
        let o = woo.place_order(
            WooOrder::new(
                "ana@example.com",
                "Ana",
                "Pop",
                &[(item.sku.as_str(), 1, 10.0)],
            )
            .with_status("processing"),
        );
        woo_numbers.push(format!("WC-{}", o.number));
    }
    let mut mp_numbers = Vec::new();
    for item in &items[..3] {
        let mut o = Order::new("ana@example.com", &[(item.sku.as_str(), 1, 10.0)]);
        o.shipping_status = "confirmed".into();
        mp_numbers.push(shop.create_order(o).unwrap().number);
    }
    clock.advance(Duration::from_secs(120));
    run("orders_to_erp").await;
    run("mp_orders_to_erp").await;
    // More orders arrive; both shops are read again.
    clock.advance(Duration::from_secs(120));
    let o = woo.place_order(
        WooOrder::new(
            "ion@example.com",
            "Ion",
            "Rus",
            &[(items[3].sku.as_str(), 2, 5.0)],
        )
        .with_status("processing"),
    );
    woo_numbers.push(format!("WC-{}", o.number));
    let mut o = Order::new("ion@example.com", &[(items[3].sku.as_str(), 2, 5.0)]);
    o.shipping_status = "confirmed".into();
    mp_numbers.push(shop.create_order(o).unwrap().number);
    clock.advance(Duration::from_secs(120));
    for _ in 0..2 {
        run("orders_to_erp").await;
        run("mp_orders_to_erp").await;
        clock.advance(Duration::from_secs(120));
    }

    for number in woo_numbers.iter().chain(&mp_numbers) {
        assert_eq!(erp.orders_by_reference(number).len(), 1, "order {number}");
    }
    assert_eq!(erp.orders().len(), woo_numbers.len() + mp_numbers.len());
    // One client per buyer, whichever shop sent them first.
    let clients: Vec<String> = erp
        .orders()
        .iter()
        .map(|o| o.client.email.clone())
        .collect();
    assert!(
        clients
            .iter()
            .all(|c| c == "ana@example.com" || c == "ion@example.com")
    );
}

// ---------------------------------------------------------------------------------------
// Webhooks into the daemon

#[tokio::test]
async fn woo_order_webhooks_make_the_daemon_export_a_paid_order_at_once() {
    let clock = manual_clock();
    let w = woo(&clock).await;
    let erp = ErpSim::start(ErpOptions::unlimited().with_clock(Arc::new(clock.clone())))
        .await
        .unwrap();
    let items = w.seed_products(5, 1);
    erp.seed_catalogue(&items);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("project.yaml");
    std::fs::write(&file, serde_json::to_string_pretty(&woo_project()).unwrap()).unwrap();
    let env = Overrides(
        env_of(&w, &erp)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    );
    let (project, diags) = check_with_env(std::slice::from_ref(&file), &env);
    let project = project.unwrap_or_else(|| panic!("{diags:#?}"));
    let store = Store::from(SqliteStore::open(&dir.path().join("state.sqlite")).unwrap());
    let d = Daemon::new(
        vec![file],
        Arc::new(project),
        store,
        Arc::new(clock.clone()),
        None,
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(serve(
        d.clone(),
        Some(listener),
        ServeOptions {
            scheduler: false,
            watch_every: None,
            ..ServeOptions::default()
        },
        async {
            let _ = stopped.await;
        },
    ));

    // WooCommerce pings a new webhook with a form body: acknowledged, nothing runs.
    w.set_webhook(Some(WebhookConfig {
        url: format!("{url}/hooks/woocommerce-orders"),
        secret: "demo-webhook-secret".into(),
    }));
    let pending = w.place_order(WooOrder::new(
        "ion@example.com",
        "Ion",
        "Rus",
        &[("SKU-000001", 1, 20.0)],
    ));
    let paid = w.place_order(
        WooOrder::new("ana@example.com", "Ana", "Pop", &[("SKU-000002", 2, 15.25)])
            .with_status("processing"),
    );
    w.flush_webhooks().await;
    assert!(d.drain(Duration::from_secs(10)).await);
    let answered: Vec<(String, Option<u16>)> = w
        .webhook_deliveries()
        .into_iter()
        .map(|x| (x.event, x.status))
        .collect();
    assert_eq!(answered.len(), 3, "{answered:?}");
    assert_eq!(answered[0].1, Some(200), "the ping: {answered:?}");
    assert!(
        answered[1..].iter().all(|(_, s)| *s == Some(202)),
        "{answered:?}"
    );
    let number = format!("WC-{}", paid.number);
    assert_eq!(erp.orders_by_reference(&number).len(), 1);
    assert!(
        erp.orders_by_reference(&format!("WC-{}", pending.number))
            .is_empty(),
        "a pending order waits"
    );

    // Later saves of the order notify again: it is not sent twice.
    clock.advance(Duration::from_secs(60));
    w.update_order(paid.id, |o| o.customer_note = "la usa".into());
    w.flush_webhooks().await;
    assert!(d.drain(Duration::from_secs(10)).await);
    assert_eq!(erp.orders_by_reference(&number).len(), 1);
    assert_eq!(erp.orders().len(), 1);
    stop.send(()).unwrap();
    served.await.unwrap();
}

/// `flows/woocommerce` with the products flow one way (WooCommerce to the ERP), so every
/// record decided is one the WooCommerce listing counts.
fn one_way_products() -> Value {
    let mut doc = woo_project();
    let products = doc["flows"]["products"].as_object_mut().unwrap();
    products.remove("direction");
    products.remove("conflict");
    for sys in ["woo", "erp"] {
        doc["systems"][sys]["rate_limit"] = json!({"per_second": 1000.0, "burst": 1000});
    }
    doc
}

#[tokio::test]
async fn the_total_a_woo_listing_tells_reaches_the_runs_progress() {
    let clock = manual_clock();
    let woo = woo(&clock).await;
    let erp = ErpSim::start(ErpOptions::unlimited().with_clock(Arc::new(clock.clone())))
        .await
        .unwrap();
    // Two pages of 100 and one of 30.
    let items = woo.seed_products(230, 1);
    erp.seed_catalogue(&items);
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_for(&one_way_products(), &dir, env_of(&woo, &erp), &clock);
    let progress = Arc::new(erpsync::engine::RunProgress::default());
    let opts = RunOptions {
        dry_run: true,
        progress: Some(progress.clone()),
        ..Default::default()
    };
    let r = engine.run("products", &opts).await.unwrap();
    assert_eq!(r.counts.read, 230, "{r:#?}");
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(load(&progress.total), 230);
    assert_eq!(load(&progress.done), 230);

    // Scoped to keys, the total is the keys, not the listing.
    let opts = RunOptions {
        keys: Some(vec![items[0].sku.clone(), items[1].sku.clone()]),
        ..opts
    };
    progress.reset();
    engine.run("products", &opts).await.unwrap();
    assert_eq!(load(&progress.total), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_a_terminal_shows_the_listings_total_and_the_time_left() {
    let clock = manual_clock();
    let woo = woo(&clock).await;
    let erp = ErpSim::start(ErpOptions::unlimited().with_clock(Arc::new(clock.clone())))
        .await
        .unwrap();
    let items = woo.seed_products(230, 1);
    erp.seed_catalogue(&items);
    // Each WooCommerce page takes a while, so the line is drawn between pages.
    woo.faults().set(erpsync_sim::Faults {
        latency_ms: 500,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project.yaml");
    std::fs::write(
        &project,
        serde_json::to_string_pretty(&one_way_products()).unwrap(),
    )
    .unwrap();
    let state = format!("sqlite:{}", dir.path().join("state.sqlite").display());
    let line = format!(
        "{} dry-run --flow products {} --state {state} --init-state",
        env!("CARGO_BIN_EXE_erpsync"),
        project.display()
    );
    let mut c = crate::support::terminal::command(&line);
    c.envs(env_of(&woo, &erp))
        .env("RUST_LOG", "off")
        .current_dir(dir.path());
    let text = crate::support::terminal::screen_of_success(c);
    assert!(text.contains("/230 records"), "no total in:\n{text}");
    assert!(text.contains("s left"), "no time left in:\n{text}");
}
