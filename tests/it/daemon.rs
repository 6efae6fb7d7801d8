//! The daemon against the simulators: schedules and overlap, signed webhooks (and their
//! delivery ids across a restart), the admin API with lease holders, metrics, shutdown
//! during a run, reload, and several shops against one ERP. Time is a manual clock shared by
//! the simulators and the daemon; nothing waits for real.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use erpsync::clock::{Clock as _, ManualClock};
use erpsync::daemon::{
    Cause, ConfigReloadError, Daemon, DaemonEvent, ServeOptions, TriggerRefusedError, serve,
};
use erpsync::engine::RunOptions;
use erpsync::state::{Failure, FlowName, SqliteStore, Store};
use erpsync_sim::shop::Order;
use erpsync_sim::webhook::{DELIVERY_ID_HEADER, SIGNATURE_HEADER, sign};
use erpsync_sim::{ErpHandle, ShopHandle, WebhookConfig};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{broadcast, oneshot};

use crate::support;
use crate::support::daemon::{finished, serve_http};
use crate::support::project::demo_yaml;
use crate::support::sims::sims;

const TOKEN: &str = "test-admin-token-123";
const HOOK_SECRET: &str = "demo-webhook-secret";

fn start_time() -> DateTime<Utc> {
    "2026-05-04T10:00:30Z".parse().unwrap()
}

struct Rig {
    _dir: tempfile::TempDir,
    project: PathBuf,
    clock: ManualClock,
    shop: ShopHandle,
    erp: ErpHandle,
    daemon: Arc<Daemon>,
    store: Store,
}

async fn start_daemon_on(project: &Path, clock: &ManualClock, store: Store) -> Arc<Daemon> {
    support::daemon::start(vec![project.to_path_buf()], clock, store, Some(TOKEN)).await
}

async fn start_daemon(project: &Path, clock: &ManualClock) -> (Arc<Daemon>, Store) {
    let store: Store = Store::from(SqliteStore::in_memory().unwrap());
    (start_daemon_on(project, clock, store.clone()).await, store)
}

/// The demo project against fresh simulators seeded with a small catalogue; `edit` changes
/// the flow file's text first.
async fn rig(edit: impl FnOnce(String) -> String) -> Rig {
    let clock = ManualClock::new(start_time());
    let (shop, erp) = sims(&clock).await;
    erpsync_sim::seed_both(&shop, &erp, 5, 7);
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    let yaml = edit(demo_yaml(&shop.base_url(), &erp.base_url(), dir.path()));
    std::fs::write(project.join("demo.yaml"), yaml).unwrap();
    let (daemon, store) = start_daemon(&project, &clock).await;
    Rig {
        _dir: dir,
        project,
        clock,
        shop,
        erp,
        daemon,
        store,
    }
}

fn http() -> Client {
    support::http(Duration::from_secs(5))
}

/// Waits for the event `pick` accepts; five seconds at most. Everything is local and takes
/// milliseconds, but a busy machine running the other tests beside this one has stalled a
/// run for over a second; no run here waits on the real clock, so five seconds still finds
/// one that hangs.
async fn wait_for(
    rx: &mut broadcast::Receiver<DaemonEvent>,
    pick: impl Fn(&DaemonEvent) -> bool,
) -> DaemonEvent {
    support::daemon::wait_for(rx, Duration::from_secs(5), pick).await
}

/// A confirmed order of two catalogue SKUs.
fn confirmed_order(shop: &ShopHandle, email: &str) -> Order {
    let skus: Vec<String> = shop.products().iter().map(|p| p.sku.clone()).collect();
    let mut o = Order::new(email, &[(&skus[0], 1, 10.0), (&skus[1], 2, 5.0)]);
    o.customer.first_name = "Ana".into();
    o.customer.last_name = "Pop".into();
    let o = shop.create_order(o).unwrap();
    shop.set_shipping_status(&o.id, "confirmed").unwrap()
}

#[tokio::test]
async fn schedules_fire_and_a_run_still_going_skips_the_next_tick() {
    let r = rig(|y| {
        y.replace(
            "  orders_from_erp:\n",
            "  orders_from_erp:\n    enabled: false\n",
        )
    })
    .await;
    let d = &r.daemon;
    let mut events = d.subscribe();
    let at = |t: &str| -> DateTime<Utc> { format!("2026-05-04T{t}Z").parse().unwrap() };

    // Nothing is due at the start.
    assert!(d.tick(r.clock.now()).is_empty());
    let status = d.flow_statuses().await;
    let next = |id: &str| status.iter().find(|f| f.id == id).unwrap().next_run;
    assert_eq!(next("orders_to_erp"), Some(at("10:02:00")));
    assert_eq!(
        next("orders_from_erp"),
        None,
        "disabled flows are not planned"
    );
    assert_eq!(
        status
            .iter()
            .find(|f| f.id == "stock")
            .unwrap()
            .next_reconcile,
        Some(at("11:00:00"))
    );

    // The shop holds its answers to this run for two seconds, so the run is still going at
    // the next firing. Answered at once, the run's last steps on the daemon's own threads
    // could end it between the check below and the next tick (seen once in a clean-clone
    // CI run: the second firing started a run instead of being skipped).
    r.shop.faults().update(|f| f.latency_ms = 2_000);
    r.clock.set(at("10:02:00"));
    let fired = d.tick(r.clock.now());
    assert_eq!(fired, vec![("orders_to_erp".to_string(), Cause::Schedule)]);
    wait_for(&mut events, |e| matches!(e, DaemonEvent::RunStarted { .. })).await;
    assert!(d.is_running("orders_to_erp"));
    // The next firing comes while the run still goes on: skipped and counted.
    r.clock.set(at("10:04:00"));
    assert_eq!(d.tick(r.clock.now()).len(), 1);
    wait_for(
        &mut events,
        |e| matches!(e, DaemonEvent::RunSkipped { flow } if flow == "orders_to_erp"),
    )
    .await;
    wait_for(&mut events, finished("orders_to_erp")).await;
    r.shop.faults().clear();
    assert_eq!(
        d.metrics
            .value("erpsync_runs_skipped_total", &[("flow", "orders_to_erp")]),
        1.0
    );

    // 10:05: the stock flows only (variants after the basic products' stock); the disabled
    // flow on the same schedule does not run.
    r.clock.set(at("10:05:00"));
    assert_eq!(
        d.tick(r.clock.now()),
        vec![
            ("stock".to_string(), Cause::Schedule),
            ("variant_stock".to_string(), Cause::Schedule)
        ]
    );
    wait_for(&mut events, finished("variant_stock")).await;

    // 11:00: the reconcile stands in for the stock sync due with it; products run first.
    r.clock.set(at("11:00:00"));
    let fired = d.tick(r.clock.now());
    assert!(
        fired.contains(&("stock".to_string(), Cause::Reconcile)),
        "{fired:?}"
    );
    assert!(fired.contains(&("products".to_string(), Cause::Schedule)));
    assert!(fired.contains(&("orders_to_erp".to_string(), Cause::Schedule)));
    assert!(fired.contains(&("suppliers".to_string(), Cause::Schedule)));
    assert!(fired.contains(&("variant_stock".to_string(), Cause::Reconcile)));
    assert_eq!(fired.len(), 5, "{fired:?}");
    assert!(d.drain(Duration::from_secs(5)).await);
    let runs = r
        .store
        .runs
        .runs(Some(FlowName::new("stock")), 10)
        .await
        .unwrap();
    assert_eq!(runs[0].kind, "reconcile");
    assert!(
        r.store
            .runs
            .runs(Some(FlowName::new("orders_from_erp")), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Manual trigger of any flow, disabled ones included.
    let forced = RunOptions {
        force: true,
        ..Default::default()
    };
    d.trigger("orders_from_erp", forced, Cause::Manual)
        .await
        .unwrap();
    assert_eq!(
        d.trigger("orders_from_erp", RunOptions::default(), Cause::Manual)
            .await,
        Err(TriggerRefusedError::Disabled("orders_from_erp".into()))
    );
    assert!(d.drain(Duration::from_secs(5)).await);
    assert_eq!(
        r.store
            .runs
            .runs(Some(FlowName::new("orders_from_erp")), 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// A webhook whose secret is empty (an unset `${VAR:-}`) trusts nothing: a delivery signed
/// with the empty key, as anybody could sign it, is refused and exports nothing.
#[tokio::test]
async fn a_webhook_without_a_secret_refuses_every_delivery() {
    let r = rig(|y| {
        y.replace(
            "${SHOP_WEBHOOK_SECRET:-demo-webhook-secret}",
            "${SHOP_WEBHOOK_SECRET_UNSET_IN_TESTS:-}",
        )
    })
    .await;
    let (url, stop, _served) = serve_http(&r.daemon).await;
    let order = confirmed_order(&r.shop, "ana@example.com");
    let body = json!({"event": "order.status_changed", "number": order.number,
        "occurred_at": r.clock.now().to_rfc3339()})
    .to_string();
    let resp = http()
        .post(format!("{url}/hooks/shop-orders"))
        .header(SIGNATURE_HEADER, sign(body.as_bytes(), ""))
        .header(DELIVERY_ID_HEADER, "d-1")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let said = resp.text().await.unwrap();
    assert!(said.contains("has no secret"), "{said}");
    assert!(r.daemon.drain(Duration::from_secs(5)).await);
    assert!(r.erp.orders_by_reference(&order.number).is_empty());
    let _ = stop.send(());
}

#[tokio::test]
async fn a_signed_webhook_exports_the_order_at_once_and_forgeries_and_replays_are_refused() {
    let r = rig(|y| y).await;
    let (url, stop, served) = serve_http(&r.daemon).await;
    let hook = format!("{url}/hooks/shop-orders");
    r.shop.set_webhook(Some(WebhookConfig {
        url: hook.clone(),
        secret: HOOK_SECRET.into(),
    }));
    let mut events = r.daemon.subscribe();

    let order = confirmed_order(&r.shop, "ana@example.com");
    // The order's export, then the stock of its SKUs through `then`.
    wait_for(&mut events, finished("orders_to_erp")).await;
    let exported = r.erp.orders_by_reference(&order.number);
    assert_eq!(exported.len(), 1, "order exported by the webhook");
    assert!(r.shop.order(&order.id).unwrap().locked);
    let chained = wait_for(
        &mut events,
        |e| matches!(e, DaemonEvent::RunStarted { flow, .. } if flow == "stock"),
    )
    .await;
    assert_eq!(
        chained,
        DaemonEvent::RunStarted {
            flow: "stock".into(),
            cause: Cause::Chain("orders_to_erp".into())
        }
    );
    wait_for(&mut events, finished("stock")).await;
    let stock_run = &r
        .store
        .runs
        .runs(Some(FlowName::new("stock")), 1)
        .await
        .unwrap()[0];
    assert_eq!(stock_run.kind, "scoped");
    // The shop sent `order.created` and `order.status_changed`: both are handled, the order
    // is exported once.
    r.shop.flush_webhooks().await;
    assert!(r.daemon.drain(Duration::from_secs(5)).await);
    let runs_before = r
        .store
        .runs
        .runs(Some(FlowName::new("orders_to_erp")), 10)
        .await
        .unwrap()
        .len();

    let client = http();
    let body = json!({"event": "order.status_changed", "number": order.number,
        "occurred_at": r.clock.now().to_rfc3339()})
    .to_string();
    let post = |sig: String, id: &str| {
        client
            .post(&hook)
            .header(SIGNATURE_HEADER, sig)
            .header(DELIVERY_ID_HEADER, id)
            .body(body.clone())
            .send()
    };
    // Forged: signed with another secret.
    let resp = post(sign(body.as_bytes(), "guessed-secret"), "x-1")
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Replayed: a delivery id seen before is not run again.
    let first_id = r.shop.webhook_deliveries()[0].id.clone();
    let resp = post(sign(body.as_bytes(), HOOK_SECRET), &first_id)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["status"], "duplicate");
    // Replayed later: too old.
    r.clock.advance(Duration::from_secs(301));
    let resp = post(sign(body.as_bytes(), HOOK_SECRET), "x-2")
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let m = &r.daemon.metrics;
    assert_eq!(
        m.value(
            "erpsync_webhooks_total",
            &[("webhook", "shop_orders"), ("outcome", "bad_signature")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "erpsync_webhooks_total",
            &[("webhook", "shop_orders"), ("outcome", "stale")]
        ),
        1.0
    );
    assert!(
        m.value(
            "erpsync_webhooks_total",
            &[("webhook", "shop_orders"), ("outcome", "duplicate")]
        ) >= 1.0
    );
    // Nothing ran because of them.
    assert!(r.daemon.drain(Duration::from_secs(5)).await);
    assert_eq!(
        r.store
            .runs
            .runs(Some(FlowName::new("orders_to_erp")), 10)
            .await
            .unwrap()
            .len(),
        runs_before
    );
    assert_eq!(r.erp.orders_by_reference(&order.number).len(), 1);

    stop.send(()).unwrap();
    assert!(served.await.unwrap());
}

/// The demo project in a folder of its own, its state in `state.sqlite` beside it.
fn demo_on_disk(shop: &ShopHandle, erp: &ErpHandle) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    let yaml = demo_yaml(&shop.base_url(), &erp.base_url(), dir.path());
    std::fs::write(project.join("demo.yaml"), yaml).unwrap();
    let state = dir.path().join("state.sqlite");
    (dir, project, state)
}

/// Posts a delivery of the shop-orders webhook, signed, with delivery id `id`; the status
/// and JSON body of the answer.
async fn deliver(url: &str, body: &str, id: &str) -> (StatusCode, Value) {
    let resp = http()
        .post(format!("{url}/hooks/shop-orders"))
        .header(SIGNATURE_HEADER, sign(body.as_bytes(), HOOK_SECRET))
        .header(DELIVERY_ID_HEADER, id)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap())
}

fn order_event(number: &str, at: DateTime<Utc>) -> String {
    json!({"event": "order.status_changed", "number": number, "occurred_at": at.to_rfc3339()})
        .to_string()
}

#[tokio::test]
async fn a_delivery_accepted_before_a_restart_is_refused_as_repeated_after_it() {
    let clock = ManualClock::new(start_time());
    let (shop, erp) = sims(&clock).await;
    erpsync_sim::seed_both(&shop, &erp, 5, 7);
    let (_dir, project, state) = demo_on_disk(&shop, &erp);
    let order = confirmed_order(&shop, "ana@example.com");
    let body = order_event(&order.number, clock.now());

    let first = start_daemon_on(
        &project,
        &clock,
        Store::from(SqliteStore::open(&state).unwrap()),
    )
    .await;
    let (url, stop, served) = serve_http(&first).await;
    let (status, answer) = deliver(&url, &body, "delivery-1").await;
    assert_eq!(
        (status, &answer["status"]),
        (StatusCode::ACCEPTED, &json!("accepted"))
    );
    assert!(first.drain(Duration::from_secs(5)).await);
    assert_eq!(erp.orders_by_reference(&order.number).len(), 1);
    stop.send(()).unwrap();
    assert!(served.await.unwrap());
    drop(first);

    // The sender did not get the answer and delivers again, a minute later, well within
    // `max_age_secs`, to the restarted daemon.
    clock.advance(Duration::from_secs(60));
    let store: Store = Store::from(SqliteStore::open(&state).unwrap());
    let runs_before = store
        .runs
        .runs(Some(FlowName::new("orders_to_erp")), 10)
        .await
        .unwrap()
        .len();
    let second = start_daemon_on(&project, &clock, store.clone()).await;
    let (url, stop, served) = serve_http(&second).await;
    let (status, answer) = deliver(&url, &body, "delivery-1").await;
    assert_eq!(
        (status, answer),
        (StatusCode::OK, json!({"status": "duplicate"}))
    );
    assert!(second.drain(Duration::from_secs(5)).await);
    assert_eq!(
        store
            .runs
            .runs(Some(FlowName::new("orders_to_erp")), 10)
            .await
            .unwrap()
            .len(),
        runs_before
    );
    assert_eq!(
        second.metrics.value(
            "erpsync_webhooks_total",
            &[("webhook", "shop_orders"), ("outcome", "duplicate")]
        ),
        1.0
    );
    // Another delivery of the same event is a delivery of its own.
    let (status, _) = deliver(&url, &body, "delivery-2").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(second.drain(Duration::from_secs(5)).await);
    assert_eq!(
        store
            .runs
            .runs(Some(FlowName::new("orders_to_erp")), 10)
            .await
            .unwrap()
            .len(),
        runs_before + 1
    );
    assert_eq!(erp.orders_by_reference(&order.number).len(), 1);
    stop.send(()).unwrap();
    assert!(served.await.unwrap());
}

#[tokio::test]
async fn a_delivery_the_state_cannot_remember_is_answered_503_and_taken_when_sent_again() {
    let clock = ManualClock::new(start_time());
    let (shop, erp) = sims(&clock).await;
    erpsync_sim::seed_both(&shop, &erp, 5, 7);
    let (_dir, project, state) = demo_on_disk(&shop, &erp);
    let order = confirmed_order(&shop, "ana@example.com");
    let body = order_event(&order.number, clock.now());
    let store: Store = Store::from(SqliteStore::open(&state).unwrap());
    let d = start_daemon_on(&project, &clock, store.clone()).await;
    let (url, stop, served) = serve_http(&d).await;

    // The table of deliveries goes missing under the daemon's feet.
    let admin = rusqlite::Connection::open(&state).unwrap();
    admin
        .execute_batch("ALTER TABLE deliveries RENAME TO deliveries_away")
        .unwrap();
    let resp = http()
        .post(format!("{url}/hooks/shop-orders"))
        .header(SIGNATURE_HEADER, sign(body.as_bytes(), HOOK_SECRET))
        .header(DELIVERY_ID_HEADER, "delivery-1")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The sender is told when to deliver again.
    assert_eq!(resp.headers()["retry-after"], "10");
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(
        answer["error"],
        "the state database is unavailable; deliver again later"
    );
    assert!(d.drain(Duration::from_secs(5)).await);
    assert!(
        store
            .runs
            .runs(Some(FlowName::new("orders_to_erp")), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        d.metrics.value(
            "erpsync_webhooks_total",
            &[("webhook", "shop_orders"), ("outcome", "state_unavailable")]
        ),
        1.0
    );

    // Back: the sender's retry is a first delivery, and runs.
    admin
        .execute_batch("ALTER TABLE deliveries_away RENAME TO deliveries")
        .unwrap();
    let (status, answer) = deliver(&url, &body, "delivery-1").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert!(d.drain(Duration::from_secs(5)).await);
    assert_eq!(erp.orders_by_reference(&order.number).len(), 1);
    let (status, _) = deliver(&url, &body, "delivery-1").await;
    assert_eq!(status, StatusCode::OK);
    stop.send(()).unwrap();
    assert!(served.await.unwrap());
}

#[tokio::test]
async fn the_admin_api_shows_which_node_holds_each_flows_lease() {
    let r = rig(|y| y).await;
    let (url, stop, served) = serve_http(&r.daemon).await;
    let flows = || async {
        http()
            .get(format!("{url}/api/flows"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let of = |answer: &Value, id: &str| {
        answer["flows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == id)
            .unwrap()
            .clone()
    };
    let answer = flows().await;
    assert_eq!(answer["node"], r.daemon.node_id());
    let stock = of(&answer, "stock");
    assert_eq!(
        (&stock["lease_holder"], &stock["lease_until"]),
        (&Value::Null, &Value::Null)
    );

    // Another node runs `stock`: it holds the flow's lease in the shared state.
    assert!(
        r.store
            .coordination
            .try_lease(
                "flow:stock",
                "node-b",
                r.clock.now(),
                Duration::from_secs(90)
            )
            .await
            .unwrap()
    );
    let answer = flows().await;
    let stock = of(&answer, "stock");
    assert_eq!(stock["lease_holder"], "node-b");
    assert_eq!(stock["lease_until"], "2026-05-04T10:02:00Z");
    assert_eq!(of(&answer, "products")["lease_holder"], Value::Null);
    // So this node does not run it, and says who does.
    let mut events = r.daemon.subscribe();
    assert_eq!(
        r.daemon
            .trigger("stock", RunOptions::default(), Cause::Manual)
            .await
            .unwrap_err(),
        erpsync::daemon::TriggerRefusedError::Elsewhere {
            flow: "stock".into(),
            node: "node-b".into(),
            until: "2026-05-04T10:02:00Z".parse().unwrap(),
        }
    );

    // Expired (node-b died), nobody holds it any more.
    r.clock.advance(Duration::from_secs(90));
    let stock = of(&flows().await, "stock");
    assert_eq!(stock["lease_holder"], Value::Null);

    // A run of this node holds the lease while it goes on.
    r.daemon
        .trigger("stock", RunOptions::default(), Cause::Manual)
        .await
        .unwrap();
    wait_for(
        &mut events,
        |e| matches!(e, DaemonEvent::RunStarted { flow, .. } if flow == "stock"),
    )
    .await;
    // The test's runtime has one thread: the run waits at its first request until this
    // test awaits again, so it is still going on here.
    let stock = r
        .daemon
        .flow_statuses()
        .await
        .into_iter()
        .find(|f| f.id == "stock")
        .unwrap();
    assert!(stock.running_since.is_some());
    assert_eq!(stock.lease_holder, Some(r.daemon.instance_id()));
    assert!(stock.lease_until > Some(r.clock.now()));
    wait_for(&mut events, finished("stock")).await;
    // Released once the run is over: just after it says it finished, on the state's thread,
    // so it may still be under way when the event arrives here. Asked again a bounded number
    // of times (each question waits for the state's thread), not waited for by the clock.
    let mut leases = r.store.coordination.leases().await.unwrap();
    for _ in 0..100 {
        if leases.is_empty() {
            break;
        }
        tokio::task::yield_now().await;
        leases = r.store.coordination.leases().await.unwrap();
    }
    assert!(leases.is_empty(), "released after the run: {leases:?}");
    stop.send(()).unwrap();
    assert!(served.await.unwrap());
}

#[tokio::test]
async fn admin_api_needs_the_token_and_shows_flows_runs_failures_and_metrics() {
    let r = rig(|y| y).await;
    let (url, stop, served) = serve_http(&r.daemon).await;
    let client = http();
    let get = |path: &str, token: Option<&str>| {
        let mut req = client.get(format!("{url}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };

    assert_eq!(
        get("/api/flows", None).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get("/api/flows", Some("wrong")).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get("/healthz", None).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(get("/readyz", None).await.unwrap().status(), StatusCode::OK);
    let resp = client
        .post(format!("{url}/api/flows/products/run"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let mut events = r.daemon.subscribe();
    let resp = client
        .post(format!("{url}/api/flows/products/run"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.json::<Value>().await.unwrap()["outcome"], "started");
    wait_for(&mut events, finished("products")).await;
    let resp = client
        .post(format!("{url}/api/flows/nope/run"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    let flows: Value = get("/api/flows", Some(TOKEN))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let products = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "products")
        .unwrap();
    assert_eq!(products["enabled"], true);
    assert_eq!(products["last_run"]["status"], "ok");
    assert_eq!(products["last_run"]["counts"]["read"], 5);
    assert_eq!(products["next_run"], "2026-05-04T10:15:00Z");
    let runs: Value = get("/api/runs?flow=products", Some(TOKEN))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1);

    // A kept failure: listed, retried (a scoped run of its key), discarded.
    let now = r.clock.now();
    let id = r
        .store
        .failures
        .put_failure(&Failure {
            id: 0,
            flow: "products".into(),
            key: "NOPE-1".into(),
            source_record: json!({"sku": "NOPE-1"}),
            payload: None,
            error: "boom".into(),
            status: Some(500),
            response: None,
            attempts: 1,
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
    let list: Value = get("/api/failures", Some(TOKEN))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["failures"][0]["key"], "NOPE-1");
    let metrics = get("/metrics", None).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("erpsync_failures_pending{flow=\"products\"} 1"),
        "{metrics}"
    );
    let resp = client
        .post(format!("{url}/api/failures/{id}/retry"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    wait_for(&mut events, finished("products")).await;
    assert_eq!(
        r.store
            .runs
            .runs(Some(FlowName::new("products")), 1)
            .await
            .unwrap()[0]
            .kind,
        "scoped"
    );
    let resp = client
        .post(format!("{url}/api/failures/{id}/discard"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(r.store.failures.failure(id).await.unwrap().is_none());

    // Metrics: runs by flow and status, records by decision, requests by system and class,
    // retries, rate-limit waits, failures pending, durations.
    let metrics = get("/metrics", None).await.unwrap().text().await.unwrap();
    for line in [
        "erpsync_runs_total{flow=\"products\",kind=\"sync\",status=\"ok\"} 1",
        "erpsync_records_total{flow=\"products\",decision=\"adopt\"} 5",
        "erpsync_run_duration_seconds_count{flow=\"products\"} 2",
        "erpsync_failures_pending{flow=\"products\"} 0",
        "# TYPE erpsync_http_retries_total counter",
        "erpsync_http_retries_total{system=\"erp\"} 0",
        "erpsync_rate_limit_waits_total{system=\"shop\"}",
        "erpsync_runs_in_flight 0",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in\n{metrics}");
    }
    let ok_2xx = metrics
        .lines()
        .find(|l| l.starts_with("erpsync_http_requests_total{system=\"erp\",class=\"2xx\"}"))
        .unwrap();
    assert_ne!(ok_2xx.rsplit(' ').next(), Some("0"));

    stop.send(()).unwrap();
    assert!(served.await.unwrap());
}

#[tokio::test]
async fn shutdown_during_a_run_lets_it_finish_and_loses_nothing() {
    let r = rig(|y| y).await;
    let orders: Vec<Order> = (0..3)
        .map(|i| confirmed_order(&r.shop, &format!("c{i}@example.com")))
        .collect();
    let (_url, stop, served) = serve_http(&r.daemon).await;
    let mut events = r.daemon.subscribe();
    r.daemon
        .trigger("orders_to_erp", RunOptions::default(), Cause::Manual)
        .await
        .unwrap();
    wait_for(&mut events, |e| matches!(e, DaemonEvent::RunStarted { .. })).await;
    assert!(r.daemon.is_running("orders_to_erp"));

    // SIGTERM, as the CLI maps it: stop taking work, let the run finish.
    stop.send(()).unwrap();
    assert!(served.await.unwrap(), "drained within the grace period");
    assert_eq!(
        r.daemon
            .trigger("products", RunOptions::default(), Cause::Manual)
            .await,
        Err(TriggerRefusedError::ShuttingDown)
    );
    for o in &orders {
        assert_eq!(
            r.erp.orders_by_reference(&o.number).len(),
            1,
            "{} exported",
            o.number
        );
    }
    let run = &r
        .store
        .runs
        .runs(Some(FlowName::new("orders_to_erp")), 1)
        .await
        .unwrap()[0];
    assert_eq!(run.status, "ok");
    assert!(run.finished_at.is_some());
    assert!(
        r.store
            .bindings
            .cursor(FlowName::new("orders_to_erp"))
            .await
            .unwrap()
            .is_some(),
        "cursor persisted"
    );
    assert!(
        r.store
            .journal
            .journal_pending(Some(FlowName::new("orders_to_erp")))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        r.daemon.tick(r.clock.now() + chrono::Duration::hours(1)),
        vec![]
    );
}

#[tokio::test]
async fn reload_takes_a_valid_file_and_keeps_running_on_a_broken_one() {
    let r = rig(|y| y).await;
    let file = r.project.join("demo.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let schedule = async |d: &Daemon| {
        d.flow_statuses()
            .await
            .into_iter()
            .find(|f| f.id == "products")
            .unwrap()
            .schedule
    };
    let mut watch = erpsync::daemon::FileWatch::new(vec![r.project.clone()]);

    let edited = text.replace(
        "trigger: { schedule: \"*/15 * * * *\" }",
        "trigger: { schedule: \"*/7 * * * *\" }",
    );
    assert_ne!(edited, text);
    std::fs::write(&file, &edited).unwrap();
    assert!(watch.changed());
    let erp = r.daemon.engine().systems["erp"].clone();
    // `--index-memory` is the process's, not the file's: a reload keeps it.
    r.daemon.set_index_memory(Some(3 << 20));
    let changed = r.daemon.reload().await.unwrap();
    assert_eq!(r.daemon.engine().index_memory_bound(), Some(3 << 20));
    assert_eq!(changed.flows, ["products"]);
    assert!(changed.systems.is_empty(), "{changed:?}");
    assert_eq!(schedule(&r.daemon).await.as_deref(), Some("*/7 * * * *"));
    assert!(
        Arc::ptr_eq(&erp, &r.daemon.engine().systems["erp"]),
        "an unchanged system keeps its client, token and budget"
    );

    std::fs::write(&file, edited.replace("*/7 * * * *", "*/7 * * *")).unwrap();
    assert!(watch.changed());
    match r.daemon.reload().await {
        Err(ConfigReloadError::Invalid { count, diagnostics }) => {
            assert_eq!(count, 1);
            assert!(
                diagnostics.contains("flows.products.trigger.schedule"),
                "{diagnostics}"
            );
        }
        other => panic!("expected a rejected reload, got {other:?}"),
    }
    assert_eq!(schedule(&r.daemon).await.as_deref(), Some("*/7 * * * *"));
    let m = &r.daemon.metrics;
    assert_eq!(
        m.value("erpsync_reloads_total", &[("result", "accepted")]),
        1.0
    );
    assert_eq!(
        m.value("erpsync_reloads_total", &[("result", "rejected")]),
        1.0
    );
    // The daemon still runs on the configuration in force.
    let mut events = r.daemon.subscribe();
    r.daemon
        .trigger("products", RunOptions::default(), Cause::Manual)
        .await
        .unwrap();
    let done = wait_for(&mut events, finished("products")).await;
    assert_eq!(
        done,
        DaemonEvent::RunFinished {
            flow: "products".into(),
            status: "ok".into()
        }
    );
}

#[tokio::test]
async fn a_reload_through_the_admin_api_names_what_changed_and_puts_a_new_webhook_secret_in_force()
{
    let r = rig(|y| y).await;
    let (url, stop, served) = serve_http(&r.daemon).await;
    let client = http();
    let reload = || async {
        let resp = client
            .post(format!("{url}/api/reload"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json::<Value>().await.unwrap()
    };
    let deliver = |secret: &str, id: &str| {
        let body = json!({"number": "no-such-order", "occurred_at": r.clock.now().to_rfc3339()})
            .to_string();
        client
            .post(format!("{url}/hooks/shop-orders"))
            .header(SIGNATURE_HEADER, sign(body.as_bytes(), secret))
            .header(DELIVERY_ID_HEADER, id)
            .body(body)
            .send()
    };
    let nothing = json!({"systems": [], "entities": [], "flows": [], "webhooks": []});

    let answer = reload().await;
    assert_eq!(answer, json!({"reloaded": true, "changed": nothing}));

    let file = r.project.join("demo.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let edited = text.replace(
        "${SHOP_WEBHOOK_SECRET:-demo-webhook-secret}",
        "a-new-webhook-secret",
    );
    assert_ne!(edited, text);
    std::fs::write(&file, edited).unwrap();
    let answer = reload().await;
    assert_eq!(
        answer["changed"],
        json!({"systems": [], "entities": [], "flows": [], "webhooks": ["shop_orders"]})
    );
    let old = deliver(HOOK_SECRET, "r-1").await.unwrap();
    assert_eq!(
        old.status(),
        StatusCode::UNAUTHORIZED,
        "the old secret is refused"
    );
    let new = deliver("a-new-webhook-secret", "r-2").await.unwrap();
    assert_eq!(
        new.status(),
        StatusCode::ACCEPTED,
        "the new secret is taken"
    );

    stop.send(()).unwrap();
    assert!(served.await.unwrap());
}

#[tokio::test]
async fn two_shops_one_erp_a_shop_down_does_not_stop_the_other() {
    let clock = ManualClock::new(start_time());
    let (shop_ro, erp) = sims(&clock).await;
    // The Bulgarian shop is down: nothing listens at its address.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    erpsync_sim::seed_both(&shop_ro, &erp, 3, 1);
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    let demo = demo_yaml(&shop_ro.base_url(), &erp.base_url(), dir.path());
    let systems_end = demo.find("\nflows:\n").unwrap();
    let shops = format!(
        "  shop_ro:\n    extends: merchantpro\n    base_url: {}/api/v2\n    auth: {{ kind: basic, username: demo-key, password: demo-secret }}\n  \
         shop_bg:\n    extends: merchantpro\n    base_url: {down}/api/v2\n    auth: {{ kind: basic, username: demo-key, password: demo-secret }}\n",
        shop_ro.base_url()
    );
    let start = demo.find("  shop:\n").unwrap();
    let end = demo.find("  erp:\n").unwrap();
    let mut yaml = format!("{}{}{}", &demo[..start], shops, &demo[end..systems_end]);
    yaml.push_str(
        r#"
flows:
  customers_to_erp:
    entity: customer
    from: "{{each}}"
    to: erp
    for_each: [shop_ro, shop_bg]
    mode: create_missing
  orders_to_erp:
    entity: order
    from: "{{each}}"
    to: erp
    for_each: [shop_ro, shop_bg]
    mode: create
    export_once: true
    fields: [number, status, customer, lines, total, channel]
    trigger:
      schedule: "*/2 * * * *"
      on_status: { field: status, in: [confirmed, processing] }
    incremental: { start: "2026-01-01" }
    requires:
      - { flow: customers_to_erp, record: $.customer }
    after_export:
      - action: lock
"#,
    );
    std::fs::write(project.join("shops.yaml"), yaml).unwrap();
    let (d, store) = start_daemon(&project, &clock).await;
    let order = confirmed_order(&shop_ro, "ro@example.com");

    clock.set("2026-05-04T10:02:00Z".parse().unwrap());
    let mut fired: Vec<String> = d.tick(clock.now()).into_iter().map(|f| f.0).collect();
    fired.sort();
    assert_eq!(
        fired,
        vec!["orders_to_erp.shop_bg", "orders_to_erp.shop_ro"]
    );
    assert!(d.drain(Duration::from_secs(5)).await);

    assert_eq!(
        erp.orders_by_reference(&order.number).len(),
        1,
        "the Romanian order reached the ERP"
    );
    let status = d.flow_statuses().await;
    let of = |id: &str| status.iter().find(|f| f.id == id).unwrap().clone();
    assert_eq!(of("orders_to_erp.shop_ro").last_run.unwrap().status, "ok");
    let bg = of("orders_to_erp.shop_bg");
    assert_eq!(bg.last_run.unwrap().status, "error");
    assert!(bg.last_error.is_some());
    assert!(
        store
            .bindings
            .cursor(FlowName::new("orders_to_erp.shop_bg"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .bindings
            .cursor(FlowName::new("orders_to_erp.shop_ro"))
            .await
            .unwrap()
            .is_some()
    );
    // One ERP client, one rate-limit budget, shared by both shops' flows.
    let engine = d.engine();
    assert_eq!(engine.systems.len(), 3);
    let m = &d.metrics;
    assert_eq!(
        m.value(
            "erpsync_runs_total",
            &[
                ("flow", "orders_to_erp.shop_bg"),
                ("kind", "sync"),
                ("status", "error")
            ]
        ),
        1.0
    );
    // The next tick runs both again: the failing shop is retried, not dropped.
    clock.set("2026-05-04T10:04:00Z".parse().unwrap());
    assert_eq!(d.tick(clock.now()).len(), 2);
    assert!(d.drain(Duration::from_secs(5)).await);
}

/// Waits (a few seconds at most, in real time) for the admin API's view of `system` to pass
/// `pick`; returns it.
async fn system_until(url: &str, system: &str, pick: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let body: Value = http()
            .get(format!("{url}/api/systems"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let s = body["systems"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["system"] == system)
            .cloned()
            .unwrap_or_else(|| panic!("no system `{system}` in {body}"));
        if pick(&s) {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The console's flows page, logged in with the admin token.
async fn console_flows_page(url: &str) -> String {
    let client = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = client
        .post(format!("{url}/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .unwrap();
    let session = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    client
        .get(format!("{url}/console/flows"))
        .header("cookie", session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn metric_line(url: &str, prefix: &str) -> String {
    let text = http()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` in {text}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_that_stops_answering_is_shown_down_and_probed_until_it_answers() {
    let r = rig(|y| {
        y.replace(
            "    extends: simulated_erp\n",
            "    extends: simulated_erp\n    timeouts: { connect_ms: 500, request_ms: 200 }\n    retry: { max_attempts: 2, initial_backoff_ms: 5, max_backoff_ms: 10 }\n    circuit_breaker: { failures: 1, probe_initial_secs: 30, probe_max_secs: 50 }\n",
        )
    })
    .await;
    let d = &r.daemon;
    let order = confirmed_order(&r.shop, "ana@example.com");
    let (url, stop, _task) = serve_http(d).await;
    // The ERP accepts connections and never answers.
    r.erp.faults().set(erpsync_sim::Faults {
        timeout_rate: 1.0,
        timeout_ms: 5_000,
        ..Default::default()
    });
    let mut events = d.subscribe();
    d.trigger("orders_to_erp", RunOptions::default(), Cause::Manual)
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let DaemonEvent::RunFinished { flow, status } = events.recv().await.unwrap()
                && flow == "orders_to_erp"
            {
                return status;
            }
        }
    })
    .await
    .expect("the run ends within seconds");
    assert_eq!(status, "error");
    let last = d
        .flow_statuses()
        .await
        .into_iter()
        .find(|f| f.id == "orders_to_erp")
        .unwrap();
    let error = last.last_error.unwrap();
    assert!(error.contains("system `erp` is down"), "{error}");
    assert!(r.store.failures.failures(None).await.unwrap().is_empty());

    // Down in the admin API, the metrics and the state (what `erpsync status` shows).
    let down = system_until(&url, "erp", |s| s["up"] == false).await;
    let since: DateTime<Utc> = serde_json::from_value(down["down_since"].clone()).unwrap();
    let first_probe: DateTime<Utc> = serde_json::from_value(down["next_probe"].clone()).unwrap();
    assert_eq!(first_probe - since, chrono::Duration::seconds(30));
    assert_eq!(
        metric_line(&url, "erpsync_system_up{system=\"erp\"}").await,
        "erpsync_system_up{system=\"erp\"} 0"
    );
    let kept = r.store.runs.system_health().await.unwrap();
    assert!(kept.iter().any(|h| h.system == "erp" && h.down), "{kept:?}");
    // The same truth on `GET /api/flows` and the console's flows page, and told once.
    let flows: Value = http()
        .get(format!("{url}/api/flows"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = &flows["systems_down"];
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{flows}");
    assert_eq!(listed[0]["system"], "erp");
    assert_eq!(listed[0]["since"], down["down_since"]);
    assert_eq!(listed[0]["next_probe"], down["next_probe"]);
    let page = console_flows_page(&url).await;
    assert!(page.contains("Systems down"), "{page}");
    assert!(page.contains("<strong>erp</strong>"), "{page}");

    // The daemon probes when the pause has run out; still no answer: the pause doubles (to
    // its cap of 50 s).
    r.clock.set(first_probe);
    let second = first_probe + chrono::Duration::seconds(50);
    let again = system_until(&url, "erp", |s| {
        serde_json::from_value::<DateTime<Utc>>(s["next_probe"].clone()).ok() == Some(second)
    })
    .await;
    assert_eq!(again["up"], false);
    assert_eq!(again["consecutive_failures"], 2);

    // It answers again: the next probe finds it up, and the order goes out.
    r.erp.faults().clear();
    r.clock.set(second);
    system_until(&url, "erp", |s| s["up"] == true).await;
    let page = console_flows_page(&url).await;
    assert!(!page.contains("Systems down"), "{page}");
    assert_eq!(
        metric_line(&url, "erpsync_system_up{system=\"erp\"}").await,
        "erpsync_system_up{system=\"erp\"} 1"
    );
    let kept = r.store.runs.system_health().await.unwrap();
    assert!(
        kept.iter().any(|h| h.system == "erp" && !h.down),
        "{kept:?}"
    );
    d.trigger("orders_to_erp", RunOptions::default(), Cause::Manual)
        .await
        .unwrap();
    let mut events = d.subscribe();
    wait_for(&mut events, finished("orders_to_erp")).await;
    assert_eq!(r.erp.orders_by_reference(&order.number).len(), 1);
    let _ = stop.send(());
}

/// Serves the daemon's HTTP on a free port with these limits; the sender stops it.
async fn serve_limited(
    d: &Arc<Daemon>,
    http: erpsync::daemon::HttpLimits,
) -> (std::net::SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let opts = ServeOptions {
        scheduler: false,
        watch_every: None,
        http,
    };
    tokio::spawn(serve(d.clone(), Some(listener), opts, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

/// Reads what the server sends until it closes the connection; `None` when it keeps it open
/// past `within`.
async fn until_closed(s: &mut tokio::net::TcpStream, within: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt as _;
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|_| String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_connections_are_capped() {
    use tokio::io::AsyncWriteExt as _;
    use tokio::net::TcpStream;
    let r = rig(|y| y).await;
    let limits = erpsync::daemon::HttpLimits {
        header_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(300),
        max_connections: 64,
        body_limit: 1024,
    };
    let (addr, stop) = serve_limited(&r.daemon, limits).await;

    // Headers a line at a time, slower than the server waits for: cut off.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /hooks/shop-orders HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (mut rd, mut wr) = slow.into_split();
    let dribble = tokio::spawn(async move {
        for i in 0..40 {
            if wr
                .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        use tokio::io::AsyncReadExt as _;
        let mut buf = [0u8; 256];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "headers held for 3 s were not cut off");
    assert!(started.elapsed() < Duration::from_secs(2));
    dribble.abort();

    // A body that never arrives: 408.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /hooks/shop-orders HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"number\"",
    )
    .await
    .unwrap();
    let answer = until_closed(&mut s, Duration::from_secs(3))
        .await
        .expect("the connection ends");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A body over the limit: 413.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let big = "x".repeat(2048);
    s.write_all(
        format!(
            "POST /hooks/shop-orders HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{big}",
            big.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let answer = until_closed(&mut s, Duration::from_secs(3)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let _ = stop.send(());

    // At most two connections: a third is closed at once; once one ends, a request passes.
    let (addr, stop) = serve_limited(
        &r.daemon,
        erpsync::daemon::HttpLimits {
            header_timeout: Duration::from_secs(30),
            max_connections: 2,
            ..limits
        },
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        // Answered, so surely accepted, and kept open for the next request.
        use tokio::io::AsyncReadExt as _;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while !String::from_utf8_lossy(&got).contains("\"ok\"}") {
            let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
                .await
                .expect("an answer")
                .unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        held.push(s);
    }
    let mut third = TcpStream::connect(addr).await.unwrap();
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let answer = until_closed(&mut third, Duration::from_secs(2))
        .await
        .expect("the third connection is closed at once");
    assert!(answer.is_empty(), "{answer}");
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ok = http()
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        if ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no connection taken after the held ones ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
}
