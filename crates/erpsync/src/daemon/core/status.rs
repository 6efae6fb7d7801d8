//! What the daemon knows of its flows (runs, errors, schedules, leases), for the admin API,
//! the console and the metrics page.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Cause, Daemon};
use crate::engine::Counts;
use crate::redact::redact;
use crate::state::Lease;

/// The last finished run of a flow.
#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    pub(crate) kind: String,
    pub(crate) cause: Cause,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) finished_at: DateTime<Utc>,
    /// `ok`, `partial` (some records failed) or `error`.
    pub status: String,
    pub(crate) counts: Counts,
    pub(crate) error: Option<String>,
}

/// A flow as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FlowStatus {
    pub id: String,
    pub(crate) description: Option<String>,
    /// Whether the flow is on: its switch when a person set one, else its flow file.
    pub enabled: bool,
    /// The switch a person set (console, admin API), if any.
    pub switched: Option<bool>,
    pub(crate) from: String,
    pub(crate) to: String,
    pub schedule: Option<String>,
    pub(crate) reconcile_schedule: Option<String>,
    pub(crate) webhook: Option<String>,
    pub running_since: Option<DateTime<Utc>>,
    pub next_run: Option<DateTime<Utc>>,
    pub next_reconcile: Option<DateTime<Utc>>,
    pub last_run: Option<LastRun>,
    pub last_error: Option<String>,
    pub(crate) last_error_at: Option<DateTime<Utc>>,
    pub(crate) skipped_runs: u64,
    pub(crate) queued_keys: usize,
    /// The node running the flow now, by the flow's lease in the state database (any node
    /// sharing it, this one included); absent when no node holds it, or when the database
    /// cannot say (a warning is logged).
    pub lease_holder: Option<String>,
    /// Until when that node holds the lease unless it renews it.
    pub lease_until: Option<DateTime<Utc>>,
}

impl Daemon {
    /// Every flow with what the daemon knows of it.
    pub async fn flow_statuses(&self) -> Vec<FlowStatus> {
        // Asked before the locks are taken: the store may make us wait.
        let now = self.clock.now();
        let leases: HashMap<String, Lease> = match self.store.coordination.leases().await {
            Ok(list) => list
                .into_iter()
                .filter(|l| l.held_at(now))
                .filter_map(|l| Some((l.flow()?.to_string(), l)))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %redact(&e.to_string()), "cannot read the flow leases");
                HashMap::new()
            }
        };
        let switches = self.flow_switches();
        let engine = self.engine();
        let plan = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        let flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        engine
            .project
            .flows
            .iter()
            .map(|f| {
                let s = flows.get(&f.id);
                FlowStatus {
                    id: f.id.clone(),
                    description: f.description.clone(),
                    enabled: f.is_on(&switches),
                    switched: switches.get(&f.id).copied(),
                    from: f.from.clone(),
                    to: f.to.clone(),
                    schedule: f.schedule.as_ref().map(|s| s.source().to_string()),
                    reconcile_schedule: f
                        .reconcile_schedule
                        .as_ref()
                        .map(|s| s.source().to_string()),
                    webhook: f.webhook.clone(),
                    running_since: s.and_then(|s| s.running.as_ref().map(|r| r.0)),
                    next_run: plan.next(&f.id, false),
                    next_reconcile: plan.next(&f.id, true),
                    last_run: s.and_then(|s| s.last.clone()),
                    last_error: s.and_then(|s| s.last_error.as_ref().map(|e| e.1.clone())),
                    last_error_at: s.and_then(|s| s.last_error.as_ref().map(|e| e.0)),
                    skipped_runs: s.map_or(0, |s| s.skipped),
                    queued_keys: s.map_or(0, |s| s.pending.len()),
                    lease_holder: leases.get(&f.id).map(|l| l.holder.clone()),
                    lease_until: leases.get(&f.id).map(|l| l.expires_at),
                }
            })
            .collect()
    }

    /// Failures waiting per flow, for metrics.
    pub(crate) async fn failures_pending(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for f in &self.engine().project.flows {
            out.insert(f.id.clone(), 0);
        }
        match self.store.failures.failures(None).await {
            Ok(list) => {
                for f in list {
                    *out.entry(f.flow).or_default() += 1;
                }
            }
            Err(e) => tracing::warn!(error = %redact(&e.to_string()), "cannot count failures"),
        }
        out
    }

    /// The metrics page.
    pub(crate) async fn render_metrics(&self) -> String {
        let mut out = self.metrics.render(
            &self.engine(),
            &self.failures_pending().await,
            self.in_flight(),
        );
        let label = self.node_id().replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str(&format!(
            "# HELP erpsync_node_id_clash Other live processes that use this node's `daemon.node_id`.\n\
             # TYPE erpsync_node_id_clash gauge\n\
             erpsync_node_id_clash{{node=\"{label}\"}} {}\n",
            self.node_clashes().len()
        ));
        out
    }
}
