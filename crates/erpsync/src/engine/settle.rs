//! Settling by hand a write whose outcome is unknown and that no run can settle: the target
//! can neither be searched nor de-duplicates by key, so only a person who checked it knows
//! whether it arrived.

use chrono::{DateTime, Utc};

use crate::compile::Project;
use crate::compile::types::normalize;
use crate::state::{Binding, FlowName, JournalEntry, RecordKey, Scope, StateStoreError, Store};

/// What the person found in the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// The record is there, with this id: bind it, never send it again.
    Sent { target_id: String },
    /// The record is not there: forget the write, so it is sent again.
    NotSent,
}

/// A pending write that could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum PendingSettleError {
    #[error("unknown flow `{0}`")]
    UnknownFlow(String),
    #[error("flow `{flow}` has no pending write of `{key}`")]
    NothingPending { flow: String, key: String },
    #[error(transparent)]
    State(#[from] StateStoreError),
}

/// Settles the pending writes of one record of a flow; returns the entries settled.
pub async fn settle_pending(
    project: &Project,
    store: &Store,
    now: DateTime<Utc>,
    flow_id: &str,
    key: &str,
    settlement: &Settlement,
) -> Result<Vec<JournalEntry>, PendingSettleError> {
    let flow = project
        .flow(flow_id)
        .ok_or_else(|| PendingSettleError::UnknownFlow(flow_id.to_string()))?;
    let pending = store
        .journal
        .journal_pending(Some(FlowName::new(&flow.id)))
        .await?;
    // The journal holds normalised keys; accept the key as typed or as the flow normalises it.
    let normalised = normalize(key, &flow.normalize);
    let key = if pending.iter().any(|e| e.key == key) {
        key.to_string()
    } else {
        normalised
    };
    let entries: Vec<JournalEntry> = pending.into_iter().filter(|e| e.key == key).collect();
    let Some(first) = entries.first() else {
        return Err(PendingSettleError::NothingPending {
            flow: flow.id.clone(),
            key,
        });
    };
    match settlement {
        Settlement::Sent { target_id } => {
            let scope = Scope::new(&flow.entity, &flow.from, &flow.to);
            let mut b = store
                .bindings
                .bindings(&scope, &[RecordKey::new(&key)])
                .await?
                .remove(&key)
                .unwrap_or_else(|| Binding {
                    key: key.clone(),
                    ..Default::default()
                });
            // No base is known for the target side: what was sent is native, not canonical.
            // An update flow compares against none and brings the target up to date once.
            b.set_id(scope.side_of(&first.target), target_id.clone());
            // The source record kept with the write's failure names its id there, so the
            // flow's post-actions (locking the order) can run when it is next read.
            let source = if first.target == flow.from {
                &flow.to
            } else {
                &flow.from
            };
            let source_side = scope.side_of(source);
            if b.id(source_side).is_none()
                && let Some(f) = store
                    .failures
                    .failures(Some(FlowName::new(&flow.id)))
                    .await?
                    .into_iter()
                    .find(|f| f.key == key)
                && let Some(id) = project.systems[source].entities[&flow.entity]
                    .id
                    .of(&f.source_record)
            {
                b.set_id(source_side, id);
            }
            if flow.export_once && b.exported_at.is_none() {
                b.exported_at = Some(now);
            }
            store
                .journal
                .journal_settle(
                    FlowName::new(&flow.id),
                    RecordKey::new(&key),
                    Some((&scope, &b)),
                )
                .await?;
            // Settled: the failure kept for the in-doubt write is resolved.
            store
                .failures
                .clear_failure(FlowName::new(&flow.id), RecordKey::new(&key))
                .await?;
        }
        Settlement::NotSent => {
            // The failure kept for the write stays: `failures retry` (or a run that reads
            // the record again) sends it.
            store
                .journal
                .journal_settle(FlowName::new(&flow.id), RecordKey::new(&key), None)
                .await?;
        }
    }
    Ok(entries)
}
