//! The switches as the state store has them, and whether a flow is on given them.

use std::collections::HashMap;

use crate::compile::Flow;
use crate::redact::redact;
use crate::state::StateStore;

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
    flow.is_on(switches)
}
