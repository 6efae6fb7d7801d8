//! `erpsync demo`: the whole sync in one command. Starts the shop and ERP simulators, runs the
//! shipped demo flows against them with an embedded SQLite state, lets both sides change
//! things the way merchants and accountants do, runs again, reconciles, and checks that both
//! sides agree.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use super::common::{StateOrigin, resolve_url, summary_shown, usage};
use erpsync::clock::SystemClock;
use erpsync::config::env::Overrides;
use erpsync::engine::{Engine, RunOptions, RunReport};
use erpsync::state::{SqliteStore, Store};
use erpsync_sim::shop::{Order, Product};
use erpsync_sim::{ErpHandle, ErpOptions, ErpSim, ShopHandle, ShopOptions, ShopSim, seed_both};

/// Arguments of `erpsync demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The demo project (a copy of `flows/demo` to try changes on); by default the one built
    /// into erpsync, so the demo runs from any folder.
    #[arg(long)]
    pub flows: Option<PathBuf>,
    /// Write the built-in demo project into DIR (`DIR/demo`, with the `DIR/common` it
    /// includes) and exit, to run `erpsync run`, `dry-run`… on it against `erpsync sim`.
    #[arg(long, value_name = "DIR", conflicts_with = "flows")]
    pub write_flows: Option<PathBuf>,
    /// Products in both catalogues.
    #[arg(long, default_value_t = 200)]
    pub products: usize,
    /// Orders placed in the shop.
    #[arg(long, default_value_t = 12)]
    pub orders: usize,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Where the state database goes, as `sqlite:PATH` (relative to the working directory),
    /// to look into after the demo; a new file (a fresh temporary one by default).
    #[arg(long, value_name = "sqlite:PATH")]
    pub state: Option<String>,
    /// Turn off the simulators' rate limits (and the flows' matching budgets) for a fast run.
    #[arg(long)]
    pub no_rate_limit: bool,
}

/// Suppliers seeded in the ERP.
const SUPPLIERS: usize = 12;

/// The ERP warehouse the demo's stock flow reads.
const WAREHOUSE: &str = "Depozit central";

/// The demo's flow files, built into the binary (see `build.rs`).
mod embedded {
    include!(concat!(env!("OUT_DIR"), "/demo_flows.rs"));
}

/// Where the demo's flow file keeps its state in the repository (`target/`, from
/// `flows/demo`).
const STATE_IN_REPO: &str = "url: sqlite:../../target/demo/erpsync.sqlite";

/// Writes the built-in demo project into `dir` (as `demo/` beside the `common/` it
/// includes) and returns the project folder. What points outside the project in the
/// repository points inside it here: each file's schema comment at `dir/schemas` (see
/// `write_schemas`), the state at `dir/demo/erpsync.sqlite`.
pub fn write_embedded_flows(dir: &Path) -> std::io::Result<PathBuf> {
    for (name, text) in embedded::DEMO_FLOWS {
        let text = erpsync::authoring::templates::with_schema_of_its_project(text)
            .replace(STATE_IN_REPO, "url: sqlite:erpsync.sqlite");
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)?;
    }
    Ok(dir.join("demo"))
}

/// The flow-file schema the written project's files name, for editors (`--write-flows`
/// only: the demo's own run has no editor).
fn write_schemas(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("schemas"))?;
    std::fs::write(
        dir.join("schemas/flow.schema.json"),
        erpsync::config::schema_nav::flow_schema_text(),
    )
}

/// The demo's state file from `--state sqlite:PATH`.
fn state_file(arg: &str) -> anyhow::Result<PathBuf> {
    if super::common::sqlite_path(arg).is_none() {
        return Err(usage(format!(
            "`--state` takes `sqlite:PATH` (the demo keeps its state in SQLite), not `{}`",
            erpsync::state::redact_url(arg)
        )));
    }
    let loc = resolve_url(arg, StateOrigin::Argument, &std::env::current_dir()?);
    let path = loc.sqlite.unwrap_or_default();
    if let Some(dir) = path.parent()
        && !dir.is_dir()
    {
        return Err(usage(format!(
            "the folder of `--state` `{}` does not exist",
            dir.display()
        )));
    }
    if path.exists() {
        return Err(usage(format!(
            "`{}` exists: the demo starts from an empty state against fresh simulators; \
             remove it or name another file",
            path.display()
        )));
    }
    Ok(path)
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.write_flows {
        let project = write_embedded_flows(dir)
            .and_then(|project| write_schemas(dir).map(|()| project))
            .with_context(|| format!("writing the demo project into `{}`", dir.display()))?;
        crate::outln!(
            "wrote the demo project to {}; try `erpsync validate {}`",
            project.display(),
            project.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(demo(args))
}

struct Demo {
    engine: Engine,
    bar: ProgressBar,
    failed: u64,
}

impl Demo {
    /// A line on stdout, above the progress bar when there is one.
    fn say(&self, line: String) {
        if self.bar.is_hidden() {
            crate::outln!("{line}");
        } else {
            self.bar.suspend(|| crate::outln!("{line}"));
        }
    }

    async fn phase(&mut self, title: &str, flows: &[&str], opts: RunOptions) -> anyhow::Result<()> {
        self.say(format!("\n== {title}"));
        for flow in flows {
            self.bar.set_message(format!("{title}: {flow}"));
            let report: RunReport = self.engine.run(flow, &opts).await?;
            self.failed += report.counts.failed;
            self.say(summary_shown("  ", &report));
            for r in report.records.iter().filter(|r| r.reason.is_some()) {
                self.say(format!(
                    "      {} {}: {}",
                    r.decision.word(),
                    r.key,
                    r.reason.as_deref().unwrap_or("")
                ));
            }
            for e in &report.errors {
                self.say(format!("      error: {e}"));
            }
            self.bar.inc(1);
        }
        Ok(())
    }
}

/// The demo as a scenario: the world before the first sync, then each phase with the
/// changes people make before it, then the final check.
async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // A wrong `--state` is refused before the simulators start.
    let state_path = args.state.as_deref().map(state_file).transpose()?;
    let world = World::seed(&args).await?;
    let tmp = tempfile::TempDir::new()?;
    let flows = match &args.flows {
        Some(dir) => dir.clone(),
        None => write_embedded_flows(&tmp.path().join("flows"))?,
    };
    let (project, diags) = erpsync::compile::project::check_with_env(
        std::slice::from_ref(&flows),
        &world.env(args.no_rate_limit),
    );
    let Some(project) = project else {
        crate::errout!("{}", erpsync::config::diagnostic::render_text(&diags));
        return Ok(ExitCode::from(super::EXIT_CONFIG));
    };
    let state_path = match &state_path {
        Some(p) => p.clone(),
        None => tmp.path().join("erpsync.sqlite"),
    };
    crate::outln!("state: {}", state_path.display());
    let store: Store = SqliteStore::open(&state_path)
        .with_context(|| format!("opening state `{}`", state_path.display()))?
        .into();
    let project = Arc::new(project);
    let order: Vec<String> = project
        .select(&[])
        .map_err(anyhow::Error::msg)?
        .iter()
        .map(|f| f.id.clone())
        .collect();
    let all: Vec<&str> = order.iter().map(String::as_str).collect();
    let reconciled: Vec<&str> = project
        .flows
        .iter()
        .filter(|f| f.reconcile_schedule.is_some())
        .map(|f| f.id.as_str())
        .collect();
    let engine = Engine::new(project.clone(), store, Arc::new(SystemClock))?;
    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::new((order.len() * 3 + reconciled.len()) as u64);
        // `wide_msg`: the phase and flow are cut to the terminal's width (with `…`), so
        // the bar keeps to one row on a narrow terminal.
        b.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let mut demo = Demo {
        engine,
        bar,
        failed: 0,
    };

    let incremental = RunOptions::default();
    let reconcile = RunOptions {
        reconcile: true,
        ..Default::default()
    };
    demo.phase(
        "first sync: adopt what matches, create what is missing",
        &all,
        incremental.clone(),
    )
    .await?;
    world.life_goes_on()?;
    demo.phase(
        "incremental sync after changes on both sides",
        &all,
        incremental.clone(),
    )
    .await?;
    world.drift()?;
    demo.phase(
        "reconciliation: compare everything and correct drift",
        &reconciled,
        reconcile,
    )
    .await?;
    demo.phase(
        "quiet run: nothing changed, nothing written",
        &all,
        incremental,
    )
    .await?;
    demo.bar.finish_and_clear();
    Ok(final_check(&world, demo.failed))
}

/// The two simulators and what was seeded in them.
struct World {
    shop: ShopHandle,
    erp: ErpHandle,
    items: Vec<erpsync_sim::seed::CatalogueItem>,
    suppliers: Vec<erpsync_sim::erp::Supplier>,
}

impl World {
    /// Both simulators, with matching catalogues, shop orders and ERP suppliers, and the
    /// differences a real first sync meets: products on one side only, a supplier the shop
    /// typed its own way.
    async fn seed(args: &DemoArgs) -> anyhow::Result<World> {
        let (shop_opts, erp_opts) = if args.no_rate_limit {
            (ShopOptions::unlimited(), ErpOptions::unlimited())
        } else {
            (ShopOptions::default(), ErpOptions::default())
        };
        let shop = ShopSim::start(shop_opts).await?;
        let erp = ErpSim::start(erp_opts).await?;
        let items = seed_both(&shop, &erp, args.products, args.seed);
        shop.seed_orders(args.orders, args.seed);
        let suppliers = erp.seed_suppliers(SUPPLIERS, args.seed);
        crate::outln!("shop simulator: {}", shop.api_url());
        crate::outln!("ERP simulator:  {}", erp.api_url());
        crate::outln!(
            "seeded {} products on both sides, {} shop orders and {} ERP suppliers",
            items.len(),
            args.orders,
            suppliers.len()
        );
        for i in 0..3 {
            shop.create_product(Product::basic(
                &format!("SHOP-NEW-{i}"),
                &format!("Produs nou magazin {i}"),
                49.9 + i as f64,
                0,
            ))?;
            erp.create_product(erpsync_sim::erp::ErpProduct::new(
                &format!("ERP-NEW-{i}"),
                &format!("Produs nou ERP {i}"),
                99.0 + i as f64,
            ))?;
            erp.set_stock(&format!("ERP-NEW-{i}"), WAREHOUSE, 10 + i);
        }
        // The shop already knows one supplier, its fiscal code typed without the RO prefix
        // and with a space: matched, not duplicated.
        if let Some(s) = suppliers.first() {
            let digits = erpsync_sim::seed::fiscal_digits(&s.vat_code);
            shop.create_supplier(erpsync_sim::shop::SupplierInput {
                name: Some(s.name.clone()),
                vat_code: Some(format!("{} {}", &digits[..4], &digits[4..])),
                ..Default::default()
            })?;
        }
        Ok(World {
            shop,
            erp,
            items,
            suppliers,
        })
    }

    /// The variables the demo project reads, pointed at the simulators.
    fn env(&self, no_rate_limit: bool) -> Overrides {
        let (key, secret) = self.shop.credentials();
        let (client_id, client_secret) = self.erp.credentials();
        let mut vars = HashMap::from([
            ("SHOP_URL".to_string(), self.shop.base_url()),
            ("ERP_URL".to_string(), self.erp.base_url()),
            ("SHOP_API_KEY".to_string(), key),
            ("SHOP_API_SECRET".to_string(), secret),
            ("ERP_CLIENT_ID".to_string(), client_id),
            ("ERP_CLIENT_SECRET".to_string(), client_secret),
        ]);
        if no_rate_limit {
            vars.insert("SHOP_REQUESTS_PER_SECOND".into(), "1000".into());
            vars.insert("ERP_REQUESTS_PER_SECOND".into(), "1000".into());
        }
        Overrides(vars)
    }

    /// Life goes on: the merchant edits prices and confirms orders, the warehouse receives
    /// goods from a supplier, the ERP ships and invoices what it received, a supplier changes
    /// its phone, a new one appears and the ERP takes a phone order.
    fn life_goes_on(&self) -> anyhow::Result<()> {
        let (shop, erp, items) = (&self.shop, &self.erp, &self.items);
        for sku in items.iter().take(3).map(|i| i.sku.clone()) {
            if let Some(p) = shop.product_by_sku(&sku) {
                shop.update_product(p.id, |p| p.price_gross = p.price_gross.map(|x| x + 5.0));
            }
        }
        // Products past the first few (whose prices were just edited), however small the
        // catalogue.
        let delivery: Vec<(&str, i64, f64)> = items
            .iter()
            .skip(10.min(items.len() / 2))
            .take(8)
            .map(|i| (i.sku.as_str(), 25, i.price_net() * 0.6))
            .collect();
        if let Some(s) = self.suppliers.first()
            && !delivery.is_empty()
        {
            erp.receive_goods(&s.vat_code, WAREHOUSE, &delivery)?;
        }
        for o in shop
            .orders()
            .into_iter()
            .filter(|o| o.shipping_status == "awaiting")
            .take(2)
        {
            shop.set_shipping_status(&o.id, "confirmed");
        }
        for o in erp.orders().into_iter().take(3) {
            erp.set_order_status(o.id, "shipped");
            erp.set_awb(o.id, &format!("AWB{:08}", o.id));
            erp.issue_invoice(o.id);
        }
        if let Some(s) = self.suppliers.get(1) {
            erp.update_supplier(
                s.id,
                erpsync_sim::erp::SupplierInput {
                    phone: Some("0212345678".into()),
                    ..Default::default()
                },
            )?;
        }
        erp.create_supplier(erpsync_sim::erp::SupplierInput {
            name: Some("Furnizor Nou SRL".into()),
            vat_code: Some("RO49999999".into()),
            email: Some("oferte@furnizor-nou.example.ro".into()),
            ..Default::default()
        })?;
        if let Some(first) = items.first() {
            erp.create_order(erpsync_sim::erp::ErpOrderDraft {
                channel: "phone".into(),
                client_name: "Client Telefon".into(),
                client_email: "telefon@example.com".into(),
                lines: vec![(first.sku.clone(), 2)],
                series: None,
            })?;
        }
        Ok(())
    }

    /// Drift nobody told erpsync about: stock and a supplier edited by hand in the shop.
    fn drift(&self) -> anyhow::Result<()> {
        if let Some(s) = self.shop.suppliers().get(2) {
            self.shop.update_supplier(
                s.id,
                erpsync_sim::shop::SupplierInput {
                    name: Some(format!("{} (vechi)", s.name)),
                    ..Default::default()
                },
            )?;
        }
        for item in self.items.iter().skip(20).take(4) {
            if let Some(p) = self.shop.product_by_sku(&item.sku) {
                self.shop
                    .update_product(p.id, |p| p.stock = Some(p.stock.unwrap_or(0) + 3));
            }
        }
        Ok(())
    }
}

/// Both sides compared: what disagrees and what failed, and the exit code they make.
fn final_check(world: &World, failed: u64) -> ExitCode {
    let disagreements = compare(&world.shop, &world.erp);
    crate::outln!("\n== final check");
    for d in &disagreements {
        crate::outln!("  disagreement: {d}");
    }
    let verdict = format!(
        "  {} products, {} orders, {} suppliers compared: {} disagreement{}, {} failed record{}",
        world.shop.product_count(),
        world.shop.orders().len(),
        world.erp.suppliers().len(),
        disagreements.len(),
        if disagreements.len() == 1 { "" } else { "s" },
        failed,
        if failed == 1 { "" } else { "s" },
    );
    crate::outln!("{}", super::output::shown(&verdict, 2, 2));
    if disagreements.is_empty() && failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FAILED)
    }
}

/// Everything the demo flows promise, checked on the simulators' own data.
pub fn compare(shop: &ShopHandle, erp: &ErpHandle) -> Vec<String> {
    let mut out = Vec::new();
    let shop_products = shop.products();
    let erp_products = erp.products();
    let by_code: HashMap<&str, &erpsync_sim::erp::ErpProduct> =
        erp_products.iter().map(|p| (p.code.as_str(), p)).collect();
    for p in &shop_products {
        match by_code.get(p.sku.as_str()) {
            None => out.push(format!("product {} is in the shop only", p.sku)),
            Some(e) => {
                if (e.price - p.price_gross.unwrap_or(0.0)).abs() > 0.005 {
                    out.push(format!(
                        "product {}: price {} in the shop, {} in the ERP",
                        p.sku,
                        p.price_gross.unwrap_or(0.0),
                        e.price
                    ));
                }
                if e.name != p.name {
                    out.push(format!("product {}: name differs", p.sku));
                }
                let stock = erp
                    .stock(&p.sku, WAREHOUSE)
                    .map(|s| s.quantity)
                    .unwrap_or(0);
                if p.stock.unwrap_or(0) != stock {
                    out.push(format!(
                        "product {}: stock {} in the shop, {} in the ERP",
                        p.sku,
                        p.stock.unwrap_or(0),
                        stock
                    ));
                }
            }
        }
    }
    if shop_products.len() != erp_products.len() {
        out.push(format!(
            "{} products in the shop, {} in the ERP",
            shop_products.len(),
            erp_products.len()
        ));
    }
    let shop_orders: Vec<Order> = shop.orders();
    for o in &shop_orders {
        // Confirmed or in process: the flow must have sent it. An order the shop held as
        // shipped or delivered before it was ever confirmed under erpsync (seeded so) is
        // history the flow rightly leaves alone; one the ERP shipped was sent before.
        let sent = matches!(o.shipping_status.as_str(), "confirmed" | "in_process");
        let in_erp = erp.orders_by_reference(&o.number);
        if in_erp.len() > 1 {
            out.push(format!(
                "order {} is in the ERP {} times",
                o.number,
                in_erp.len()
            ));
        }
        if sent && in_erp.is_empty() && o.channel_name == "web" {
            out.push(format!(
                "order {} ({}) was not sent to the ERP",
                o.number, o.shipping_status
            ));
        }
        if let Some(e) = in_erp.first() {
            if e.awb != o.awb {
                out.push(format!(
                    "order {}: AWB {:?} in the shop, {:?} in the ERP",
                    o.number, o.awb, e.awb
                ));
            }
            if !o.locked {
                out.push(format!("order {} was exported but is not locked", o.number));
            }
        }
    }
    for e in erp.suppliers() {
        let Some(s) = shop.supplier_by_vat(&e.vat_code) else {
            out.push(format!("supplier {} is in the ERP only", e.vat_code));
            continue;
        };
        let status = if e.active { "active" } else { "inactive" };
        let same = s.vat_code == e.vat_code
            && s.name == e.name
            && s.email == e.email
            && s.phone == e.phone
            && s.address == e.address
            && s.status == status;
        if !same {
            out.push(format!("supplier {} differs: {s:?} vs {e:?}", e.vat_code));
        }
    }
    for e in erp.orders().iter().filter(|e| e.reference.is_none()) {
        let number = format!("{}-{}", e.series_name, e.number);
        if shop.order_by_number(&number).is_none() {
            out.push(format!(
                "ERP-only order {number} was not created in the shop"
            ));
        }
    }
    out
}
