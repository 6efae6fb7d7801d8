//! The scheduler: when each enabled flow runs next (its cron schedule, and its `reconcile`
//! schedule as a reconcile run), and a loop that sleeps on the clock until the next firing.
//! Flows due at the same moment run concurrently, except that a flow waits for the flows in
//! its `after` list that fire with it (for a per-shop copy: the same shop's copies).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};

use super::core::{Cause, Daemon};
use crate::compile::{Flow, Project, Schedule};

/// Longest sleep of the loop, so a clock jump or a missed wake-up costs at most this.
const MAX_NAP: Duration = Duration::from_secs(30);

/// The next firing of every schedule.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// (flow id, is a reconcile) → entry.
    entries: BTreeMap<(String, bool), Entry>,
}

#[derive(Debug)]
struct Entry {
    /// What the entry was computed from; a reload that changes it recomputes `next`.
    source: String,
    schedule: Schedule,
    next: Option<DateTime<Utc>>,
}

impl Plan {
    /// Follows the project: new and changed schedules are planned from `now`, unchanged ones
    /// keep their next firing, those of removed or disabled flows are dropped.
    /// `enabled` says whether a flow is on (its switch, else its flow file).
    pub fn sync(&mut self, project: &Project, enabled: impl Fn(&Flow) -> bool, now: DateTime<Utc>) {
        let mut kept = BTreeMap::new();
        for f in project.flows.iter().filter(|f| enabled(f)) {
            let tz = f.config.trigger.timezone.as_deref().unwrap_or("UTC");
            for (reconcile, schedule) in [(false, &f.schedule), (true, &f.reconcile_schedule)] {
                let Some(schedule) = schedule else {
                    continue;
                };
                let key = (f.id.clone(), reconcile);
                let source = format!("{} {tz}", schedule.source());
                let entry = match self.entries.remove(&key) {
                    Some(e) if e.source == source => e,
                    _ => Entry {
                        next: schedule.next_after(now),
                        source,
                        schedule: schedule.clone(),
                    },
                };
                kept.insert(key, entry);
            }
        }
        self.entries = kept;
    }

    /// The schedules due at `now`, each planned again after `now`. Firings missed while the
    /// daemon was busy or asleep are not caught up one by one: one run covers them.
    /// Each comes with the firing it stands for, which every node computes alike.
    fn due(&mut self, now: DateTime<Utc>) -> Vec<(String, bool, DateTime<Utc>)> {
        let mut out = Vec::new();
        for ((flow, reconcile), e) in self.entries.iter_mut() {
            if let Some(t) = e.next.filter(|t| *t <= now) {
                out.push((flow.clone(), *reconcile, t));
                e.next = e.schedule.next_after(now);
            }
        }
        out
    }

    /// The next firing of a flow's schedule.
    pub fn next(&self, flow: &str, reconcile: bool) -> Option<DateTime<Utc>> {
        self.entries
            .get(&(flow.to_string(), reconcile))
            .and_then(|e| e.next)
    }

    /// The earliest next firing.
    pub fn next_wake(&self) -> Option<DateTime<Utc>> {
        self.entries.values().filter_map(|e| e.next).min()
    }
}

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
                .config
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

    /// Fires schedules until shutdown, sleeping on the clock in between.
    pub async fn run_scheduler(self: Arc<Self>) {
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
}
