//! The journal of a multi-step write: the steps that must not be sent twice are recorded
//! before they are sent and with their answer after, in the payload of the write's journal
//! entry, so a crash or an unknown outcome between steps resumes where the write stopped.

use serde_json::{Value, json};

use crate::connector::{StepAnswer, StepLog, StepLogError};
use crate::state::Store;

/// A journal entry's payload for a multi-step write:
/// `{"record": …, "id": …, "steps": {"sent": […], "answered": {NAME: answer}}}`.
pub(super) fn envelope(record: Value, id: Option<&str>) -> Value {
    json!({
        "record": record,
        "id": id,
        "steps": {"sent": [], "answered": {}},
    })
}

/// The record payload of a journal entry of a multi-step write.
pub(super) fn record_of(payload: &Value) -> Value {
    payload.get("record").cloned().unwrap_or(Value::Null)
}

/// The id a multi-step update was sent for.
pub(super) fn id_of(payload: &Value) -> Option<String> {
    payload
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// A `StepLog` kept in one journal entry.
pub(super) struct StepJournal<'s> {
    store: &'s Store,
    id: i64,
    payload: Value,
}

impl<'s> StepJournal<'s> {
    pub(crate) fn new(store: &'s Store, id: i64, payload: Value) -> Self {
        StepJournal { store, id, payload }
    }

    fn answers(&self) -> impl Iterator<Item = StepAnswer> + '_ {
        self.payload
            .pointer("/steps/answered")
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(|v| serde_json::from_value(v.clone()).ok())
    }

    /// Whether a step already wrote something (a journaled step that succeeded, or one sent
    /// whose outcome is unknown): the write cannot be forgotten as if nothing happened.
    pub(crate) fn wrote(&self) -> bool {
        let sent = self
            .payload
            .pointer("/steps/sent")
            .and_then(Value::as_array)
            .is_some_and(|s| {
                s.iter().filter_map(Value::as_str).any(|n| {
                    self.payload
                        .pointer(&format!("/steps/answered/{n}"))
                        .is_none()
                })
            });
        sent || self.answers().any(|a| !a.failed)
    }

    async fn save(&self) -> Result<(), StepLogError> {
        self.store
            .journal
            .journal_progress(self.id, &self.payload)
            .await
            .map_err(|e| StepLogError(e.into()))
    }
}

#[async_trait::async_trait]
impl StepLog for StepJournal<'_> {
    fn answered_before(&self, step: &str) -> Option<StepAnswer> {
        let v = self.payload.pointer("/steps/answered")?.get(step)?;
        serde_json::from_value(v.clone()).ok()
    }

    fn sent_before(&self, step: &str) -> bool {
        self.payload
            .pointer("/steps/sent")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|n| n == step))
    }

    async fn sending(&mut self, step: &str) -> Result<(), StepLogError> {
        if self.sent_before(step) {
            return Ok(());
        }
        if let Some(sent) = self
            .payload
            .pointer_mut("/steps/sent")
            .and_then(Value::as_array_mut)
        {
            sent.push(Value::String(step.to_string()));
        }
        self.save().await
    }

    async fn answered(&mut self, step: &str, answer: &StepAnswer) -> Result<(), StepLogError> {
        let a = serde_json::to_value(answer).map_err(|e| StepLogError(e.into()))?;
        if let Some(m) = self
            .payload
            .pointer_mut("/steps/answered")
            .and_then(Value::as_object_mut)
        {
            m.insert(step.to_string(), a);
        }
        self.save().await
    }
}
