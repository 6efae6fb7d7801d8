//! The operator's console in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`), driven over WebDriver, against a daemon whose ERP loses an order and
//! refuses another: log in, see the flows, run one, open the refused order's failure, retry
//! it and see it gone, settle the lost write, search a record's history, look at the runs and
//! a dry run, switch a flow off and see the daemon skip it (a restarted daemon too). One
//! browser session for the whole scenario; a screenshot of each main page is written to
//! `target/console-screenshots/`. The roles and CSRF checks are asserted over plain HTTP.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use erpsync::clock::{Clock as _, ManualClock};
use erpsync::daemon::{Daemon, DaemonEvent};
use erpsync::state::{FlowName, SqliteStore, Store};
use erpsync_sim::{FailRule, Faults, seed_both};
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::support;
use crate::support::daemon::{finished, serve_http};
use crate::support::project::at_sims;
use crate::support::project::{demo_project, write_demo_project};
use crate::support::sims::{confirm_order, sims};

const ADMIN: &str = "console-admin-token-4821";
const VIEWER: &str = "console-viewer-token-9377";
/// Longest wait for anything in this test: the daemon, the simulators and the browser are
/// all local.
const PATIENCE: Duration = Duration::from_secs(20);

fn at(t: &str) -> DateTime<Utc> {
    format!("2026-05-04T{t}Z").parse().unwrap()
}

/// A chromedriver on a free port, ended with the test.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// chromedriver, started; None when it is missing and `ERPSYNC_SKIP_BROWSER=1` (or `ERPSYNC_OFFLINE=1`) allows
/// skipping (a newcomer's machine). CI installs it and must not skip silently.
fn start_driver() -> Option<Driver> {
    let Some(bin) = which(&["chromedriver"]) else {
        if crate::support::offline::may_skip_browser() {
            eprintln!("skipped: chromedriver is not installed");
            return None;
        }
        panic!(
            "`chromedriver` is not installed: `apt-get install chromium chromium-driver` \
             (.ci/run does), or set ERPSYNC_SKIP_BROWSER=1 (or ERPSYNC_OFFLINE=1) to skip the browser test"
        );
    };
    let mut child = Command::new(bin)
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(port) = line
                .split("started successfully on port ")
                .nth(1)
                .map(|p| p.trim_end_matches('.').to_string())
            {
                let _ = tx.send(port);
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("chromedriver says which port it listens on");
    Some(Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    })
}

async fn browser(driver: &Driver) -> Client {
    let chromium = which(&["chromium", "chromium-browser", "google-chrome"])
        .expect("`chromium` is not installed: `apt-get install chromium chromium-driver`");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--hide-scrollbars"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a headless Chromium session")
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a screenshot of the page, once every form control on it has a label a screen
/// reader can say, and the page has one `h1`.
async fn shot(b: &Client, name: &str) {
    let unlabelled = b
        .execute(
            "return Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea, button'))
                .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
                .map(e => e.outerHTML);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(unlabelled, json!([]), "{name}: controls without a label");
    let h1 = b
        .execute("return document.querySelectorAll('h1').length;", vec![])
        .await
        .unwrap();
    assert_eq!(h1, json!(1), "{name}");
    let png = b.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

async fn page(b: &Client) -> String {
    b.source().await.unwrap()
}

/// The page once it holds `text`: a click that submits a form returns before the browser has
/// loaded the answer, so the old page may still be showing.
async fn page_with(b: &Client, text: &str) -> String {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let html = page(b).await;
        if html.contains(text) {
            return html;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "`{text}` never showed: {html}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn click(b: &Client, css: &str) {
    b.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("`{css}` on the page: {e}"))
        .click()
        .await
        .unwrap();
}

/// Waits for the event `pick` accepts.
async fn wait_for(
    rx: &mut broadcast::Receiver<DaemonEvent>,
    pick: impl Fn(&DaemonEvent) -> bool,
) -> DaemonEvent {
    support::daemon::wait_for(rx, PATIENCE, pick).await
}

/// The demo project where orders can neither be looked up nor listed in the ERP, which takes
/// no idempotency key (a lost answer leaves the write in doubt for a person to settle), with
/// `products` on an hourly schedule of its own, and both console tokens.
fn project(dir: &Path, shop_url: &str, erp_url: &str) -> PathBuf {
    let mut doc = demo_project();
    let erp = &mut doc["systems"]["erp"];
    erp["operations"]["create_order"]
        .as_object_mut()
        .unwrap()
        .remove("idempotency_key");
    let order = erp["entities"]["order"].as_object_mut().unwrap();
    order.remove("lookup");
    order.remove("list");
    erp.as_object_mut().unwrap().remove("rate_limit");
    erp["retry"] = json!({"max_attempts": 2, "initial_backoff_ms": 5, "max_backoff_ms": 10});
    doc["systems"]["shop"]["rate_limit"] = json!({"per_second": 1000.0, "burst": 1000});
    doc["flows"]
        .as_object_mut()
        .unwrap()
        .remove("orders_from_erp");
    doc["flows"]["products"]["trigger"]["schedule"] = json!("7 * * * *");
    doc["daemon"]["admin_token"] = json!(ADMIN);
    doc["daemon"]["viewer_token"] = json!(VIEWER);
    let text = at_sims(
        &serde_json::to_string_pretty(&doc).unwrap(),
        shop_url,
        erp_url,
    );
    let path = dir.join("project");
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(path.join("console.yaml"), text).unwrap();
    path
}

async fn daemon(project: &Path, clock: &ManualClock, store: Store) -> Arc<Daemon> {
    support::daemon::start(vec![project.to_path_buf()], clock, store, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_retries_settles_and_switches_flows_from_the_browser() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(driver) = start_driver() else {
        return;
    };
    let started = Instant::now();
    let clock = ManualClock::new(at("10:00:30"));
    let (shop, erp) = sims(&clock).await;
    let items = seed_both(&shop, &erp, 5, 3);
    let mut numbers = Vec::new();
    for (i, item) in items.iter().take(2).enumerate() {
        numbers.push(confirm_order(&shop, i, &[(item, 1)]).number);
    }
    let dir = tempfile::tempdir().unwrap();
    let project = project(dir.path(), &shop.base_url(), &erp.base_url());
    let state = dir.path().join("state.sqlite");
    let store: Store = Store::from(SqliteStore::open(&state).unwrap());
    let d = daemon(&project, &clock, store.clone()).await;
    // Another node sharing the state, started before anyone switches a flow.
    let other = daemon(
        &project,
        &clock,
        Store::from(SqliteStore::open(&state).unwrap()),
    )
    .await;
    let (url, stop, _) = serve_http(&d).await;
    let mut events = d.subscribe();

    // The ERP refuses one order for good and loses the other before applying it.
    erp.faults().set(Faults {
        rules: vec![
            FailRule::new("POST", "/api/orders", 422, 1),
            FailRule::new("POST", "/api/orders", 503, 1),
        ],
        ..Faults::default()
    });

    let b = browser(&driver).await;

    // Login: a wrong token is refused, the admin token lands on the flows.
    b.goto(&format!("{url}/console")).await.unwrap();
    assert!(
        b.current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/console/login")
    );
    shot(&b, "login").await;
    b.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys("not-the-token")
        .await
        .unwrap();
    click(&b, "form.login button").await;
    page_with(&b, "not the admin or the viewer token").await;
    b.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(ADMIN)
        .await
        .unwrap();
    click(&b, "form.login button").await;
    b.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("section[data-flow=\"orders_to_erp\"]"))
        .await
        .unwrap();
    let html = page(&b).await;
    for flow in ["products", "stock", "orders_to_erp", "customers_to_erp"] {
        assert!(html.contains(&format!("data-flow=\"{flow}\"")), "{flow}");
    }
    assert!(html.contains(">operator<"));

    // Run now: the ERP refuses one order and loses the other.
    click(
        &b,
        "section[data-flow=\"orders_to_erp\"] button[value=\"sync\"]",
    )
    .await;
    let flash = b
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(".flash"))
        .await
        .unwrap();
    assert_eq!(flash.text().await.unwrap(), "Run of orders_to_erp started.");
    wait_for(&mut events, finished("orders_to_erp")).await;
    b.refresh().await.unwrap();
    let html = page(&b).await;
    assert!(
        html.contains("failed 2"),
        "last run counts on the card: {html}"
    );
    shot(&b, "flows").await;

    // Failures: both orders are kept; one lost its answer and waits to be settled.
    b.goto(&format!("{url}/console/failures")).await.unwrap();
    let pending = store.journal.journal_pending(None).await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let lost = pending[0].key.clone();
    let refused = numbers.iter().find(|n| **n != lost).unwrap().clone();
    let failures = store
        .failures
        .failures(Some(FlowName::new("orders_to_erp")))
        .await
        .unwrap();
    let failure = failures.iter().find(|f| f.key == refused).unwrap();
    assert_eq!(failure.status, Some(422));
    let html = page(&b).await;
    assert!(html.contains(&format!("data-failure=\"{}\"", failure.id)));
    assert!(html.contains(&format!("data-pending=\"{lost}\"")));
    shot(&b, "failures").await;

    // The refused order side by side: source record, payload sent, response, error.
    click(&b, &format!("tr[data-failure=\"{}\"] a", failure.id)).await;
    b.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(".sides"))
        .await
        .unwrap();
    let html = page(&b).await;
    for part in ["Source record", "Sent payload", "Response", "422"] {
        assert!(html.contains(part), "{part} in {html}");
    }
    assert!(!html.contains("nothing was sent"), "a payload was sent");
    shot(&b, "failure").await;

    // Retry it once the ERP takes orders again: it syncs and leaves the list.
    erp.faults().clear();
    click(&b, "button[value=\"retry\"]").await;
    wait_for(&mut events, finished("orders_to_erp")).await;
    assert_eq!(erp.orders_by_reference(&refused).len(), 1);
    b.goto(&format!("{url}/console/failures")).await.unwrap();
    let html = page(&b).await;
    assert!(
        !html.contains(&format!("data-failure=\"{}\"", failure.id)),
        "the retried failure is gone: {html}"
    );

    // The lost order was not sent: settled so, it leaves the writes in doubt.
    click(
        &b,
        &format!("tr[data-pending=\"{lost}\"] button[value=\"not_sent\"]"),
    )
    .await;
    b.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(".flash"))
        .await
        .unwrap();
    let html = page(&b).await;
    assert!(html.contains("settled: not sent"), "{html}");
    assert!(!html.contains(&format!("data-pending=\"{lost}\"")));
    assert!(
        store
            .journal
            .journal_pending(None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        erp.orders_by_reference(&lost).len(),
        0,
        "nothing sent twice"
    );

    // Record history of the retried order: bound on both sides, created by the retry run.
    b.goto(&format!("{url}/console/records")).await.unwrap();
    b.find(Locator::Css("#key"))
        .await
        .unwrap()
        .send_keys(&refused)
        .await
        .unwrap();
    click(&b, "form[role=\"search\"] button").await;
    let html = page_with(&b, &format!("Bindings of {refused}")).await;
    assert!(html.contains("decision create"), "{html}");
    assert!(html.contains("decision failed"), "{html}");
    shot(&b, "record").await;

    // Runs: the first run and the retry, with a per-record report.
    b.goto(&format!("{url}/console/runs?flow=orders_to_erp"))
        .await
        .unwrap();
    let html = page(&b).await;
    assert_eq!(html.matches("href=\"/console/runs/").count(), 2, "{html}");
    shot(&b, "runs").await;
    click(&b, "tbody tr:last-child a").await;
    b.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("table.records"))
        .await
        .unwrap();
    let html = page(&b).await;
    assert!(html.contains(&refused) && html.contains(&lost), "{html}");
    assert!(html.contains("decision failed"), "{html}");
    shot(&b, "run").await;

    // A dry run of the products shows the plan and writes nothing.
    let (calls, writes) = (erp.counters().total(), erp.counters().writes());
    b.goto(&format!("{url}/console/flows/products/dry-run"))
        .await
        .unwrap();
    click(&b, "form.filters button").await;
    b.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("table.records"))
        .await
        .unwrap();
    let html = page(&b).await;
    assert!(html.contains("<h2>Plan</h2>"), "{html}");
    assert!(erp.counters().total() > calls, "the dry run read the ERP");
    assert_eq!(erp.counters().writes(), writes, "a dry run writes nothing");
    assert_eq!(
        store
            .runs
            .runs(Some(FlowName::new("products")), 10)
            .await
            .unwrap()
            .len(),
        0,
        "a dry run is no run"
    );
    shot(&b, "dry-run").await;

    // Switch products off: the switch says so, no firing is planned, the tick skips it.
    b.goto(&format!("{url}/console/flows")).await.unwrap();
    click(&b, "section[data-flow=\"products\"] button.switch").await;
    b.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(
            "section[data-flow=\"products\"] button.switch[aria-checked=\"false\"]",
        ))
        .await
        .unwrap();
    page_with(&b, "Flow products switched off.").await;
    let status = async |d: &Daemon| {
        d.flow_statuses()
            .await
            .into_iter()
            .find(|f| f.id == "products")
            .unwrap()
    };
    assert!(!status(&d).await.enabled);
    assert_eq!(status(&d).await.next_run, None);
    let due = d.tick(at("10:07:00"));
    assert!(!due.is_empty(), "other flows are due by then");
    assert!(due.iter().all(|(f, _)| f != "products"), "{due:?}");
    // The other node still had it planned: it fires, reads the switch and skips the run.
    let mut other_events = other.subscribe();
    let due = other.tick(at("10:07:00"));
    assert!(due.iter().any(|(f, _)| f == "products"), "{due:?}");
    wait_for(
        &mut other_events,
        |e| matches!(e, DaemonEvent::RunSkipped { flow } if flow == "products"),
    )
    .await;
    assert!(other.drain(PATIENCE).await);
    assert!(d.drain(PATIENCE).await);
    assert_eq!(
        store
            .runs
            .runs(Some(FlowName::new("products")), 10)
            .await
            .unwrap()
            .len(),
        0
    );
    // A reload and a restart keep it off.
    d.reload().await.unwrap();
    assert!(!status(&d).await.enabled);
    let restarted = daemon(
        &project,
        &clock,
        Store::from(SqliteStore::open(&state).unwrap()),
    )
    .await;
    assert!(!status(&restarted).await.enabled);
    assert_eq!(status(&restarted).await.switched, Some(false));
    assert_eq!(status(&restarted).await.next_run, None);

    // At phone width the flows page has no sideways scrolling.
    b.set_window_size(390, 844).await.unwrap();
    b.refresh().await.unwrap();
    let fits = b
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(fits, Value::Bool(true));
    shot(&b, "flows-phone").await;

    b.close().await.unwrap();
    let _ = stop.send(());
    let _ = clock.now();
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "the browser scenario took {:?}",
        started.elapsed()
    );
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_token_only_reads_and_forms_need_the_sessions_csrf_token() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clock = ManualClock::new(at("10:00:30"));
    let (shop, erp) = sims(&clock).await;
    let dir = tempfile::tempdir().unwrap();
    let project = project(dir.path(), &shop.base_url(), &erp.base_url());
    let store: Store = Store::from(SqliteStore::in_memory().unwrap());
    let d = daemon(&project, &clock, store.clone()).await;
    let (url, stop, _) = serve_http(&d).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    // The API: the viewer reads, and is refused anything that changes something.
    let get = http
        .get(format!("{url}/api/flows"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    for (path, body) in [
        ("/api/flows/products/enabled", json!({"enabled": false})),
        ("/api/flows/products/run", json!({})),
        ("/api/failures/discard", json!({"ids": [1]})),
    ] {
        let r = http
            .post(format!("{url}{path}"))
            .bearer_auth(VIEWER)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
    }
    assert!(d.flow_statuses().await.iter().all(|f| f.switched.is_none()));
    // The admin token switches through the API, and the switch is in the state.
    let r = http
        .post(format!("{url}/api/flows/stock/enabled"))
        .bearer_auth(ADMIN)
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let switches = store.runs.flow_switches().await.unwrap();
    assert_eq!(switches.len(), 1);
    assert_eq!(
        (switches[0].flow.as_str(), switches[0].enabled),
        ("stock", false)
    );

    // The console: a login sets an HttpOnly, SameSite=Strict cookie.
    let login = |token: &'static str| {
        http.post(format!("{url}/console/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("token", token)]))
            .send()
    };
    let r = login(VIEWER).await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let html = http
        .get(format!("{url}/console/flows"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains(">read-only<"), "{html}");
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let switch = |session: String, csrf: String| {
        http.post(format!("{url}/console/flows/products/switch"))
            .header("cookie", session)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("csrf", csrf.as_str()), ("enabled", "off")]))
            .send()
    };
    // The viewer's session, with its CSRF token, cannot switch.
    let r = switch(session.clone(), csrf.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The operator's session cannot either without its own CSRF token.
    let r = login(ADMIN).await.unwrap();
    let admin = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let r = switch(admin.clone(), csrf).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = switch(admin.clone(), String::new()).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        d.flow_statuses()
            .await
            .iter()
            .any(|f| f.id == "products" && f.enabled)
    );
    // No session: back to the login page.
    let r = http
        .get(format!("{url}/console/failures"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/console/login");
    let _ = stop.send(());
}

/// The real binary, started from a folder outside the checkout: the console's page and its
/// assets come from inside the binary, and a login works end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_the_console_with_its_assets_built_in() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    // A free port, released for the daemon to take.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_erpsync"))
        .args(["run"])
        .arg(repo.join("flows/demo"))
        .arg("--state")
        .arg(format!("sqlite:{}", dir.path().join("s.sqlite").display()))
        .arg("--init-state")
        .args(["--listen", &format!("127.0.0.1:{port}"), "--no-watch"])
        .env("ERPSYNC_ADMIN_TOKEN", ADMIN)
        .env("ERPSYNC_LOG", "off")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kill = Kill(&mut child);
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    let login = loop {
        match http.get(format!("{url}/console/login")).send().await {
            Ok(r) => break r,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("the daemon did not answer: {e}"),
        }
    };
    assert_eq!(login.status(), StatusCode::OK);
    let html = login.text().await.unwrap();
    assert!(html.contains("<label for=\"token\">"), "{html}");
    for (path, kind, needle) in [
        ("/console/assets/console.css", "text/css", ".cards"),
        (
            "/console/assets/console.js",
            "text/javascript",
            "select-all",
        ),
    ] {
        let r = http.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
        assert!(r.text().await.unwrap().contains(needle), "{path}");
    }
    let r = http
        .post(format!("{url}/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", ADMIN)]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let session = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let flows = http
        .get(format!("{url}/console/flows"))
        .header("cookie", session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(flows.contains("data-flow=\"orders_to_erp\""), "{flows}");
}

/// A flow switched off from the console (the switch is in the state) is left out of
/// `run --once` and of `dry-run` as well; named with `--flow`, it runs (a person asked for
/// it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_follows_the_consoles_switches() {
    use erpsync::state::FlowSwitch;
    use erpsync_sim::{ErpOptions, ErpSim, ShopOptions, ShopSim};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let shop = ShopSim::start(ShopOptions::unlimited()).await.unwrap();
    let erp = ErpSim::start(ErpOptions::unlimited()).await.unwrap();
    seed_both(&shop, &erp, 3, 2);
    let dir = tempfile::tempdir().unwrap();
    let project = write_demo_project(dir.path());
    let state = dir.path().join("state.sqlite");
    Store::from(SqliteStore::open(&state).unwrap())
        .runs
        .set_flow_switch(&FlowSwitch {
            flow: "products".into(),
            enabled: false,
            changed_at: Utc::now(),
            changed_by: "console".into(),
        })
        .await
        .unwrap();
    let (key, secret) = shop.credentials();
    let (id, client_secret) = erp.credentials();
    let flows_of = |command: &[&str], extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_erpsync"))
            .args(command)
            .arg("--json")
            .arg(&project)
            .arg("--state")
            .arg(format!("sqlite:{}", state.display()))
            .arg("--init-state")
            .args(extra)
            .envs([
                ("SHOP_URL", shop.base_url()),
                ("ERP_URL", erp.base_url()),
                ("SHOP_API_KEY", key.clone()),
                ("SHOP_API_SECRET", secret.clone()),
                ("ERP_CLIENT_ID", id.clone()),
                ("ERP_CLIENT_SECRET", client_secret.clone()),
                ("ERPSYNC_LOG", "off".into()),
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let reports: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        let flows: Vec<String> = reports["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["flow"].as_str().unwrap().to_string())
            .collect();
        flows
    };
    // The dry run predicts what the run does: without the switched-off flow.
    let planned = flows_of(&["dry-run"], &[]);
    assert!(!planned.contains(&"products".to_string()), "{planned:?}");
    assert!(planned.contains(&"stock".to_string()), "{planned:?}");
    let all = flows_of(&["run", "--once"], &[]);
    assert_eq!(all, planned);
    assert_eq!(
        flows_of(&["run", "--once"], &["--flow", "products"]),
        ["products"]
    );
    assert_eq!(
        flows_of(&["dry-run"], &["--flow", "products"]),
        ["products"]
    );
}
