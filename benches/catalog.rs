//! The catalogue benchmark of issues 5 and 14: a catalogue of 14-field products synced from the
//! ERP simulator into the shop simulator (first sync, incremental runs, a dry run, a
//! rate-limited write phase), measured against a plain Rust loop that does the same job, and a
//! micro-benchmark of one product mapping.
//!
//! Run with `cargo bench --bench catalog`. Every phase prints wall time, CPU time, peak RSS,
//! the read and write calls and the 429 answers the simulators counted, and its CPU as a
//! ratio to the baseline loop; then every target with its measured value and PASS or MISS.
//!
//! Two sets of targets:
//! - always enforced (the exit code fails on a miss): write calls equal the changed records,
//!   the shop ends up holding what the ERP holds, and every engine run peaks under 200 MB;
//! - the targets of issue 14 (first sync of 100k products: CPU ≤ half the baseline loop and
//!   ≤ 3 CPU-s, peak RSS ≤ 80 MB; read + map ≥ 100k records/s; dry run ≤ 60 MB; a
//!   bidirectional reconciliation ≤ 80 MB; 1M SKUs ≤ 150 MB; rate-limited writes ≥ 95% of
//!   the limit with no 429): printed always, enforced
//!   only with `BENCH_ENFORCE=1`. The engine misses several of them today; the output says
//!   which.
//!
//! Before the baseline, a client that reads both lists and skips their records measures what
//! the simulators serve (`served`, records/s): the ceiling every read of the run is under.
//!
//! The simulators live in this process. Every measured run is a child process (`erpsync run
//! --once`, `erpsync dry-run`, or this binary's baseline loop), so the peak RSS and CPU time
//! reported are the child's alone, not the simulators'. The child is started through a small
//! launcher (this binary again): Linux carries the parent's high-water RSS into a child's
//! `ru_maxrss` across `exec`, so a child of this simulator-laden process would report at
//! least this process's size.
//!
//! Knobs (environment):
//! - `BENCH_SKUS`: catalogue size, default 100000. The CPU-seconds target scales with it; the
//!   memory targets are stated for 100k and are not scaled.
//! - `BENCH_1M=1`: also run a first sync of 1,000,000 SKUs and a reconciliation of them both
//!   ways (memory target 150 MB each; several minutes and a few GB of simulator memory).
//!   The baseline loop is left out at 1M: it holds both sides as JSON values, about 1 GB
//!   per 100k products.
//! - `BENCH_RATE`: the shop's rate limit (requests/s) in the rate-limited phase, default 20;
//!   `BENCH_RATE_WRITES`: price changes written in that phase, default 10 × the rate;
//!   `BENCH_CONCURRENCY`: the shop's `concurrency` in that phase, default 4.
//! - `BENCH_ORDER=shuffled`: the shop is seeded in a shuffled order, so it lists its products
//!   in an order unrelated to the ERP's (default: both in the same order). A run's lookups in
//!   the shop's index then go anywhere in it, as with a shop whose products were created in
//!   another order than the ERP's codes.
//! - `BENCH_STAMPS=same`: both simulators' products are widened within the same second, so
//!   a product's `updated_at` is the same on both sides and its two canonical records are
//!   the same bytes (default `apart`: the shop's are widened first and the ERP's a second
//!   later, as two systems' stamps differ; the records are then alike in every synced field
//!   but the stamp).
//! - `BENCH_REPEAT`: how many times the baseline loop and the 100k first sync of products
//!   run, default 3, in turn (a loop, then a first sync from an empty state, the shop's
//!   prices put back after each); the table shows each one's median run and the CPU of
//!   every run, and the ratio target compares the two medians. With `BENCH_WRAP`, 1
//!   profiles one run.
//! - `BENCH_ENFORCE=1`: a missed issue-14 target fails the exit code too.
//! - `BENCH_MAP_RECORDS`: records in the mapping benchmark, default 200000.
//! - `BENCH_ONLY`: `catalog` or `mapping`.
//! - `BENCH_ERPSYNC`: the `erpsync` binary to measure instead of this build's (an older
//!   build, for a before/after against the same simulators).
//! - `BENCH_WRAP`: a command prefix the measured program runs under, to find what holds a
//!   peak (`heaptrack`, `valgrind --tool=massif`); `BENCH_WRAP_PHASE`: only the phases whose
//!   name contains this (e.g. `dry run`). The profiler writes its files in the current
//!   directory; the wrapped phase's figures are the profiler's, not erpsync's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use erpsync::compile::{MapEnv, NoRefs};
use erpsync_sim::erp::ErpProduct;
use erpsync_sim::shop::TokenBucket;
use erpsync_sim::{
    CatalogueItem, ErpHandle, ErpOptions, ErpSim, ShopHandle, ShopOptions, ShopSim, catalogue,
    seed_both,
};
use serde_json::{Map, Value, json};

/// Hard ceiling on the engine's peak resident memory (always enforced).
const MEMORY_LIMIT_MB: f64 = 200.0;
/// Issue 14: first sync of 100k products.
const FIRST_SYNC_RSS_MB: f64 = 80.0;
const FIRST_SYNC_CPU_S_PER_100K: f64 = 3.0;
const FIRST_SYNC_BASELINE_RATIO: f64 = 0.5;
const READ_MAP_PER_SEC: f64 = 100_000.0;
const DRY_RUN_RSS_MB: f64 = 60.0;
const MILLION_RSS_MB: f64 = 150.0;
const RATE_SHARE: f64 = 0.95;
/// Mapping throughput the issue asks for (a target to report against, not a hard failure:
/// it depends on the machine far more than memory or write counts do).
const MAPPING_TARGET_PER_SEC: f64 = 50_000.0;
/// The warehouse the stock flow reads.
const WAREHOUSE: &str = "Depozit central";

/// First argument that turns this binary into the launcher of one measured child.
const LAUNCH: &str = "--measure-child";
/// First argument that turns this binary into the baseline loop.
const BASELINE: &str = "--baseline-loop";
/// First argument that turns this binary into a client that reads both lists and skips their
/// records: what the simulators serve, the ceiling of any read.
const SERVED: &str = "--read-lists";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str);
    if mode == Some(LAUNCH) || mode == Some(BASELINE) || mode == Some(SERVED) {
        let r = if mode == Some(LAUNCH) {
            launch(&args[2..])
        } else {
            baseline_loop(&args[2..], mode == Some(SERVED))
        };
        return match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{}: {e:#}", &args[1]);
                ExitCode::FAILURE
            }
        };
    }
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let enforce = std::env::var("BENCH_ENFORCE").is_ok_and(|v| v == "1");
    let mut targets = Vec::new();
    let mut failed = Vec::new();
    if only.is_empty() || only == "catalog" {
        let skus = env_usize("BENCH_SKUS", 100_000);
        match catalog(skus, false) {
            Ok(t) => targets.extend(t),
            Err(e) => failed.push(format!("catalogue benchmark could not run: {e:#}")),
        }
        if std::env::var("BENCH_1M").is_ok_and(|v| v == "1") {
            match catalog(1_000_000, true) {
                Ok(t) => targets.extend(t),
                Err(e) => failed.push(format!("1M-SKU benchmark could not run: {e:#}")),
            }
        }
    }
    if only.is_empty() || only == "mapping" {
        let n = env_usize("BENCH_MAP_RECORDS", 200_000);
        if let Err(e) = mapping(n) {
            failed.push(format!("mapping benchmark could not run: {e:#}"));
        }
    }
    if !targets.is_empty() {
        print_targets(&targets, enforce);
    }
    for t in &targets {
        if !t.met && (t.always || enforce) {
            failed.push(format!("{}: {} (target {})", t.name, t.measured, t.limit));
        }
    }
    let soft_missed = targets
        .iter()
        .filter(|t| !t.met && !t.always && !enforce)
        .count();
    if failed.is_empty() {
        if soft_missed > 0 {
            println!(
                "\nall enforced targets met; {soft_missed} issue-14 target(s) MISSED \
                 (not enforced: set BENCH_ENFORCE=1 to fail on them)"
            );
        } else {
            println!("\nall hard targets met");
        }
        ExitCode::SUCCESS
    } else {
        println!();
        for f in &failed {
            println!("MISSED: {f}");
        }
        ExitCode::FAILURE
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// Targets

/// One target with what was measured.
struct Target {
    name: String,
    measured: String,
    limit: String,
    met: bool,
    /// Enforced by default (the older targets); the others only with `BENCH_ENFORCE=1`.
    always: bool,
}

fn target(name: &str, measured: String, limit: String, met: bool, always: bool) -> Target {
    Target {
        name: name.to_string(),
        measured,
        limit,
        met,
        always,
    }
}

fn print_targets(targets: &[Target], enforce: bool) {
    println!("\n== targets ==");
    println!(
        "{:<58} {:>16} {:>16} {:>6}  enforced",
        "target", "measured", "limit", ""
    );
    for t in targets {
        let enforced = if t.always {
            "always"
        } else if enforce {
            "BENCH_ENFORCE=1"
        } else {
            "no (issue 14)"
        };
        println!(
            "{:<58} {:>16} {:>16} {:>6}  {enforced}",
            t.name,
            t.measured,
            t.limit,
            if t.met { "PASS" } else { "MISS" }
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Catalogue sync

/// One measured child run.
#[derive(Default)]
struct Phase {
    name: String,
    wall: Duration,
    cpu: Duration,
    /// The part of `cpu` spent in the kernel (file and socket reads and writes, page
    /// faults): what instruction counts under callgrind do not see.
    sys: Duration,
    /// CPU the simulators (this process) spent serving the run.
    sim_cpu: Duration,
    peak_rss_mb: f64,
    counts: Value,
    /// Calls the simulators counted: reads (anything but writes, token requests included),
    /// writes, and 429 answers.
    reads: u64,
    writes: u64,
    rejected: u64,
    expected_writes: Option<u64>,
    /// CPU of every run of a phase measured more than once (`BENCH_REPEAT`).
    cpu_runs: Vec<Duration>,
}

impl Phase {
    /// A run of `erpsync`, whose peak the memory ceiling judges: not the baseline loop nor
    /// the client that measures what the simulators serve.
    fn is_engine_run(&self) -> bool {
        !self.name.starts_with("baseline") && !self.name.starts_with("served")
    }
}

/// Catalogue benchmark; returns its targets with what was measured. `million` runs the
/// reduced 1M-SKU sequence (first sync and both-ways reconciliation only).
fn catalog(skus: usize, million: bool) -> anyhow::Result<Vec<Target>> {
    println!("== catalogue sync: {skus} SKUs of 14-field products, ERP → shop ==");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let shop = rt.block_on(ShopSim::start(ShopOptions {
        keep_unmodelled: true,
        ..ShopOptions::unlimited()
    }))?;
    let erp = rt.block_on(ErpSim::start(ErpOptions::unlimited()))?;
    let t = Instant::now();
    let items = match std::env::var("BENCH_ORDER").as_deref() {
        Ok("shuffled") => {
            let items = catalogue(skus, 5);
            shop.seed_catalogue(&shuffled(&items, 5));
            erp.seed_catalogue(&items);
            items
        }
        Ok(other) if !other.is_empty() && other != "same" => {
            anyhow::bail!("BENCH_ORDER is `same` or `shuffled`, not `{other}`")
        }
        _ => seed_both(&shop, &erp, skus, 5),
    };
    let apart = match std::env::var("BENCH_STAMPS").as_deref() {
        Ok("same") => false,
        Ok("apart") | Err(_) => true,
        Ok(other) => anyhow::bail!("BENCH_STAMPS is `apart` or `same`, not `{other}`"),
    };
    widen(&shop, &erp, &items, apart)?;
    println!("seeded both simulators in {:.1?}", t.elapsed());

    // Before the first sync, 1% of the ERP's prices differ from the shop's: the first sync
    // adopts 99% and updates 1%.
    let first_prices: Vec<&str> = every(&items, 100, 11);
    let mut shop_prices = Vec::new();
    for code in &first_prices {
        let s = shop.product_by_sku(code).context("seeded shop product")?;
        shop_prices.push((s.id, s.price_gross));
        bump_price(&erp, code)?;
    }

    let restore_prices = || -> anyhow::Result<()> {
        for (id, price) in &shop_prices {
            shop.update_product(*id, |p| p.price_gross = *price)
                .context("restoring a shop price")?;
        }
        Ok(())
    };
    let repeat = env_usize("BENCH_REPEAT", 3).max(1);

    let dir = tempfile::tempdir()?;
    let project = write_project(dir.path(), "bench.yaml", &shop, &erp, None)?;
    let state_file = dir.path().join("state.sqlite");
    // The state file, or its WAL (`-wal`) or shared-memory index (`-shm`) beside it.
    let state_part = |suffix: &str| -> PathBuf {
        let mut path = state_file.clone().into_os_string();
        path.push(suffix);
        path.into()
    };
    let state = format!("sqlite:{}", state_file.display());
    let mut phases = Vec::new();
    let measure = |name: &str, args: Vec<String>, expected: Option<u64>| -> anyhow::Result<Phase> {
        let (w0, t0, r0) = sim_counts(&shop, &erp);
        let mut phase = run_child(dir.path(), name, &args)?;
        let (w1, t1, r1) = sim_counts(&shop, &erp);
        phase.name = name.to_string();
        phase.writes = w1 - w0;
        phase.reads = (t1 - t0) - (w1 - w0);
        phase.rejected = r1 - r0;
        phase.expected_writes = expected;
        Ok(phase)
    };
    let engine = |verb: &str, flow: &str, project: &Path| -> Vec<String> {
        let mut a = vec![
            erpsync_binary(),
            verb.to_string(),
            project.display().to_string(),
            "--flow".into(),
            flow.into(),
            "--state".into(),
            state.clone(),
        ];
        // The first run starts from an empty state, which must be asked for.
        if !state_file.exists() {
            a.push("--init-state".into());
        }
        if verb == "run" {
            a.extend(["--once".into(), "--json".into()]);
        } else {
            a.extend(["--format".into(), "json".into()]);
        }
        a
    };

    // The baseline loop: the same job written plainly, against the same simulators.
    let (key, secret) = shop.credentials();
    let (client_id, client_secret) = erp.credentials();
    let loop_args = |mode: &str| -> anyhow::Result<Vec<String>> {
        Ok(vec![
            std::env::current_exe()?.display().to_string(),
            mode.to_string(),
            shop.api_url(),
            key.clone(),
            secret.clone(),
            erp.api_url(),
            client_id.clone(),
            client_secret.clone(),
        ])
    };
    let changed = first_prices.len() as u64;
    let mut dry_run = None;
    if !million {
        // What the simulators serve when the client does nothing with the records: the
        // ceiling of every read below, printed so each run says what its reads were up against.
        let served = measure(
            "served: both lists, records skipped",
            loop_args(SERVED)?,
            Some(0),
        )?;
        phases.push(served);
        // A dry run of the first sync, on the empty state and the prices as seeded.
        dry_run = Some(measure(
            "dry run: first sync (products)",
            engine("dry-run", "products", &project),
            Some(0),
        )?);
    }
    // Both sides of the ratio are measured `repeat` times and their medians compared: one
    // run of either moves by a third on a shared machine. Each loop is followed by a first
    // sync, so that a machine slowing down or speeding up in the meantime weighs on both
    // medians alike. The first sync starts from an empty state each time (the shop's prices
    // put back and the state removed between runs); at 1M it runs once, without the loop
    // (which holds both sides in memory as JSON values, about 1 GB per 100k products).
    let mut loops = Vec::new();
    let mut firsts = Vec::new();
    let runs = if million { 1 } else { repeat };
    for run in 0..runs {
        if !million {
            loops.push(measure(
                "baseline loop: first sync",
                loop_args(BASELINE)?,
                Some(changed),
            )?);
            // Undo the baseline's writes so the engine finds the same differences.
            restore_prices()?;
        }
        if run > 0 {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(state_part(suffix));
            }
        }
        firsts.push(measure(
            "first sync: products",
            engine("run", "products", &project),
            Some(changed),
        )?);
        if run + 1 < runs {
            restore_prices()?;
        }
    }
    if !million {
        phases.push(median_of(loops));
    }
    phases.extend(dry_run);
    phases.push(median_of(firsts));

    // What the first sync left in the state (bindings, mostly), WAL included.
    let state_mb = ["", "-wal"]
        .iter()
        .filter_map(|suffix| std::fs::metadata(state_part(suffix)).ok())
        .map(|m| m.len())
        .sum::<u64>() as f64
        / 1e6;
    println!("state file after the first product sync: {state_mb:.1} MB");

    let mut wrong = mismatches(&shop, &erp, &first_prices);
    let mut expected_count = skus;
    if million {
        // Reconciling both ways reads both sides in full; everything is in step after the
        // first sync, so it writes nothing, and its memory must stay flat at 1M too.
        let mut both = engine("run", "products_both", &project);
        both.push("--reconcile".into());
        phases.push(measure("reconcile both ways: products", both, Some(0))?);
    }
    if !million {
        phases.push(measure(
            "first sync: stock",
            engine("run", "stock", &project),
            Some(0),
        )?);
        // The day's changes, all on the ERP side. Strides keep the chosen SKUs distinct and
        // spread over the catalogue; every change really changes the value.
        let prices: Vec<&str> = every(&items, 100, 7);
        let stock: Vec<&str> = every(&items, 50, 3);
        for code in &prices {
            bump_price(&erp, code)?;
        }
        for (i, code) in stock.iter().enumerate() {
            let now = erp.stock(code, WAREHOUSE).map_or(0, |s| s.quantity);
            erp.set_stock(code, WAREHOUSE, now + 1 + (i % 7) as i64)
                .context("stock change")?;
        }
        let new = skus / 200;
        for i in 0..new {
            let item = erpsync_sim::seed::catalogue(1, i as u64).remove(0);
            let code = erpsync_sim::seed::sku(skus + 1 + i);
            let mut p = ErpProduct::new(&code, &format!("Produs nou {i}"), 10.0 + i as f64);
            p.extra = erp_extra(&CatalogueItem {
                sku: code.clone(),
                name: p.name.clone(),
                price_gross: p.price,
                ..item
            });
            erp.create_product(p).context("new product")?;
            // A new product arrives with stock, which the stock flow must carry too.
            erp.set_stock(&code, WAREHOUSE, 3 + (i % 5) as i64)
                .context("new product's stock")?;
        }
        println!(
            "changed on the ERP: {} prices (1%), {} stock levels (2%), {} new products (0.5%, with stock)",
            prices.len(),
            stock.len(),
            new
        );
        expected_count = skus + new;
        let product_changes = (prices.len() + new) as u64;
        let stock_changes = (stock.len() + new) as u64;
        phases.push(measure(
            "incremental: products",
            engine("run", "products", &project),
            Some(product_changes),
        )?);
        phases.push(measure(
            "incremental: stock",
            engine("run", "stock", &project),
            Some(stock_changes),
        )?);
        phases.push(measure(
            "incremental: nothing changed",
            engine("run", "products", &project),
            Some(0),
        )?);
        // Both ways: reconciling a bidirectional flow reads the whole shop and holds it until
        // the ERP's listing has met its records. Everything is in step: nothing is written.
        let mut both = engine("run", "products_both", &project);
        both.push("--reconcile".into());
        phases.push(measure("reconcile both ways: products", both, Some(0))?);
        wrong += mismatches(&shop, &erp, &prices);
        wrong += stock
            .iter()
            .filter(|code| {
                shop.product_by_sku(code).and_then(|s| s.stock)
                    != erp.stock(code, WAREHOUSE).map(|l| l.quantity)
            })
            .count();

        // Rate-limited writes: the shop answers 429 over `rate` requests a second, the
        // project says so, and a batch of price changes must go out at that pace.
        let rate = env_usize("BENCH_RATE", 20).max(1) as f64;
        let n = env_usize("BENCH_RATE_WRITES", (rate * 10.0) as usize);
        shop.set_rate_limit(Some(TokenBucket {
            rate_per_sec: rate,
            burst: rate,
            send_retry_after: true,
        }));
        let limited = write_project(dir.path(), "limited.yaml", &shop, &erp, Some(rate))?;
        let batch: Vec<&str> = every(&items, (skus / n.max(1)).max(1), 5)
            .into_iter()
            .take(n)
            .collect();
        for code in &batch {
            bump_price(&erp, code)?;
        }
        let p = measure(
            &format!("rate-limited: {} writes at {rate}/s", batch.len()),
            engine("run", "products", &limited),
            Some(batch.len() as u64),
        )?;
        shop.set_rate_limit(None);
        wrong += mismatches(&shop, &erp, &batch);
        phases.push(p);
    }
    let shop_count = shop.product_count();

    print_phases(&phases);
    if let Some(served) = phases.iter().find(|p| p.name.starts_with("served")) {
        let records = served.counts["read"].as_u64().unwrap_or(0);
        println!(
            "served: the simulators answered both lists ({records} records) at {:.0} records/s \
             to a client that skips the records; every read above is bounded by it",
            records as f64 / served.wall.as_secs_f64()
        );
    }
    println!(
        "shop products after the runs: {shop_count} (expected {expected_count}); changed records not as on the ERP: {wrong}"
    );
    println!(
        "peak MB: the high-water RSS of the measured child (wait4's ru_maxrss, taken by a small launcher)"
    );

    let mut t = Vec::new();
    let scale = if million { "1M SKUs, " } else { "" };
    for p in &phases {
        if let Some(exp) = p.expected_writes {
            t.push(target(
                &format!("{scale}{}: write calls = changed records", p.name),
                p.writes.to_string(),
                exp.to_string(),
                p.writes == exp,
                true,
            ));
        }
        if p.is_engine_run() {
            t.push(target(
                &format!("{scale}{}: peak RSS", p.name),
                format!("{:.1} MB", p.peak_rss_mb),
                format!("< {MEMORY_LIMIT_MB} MB"),
                p.peak_rss_mb < MEMORY_LIMIT_MB,
                true,
            ));
        }
    }
    t.push(target(
        &format!("{scale}shop matches the ERP after the runs"),
        format!("{wrong} wrong, {shop_count} products"),
        format!("0 wrong, {expected_count}"),
        wrong == 0 && shop_count == expected_count,
        true,
    ));

    let find = |prefix: &str| phases.iter().find(|p| p.name.starts_with(prefix));
    let Some(first) = find("first sync: products") else {
        bail!("no first sync measured");
    };
    if million {
        t.push(target(
            "1M first sync: peak RSS",
            format!("{:.1} MB", first.peak_rss_mb),
            format!("≤ {MILLION_RSS_MB} MB"),
            first.peak_rss_mb <= MILLION_RSS_MB,
            false,
        ));
        if let Some(both) = find("reconcile both ways") {
            t.push(target(
                "1M reconcile both ways: peak RSS",
                format!("{:.1} MB", both.peak_rss_mb),
                format!("≤ {MILLION_RSS_MB} MB"),
                both.peak_rss_mb <= MILLION_RSS_MB,
                false,
            ));
        }
        drop(rt);
        return Ok(t);
    }
    let Some(base) = find("baseline") else {
        bail!("no baseline measured");
    };
    let ratio = first.cpu.as_secs_f64() / base.cpu.as_secs_f64().max(1e-9);
    t.push(target(
        "first sync: CPU / baseline loop CPU",
        format!("{ratio:.2}×"),
        format!("≤ {FIRST_SYNC_BASELINE_RATIO}×"),
        ratio <= FIRST_SYNC_BASELINE_RATIO,
        false,
    ));
    let cpu_budget = FIRST_SYNC_CPU_S_PER_100K * skus as f64 / 100_000.0;
    t.push(target(
        "first sync: CPU seconds (3 s per 100k SKUs)",
        format!("{:.2} s", first.cpu.as_secs_f64()),
        format!("≤ {cpu_budget:.2} s"),
        first.cpu.as_secs_f64() <= cpu_budget,
        false,
    ));
    t.push(target(
        "first sync: peak RSS (stated for 100k)",
        format!("{:.1} MB", first.peak_rss_mb),
        format!("≤ {FIRST_SYNC_RSS_MB} MB"),
        first.peak_rss_mb <= FIRST_SYNC_RSS_MB,
        false,
    ));
    if let Some(both) = find("reconcile both ways") {
        t.push(target(
            "reconcile both ways: peak RSS (stated for 100k)",
            format!("{:.1} MB", both.peak_rss_mb),
            format!("≤ {FIRST_SYNC_RSS_MB} MB"),
            both.peak_rss_mb <= FIRST_SYNC_RSS_MB,
            false,
        ));
    }
    if let Some(dry) = find("dry run") {
        // Both sides are read in full and mapped: source records + target records.
        let records = dry.counts["read"].as_u64().unwrap_or(0) + skus as u64;
        let rate = records as f64 / dry.wall.as_secs_f64();
        t.push(target(
            "read + map rate (dry run: both sides' records / wall)",
            format!("{rate:.0}/s"),
            format!("≥ {READ_MAP_PER_SEC:.0}/s"),
            rate >= READ_MAP_PER_SEC,
            false,
        ));
        t.push(target(
            "dry run: peak RSS (stated for 100k)",
            format!("{:.1} MB", dry.peak_rss_mb),
            format!("≤ {DRY_RUN_RSS_MB} MB"),
            dry.peak_rss_mb <= DRY_RUN_RSS_MB,
            false,
        ));
    }
    if let Some(lim) = find("rate-limited") {
        let rate = env_usize("BENCH_RATE", 20).max(1) as f64;
        let achieved = lim.writes as f64 / lim.wall.as_secs_f64();
        t.push(target(
            "rate-limited: writes/s (whole run) / limit",
            format!("{:.0}%", 100.0 * achieved / rate),
            format!("≥ {:.0}%", 100.0 * RATE_SHARE),
            achieved >= RATE_SHARE * rate,
            false,
        ));
        t.push(target(
            "rate-limited: 429 answers",
            lim.rejected.to_string(),
            "0".into(),
            lim.rejected == 0,
            false,
        ));
    }
    drop(rt);
    Ok(t)
}

/// Writes, all calls and 429 answers counted by both simulators so far.
fn sim_counts(shop: &ShopHandle, erp: &ErpHandle) -> (u64, u64, u64) {
    (
        shop.counters().writes() + erp.counters().writes(),
        shop.counters().total() + erp.counters().total(),
        shop.counters().status(429) + erp.counters().status(429),
    )
}

/// Changes an ERP price (really changes it).
fn bump_price(erp: &ErpHandle, code: &str) -> anyhow::Result<()> {
    erp.update_product(code, |p| {
        p.price = ((p.price + 1.25) * 100.0).round() / 100.0
    })
    .with_context(|| format!("price change of {code}"))?;
    Ok(())
}

/// Products whose shop price is not the ERP's.
fn mismatches(shop: &ShopHandle, erp: &ErpHandle, codes: &[&str]) -> usize {
    codes
        .iter()
        .filter(|code| {
            let (Some(e), Some(s)) = (erp.product(code), shop.product_by_sku(code)) else {
                return true;
            };
            s.price_gross != Some(e.price)
        })
        .count()
}

/// Every `stride`-th SKU, starting at `start`.
/// `items` in an order fixed by `seed` and unrelated to theirs (Fisher-Yates on xorshift).
fn shuffled(items: &[CatalogueItem], seed: u64) -> Vec<CatalogueItem> {
    let mut out = items.to_vec();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..out.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.swap(i, (x % (i as u64 + 1)) as usize);
    }
    out
}

fn every(items: &[CatalogueItem], stride: usize, start: usize) -> Vec<&str> {
    items
        .iter()
        .skip(start)
        .step_by(stride)
        .map(|i| i.sku.as_str())
        .collect()
}

const CATEGORIES: &[&str] = &[
    "Iluminat interior",
    "Iluminat exterior",
    "Cabluri si prelungitoare",
    "Prize si intrerupatoare",
    "Baterii si incarcatoare",
    "Automatizari",
    "Audio",
    "Climatizare",
];

fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The fields a 14-field product has beyond the simulators' own, as the ERP serves them.
fn erp_extra(item: &CatalogueItem) -> Map<String, Value> {
    let n: usize = item.sku.trim_start_matches("SKU-").parse().unwrap_or(0);
    let mut m = Map::new();
    m.insert(
        "description".into(),
        format!(
            "{}: produs verificat, ambalat individual, garantie 24 de luni.",
            item.name
        )
        .into(),
    );
    m.insert("priceNet".into(), json!(item.price_net()));
    m.insert("weight".into(), json!(item.weight));
    m.insert("oldPrice".into(), json!(cents(item.price_gross * 1.15)));
    m.insert("costPrice".into(), json!(cents(item.price_gross * 0.6)));
    m.insert("category".into(), CATEGORIES[n % CATEGORIES.len()].into());
    m.insert("seoTitle".into(), format!("{} | Magazin", item.name).into());
    m.insert(
        "seoDescription".into(),
        format!(
            "Cumpara {} online, livrare in 24 de ore si retur gratuit in 30 de zile.",
            item.name
        )
        .into(),
    );
    m
}

/// The same fields under the shop's names.
fn shop_extra(erp: &Map<String, Value>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("tax_value".into(), json!(19.0));
    for (from, to) in [
        ("oldPrice", "old_price_gross"),
        ("costPrice", "cost_gross"),
        ("category", "category_name"),
        ("seoTitle", "meta_title"),
        ("seoDescription", "meta_description"),
    ] {
        m.insert(to.into(), erp[from].clone());
    }
    m
}

/// Gives every seeded product the fields of a 14-field product, equal on both sides. With
/// `apart`, the shop's are all widened first and the ERP's from the next second on, so no
/// product has the same `updated_at` on both sides (stamps are compared to the second).
fn widen(
    shop: &ShopHandle,
    erp: &ErpHandle,
    items: &[CatalogueItem],
    apart: bool,
) -> anyhow::Result<()> {
    let widen_shop = |item: &CatalogueItem| -> anyhow::Result<()> {
        let extra = erp_extra(item);
        let s = shop
            .product_by_sku(&item.sku)
            .context("seeded shop product")?;
        let description = extra["description"].as_str().unwrap_or_default().to_owned();
        let for_shop = shop_extra(&extra);
        shop.update_product(s.id, |p| {
            p.description = description;
            p.extra = for_shop;
        })
        .context("widening a shop product")?;
        Ok(())
    };
    let widen_erp = |item: &CatalogueItem| -> anyhow::Result<()> {
        erp.update_product(&item.sku, |p| p.extra = erp_extra(item))
            .context("widening an ERP product")?;
        Ok(())
    };
    if !apart {
        for item in items {
            widen_shop(item)?;
            widen_erp(item)?;
        }
        return Ok(());
    }
    items.iter().try_for_each(widen_shop)?;
    let last = shop
        .products()
        .iter()
        .map(|p| p.updated_at)
        .max()
        .unwrap_or_default();
    // The ERP's stamps start in the second after the shop's last one.
    let next_second = last.timestamp() + 1;
    while chrono::Utc::now().timestamp() < next_second {
        std::thread::sleep(Duration::from_millis(50));
    }
    items.iter().try_for_each(widen_erp)
}

/// The bench project: the MerchantPro template from `flows/common` for the shop, with a
/// 14-field `catalog_product` entity of the bench's own (the shipped flows keep theirs), the
/// demo's ERP operations, one-way product and stock flows from the ERP. Rate limits are lifted
/// unless `rate` is given, so the figures measure erpsync, not the simulated APIs' budgets;
/// cursors have no overlap and are sent with milliseconds (the ERP keeps them), so an
/// incremental run reads only what changed after the run before it.
fn write_project(
    dir: &Path,
    file: &str,
    shop: &ShopHandle,
    erp: &ErpHandle,
    rate: Option<f64>,
) -> anyhow::Result<PathBuf> {
    let common = Path::new(env!("CARGO_MANIFEST_DIR")).join("flows/common");
    let (key, secret) = shop.credentials();
    let (client_id, client_secret) = erp.credentials();
    let shop_rate = match rate {
        Some(r) => format!("{{ per_second: {r}, burst: 1 }}"),
        None => "{ per_second: 1000000, burst: 1000000 }".to_string(),
    };
    // The rate-limited phase sends its updates `BENCH_CONCURRENCY` at a time (default 4).
    let concurrency = match rate {
        Some(_) => env_usize("BENCH_CONCURRENCY", 4).clamp(1, 64),
        None => 1,
    };
    let yaml = format!(
        r#"version: 1
include: ["{common}"]

entities:
  catalog_product:
    key: sku
    updated_at: updated_at
    fields:
      sku: {{ type: string, normalize: [trim, uppercase] }}
      name: string
      description: string
      price: {{ type: decimal, scale: 2 }}
      price_net: {{ type: decimal, scale: 2 }}
      vat_rate: number
      active: boolean
      weight: number
      old_price: {{ type: decimal, scale: 2 }}
      cost: {{ type: decimal, scale: 2 }}
      category: string
      meta_title: string
      meta_description: string
      updated_at: {{ type: datetime, volatile: true }}

systems:
  shop:
    extends: merchantpro
    base_url: {shop_url}
    auth: {{ kind: basic, username: "{key}", password: "{secret}" }}
    rate_limit: {shop_rate}
    concurrency: {concurrency}
    entities:
      catalog_product:
        list: list_products
        lookup: find_product
        get: get_product
        create: create_product
        update: update_product
        read:
          sku: $.sku
          name: $.name
          description: $.description
          price: $.price_gross
          price_net: $.price_net
          vat_rate: $.tax_value
          active: "{{{{#if (eq status 'active')}}}}true{{{{else}}}}false{{{{/if}}}}"
          weight: $.weight
          old_price: $.old_price_gross
          cost: $.cost_gross
          category: $.category_name
          meta_title: $.meta_title
          meta_description: $.meta_description
          updated_at: $.updated_at
        write:
          type: {{ const: basic }}
          sku: $.sku
          name: $.name
          description: $.description
          price_gross: $.price
          price_net: $.price_net
          tax_value: $.vat_rate
          status: {{ lookup: {{ table: active_status, key: $.active }} }}
          weight: $.weight
          old_price_gross: $.old_price
          cost_gross: $.cost
          category_name: $.category
          meta_title: $.meta_title
          meta_description: $.meta_description

  erp:
    role: erp
    base_url: {erp_url}
    auth:
      kind: oauth2_client_credentials
      token_url: authorize/token
      client_id: "{client_id}"
      client_secret: "{client_secret}"
      body_format: json
    errors:
      - when: "@.errorText && @.errorText != ''"
        action: fail
        message: "{{{{body.errorText}}}}"
    vars:
      warehouse: {WAREHOUSE}
    operations:
      list_products:
        path: /products
        query: {{ updatedAfter: "{{{{since}}}}" }}
        records: $.data
        paginate: {{ kind: offset, offset_param: offset, limit_param: limitPerPage, limit: 250 }}
        since_format: "%Y-%m-%dT%H:%M:%S%.3fZ"
      find_product:
        path: /products
        query: {{ code: "{{{{key}}}}" }}
        records: $.data
      create_product:
        method: POST
        path: /products
        body: "{{{{record}}}}"
        record: $.data
      update_product:
        method: PUT
        path: /products/{{{{urlencode id}}}}
        body: "{{{{record}}}}"
        record: $.data
      list_stock:
        path: /stock
        query: {{ changedSince: "{{{{since}}}}", warehouse: "{{{{system.warehouse}}}}" }}
        records: $.data
        paginate: {{ kind: offset, offset_param: offset, limit_param: limitPerPage, limit: 250 }}
        since_format: "%Y-%m-%dT%H:%M:%S%.3fZ"
      find_stock:
        path: /stock
        query: {{ code: "{{{{key}}}}", warehouse: "{{{{system.warehouse}}}}" }}
        records: $.data
    entities:
      catalog_product:
        id: $.code
        list: list_products
        lookup: find_product
        create: create_product
        update: update_product
        read:
          sku: $.code
          name: $.name
          description: $.description
          price: $.price
          price_net: $.priceNet
          vat_rate: $.vatPercentage
          active: $.active
          weight: $.weight
          old_price: $.oldPrice
          cost: $.costPrice
          category: $.category
          meta_title: $.seoTitle
          meta_description: $.seoDescription
          updated_at: $.updatedAt
        write:
          code: $.sku
          name: $.name
          description: $.description
          price: $.price
          priceNet: $.price_net
          vatPercentage: $.vat_rate
          active: $.active
          weight: $.weight
          oldPrice: $.old_price
          costPrice: $.cost
          category: $.category
          seoTitle: $.meta_title
          seoDescription: $.meta_description
      stock:
        id: $.code
        list: list_stock
        lookup: find_stock
        read:
          sku: $.code
          quantity: $.quantity

flows:
  products:
    description: Products (14 fields) from the ERP into the shop.
    entity: catalog_product
    from: erp
    to: shop
    trigger: {{ manual: true }}
    incremental: {{ start: "2000-01-01", overlap_secs: 0 }}

  products_both:
    description: The same products both ways (the ERP wins a conflict), reconciled.
    entity: catalog_product
    from: erp
    to: shop
    direction: bidirectional
    conflict: {{ rule: erp_wins }}
    trigger: {{ manual: true }}
    incremental: {{ start: "2000-01-01", overlap_secs: 0 }}
    reconcile: {{ schedule: "0 0 3 * * *" }}

  stock:
    description: Stock of the main warehouse from the ERP into the shop.
    entity: stock
    from: erp
    to: shop
    mode: update
    trigger: {{ manual: true }}
    incremental: {{ start: "2000-01-01", overlap_secs: 0 }}
"#,
        common = common.display(),
        shop_url = shop.api_url(),
        erp_url = erp.api_url(),
    );
    let path = dir.join(file);
    std::fs::write(&path, yaml)?;
    Ok(path)
}

/// The `erpsync` binary the phases run: this build's, or `BENCH_ERPSYNC` (another build, to
/// compare two versions against the same simulators and baseline).
fn erpsync_binary() -> String {
    std::env::var("BENCH_ERPSYNC").unwrap_or_else(|_| env!("CARGO_BIN_EXE_erpsync").to_string())
}

/// Runs `args` (program first) as a measured child through the launcher.
fn run_child(dir: &Path, name: &str, args: &[String]) -> anyhow::Result<Phase> {
    let slug: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let out_path = dir.join(format!("{slug}.out.json"));
    let err_path = dir.join(format!("{slug}.err.log"));
    let usage_path = dir.join(format!("{slug}.usage.json"));
    // `BENCH_WRAP` runs the measured program under a profiler (a command prefix such as
    // `heaptrack` or `valgrind --tool=massif`), in the phases whose name contains
    // `BENCH_WRAP_PHASE` (all when unset). Its figures are then the profiler's.
    let wrap: Vec<String> = std::env::var("BENCH_WRAP")
        .ok()
        .filter(|_| std::env::var("BENCH_WRAP_PHASE").map_or(true, |p| name.contains(p.as_str())))
        .map(|w| w.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    if !wrap.is_empty() {
        println!(
            "`{name}` runs under `{}` (output in {}); its figures are the profiler's",
            wrap.join(" "),
            std::env::current_dir()?.display()
        );
    }
    let self_before = self_cpu();
    let started = Instant::now();
    let status = Command::new(std::env::current_exe()?)
        .arg(LAUNCH)
        .arg(&usage_path)
        .args(&wrap)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .status()
        .context("starting the launcher")?;
    let wall = started.elapsed();
    let sim_cpu = self_cpu().saturating_sub(self_before);
    let stdout = std::fs::read_to_string(&out_path)?;
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let head = |s: &str| s.chars().take(4000).collect::<String>();
    if !status.success() {
        bail!(
            "`{name}` failed ({status}):\n{}\n{}",
            head(&stdout),
            head(&stderr)
        );
    }
    let usage: Value = serde_json::from_str(&std::fs::read_to_string(&usage_path)?)?;
    // A profiler may print lines of its own around the report.
    let stdout = if wrap.is_empty() {
        stdout
    } else {
        report_lines(&stdout)
    };
    let out: Value = serde_json::from_str(&stdout)
        .with_context(|| format!("reading the report of `{name}`: {}", head(&stdout)))?;
    // `run --json` prints the reports; `dry-run --format json` wraps them in `runs`; the
    // baseline loop prints its own report.
    let report = match &out {
        Value::Array(a) => a.first().cloned().unwrap_or(Value::Null),
        o if o.get("runs").is_some() => o["runs"][0].clone(),
        o => o.clone(),
    };
    if let Some(errors) = report["errors"].as_array().filter(|e| !e.is_empty()) {
        bail!("`{name}` reported errors: {errors:?}");
    }
    let secs = |k: &str| Duration::from_secs_f64(usage[k].as_f64().unwrap_or(0.0));
    Ok(Phase {
        wall,
        cpu: secs("user_s") + secs("system_s"),
        sys: secs("system_s"),
        sim_cpu,
        peak_rss_mb: usage["max_rss_kib"].as_f64().unwrap_or(f64::MAX) / 1024.0,
        counts: report["counts"].clone(),
        ..Phase::default()
    })
}

/// The JSON document in `out`: from its first line that opens an array or object to the
/// last line that ends one.
fn report_lines(out: &str) -> String {
    let lines: Vec<&str> = out.lines().collect();
    let first = lines
        .iter()
        .position(|l| l.starts_with('[') || l.starts_with('{'));
    let last = lines.iter().rposition(|l| {
        let l = l.trim_end();
        l.ends_with(']') || l.ends_with('}')
    });
    match (first, last) {
        (Some(a), Some(b)) if a <= b => lines[a..=b].join("\n"),
        _ => out.to_string(),
    }
}

/// Launcher mode: `--measure-child USAGE_FILE EXE ARGS…` runs `EXE ARGS…` with this
/// process's standard streams, waits for it, writes its resource usage as JSON to
/// `USAGE_FILE` and fails when it failed. This process is small, so the high-water RSS the
/// child inherits from it at `exec` is a few MB at most.
fn launch(args: &[String]) -> anyhow::Result<()> {
    let [usage_file, exe, rest @ ..] = args else {
        bail!("usage: {LAUNCH} USAGE_FILE EXE ARGS…");
    };
    let child = Command::new(exe).args(rest).spawn()?;
    let (status, usage) = wait_with_usage(child.id() as libc::pid_t)?;
    let report = json!({
        "status": status,
        // Linux reports ru_maxrss in KiB.
        "max_rss_kib": usage.ru_maxrss,
        "user_s": tv(usage.ru_utime).as_secs_f64(),
        "system_s": tv(usage.ru_stime).as_secs_f64(),
    });
    std::fs::write(usage_file, report.to_string())?;
    if status != 0 {
        bail!("{exe} exited with {status}");
    }
    Ok(())
}

/// Waits for a child and returns its exit code and resource usage (its own, not the sum of
/// every child so far as `RUSAGE_CHILDREN` would give).
fn wait_with_usage(pid: libc::pid_t) -> anyhow::Result<(i32, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for the child we started and have not
    // waited for yet.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if r != pid {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Ok((code, usage))
}

fn self_cpu() -> Duration {
    // SAFETY: as above, getrusage only fills the struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn tv(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

/// The run of a repeated phase that took the median CPU, with every run's CPU noted. A run
/// that missed an always-enforced target (writes other than the changed records, the peak
/// of an engine run over the memory ceiling) is shown instead, so its miss is reported.
fn median_of(mut runs: Vec<Phase>) -> Phase {
    let cpus: Vec<Duration> = runs.iter().map(|p| p.cpu).collect();
    let wrong = runs.iter().position(|p| {
        p.expected_writes.is_some_and(|e| e != p.writes)
            || (p.is_engine_run() && p.peak_rss_mb >= MEMORY_LIMIT_MB)
    });
    let mut chosen = match wrong {
        Some(i) => runs.swap_remove(i),
        None => {
            runs.sort_by_key(|p| p.cpu);
            runs.swap_remove(runs.len() / 2)
        }
    };
    if cpus.len() > 1 {
        chosen.cpu_runs = cpus;
    }
    chosen
}

fn print_phases(phases: &[Phase]) {
    let base_cpu = phases
        .iter()
        .find(|p| p.name.starts_with("baseline"))
        .map(|p| p.cpu.as_secs_f64());
    println!();
    println!(
        "{:<36} {:>7} {:>7} {:>7} {:>7} {:>8} {:>7} {:>7} {:>5} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "phase",
        "wall s",
        "cpu s",
        "sys s",
        "sims s",
        "peak MB",
        "reads",
        "writes",
        "429s",
        "changed",
        "read",
        "adopted",
        "updated",
        "× base"
    );
    for p in phases {
        let c = |k: &str| p.counts[k].as_u64().unwrap_or(0);
        let ratio = base_cpu.map_or_else(
            || "-".to_string(),
            |b| format!("{:.2}", p.cpu.as_secs_f64() / b.max(1e-9)),
        );
        println!(
            "{:<36} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>8.1} {:>7} {:>7} {:>5} {:>7} {:>7} {:>7} {:>7} {:>7}",
            p.name,
            p.wall.as_secs_f64(),
            p.cpu.as_secs_f64(),
            p.sys.as_secs_f64(),
            p.sim_cpu.as_secs_f64(),
            p.peak_rss_mb,
            p.reads,
            p.writes,
            p.rejected,
            p.expected_writes
                .map_or_else(|| "-".to_string(), |e| e.to_string()),
            c("read"),
            c("adopted"),
            c("updated") + c("created"),
            ratio,
        );
    }
    println!(
        "(wall: the whole child, start-up included; cpu: the child's user+system; sys: its system \
         part; sims: CPU the \
         in-process simulators spent meanwhile; reads/writes/429s: calls the simulators counted; \
         updated: updated + created; × base: cpu / the baseline loop's cpu)"
    );
    for p in phases.iter().filter(|p| !p.cpu_runs.is_empty()) {
        let runs: Vec<String> = p
            .cpu_runs
            .iter()
            .map(|c| format!("{:.2}", c.as_secs_f64()))
            .collect();
        println!(
            "{}: cpu s of its {} runs {} (the median run is shown)",
            p.name,
            runs.len(),
            runs.join(", ")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Baseline loop

/// Baseline mode: `--baseline-loop SHOP_API KEY SECRET ERP_API CLIENT_ID CLIENT_SECRET`. The
/// job a first sync does, written plainly: read every ERP product and every shop product,
/// index the shop's by SKU, compare the 13 synced fields, PATCH what differs and create what
/// is missing, one call at a time. Prints `{"counts": …}` as JSON.
///
/// With `skip` (`--read-lists`), it reads both lists the same way and stops there, checking
/// each page's JSON but building none of its records: what the simulators serve.
fn baseline_loop(args: &[String], skip: bool) -> anyhow::Result<()> {
    let [shop_api, key, secret, erp_api, client_id, client_secret] = args else {
        bail!("usage: {BASELINE} SHOP_API KEY SECRET ERP_API CLIENT_ID CLIENT_SECRET");
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let http = reqwest::Client::new();
        let token: Value = http
            .post(format!("{erp_api}/authorize/token"))
            .json(&json!({
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": client_secret,
            }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let bearer = token["access_token"]
            .as_str()
            .context("no access token")?
            .to_owned();
        if skip {
            let read = skim_lists(&http, shop_api, key, secret, erp_api, &bearer).await?;
            println!(
                "{}",
                json!({"counts": {"read": read, "updated": 0, "created": 0}})
            );
            return anyhow::Ok(());
        }

        let mut erp_products = Vec::new();
        loop {
            let mut page: Value = http
                .get(format!("{erp_api}/products"))
                .query(&[("offset", erp_products.len()), ("limitPerPage", 250)])
                .bearer_auth(&bearer)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            // Records are taken out of their pages, not copied (a copy of each, the
            // original then dropped, was a quarter of the loop's instructions).
            let data = match page["data"].take() {
                Value::Array(records) => records,
                _ => Vec::new(),
            };
            let n = data.len();
            erp_products.extend(data);
            if n < 250 {
                break;
            }
        }

        let mut shop_products: HashMap<String, Value> = HashMap::new();
        let mut next = Some(format!("{shop_api}/products?limit=100"));
        while let Some(url) = next.take() {
            let mut page: Value = http
                .get(&url)
                .basic_auth(key, Some(secret))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            if let Value::Array(records) = page["data"].take() {
                for p in records {
                    if let Some(sku) = p["sku"].as_str() {
                        shop_products.insert(sku.trim().to_uppercase(), p);
                    }
                }
            }
            next = page["meta"]["links"]["next"].as_str().map(str::to_owned);
        }

        let (mut updated, mut created) = (0u64, 0u64);
        let read = erp_products.len() + shop_products.len();
        for e in &erp_products {
            let sku = e["code"].as_str().unwrap_or_default();
            let want = json!({
                "name": e["name"],
                "description": e["description"],
                "price_gross": e["price"],
                "price_net": e["priceNet"],
                "tax_value": e["vatPercentage"],
                "status": if e["active"].as_bool() == Some(true) { "active" } else { "inactive" },
                "weight": e["weight"],
                "old_price_gross": e["oldPrice"],
                "cost_gross": e["costPrice"],
                "category_name": e["category"],
                "meta_title": e["seoTitle"],
                "meta_description": e["seoDescription"],
            });
            match shop_products.get(&sku.trim().to_uppercase()) {
                Some(s) => {
                    let mut patch = Map::new();
                    for (k, v) in want.as_object().into_iter().flatten() {
                        if !same(v, &s[k]) {
                            patch.insert(k.clone(), v.clone());
                        }
                    }
                    if patch.is_empty() {
                        continue;
                    }
                    http.patch(format!("{shop_api}/products/{}", s["id"]))
                        .query(&[("ignore_nonexistent_fields", "1")])
                        .basic_auth(key, Some(secret))
                        .json(&patch)
                        .send()
                        .await?
                        .error_for_status()?;
                    updated += 1;
                }
                None => {
                    let mut body = want;
                    body["sku"] = sku.into();
                    body["type"] = "basic".into();
                    http.post(format!("{shop_api}/products"))
                        .basic_auth(key, Some(secret))
                        .json(&body)
                        .send()
                        .await?
                        .error_for_status()?;
                    created += 1;
                }
            }
        }
        println!(
            "{}",
            json!({"counts": {"read": read, "updated": updated, "created": created}})
        );
        anyhow::Ok(())
    })
}

/// Reads every page of both lists as the baseline loop does, skipping the records (their JSON
/// is checked, nothing is built): the records served.
async fn skim_lists(
    http: &reqwest::Client,
    shop_api: &str,
    key: &str,
    secret: &str,
    erp_api: &str,
    bearer: &str,
) -> anyhow::Result<usize> {
    #[derive(serde::Deserialize)]
    struct Page {
        data: Vec<serde::de::IgnoredAny>,
        #[serde(default)]
        meta: Option<Meta>,
    }
    #[derive(serde::Deserialize)]
    struct Meta {
        links: Links,
    }
    #[derive(serde::Deserialize)]
    struct Links {
        next: Option<String>,
    }
    let mut erp = 0;
    loop {
        let body = http
            .get(format!("{erp_api}/products"))
            .query(&[("offset", erp), ("limitPerPage", 250)])
            .bearer_auth(bearer)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let n = serde_json::from_slice::<Page>(&body)?.data.len();
        erp += n;
        if n < 250 {
            break;
        }
    }
    let mut shop = 0;
    let mut next = Some(format!("{shop_api}/products?limit=100"));
    while let Some(url) = next.take() {
        let body = http
            .get(&url)
            .basic_auth(key, Some(secret))
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let page: Page = serde_json::from_slice(&body)?;
        shop += page.data.len();
        next = page.meta.and_then(|m| m.links.next);
    }
    Ok(erp + shop)
}

/// Equal as the shop would hold them: numbers by value, anything else exactly.
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() < 0.005,
        _ => a == b,
    }
}

// ---------------------------------------------------------------------------------------------
// Mapping micro-benchmark

/// A shop-style product read into a 15-field canonical product: twelve paths (some nested,
/// some typed or defaulted) and three templates.
const MAPPING_PROJECT: &str = r#"version: 1
entities:
  product:
    key: sku
    fields:
      sku: { type: string, normalize: [trim, uppercase] }
      name: string
      title: string
      description: string
      price: { type: decimal, scale: 2 }
      price_net: { type: decimal, scale: 2 }
      vat_rate: number
      stock: integer
      weight: number
      brand: string
      category: string
      ean: string
      active: boolean
      url: string
      updated_at: { type: datetime, volatile: true }
systems:
  shop:
    base_url: http://127.0.0.1:9
    entities:
      product:
        id: $.id
        read:
          sku: $.sku
          name: $.name
          title: "{{brand.name}} {{name}} ({{sku}})"
          description: $.description
          price: { path: $.price_gross, type: number }
          price_net: $.price_net
          vat_rate: { path: $.tax.rate, default: 19 }
          stock: { path: $.stock, type: integer, default: 0 }
          weight: $.weight
          brand: $.brand.name
          category: $.categories[0].name
          ean: $.ean
          active: "{{#if (eq status 'active')}}true{{else}}false{{/if}}"
          url: "https://shop.example/p/{{lower sku}}"
          updated_at: $.updated_at
"#;

fn mapping(n: usize) -> anyhow::Result<()> {
    println!("\n== mapping micro-benchmark: 15 fields, 3 templates, {n} records, one core ==");
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("mapping.yaml");
    std::fs::write(&path, MAPPING_PROJECT)?;
    let (project, diags) = erpsync::compile::project::check(std::slice::from_ref(&path));
    let Some(project) = project else {
        bail!("the mapping project is invalid: {diags:?}");
    };
    let read = &project.systems["shop"].entities["product"].read;
    let entity = &project.entities["product"];
    let env = MapEnv {
        vars: &project.vars,
        system: &serde_json::Value::Null,
        refs: &NoRefs,
    };

    let records: Vec<Value> = (0..n).map(native_product).collect();
    let texts: Vec<String> = records.iter().map(Value::to_string).collect();
    let bytes: usize = texts.iter().map(String::len).sum();

    // Each measurement is repeated and the best kept: the machine is shared, and the best
    // run is the one least disturbed by other work.
    let best = |f: &mut dyn FnMut() -> usize| -> (Duration, usize) {
        let mut best = Duration::MAX;
        let mut check = 0;
        for _ in 0..3 {
            let t = Instant::now();
            check = f();
            best = best.min(t.elapsed());
        }
        (best, check)
    };
    let (baseline, _) = best(&mut || {
        let mut total = 0;
        for t in &texts {
            let v: Value = serde_json::from_str(t).expect("valid JSON");
            total += serde_json::to_string(&v).expect("serialisable").len();
        }
        total
    });
    let (mapped, ok) = best(&mut || {
        let mut ok = 0;
        for r in &records {
            if read.apply(r, &env, None).is_ok() {
                ok += 1;
            }
        }
        ok
    });
    anyhow::ensure!(ok == n, "{} records failed to map", n - ok);
    let (mapped_norm, _) = best(&mut || {
        let mut ok = 0;
        for r in &records {
            let m = read.apply(r, &env, None).expect("maps");
            if erpsync::engine::canonical::normalise(entity, m).is_ok() {
                ok += 1;
            }
        }
        ok
    });
    let sample =
        erpsync::engine::canonical::normalise(entity, read.apply(&records[1], &env, None)?)
            .map_err(anyhow::Error::msg)?;

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let rows = [
        ("serde_json parse + serialise", baseline),
        ("mapping (Mapping::apply)", mapped),
        ("mapping + canonical normalise", mapped_norm),
    ];
    println!(
        "records: {n}, {:.0} bytes each on average",
        bytes as f64 / n as f64
    );
    println!(
        "{:<32} {:>10} {:>12} {:>16}",
        "measure", "total s", "records/s", "× parse+serialise"
    );
    for (name, d) in rows {
        println!(
            "{:<32} {:>10.3} {:>12.0} {:>16.2}",
            name,
            d.as_secs_f64(),
            rate(d),
            d.as_secs_f64() / baseline.as_secs_f64()
        );
    }
    let verdict = if rate(mapped_norm) >= MAPPING_TARGET_PER_SEC {
        "meets"
    } else {
        "BELOW"
    };
    println!(
        "target {MAPPING_TARGET_PER_SEC:.0} records/s: {verdict} (mapping + normalise, best of 3)"
    );
    println!("a mapped record: {sample}");
    Ok(())
}

/// A shop product as an API returns it, with fields the mapping ignores too.
fn native_product(i: usize) -> Value {
    let gross = 5.0 + (i % 9_500) as f64 / 20.0;
    json!({
        "id": i + 1,
        "type": "basic",
        "sku": format!(" sku-{i:06} "),
        "ext_ref": null,
        "name": format!("Banda LED RGB {i}"),
        "description": "Banda LED flexibila, 5 m, telecomanda inclusa, lumina calda sau rece.",
        "status": if i.is_multiple_of(10) { "inactive" } else { "active" },
        "price_gross": gross,
        "price_net": (gross / 1.19 * 100.0).round() / 100.0,
        "tax": { "id": 1, "rate": 19 },
        "stock": (i % 200) as i64,
        "weight": 0.35,
        "brand": { "id": 7, "name": "Lumina" },
        "categories": [{ "id": 12, "name": "Iluminat" }, { "id": 3, "name": "Casa" }],
        "ean": format!("59{i:011}"),
        "images": [format!("https://cdn.shop.example/{i}/1.jpg")],
        "created_at": "2026-01-10T08:00:00.000Z",
        "updated_at": "2026-11-20T10:15:30.000Z",
    })
}
