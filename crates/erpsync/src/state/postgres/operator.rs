//! The PostgreSQL side of the operator's state (see `state::operator`): flow switches and the
//! per-record lines of runs, in a migration step of their own.

use serde_json::Value;
use tokio_postgres::Row;

use super::PostgresStore;
use super::rows::row_journal;
use crate::state::operator::{FlowSwitch, RUN_LINES_RUNS_KEPT, RunLine};
use crate::state::{JournalEntry, JournalState, Result, StateStoreError};

const LINE_COLS: &str = "run_id, flow, key, decision, target, changes, reason";

fn row_line(r: &Row) -> Result<RunLine> {
    let changes: Option<String> = r.try_get(5)?;
    Ok(RunLine {
        run_id: r.try_get(0)?,
        flow: r.try_get(1)?,
        key: r.try_get(2)?,
        decision: r.try_get(3)?,
        target: r.try_get(4)?,
        changes: changes.and_then(|c| serde_json::from_str(&c).ok()),
        reason: r.try_get(6)?,
    })
}

impl PostgresStore {
    pub(super) async fn op_flow_switches(&self) -> Result<Vec<FlowSwitch>> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT flow, enabled, changed_at, changed_by FROM flow_switches ORDER BY flow",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(FlowSwitch {
                    flow: r.try_get(0)?,
                    enabled: r.try_get(1)?,
                    changed_at: r.try_get(2)?,
                    changed_by: r.try_get(3)?,
                })
            })
            .collect()
    }

    pub(super) async fn op_set_flow_switch(&self, s: &FlowSwitch) -> Result<()> {
        let c = self.pool.get().await?;
        c.execute(
            "INSERT INTO flow_switches (flow, enabled, changed_at, changed_by)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (flow) DO UPDATE SET enabled = EXCLUDED.enabled,
                 changed_at = EXCLUDED.changed_at, changed_by = EXCLUDED.changed_by",
            &[&s.flow, &s.enabled, &s.changed_at, &s.changed_by],
        )
        .await?;
        Ok(())
    }

    pub(super) async fn op_put_run_lines(&self, lines: &[RunLine]) -> Result<()> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let stmt = tx
            .prepare(
                "INSERT INTO run_lines (run_id, flow, key, decision, target, changes, reason)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .await?;
        for l in lines {
            let changes = l.changes.as_ref().map(Value::to_string);
            tx.execute(
                &stmt,
                &[
                    &l.run_id,
                    &l.flow,
                    &l.key,
                    &l.decision,
                    &l.target,
                    &changes,
                    &l.reason,
                ],
            )
            .await?;
        }
        tx.execute(
            "DELETE FROM run_lines WHERE run_id <
                 (SELECT COALESCE(MIN(id), 0) FROM
                     (SELECT id FROM runs ORDER BY id DESC LIMIT $1) newest)",
            &[&RUN_LINES_RUNS_KEPT],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn op_run_lines(&self, run_id: i64) -> Result<Vec<RunLine>> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                &format!("SELECT {LINE_COLS} FROM run_lines WHERE run_id = $1 ORDER BY seq"),
                &[&run_id],
            )
            .await?;
        rows.iter().map(row_line).collect()
    }

    pub(super) async fn op_run_lines_of_key(
        &self,
        key: &str,
        limit: usize,
    ) -> Result<Vec<RunLine>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let c = self.pool.get().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {LINE_COLS} FROM run_lines WHERE key = $1
                     ORDER BY run_id DESC, seq LIMIT $2"
                ),
                &[&key, &limit],
            )
            .await?;
        rows.iter().map(row_line).collect()
    }

    pub(super) async fn op_journal_of_key(&self, key: &str) -> Result<Vec<JournalEntry>> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT id, flow, key, target, operation, idempotency_key, payload, created_at, state
                 FROM journal WHERE key = $1 ORDER BY id",
                &[&key],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let mut e = row_journal(r)?;
                let state: String = r.try_get(8)?;
                e.state = match state.as_str() {
                    "pending" => JournalState::Pending,
                    "done" => JournalState::Done,
                    "failed" => JournalState::Failed,
                    other => {
                        return Err(StateStoreError::Corrupt(format!("journal state `{other}`")));
                    }
                };
                Ok(e)
            })
            .collect()
    }
}
