//! The journal role on PostgreSQL: the intent and outcome of every write, for exactly-once.

use async_trait::async_trait;
use serde_json::Value;

use super::PostgresStore;
use super::rows::{owned_binding, row_journal};
use crate::state::store::Journal;
use crate::state::{
    Binding, FlowName, JournalEntry, JournalState, RecordKey, Result, Scope, StateWrite,
};

#[async_trait]
impl Journal for PostgresStore {
    async fn journal_begin(&self, entry: &JournalEntry) -> Result<i64> {
        self.write(None, &StateWrite::JournalBegin(entry.clone()))
            .await
    }

    async fn journal_finish(
        &self,
        id: i64,
        state: JournalState,
        binding: Option<(&Scope, &Binding)>,
    ) -> Result<()> {
        let w = StateWrite::JournalFinish(id, state, owned_binding(binding));
        self.write(None, &w).await.map(drop)
    }

    async fn journal_progress(&self, id: i64, payload: &Value) -> Result<()> {
        let w = StateWrite::JournalProgress(id, payload.clone());
        self.write(None, &w).await.map(drop)
    }

    async fn journal_pending(&self, flow: Option<FlowName<'_>>) -> Result<Vec<JournalEntry>> {
        let flow = flow.map(|x| x.as_str());
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT id, flow, key, target, operation, idempotency_key, payload, created_at
                 FROM journal WHERE ($1::text IS NULL OR flow = $1) AND state = 'pending'
                 ORDER BY id",
                &[&flow],
            )
            .await?;
        rows.iter().map(row_journal).collect()
    }

    async fn journal_settle(
        &self,
        flow: FlowName<'_>,
        key: RecordKey<'_>,
        binding: Option<(&Scope, &Binding)>,
    ) -> Result<usize> {
        let flow = flow.as_str();
        let key = key.as_str();
        let w = StateWrite::JournalSettle {
            flow: flow.to_string(),
            key: key.to_string(),
            binding: owned_binding(binding),
        };
        Ok(usize::try_from(self.write(None, &w).await?).unwrap_or(0))
    }

    async fn journal_of_key(&self, key: RecordKey<'_>) -> Result<Vec<JournalEntry>> {
        let key = key.as_str();
        self.op_journal_of_key(key).await
    }
}
