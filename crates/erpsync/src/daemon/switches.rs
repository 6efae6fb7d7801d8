//! Flows switched on and off by a person (the console, the admin API). The switch lives in
//! the state store, so it outlives restarts and reloads and every node sharing the state sees
//! it; it wins over the flow file's `enabled`. The daemon keeps a copy for planning and reads
//! the store again when a schedule fires, so a switch made on another node counts too.

use std::collections::HashMap;

use crate::compile::{Flow, Project};
use crate::redact::redact;
use crate::state::{FlowSwitch, StateStoreError};

use super::core::Daemon;

mod stored;

pub(crate) use stored::read_switches;

/// A switch that could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FlowSwitchError {
    #[error("unknown flow `{0}`")]
    UnknownFlow(String),
    #[error(transparent)]
    State(#[from] StateStoreError),
}

impl Daemon {
    /// Whether a flow is on now, as the daemon last read the switches.
    pub(crate) fn flow_enabled(&self, flow: &Flow) -> bool {
        flow.is_on(&self.switches.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether a flow is on by the store itself, for a run about to start: another node may
    /// have switched it since.
    pub(super) async fn flow_enabled_now(&self, flow: &Flow) -> bool {
        let fresh = match self.store.runs.flow_switches().await {
            Ok(list) => list.into_iter().map(|s| (s.flow, s.enabled)).collect(),
            Err(e) => {
                tracing::warn!(error = %redact(&e.to_string()), "cannot read the flow switches; using the last known");
                return self.flow_enabled(flow);
            }
        };
        let on = flow.is_on(&fresh);
        *self.switches.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        on
    }

    /// The switches on record, as last read.
    pub(crate) fn flow_switches(&self) -> HashMap<String, bool> {
        self.switches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Switches a flow on or off, for good: stored, then planned (a flow switched off keeps
    /// no next firing; a run going on finishes).
    pub(crate) async fn switch_flow(
        &self,
        flow_id: &str,
        enabled: bool,
        by: &str,
    ) -> Result<FlowSwitch, FlowSwitchError> {
        let engine = self.engine();
        if engine.project.flow(flow_id).is_none() {
            return Err(FlowSwitchError::UnknownFlow(flow_id.to_string()));
        }
        let switch = FlowSwitch {
            flow: flow_id.to_string(),
            enabled,
            changed_at: self.clock.now(),
            changed_by: by.to_string(),
        };
        self.store.runs.set_flow_switch(&switch).await?;
        self.switches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(flow_id.to_string(), enabled);
        self.replan(&engine.project);
        tracing::info!(flow = flow_id, enabled, by, "flow switched");
        Ok(switch)
    }

    /// Plans the schedules of the flows that are on.
    pub(super) fn replan(&self, project: &Project) {
        let switches = self.flow_switches();
        let now = self.clock.now();
        self.plan.lock().unwrap_or_else(|e| e.into_inner()).sync(
            project,
            |f| f.is_on(&switches),
            now,
        );
        self.replanned.notify_waiters();
    }
}
