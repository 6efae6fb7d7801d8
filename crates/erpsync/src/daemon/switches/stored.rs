//! The switches as the state store has them (`Flow::is_on` says what they mean for a flow).

use std::collections::HashMap;

use crate::redact::redact;
use crate::state::Store;

/// The switches on record, by flow; an empty map (and a warning) when the store cannot say.
pub(crate) async fn read_switches(store: &Store) -> HashMap<String, bool> {
    match store.runs.flow_switches().await {
        Ok(list) => list.into_iter().map(|s| (s.flow, s.enabled)).collect(),
        Err(e) => {
            tracing::warn!(error = %redact(&e.to_string()), "cannot read the flow switches");
            HashMap::new()
        }
    }
}
