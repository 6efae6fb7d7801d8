//! The real binary over a project on disk: the demo project written to a temporary folder
//! against fresh simulators, run, spawned and killed as a person or a supervisor would.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use erpsync_sim::seed::CatalogueItem;
use erpsync_sim::{ErpHandle, ErpOptions, ErpSim, ShopHandle, ShopOptions, ShopSim, seed_both};
use serde_json::{Value, json};

use super::project::{demo_project, sim_env};
use super::sims::confirm_order;

/// A project written to a temporary folder, its state, and the simulators it talks to.
pub struct Project {
    pub shop: ShopHandle,
    pub erp: ErpHandle,
    pub items: Vec<CatalogueItem>,
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub state: String,
    pub env: HashMap<&'static str, String>,
}

impl Project {
    /// The demo project against fresh simulators with `products` products on both sides,
    /// without rate limits, with short retries, changed by `edit`.
    pub async fn start(products: usize, edit: impl FnOnce(&mut Value)) -> Project {
        super::install_tls_provider();
        let shop = ShopSim::start(ShopOptions::unlimited()).await.unwrap();
        let erp = ErpSim::start(ErpOptions::unlimited()).await.unwrap();
        let items = seed_both(&shop, &erp, products, 3);
        let mut doc = demo_project();
        for sys in ["shop", "erp"] {
            doc["systems"][sys]["rate_limit"] = json!({"per_second": 1000.0, "burst": 1000});
            doc["systems"][sys]["retry"] =
                json!({"max_attempts": 3, "initial_backoff_ms": 5, "max_backoff_ms": 40});
        }
        edit(&mut doc);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("project.yaml");
        std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
        let state = format!("sqlite:{}", dir.path().join("state.sqlite").display());
        let env = sim_env(&shop, &erp).into_iter().collect();
        Project {
            shop,
            erp,
            items,
            dir,
            path,
            state,
            env,
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_erpsync"));
        c.args(args)
            .arg(&self.path)
            .args(["--state", &self.state, "--init-state"])
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "off")
            .current_dir(self.dir.path());
        c
    }

    /// Raises the ERP's price of every `every`-th catalogue product by `by`: their SKUs.
    pub fn raise_erp_prices(&self, every: usize, by: f64) -> Vec<String> {
        let skus: Vec<String> = self
            .items
            .iter()
            .step_by(every)
            .map(|i| i.sku.clone())
            .collect();
        for sku in &skus {
            self.erp.update_product(sku, |e| e.price += by).unwrap();
        }
        skus
    }

    /// `erpsync ARGS PROJECT --state STATE --init-state` typed on a terminal in the project's
    /// folder, with the simulators' settings, no log filter from the environment and no
    /// colours: its screen, once it exited 0.
    pub fn on_terminal(&self, args: &str) -> String {
        let line = format!(
            "{} {args} {} --state {} --init-state",
            env!("CARGO_BIN_EXE_erpsync"),
            self.path.display(),
            self.state
        );
        let mut c = super::terminal::command(&line);
        c.envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env_remove("ERPSYNC_LOG")
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path());
        super::terminal::screen_of_success(c)
    }

    /// `erpsync ARGS… PROJECT --state STATE`, to the end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// The same, in the background.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// A confirmed order of `item`'s SKU in the shop; its number.
    pub fn confirm_order(&self, i: usize) -> String {
        let p = &self.items[i % self.items.len()];
        confirm_order(&self.shop, i % 7, &[(p, 1 + (i % 3) as i64)]).number
    }
}

/// What a finished process printed, stdout then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Waits until `done` holds (at most `secs`), then kills the child with SIGKILL.
pub async fn kill_when(child: &mut Child, secs: u64, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before {what}");
        }
        assert!(Instant::now() < deadline, "no {what} within {secs}s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
