//! Exactly once under fire: the sync process is killed at random moments while it exports a
//! few hundred orders through an ERP that fails requests, loses answers to writes it applied
//! and is slow, then restarted until done. Every order must end up in the ERP exactly once.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use erpsync_sim::shop::Order;
use erpsync_sim::{ErpOptions, ErpSim, Faults, ShopOptions, ShopSim, seed_both};
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::support::project::{demo_project, sim_env};

const ORDERS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_exports_send_every_order_exactly_once() {
    let shop = ShopSim::start(ShopOptions {
        seed: 12,
        ..ShopOptions::unlimited()
    })
    .await
    .unwrap();
    let erp = ErpSim::start(ErpOptions {
        seed: 11,
        ..ErpOptions::unlimited()
    })
    .await
    .unwrap();
    let items = seed_both(&shop, &erp, 20, 5);
    for i in 0..ORDERS {
        let a = &items[i % items.len()];
        let b = &items[(i * 7 + 3) % items.len()];
        let mut o = Order::new(
            &format!("client{}@example.com", i % 25),
            &[
                (a.sku.as_str(), 1 + (i % 3) as i64, a.price_gross),
                (b.sku.as_str(), 1, b.price_gross),
            ],
        );
        o.customer.first_name = format!("Client{}", i % 25);
        o.customer.last_name = "Test".into();
        o.shipping_status = "confirmed".into();
        shop.create_order(o).unwrap();
    }

    // The ERP de-duplicates nothing here: no idempotency key, so only the journal and the
    // lookup before a re-send stand between a crash and a duplicate order.
    let mut doc = demo_project();
    let ops = &mut doc["systems"]["erp"]["operations"];
    ops["create_order"]
        .as_object_mut()
        .unwrap()
        .remove("idempotency_key");
    doc["systems"]["erp"]["retry"] =
        json!({"max_attempts": 3, "initial_backoff_ms": 5, "max_backoff_ms": 40});
    doc["systems"]["erp"]["timeouts"] = json!({"connect_ms": 1000, "request_ms": 300});
    doc["systems"]["erp"]
        .as_object_mut()
        .unwrap()
        .remove("rate_limit");
    doc["systems"]["shop"]["retry"] =
        json!({"max_attempts": 3, "initial_backoff_ms": 5, "max_backoff_ms": 40});
    doc["systems"]["shop"]["rate_limit"] = json!({"per_second": 1000.0, "burst": 1000});
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project.yaml");
    std::fs::write(&project, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let state = format!("sqlite:{}", dir.path().join("state.sqlite").display());

    let faults = Faults {
        error_rate: 0.04,
        lost_write_rate: 0.04,
        timeout_rate: 0.01,
        timeout_ms: 600,
        ..Faults::default()
    };
    erp.faults().set(faults.clone());
    shop.faults().set(Faults {
        error_rate: 0.02,
        ..Faults::default()
    });

    let env: HashMap<&str, String> = sim_env(&shop, &erp).into_iter().collect();
    let exported = || {
        let mut refs: Vec<String> = erp
            .orders()
            .into_iter()
            .filter_map(|o| o.reference)
            .collect();
        let total = refs.len();
        refs.sort();
        refs.dedup();
        (refs.len(), total)
    };

    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let started = Instant::now();
    let mut kills = 0;
    let mut mid_export_kills = 0;
    let mut runs = 0;
    loop {
        runs += 1;
        assert!(
            runs < 200,
            "did not converge: {:?} exported after {runs} runs",
            exported()
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_erpsync"))
            .args([
                "run",
                "--once",
                "--flow",
                "orders_to_erp",
                "--state",
                &state,
                "--init-state",
            ])
            .arg(&project)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "off")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Early runs are killed: half at a random moment (start-up, listing, settling), half
        // once a random number of further orders reached the ERP, so some kills land in the
        // middle of the export however slow the machine is. Later runs may finish.
        let killing = runs <= 25;
        let at_progress = killing && rng.random_bool(0.5);
        let kill_after = if killing && !at_progress {
            Duration::from_millis(rng.random_range(20..400))
        } else {
            Duration::from_secs(120)
        };
        let deadline = Instant::now() + kill_after;
        let before = erp.orders().len();
        let kill_at_count = before + rng.random_range(1..30);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            let progressed = at_progress && erp.orders().len() >= kill_at_count;
            if Instant::now() >= deadline || progressed {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                let (n, _) = exported();
                if n > 0 && n < ORDERS {
                    mid_export_kills += 1;
                }
                break None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let (distinct, total) = exported();
        assert_eq!(
            distinct, total,
            "an order reached the ERP twice (run {runs})"
        );
        if status.is_some_and(|s| s.success()) && distinct == ORDERS {
            break;
        }
        if runs > 25 && runs % 10 == 0 {
            // Faults keep some records failing; they are retried on the next runs.
            erp.faults().set(Faults {
                error_rate: 0.01,
                ..Faults::default()
            });
        }
    }
    // A last run on a healthy ERP sends nothing new.
    erp.faults().set(Faults::default());
    shop.faults().set(Faults::default());
    erp.counters().reset();
    let out = Command::new(env!("CARGO_BIN_EXE_erpsync"))
        .args([
            "run",
            "--once",
            "--flow",
            "orders_to_erp",
            "--state",
            &state,
            "--init-state",
        ])
        .arg(&project)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(erp.counters().count("POST", "/api/orders"), 0);

    for o in shop.orders() {
        let copies = erp.orders_by_reference(&o.number);
        assert_eq!(
            copies.len(),
            1,
            "order {} is in the ERP {} times",
            o.number,
            copies.len()
        );
        let e = &copies[0];
        assert_eq!(e.lines.len(), o.lines.len(), "order {}", o.number);
    }
    assert!(
        mid_export_kills >= 3,
        "the test must kill runs in the middle of the export ({mid_export_kills} of {kills})"
    );
    println!(
        "{ORDERS} orders exported exactly once across {runs} runs, {kills} killed ({mid_export_kills} mid-export), in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// The chaos run: the export is killed at random moments while new orders are confirmed
/// between kills, through an ERP that fails requests, loses answers to writes it applied
/// and is slow, and a shop that fails some requests (locks included). Then the faults stop;
/// the runs and `failures retry` an operator would make follow. Every confirmed order must be
/// in the ERP exactly once and locked in the shop, no other order in the ERP, and nothing
/// left pending. Seeded, bounded in kills and time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kills_while_orders_are_confirmed_leave_each_order_once_and_locked() {
    use crate::support::binary::{Project, text};
    const ROUNDS: usize = 16;
    let p = Project::start(12, |doc| {
        doc["flows"]
            .as_object_mut()
            .unwrap()
            .remove("orders_from_erp");
        let erp = &mut doc["systems"]["erp"];
        erp["operations"]["create_order"]
            .as_object_mut()
            .unwrap()
            .remove("idempotency_key");
        erp["timeouts"] = json!({"connect_ms": 1000, "request_ms": 300});
    })
    .await;
    // Another seed replays another run: ERPSYNC_CHAOS_SEED=7 cargo test --test it chaos
    let seed = std::env::var("ERPSYNC_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1212);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut confirmed: Vec<String> = (0..30).map(|i| p.confirm_order(i)).collect();
    // Orders waiting for payment are not eligible; some are confirmed later.
    let mut waiting: Vec<String> = (30..40)
        .map(|i| {
            let n = p.confirm_order(i);
            let id = p.shop.order_by_number(&n).unwrap().id;
            p.shop.set_shipping_status(&id, "awaiting").unwrap();
            n
        })
        .collect();
    p.erp.faults().set(Faults {
        error_rate: 0.04,
        lost_write_rate: 0.06,
        timeout_rate: 0.01,
        timeout_ms: 600,
        ..Faults::default()
    });
    p.shop.faults().set(Faults {
        error_rate: 0.03,
        ..Faults::default()
    });
    let export = ["run", "--once", "--flow", "orders_to_erp"];
    let started = Instant::now();
    let mut next = 40;
    let (mut kills, mut mid_export) = (0, 0);
    for round in 0..ROUNDS {
        let mut child = p.spawn(&export);
        let before = p.erp.orders().len();
        let locks = || p.shop.counters().count("POST", "/api/v2/orders/{id}/lock");
        let locks_before = locks();
        // Killed at a random moment, or once a few more orders reached the ERP, or once a few
        // more locks were asked for (the post-actions run after the listing).
        let mode = rng.random_range(0..3);
        let kill_at = rng.random_range(1..6);
        let deadline = Instant::now() + Duration::from_millis(rng.random_range(20..500));
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let due = match mode {
                0 => Instant::now() >= deadline,
                1 => p.erp.orders().len() >= before + kill_at,
                _ => locks() >= locks_before + kill_at as u64,
            };
            if due {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                if p.erp.orders().len() > before {
                    mid_export += 1;
                }
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(40),
                "round {round} still going after 40 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Between kills the shop goes on: new orders, and waiting ones confirmed.
        for _ in 0..2 {
            confirmed.push(p.confirm_order(next));
            next += 1;
        }
        if round % 3 == 0
            && let Some(n) = waiting.pop()
        {
            let id = p.shop.order_by_number(&n).unwrap().id;
            p.shop.set_shipping_status(&id, "confirmed").unwrap();
            confirmed.push(n);
        }
    }

    // The faults stop. What an operator does: run until a run succeeds, retry what is kept.
    p.erp.faults().clear();
    p.shop.faults().clear();
    let mut runs = 0;
    loop {
        runs += 1;
        let out = p.run(&export);
        if out.status.success() {
            break;
        }
        assert!(
            runs < 5,
            "no clean run after the faults stopped: {}",
            text(&out)
        );
        let retry = p.run(&["failures", "retry", "--all"]);
        assert!(
            retry.status.success() || text(&retry).contains("failed"),
            "{}",
            text(&retry)
        );
    }
    let retry = p.run(&["failures", "retry", "--all"]);
    assert!(retry.status.success(), "{}", text(&retry));

    for n in &confirmed {
        assert_eq!(
            p.erp.orders_by_reference(n).len(),
            1,
            "order {n} in the ERP"
        );
        let o = p.shop.order_by_number(n).unwrap();
        assert!(o.locked, "order {n} exported but not locked");
    }
    for n in &waiting {
        assert!(
            p.erp.orders_by_reference(n).is_empty(),
            "order {n} was never confirmed"
        );
    }
    let exported = p.erp.orders().len();
    assert_eq!(exported, confirmed.len(), "no other order in the ERP");
    let pending = p.run(&["failures", "pending"]);
    assert!(
        text(&pending).contains("no pending writes"),
        "{}",
        text(&pending)
    );
    let list = p.run(&["failures", "list"]);
    assert!(text(&list).contains("no failures"), "{}", text(&list));
    assert!(
        mid_export >= 3,
        "{mid_export} of {kills} kills landed mid-export"
    );
    println!(
        "chaos (seed {seed}): {} orders, each once and locked; {kills} kills ({mid_export} mid-export), {runs} clean-up runs, {:.1}s",
        confirmed.len(),
        started.elapsed().as_secs_f64()
    );
}
