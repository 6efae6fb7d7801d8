//! `erpsync sim`: serve the shop and ERP simulators, seeded, until interrupted, so flows can be
//! tried by hand and out-of-process tests have something to talk to.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use erpsync_sim::faults::Faults;
use erpsync_sim::woo::{WooOptions, WooOrder, WooSim};
use erpsync_sim::{ErpOptions, ErpSim, ShopOptions, ShopSim, WebhookConfig, seed_both};

/// Suppliers seeded in the ERP.
const SUPPLIERS: usize = 10;
/// Orders seeded in the WooCommerce shop.
const WOO_ORDERS: usize = 6;

/// Arguments of `erpsync sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Address both simulators listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port of the shop simulator.
    #[arg(long, default_value_t = 8701)]
    pub shop_port: u16,
    /// Port of the ERP simulator.
    #[arg(long, default_value_t = 8702)]
    pub erp_port: u16,
    /// Port of the WooCommerce shop simulator (what `flows/woocommerce` talks to).
    #[arg(long, default_value_t = 8703)]
    pub woo_port: u16,
    /// Products seeded on both sides (same SKUs, prices and stock).
    #[arg(long, default_value_t = 100)]
    pub products: usize,
    /// Orders seeded in the shop.
    #[arg(long, default_value_t = 20)]
    pub orders: usize,
    /// Seed of the generated data and of the injected faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Shop API key.
    #[arg(long, default_value = "demo-key")]
    pub shop_key: String,
    /// Shop API secret.
    #[arg(long, default_value = "demo-secret")]
    pub shop_secret: String,
    /// ERP client id.
    #[arg(long, default_value = "demo@erp.example")]
    pub erp_client_id: String,
    /// ERP client secret.
    #[arg(long, default_value = "demo-erp-secret")]
    pub erp_client_secret: String,
    /// Where the shop posts order webhooks.
    #[arg(long)]
    pub webhook_url: Option<String>,
    /// Secret the shop signs webhooks with.
    #[arg(long, default_value = "demo-webhook-secret")]
    pub webhook_secret: String,
    /// Turn off the shop's token bucket and the ERP's burst lock-out.
    #[arg(long)]
    pub no_rate_limit: bool,
    /// The ERP ignores idempotency keys: an order sent twice is placed twice (as an ERP
    /// that de-duplicates nothing would).
    #[arg(long)]
    pub no_idempotency: bool,
    /// Share of requests answered with a 5xx (both simulators).
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Share of requests answered with a 429 (both simulators).
    #[arg(long, default_value_t = 0.0)]
    pub rate_limit_rate: f64,
    /// Milliseconds added to every request.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Share of requests held for `--timeout-ms` and answered 504.
    #[arg(long, default_value_t = 0.0)]
    pub timeout_rate: f64,
    /// How long a timed-out request is held.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Share of writes applied and then answered with a 5xx.
    #[arg(long, default_value_t = 0.0)]
    pub lost_write_rate: f64,
    /// A record changes between list pages.
    #[arg(long)]
    pub page_drift: bool,
    /// Every webhook is delivered twice.
    #[arg(long)]
    pub duplicate_webhooks: bool,
}

impl SimArgs {
    fn faults(&self) -> Faults {
        Faults {
            error_rate: self.error_rate,
            rate_limit_rate: self.rate_limit_rate,
            latency_ms: self.latency_ms,
            timeout_rate: self.timeout_rate,
            timeout_ms: self.timeout_ms,
            lost_write_rate: self.lost_write_rate,
            page_drift: self.page_drift,
            duplicate_webhooks: self.duplicate_webhooks,
            ..Faults::default()
        }
    }
}

pub fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(serve(args))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: SimArgs) -> anyhow::Result<()> {
    let mut shop_opts = ShopOptions {
        bind: SocketAddr::new(args.host, args.shop_port),
        api_key: args.shop_key.clone(),
        api_secret: args.shop_secret.clone(),
        webhook: args.webhook_url.clone().map(|url| WebhookConfig {
            url,
            secret: args.webhook_secret.clone(),
        }),
        faults: args.faults(),
        seed: args.seed,
        ..ShopOptions::default()
    };
    let mut erp_opts = ErpOptions {
        bind: SocketAddr::new(args.host, args.erp_port),
        client_id: args.erp_client_id.clone(),
        client_secret: args.erp_client_secret.clone(),
        faults: args.faults(),
        seed: args.seed,
        idempotency: !args.no_idempotency,
        ..ErpOptions::default()
    };
    if args.no_rate_limit {
        shop_opts.rate_limit = None;
        erp_opts.burst_limit = None;
    }
    let woo_opts = WooOptions {
        bind: SocketAddr::new(args.host, args.woo_port),
        faults: args.faults(),
        seed: args.seed,
        ..WooOptions::default()
    };
    let shop = ShopSim::start(shop_opts).await?;
    let erp = ErpSim::start(erp_opts).await?;
    let woo = WooSim::start(woo_opts).await?;
    let items = seed_both(&shop, &erp, args.products, args.seed);
    woo.seed_catalogue(&items);
    // A few WooCommerce orders, half of them paid (`processing`, what flows/woocommerce sends).
    let buyers = erpsync_sim::seed::people(WOO_ORDERS, args.seed ^ 0x3c);
    for (i, p) in buyers.iter().enumerate().filter(|_| !items.is_empty()) {
        let item = &items[(i * 7) % items.len()];
        let order = WooOrder::new(
            &p.email,
            &p.first_name,
            &p.last_name,
            &[(item.sku.as_str(), 1 + (i % 3) as i64, item.price_gross)],
        );
        let status = if i % 2 == 0 { "processing" } else { "pending" };
        woo.place_order(order.with_status(status));
    }
    shop.seed_customers(args.orders.clamp(1, 50), args.seed);
    shop.seed_orders(args.orders, args.seed);
    erp.seed_suppliers(SUPPLIERS, args.seed);
    // Exactly what the shipped flows read: their `base_url` adds the API path itself.
    crate::outln!("shop simulator (MerchantPro-style): {}", shop.api_url());
    crate::outln!(
        "  flows/demo: SHOP_URL={} SHOP_API_KEY={} SHOP_API_SECRET={}",
        shop.base_url(),
        args.shop_key,
        args.shop_secret
    );
    crate::outln!("ERP simulator (SmartBill/Oblio-style): {}", erp.api_url());
    crate::outln!(
        "  flows/demo, flows/woocommerce: ERP_URL={} ERP_CLIENT_ID={} ERP_CLIENT_SECRET={}",
        erp.base_url(),
        args.erp_client_id,
        args.erp_client_secret
    );
    let token_body = serde_json::json!({
        "grant_type": "client_credentials",
        "client_id": args.erp_client_id,
        "client_secret": args.erp_client_secret,
    });
    crate::outln!(
        "  token: curl -s -X POST {}/authorize/token -H 'content-type: application/json' -d '{}'",
        erp.api_url(),
        token_body
    );
    crate::outln!("shop simulator (WooCommerce-style): {}", woo.api_url());
    crate::outln!(
        "  flows/woocommerce: WOO_URL={} WOO_CONSUMER_KEY=ck_demo WOO_CONSUMER_SECRET=cs_demo",
        woo.base_url()
    );
    if let Some(url) = &args.webhook_url {
        crate::outln!(
            "shop webhooks go to {url}, signed with {}",
            args.webhook_secret
        );
    }
    crate::outln!(
        "seeded {} products in each, {} MerchantPro and {WOO_ORDERS} WooCommerce orders, {SUPPLIERS} ERP suppliers (seed {})",
        args.products,
        args.orders,
        args.seed
    );
    crate::outln!(
        "control API on each: GET /__sim/counters, POST /__sim/faults, POST /__sim/orders/{{id}}"
    );
    crate::outln!("press Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    shop.shutdown().await;
    erp.shutdown().await;
    woo.shutdown().await;
    Ok(())
}
