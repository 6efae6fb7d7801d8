//! The failures role on PostgreSQL: failed records kept for retry.

use async_trait::async_trait;

use super::PostgresStore;
use super::rows::{FAILURE_COLS, row_failure};
use crate::state::store::Failures;
use crate::state::{Failure, FlowName, RecordKey, Result, StateWrite};

#[async_trait]
impl Failures for PostgresStore {
    async fn put_failure(&self, failure: &Failure) -> Result<i64> {
        self.write(None, &StateWrite::PutFailure(failure.clone()))
            .await
    }

    async fn clear_failure(&self, flow: FlowName<'_>, key: RecordKey<'_>) -> Result<()> {
        let flow = flow.as_str();
        let key = key.as_str();
        let w = StateWrite::ClearFailure {
            flow: flow.to_string(),
            key: key.to_string(),
        };
        self.write(None, &w).await.map(drop)
    }

    async fn failures(&self, flow: Option<FlowName<'_>>) -> Result<Vec<Failure>> {
        let flow = flow.map(|x| x.as_str());
        let c = self.pool.get().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {FAILURE_COLS} FROM failures
                     WHERE ($1::text IS NULL OR flow = $1) ORDER BY id"
                ),
                &[&flow],
            )
            .await?;
        rows.iter().map(row_failure).collect()
    }

    async fn failure(&self, id: i64) -> Result<Option<Failure>> {
        let c = self.pool.get().await?;
        c.query_opt(
            &format!("SELECT {FAILURE_COLS} FROM failures WHERE id = $1"),
            &[&id],
        )
        .await?
        .as_ref()
        .map(row_failure)
        .transpose()
    }

    async fn discard_failure(&self, id: i64) -> Result<bool> {
        let c = self.pool.get().await?;
        Ok(c.execute("DELETE FROM failures WHERE id = $1", &[&id])
            .await?
            > 0)
    }
}
