//! Notifications (`daemon.notify`) from a daemon against the simulators, received by a
//! loopback HTTP server (webhook and Slack channels) and an SMTP sink started here: failed
//! orders, a burst of failures, the shop going down and coming back. Each alert goes out
//! once, one message per rule per window with a summary after it, signed, with a link to the
//! console; a STARTTLS channel never falls back to plain text.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use chrono::{DateTime, Utc};
use erpsync::clock::ManualClock;
use erpsync::engine::RunOptions;
use erpsync::state::{JournalEntry, JournalState, SqliteStore, Store};
use erpsync_sim::{FailRule, Faults, seed_both};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::Notify;

use crate::support;
use crate::support::daemon::{finished, wait_for};
use crate::support::project::at_sims;
use crate::support::project::demo_project;
use crate::support::sims::{confirm_order, sims};

const HOOK_SECRET: &str = "notify-hook-secret-5521";
const PATIENCE: Duration = Duration::from_secs(10);

fn at(t: &str) -> DateTime<Utc> {
    format!("2026-05-04T{t}Z").parse().unwrap()
}

/// What a receiver got, with a wake-up for waiters.
#[derive(Default)]
struct Inbox<T> {
    items: Mutex<Vec<T>>,
    arrived: Notify,
}

impl<T: Clone> Inbox<T> {
    fn push(&self, item: T) {
        self.items.lock().unwrap().push(item);
        self.arrived.notify_waiters();
    }
    fn all(&self) -> Vec<T> {
        self.items.lock().unwrap().clone()
    }
    /// Waits until `n` items arrived.
    async fn wait(&self, n: usize) -> Vec<T> {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let woken = self.arrived.notified();
                if self.items.lock().unwrap().len() >= n {
                    return self.all();
                }
                woken.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{n} deliveries; got {}", self.items.lock().unwrap().len()))
    }
}

/// (path, signature header, JSON body)
type Post = (String, Option<String>, Value);

async fn http_receiver() -> (String, Arc<Inbox<Post>>) {
    let inbox: Arc<Inbox<Post>> = Arc::default();
    async fn take(
        State(inbox): State<Arc<Inbox<Post>>>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> &'static str {
        let sig = headers
            .get("x-erpsync-signature")
            .map(|v| v.to_str().unwrap().to_string());
        // The signature is checked over the raw body.
        if let Some(s) = &sig {
            let mut mac = Hmac::<Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
            mac.update(&body);
            let hex: String = mac
                .finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(s, &format!("sha256={hex}"), "signature of the body");
        }
        inbox.push((
            uri.path().to_string(),
            sig,
            serde_json::from_slice(&body).unwrap(),
        ));
        "ok"
    }
    let app = Router::new().fallback(take).with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, inbox)
}

/// A plain SMTP sink that offers no STARTTLS; each message's DATA is kept.
async fn smtp_sink() -> (String, Arc<Inbox<String>>) {
    let inbox: Arc<Inbox<String>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let keep = inbox.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let keep = keep.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"220 sink ESMTP\r\n").await.unwrap();
                let mut data: Option<String> = None;
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(body) = &mut data {
                        if line == "." {
                            keep.push(std::mem::take(body));
                            data = None;
                            w.write_all(b"250 queued\r\n").await.unwrap();
                        } else {
                            body.push_str(&line);
                            body.push('\n');
                        }
                        continue;
                    }
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
                        "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 ok\r\n",
                        "DATA" => {
                            data = Some(String::new());
                            b"354 go on\r\n"
                        }
                        "QUIT" => {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"502 not here\r\n",
                    };
                    w.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (addr, inbox)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_a_system_down_are_notified_once_per_window_with_a_summary() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clock = ManualClock::new(at("10:00:30"));
    let (shop, erp) = sims(&clock).await;
    let items = seed_both(&shop, &erp, 5, 3);
    let mut numbers = Vec::new();
    for (i, item) in items.iter().take(2).enumerate() {
        numbers.push(confirm_order(&shop, i, &[(item, 1)]).number);
    }
    let (hooks, posts) = http_receiver().await;
    let (smtp, mails) = smtp_sink().await;

    let mut doc = demo_project();
    doc["systems"]["erp"]
        .as_object_mut()
        .unwrap()
        .remove("rate_limit");
    doc["systems"]["shop"]["rate_limit"] = json!({"per_second": 1000.0, "burst": 1000});
    doc["systems"]["shop"]["retry"] =
        json!({"max_attempts": 2, "initial_backoff_ms": 5, "max_backoff_ms": 10});
    doc["systems"]["shop"]["timeouts"] = json!({"connect_ms": 1000, "request_ms": 1000});
    doc["systems"]["shop"]["circuit_breaker"] =
        json!({"failures": 1, "probe_initial_secs": 30, "probe_max_secs": 60});
    doc["daemon"]["console_url"] = json!("https://sync.example.com/");
    doc["daemon"]["notify"] = json!({
        "channels": {
            "ops": {"kind": "webhook", "url": format!("{hooks}/ops"), "secret": HOOK_SECRET},
            "team": {"kind": "slack", "url": format!("{hooks}/slack")},
            "mail": {"kind": "email", "smtp": smtp, "tls": "none",
                     "from": "erpsync@example.com", "to": ["shop@example.com"]},
            "mail_tls": {"kind": "email", "smtp": smtp,
                         "from": "erpsync@example.com", "to": ["shop@example.com"]},
        },
        "rules": {
            "orders_failed": {"on": "record_failed", "flows": ["orders_to_erp"],
                              "to": ["ops", "mail", "mail_tls"], "window_secs": 600},
            "burst": {"on": "failures", "count": 2, "within_secs": 300, "to": ["ops"]},
            "down": {"on": "system_down", "to": ["team"]},
            "up": {"on": "system_up", "to": ["team"]},
            "stale": {"on": "flow_not_succeeded", "flows": ["orders_to_erp"],
                      "after_secs": 1800, "to": ["ops"]},
            "doubt": {"on": "write_in_doubt", "after_secs": 1800, "to": ["ops"]},
        },
    });
    let text = at_sims(
        &serde_json::to_string_pretty(&doc).unwrap(),
        &shop.base_url(),
        &erp.base_url(),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notify.yaml"), text).unwrap();
    let store: Store = Store::from(SqliteStore::in_memory().unwrap());
    let d =
        support::daemon::start(vec![dir.path().to_path_buf()], &clock, store.clone(), None).await;
    let mut events = d.subscribe();
    let run = |opts: RunOptions| {
        let d = d.clone();
        async move {
            d.trigger("orders_to_erp", opts, erpsync::daemon::Cause::Manual)
                .await
                .unwrap();
        }
    };

    // The ERP refuses both orders: one message for the two (record_failed, by webhook and
    // by plain email; the STARTTLS channel refuses a server without it), one for the burst.
    erp.faults().set(Faults {
        rules: vec![FailRule::new("POST", "/api/orders", 422, 100)],
        ..Faults::default()
    });
    run(RunOptions::default()).await;
    wait_for(&mut events, PATIENCE, finished("orders_to_erp")).await;
    d.notify_check().await;
    let got = posts.wait(2).await;
    let failed: Vec<&Post> = got
        .iter()
        .filter(|p| p.2["rule"] == "orders_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{got:#?}");
    let (path, sig, body) = failed[0];
    assert_eq!(path, "/ops");
    assert!(sig.is_some(), "signed");
    assert_eq!(body["on"], "record_failed");
    assert_eq!(body["alerts"].as_array().unwrap().len(), 2);
    assert_eq!(
        body["title"],
        "erpsync: 2 alerts of rule `orders_failed` (record failed)"
    );
    assert_eq!(body["link"], "https://sync.example.com/console/failures");
    let first = &body["alerts"][0];
    assert!(
        first["link"]
            .as_str()
            .unwrap()
            .starts_with("https://sync.example.com/console/failures/"),
        "{first}"
    );
    assert!(
        numbers
            .iter()
            .any(|n| first["text"].as_str().unwrap().contains(n.as_str())),
        "{first}"
    );
    let burst = got.iter().find(|p| p.2["rule"] == "burst").unwrap();
    assert_eq!(
        burst.2["alerts"][0]["link"],
        "https://sync.example.com/console/failures"
    );
    let mail = mails.wait(1).await;
    assert!(
        mail[0].contains("Subject: erpsync: 2 alerts of rule `orders_failed`"),
        "{}",
        mail[0]
    );
    assert!(mail[0].contains("https://sync.example.com/console/failures"));

    // They fail again within the window: nothing is sent...
    run(RunOptions::retry(numbers.clone())).await;
    wait_for(&mut events, PATIENCE, finished("orders_to_erp")).await;
    assert!(d.notify_check().await.is_empty());
    assert_eq!(posts.all().len(), 2);
    assert_eq!(
        mails.all().len(),
        1,
        "no message in clear from the STARTTLS channel"
    );
    // ...until it ends: then one summary of what fired meanwhile; the burst, once per span,
    // fires again in the new span.
    // (The daemon checks by itself after runs and on its clock, so the summary is asserted
    // where it arrives, whichever check sent it.)
    clock.advance(Duration::from_secs(601));
    d.notify_check().await;
    let got = posts.wait(3).await;
    assert_eq!(got.len(), 3, "{got:#?}");
    let summary = &got[2].2;
    assert_eq!(summary["rule"], "orders_failed", "{got:#?}");
    assert_eq!(summary["alerts"].as_array().unwrap().len(), 2, "{summary}");
    assert_eq!(mails.wait(2).await.len(), 2);
    // Nothing new: nothing sent.
    clock.advance(Duration::from_secs(601));
    assert!(d.notify_check().await.is_empty());

    // The shop stops answering: its circuit breaker takes it down, and Slack hears it once,
    // however many runs find it still down.
    erp.faults().clear();
    shop.faults().set(Faults {
        timeout_rate: 1.0,
        timeout_ms: 5_000,
        ..Faults::default()
    });
    run(RunOptions::default()).await;
    wait_for(&mut events, PATIENCE, finished("orders_to_erp")).await;
    let down = d.systems_down();
    assert!(down.contains_key("shop"), "{down:?}");
    assert_eq!(down["shop"].since, Some(erpsync::clock::Clock::now(&clock)));
    d.notify_check().await;
    let slack = posts.wait(4).await;
    let down = slack.iter().find(|p| p.0 == "/slack").unwrap();
    assert!(down.1.is_none(), "Slack messages are not signed");
    let text = down.2["text"].as_str().unwrap();
    assert!(text.contains("system `shop` is down"), "{text}");
    assert!(
        text.contains("https://sync.example.com/console/flows"),
        "{text}"
    );
    run(RunOptions::default()).await;
    wait_for(&mut events, PATIENCE, finished("orders_to_erp")).await;
    assert!(d.systems_down().contains_key("shop"));
    d.probe_systems().await;
    assert!(d.notify_check().await.is_empty());
    assert_eq!(posts.all().len(), 4);

    // It answers again: the probe, once its pause has run out, finds it up; Slack hears it.
    shop.faults().clear();
    d.probe_systems().await;
    assert!(
        d.systems_down().contains_key("shop"),
        "no probe before the pause"
    );
    clock.advance(Duration::from_secs(31));
    d.probe_systems().await;
    assert!(d.systems_down().is_empty());
    d.notify_check().await;
    let all = posts.wait(5).await;
    let up: Vec<_> = all.iter().filter(|p| p.0 == "/slack").collect();
    assert_eq!(up.len(), 2);
    assert!(
        up[1].2["text"]
            .as_str()
            .unwrap()
            .contains("system `shop` is up again")
    );

    // A write left in doubt, and no successful run for longer than their `after_secs`.
    let now = erpsync::clock::Clock::now(&clock);
    store
        .journal
        .journal_begin(&JournalEntry {
            id: 0,
            flow: "orders_to_erp".into(),
            key: "CMD-77".into(),
            target: "erp".into(),
            operation: "create_order".into(),
            idempotency_key: "k".into(),
            payload: json!({}),
            state: JournalState::Pending,
            created_at: now,
        })
        .await
        .unwrap();
    assert!(
        d.notify_check().await.is_empty(),
        "not waiting long enough yet"
    );
    clock.advance(Duration::from_secs(1801));
    let sent = d.notify_check().await;
    let mut rules: Vec<&str> = sent.iter().map(|n| n.rule.as_str()).collect();
    rules.sort_unstable();
    assert_eq!(rules, ["doubt", "stale"], "{sent:#?}");
    let by = |r: &str| sent.iter().find(|n| n.rule == r).unwrap();
    assert!(by("doubt").title.contains("`CMD-77`"), "{:?}", by("doubt"));
    assert_eq!(
        by("doubt").link,
        "https://sync.example.com/console/failures?flow=orders_to_erp"
    );
    assert!(
        by("stale")
            .title
            .contains("orders_to_erp has not succeeded since"),
        "{:?}",
        by("stale")
    );
    assert_eq!(
        by("stale").link,
        "https://sync.example.com/console/runs?flow=orders_to_erp"
    );
    clock.advance(Duration::from_secs(1801));
    assert!(d.notify_check().await.is_empty(), "each fires once");

    // No secret in any message.
    for p in posts.all() {
        assert!(!p.2.to_string().contains(HOOK_SECRET));
    }
}
