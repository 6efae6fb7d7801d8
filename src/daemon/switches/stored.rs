//! The switches as the state store has them, and whether a flow is on given them.

use std::collections::HashMap;

use crate::compile::{Flow, Project};
use crate::redact::redact;
use crate::state::{StateStore, StateStoreError};

/// The switches on record, by flow; an empty map (and a warning) when the store cannot say.
pub(crate) fn read_switches(store: &dyn StateStore) -> HashMap<String, bool> {
    match store.flow_switches() {
        Ok(list) => list.into_iter().map(|s| (s.flow, s.enabled)).collect(),
        Err(e) => {
            tracing::warn!(error = %redact(&e.to_string()), "cannot read the flow switches");
            HashMap::new()
        }
    }
}

/// Whether a flow is on: its switch, else its flow file.
pub(crate) fn enabled_with(switches: &HashMap<String, bool>, flow: &Flow) -> bool {
    switches
        .get(&flow.id)
        .copied()
        .unwrap_or(flow.config.enabled)
}

/// The flows that are on (their switch, else their flow file), for a run of every flow
/// outside the daemon (`run --once`).
pub fn flows_on(project: &Project, store: &dyn StateStore) -> Result<Vec<String>, StateStoreError> {
    let switches: HashMap<String, bool> = store
        .flow_switches()?
        .into_iter()
        .map(|s| (s.flow, s.enabled))
        .collect();
    Ok(project
        .flows
        .iter()
        .filter(|f| enabled_with(&switches, f))
        .map(|f| f.id.clone())
        .collect())
}
