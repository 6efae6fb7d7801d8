//! The catalogue benchmark of issue 5: a 100,000-SKU catalogue synced once and then
//! incrementally between the simulators, and a micro-benchmark of one product mapping.
//!
//! Run with `cargo bench --bench catalog`. It prints figures, not pass/fail timings, and exits
//! non-zero only when a hard target is missed: writes must equal the changed records and the
//! engine's peak memory must stay under 200 MB.
//!
//! The simulators live in this process; every sync runs as a child `erpsync run --once`, the
//! command an integrator runs, so the peak RSS and CPU time reported are the engine's alone,
//! not the simulators'. The child is started through a small launcher (this binary again):
//! Linux carries the parent's high-water RSS into a child's `ru_maxrss` across `exec`, so a
//! child of this simulator-laden process would report at least this process's size.
//!
//! Knobs (environment): `BENCH_SKUS` (catalogue size, default 100000), `BENCH_MAP_RECORDS`
//! (records in the mapping benchmark, default 200000), `BENCH_ONLY` (`catalog` or `mapping`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use erpsync::compile::{MapEnv, NoRefs};
use erpsync::sim::erp::ErpProduct;
use erpsync::sim::{ErpHandle, ErpOptions, ErpSim, ShopHandle, ShopOptions, ShopSim, seed_both};
use serde_json::{Value, json};

/// Hard ceiling on the engine's peak resident memory.
const MEMORY_LIMIT_MB: f64 = 200.0;
/// Mapping throughput the issue asks for (a target to report against, not a hard failure:
/// it depends on the machine far more than memory or write counts do).
const MAPPING_TARGET_PER_SEC: f64 = 50_000.0;
/// The warehouse the stock flow reads.
const WAREHOUSE: &str = "Depozit central";

/// First argument that turns this binary into the launcher of one measured child.
const LAUNCH: &str = "--measure-child";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(LAUNCH) {
        return match launch(&args[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("launcher: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let mut failed = Vec::new();
    if only.is_empty() || only == "catalog" {
        let skus = env_usize("BENCH_SKUS", 100_000);
        match catalog(skus) {
            Ok(missed) => failed.extend(missed),
            Err(e) => failed.push(format!("catalogue benchmark could not run: {e:#}")),
        }
    }
    if only.is_empty() || only == "mapping" {
        let n = env_usize("BENCH_MAP_RECORDS", 200_000);
        if let Err(e) = mapping(n) {
            failed.push(format!("mapping benchmark could not run: {e:#}"));
        }
    }
    if failed.is_empty() {
        println!("\nall hard targets met");
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
// Catalogue sync

/// One measured `erpsync run`.
struct Phase {
    name: String,
    wall: Duration,
    cpu: Duration,
    /// CPU the simulators (this process) spent serving the run.
    sim_cpu: Duration,
    peak_rss_mb: f64,
    counts: Value,
    writes: u64,
    expected_writes: Option<u64>,
}

/// Catalogue benchmark; returns the hard targets it missed.
fn catalog(skus: usize) -> anyhow::Result<Vec<String>> {
    println!("== catalogue sync: {skus} SKUs, ERP → shop ==");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let shop = rt.block_on(ShopSim::start(ShopOptions::unlimited()))?;
    let erp = rt.block_on(ErpSim::start(ErpOptions::unlimited()))?;
    let t = Instant::now();
    let items = seed_both(&shop, &erp, skus, 5);
    println!("seeded both simulators in {:.1?}", t.elapsed());

    let dir = tempfile::tempdir()?;
    let project = write_project(dir.path(), &shop, &erp)?;
    let state = format!("sqlite:{}", dir.path().join("state.sqlite").display());
    let run = |name: &str, flow: &str, expected: Option<u64>| -> anyhow::Result<Phase> {
        let before = shop.counters().writes() + erp.counters().writes();
        let mut phase = run_child(&project, &state, flow)?;
        phase.name = name.to_string();
        phase.writes = shop.counters().writes() + erp.counters().writes() - before;
        phase.expected_writes = expected;
        Ok(phase)
    };

    let mut phases = vec![
        run("first sync: products", "products", Some(0))?,
        run("first sync: stock", "stock", Some(0))?,
    ];

    // The day's changes, all on the ERP side. Strides keep the chosen SKUs distinct and
    // spread over the catalogue; every change really changes the value.
    let prices: Vec<&str> = every(&items, 100, 7);
    let stock: Vec<&str> = every(&items, 50, 3);
    for code in &prices {
        erp.update_product(code, |p| {
            p.price = ((p.price + 1.25) * 100.0).round() / 100.0
        })
        .context("price change")?;
    }
    for (i, code) in stock.iter().enumerate() {
        let now = erp.stock(code, WAREHOUSE).map_or(0, |s| s.quantity);
        erp.set_stock(code, WAREHOUSE, now + 1 + (i % 7) as i64)
            .context("stock change")?;
    }
    let new = skus / 200;
    for i in 0..new {
        let code = erpsync::sim::seed::sku(skus + 1 + i);
        let p = ErpProduct::new(&code, &format!("Produs nou {i}"), 10.0 + i as f64);
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

    let product_changes = (prices.len() + new) as u64;
    let stock_changes = (stock.len() + new) as u64;
    phases.push(run(
        "incremental: products",
        "products",
        Some(product_changes),
    )?);
    phases.push(run("incremental: stock", "stock", Some(stock_changes))?);
    phases.push(run("incremental: nothing changed", "products", Some(0))?);

    // The shop must now hold what the ERP holds.
    let mut wrong = 0usize;
    for code in prices.iter().chain(stock.iter()).copied() {
        let (Some(e), Some(s)) = (erp.product(code), shop.product_by_sku(code)) else {
            wrong += 1;
            continue;
        };
        if s.price_gross != Some(e.price)
            || s.stock.unwrap_or(0) != erp.stock(code, WAREHOUSE).map_or(0, |l| l.quantity)
        {
            wrong += 1;
        }
    }
    let shop_count = shop.product_count();

    print_phases(&phases);
    println!(
        "shop products after the runs: {shop_count} (expected {}); changed records not in the shop: {wrong}",
        skus + new
    );
    println!(
        "peak MB: the high-water RSS of the `erpsync run` child (wait4's ru_maxrss, taken by a small launcher)"
    );

    let mut missed = Vec::new();
    for p in &phases {
        if let Some(exp) = p.expected_writes
            && p.writes != exp
        {
            missed.push(format!(
                "{}: {} write calls for {exp} changed records",
                p.name, p.writes
            ));
        }
        if p.peak_rss_mb >= MEMORY_LIMIT_MB {
            missed.push(format!(
                "{}: peak RSS {:.1} MB, limit {MEMORY_LIMIT_MB} MB",
                p.name, p.peak_rss_mb
            ));
        }
    }
    if wrong > 0 || shop_count != skus + new {
        missed.push(format!(
            "the shop does not match the ERP: {wrong} changed records wrong, {shop_count} products"
        ));
    }
    drop(rt);
    Ok(missed)
}

/// Every `stride`-th SKU, starting at `start`.
fn every(items: &[erpsync::sim::CatalogueItem], stride: usize, start: usize) -> Vec<&str> {
    items
        .iter()
        .skip(start)
        .step_by(stride)
        .map(|i| i.sku.as_str())
        .collect()
}

/// The bench project: the MerchantPro template from `flows/common` for the shop, the demo's
/// ERP operations, one-way product and stock flows from the ERP. Rate limits are lifted so
/// the figures measure erpsync, not the simulated APIs' budgets; cursors have no overlap and
/// are sent with milliseconds (the ERP keeps them), so an incremental run reads only what
/// changed after the run before it.
fn write_project(dir: &Path, shop: &ShopHandle, erp: &ErpHandle) -> anyhow::Result<PathBuf> {
    let common = Path::new(env!("CARGO_MANIFEST_DIR")).join("flows/common");
    let (key, secret) = shop.credentials();
    let (client_id, client_secret) = erp.credentials();
    let yaml = format!(
        r#"version: 1
include: ["{common}"]

systems:
  shop:
    extends: merchantpro
    base_url: {shop_url}
    auth: {{ kind: basic, username: "{key}", password: "{secret}" }}
    rate_limit: {{ per_second: 1000000, burst: 1000000 }}

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
      product:
        id: $.code
        list: list_products
        lookup: find_product
        read:
          sku: $.code
          name: $.name
          price: $.price
          vat_rate: $.vatPercentage
          active: $.active
          updated_at: $.updatedAt
      stock:
        id: $.code
        list: list_stock
        lookup: find_stock
        read:
          sku: $.code
          quantity: $.quantity

flows:
  products:
    description: Prices and new products from the ERP into the shop.
    entity: product
    from: erp
    to: shop
    fields: [sku, name, price, active]
    trigger: {{ manual: true }}
    incremental: {{ start: "2000-01-01", overlap_secs: 0 }}

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
    let path = dir.join("bench.yaml");
    std::fs::write(&path, yaml)?;
    Ok(path)
}

/// Runs one flow in a child `erpsync run --once` and measures it.
fn run_child(project: &Path, state: &str, flow: &str) -> anyhow::Result<Phase> {
    let exe = env!("CARGO_BIN_EXE_erpsync");
    let out_path = project.with_file_name(format!("{flow}.out.json"));
    let err_path = project.with_file_name(format!("{flow}.err.log"));
    let usage_path = project.with_file_name(format!("{flow}.usage.json"));
    let self_before = self_cpu();
    let started = Instant::now();
    let status = Command::new(std::env::current_exe()?)
        .arg(LAUNCH)
        .arg(&usage_path)
        .arg(exe)
        .arg("run")
        .arg(project)
        .args(["--once", "--json", "--flow", flow, "--state", state])
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
    if !status.success() {
        bail!("`erpsync run --flow {flow}` failed ({status}):\n{stdout}\n{stderr}");
    }
    let usage: Value = serde_json::from_str(&std::fs::read_to_string(&usage_path)?)?;
    let reports: Value = serde_json::from_str(&stdout)
        .with_context(|| format!("reading the report of `{flow}`: {stdout}"))?;
    let counts = reports[0]["counts"].clone();
    if let Some(errors) = reports[0]["errors"].as_array().filter(|e| !e.is_empty()) {
        bail!("`{flow}` reported errors: {errors:?}");
    }
    let secs = |k: &str| Duration::from_secs_f64(usage[k].as_f64().unwrap_or(0.0));
    Ok(Phase {
        name: String::new(),
        wall,
        cpu: secs("user_s") + secs("system_s"),
        sim_cpu,
        peak_rss_mb: usage["max_rss_kib"].as_f64().unwrap_or(f64::MAX) / 1024.0,
        counts,
        writes: 0,
        expected_writes: None,
    })
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

fn print_phases(phases: &[Phase]) {
    println!();
    println!(
        "{:<30} {:>8} {:>8} {:>8} {:>9} {:>7} {:>8} {:>7} {:>7} {:>8} {:>8}",
        "phase",
        "wall s",
        "cpu s",
        "sims s",
        "peak MB",
        "read",
        "adopted",
        "created",
        "updated",
        "writes",
        "changed"
    );
    for p in phases {
        let c = |k: &str| p.counts[k].as_u64().unwrap_or(0);
        println!(
            "{:<30} {:>8.2} {:>8.2} {:>8.2} {:>9.1} {:>7} {:>8} {:>7} {:>7} {:>8} {:>8}",
            p.name,
            p.wall.as_secs_f64(),
            p.cpu.as_secs_f64(),
            p.sim_cpu.as_secs_f64(),
            p.peak_rss_mb,
            c("read"),
            c("adopted"),
            c("created"),
            c("updated"),
            p.writes,
            p.expected_writes
                .map_or_else(|| "-".to_string(), |e| e.to_string()),
        );
    }
    println!(
        "(wall: the whole `erpsync run` child, start-up included; cpu: the child's user+system; \
         sims: CPU the in-process simulators spent meanwhile)"
    );
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
    let (project, diags) = erpsync::cli::validate::check(std::slice::from_ref(&path));
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
