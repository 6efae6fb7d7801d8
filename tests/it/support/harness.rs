//! The engine over the demo project against fresh simulators, with the state in a file of
//! its own: run flows, move the clock, reload other settings, count the writes.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use erpsync::clock::ManualClock;
use erpsync::compile::project::check_with_env;
use erpsync::config::env::Overrides;
use erpsync::engine::{Engine, RunOptions, RunReport};
use erpsync::state::{FlowName, SqliteStore, Store};
use erpsync_sim::{ErpHandle, ShopHandle, seed_both};
use serde_json::Value;

use super::project::{demo_project, sim_env};
use super::sims::sims;

/// The demo project's engine and what it runs against.
pub struct Harness {
    pub shop: ShopHandle,
    pub erp: ErpHandle,
    pub clock: ManualClock,
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub engine: Engine,
}

impl Harness {
    /// Simulators on a manual clock at 2026-03-01 08:00 UTC, `n` products on both sides.
    pub async fn new(n: usize, edit: impl FnOnce(&mut Value)) -> Harness {
        super::install_tls_provider();
        let clock = ManualClock::new("2026-03-01T08:00:00Z".parse().unwrap());
        let (shop, erp) = sims(&clock).await;
        seed_both(&shop, &erp, n, 1);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::from(SqliteStore::open(&dir.path().join("state.sqlite")).unwrap());
        let engine = build(&shop, &erp, &dir, store.clone(), &clock, edit);
        Harness {
            shop,
            erp,
            clock,
            dir,
            store,
            engine,
        }
    }

    /// Reloads the project with other flow settings, keeping the state.
    pub fn reload(&mut self, edit: impl FnOnce(&mut Value)) {
        self.engine = build(
            &self.shop,
            &self.erp,
            &self.dir,
            self.store.clone(),
            &self.clock,
            edit,
        );
    }

    pub async fn run(&self, flow: &str) -> RunReport {
        self.run_with(
            flow,
            RunOptions {
                details: true,
                ..Default::default()
            },
        )
        .await
    }

    /// The flow's cursor in the state, if it has one.
    pub async fn cursor(&self, flow: &str) -> Option<DateTime<Utc>> {
        self.store
            .bindings
            .cursor(FlowName::new(flow))
            .await
            .unwrap()
    }

    pub async fn run_with(&self, flow: &str, opts: RunOptions) -> RunReport {
        self.engine
            .run(flow, &opts)
            .await
            .unwrap_or_else(|e| panic!("{flow}: {e}"))
    }

    /// Runs every stored failure again, as `erpsync failures retry --all` does; the report of
    /// the one flow that had failures.
    pub async fn retry_all(&self) -> RunReport {
        let mut reports = self.engine.retry_failures(None).await.unwrap();
        assert_eq!(reports.len(), 1, "one flow had failures");
        let (flow, report) = reports.remove(0);
        report.unwrap_or_else(|e| panic!("{flow}: {e}"))
    }

    /// An engine of the same project and clock on `store` (the harness's store with a role
    /// wrapped, say).
    pub fn engine_on(&self, store: Store) -> Engine {
        Engine::new(
            self.engine.project.clone(),
            store,
            Arc::new(self.clock.clone()),
        )
        .unwrap()
    }

    pub fn later(&self, minutes: u64) {
        self.clock.advance(Duration::from_secs(minutes * 60));
    }

    pub fn reset_counters(&self) {
        self.shop.counters().reset();
        self.erp.counters().reset();
    }

    pub fn writes(&self) -> (u64, u64) {
        (self.shop.counters().writes(), self.erp.counters().writes())
    }
}

/// The demo project (edited) against the simulators, on any store.
pub fn build(
    shop: &ShopHandle,
    erp: &ErpHandle,
    dir: &tempfile::TempDir,
    store: Store,
    clock: &ManualClock,
    edit: impl FnOnce(&mut Value),
) -> Engine {
    let mut doc = demo_project();
    edit(&mut doc);
    let file = dir.path().join("project.yaml");
    std::fs::write(&file, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let env = Overrides(
        sim_env(shop, erp)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    );
    let (project, diags) = check_with_env(&[file], &env);
    let project = project.unwrap_or_else(|| panic!("{diags:#?}"));
    Engine::new(Arc::new(project), store, Arc::new(clock.clone())).unwrap()
}
