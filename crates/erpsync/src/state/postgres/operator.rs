//! The PostgreSQL side of the operator's state (see `state::operator`): flow switches and the
//! per-record lines of runs, in a migration step of their own.

use postgres::Row;
use serde_json::Value;

use super::PostgresStore;
use crate::state::operator::{FlowSwitch, RUN_LINES_RUNS_KEPT, RunLine};
use crate::state::{JournalEntry, JournalState, Result, RunRecord, StateStoreError};

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
    pub(super) fn op_flow_switches(&self) -> Result<Vec<FlowSwitch>> {
        self.call(|c| {
            let rows = c.query(
                "SELECT flow, enabled, changed_at, changed_by FROM flow_switches ORDER BY flow",
                &[],
            )?;
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
        })
    }

    pub(super) fn op_set_flow_switch(&self, s: &FlowSwitch) -> Result<()> {
        let s = s.clone();
        self.call(move |c| {
            c.execute(
                "INSERT INTO flow_switches (flow, enabled, changed_at, changed_by)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (flow) DO UPDATE SET enabled = EXCLUDED.enabled,
                     changed_at = EXCLUDED.changed_at, changed_by = EXCLUDED.changed_by",
                &[&s.flow, &s.enabled, &s.changed_at, &s.changed_by],
            )?;
            Ok(())
        })
    }

    pub(super) fn op_put_run_lines(&self, lines: &[RunLine]) -> Result<()> {
        let lines = lines.to_vec();
        self.call(move |c| {
            let mut tx = c.transaction()?;
            let stmt = tx.prepare(
                "INSERT INTO run_lines (run_id, flow, key, decision, target, changes, reason)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )?;
            for l in &lines {
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
                )?;
            }
            tx.execute(
                "DELETE FROM run_lines WHERE run_id <
                     (SELECT COALESCE(MIN(id), 0) FROM
                         (SELECT id FROM runs ORDER BY id DESC LIMIT $1) newest)",
                &[&RUN_LINES_RUNS_KEPT],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    pub(super) fn op_run_lines(&self, run_id: i64) -> Result<Vec<RunLine>> {
        self.call(move |c| {
            let rows = c.query(
                &format!("SELECT {LINE_COLS} FROM run_lines WHERE run_id = $1 ORDER BY seq"),
                &[&run_id],
            )?;
            rows.iter().map(row_line).collect()
        })
    }

    pub(super) fn op_run_lines_of_key(&self, key: &str, limit: usize) -> Result<Vec<RunLine>> {
        let key = key.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |c| {
            let rows = c.query(
                &format!(
                    "SELECT {LINE_COLS} FROM run_lines WHERE key = $1
                     ORDER BY run_id DESC, seq LIMIT $2"
                ),
                &[&key, &limit],
            )?;
            rows.iter().map(row_line).collect()
        })
    }

    pub(super) fn op_run(&self, id: i64) -> Result<Option<RunRecord>> {
        self.call(move |c| {
            let row = c.query_opt(
                &format!("SELECT {} FROM runs WHERE id = $1", super::RUN_COLS),
                &[&id],
            )?;
            row.as_ref().map(super::row_run).transpose()
        })
    }

    pub(super) fn op_journal_of_key(&self, key: &str) -> Result<Vec<JournalEntry>> {
        let key = key.to_string();
        self.call(move |c| {
            let rows = c.query(
                "SELECT id, flow, key, target, operation, idempotency_key, payload, created_at, state
                 FROM journal WHERE key = $1 ORDER BY id",
                &[&key],
            )?;
            rows.iter()
                .map(|r| {
                    let mut e = super::row_journal(r)?;
                    let state: String = r.try_get(8)?;
                    e.state = match state.as_str() {
                        "pending" => JournalState::Pending,
                        "done" => JournalState::Done,
                        "failed" => JournalState::Failed,
                        other => {
                            return Err(StateStoreError::Corrupt(format!(
                                "journal state `{other}`"
                            )));
                        }
                    };
                    Ok(e)
                })
                .collect()
        })
    }
}
