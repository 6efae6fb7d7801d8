//! The shop and ERP simulators over real HTTP: auth, paging, validation, state machines,
//! webhooks, rate limits, business errors, idempotency, faults and counters.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use erpsync::clock::{ManualClock, SharedClock};
use erpsync_sim::erp::{ErpOrderDraft, ErpProduct};
use erpsync_sim::shop::{Order, Product, ProductType};
use erpsync_sim::webhook::{DELIVERY_ID_HEADER, SIGNATURE_HEADER, sign};
use erpsync_sim::{
    BurstLimit, ErpHandle, ErpOptions, ErpSim, FailRule, Faults, ShopHandle, ShopOptions, ShopSim,
    TokenBucket, WebhookConfig,
};
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

fn start_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T09:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn clock() -> (ManualClock, SharedClock) {
    let clock = ManualClock::new(start_time());
    (clock.clone(), Arc::new(clock))
}

fn http() -> Client {
    crate::support::http(Duration::from_secs(10))
}

async fn shop_with(opts: ShopOptions) -> (ShopHandle, ManualClock) {
    let (manual, shared) = clock();
    let shop = ShopSim::start(opts.with_clock(shared)).await.unwrap();
    (shop, manual)
}

async fn shop() -> (ShopHandle, ManualClock) {
    shop_with(ShopOptions::unlimited()).await
}

async fn erp_with(opts: ErpOptions) -> (ErpHandle, ManualClock) {
    let (manual, shared) = clock();
    let erp = ErpSim::start(opts.with_clock(shared)).await.unwrap();
    (erp, manual)
}

async fn erp() -> (ErpHandle, ManualClock) {
    erp_with(ErpOptions::unlimited()).await
}

/// Sends `req`, with `body` as JSON; returns status, headers and JSON body (null when the
/// answer is not JSON).
async fn send(mut req: RequestBuilder, body: Option<Value>) -> (StatusCode, HeaderMap, Value) {
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let text = resp.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// Sends an authenticated shop request to a path below the API or to an absolute URL.
async fn shop_call(
    shop: &ShopHandle,
    method: Method,
    path_or_url: &str,
    body: Option<Value>,
) -> (StatusCode, HeaderMap, Value) {
    let (key, secret) = shop.credentials();
    let url = if path_or_url.starts_with("http") {
        path_or_url.to_owned()
    } else {
        format!("{}{path_or_url}", shop.api_url())
    };
    send(
        http().request(method, url).basic_auth(key, Some(secret)),
        body,
    )
    .await
}

async fn shop_get(shop: &ShopHandle, path_or_url: &str) -> (StatusCode, HeaderMap, Value) {
    shop_call(shop, Method::GET, path_or_url, None).await
}

/// Asks the ERP for a token with these client credentials.
async fn token_request(erp: &ErpHandle, id: &str, secret: &str) -> (StatusCode, HeaderMap, Value) {
    let body =
        json!({"client_id": id, "client_secret": secret, "grant_type": "client_credentials"});
    let url = format!("{}/authorize/token", erp.api_url());
    send(http().post(url), Some(body)).await
}

async fn erp_token(erp: &ErpHandle) -> String {
    let (id, secret) = erp.credentials();
    let (_, _, resp) = token_request(erp, &id, &secret).await;
    resp["access_token"].as_str().unwrap().to_owned()
}

async fn erp_call(
    erp: &ErpHandle,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, HeaderMap, Value) {
    let url = format!("{}{path}", erp.api_url());
    send(http().request(method, url).bearer_auth(token), body).await
}

async fn erp_get(erp: &ErpHandle, token: &str, path: &str) -> (StatusCode, HeaderMap, Value) {
    erp_call(erp, token, Method::GET, path, None).await
}

/// Posts `body` to a control route (`/__sim/…`, which needs no credentials).
async fn control(url: String, body: Value) -> (StatusCode, HeaderMap, Value) {
    send(http().post(url), Some(body)).await
}

fn order_body(key: Option<&str>, reference: &str, code: &str) -> Value {
    let mut body = json!({
        "seriesName": "CMD",
        "reference": reference,
        "channel": "web",
        "client": {"name": "Ana Pop", "email": "ana@example.com"},
        "lines": [{"code": code, "quantity": 2, "price": 10.5}],
    });
    if let Some(k) = key {
        body["idempotencyKey"] = json!(k);
    }
    body
}

// ---------------------------------------------------------------- shop

#[tokio::test]
async fn shop_answers_401_to_bad_credentials_then_403_after_the_limit() {
    let (shop, clock) = shop_with(ShopOptions {
        max_bad_auth: 3,
        ..ShopOptions::unlimited()
    })
    .await;
    let bad = || async {
        http()
            .get(format!("{}/products", shop.api_url()))
            .basic_auth("demo-key", Some("wrong"))
            .send()
            .await
            .unwrap()
    };
    for _ in 0..3 {
        let resp = bad().await;
        assert_eq!(resp.status(), 401);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["name"], "Unauthorized");
    }
    assert_eq!(bad().await.status(), 403);
    // Locked out: even good credentials are refused until the lock-out ends.
    assert_eq!(shop_get(&shop, "/products").await.0, 403);
    clock.advance(Duration::from_secs(901));
    assert_eq!(shop_get(&shop, "/products").await.0, 200);
}

#[tokio::test]
async fn shop_pages_follow_absolute_next_links_until_absent() {
    let (shop, _) = shop().await;
    shop.seed_products(250, 7);
    let mut url = format!("{}/products?limit=100", shop.api_url());
    let mut skus = Vec::new();
    let mut pages = 0;
    loop {
        let (status, _, body) = shop_get(&shop, &url).await;
        assert_eq!(status, 200);
        pages += 1;
        for p in body["data"].as_array().unwrap() {
            skus.push(p["sku"].as_str().unwrap().to_owned());
            assert!(p.get("variants").is_none(), "variants only with include");
        }
        match body["meta"]["links"]["next"].as_str() {
            Some(next) => {
                assert!(next.starts_with(&shop.base_url()), "absolute: {next}");
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(skus.len(), 250);
    assert_eq!(skus.iter().collect::<HashSet<_>>().len(), 250);
    let (_, _, body) = shop_get(&shop, "/products?limit=5&include=variants").await;
    assert!(body["data"][0]["variants"].is_array());
}

/// Lists are written straight from the simulators' records: a listed record must be the record
/// as it is read alone, field for field (its variants only with `include=variants`), with every
/// modelled field and the unmodelled ones the shop kept.
#[tokio::test]
async fn listed_records_are_the_records_read_alone() {
    let (shop, _) = shop_with(ShopOptions {
        keep_unmodelled: true,
        ..ShopOptions::unlimited()
    })
    .await;
    let mut extra = serde_json::Map::new();
    extra.insert("meta_title".into(), json!("Lampă de birou"));
    extra.insert("cost_gross".into(), json!(41.5));
    let mut full = Product::basic("LMP-1", "Lampă", 99.9, 4);
    full.ext_ref = Some("E-1".into());
    full.description = "<p>cu braț</p>".into();
    full.weight = Some(1.25);
    full.extra = extra;
    let full = shop.create_product(full).unwrap();
    shop.create_product(Product::basic("LMP-2", "Bec", 5.0, 40))
        .unwrap();

    let (_, _, listed) = shop_get(&shop, "/products?limit=10").await;
    let (_, _, with_variants) = shop_get(&shop, "/products?limit=10&include=variants").await;
    let listed = listed["data"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    for (plain, with) in listed.iter().zip(with_variants["data"].as_array().unwrap()) {
        let (_, _, alone) = shop_get(&shop, &format!("/products/{}", plain["id"])).await;
        assert_eq!(with, &alone["data"], "with variants: as read alone");
        let mut alone = alone["data"].as_object().unwrap().clone();
        assert!(alone.remove("variants").unwrap().is_array());
        assert_eq!(
            plain.as_object().unwrap(),
            &alone,
            "without: the same less its variants"
        );
    }
    let first = listed[0].as_object().unwrap();
    let keys: Vec<&str> = first.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "id",
            "type",
            "sku",
            "ext_ref",
            "name",
            "description",
            "status",
            "price_net",
            "price_gross",
            "tax_id",
            "stock",
            "weight",
            "created_at",
            "updated_at",
            "meta_title",
            "cost_gross"
        ]
    );
    assert_eq!(first["id"], json!(full.id));
    assert_eq!(first["type"], "basic");
    assert_eq!(first["ext_ref"], "E-1");
    assert_eq!(first["description"], "<p>cu braț</p>");
    assert_eq!(first["price_gross"], json!(99.9));
    assert_eq!(first["weight"], json!(1.25));
    assert_eq!(first["cost_gross"], json!(41.5));
    assert_eq!(first["updated_at"], "2026-03-01T09:00:00.000Z");
    let (_, _, some) = shop_get(&shop, "/products?limit=10&fields=sku,stock").await;
    assert_eq!(
        some["data"][1],
        json!({"id": listed[1]["id"], "sku": "LMP-2", "stock": 40})
    );
    let (_, _, none) = shop_get(&shop, "/products?limit=10&status=inactive").await;
    assert_eq!(none["data"], json!([]));

    let (erp, _) = erp().await;
    let mut p = ErpProduct::new("LMP-1", "Lampă", 99.9);
    p.extra.insert("seoTitle".into(), json!("Lampă de birou"));
    erp.create_product(p).unwrap();
    let token = erp_token(&erp).await;
    let (_, _, listed) = erp_get(&erp, &token, "/products?limitPerPage=10").await;
    let (_, _, alone) = erp_get(&erp, &token, "/products/LMP-1").await;
    assert_eq!(listed["status"], 200);
    assert_eq!(listed["statusMessage"], "Success");
    assert_eq!(listed["data"][0], alone["data"]);
    let product = listed["data"][0].as_object().unwrap();
    assert_eq!(product["seoTitle"], "Lampă de birou");
    assert_eq!(product["vatPercentage"], json!(19.0));
    let stock = product["stock"].as_array().unwrap();
    assert_eq!(stock.len(), erp.warehouses().len());
    assert_eq!(
        stock[0],
        json!({"warehouse": erp.warehouses()[0], "quantity": 0})
    );
    assert_eq!(product.keys().next_back().unwrap(), "stock");
    let (_, _, by_code) = erp_get(&erp, &token, "/products?code=LMP-1").await;
    assert_eq!(by_code["data"], json!([alone["data"]]));
    let (_, _, none) = erp_get(&erp, &token, "/products?code=NOPE").await;
    assert_eq!(none["data"], json!([]));
}

#[tokio::test]
async fn shop_rejects_a_limit_over_100() {
    let (shop, _) = shop().await;
    let (status, _, body) = shop_get(&shop, "/products?limit=101").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["name"], "ValidationError");
    let (shop, _) = shop_with(ShopOptions {
        clamp_limit: true,
        ..ShopOptions::unlimited()
    })
    .await;
    assert_eq!(shop_get(&shop, "/products?limit=500").await.0, 200);
}

#[tokio::test]
async fn shop_rejects_a_duplicate_sku_with_the_error_shape() {
    let (shop, _) = shop().await;
    let body = json!({"sku": "LED-1", "name": "Banda LED", "price_gross": 50.0, "stock": 3});
    let (status, _, created) =
        shop_call(&shop, Method::POST, "/products", Some(body.clone())).await;
    assert_eq!(status, 201);
    assert_eq!(created["data"]["sku"], "LED-1");
    let (status, _, err) = shop_call(&shop, Method::POST, "/products", Some(body)).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["name"], "ValidationError");
    assert!(err["error"]["message"].as_str().unwrap().contains("LED-1"));
    let (status, _, found) = shop_get(&shop, "/products?sku=LED-1").await;
    assert_eq!(status, 200);
    assert_eq!(found["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn shop_enforces_the_multi_variant_rule_and_unknown_fields() {
    let (shop, _) = shop().await;
    let parent = json!({
        "type": "multi_variant", "sku": "TSHIRT", "name": "Tricou",
        "variants": [{"sku": "TSHIRT-M", "stock": 4, "price_gross": 59.0,
                      "variant_options": [{"name": "Marime", "value": "M"}]}]
    });
    let (status, _, created) = shop_call(&shop, Method::POST, "/products", Some(parent)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["data"]["id"].as_u64().unwrap();
    let variant_id = created["data"]["variants"][0]["id"].as_u64().unwrap();
    let path = format!("/products/{id}");
    let (status, _, err) = shop_call(&shop, Method::PATCH, &path, Some(json!({"stock": 5}))).await;
    assert_eq!(status, 400);
    assert!(err["error"]["message"].as_str().unwrap().contains("stock"));
    let (status, _, _) = shop_call(
        &shop,
        Method::PATCH,
        &path,
        Some(json!({"price_gross": 1.0})),
    )
    .await;
    assert_eq!(status, 400);
    let ok = json!({"variants": [{"id": variant_id, "stock": 9}]});
    let (status, _, patched) = shop_call(&shop, Method::PATCH, &path, Some(ok)).await;
    assert_eq!(status, 200);
    assert_eq!(patched["data"]["variants"][0]["stock"], 9);
    // Unknown fields are refused unless the client asks to ignore them.
    let unknown = json!({"name": "Tricou nou", "colour_hint": "red"});
    let (status, _, _) = shop_call(&shop, Method::PATCH, &path, Some(unknown.clone())).await;
    assert_eq!(status, 400);
    let lenient = format!("{path}?ignore_nonexistent_fields=1");
    let (status, _, patched) = shop_call(&shop, Method::PATCH, &lenient, Some(unknown)).await;
    assert_eq!(status, 200);
    assert_eq!(patched["data"]["name"], "Tricou nou");
    assert_eq!(
        shop.product_by_sku("TSHIRT-M").unwrap().kind,
        ProductType::MultiVariant
    );
}

#[tokio::test]
async fn shop_updated_after_returns_only_later_changes() {
    let (shop, clock) = shop().await;
    shop.seed_products(30, 1);
    let cursor = "2026-03-01T09:00:00.000Z";
    let (_, _, body) = shop_get(&shop, &format!("/products?updated_after={cursor}")).await;
    assert_eq!(body["data"].as_array().unwrap().len(), 0);
    clock.advance(Duration::from_secs(60));
    let changed = shop.update_product(12, |p| p.stock = Some(99)).unwrap();
    assert_eq!(
        changed.updated_at,
        start_time() + chrono::Duration::seconds(60)
    );
    let (_, _, body) = shop_get(&shop, &format!("/products?updated_after={cursor}")).await;
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["stock"], 99);
    assert_eq!(data[0]["updated_at"], "2026-03-01T09:01:00.000Z");
    let (status, _, _) = shop_get(&shop, "/products?updated_after=yesterday").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn shop_orders_follow_the_state_machine_and_lock_after_export() {
    let (shop, _) = shop().await;
    let order = shop
        .create_order(Order::new("ana@example.com", &[("SKU-000001", 2, 10.0)]))
        .unwrap();
    assert_eq!(order.number, "1001");
    assert_eq!(order.total_gross, 20.0);
    let path = format!("/orders/{}", order.id);
    let patch = |s: &str| json!({"shipping_status": s});
    assert_eq!(
        shop_call(&shop, Method::PATCH, &path, Some(patch("confirmed")))
            .await
            .0,
        200
    );
    let (status, _, err) = shop_call(&shop, Method::PATCH, &path, Some(patch("awaiting"))).await;
    assert_eq!(status, 400, "backwards: {err}");
    assert_eq!(
        shop_call(&shop, Method::PATCH, &path, Some(patch("bogus")))
            .await
            .0,
        400
    );
    let (status, _, _) = shop_call(
        &shop,
        Method::PATCH,
        &path,
        Some(json!({"payment_status": "canceled"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, locked) = shop_call(&shop, Method::POST, &format!("{path}/lock"), None).await;
    assert_eq!(status, 200);
    assert_eq!(locked["data"]["locked"], true);
    let lines = json!({"lines": [{"sku": "SKU-000001", "quantity": 3, "unit_price_gross": 10.0}]});
    let (status, _, err) = shop_call(&shop, Method::PATCH, &path, Some(lines)).await;
    assert_eq!(status, 400);
    assert!(err["error"]["message"].as_str().unwrap().contains("locked"));
    let after_export = json!({"shipping_status": "shipped", "awb": "AWB123",
        "invoice_number": "FCT 7", "invoice_url": "http://erp/inv/7"});
    let (status, _, body) = shop_call(&shop, Method::PATCH, &path, Some(after_export)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["awb"], "AWB123");
    assert_eq!(
        shop_call(&shop, Method::PATCH, &path, Some(patch("cancelled")))
            .await
            .0,
        400
    );
    assert_eq!(
        shop_call(&shop, Method::PATCH, &path, Some(patch("delivered")))
            .await
            .0,
        200
    );
    let (_, _, list) = shop_get(&shop, "/orders?shipping_status=delivered").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    // An order born elsewhere can be posted.
    let born = json!({"channel_name": "erp", "customer": {"email": "b@example.com"},
        "lines": [{"sku": "SKU-000002", "quantity": 1, "unit_price_gross": 5.0}]});
    let (status, _, created) = shop_call(&shop, Method::POST, "/orders", Some(born)).await;
    assert_eq!(status, 201);
    assert_eq!(created["data"]["number"], "1002");
}

/// A webhook receiver that forwards (headers, body) of each delivery.
async fn receiver() -> (String, mpsc::UnboundedReceiver<(HeaderMap, Bytes)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), rx)
}

#[tokio::test]
async fn shop_webhooks_are_signed_and_can_be_delivered_twice() {
    let (url, mut rx) = receiver().await;
    let secret = "hook-secret";
    let (shop, _) = shop_with(ShopOptions {
        webhook: Some(WebhookConfig {
            url,
            secret: secret.to_owned(),
        }),
        ..ShopOptions::unlimited()
    })
    .await;
    let order = shop
        .create_order(Order::new("a@example.com", &[("SKU-1", 1, 3.0)]))
        .unwrap();
    shop.flush_webhooks().await;
    let (headers, body) = rx.recv().await.unwrap();
    let signature = headers[SIGNATURE_HEADER].to_str().unwrap();
    assert_eq!(signature, sign(&body, secret));
    let payload: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(payload["event"], "order.created");
    assert_eq!(payload["number"], order.number);
    assert_eq!(payload["occurred_at"], "2026-03-01T09:00:00.000Z");

    shop.faults().update(|f| f.duplicate_webhooks = true);
    shop.set_shipping_status(&order.id, "confirmed").unwrap();
    shop.flush_webhooks().await;
    let (h1, b1) = rx.recv().await.unwrap();
    let (h2, b2) = rx.recv().await.unwrap();
    assert_eq!(b1, b2);
    assert_eq!(h1[DELIVERY_ID_HEADER], h2[DELIVERY_ID_HEADER]);
    let payload: Value = serde_json::from_slice(&b1).unwrap();
    assert_eq!(payload["event"], "order.status_changed");
    assert_eq!(payload["shipping_status"], "confirmed");
    assert_eq!(shop.webhook_deliveries().len(), 3);
}

#[tokio::test]
async fn shop_token_bucket_answers_429_with_retry_after() {
    let (shop, clock) = shop_with(ShopOptions {
        rate_limit: Some(TokenBucket {
            rate_per_sec: 4.0,
            burst: 4.0,
            send_retry_after: true,
        }),
        ..ShopOptions::default()
    })
    .await;
    for _ in 0..4 {
        assert_eq!(shop_get(&shop, "/products").await.0, 200);
    }
    let (status, headers, body) = shop_get(&shop, "/products").await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body["error"]["name"], "TooManyRequests");
    clock.advance(Duration::from_millis(250));
    assert_eq!(shop_get(&shop, "/products").await.0, 200);
    shop.set_rate_limit(Some(TokenBucket {
        rate_per_sec: 1.0,
        burst: 1.0,
        send_retry_after: false,
    }));
    shop_get(&shop, "/products").await;
    let (status, headers, _) = shop_get(&shop, "/products").await;
    assert_eq!(status, 429);
    assert!(headers.get("retry-after").is_none());
}

// ---------------------------------------------------------------- ERP

#[tokio::test]
async fn erp_tokens_expire_by_the_clock() {
    let (erp, clock) = erp_with(ErpOptions {
        token_ttl: Duration::from_secs(600),
        ..ErpOptions::unlimited()
    })
    .await;
    assert_eq!(token_request(&erp, "x", "y").await.0, 401);
    let token = erp_token(&erp).await;
    let (status, _, body) = erp_get(&erp, &token, "/products").await;
    assert_eq!(status, 200);
    assert_eq!(body["statusMessage"], "Success");
    assert_eq!(
        erp_call(&erp, "nope", Method::GET, "/products", None)
            .await
            .0,
        401
    );
    clock.advance(Duration::from_secs(600));
    let (status, _, body) = erp_get(&erp, &token, "/products").await;
    assert_eq!(status, 401);
    assert_eq!(body["status"], 401);
    let fresh = erp_token(&erp).await;
    assert_eq!(
        erp_call(&erp, &fresh, Method::GET, "/products", None)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn erp_business_errors_are_http_200_with_error_text() {
    let (erp, _) = erp().await;
    erp.seed_products(3, 1);
    let token = erp_token(&erp).await;
    let mut unknown_series = order_body(None, "1001", "SKU-000001");
    unknown_series["seriesName"] = json!("XYZ");
    let mut missing_client = order_body(None, "1001", "SKU-000001");
    missing_client.as_object_mut().unwrap().remove("client");
    for (body, needle) in [
        (unknown_series, "Seria XYZ"),
        (order_body(None, "1001", "NOPE"), "NOPE"),
        (missing_client, "Clientul"),
    ] {
        let (status, _, resp) = erp_call(&erp, &token, Method::POST, "/orders", Some(body)).await;
        assert_eq!(status, 200);
        assert_eq!(resp["statusMessage"], "Success");
        assert!(resp["data"].is_null());
        assert!(
            resp["errorText"].as_str().unwrap().contains(needle),
            "{resp}"
        );
    }
    assert!(erp.orders().is_empty());
    let (status, _, resp) = erp_call(
        &erp,
        &token,
        Method::POST,
        "/orders",
        Some(json!({"lines": 5})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(resp["status"], 400);
}

#[tokio::test]
async fn erp_idempotency_key_returns_the_same_document_and_numbers_are_per_series() {
    let (erp, _) = erp_with(ErpOptions {
        series: vec!["CMD".into(), "WEB".into()],
        ..ErpOptions::unlimited()
    })
    .await;
    erp.seed_products(3, 1);
    let token = erp_token(&erp).await;
    let post = |body: Value| {
        let token = token.clone();
        let erp = &erp;
        async move {
            erp_call(erp, &token, Method::POST, "/orders", Some(body))
                .await
                .2["data"]
                .clone()
        }
    };
    let first = post(order_body(Some("shop-1001"), "1001", "SKU-000001")).await;
    assert_eq!(first["number"], 1);
    assert_eq!(first["duplicate"], false);
    assert_eq!(first["status"], "new");
    let again = post(order_body(Some("shop-1001"), "1001", "SKU-000001")).await;
    assert_eq!(again["number"], 1);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["duplicate"], true);
    // Without a key a retry is a new document: the duplicate shows up.
    assert_eq!(
        post(order_body(None, "1002", "SKU-000002")).await["number"],
        2
    );
    assert_eq!(
        post(order_body(None, "1002", "SKU-000002")).await["number"],
        3
    );
    assert_eq!(erp.orders_by_reference("1002").len(), 2);
    let mut web = order_body(None, "1003", "SKU-000003");
    web["seriesName"] = json!("WEB");
    assert_eq!(post(web.clone()).await["number"], 1);
    assert_eq!(post(web).await["number"], 2);
    let (_, _, found) = erp_get(&erp, &token, "/orders?reference=1001").await;
    assert_eq!(found["data"].as_array().unwrap().len(), 1);
    let id = first["id"].as_u64().unwrap();
    let (_, _, one) = erp_get(&erp, &token, &format!("/orders/{id}")).await;
    assert_eq!(one["data"]["lines"][0]["quantity"], 2);
}

#[tokio::test]
async fn an_erp_without_idempotency_places_an_order_sent_twice_twice() {
    let (erp, _) = erp_with(ErpOptions {
        idempotency: false,
        ..ErpOptions::unlimited()
    })
    .await;
    erp.seed_products(1, 1);
    let token = erp_token(&erp).await;
    for _ in 0..2 {
        let (status, _, answer) = erp_call(
            &erp,
            &token,
            Method::POST,
            "/orders",
            Some(order_body(Some("shop-1001"), "1001", "SKU-000001")),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["data"]["duplicate"], false);
    }
    assert_eq!(erp.orders_by_reference("1001").len(), 2);
}

#[tokio::test]
async fn erp_offset_paging_ends_with_a_short_page() {
    let (erp, _) = erp().await;
    erp.seed_products(260, 2);
    let token = erp_token(&erp).await;
    let mut codes = HashSet::new();
    let mut offset = 0;
    let mut pages = 0;
    loop {
        let path = format!("/products?offset={offset}&limitPerPage=100");
        let (_, _, body) = erp_get(&erp, &token, &path).await;
        let data = body["data"].as_array().unwrap();
        pages += 1;
        for p in data {
            codes.insert(p["code"].as_str().unwrap().to_owned());
            assert_eq!(p["stock"].as_array().unwrap().len(), 2);
        }
        if data.len() < 100 {
            break;
        }
        offset += 100;
    }
    assert_eq!((pages, codes.len()), (3, 260));
    let (status, _, _) = erp_get(&erp, &token, "/products?limitPerPage=251").await;
    assert_eq!(status, 400);
    let (_, _, stock) = erp_get(&erp, &token, "/stock?limitPerPage=250&warehouse=Magazin").await;
    assert_eq!(stock["data"].as_array().unwrap().len(), 250);
}

#[tokio::test]
async fn erp_stock_changes_carry_their_own_stamp() {
    let (erp, clock) = erp().await;
    erp.seed_products(10, 3);
    let token = erp_token(&erp).await;
    clock.advance(Duration::from_secs(30));
    let since = "2026-03-01T09:00:30.000Z";
    let path = format!("/stock?changedSince={since}");
    assert_eq!(erp_get(&erp, &token, &path).await.2["data"], json!([]));
    let (_, _, put) = erp_call(
        &erp,
        &token,
        Method::PUT,
        "/stock/SKU-000004",
        Some(json!({"warehouse": "Magazin", "quantity": 12})),
    )
    .await;
    assert_eq!(put["data"]["quantity"], 12);
    erp.set_stock("SKU-000005", "Depozit central", 1).unwrap();
    let (_, _, body) = erp_get(&erp, &token, &path).await;
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["code"], "SKU-000004");
    assert_eq!(data[0]["updatedAt"], since);
    // The product itself did not change.
    let (_, _, products) = erp_get(
        &erp,
        &token,
        &format!("/products?updatedAfter={}", "2026-03-01T09:00:00.000Z"),
    )
    .await;
    assert_eq!(products["data"], json!([]));
    let (_, _, unknown) = erp_call(
        &erp,
        &token,
        Method::PUT,
        "/stock/SKU-000004",
        Some(json!({"warehouse": "Nicaieri", "quantity": 1})),
    )
    .await;
    assert!(unknown["errorText"].as_str().unwrap().contains("Nicaieri"));
}

#[tokio::test]
async fn erp_burst_of_calls_locks_the_client_out() {
    let (erp, clock) = erp_with(ErpOptions {
        burst_limit: Some(BurstLimit {
            max_calls: 5,
            ..BurstLimit::default()
        }),
        ..ErpOptions::default()
    })
    .await;
    let token = erp_token(&erp).await;
    for _ in 0..4 {
        assert_eq!(erp_get(&erp, &token, "/clients").await.0, 200);
    }
    let (status, headers, _) = erp_get(&erp, &token, "/clients").await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "600");
    clock.advance(Duration::from_secs(300));
    let (status, headers, _) = erp_get(&erp, &token, "/clients").await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "300");
    clock.advance(Duration::from_secs(300));
    assert_eq!(erp_get(&erp, &token, "/clients").await.0, 200);
    // Calls spread over the window never lock out.
    erp.set_burst_limit(Some(BurstLimit {
        max_calls: 2,
        status: 403,
        ..BurstLimit::default()
    }));
    for _ in 0..6 {
        clock.advance(Duration::from_secs(5));
        assert_eq!(erp_get(&erp, &token, "/clients").await.0, 200);
    }
    erp_get(&erp, &token, "/clients").await;
    assert_eq!(erp_get(&erp, &token, "/clients").await.0, 403);
}

#[tokio::test]
async fn erp_batch_answers_per_item_and_can_fail_in_part() {
    let (erp, _) = erp().await;
    let token = erp_token(&erp).await;
    let items: Vec<Value> = (0..10)
        .map(|i| json!({"code": format!("B-{i}"), "name": format!("Produs {i}"), "price": 10.0}))
        .chain([json!({"name": "fara cod"})])
        .collect();
    let batch = |items: Vec<Value>| {
        let body = json!({"items": items});
        erp_call(&erp, &token, Method::POST, "/products/batch", Some(body))
    };
    let (_, _, body) = batch(items).await;
    let results = body["data"].as_array().unwrap();
    assert_eq!(results.len(), 11);
    assert!(results[..10].iter().all(|r| r["ok"] == true));
    assert_eq!(results[10]["ok"], false);
    erp.faults().update(|f| f.batch_failure_rate = 0.5);
    let items: Vec<Value> = (0..20)
        .map(|i| json!({"code": format!("B-{i}"), "name": "Redenumit"}))
        .collect();
    let (_, _, body) = batch(items).await;
    let results = body["data"].as_array().unwrap();
    let failed = results.iter().filter(|r| r["ok"] == false).count();
    assert!(failed > 0 && failed < 20, "partial: {failed}");
    assert!(
        results
            .iter()
            .filter(|r| r["ok"] == false)
            .all(|r| r["errorText"].is_string())
    );
    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({"code": format!("C-{i}"), "name": "x"}))
        .collect();
    assert_eq!(batch(too_many).await.0, 400);
}

#[tokio::test]
async fn erp_handle_mutations_show_in_the_api() {
    let (erp, clock) = erp().await;
    erp.seed_products(5, 1);
    erp.create_product(ErpProduct::new("EXTRA", "Extra", 1.5))
        .unwrap();
    assert!(
        erp.create_product(ErpProduct::new("EXTRA", "Extra", 1.5))
            .is_err()
    );
    let token = erp_token(&erp).await;
    let (_, _, created) = erp_call(
        &erp,
        &token,
        Method::POST,
        "/orders",
        Some(order_body(Some("k"), "1001", "SKU-000001")),
    )
    .await;
    let id = created["data"]["id"].as_u64().unwrap();
    clock.advance(Duration::from_secs(10));
    erp.set_order_status(id, "confirmed").unwrap();
    erp.set_awb(id, "AWB-9").unwrap();
    let invoiced = erp.issue_invoice(id).unwrap();
    assert_eq!(invoiced.status, "invoiced");
    assert_eq!(invoiced.invoice.as_ref().unwrap().number, 1);
    let phone = erp
        .create_order(ErpOrderDraft {
            channel: "phone".into(),
            client_name: "Ion Pop".into(),
            client_email: "ion@example.com".into(),
            lines: vec![("SKU-000002".into(), 1)],
            series: None,
        })
        .unwrap();
    assert_eq!(phone.reference, None);
    let path = "/orders?updatedAfter=2026-03-01T09:00:00.000Z";
    let (_, _, body) = erp_get(&erp, &token, path).await;
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["awb"], "AWB-9");
    assert_eq!(data[0]["invoice"]["series"], "FCT");
    assert_eq!(data[1]["channel"], "phone");
    let (_, _, clients) = erp_get(&erp, &token, "/clients?email=ion@example.com").await;
    assert_eq!(clients["data"][0]["name"], "Ion Pop");
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn injected_server_errors_rate_limits_and_latency() {
    let (shop, _) = shop_with(ShopOptions {
        faults: Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
        ..ShopOptions::unlimited()
    })
    .await;
    let (status, _, body) = shop_get(&shop, "/products").await;
    assert_eq!(status, 503);
    assert!(body["error"]["name"].is_string());
    shop.faults().set(Faults {
        rate_limit_rate: 1.0,
        retry_after_secs: Some(7),
        ..Faults::default()
    });
    let (status, headers, _) = shop_get(&shop, "/products").await;
    assert_eq!(
        (status, &headers["retry-after"]),
        (StatusCode::TOO_MANY_REQUESTS, &"7".parse().unwrap())
    );
    shop.faults().set(Faults {
        latency_ms: 5,
        ..Faults::default()
    });
    assert_eq!(shop_get(&shop, "/products").await.0, 200);
    // A share below one fails some requests and not others.
    shop.faults().set(Faults {
        error_rate: 0.5,
        ..Faults::default()
    });
    let mut statuses = HashSet::new();
    for _ in 0..20 {
        statuses.insert(shop_get(&shop, "/products").await.0);
    }
    assert!(
        statuses.contains(&StatusCode::OK) && statuses.contains(&StatusCode::SERVICE_UNAVAILABLE)
    );
}

#[tokio::test]
async fn fail_next_rules_hit_only_matching_requests() {
    let (shop, _) = shop().await;
    shop.seed_products(2, 1);
    shop.faults()
        .fail_next(FailRule::new("PATCH", "/api/v2/products", 502, 2));
    assert_eq!(shop_get(&shop, "/products/1").await.0, 200);
    let patch = || {
        shop_call(
            &shop,
            Method::PATCH,
            "/products/1",
            Some(json!({"stock": 1})),
        )
    };
    assert_eq!(patch().await.0, 502);
    assert_eq!(patch().await.0, 502);
    assert_eq!(patch().await.0, 200);
    assert_eq!(shop.product(1).unwrap().stock, Some(1));
}

#[tokio::test]
async fn a_held_response_trips_a_short_client_timeout() {
    let (shop, _) = shop().await;
    shop.faults()
        .fail_next(FailRule::new("GET", "/api/v2/products", 504, 1).hold(Duration::from_secs(5)));
    let (key, secret) = shop.credentials();
    let client = Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let impatient_get = || {
        client
            .get(format!("{}/products", shop.api_url()))
            .basic_auth(&key, Some(&secret))
            .send()
    };
    assert!(impatient_get().await.unwrap_err().is_timeout());
    assert_eq!(shop_get(&shop, "/products").await.0, 200);
    // Random timeouts: a share of requests is held.
    shop.faults().set(Faults {
        timeout_rate: 1.0,
        timeout_ms: 5_000,
        ..Faults::default()
    });
    assert!(impatient_get().await.unwrap_err().is_timeout());
}

#[tokio::test]
async fn an_order_post_can_be_applied_and_then_lost() {
    let (erp, _) = erp().await;
    erp.seed_products(2, 1);
    let token = erp_token(&erp).await;
    erp.faults()
        .fail_next(FailRule::new("POST", "/api/orders", 500, 1).after_apply());
    let body = order_body(Some("shop-1001"), "1001", "SKU-000001");
    let (status, _, _) = erp_call(&erp, &token, Method::POST, "/orders", Some(body.clone())).await;
    assert_eq!(status, 500);
    // The write happened although the client saw a failure; the key resolves the doubt.
    assert_eq!(erp.orders_by_reference("1001").len(), 1);
    let (_, _, retried) = erp_call(&erp, &token, Method::POST, "/orders", Some(body)).await;
    assert_eq!(retried["data"]["duplicate"], true);
    assert_eq!(erp.orders().len(), 1);
    // Applied, then held past the client's timeout.
    erp.faults().fail_next(
        FailRule::new("POST", "/api/orders", 504, 1)
            .after_apply()
            .hold(Duration::from_secs(5)),
    );
    let client = Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = client
        .post(format!("{}/orders", erp.api_url()))
        .bearer_auth(&token)
        .json(&order_body(None, "1002", "SKU-000002"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(erp.orders_by_reference("1002").len(), 1);
}

#[tokio::test]
async fn page_drift_makes_naive_paging_skip_one_and_repeat_one() {
    let (shop, _) = shop().await;
    shop.seed_products(30, 4);
    shop.faults().update(|f| f.page_drift = true);
    let mut url = format!("{}/products?limit=10", shop.api_url());
    let mut seen = Vec::new();
    loop {
        let (_, _, body) = shop_get(&shop, &url).await;
        seen.extend(
            body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["sku"].as_str().unwrap().to_owned()),
        );
        match body["meta"]["links"]["next"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    let unique: HashSet<_> = seen.iter().collect();
    assert!(unique.len() < 30, "a record was skipped");
    assert!(unique.len() < seen.len(), "a record was seen twice");

    let (erp, _) = erp().await;
    erp.seed_products(30, 4);
    erp.faults().update(|f| f.page_drift = true);
    let token = erp_token(&erp).await;
    let mut codes = Vec::new();
    for offset in (0..).step_by(10) {
        let path = format!("/products?offset={offset}&limitPerPage=10");
        let (_, _, body) = erp_get(&erp, &token, &path).await;
        let data = body["data"].as_array().unwrap().clone();
        codes.extend(data.iter().map(|p| p["code"].as_str().unwrap().to_owned()));
        if data.len() < 10 {
            break;
        }
    }
    assert!(codes.iter().collect::<HashSet<_>>().len() < 30);
}

// ---------------------------------------------------------------- counters, control API, seeding

#[tokio::test]
async fn counters_count_by_route_template_and_skip_control_calls() {
    let (shop, _) = shop().await;
    shop.seed_products(3, 1);
    shop_get(&shop, "/products").await;
    shop_get(&shop, "/products/1").await;
    shop_get(&shop, "/products/2").await;
    shop_call(
        &shop,
        Method::PATCH,
        "/products/2",
        Some(json!({"stock": 4})),
    )
    .await;
    let c = shop.counters();
    assert_eq!(c.count("GET", "/api/v2/products"), 1);
    assert_eq!(c.count("GET", "/api/v2/products/{id}"), 2);
    assert_eq!(c.count("PATCH", "/api/v2/products/{id}"), 1);
    assert_eq!(c.writes(), 1);
    let (_, _, counted) = send(
        http().get(format!("{}/__sim/counters", shop.base_url())),
        None,
    )
    .await;
    assert_eq!(counted["total"], 4);
    let url = format!("{}/__sim/orders/999", shop.base_url());
    let (status, _, _) = control(url, json!({"shipping_status": "shipped"})).await;
    assert_eq!(status, 404);
    assert_eq!(c.total(), 4);
    c.reset();
    assert_eq!(c.total(), 0);

    let (erp, _) = erp().await;
    let token = erp_token(&erp).await;
    erp_get(&erp, &token, "/clients").await;
    assert_eq!(erp.counters().count("POST", "/api/authorize/token"), 1);
    assert_eq!(erp.counters().writes(), 0);
}

#[tokio::test]
async fn the_control_api_drives_faults_and_mutations() {
    let (shop, _) = shop().await;
    let order = shop
        .create_order(Order::new("x@example.com", &[("SKU-1", 1, 1.0)]))
        .unwrap();
    let base = shop.base_url();
    let edit = json!({"shipping_status": "shipped", "awb": "A1"});
    let (status, _, _) = control(format!("{base}/__sim/orders/{}", order.id), edit).await;
    assert_eq!(status, 200);
    assert_eq!(shop.order(&order.id).unwrap().awb.as_deref(), Some("A1"));
    let rule = json!({"method": "GET", "path_prefix": "/api/v2/orders", "status": 500, "count": 1});
    control(format!("{base}/__sim/faults/fail-next"), rule).await;
    assert_eq!(shop_get(&shop, "/orders").await.0, 500);
    let faults = json!({"error_rate": 1.0, "error_status": 502});
    control(format!("{base}/__sim/faults"), faults).await;
    assert_eq!(shop_get(&shop, "/orders").await.0, 502);

    let (erp, _) = erp().await;
    erp.seed_products(2, 1);
    let base = erp.base_url();
    let draft = json!({"client_name": "Ion", "client_email": "i@example.com", "lines": [["SKU-000001", 2]]});
    let (_, _, placed) = control(format!("{base}/__sim/orders"), draft).await;
    let id = placed["data"]["id"].as_u64().unwrap();
    let edit = json!({"status": "confirmed", "invoice": true});
    let (_, _, edited) = control(format!("{base}/__sim/orders/{id}"), edit).await;
    assert_eq!(edited["data"]["status"], "invoiced");
}

#[tokio::test]
async fn both_sides_share_a_seeded_catalogue_and_seeding_scales() {
    let (shop, _) = shop().await;
    let (erp, _) = erp().await;
    let items = erpsync_sim::seed_both(&shop, &erp, 100_000, 9);
    assert_eq!(
        (shop.product_count(), erp.product_count()),
        (100_000, 100_000)
    );
    let item = &items[54_320];
    let p: Product = shop.product_by_sku(&item.sku).unwrap();
    assert_eq!(p.price_gross, Some(item.price_gross));
    assert_eq!(p.stock, Some(item.stock));
    let e = erp.product(&item.sku).unwrap();
    assert_eq!(e.price, item.price_gross);
    assert_eq!(erp.total_stock(&item.sku), item.stock);
    let orders = shop.seed_orders(10, 9);
    assert_eq!(orders.len(), 10);
    assert!(
        orders
            .iter()
            .all(|o| o.lines.iter().all(|l| erp.product(&l.sku).is_some()))
    );
    shop.seed_customers(5, 9);
    assert_eq!(shop.customers().len(), 5);
    erp.seed_orders(3, 9);
    assert_eq!(erp.orders().len(), 3);
}

#[tokio::test]
async fn shop_customers_filter_by_email_and_refuse_duplicates() {
    let (shop, _) = shop().await;
    let body = json!({"email": "ana@example.com", "first_name": "Ana", "last_name": "Pop"});
    let (status, _, created) =
        shop_call(&shop, Method::POST, "/customers", Some(body.clone())).await;
    assert_eq!(status, 201);
    assert_eq!(
        shop_call(&shop, Method::POST, "/customers", Some(body))
            .await
            .0,
        400
    );
    let id = created["data"]["id"].as_u64().unwrap();
    let (status, _, _) = shop_call(
        &shop,
        Method::PATCH,
        &format!("/customers/{id}"),
        Some(json!({"phone": "0722"})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, _, found) = shop_get(&shop, "/customers?email=ANA@example.com").await;
    assert_eq!(found["data"][0]["phone"], "0722");
}

#[tokio::test]
async fn suppliers_are_unique_by_fiscal_code_on_both_sides() {
    // Shop: 400 with the error shape on a code already in use (prefix or not), a bad e-mail
    // or an unknown field; the search ignores the prefix.
    let (shop, _) = shop().await;
    let (status, _, created) = shop_call(
        &shop,
        Method::POST,
        "/suppliers",
        Some(json!({"name": "Nord Distributie SRL", "vat_code": "RO12345678"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["data"]["status"], "active");
    for bad in [
        json!({"name": "Alta firma", "vat_code": "12345678"}),
        json!({"name": "Fara cod"}),
        json!({"name": "Email gresit", "vat_code": "22", "email": "nu e adresa"}),
        json!({"name": "Camp necunoscut", "vat_code": "33", "iban": "RO49AAAA"}),
    ] {
        let (status, _, body) = shop_call(&shop, Method::POST, "/suppliers", Some(bad)).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["name"], "ValidationError");
    }
    let (_, _, found) = shop_get(&shop, "/suppliers?vat_code=12345678").await;
    assert_eq!(found["data"][0]["id"], created["data"]["id"]);
    assert_eq!(shop.suppliers().len(), 1);

    // ERP: business errors as HTTP 200 with `errorText`; PUT changes only what it carries.
    let (erp, clock) = erp().await;
    let token = erp_token(&erp).await;
    let (status, _, first) = erp_call(
        &erp,
        &token,
        Method::POST,
        "/suppliers",
        Some(json!({"name": "Vest Metal SRL", "vatCode": "RO 87654321", "email": "a@vest.ro"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(first["data"]["vatCode"], "RO 87654321");
    for (bad, says) in [
        (
            json!({"name": "Dublura", "vatCode": "87654321"}),
            "exista deja",
        ),
        (
            json!({"name": "Cod gresit", "vatCode": "RO12AB"}),
            "invalid",
        ),
        (
            json!({"vatCode": "11112222"}),
            "Numele furnizorului lipseste",
        ),
    ] {
        let (status, _, body) = erp_call(&erp, &token, Method::POST, "/suppliers", Some(bad)).await;
        assert_eq!(status, 200);
        assert!(body["data"].is_null(), "{body}");
        assert!(body["errorText"].as_str().unwrap().contains(says), "{body}");
    }
    let (_, _, other) = erp_call(
        &erp,
        &token,
        Method::POST,
        "/suppliers",
        Some(json!({"name": "Sud Agro SRL", "vatCode": "44556677"})),
    )
    .await;
    assert_eq!(other["data"]["active"], true);
    clock.advance(Duration::from_secs(60));
    let id = first["data"]["id"].as_u64().unwrap();
    let (_, _, changed) = erp_call(
        &erp,
        &token,
        Method::PUT,
        &format!("/suppliers/{id}"),
        Some(json!({"phone": "0256000111"})),
    )
    .await;
    assert_eq!(changed["data"]["email"], "a@vest.ro");
    assert_eq!(changed["data"]["phone"], "0256000111");
    let since = start_time() + chrono::Duration::seconds(30);
    let (_, _, later) = erp_get(
        &erp,
        &token,
        &format!(
            "/suppliers?updatedAfter={}",
            since.to_rfc3339().replace('+', "%2B")
        ),
    )
    .await;
    assert_eq!(
        later["data"].as_array().unwrap().len(),
        1,
        "only the changed one"
    );
    assert_eq!(later["data"][0]["id"], id);
    let (_, _, by_code) = erp_get(&erp, &token, "/suppliers?vatCode=87654321").await;
    assert_eq!(by_code["data"][0]["id"], id);
}

#[tokio::test]
async fn goods_received_from_a_supplier_raise_stock_all_or_nothing() {
    let (erp, clock) = erp().await;
    erp.seed_products(3, 2);
    erp.create_supplier(erpsync_sim::erp::SupplierInput {
        name: Some("Nord Distributie SRL".into()),
        vat_code: Some("RO12345678".into()),
        ..Default::default()
    })
    .unwrap();
    let token = erp_token(&erp).await;
    let warehouse = &erp.warehouses()[0];
    let before = erp.stock("SKU-000002", warehouse).unwrap();
    clock.advance(Duration::from_secs(60));

    // One unknown product refuses the whole note: no stock moves.
    let (status, _, refused) = erp_call(
        &erp,
        &token,
        Method::POST,
        "/purchases",
        Some(json!({
            "supplierVatCode": "12345678",
            "warehouse": warehouse,
            "lines": [{"code": "SKU-000002", "quantity": 5}, {"code": "NU-EXISTA", "quantity": 1}],
        })),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        refused["errorText"].as_str().unwrap().contains("NU-EXISTA"),
        "{refused}"
    );
    assert_eq!(erp.stock("SKU-000002", warehouse).unwrap(), before);

    let (_, _, note) = erp_call(
        &erp,
        &token,
        Method::POST,
        "/purchases",
        Some(json!({
            "supplierVatCode": "12345678",
            "warehouse": warehouse,
            "lines": [{"code": "SKU-000002", "quantity": 5, "price": 10.0}],
        })),
    )
    .await;
    assert_eq!(note["data"]["seriesName"], "NIR");
    assert_eq!(note["data"]["number"], 1);
    assert_eq!(note["data"]["supplier"]["vatCode"], "RO12345678");
    assert_eq!(note["data"]["total"], 50.0);
    let after = erp.stock("SKU-000002", warehouse).unwrap();
    assert_eq!(after.quantity, before.quantity + 5);
    assert!(
        after.updated_at > before.updated_at,
        "the stock row's stamp moved"
    );
    // An incremental stock read after the delivery sees exactly that row.
    let since = (erpsync::clock::Clock::now(&clock) - chrono::Duration::seconds(1)).to_rfc3339();
    let (_, _, changed) = erp_get(
        &erp,
        &token,
        &format!("/stock?changedSince={}", since.replace('+', "%2B")),
    )
    .await;
    let codes: Vec<&str> = changed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["SKU-000002"]);
    let (_, _, listed) = erp_get(&erp, &token, "/purchases").await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn shop_keeps_unmodelled_product_fields_only_when_asked() {
    let body = json!({"sku": "WIDE-1", "name": "Lampa", "price_gross": 10.0, "meta_title": "Lampa | Magazin", "cost_gross": 6.0});
    // By default the real fields the simulator does not model are accepted and dropped.
    let (shop, _) = shop().await;
    let (status, _, created) =
        shop_call(&shop, Method::POST, "/products", Some(body.clone())).await;
    assert_eq!(status, 201);
    assert!(created["data"].get("meta_title").is_none());
    // With `keep_unmodelled` they are kept and served back, and a PATCH changes them.
    let (wide, _) = shop_with(ShopOptions {
        keep_unmodelled: true,
        ..ShopOptions::unlimited()
    })
    .await;
    let (status, _, created) = shop_call(&wide, Method::POST, "/products", Some(body)).await;
    assert_eq!(status, 201);
    assert_eq!(created["data"]["meta_title"], "Lampa | Magazin");
    let path = format!("/products/{}", created["data"]["id"]);
    let (status, _, patched) = shop_call(
        &wide,
        Method::PATCH,
        &path,
        Some(json!({"cost_gross": 7.5})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(patched["data"]["cost_gross"], 7.5);
    assert_eq!(patched["data"]["meta_title"], "Lampa | Magazin");
}

#[tokio::test]
async fn counters_count_rate_limited_answers() {
    let (shop, _) = shop_with(ShopOptions {
        rate_limit: Some(TokenBucket {
            rate_per_sec: 1.0,
            burst: 1.0,
            send_retry_after: true,
        }),
        ..ShopOptions::default()
    })
    .await;
    let (first, _, _) = shop_get(&shop, "/products").await;
    let (second, _, _) = shop_get(&shop, "/products").await;
    assert_eq!((first.as_u16(), second.as_u16()), (200, 429));
    assert_eq!(shop.counters().status(429), 1);
    assert_eq!(shop.counters().status(200), 1);
}
