//! The scheduler: when each enabled flow runs next (its cron schedule, and its `reconcile`
//! schedule as a reconcile run), and a loop that sleeps on the clock until the next firing.
//! Flows due at the same moment run concurrently, except that a flow waits for the flows in
//! its `after` list that fire with it (for a per-shop copy: the same shop's copies).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};

use super::core::{Cause, Daemon};
use crate::engine::RunOptions;
use crate::redact::redact;
use crate::state::Pruned;
use crate::state::lease::provably_dead;

mod plan;

pub(crate) use plan::Plan;

/// Longest sleep of the loop, so a clock jump or a missed wake-up costs at most this.
const MAX_NAP: Duration = Duration::from_secs(30);

/// Days finished runs are kept unless `daemon.retention_days` says otherwise.
pub(crate) const DEFAULT_RETENTION_DAYS: u64 = 30;

/// How often the daemon prunes the run history.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

impl Daemon {
    /// Starts the runs due at `now` and returns them (flow id, cause). The loop calls it on
    /// every wake-up; tests call it after moving a manual clock.
    pub fn tick(self: &Arc<Self>, now: DateTime<Utc>) -> Vec<(String, Cause)> {
        if self.is_stopping() {
            return Vec::new();
        }
        let due = self.plan.lock().unwrap_or_else(|e| e.into_inner()).due(now);
        // A reconcile compares everything, so it stands in for a sync due at the same time.
        let mut causes: BTreeMap<String, (Cause, DateTime<Utc>)> = BTreeMap::new();
        for (flow, reconcile, fired) in due {
            let cause = if reconcile {
                Cause::Reconcile
            } else {
                Cause::Schedule
            };
            let e = causes.entry(flow).or_insert((cause.clone(), fired));
            if cause == Cause::Reconcile {
                *e = (cause, fired);
            }
        }
        if causes.is_empty() {
            return Vec::new();
        }
        let engine = self.engine();
        let ids: Vec<String> = causes.keys().cloned().collect();
        let ordered = match engine.project.select(&ids) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "cannot order the due flows");
                return Vec::new();
            }
        };
        let mut started: HashMap<String, Shared<BoxFuture<'static, ()>>> = HashMap::new();
        let mut out = Vec::new();
        for flow in ordered {
            let Some((cause, fired)) = causes.get(&flow.id).cloned() else {
                continue;
            };
            // `orders.shop_ro` waits for `products.shop_ro`, or for `products` when that is
            // not copied per shop.
            let suffix = flow.id.strip_prefix(flow.name.as_str()).unwrap_or("");
            let before: Vec<_> = flow
                .after
                .iter()
                .filter_map(|a| {
                    started
                        .get(&format!("{a}{suffix}"))
                        .or_else(|| started.get(a))
                        .cloned()
                })
                .collect();
            let guard = self.work_guard();
            let d = self.clone();
            let id = flow.id.clone();
            let c = cause.clone();
            let run = async move {
                let _guard = guard;
                futures::future::join_all(before).await;
                d.run_scheduled(id, c, fired).await;
            }
            .boxed()
            .shared();
            tokio::spawn(run.clone());
            started.insert(flow.id.clone(), run);
            out.push((flow.id.clone(), cause));
        }
        out
    }

    /// Fires schedules until shutdown, sleeping on the clock in between. Before the first
    /// firing it settles what a dead predecessor left; beside it, housekeeping runs.
    pub(crate) async fn run_scheduler(self: Arc<Self>) {
        self.recover().await;
        let housekeeping = tokio::spawn(self.clone().housekeeping());
        self.schedule_loop().await;
        housekeeping.abort();
    }

    async fn schedule_loop(self: &Arc<Self>) {
        while !self.is_stopping() {
            let now = self.clock.now();
            self.tick(now);
            let wake = self
                .plan
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .next_wake();
            let nap = wake
                .and_then(|t| (t - now).to_std().ok())
                .unwrap_or(MAX_NAP)
                .clamp(Duration::from_millis(1), MAX_NAP);
            let replanned = self.replanned.notified();
            tokio::select! {
                _ = self.clock.sleep(nap) => {}
                _ = replanned => {}
            }
        }
    }

    /// At start-up: runs left `running` by dead processes of this host are closed as
    /// abandoned, and writes left in doubt are settled by a run of their flow scoped to
    /// their records (with the flow's lease, taken at once from a dead holder).
    pub(crate) async fn recover(self: &Arc<Self>) {
        let engine = self.engine();
        let me = engine.instance.id.clone();
        let now = self.clock.now();
        match self.store.runs.runs(None, 1000).await {
            Ok(runs) => {
                let dead: BTreeSet<String> = runs
                    .into_iter()
                    .filter(|r| r.status == "running")
                    .filter_map(|r| r.instance)
                    .filter(|i| *i != me && provably_dead(i))
                    .collect();
                for instance in dead {
                    let why = "abandoned: its process died";
                    match self
                        .store
                        .runs
                        .abandon_runs(None, Some(&instance), &me, now, why)
                        .await
                    {
                        Ok(n) => {
                            tracing::warn!(process = %instance, runs = n, "runs of a dead process closed as abandoned")
                        }
                        Err(e) => {
                            tracing::warn!(error = %redact(&e.to_string()), "cannot close abandoned runs")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %redact(&e.to_string()), "cannot read the run history")
            }
        }
        let pending = match self.store.journal.journal_pending(None).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %redact(&e.to_string()), "cannot read the write journal");
                return;
            }
        };
        let mut by_flow: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for e in pending {
            by_flow.entry(e.flow).or_default().insert(e.key);
        }
        for (flow, keys) in by_flow {
            // A disabled flow's writes wait for it to be enabled (or settled by hand).
            if engine.project.flow(&flow).is_none_or(|f| !f.enabled) {
                continue;
            }
            let n = keys.len();
            let opts = RunOptions {
                keys: Some(keys.into_iter().collect()),
                ..Default::default()
            };
            match self.trigger(&flow, opts, Cause::Recovery).await {
                Ok(_) => tracing::info!(flow, records = n, "settling writes left in doubt"),
                Err(e) => {
                    tracing::info!(flow, records = n, reason = %e, "writes left in doubt are settled by the flow's next run")
                }
            }
        }
    }

    /// Says this process is alive every third of the lease ttl, reports other live
    /// processes with this node's label, and prunes the run history every hour. Paced on
    /// wall time, like lease renewal.
    async fn housekeeping(self: Arc<Self>) {
        let mut last_prune: Option<std::time::Instant> = None;
        let mut reported: BTreeSet<String> = BTreeSet::new();
        loop {
            let engine = self.engine();
            let ttl = engine.lease_ttl();
            let me = engine.instance.clone();
            let now = self.clock.now();
            let seen = self
                .store
                .coordination
                .heartbeat(&me.id, &me.node, now)
                .await;
            match seen {
                Ok(nodes) => {
                    let live_since = now - chrono::Duration::from_std(ttl).unwrap_or_default();
                    let twins: Vec<String> = nodes
                        .into_iter()
                        .filter(|n| {
                            n.node == engine.instance.node && n.instance != engine.instance.id
                        })
                        .filter(|n| n.seen_at > live_since && !provably_dead(&n.instance))
                        .map(|n| n.instance)
                        .collect();
                    for t in twins.iter().filter(|t| !reported.contains(*t)) {
                        tracing::warn!(
                            node = %engine.instance.node,
                            other = %t,
                            "another live process uses this node's `daemon.node_id`; give each node its own"
                        );
                    }
                    reported = twins.iter().cloned().collect();
                    *self.clashes.lock().unwrap_or_else(|e| e.into_inner()) = twins;
                }
                Err(e) => {
                    tracing::warn!(error = %redact(&e.to_string()), "cannot record this node's heartbeat")
                }
            }
            self.take_over_stale_leases().await;
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(std::time::Instant::now());
                self.prune(now, ttl).await;
            }
            tokio::time::sleep(ttl / 3).await;
        }
    }

    /// A flow whose lease ran out without being released (its node died mid-run, or lost
    /// the state database), or whose holder on this host is gone, is run here now rather
    /// than at its next firing: that run settles what the dead run left in doubt and sends
    /// its pending post-actions. Only flows that run by themselves (a schedule or a
    /// webhook) are taken over.
    async fn take_over_stale_leases(self: &Arc<Self>) {
        let Ok(leases) = self.store.coordination.leases().await else {
            return;
        };
        let engine = self.engine();
        let now = self.clock.now();
        for l in leases {
            let Some(flow) = engine.project.flow(l.flow().unwrap_or_default()) else {
                continue;
            };
            let stale = !l.held_at(now) || provably_dead(&l.holder);
            let automatic = flow.schedule.is_some() || flow.webhook.is_some();
            if !stale
                || !automatic
                || !flow.enabled
                || l.holder == engine.instance.id
                || self.is_running(&flow.id)
            {
                continue;
            }
            match self
                .trigger(&flow.id, RunOptions::default(), Cause::Recovery)
                .await
            {
                Ok(_) => tracing::warn!(
                    flow = %flow.id, node = %l.node, holder = %l.holder,
                    "the node running the flow stopped renewing its lease; this node takes the flow over"
                ),
                Err(e) => {
                    tracing::debug!(flow = %flow.id, reason = %e, "stale lease not taken over")
                }
            }
        }
    }

    /// Deletes runs older than the retention, and processes not seen for a day.
    pub(crate) async fn prune(&self, now: DateTime<Utc>, ttl: Duration) -> Option<Pruned> {
        let days = self
            .engine()
            .project
            .daemon
            .as_ref()
            .and_then(|d| d.retention_days)
            .unwrap_or(DEFAULT_RETENTION_DAYS);
        let far = DateTime::<Utc>::UNIX_EPOCH;
        let runs_before = i64::try_from(days)
            .ok()
            .filter(|d| *d > 0)
            .and_then(chrono::Duration::try_days)
            .and_then(|d| now.checked_sub_signed(d))
            .unwrap_or(far)
            .max(far);
        let nodes_before =
            now - chrono::Duration::days(1) - chrono::Duration::from_std(ttl).unwrap_or_default();
        match self
            .store
            .coordination
            .prune(runs_before, nodes_before)
            .await
        {
            Ok(p) => {
                if p.runs > 0 {
                    tracing::info!(runs = p.runs, retention_days = days, "run history pruned");
                }
                Some(p)
            }
            Err(e) => {
                tracing::warn!(error = %redact(&e.to_string()), "cannot prune the run history");
                None
            }
        }
    }
}
