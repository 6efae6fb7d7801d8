//! The runs role on PostgreSQL: run history and its per-record lines, flow switches, and
//! what was last seen of each system.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::PostgresStore;
use super::rows::{RUN_COLS, row_run};
use crate::state::operator::{FlowSwitch, RunLine};
use crate::state::store::Runs;
use crate::state::{
    FlowName, Instance, RecordKey, Result, RunRecord, StateStoreError, StateWrite, SystemHealth,
};

#[async_trait]
impl Runs for PostgresStore {
    async fn run_start(
        &self,
        flow: FlowName<'_>,
        kind: &str,
        at: DateTime<Utc>,
        instance: &Instance,
    ) -> Result<i64> {
        let flow = flow.as_str();
        let w = StateWrite::RunStart {
            flow: flow.to_string(),
            kind: kind.to_string(),
            at,
            instance: instance.clone(),
        };
        self.write(None, &w).await
    }

    async fn run_finish(
        &self,
        id: i64,
        at: DateTime<Utc>,
        status: &str,
        counts: &Value,
        error: Option<&str>,
    ) -> Result<()> {
        let w = StateWrite::RunFinish {
            id,
            at,
            status: status.to_string(),
            counts: counts.clone(),
            error: error.map(str::to_string),
        };
        self.write(None, &w).await.map(drop)
    }

    async fn runs(&self, flow: Option<FlowName<'_>>, limit: usize) -> Result<Vec<RunRecord>> {
        let flow = flow.map(|x| x.as_str());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let c = self.pool.get().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {RUN_COLS} FROM runs WHERE ($1::text IS NULL OR flow = $1)
                     ORDER BY id DESC LIMIT $2"
                ),
                &[&flow, &limit],
            )
            .await?;
        rows.iter().map(row_run).collect()
    }

    async fn run(&self, id: i64) -> Result<Option<RunRecord>> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt(
                &format!("SELECT {RUN_COLS} FROM runs WHERE id = $1"),
                &[&id],
            )
            .await?;
        row.as_ref().map(row_run).transpose()
    }

    async fn abandon_runs(
        &self,
        flow: Option<FlowName<'_>>,
        of: Option<&str>,
        keep: &str,
        at: DateTime<Utc>,
        why: &str,
    ) -> Result<usize> {
        let flow = flow.map(|x| x.as_str());
        let c = self.pool.get().await?;
        let n = c
            .execute(
                "UPDATE runs SET status = 'abandoned', finished_at = $4, error = $5
                 WHERE status = 'running' AND ($1::text IS NULL OR flow = $1)
                   AND ($2::text IS NULL OR instance = $2) AND instance IS DISTINCT FROM $3",
                &[&flow, &of, &keep, &at, &why],
            )
            .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    // The operator's state: see `state::operator` and `operator.rs`.
    async fn put_run_lines(&self, lines: &[RunLine]) -> Result<()> {
        self.op_put_run_lines(lines).await
    }

    async fn run_lines(&self, run_id: i64) -> Result<Vec<RunLine>> {
        self.op_run_lines(run_id).await
    }

    async fn run_lines_of_key(&self, key: RecordKey<'_>, limit: usize) -> Result<Vec<RunLine>> {
        let key = key.as_str();
        self.op_run_lines_of_key(key, limit).await
    }

    async fn flow_switches(&self) -> Result<Vec<FlowSwitch>> {
        self.op_flow_switches().await
    }

    async fn set_flow_switch(&self, switch: &FlowSwitch) -> Result<()> {
        self.op_set_flow_switch(switch).await
    }

    async fn put_system_health(&self, h: &SystemHealth) -> Result<()> {
        let health =
            serde_json::to_string(h).map_err(|e| StateStoreError::Corrupt(e.to_string()))?;
        let c = self.pool.get().await?;
        c.execute(
            "INSERT INTO system_health (system, health, checked_at) VALUES ($1, $2, $3)
             ON CONFLICT (system) DO UPDATE SET health = excluded.health, checked_at = excluded.checked_at",
            &[&h.system, &health, &h.checked_at],
        )
        .await?;
        Ok(())
    }

    async fn system_health(&self) -> Result<Vec<SystemHealth>> {
        let c = self.pool.get().await?;
        c.query("SELECT health FROM system_health ORDER BY system", &[])
            .await?
            .iter()
            .map(|r| {
                let text: String = r.try_get(0)?;
                serde_json::from_str(&text).map_err(|e| StateStoreError::Corrupt(e.to_string()))
            })
            .collect()
    }
}
