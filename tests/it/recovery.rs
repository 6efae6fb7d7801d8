//! Recovery after crashes and retries, through the real binary: a process killed while a
//! create's answer is lost and again while the order is being locked still ends with the order
//! in the ERP once and locked in the shop; writes made for a required record are settled by
//! the flow that made them; retrying one failure touches that failure only.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use erpsync_sim::shop::Order;
use erpsync_sim::{FailRule, Faults};
use serde_json::{Value, json};

use crate::support::binary::{Project, kill_when, text};

const EXPORT: [&str; 4] = ["run", "--once", "--flow", "orders_to_erp"];
const LOCK_ROUTE: &str = "/api/v2/orders/{id}/lock";

/// The demo project without the flow that brings orders back from the ERP, so the tests
/// watch the export alone; `edit` changes it further.
async fn export_only(products: usize, edit: impl FnOnce(&mut Value)) -> Project {
    Project::start(products, |doc| {
        doc["flows"]
            .as_object_mut()
            .unwrap()
            .remove("orders_from_erp");
        edit(doc);
    })
    .await
}

/// How many ERP clients have this e-mail address.
fn clients_with(p: &Project, email: &str) -> usize {
    p.erp
        .clients()
        .into_iter()
        .filter(|c| c.email.eq_ignore_ascii_case(email))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_settled_from_the_journal_is_locked_after_a_second_crash() {
    let p = export_only(3, |_| {}).await;
    let number = p.confirm_order(0);

    // The ERP applies the create and holds its answer: the process dies with the create in
    // doubt in its journal.
    p.erp.faults().set(Faults {
        rules: vec![
            FailRule::new("POST", "/api/orders", 503, 1)
                .after_apply()
                .hold(Duration::from_secs(30)),
        ],
        ..Faults::default()
    });
    let mut child = p.spawn(&EXPORT);
    kill_when(&mut child, 30, "order in the ERP", || {
        p.erp.orders_by_reference(&number).len() == 1
    })
    .await;
    p.erp.faults().clear();
    let pending = p.run(&["failures", "pending"]);
    assert!(text(&pending).contains(&number), "{}", text(&pending));

    // The next run settles it from the journal and dies while the shop holds the lock call.
    p.shop.faults().set(Faults {
        rules: vec![FailRule::new("POST", "/api/v2/orders/", 503, 1).hold(Duration::from_secs(30))],
        ..Faults::default()
    });
    let mut child = p.spawn(&EXPORT);
    kill_when(&mut child, 30, "lock call", || {
        p.shop.counters().count("POST", LOCK_ROUTE) >= 1
    })
    .await;
    p.shop.faults().clear();

    for _ in 0..2 {
        let out = p.run(&EXPORT);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert_eq!(p.erp.orders_by_reference(&number).len(), 1);
    let order = p.shop.order_by_number(&number).unwrap();
    assert!(order.locked, "order {number} was exported but never locked");
    let list = p.run(&["failures", "list"]);
    assert!(text(&list).contains("no failures"), "{}", text(&list));
    let pending = p.run(&["failures", "pending"]);
    assert!(
        text(&pending).contains("no pending writes"),
        "{}",
        text(&pending)
    );
}

/// Sets a shop product's gross price, as a merchant would.
fn set_shop_price(p: &Project, sku: &str, price: f64) {
    let id = p.shop.product_by_sku(sku).unwrap().id;
    p.shop
        .update_product(id, |x| x.price_gross = Some(price))
        .unwrap();
}

fn failure_keys(p: &Project) -> Vec<(i64, String)> {
    let out = p.run(&["failures", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["id"].as_i64().unwrap(),
                f["key"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_one_failure_leaves_the_others_and_a_run_that_syncs_a_record_says_so() {
    let p = Project::start(6, |_| {}).await;
    let products = ["run", "--once", "--flow", "products"];
    let first = p.run(&products);
    assert!(first.status.success(), "{}", text(&first));
    let (a, b) = (p.items[0].sku.clone(), p.items[1].sku.clone());
    set_shop_price(&p, &a, 111.0);
    set_shop_price(&p, &b, 222.0);
    // The ERP refuses both updates.
    p.erp
        .faults()
        .fail_next(FailRule::new("PUT", "/api/products/", 400, 2));
    let failed = p.run(&products);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    let kept = failure_keys(&p);
    let mut keys: Vec<&str> = kept.iter().map(|(_, k)| k.as_str()).collect();
    keys.sort();
    let mut want = vec![a.as_str(), b.as_str()];
    want.sort();
    assert_eq!(keys, want);

    // Only `a` is retried: `b` still disagrees, so its failure stays.
    let id_a = kept.iter().find(|(_, k)| *k == a).unwrap().0.to_string();
    let retry = p.run(&["failures", "retry", "--id", &id_a]);
    assert!(retry.status.success(), "{}", text(&retry));
    let left: Vec<String> = failure_keys(&p).into_iter().map(|(_, k)| k).collect();
    assert_eq!(left, vec![b.clone()], "{}", text(&retry));
    assert!(
        text(&retry).contains(&format!("cleared {a}")),
        "{}",
        text(&retry)
    );
    assert_eq!(p.erp.product(&a).unwrap().price, 111.0);
    assert_ne!(p.erp.product(&b).unwrap().price, 222.0);

    // The merchant touches `b` again: the next run syncs it and says its failure is gone.
    set_shop_price(&p, &b, 223.0);
    let run = p.run(&products);
    assert!(run.status.success(), "{}", text(&run));
    assert!(
        text(&run).contains(&format!("cleared {b}")),
        "{}",
        text(&run)
    );
    assert!(text(&run).contains("failures cleared 1"), "{}", text(&run));
    assert!(failure_keys(&p).is_empty());
    assert_eq!(p.erp.product(&b).unwrap().price, 223.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_created_on_demand_and_left_in_doubt_is_settled_by_the_order_flow() {
    let p = export_only(3, |_| {}).await;
    let number = p.confirm_order(0);
    let email = p.shop.order_by_number(&number).unwrap().customer.email;
    // The ERP creates the customer the order needs, and the answer is lost.
    p.erp
        .faults()
        .fail_next(FailRule::new("POST", "/api/clients", 503, 1).after_apply());
    let first = p.run(&EXPORT);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    let pending = p.run(&["failures", "pending"]);
    assert!(
        text(&pending).contains("customers_to_erp"),
        "{}",
        text(&pending)
    );

    // `customers_to_erp` is manual-only; the order flow's next run settles what it wrote.
    let second = p.run(&EXPORT);
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        text(&second).contains("in-doubt settled 1"),
        "{}",
        text(&second)
    );
    let pending = p.run(&["failures", "pending"]);
    assert!(
        text(&pending).contains("no pending writes"),
        "{}",
        text(&pending)
    );

    // The order (sent by that run when it read the order again, else by the retry) is in
    // the ERP once, and so is its customer.
    let retry = p.run(&["failures", "retry", "--all"]);
    assert!(retry.status.success(), "{}", text(&retry));
    assert_eq!(p.erp.orders_by_reference(&number).len(), 1);
    assert_eq!(clients_with(&p, &email), 1);
}

/// A customer create left in doubt and not applied is sent again by the order flow's next
/// run, and the ERP refuses that resend (`refusals` times: the settle's resend, then the
/// order's own attempt). The customer flow is manual and its records come only from
/// orders, so its kept failure must end when the order syncs the customer: in that run, or
/// when `failures retry --all` retries the order before it (retrying the customer alone
/// would look for it in the shop, which has none).
async fn required_customer_refused_after_doubt(refusals: u32) {
    let p = export_only(3, |_| {}).await;
    let number = p.confirm_order(0);
    let email = p.shop.order_by_number(&number).unwrap().customer.email;
    // The ERP cannot be reached for the customer create: its outcome is unknown.
    p.erp
        .faults()
        .fail_next(FailRule::new("POST", "/api/clients", 503, 20));
    let first = p.run(&EXPORT);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    p.erp.faults().clear();
    let pending = p.run(&["failures", "pending"]);
    assert!(
        text(&pending).contains("customers_to_erp"),
        "{}",
        text(&pending)
    );
    p.erp
        .faults()
        .fail_next(FailRule::new("POST", "/api/clients", 422, refusals));
    let second = p.run(&EXPORT);
    let list = p.run(&["failures", "list"]);
    assert_eq!(
        text(&list).contains("customers_to_erp"),
        refusals > 1,
        "second run:\n{}\nfailures:\n{}",
        text(&second),
        text(&list)
    );
    let retry = p.run(&["failures", "retry", "--all"]);
    assert!(retry.status.success(), "{}", text(&retry));
    let list = p.run(&["failures", "list"]);
    assert!(text(&list).contains("no failures"), "{}", text(&list));
    assert_eq!(p.erp.orders_by_reference(&number).len(), 1);
    assert_eq!(clients_with(&p, &email), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_customer_that_failed_to_settle_is_cleared_when_its_order_syncs_it() {
    required_customer_refused_after_doubt(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_all_retries_the_order_before_the_customer_it_brings() {
    required_customer_refused_after_doubt(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erp_that_stops_answering_mid_run_stops_the_run_within_seconds_and_loses_nothing() {
    const ORDERS: usize = 40;
    let p = export_only(5, |doc| {
        let erp = &mut doc["systems"]["erp"];
        erp["timeouts"] = json!({"connect_ms": 1000, "request_ms": 300});
        erp["circuit_breaker"] = json!({"failures": 3, "probe_initial_secs": 60});
        // Slow enough that the outage starts with most orders still to send.
        doc["systems"]["shop"]["rate_limit"] = json!({"per_second": 40.0, "burst": 1});
    })
    .await;
    let numbers: Vec<String> = (0..ORDERS).map(|i| p.confirm_order(i)).collect();

    let mut child = p
        .command(&EXPORT)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.erp.orders().len() < 5 {
        assert!(Instant::now() < deadline, "no order reached the ERP");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The ERP accepts connections and never answers.
    p.erp.faults().set(Faults {
        timeout_rate: 1.0,
        timeout_ms: 60_000,
        ..Faults::default()
    });
    let calls_before = p.erp.counters().total();
    let outage = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if outage.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("the run went on for 20 s against an ERP that does not answer");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let stopped_after = outage.elapsed();
    let out = child.wait_with_output().unwrap();
    let shown = text(&Output { status, ..out });
    let calls = p.erp.counters().total() - calls_before;
    println!(
        "run stopped {:.1}s into the outage after {calls} calls to the ERP",
        stopped_after.as_secs_f64()
    );
    assert_eq!(status.code(), Some(1), "{shown}");
    assert!(stopped_after < Duration::from_secs(5), "{shown}");
    assert!(calls <= 4, "{calls} calls to a system that does not answer");
    assert_eq!(
        shown.matches("system `erp` is down").count(),
        1,
        "one flow-level error: {shown}"
    );
    // Records not tried stay for the next run, none is a stored failure; at most the one in
    // flight when the ERP stopped answering is (its write is in doubt).
    let kept = failure_keys(&p);
    assert!(kept.len() <= 1, "{kept:?}");
    let status_out = p.run(&["status"]);
    let status_text = text(&status_out);
    assert!(
        status_text.contains("system down") && status_text.contains("erp "),
        "{status_text}"
    );

    // Back up: the next run sends the rest, each order once, and the system is up again.
    p.erp.faults().clear();
    let again = p.run(&EXPORT);
    assert!(again.status.success(), "{}", text(&again));
    for n in &numbers {
        assert_eq!(p.erp.orders_by_reference(n).len(), 1, "order {n}");
    }
    assert!(failure_keys(&p).is_empty());
    let pending = p.run(&["failures", "pending"]);
    assert!(
        text(&pending).contains("no pending writes"),
        "{}",
        text(&pending)
    );
    let status_text = text(&p.run(&["status"]));
    assert!(!status_text.contains("system down"), "{status_text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_that_fails_is_kept_as_a_failure_until_it_runs_and_a_dry_run_never_locks() {
    let p = export_only(3, |_| {}).await;
    let number = p.confirm_order(0);
    // The shop refuses the lock for good this time.
    p.shop
        .faults()
        .fail_next(FailRule::new("POST", "/api/v2/orders/", 400, 1));
    let first = p.run(&EXPORT);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    assert_eq!(p.erp.orders_by_reference(&number).len(), 1);
    assert!(!p.shop.order_by_number(&number).unwrap().locked);
    let kept = failure_keys(&p);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].1, number);
    let list = text(&p.run(&["failures", "list"]));
    assert!(list.contains("`lock` of"), "{list}");

    // A dry run plans; it locks nothing.
    let locks = || p.shop.counters().count("POST", LOCK_ROUTE);
    let before = locks();
    let plan = p.run(&["dry-run", "--flow", "orders_to_erp"]);
    assert!(plan.status.success(), "{}", text(&plan));
    assert_eq!(locks(), before);

    // Retried: locked, the failure cleared, the order not sent again.
    let id = kept[0].0.to_string();
    let retry = p.run(&["failures", "retry", "--id", &id]);
    assert!(retry.status.success(), "{}", text(&retry));
    assert!(p.shop.order_by_number(&number).unwrap().locked);
    assert!(failure_keys(&p).is_empty());
    assert_eq!(p.erp.orders_by_reference(&number).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_that_predicts_a_failure_exits_1_and_a_clean_plan_exits_0() {
    let p = export_only(3, |_| {}).await;
    let order = |who: &str| {
        let item = &p.items[0];
        let mut o = Order::new(
            &format!("{who}@example.com"),
            &[(item.sku.as_str(), 1, item.price_gross)],
        );
        o.customer.first_name = who.into();
        o.customer.last_name = "Test".into();
        o.shipping_status = "confirmed".into();
        p.shop.create_order(o).unwrap().number
    };
    let plan = || p.run(&["dry-run", "--flow", "orders_to_erp"]);
    order("ana");
    let clean = plan();
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));

    // The ERP refuses to look a new order up: the plan says it would fail.
    let number = order("ion");
    p.erp
        .faults()
        .fail_next(FailRule::new("GET", "/api/orders", 422, 1));
    let failing = plan();
    let out = text(&failing);
    assert_eq!(failing.status.code(), Some(1), "{out}");
    assert!(out.contains("failed 1"), "{out}");
    assert!(out.contains("dry run: nothing was written"), "{out}");
    // Nothing was written: the ERP has neither order, and no failure is kept.
    assert!(p.erp.orders_by_reference(&number).is_empty());
    assert!(failure_keys(&p).is_empty());
}

/// The ERP answers a page of its product listing with a 200 and what is not a page: a
/// maintenance page, as a system behind a proxy does while it is down, or an error in JSON
/// without the page's `data`, on a later page or on the first. `erpsync run` says so and
/// fails the flow; it does not take the page for the listing's end (or the first for an
/// empty ERP) and create the products it could not see (on either side). Once the ERP is
/// back, the next run ends the sync with nothing written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_page_served_as_a_listing_page_fails_the_run_and_creates_nothing() {
    let error = r#"{"message":"ERP in mentenanta","code":503}"#;
    for (page, body, reason) in [
        (
            "offset=100",
            "<!doctype html><title>Maintenance</title><p>ERP in mentenanta</p>",
            "not JSON (text/html",
        ),
        (
            "offset=100",
            error,
            "stopped at page 2: the answer has no `$.data`",
        ),
        (
            "offset=0",
            error,
            "stopped at page 1: the answer has no `$.data`",
        ),
    ] {
        let p = Project::start(250, |_| {}).await;
        p.erp.faults().fail_next(
            FailRule::new("GET", "/api/products", 200, 1_000)
                .with_query(page)
                .with_body(body),
        );
        let down = p.run(&["run", "--once", "--flow", "products"]);
        let out = text(&down);
        assert!(!down.status.success(), "{out}");
        assert!(out.contains(reason), "{out}");
        assert!(out.contains("mentenanta"), "{out}");
        assert_eq!(p.erp.product_count(), 250, "{out}");
        assert_eq!(p.shop.product_count(), 250, "{out}");

        p.erp.faults().clear();
        let back = p.run(&["run", "--once", "--flow", "products"]);
        let out = text(&back);
        assert!(back.status.success(), "{out}");
        assert_eq!(p.erp.product_count(), 250, "{out}");
        assert_eq!(p.shop.product_count(), 250, "{out}");
    }
}
