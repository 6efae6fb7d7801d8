//! The generic HTTP connector against real loopback servers: auth kinds, pagination kinds and
//! their guards, rate limits, retries, in-doubt writes and error classification. Waits go
//! through a `ManualClock`, so nothing here sleeps for real except the timeout tests (200 ms).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{TimeZone, Utc};
use erpsync::clock::{Clock, ManualClock};
use erpsync::config::model::{OperationConfig, SystemConfig};
use erpsync::connector::{
    CallError, CallInput, CallOutput, HttpSystem, Operation, Page, SystemSpec,
};
use futures::StreamExt;
use serde_json::{Value, json};

/// Asserts that a value matches a pattern, showing the value when it does not.
macro_rules! assert_matches {
    ($value:expr, $pattern:pat) => {{
        let value = &$value;
        assert!(matches!(value, $pattern), "{value:?}");
    }};
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    headers: HeaderMap,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn q(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }
}

/// What the server answers.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

fn reply(status: u16, body: Value) -> Reply {
    Reply {
        status,
        headers: vec![("content-type", "application/json".into())],
        body: body.to_string(),
        delay: Duration::ZERO,
    }
}

impl Reply {
    fn header(mut self, k: &'static str, v: impl Into<String>) -> Reply {
        self.headers.push((k, v.into()));
        self
    }
    fn delayed(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Requests a server is answering now, and the most it answered at once.
#[derive(Default)]
struct InFlight {
    now: std::sync::atomic::AtomicUsize,
    max: std::sync::atomic::AtomicUsize,
}

impl InFlight {
    fn max(&self) -> usize {
        self.max.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A loopback server that hands each request (and how many came before it) to `handler`.
async fn serve<F>(handler: F) -> (String, Log)
where
    F: Fn(&Seen, usize) -> Reply + Send + Sync + 'static,
{
    let (base, log, _) = serve_counted(handler).await;
    (base, log)
}

/// `serve`, counting the requests it answers at once.
async fn serve_counted<F>(handler: F) -> (String, Log, Arc<InFlight>)
where
    F: Fn(&Seen, usize) -> Reply + Send + Sync + 'static,
{
    use std::sync::atomic::Ordering::SeqCst;
    let log: Log = Arc::default();
    let flight = Arc::new(InFlight::default());
    let handler = Arc::new(handler);
    let app = Router::new().fallback({
        let log = log.clone();
        let flight = flight.clone();
        move |req: Request| {
            let log = log.clone();
            let handler = handler.clone();
            let flight = flight.clone();
            async move {
                let now = flight.now.fetch_add(1, SeqCst) + 1;
                flight.max.fetch_max(now, SeqCst);
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                let seen = Seen {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    query: url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
                        .into_owned()
                        .collect(),
                    headers: parts.headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                };
                let n = {
                    let mut l = log.lock().unwrap();
                    l.push(seen.clone());
                    l.len() - 1
                };
                let r = handler(&seen, n);
                if !r.delay.is_zero() {
                    tokio::time::sleep(r.delay).await;
                }
                flight.now.fetch_sub(1, SeqCst);
                let mut resp = Response::new(Body::from(r.body));
                *resp.status_mut() = StatusCode::from_u16(r.status).unwrap();
                for (k, v) in r.headers {
                    resp.headers_mut().insert(k, v.parse().unwrap());
                }
                resp
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/api"), log, flight)
}

fn seen(log: &Log) -> Vec<Seen> {
    log.lock().unwrap().clone()
}

fn clock() -> ManualClock {
    ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap())
}

/// A system named `shop` at `base` with the given settings and operations (JSON shaped like
/// the YAML), retries without jitter unless the settings say otherwise.
fn system(base: &str, mut settings: Value, ops: Value, clock: &ManualClock) -> HttpSystem {
    let s = settings.as_object_mut().unwrap();
    s.insert("base_url".into(), json!(base));
    s.entry("retry")
        .or_insert(json!({"initial_backoff_ms": 100, "max_backoff_ms": 1000, "jitter": false}));
    let cfg: SystemConfig = serde_json::from_value(settings).unwrap();
    let ops: BTreeMap<String, OperationConfig> = serde_json::from_value(ops).unwrap();
    let ops = ops
        .iter()
        .map(|(k, c)| (k.clone(), Arc::new(Operation::compile(c).unwrap())))
        .collect();
    let spec = SystemSpec::compile("shop", &cfg, ops, json!({"company": "ACME"})).unwrap();
    HttpSystem::new(Arc::new(spec), Arc::new(clock.clone())).unwrap()
}

/// Calls `op` with no input.
async fn call(sys: &HttpSystem, op: &str) -> Result<CallOutput, CallError> {
    sys.call(op, &CallInput::default()).await
}

/// The waits a test expects, in milliseconds.
fn ms(waits: &[u64]) -> Vec<Duration> {
    waits.iter().map(|w| Duration::from_millis(*w)).collect()
}

async fn pages(sys: &HttpSystem, op: &str) -> Vec<Result<Page, CallError>> {
    sys.list(op, CallInput::default()).collect().await
}

fn ids(pages: &[Result<Page, CallError>]) -> Vec<Vec<i64>> {
    pages
        .iter()
        .filter_map(|p| p.as_ref().ok())
        .map(|p| {
            p.records
                .iter()
                .map(|r| r["id"].as_i64().unwrap())
                .collect()
        })
        .collect()
}

fn recs(ids: std::ops::Range<i64>) -> Value {
    Value::Array(ids.map(|i| json!({"id": i})).collect())
}

// ---------------------------------------------------------------------------------------------
// Requests from templates

#[tokio::test]
async fn requests_are_rendered_from_templates() {
    let (base, log) = serve(|_, _| {
        reply(
            201,
            json!({"data": {"id": 7, "price": {"__class__": "Decimal", "decimal": "21.50"}}}),
        )
    })
    .await;
    let c = clock();
    let sys = system(
        &base,
        json!({"headers": {"X-Company": "{{vars.company}}"}, "vars": {"cif": "RO123"}}),
        json!({
            "list": {"path": "/products", "query": {"updated_after": "{{since}}", "cif": "{{system.cif}}"}},
            "list_unix": {"path": "/products", "query": {"since": "{{since}}"}, "since_format": "unix"},
            "update": {"method": "PUT", "path": "/products/{{id}}",
                       "body": {"sku": "{{key}}", "stock": "{{record.qty}}", "note": "q={{record.qty}}",
                                "shop": "{{channel}}", "fixed": 1},
                       "record": "$.data",
                       "decode": [{"marker": "__class__", "equals": "Decimal", "value": "decimal", "as": "number"}]},
            "form": {"method": "POST", "path": "/form", "body_format": "form",
                     "body": {"a": "{{record.qty}}", "b": "x y"}},
            "absolute": {"path": "{{extra_url}}"}
        }),
        &c,
    );
    call(&sys, "list").await.unwrap();
    let since = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    let input = CallInput {
        since: Some(since),
        ..Default::default()
    };
    sys.call("list", &input).await.unwrap();
    sys.call("list_unix", &input).await.unwrap();
    let mut extra = serde_json::Map::new();
    extra.insert("channel".into(), json!("ro"));
    let input = CallInput {
        record: json!({"qty": 37}),
        id: Some("812".into()),
        key: Some("LED-1".into()),
        extra,
        ..Default::default()
    };
    let out = sys.call("update", &input).await.unwrap();
    assert_eq!(out.status, 201);
    assert_eq!(out.record, Some(json!({"id": 7, "price": 21.5})));
    sys.call("form", &input).await.unwrap();
    let mut extra = serde_json::Map::new();
    extra.insert("extra_url".into(), json!(format!("{base}/elsewhere?x=1")));
    sys.call(
        "absolute",
        &CallInput {
            extra,
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let s = seen(&log);
    assert_eq!(s[0].path, "/api/products");
    assert_eq!(
        s[0].query,
        BTreeMap::from([("cif".into(), "RO123".into())]),
        "empty `since` left out"
    );
    assert_eq!(s[0].header("x-company"), Some("ACME"));
    assert_eq!(s[1].q("updated_after"), Some("2026-01-02T03:04:05Z"));
    assert_eq!(s[2].q("since"), Some("1767323045"));
    assert_eq!(
        (s[3].method.as_str(), s[3].path.as_str()),
        ("PUT", "/api/products/812")
    );
    assert_eq!(s[3].header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_str(&s[3].body).unwrap();
    assert_eq!(
        body,
        json!({"sku": "LED-1", "stock": 37, "note": "q=37", "shop": "ro", "fixed": 1})
    );
    assert_eq!(
        s[4].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(s[4].body, "a=37&b=x+y");
    assert_eq!(
        (s[5].path.as_str(), s[5].q("x")),
        ("/api/elsewhere", Some("1"))
    );
    assert!(sys.is_read_only_op("list") && !sys.is_read_only_op("update"));
    assert!(matches!(
        call(&sys, "nope").await,
        Err(CallError::UnknownOperation { .. })
    ));
    let mut extra = serde_json::Map::new();
    extra.insert("extra_url".into(), json!("http://[::1"));
    let err = sys
        .call(
            "absolute",
            &CallInput {
                extra,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_matches!(err, CallError::Render { .. });
    assert_eq!(seen(&log).len(), 6, "nothing sent");
}

#[tokio::test]
async fn build_problems_carry_paths_relative_to_the_system() {
    let cfg: SystemConfig = serde_json::from_value(json!({
        "auth": {"kind": "login", "request": {"path": "/login"}, "token_path": "$.data[", "format": "{{#if}}"},
        "headers": {"X-Bad": "{{nope x}}"},
        "errors": [{"action": "fail"}, {"when": "@.x ==", "action": "fail"}],
        "rate_limit": {"per_second": 0},
        "concurrency": 0
    }))
    .unwrap();
    let problems = SystemSpec::compile("erp", &cfg, BTreeMap::new(), json!({})).unwrap_err();
    let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "base_url",
            "headers.X-Bad",
            "auth.token_path",
            "auth.format",
            "errors.1.when",
            "rate_limit.per_second",
            "concurrency"
        ]
    );
    assert_eq!(problems[0].message, "system `erp` has no `base_url`");
    assert!(
        problems[6].message.contains("1 to 64"),
        "{}",
        problems[6].message
    );
}

// ---------------------------------------------------------------------------------------------
// Auth

#[tokio::test]
async fn fixed_credentials_basic_bearer_and_api_keys() {
    let (base, log) = serve(|s, _| {
        // Echo the credentials back in an error, as some APIs do: they must come back masked.
        if s.path.ends_with("/echo") {
            reply(
                400,
                json!({"error": s.header("authorization").unwrap_or("")}),
            )
        } else {
            reply(200, json!({}))
        }
    })
    .await;
    let c = clock();
    let ops = json!({"get": {"path": "/x"}, "echo": {"path": "/echo"}});
    let with_auth = |auth: Value| system(&base, json!({ "auth": auth }), ops.clone(), &c);
    let basic =
        with_auth(json!({"kind": "basic", "username": "mp-key", "password": "mp-secret-0001"}));
    let bearer = with_auth(json!({"kind": "bearer", "token": "bearer-token-0002"}));
    let header_key =
        with_auth(json!({"kind": "api_key", "name": "X-Api-Key", "value": "api-key-0003"}));
    let query_key = with_auth(
        json!({"kind": "api_key", "name": "key", "value": "api-key-0004", "in": "query"}),
    );
    let none = with_auth(json!({"kind": "none"}));
    for sys in [&basic, &bearer, &header_key, &query_key, &none] {
        call(sys, "get").await.unwrap();
    }
    let s = seen(&log);
    assert_eq!(
        s[0].header("authorization"),
        Some("Basic bXAta2V5Om1wLXNlY3JldC0wMDAx")
    );
    assert_eq!(
        s[1].header("authorization"),
        Some("Bearer bearer-token-0002")
    );
    assert_eq!(s[2].header("x-api-key"), Some("api-key-0003"));
    assert_eq!(s[3].q("key"), Some("api-key-0004"));
    assert_eq!(s[4].header("authorization"), None);

    let err = call(&basic, "echo").await.unwrap_err();
    let CallError::Permanent {
        status,
        body,
        message,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*status, 400);
    assert_eq!(**body, json!({"error": "Basic ***"}));
    assert!(!message.contains("bXAta2V5") && !err.to_string().contains("bXAta2V5"));
    // The status is said once ("failed with status 400: {…}"), not again in the message.
    assert_eq!(err.to_string().matches("400").count(), 1, "{err}");
}

#[tokio::test]
async fn oauth2_token_is_reused_then_refreshed_when_it_expires() {
    let (base, log) = serve(|s, _| {
        if s.path == "/api/authorize/token" {
            let n = TOKENS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            reply(
                200,
                json!({"access_token": format!("oblio-token-{n}"), "token_type": "Bearer",
                              "expires_in": 3600, "request_time": 0}),
            )
        } else {
            reply(200, json!({"status": 200, "data": []}))
        }
    })
    .await;
    static TOKENS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let c = clock();
    let sys = system(
        &base,
        json!({"auth": {"kind": "oauth2_client_credentials", "token_url": "/authorize/token",
                        "client_id": "me@example.com", "client_secret": "oblio-secret-1", "body_format": "json"}}),
        json!({"products": {"path": "/nomenclature/products"}}),
        &c,
    );
    call(&sys, "products").await.unwrap();
    c.advance(Duration::from_secs(3000));
    call(&sys, "products").await.unwrap();
    // Within the margin before expiry: a new token.
    c.advance(Duration::from_secs(560));
    call(&sys, "products").await.unwrap();

    let s = seen(&log);
    let paths: Vec<_> = s.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/authorize/token",
            "/api/nomenclature/products",
            "/api/nomenclature/products",
            "/api/authorize/token",
            "/api/nomenclature/products"
        ]
    );
    let token_body: Value = serde_json::from_str(&s[0].body).unwrap();
    assert_eq!(
        token_body,
        json!({"grant_type": "client_credentials", "client_id": "me@example.com", "client_secret": "oblio-secret-1"})
    );
    assert_eq!(s[1].header("authorization"), Some("Bearer oblio-token-1"));
    assert_eq!(s[2].header("authorization"), Some("Bearer oblio-token-1"));
    assert_eq!(s[4].header("authorization"), Some("Bearer oblio-token-2"));
    assert_eq!(sys.stats().snapshot().token_fetches, 2);
    assert_eq!(erpsync::redact::redact("got oblio-token-2"), "got ***");
}

#[tokio::test]
async fn oauth2_form_body_and_token_endpoint_failure() {
    let (base, log) = serve(|s, _| {
        if s.path == "/oauth/token" {
            if s.body.contains("scope=read") {
                reply(
                    200,
                    json!({"access_token": "form-token-1", "token_type": "bearer"}),
                )
            } else {
                reply(401, json!({"error": "invalid_client"}))
            }
        } else {
            reply(200, json!({}))
        }
    })
    .await;
    let c = clock();
    let cfg = |scope: &str| {
        json!({"auth": {"kind": "oauth2_client_credentials", "token_url": format!("{base}/../oauth/token"),
                        "client_id": "cid", "client_secret": "form-secret-1", "scope": scope, "body_format": "form"}})
    };
    let ok = system(&base, cfg("read"), json!({"get": {"path": "/x"}}), &c);
    call(&ok, "get").await.unwrap();
    let s = seen(&log);
    assert_eq!(
        s[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        s[0].body,
        "grant_type=client_credentials&client_id=cid&client_secret=form-secret-1&scope=read"
    );
    assert_eq!(s[1].header("authorization"), Some("Bearer form-token-1"));

    let bad = system(&base, cfg("write"), json!({"get": {"path": "/x"}}), &c);
    let err = call(&bad, "get").await.unwrap_err();
    assert_matches!(
        err,
        CallError::Auth {
            status: Some(401),
            ..
        }
    );
}

#[tokio::test]
async fn login_token_is_fetched_again_once_on_a_401() {
    let (base, log) = serve(|s, _| match s.path.as_str() {
        "/api/login" => {
            let n = LOGINS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            reply(
                200,
                json!({"result": {"token": format!("session-{n}"), "ttl": 7200}}),
            )
        }
        // The first session is revoked after one use.
        _ if s.header("x-session") == Some("Token session-1")
            && USED.swap(true, std::sync::atomic::Ordering::SeqCst) =>
        {
            reply(401, json!({"error": "expired"}))
        }
        "/api/always401" => reply(401, json!({"error": "nope"})),
        _ => reply(200, json!({"ok": s.header("x-session")})),
    })
    .await;
    static LOGINS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    static USED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let c = clock();
    let sys = system(
        &base,
        json!({"vars": {"user": "admin"},
               "auth": {"kind": "login", "request": {"path": "/login", "body": {"user": "{{system.user}}", "pass": "login-pass-1"}},
                        "token_path": "$.result.token", "expires_in_path": "$.result.ttl",
                        "header": "X-Session", "format": "Token {{token}}"}}),
        json!({"get": {"path": "/orders"}, "post": {"method": "POST", "path": "/orders"},
               "always401": {"path": "/always401"}}),
        &c,
    );
    call(&sys, "get").await.unwrap();
    // session-1 is now refused: a new login, then the same POST once more.
    let out = call(&sys, "post").await.unwrap();
    assert_eq!(out.body, json!({"ok": "Token session-2"}));
    let s = seen(&log);
    let paths: Vec<_> = s
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        paths,
        [
            ("POST", "/api/login"),
            ("GET", "/api/orders"),
            ("POST", "/api/orders"),
            ("POST", "/api/login"),
            ("POST", "/api/orders")
        ]
    );
    assert_eq!(
        serde_json::from_str::<Value>(&s[0].body).unwrap(),
        json!({"user": "admin", "pass": "login-pass-1"})
    );

    // The login said 7200 s: the token is renewed a minute before that, not after a 401.
    c.advance(Duration::from_secs(7200 - 61));
    call(&sys, "get").await.unwrap();
    c.advance(Duration::from_secs(2));
    call(&sys, "get").await.unwrap();
    let tail: Vec<_> = seen(&log)[5..].iter().map(|r| r.path.clone()).collect();
    assert_eq!(tail, ["/api/orders", "/api/login", "/api/orders"]);

    // A 401 that a new token does not cure is an auth failure, after exactly one new login.
    let before = seen(&log).len();
    let err = call(&sys, "always401").await.unwrap_err();
    assert_matches!(
        err,
        CallError::Auth {
            status: Some(401),
            ..
        }
    );
    let after: Vec<_> = seen(&log)[before..]
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(after, ["/api/always401", "/api/login", "/api/always401"]);
}

// ---------------------------------------------------------------------------------------------
// Pagination

#[tokio::test]
async fn page_numbers_with_total_pages_header_short_page_and_empty_page() {
    let (base, log) = serve(|s, _| {
        let page: i64 = s.q("page").unwrap().parse().unwrap();
        match s.path.as_str() {
            "/api/woo" => reply(200, recs(page * 10..page * 10 + 2)).header("x-wp-totalpages", "3"),
            "/api/body_total" => reply(
                200,
                json!({"items": recs(page * 10..page * 10 + 2), "meta": {"pages": "2"}}),
            ),
            "/api/short" => reply(
                200,
                recs(page * 10..page * 10 + if page < 2 { 2 } else { 1 }),
            ),
            _ => reply(
                200,
                recs(page * 10..page * 10 + if page < 3 { 1 } else { 0 }),
            ),
        }
    })
    .await;
    let c = clock();
    let sys = system(
        &base,
        json!({}),
        json!({
            "woo": {"path": "/woo", "records": "$", "query": {"per_page": "50"},
                    "paginate": {"kind": "page", "size_param": "per_page", "size": 2, "total_pages": "header:X-WP-TotalPages"}},
            "body_total": {"path": "/body_total", "records": "$.items",
                           "paginate": {"kind": "page", "start": 0, "total_pages": "$.meta.pages"}},
            "short": {"path": "/short", "records": "$", "paginate": {"kind": "page", "size": 2}},
            "empty": {"path": "/empty", "records": "$", "paginate": {"kind": "page"}}
        }),
        &c,
    );
    let woo = pages(&sys, "woo").await;
    assert_eq!(ids(&woo), [vec![10, 11], vec![20, 21], vec![30, 31]]);
    assert_eq!(
        woo.iter()
            .map(|p| p.as_ref().unwrap().number)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let s = seen(&log);
    assert_eq!(
        s[0].query,
        BTreeMap::from([("page".into(), "1".into()), ("per_page".into(), "2".into())])
    );
    assert_eq!(
        ids(&pages(&sys, "body_total").await),
        [vec![0, 1], vec![10, 11]]
    );
    assert_eq!(ids(&pages(&sys, "short").await), [vec![10, 11], vec![20]]);
    assert_eq!(ids(&pages(&sys, "empty").await), [vec![10], vec![20]]);
    // 3 + 2 + 2 + 3 requests: the empty page is read but not yielded.
    assert_eq!(seen(&log).len(), 10);
}

#[tokio::test]
async fn offset_and_limit_end_on_a_short_page() {
    let (base, log) = serve(|s, _| {
        let offset: i64 = s.q("offset").unwrap().parse().unwrap();
        let n = if offset < 4 { 2 } else { 1 };
        reply(
            200,
            json!({"status": 200, "data": recs(offset..offset + n)}),
        )
    })
    .await;
    let c = clock();
    let sys = system(
        &base,
        json!({}),
        json!({"products": {"path": "/nomenclature/products", "records": "$.data",
               "paginate": {"kind": "offset", "limit_param": "limitPerPage", "limit": 2}}}),
        &c,
    );
    assert_eq!(
        ids(&pages(&sys, "products").await),
        [vec![0, 1], vec![2, 3], vec![4]]
    );
    let offsets: Vec<_> = seen(&log)
        .iter()
        .map(|s| {
            (
                s.q("offset").unwrap().to_string(),
                s.q("limitPerPage").unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        offsets,
        [
            ("0".into(), "2".into()),
            ("2".into(), "2".into()),
            ("4".into(), "2".into())
        ]
    );
}

/// A page without the member its records are read from fails the listing, first page or
/// later (an error served with a 200 is not an empty page); an operation whose API leaves the
/// member out when there is nothing to list says `absent_means_empty`, and such a page ends
/// its listing as an empty one does.
#[tokio::test]
async fn a_page_without_its_records_member_is_an_error_unless_the_api_leaves_it_out() {
    let (base, log) = serve(|s, _| {
        let page: i64 = s.q("page").unwrap().parse().unwrap();
        match (s.path.as_str(), page) {
            ("/api/none", _) => reply(200, json!({"status": 200})),
            ("/api/bare", 1) => reply(200, recs(1..3)),
            (_, 1) => reply(200, json!({"status": 200, "data": recs(1..3)})),
            _ => reply(200, json!({"status": 200})),
        }
    })
    .await;
    let c = clock();
    let op = |path: &str, absent_means_empty: bool| {
        json!({"path": path, "records": "$.data", "absent_means_empty": absent_means_empty,
               "paginate": {"kind": "page", "size": 2}})
    };
    let sys = system(
        &base,
        json!({}),
        json!({
            "first": op("/none", false),
            "later": op("/later", false),
            "first_empty": op("/none", true),
            "later_empty": op("/later", true),
            // The page is the list itself: an object is no page of it.
            "bare": {"path": "/bare", "records": "$", "paginate": {"kind": "page", "size": 2}},
            "bare_empty": {"path": "/bare", "records": "$", "absent_means_empty": true,
                           "paginate": {"kind": "page", "size": 2}},
        }),
        &c,
    );
    for (name, page, why) in [
        ("first", 1, "the answer has no `$.data`"),
        ("later", 2, "the answer has no `$.data`"),
        ("bare", 2, "the answer is an object, not a list of records"),
    ] {
        let listed = pages(&sys, name).await;
        let Some(Err(e)) = listed.last() else {
            panic!("`{name}` ends with an error: {:?}", ids(&listed))
        };
        let e = e.to_string();
        assert!(
            e.contains(&format!("stopped at page {page}: {why}"))
                && e.contains(r#"{"status":200}"#)
                && e.contains("the operation takes `absent_means_empty: true`"),
            "{e}"
        );
        assert_eq!(listed.iter().filter(|p| p.is_ok()).count(), page - 1);
    }
    assert!(pages(&sys, "first_empty").await.is_empty());
    assert_eq!(ids(&pages(&sys, "later_empty").await), [vec![1, 2]]);
    assert_eq!(ids(&pages(&sys, "bare_empty").await), [vec![1, 2]]);
    assert_eq!(seen(&log).len(), 10);

    let cfg: OperationConfig = serde_json::from_value(
        json!({"path": "/one", "record": "$.data", "absent_means_empty": true}),
    )
    .unwrap();
    let problems = Operation::compile(&cfg).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "absent_means_empty");
    assert!(
        problems[0].message.contains("has no `records`"),
        "{}",
        problems[0].message
    );
}

/// A listing that tells its size keeps several pages in flight (`list_with`), and still
/// yields the pages `list` yields, in order, ending where `list` ends: on the last page it was
/// told of, or earlier on a short page. A listing of unknown size is read one page at a time.
#[tokio::test]
async fn a_listing_of_known_size_reads_pages_concurrently_in_order() {
    let (base, log, flight) = serve_counted(|s, _| {
        let page: i64 = s.q("page").map_or(0, |p| p.parse().unwrap());
        let offset: i64 = s.q("offset").map_or(0, |p| p.parse().unwrap());
        let wait = Duration::from_millis(150);
        match s.path.as_str() {
            "/api/pages" => reply(200, recs(page * 10..page * 10 + 2))
                .header("x-wp-totalpages", "7")
                .delayed(wait),
            // Told 6 pages, but the 3rd is short: the listing ends there.
            "/api/short" => {
                let n = if page == 3 { 1 } else { 2 };
                reply(200, recs(page * 10..page * 10 + n))
                    .header("x-wp-totalpages", "6")
                    .delayed(wait)
            }
            "/api/offset" => reply(
                200,
                json!({"data": recs(offset..(offset + 2).min(9)), "total": 9}),
            )
            .delayed(wait),
            _ => reply(
                200,
                recs(page * 10..page * 10 + if page < 4 { 2 } else { 0 }),
            )
            .delayed(wait),
        }
    })
    .await;
    let c = clock();
    let paged = |path: &str| {
        json!({"path": path, "records": "$",
               "paginate": {"kind": "page", "size_param": "per_page", "size": 2,
                            "total_pages": "header:X-WP-TotalPages"}})
    };
    let sys = system(
        &base,
        json!({}),
        json!({
            "pages": paged("/pages"),
            "short": paged("/short"),
            "offset": {"path": "/offset", "records": "$.data", "total": "$.total",
                       "paginate": {"kind": "offset", "limit_param": "limit", "limit": 2}},
            "unknown": {"path": "/unknown", "records": "$",
                        "paginate": {"kind": "page", "size": 2}}
        }),
        &c,
    );
    let with = |op: &'static str| {
        let sys = &sys;
        async move {
            sys.list_with(op, CallInput::default(), 4)
                .collect::<Vec<_>>()
                .await
        }
    };
    let sequential = ids(&pages(&sys, "pages").await);
    assert_eq!(flight.max(), 1, "`list` reads one page at a time");
    let all = with("pages").await;
    assert_eq!(ids(&all), sequential);
    assert_eq!(sequential.len(), 7);
    assert_eq!(
        all.iter()
            .map(|p| p.as_ref().unwrap().number)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6, 7]
    );
    assert!(
        (2..=4).contains(&flight.max()),
        "up to 4 requests at once, more than one: {}",
        flight.max()
    );
    let asked = |path: &str| {
        seen(&log)
            .iter()
            .filter(|s| s.path == path)
            .map(|s| s.q("page").unwrap().parse::<u64>().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        asked("/api/pages").iter().filter(|p| **p > 7).count(),
        0,
        "no page past the last one told"
    );
    assert_eq!(
        ids(&with("short").await),
        [vec![10, 11], vec![20, 21], vec![30]],
        "a short page ends the listing as it does alone"
    );
    assert_eq!(
        ids(&with("offset").await),
        [vec![0, 1], vec![2, 3], vec![4, 5], vec![6, 7], vec![8]]
    );
    let before = seen(&log).len();
    let unknown = with("unknown").await;
    assert_eq!(ids(&unknown), [vec![10, 11], vec![20, 21], vec![30, 31]]);
    assert_eq!(
        seen(&log).len() - before,
        4,
        "size unknown: one page after another, up to the empty one"
    );
}

/// A page read ahead that fails ends the listing where `list` ends it: every page before it
/// is yielded, then the error, and nothing after it; dropping a listing read ahead stops it.
#[tokio::test]
async fn an_error_on_a_page_read_ahead_ends_the_listing_as_it_does_alone() {
    let (base, log) = serve(|s, _| {
        let page: i64 = s.q("page").unwrap().parse().unwrap();
        if page == 3 {
            return reply(400, json!({"error": "bad page"}));
        }
        reply(200, recs(page * 10..page * 10 + 2)).header("x-wp-totalpages", "6")
    })
    .await;
    let c = clock();
    let sys = Arc::new(system(
        &base,
        json!({}),
        json!({"pages": {"path": "/pages", "records": "$",
               "paginate": {"kind": "page", "size": 2, "total_pages": "header:X-WP-TotalPages"}}}),
        &c,
    ));
    let alone = pages(&sys, "pages").await;
    let ahead: Vec<_> = sys
        .list_ahead("pages", CallInput::default(), 4)
        .collect()
        .await;
    for got in [&alone, &ahead] {
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(ids(got), [vec![10, 11], vec![20, 21]]);
        assert_matches!(got[2], Err(CallError::Permanent { status: 400, .. }));
    }
    // Taken one page, then dropped: the task reading ahead stops.
    let before = seen(&log).len();
    {
        let mut stream = std::pin::pin!(sys.list_ahead("pages", CallInput::default(), 1));
        assert!(stream.next().await.unwrap().is_ok());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let read = seen(&log).len() - before;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        seen(&log).len() - before,
        read,
        "nothing read after the drop"
    );
}

/// A nested listing's page is as long as its outer list: two products with three variants
/// between them are a full page of two, one product with two variants a short one. Each
/// variant comes with its product.
#[tokio::test]
async fn nested_records_are_paged_by_their_outer_list_and_keep_their_parent() {
    let (base, log) = serve(|s, _| {
        let offset: i64 = s.q("offset").unwrap().parse().unwrap();
        let products = match offset {
            0 => json!([
                {"id": 1, "name": "Tricou", "variants": [{"id": 10}, {"id": 11}]},
                {"id": 2, "name": "Cana", "variants": [{"id": 20}]}
            ]),
            2 => json!([
                {"id": 3, "name": "Sapca", "variants": [{"id": 30}, {"id": 31}]}
            ]),
            _ => json!([]),
        };
        reply(200, json!({"data": products}))
    })
    .await;
    let c = clock();
    let sys = system(
        &base,
        json!({}),
        json!({"variants": {"path": "/products", "records": "$.data[*].variants[*]",
               "paginate": {"kind": "offset", "limit_param": "limit", "limit": 2}}}),
        &c,
    );
    let got = pages(&sys, "variants").await;
    assert_eq!(ids(&got), [vec![10, 11, 20], vec![30, 31]]);
    assert_eq!(
        seen(&log).len(),
        2,
        "the second page is short: the listing ends"
    );
    let names: Vec<Vec<String>> = got
        .iter()
        .map(|p| {
            let p = p.as_ref().unwrap();
            p.parents
                .iter()
                .map(|x| x.as_ref().unwrap()["name"].as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    assert_eq!(
        names,
        [vec!["Tricou", "Tricou", "Cana"], vec!["Sapca", "Sapca"]]
    );
    assert!(
        got[0].as_ref().unwrap().parents[0].as_ref().unwrap()["variants"].is_null(),
        "a parent leaves out the list its records came from"
    );
}

#[tokio::test]
async fn cursor_pages_end_and_a_repeated_cursor_is_an_error() {
    let (base, _log) = serve(|s, n| {
        let next = match (s.path.as_str(), s.q("after")) {
            ("/api/ok", None) => json!("c2"),
            ("/api/ok", Some("c2")) => json!("c3"),
            ("/api/ok", _) => json!(""),
            // A server that keeps handing out the same cursor.
            _ => json!("stuck"),
        };
        reply(200, json!({"items": [{"id": n}], "next": next}))
    })
    .await;
    let c = clock();
    let op = |p: &str| json!({"path": p, "records": "$.items", "paginate": {"kind": "cursor", "cursor_path": "$.next", "param": "after"}});
    let sys = system(
        &base,
        json!({}),
        json!({"ok": op("/ok"), "stuck": op("/stuck")}),
        &c,
    );
    assert_eq!(ids(&pages(&sys, "ok").await), [vec![0], vec![1], vec![2]]);
    let stuck = pages(&sys, "stuck").await;
    assert_eq!(ids(&stuck), [vec![3], vec![4]]);
    let err = stuck.last().unwrap().as_ref().unwrap_err();
    assert_matches!(err, CallError::Pagination { page: 2, .. });
    assert!(
        err.to_string().contains("cursor `stuck` was already used"),
        "{err}"
    );
}

#[tokio::test]
async fn link_header_and_next_url_pages() {
    let (base, log) = serve(|s, _| {
        let page: i64 = s.q("page_info").map_or(1, |p| p.parse().unwrap());
        let origin = format!("http://{}", s.header("host").unwrap());
        match s.path.as_str() {
            "/api/orders.json" => {
                let r = reply(200, json!({"orders": recs(page..page + 1)}));
                if page < 3 {
                    r.header("link", format!(r#"<{origin}/api/orders.json?page_info={}&limit=1>; rel="next", <{origin}/x>; rel="previous""#, page + 1))
                } else {
                    r
                }
            }
            _ => {
                // MerchantPro: an absolute next URL; also a relative one, then none.
                let next = match page {
                    1 => json!(format!("{origin}/api/products?page_info=2")),
                    2 => json!("products?page_info=3"),
                    _ => Value::Null,
                };
                reply(200, json!({"data": recs(page..page + 1), "meta": {"links": {"next": next}}}))
            }
        }
    })
    .await;
    let c = clock();
    let sys = system(
        &base,
        json!({"auth": {"kind": "api_key", "name": "X-Shopify-Access-Token", "value": "shpat-0005"}}),
        json!({
            "orders": {"path": "/orders.json", "query": {"limit": "1", "status": "any"}, "records": "$.orders",
                       "paginate": {"kind": "link_header"}},
            "products": {"path": "/products", "records": "$.data", "paginate": {"kind": "next_url", "path": "$.meta.links.next"}}
        }),
        &c,
    );
    assert_eq!(
        ids(&pages(&sys, "orders").await),
        [vec![1], vec![2], vec![3]]
    );
    let s = seen(&log);
    assert_eq!(s[0].query.len(), 2);
    // The next link is used verbatim: no filters added next to `page_info`.
    assert_eq!(
        s[1].query,
        BTreeMap::from([
            ("page_info".into(), "2".into()),
            ("limit".into(), "1".into())
        ])
    );
    assert!(
        s.iter()
            .all(|r| r.header("x-shopify-access-token") == Some("shpat-0005"))
    );
    assert_eq!(
        ids(&pages(&sys, "products").await),
        [vec![1], vec![2], vec![3]]
    );
    assert_eq!(seen(&log)[5].path, "/api/products");
}

#[tokio::test]
async fn repeated_pages_next_urls_read_before_and_max_pages_stop_with_an_error() {
    let (base, _log) = serve(|s, n| match s.path.as_str() {
        // Ignores the page parameter: the same records every time.
        "/api/same" => reply(200, recs(1..3)),
        // A next URL pointing back at the first page.
        "/api/loop" => {
            let origin = format!("http://{}", s.header("host").unwrap());
            reply(
                200,
                json!({"data": [{"id": n}], "next": format!("{origin}/api/loop")}),
            )
        }
        _ => reply(200, json!([{"id": n}])),
    })
    .await;
    let c = clock();
    let sys = system(
        &base,
        json!({}),
        json!({
            "same": {"path": "/same", "records": "$", "paginate": {"kind": "page"}},
            "loop": {"path": "/loop", "records": "$.data", "paginate": {"kind": "next_url", "path": "$.next"}},
            "endless": {"path": "/endless", "records": "$", "paginate": {"kind": "page"}, "max_pages": 3}
        }),
        &c,
    );
    let same = pages(&sys, "same").await;
    assert_eq!(ids(&same), [vec![1, 2]]);
    let err = same[1].as_ref().unwrap_err();
    assert!(err.to_string().contains("page 2 repeats page 1"), "{err}");

    let looped = pages(&sys, "loop").await;
    assert_eq!(looped.len(), 2);
    assert!(
        matches!(looped[1], Err(CallError::Pagination { page: 1, .. })),
        "{:?}",
        looped[1]
    );

    let endless = pages(&sys, "endless").await;
    assert_eq!(ids(&endless).len(), 3);
    let err = endless[3].as_ref().unwrap_err();
    assert!(err.to_string().contains("`max_pages` (3) reached"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Rate limits

#[tokio::test]
async fn retry_after_in_seconds_and_as_a_date_is_waited_on_the_clock() {
    let (base, log) = serve(|s, n| match (s.path.as_str(), n) {
        ("/api/secs", 0) => reply(429, json!({"errors": "Exceeded 2 calls per second"}))
            .header("retry-after", "2.0"),
        ("/api/date", 2) => {
            reply(503, json!({})).header("retry-after", "Sun, 01 Mar 2026 12:00:07 GMT")
        }
        ("/api/date", 3) => {
            reply(429, json!({})).header("retry-after", "Sun, 01 Mar 2026 12:00:09 GMT")
        }
        _ => reply(200, json!({"ok": true})),
    })
    .await;
    let c = clock();
    let sys = system(
        &base,
        json!({}),
        json!({"secs": {"path": "/secs"}, "date": {"path": "/date"}}),
        &c,
    );
    call(&sys, "secs").await.unwrap();
    assert_eq!(c.sleeps(), [Duration::from_secs(2)]);
    // Now 12:00:02; the 503 asks to wait until :07, then a 429 until :09.
    call(&sys, "date").await.unwrap();
    assert_eq!(
        c.sleeps(),
        [
            Duration::from_secs(2),
            Duration::from_secs(5),
            Duration::from_secs(2)
        ]
    );
    assert_eq!(seen(&log).len(), 5);
    // A `Retry-After` makes the 503 a request to slow down as well: three waits of the
    // system's budget, 2 + 5 + 2 seconds.
    let st = sys.stats().snapshot();
    assert_eq!(
        (st.retries, st.rate_limit_waits, st.rate_limit_wait_ms),
        (3, 3, 9000)
    );
    assert_eq!(
        (st.responses_2xx, st.responses_4xx, st.responses_5xx),
        (2, 2, 1)
    );
}

#[tokio::test]
async fn rate_limited_until_the_attempts_run_out() {
    let (base, log) = serve(|_, _| reply(429, json!({}))).await;
    let c = clock();
    let sys = system(
        &base,
        json!({"retry": {"max_attempts": 3, "initial_backoff_ms": 100, "jitter": false}}),
        json!({"create": {"method": "POST", "path": "/invoice"}}),
        &c,
    );
    let err = call(&sys, "create").await.unwrap_err();
    assert_matches!(err, CallError::RateLimited { attempts: 3, .. });
    // A 429 means the write was not done, so even a POST is sent again.
    assert_eq!(seen(&log).len(), 3);
    assert_eq!(c.sleeps(), ms(&[100, 200]));
}

#[tokio::test]
async fn a_lockout_pauses_every_caller_of_the_system() {
    let (base, log) = serve(|s, n| match (s.path.as_str(), n) {
        ("/api/invoice", 0) => reply(403, json!({"errorText": "Prea multe cereri"})),
        _ => reply(200, json!({"errorText": ""})),
    })
    .await;
    let c = clock();
    let sys = Arc::new(system(
        &base,
        json!({"rate_limit": {"per_second": 3, "burst": 30, "lockout": {"status": 403, "seconds": 600}},
               "retry": {"max_attempts": 1}}),
        json!({"invoice": {"method": "POST", "path": "/invoice"}, "stocks": {"path": "/stocks"}}),
        &c,
    ));
    let err = call(&sys, "invoice").await.unwrap_err();
    assert_matches!(err, CallError::RateLimited { .. });
    // Another flow, another operation: it waits out the lock-out before sending anything.
    let other = sys.clone();
    tokio::spawn(async move { call(&other, "stocks").await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.sleeps(), [Duration::from_secs(600)]);
    assert_eq!(seen(&log).len(), 2);
    assert_eq!(
        c.now(),
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 10, 0).unwrap()
    );
}

/// Issue 12 item 9: a wait of minutes is never silent: it is shown (system, why, until when)
/// to whoever watches, and a one-shot run bounded by `--max-wait` fails the call at once
/// instead of sleeping through a lock-out.
#[tokio::test]
async fn a_long_wait_is_announced_and_bounded() {
    let (base, log) = serve(|s, _| match s.path.as_str() {
        "/api/locked" => reply(429, json!({"errorText": "locked"})).header("retry-after", "600"),
        _ => reply(200, json!({})),
    })
    .await;
    let ops = json!({"locked": {"path": "/locked"}, "open": {"path": "/open"}});
    let settings = json!({"retry": {"max_attempts": 2, "jitter": false}});
    let c = clock();
    let notices: Arc<Mutex<Vec<String>>> = Arc::default();
    let sys = system(&base, settings.clone(), ops.clone(), &c);
    let seen_notices = notices.clone();
    sys.set_waits(
        None,
        Some(Arc::new(move |n: &erpsync::connector::WaitNotice| {
            seen_notices.lock().unwrap().push(n.to_string())
        })),
    );
    let err = call(&sys, "locked").await.unwrap_err();
    assert_matches!(err, CallError::RateLimited { .. });
    assert_eq!(c.sleeps(), [Duration::from_secs(600)]);
    assert_eq!(
        notices.lock().unwrap().clone(),
        [
            "`shop` asks to slow down (status 429, Retry-After): waiting 600 s, until 2026-03-01T12:10:00Z"
        ]
    );

    // Bounded: nothing is slept, the call fails saying why, the next call goes through.
    let c = clock();
    let bounded = system(&base, settings, ops, &c);
    bounded.set_waits(Some(Duration::from_secs(30)), None);
    let before = seen(&log).len();
    let err = call(&bounded, "locked").await.unwrap_err();
    assert_matches!(
        err,
        CallError::WaitTooLong {
            wait_secs: 600,
            max_secs: 30,
            ..
        }
    );
    assert!(
        err.to_string().contains("until 2026-03-01T12:10:00Z"),
        "{err}"
    );
    assert!(c.sleeps().is_empty(), "{:?}", c.sleeps());
    assert_eq!(seen(&log).len(), before + 1);
    let err = call(&bounded, "open").await.unwrap_err();
    assert_matches!(err, CallError::WaitTooLong { .. });
    c.advance(Duration::from_secs(600));
    call(&bounded, "open").await.unwrap();
}

/// Issue 12 item 9: an OAuth token endpoint that answers 429 is waited out like any call,
/// instead of failing the whole flow with "token endpoint answered 429".
#[tokio::test]
async fn a_token_endpoint_429_is_waited_out() {
    let (base, log) = serve(|s, n| match (s.path.as_str(), n) {
        ("/api/authorize/token", 0) => {
            reply(429, json!({"statusMessage": "slow down"})).header("retry-after", "3")
        }
        ("/api/authorize/token", 1) => reply(429, json!({"statusMessage": "slow down"})),
        ("/api/authorize/token", _) => reply(
            200,
            json!({"access_token": "t-1", "token_type": "Bearer", "expires_in": 3600}),
        ),
        _ => reply(200, json!({"data": []})),
    })
    .await;
    let c = clock();
    let sys = system(
        &base,
        json!({"auth": {"kind": "oauth2_client_credentials", "token_url": "/authorize/token",
                        "client_id": "me", "client_secret": "token-secret-1", "body_format": "json"}}),
        json!({"products": {"path": "/products"}}),
        &c,
    );
    call(&sys, "products").await.unwrap();
    let paths: Vec<String> = seen(&log).iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/api/authorize/token",
            "/api/authorize/token",
            "/api/authorize/token",
            "/api/products"
        ]
    );
    assert_eq!(c.sleeps(), ms(&[3000, 200]));
}

#[tokio::test]
async fn the_token_bucket_spaces_requests_of_all_callers() {
    let (base, _log) = serve(|_, _| reply(200, json!({}))).await;
    let c = clock();
    let sys = system(
        &base,
        json!({"rate_limit": {"per_second": 4, "burst": 2}}),
        json!({"get": {"path": "/x"}}),
        &c,
    );
    for _ in 0..4 {
        call(&sys, "get").await.unwrap();
    }
    assert_eq!(c.sleeps(), ms(&[250, 250]));
    assert_eq!(sys.stats().snapshot().rate_limit_waits, 2);
}

// ---------------------------------------------------------------------------------------------
// Retries and in-doubt writes

#[tokio::test]
async fn server_errors_are_retried_with_backoff_for_safe_requests() {
    let (base, log) = serve(|_, n| {
        if n < 2 {
            reply(502, json!({}))
        } else {
            reply(200, json!({"id": 1}))
        }
    })
    .await;
    let c = clock();
    let sys = system(
        &base,
        json!({}),
        json!({"get": {"path": "/x", "record": "$"}}),
        &c,
    );
    let out = call(&sys, "get").await.unwrap();
    assert_eq!(out.record, Some(json!({"id": 1})));
    assert_eq!(seen(&log).len(), 3);
    assert_eq!(c.sleeps(), ms(&[100, 200]));
    assert_eq!(sys.stats().snapshot().retries, 2);
}

#[tokio::test]
async fn server_errors_that_persist_end_as_transport_errors() {
    let (base, log) = serve(|_, _| reply(500, json!({"message": "boom"}))).await;
    let c = clock();
    let sys = system(
        &base,
        json!({"retry": {"max_attempts": 2, "initial_backoff_ms": 50, "jitter": true}}),
        json!({"get": {"path": "/x"}}),
        &c,
    );
    let err = call(&sys, "get").await.unwrap_err();
    assert_matches!(
        err,
        CallError::Transport {
            status: Some(500),
            attempts: 2,
            ..
        }
    );
    assert!(err.is_transient());
    assert_eq!(seen(&log).len(), 2);
    assert!(c.sleeps()[0] <= Duration::from_millis(50));
}

#[tokio::test]
async fn a_get_that_times_out_is_sent_again() {
    let (base, log) = serve(|_, n| {
        let r = reply(200, json!({"data": [1]}));
        if n == 0 {
            r.delayed(Duration::from_secs(2))
        } else {
            r
        }
    })
    .await;
    let c = clock();
    let sys = system(
        &base,
        json!({"timeouts": {"request_ms": 200}}),
        json!({"get": {"path": "/x", "records": "$.data"}}),
        &c,
    );
    let out = call(&sys, "get").await.unwrap();
    assert_eq!(out.records, [json!(1)]);
    assert_eq!(seen(&log).len(), 2);
    let st = sys.stats().snapshot();
    assert_eq!((st.transport_errors, st.retries, st.in_doubt), (1, 1, 0));
}

#[tokio::test]
async fn a_post_without_idempotency_key_that_times_out_is_in_doubt_and_not_resent() {
    let (base, log) = serve(|_, _| reply(201, json!({})).delayed(Duration::from_secs(2))).await;
    let c = clock();
    let sys = system(
        &base,
        json!({"timeouts": {"request_ms": 200}}),
        json!({"invoice": {"method": "POST", "path": "/invoice", "body": {"number": "{{record.n}}"}}}),
        &c,
    );
    let input = CallInput {
        record: json!({"n": 1}),
        ..Default::default()
    };
    let err = sys.call("invoice", &input).await.unwrap_err();
    assert_matches!(err, CallError::InDoubt { status: None, .. });
    assert_eq!(seen(&log).len(), 1);
    assert!(c.sleeps().is_empty());
    assert_eq!(sys.stats().snapshot().in_doubt, 1);
}

#[tokio::test]
async fn a_post_that_gets_a_server_error_is_in_doubt_unless_it_carries_a_key() {
    let (base, log) = serve(|s, _| {
        let seen_before = s.header("idempotency-key").is_some()
            && ATTEMPTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0;
        if seen_before {
            reply(201, json!({"data": {"number": "0042"}}))
        } else {
            reply(500, json!({"error": "db"}))
        }
    })
    .await;
    static ATTEMPTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let c = clock();
    let sys = system(
        &base,
        json!({}),
        json!({
            "plain": {"method": "POST", "path": "/docs/invoice"},
            "keyed": {"method": "POST", "path": "/docs/invoice", "idempotency_key": {"header": "Idempotency-Key"},
                      "body": {"idempotencyKey": "{{idempotency_key}}"}, "record": "$.data"}
        }),
        &c,
    );
    let err = call(&sys, "plain").await.unwrap_err();
    assert_matches!(
        err,
        CallError::InDoubt {
            status: Some(500),
            ..
        }
    );
    assert_eq!(seen(&log).len(), 1);

    let input = CallInput {
        idempotency_key: Some("flow-order-17".into()),
        ..Default::default()
    };
    let out = sys.call("keyed", &input).await.unwrap();
    assert_eq!(out.record, Some(json!({"number": "0042"})));
    let s = seen(&log);
    assert_eq!(s.len(), 3);
    for r in &s[1..] {
        assert_eq!(r.header("idempotency-key"), Some("flow-order-17"));
        assert_eq!(r.body, r#"{"idempotencyKey":"flow-order-17"}"#);
    }
}

#[tokio::test]
async fn a_refused_connection_is_retried_even_for_a_post() {
    // Bind then drop a listener: nothing listens on that port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = clock();
    let sys = system(
        &format!("http://127.0.0.1:{port}"),
        json!({"retry": {"max_attempts": 2, "initial_backoff_ms": 10, "jitter": false}}),
        json!({"create": {"method": "POST", "path": "/x"}}),
        &c,
    );
    let err = call(&sys, "create").await.unwrap_err();
    assert_matches!(
        err,
        CallError::Transport {
            attempts: 2,
            status: None,
            ..
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Error policy

#[tokio::test]
async fn errors_in_a_200_body_and_other_rules_classify_responses() {
    let (base, _log) = serve(|s, _| match s.path.as_str() {
        "/api/invoice" => reply(200, json!({"errorText": "Seria nu exista", "number": ""})),
        "/api/ok" => reply(200, json!({"errorText": "", "number": "0007"})),
        "/api/dup" => reply(409, json!({"message": "duplicate"})),
        "/api/gone" => reply(404, json!({"message": "no such product"})),
        "/api/odd" => reply(418, json!({"message": "teapot"})),
        "/api/moved" => reply(301, json!({})).header("location", "https://www.example.com/api"),
        _ => reply(200, json!({"status": {"code": 3}})),
    })
    .await;
    let c = clock();
    let sys = system(
        &base,
        json!({"errors": [
            {"status": [200], "when": "@.errorText && @.errorText != ''", "action": "fail", "message": "SmartBill: {{body.errorText}}"},
            {"status": ["409"], "action": "already_done"}
        ]}),
        json!({
            "invoice": {"method": "POST", "path": "/invoice"},
            "ok": {"method": "POST", "path": "/ok"},
            "dup": {"method": "POST", "path": "/dup"},
            "gone": {"path": "/gone"},
            "odd": {"path": "/odd", "errors": [{"status": ["400-499"], "action": "not_found"}]},
            "moved": {"path": "/moved"},
            "send": {"method": "POST", "path": "/send",
                     "errors": [{"when": "@.status.code != 0", "action": "fail", "message": "code {{body.status.code}} ({{status}})"}]}
        }),
        &c,
    );
    let err = call(&sys, "invoice").await.unwrap_err();
    let CallError::Permanent {
        status,
        message,
        body,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(
        (*status, message.as_str()),
        (200, "SmartBill: Seria nu exista")
    );
    assert_eq!(body["errorText"], "Seria nu exista");
    assert!(!call(&sys, "ok").await.unwrap().already_done);
    assert!(call(&sys, "dup").await.unwrap().already_done);
    assert!(matches!(
        call(&sys, "gone").await,
        Err(CallError::NotFound { status: 404, .. })
    ));
    assert!(matches!(
        call(&sys, "odd").await,
        Err(CallError::NotFound { status: 418, .. })
    ));
    assert!(matches!(
        call(&sys, "moved").await,
        Err(CallError::Permanent { status: 301, .. })
    ));
    let err = call(&sys, "send").await.unwrap_err();
    assert!(err.to_string().ends_with("code 3 (200)"), "{err}");
}

#[tokio::test]
async fn concurrent_callers_share_one_token_fetch() {
    let (base, log) = serve(|s, _| {
        if s.path == "/api/token" {
            // Slow enough that the other callers arrive while the token is being fetched.
            reply(
                200,
                json!({"access_token": "shared-token-1", "expires_in": 600}),
            )
            .delayed(Duration::from_millis(50))
        } else {
            reply(200, json!({}))
        }
    })
    .await;
    let c = clock();
    let sys = Arc::new(system(
        &base,
        json!({"auth": {"kind": "oauth2_client_credentials", "token_url": "/token",
                        "client_id": "cid", "client_secret": "shared-secret-1"}}),
        json!({"get": {"path": "/x"}}),
        &c,
    ));
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let sys = sys.clone();
            tokio::spawn(async move { call(&sys, "get").await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let s = seen(&log);
    assert_eq!(s.iter().filter(|r| r.path == "/api/token").count(), 1);
    assert_eq!(s.len(), 6);
}

/// A port nothing listens on (bound, then released).
async fn closed_port() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

#[tokio::test]
async fn a_system_refusing_connections_is_taken_as_down_and_probed_with_a_growing_pause() {
    let clock = clock();
    let base = closed_port().await;
    let sys = system(
        &base,
        json!({
            "retry": {"max_attempts": 5, "initial_backoff_ms": 100, "max_backoff_ms": 1000, "jitter": false},
            "circuit_breaker": {"failures": 3, "probe_initial_secs": 10, "probe_max_secs": 25}
        }),
        json!({"get": {"path": "/x"}}),
        &clock,
    );
    // The third refused attempt opens the breaker: no fourth and fifth attempt.
    assert_matches!(call(&sys, "get").await, Err(CallError::Down { .. }));
    assert_eq!(clock.sleeps(), ms(&[100, 200]));
    let h = sys.health();
    assert!(h.down && h.consecutive_failures == 3, "{h:?}");
    let opened = h.down_since.unwrap();
    assert_eq!(h.next_probe, Some(opened + chrono::Duration::seconds(10)));
    // Calls fail at once, without waiting or sending, until a probe is due.
    let err = call(&sys, "get").await.unwrap_err();
    assert!(err.to_string().contains("system `shop` is down"), "{err}");
    assert_eq!(clock.sleeps().len(), 2);
    assert_eq!(sys.stats().snapshot().transport_errors, 3);
    assert!(!sys.probe().await, "not due yet: nothing sent");
    assert_eq!(sys.stats().snapshot().transport_errors, 3);

    // Probes fail with a doubling pause, capped.
    clock.advance(Duration::from_secs(10));
    assert!(!sys.probe().await);
    assert_eq!(sys.stats().snapshot().transport_errors, 4);
    assert_eq!(
        sys.next_probe(),
        Some(clock.now() + chrono::Duration::seconds(20))
    );
    clock.advance(Duration::from_secs(20));
    assert!(!sys.probe().await);
    assert_eq!(
        sys.next_probe(),
        Some(clock.now() + chrono::Duration::seconds(25))
    );

    // Something listens there again: the next probe closes the breaker.
    let listener = tokio::net::TcpListener::bind(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let app = Router::new().fallback(|| async { "ok" });
    tokio::spawn(async move { axum::serve(listener, app).await });
    clock.advance(Duration::from_secs(25));
    assert!(sys.probe().await);
    assert!(!sys.health().down);
    assert!(call(&sys, "get").await.is_ok());
}
