//! The SQLite side of the operator's state (see `state::operator`): flow switches and the
//! per-record lines of runs, in a migration step of their own.

use rusqlite::params;
use serde_json::Value;

use super::{SqliteStore, parse_ts, ts};
use crate::state::operator::{FlowSwitch, RUN_LINES_RUNS_KEPT, RunLine};
use crate::state::{JournalEntry, Result, RunRecord};

fn json_text(s: Option<String>) -> Option<Value> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

type RawLine = (
    i64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn row_line(r: &rusqlite::Row) -> rusqlite::Result<RawLine> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn line((run_id, flow, key, decision, target, changes, reason): RawLine) -> RunLine {
    RunLine {
        run_id,
        flow,
        key,
        decision,
        target,
        changes: json_text(changes),
        reason,
    }
}

impl SqliteStore {
    pub(super) fn op_flow_switches(&self) -> Result<Vec<FlowSwitch>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT flow, enabled, changed_at, changed_by FROM flow_switches ORDER BY flow",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, bool>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        rows.map(|row| {
            let (flow, enabled, at, by) = row?;
            Ok(FlowSwitch {
                flow,
                enabled,
                changed_at: parse_ts(&at)?,
                changed_by: by,
            })
        })
        .collect()
    }

    pub(super) fn op_set_flow_switch(&self, s: &FlowSwitch) -> Result<()> {
        self.conn()?.execute(
            "INSERT INTO flow_switches (flow, enabled, changed_at, changed_by) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (flow) DO UPDATE SET enabled = excluded.enabled,
                 changed_at = excluded.changed_at, changed_by = excluded.changed_by",
            params![s.flow, s.enabled, ts(s.changed_at), s.changed_by],
        )?;
        Ok(())
    }

    pub(super) fn op_put_run_lines(&self, lines: &[RunLine]) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO run_lines (run_id, flow, key, decision, target, changes, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for l in lines {
                stmt.execute(params![
                    l.run_id,
                    l.flow,
                    l.key,
                    l.decision,
                    l.target,
                    l.changes.as_ref().map(Value::to_string),
                    l.reason
                ])?;
            }
        }
        tx.execute(
            "DELETE FROM run_lines WHERE run_id <
                 (SELECT COALESCE(MIN(id), 0) FROM (SELECT id FROM runs ORDER BY id DESC LIMIT ?1))",
            [RUN_LINES_RUNS_KEPT],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub(super) fn op_run_lines(&self, run_id: i64) -> Result<Vec<RunLine>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT run_id, flow, key, decision, target, changes, reason FROM run_lines
             WHERE run_id = ?1 ORDER BY rowid",
        )?;
        let rows = stmt.query_map([run_id], row_line)?;
        Ok(rows
            .collect::<rusqlite::Result<Vec<_>>>()?
            .into_iter()
            .map(line)
            .collect())
    }

    pub(super) fn op_run_lines_of_key(&self, key: &str, limit: usize) -> Result<Vec<RunLine>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT run_id, flow, key, decision, target, changes, reason FROM run_lines
             WHERE key = ?1 ORDER BY run_id DESC, rowid LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![key, limit as i64], row_line)?;
        Ok(rows
            .collect::<rusqlite::Result<Vec<_>>>()?
            .into_iter()
            .map(line)
            .collect())
    }

    pub(super) fn op_run(&self, id: i64) -> Result<Option<RunRecord>> {
        Ok(super::query_runs(&*self.conn()?, "WHERE id = ?1", [id])?
            .into_iter()
            .next())
    }

    pub(super) fn op_journal_of_key(&self, key: &str) -> Result<Vec<JournalEntry>> {
        super::query_journal(&*self.conn()?, "WHERE key = ?1 ORDER BY id", [key])
    }
}
