//! The switches as the state store has them (`Flow::is_on` says what they mean for a flow).

use std::collections::HashMap;

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
