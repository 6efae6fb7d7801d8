//! The embedded SQLite state store: one file, WAL mode, every call one transaction.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

mod operator;

use super::operator::{FlowSwitch, RunLine};
use super::{
    Binding, Failure, JournalEntry, JournalState, Lease, Result, RunRecord, Scope, StateStore,
    StateStoreError, SystemHealth, json_column as json, keep_since,
};

/// Migration step "known absent": the keys a full read of a flow's target lacked, and when
/// it was read (see `StateStore::is_absent`). A table of its own, created when missing, so
/// a state file made before it opens as it is.
const MIGRATION_KNOWN_ABSENT: &str = "
CREATE TABLE IF NOT EXISTS known_absent (
    flow TEXT NOT NULL,
    key TEXT NOT NULL,
    read_at TEXT NOT NULL,
    PRIMARY KEY (flow, key)
);
";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bindings (
    entity TEXT NOT NULL, sys_a TEXT NOT NULL, sys_b TEXT NOT NULL, key TEXT NOT NULL,
    id_a TEXT, id_b TEXT, base_a TEXT, base_b TEXT, exported_at TEXT, parked TEXT,
    actions_done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (entity, sys_a, sys_b, key)
);
CREATE INDEX IF NOT EXISTS bindings_id_a ON bindings (entity, sys_a, sys_b, id_a);
CREATE INDEX IF NOT EXISTS bindings_id_b ON bindings (entity, sys_a, sys_b, id_b);
CREATE TABLE IF NOT EXISTS cursors (flow TEXT PRIMARY KEY, since TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT, flow TEXT NOT NULL, key TEXT NOT NULL,
    target TEXT NOT NULL, operation TEXT NOT NULL, idempotency_key TEXT NOT NULL,
    payload TEXT NOT NULL, state TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_pending ON journal (flow, state);
CREATE TABLE IF NOT EXISTS failures (
    id INTEGER PRIMARY KEY AUTOINCREMENT, flow TEXT NOT NULL, key TEXT NOT NULL,
    source_record TEXT NOT NULL, payload TEXT, error TEXT NOT NULL, status INTEGER,
    response TEXT, attempts INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    UNIQUE (flow, key)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, flow TEXT NOT NULL, kind TEXT NOT NULL,
    started_at TEXT NOT NULL, finished_at TEXT, status TEXT NOT NULL, counts TEXT NOT NULL,
    error TEXT
);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS firings (name TEXT PRIMARY KEY, fired_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    webhook TEXT NOT NULL, id TEXT NOT NULL, received_at TEXT NOT NULL,
    PRIMARY KEY (webhook, id)
);
CREATE INDEX IF NOT EXISTS deliveries_received ON deliveries (received_at);
";

/// A separate step after `SCHEMA`: what was last seen of each system's reachability, the
/// health as JSON.
const SYSTEM_HEALTH_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS system_health (
    system TEXT PRIMARY KEY, health TEXT NOT NULL, checked_at TEXT NOT NULL
);
";

/// State in one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| StateStoreError::Corrupt(format!("timestamp `{s}`: {e}")))
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// A private in-memory store (tests, dry runs without a state file).
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // WAL keeps readers (admin API) from blocking the writer; NORMAL sync is durable
        // across process crashes, which is the failure that matters here.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(SYSTEM_HEALTH_SCHEMA)?;
        conn.execute_batch(operator::OPERATOR_SCHEMA)?;
        conn.execute_batch(MIGRATION_KNOWN_ABSENT)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Failures of one flow (or all), or the one with `id`, in id order.
    fn select_failures(&self, flow: Option<&str>, id: Option<i64>) -> Result<Vec<Failure>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, flow, key, source_record, payload, error, status, response, attempts, created_at, updated_at
             FROM failures WHERE (?1 IS NULL OR flow = ?1) AND (?2 IS NULL OR id = ?2) ORDER BY id",
        )?;
        let rows = stmt.query_map(rusqlite::params![flow, id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<u16>>(6)?,
                r.get::<_, u32>(8)?,
                row_failure(r)?,
            ))
        })?;
        rows.map(|row| {
            let (
                id,
                status,
                attempts,
                [
                    source,
                    payload,
                    error,
                    response,
                    created,
                    updated,
                    flow,
                    key,
                ],
            ) = row?;
            Ok(Failure {
                id,
                flow: flow.unwrap_or_default(),
                key: key.unwrap_or_default(),
                source_record: json(source)?.unwrap_or(Value::Null),
                payload: json(payload)?,
                error: error.unwrap_or_default(),
                status,
                response: json(response)?,
                attempts,
                created_at: parse_ts(created.as_deref().unwrap_or(""))?,
                updated_at: parse_ts(updated.as_deref().unwrap_or(""))?,
            })
        })
        .collect()
    }
}

/// A binding row with its JSON and timestamp columns still as text.
type RawBinding = (Binding, Option<String>, Option<String>, Option<String>);

fn row_binding(row: &rusqlite::Row) -> rusqlite::Result<RawBinding> {
    Ok((
        Binding {
            key: row.get(0)?,
            id_a: row.get(1)?,
            id_b: row.get(2)?,
            base_a: None,
            base_b: None,
            exported_at: None,
            parked: row.get(6)?,
            actions_done: row.get(7)?,
        },
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

fn finish_binding(parts: RawBinding) -> Result<Binding> {
    let (mut b, base_a, base_b, exported) = parts;
    b.base_a = json(base_a)?;
    b.base_b = json(base_b)?;
    b.exported_at = exported.as_deref().map(parse_ts).transpose()?;
    Ok(b)
}

const BINDING_COLS: &str = "key, id_a, id_b, base_a, base_b, exported_at, parked, actions_done";

fn upsert_binding(tx: &Connection, scope: &Scope, b: &Binding) -> Result<()> {
    tx.execute(
        "INSERT INTO bindings (entity, sys_a, sys_b, key, id_a, id_b, base_a, base_b, exported_at, parked, actions_done)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (entity, sys_a, sys_b, key) DO UPDATE SET
           id_a = excluded.id_a, id_b = excluded.id_b, base_a = excluded.base_a,
           base_b = excluded.base_b, exported_at = excluded.exported_at, parked = excluded.parked,
           actions_done = excluded.actions_done",
        params![
            scope.entity,
            scope.a,
            scope.b,
            b.key,
            b.id_a,
            b.id_b,
            b.base_a.as_ref().map(Value::to_string),
            b.base_b.as_ref().map(Value::to_string),
            b.exported_at.map(ts),
            b.parked,
            b.actions_done,
        ],
    )?;
    Ok(())
}

fn row_failure(row: &rusqlite::Row) -> rusqlite::Result<[Option<String>; 8]> {
    Ok([
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(7)?,
        row.get(9)?,
        row.get(10)?,
        row.get(1)?,
        row.get(2)?,
    ])
}

impl StateStore for SqliteStore {
    fn bindings(&self, scope: &Scope, keys: &[String]) -> Result<HashMap<String, Binding>> {
        /// Keys per query: a page of a list is one query, far below SQLite's bound on
        /// parameters.
        const CHUNK: usize = 250;
        let conn = self.conn();
        let mut out = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(CHUNK) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {BINDING_COLS} FROM bindings WHERE entity = ? AND sys_a = ? AND sys_b = ? AND key IN ({marks})"
            ))?;
            let mut args: Vec<&dyn rusqlite::ToSql> = vec![&scope.entity, &scope.a, &scope.b];
            args.extend(chunk.iter().map(|k| k as &dyn rusqlite::ToSql));
            let rows = stmt.query_map(args.as_slice(), row_binding)?;
            for parts in rows {
                let b = finish_binding(parts?)?;
                out.insert(b.key.clone(), b);
            }
        }
        Ok(out)
    }

    fn all_bindings(&self, scope: &Scope) -> Result<Vec<Binding>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {BINDING_COLS} FROM bindings WHERE entity = ?1 AND sys_a = ?2 AND sys_b = ?3 ORDER BY key"
        ))?;
        let rows = stmt.query_map(params![scope.entity, scope.a, scope.b], row_binding)?;
        rows.map(|r| finish_binding(r?)).collect()
    }

    fn binding_count(&self, scope: &Scope) -> Result<usize> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM bindings WHERE entity = ?1 AND sys_a = ?2 AND sys_b = ?3",
            params![scope.entity, scope.a, scope.b],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    fn binding_by_id(&self, scope: &Scope, side_a: bool, id: &str) -> Result<Option<Binding>> {
        let conn = self.conn();
        let col = if side_a { "id_a" } else { "id_b" };
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {BINDING_COLS} FROM bindings WHERE entity = ?1 AND sys_a = ?2 AND sys_b = ?3 AND {col} = ?4"
        ))?;
        stmt.query_row(params![scope.entity, scope.a, scope.b, id], row_binding)
            .optional()?
            .map(finish_binding)
            .transpose()
    }

    fn put_bindings(&self, scope: &Scope, bindings: &[Binding]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for b in bindings {
            upsert_binding(&tx, scope, b)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn cursor(&self, flow: &str) -> Result<Option<DateTime<Utc>>> {
        let conn = self.conn();
        let s: Option<String> = conn
            .query_row("SELECT since FROM cursors WHERE flow = ?1", [flow], |r| {
                r.get(0)
            })
            .optional()?;
        s.as_deref().map(parse_ts).transpose()
    }

    fn is_absent(&self, flow: &str, key: &str, since: DateTime<Utc>) -> Result<bool> {
        let found: Option<i64> = self
            .conn()
            .query_row(
                "SELECT 1 FROM known_absent WHERE flow = ?1 AND key = ?2 AND read_at >= ?3",
                params![flow, key, ts(since)],
                |r| r.get(0),
            )
            .optional()?;
        Ok(found.is_some())
    }

    fn note_absent(&self, flow: &str, key: &str, at: DateTime<Utc>) -> Result<()> {
        self.conn().execute(
            "INSERT INTO known_absent (flow, key, read_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (flow, key) DO UPDATE SET read_at = excluded.read_at",
            params![flow, key, ts(at)],
        )?;
        Ok(())
    }

    fn forget_absent(&self, flow: &str, key: &str) -> Result<()> {
        self.conn().execute(
            "DELETE FROM known_absent WHERE flow = ?1 AND key = ?2",
            params![flow, key],
        )?;
        Ok(())
    }

    fn set_cursor(&self, flow: &str, at: DateTime<Utc>) -> Result<()> {
        self.conn().execute(
            "INSERT INTO cursors (flow, since) VALUES (?1, ?2)
             ON CONFLICT (flow) DO UPDATE SET since = excluded.since",
            params![flow, ts(at)],
        )?;
        Ok(())
    }

    fn journal_begin(&self, e: &JournalEntry) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO journal (flow, key, target, operation, idempotency_key, payload, state, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7)",
            params![
                e.flow,
                e.key,
                e.target,
                e.operation,
                e.idempotency_key,
                e.payload.to_string(),
                ts(e.created_at)
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    fn journal_finish(
        &self,
        id: i64,
        state: JournalState,
        binding: Option<(&Scope, &Binding)>,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let s = match state {
            JournalState::Pending => "pending",
            JournalState::Done => "done",
            JournalState::Failed => "failed",
        };
        if state == JournalState::Pending {
            tx.execute(
                "UPDATE journal SET state = ?2 WHERE id = ?1",
                params![id, s],
            )?;
        } else {
            // Settled writes are not needed any more: keep the journal small.
            tx.execute("DELETE FROM journal WHERE id = ?1", params![id])?;
        }
        if let Some((scope, b)) = binding {
            upsert_binding(&tx, scope, b)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn journal_pending(&self, flow: Option<&str>) -> Result<Vec<JournalEntry>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, flow, key, target, operation, idempotency_key, payload, created_at
             FROM journal WHERE (?1 IS NULL OR flow = ?1) AND state = 'pending' ORDER BY id",
        )?;
        let rows = stmt.query_map([flow], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, flow, key, target, operation, idempotency_key, payload, created) = row?;
            out.push(JournalEntry {
                id,
                flow,
                key,
                target,
                operation,
                idempotency_key,
                payload: serde_json::from_str(&payload)
                    .map_err(|e| StateStoreError::Corrupt(e.to_string()))?,
                state: JournalState::Pending,
                created_at: parse_ts(&created)?,
            });
        }
        Ok(out)
    }

    fn journal_settle(
        &self,
        flow: &str,
        key: &str,
        binding: Option<(&Scope, &Binding)>,
    ) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "DELETE FROM journal WHERE flow = ?1 AND key = ?2 AND state = 'pending'",
            params![flow, key],
        )?;
        if n > 0
            && let Some((scope, b)) = binding
        {
            upsert_binding(&tx, scope, b)?;
        }
        tx.commit()?;
        Ok(n)
    }

    fn put_failure(&self, f: &Failure) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO failures (flow, key, source_record, payload, error, status, response, attempts, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?8)
             ON CONFLICT (flow, key) DO UPDATE SET source_record = excluded.source_record,
               payload = excluded.payload, error = excluded.error, status = excluded.status,
               response = excluded.response, attempts = failures.attempts + 1,
               updated_at = excluded.updated_at",
            params![
                f.flow,
                f.key,
                f.source_record.to_string(),
                f.payload.as_ref().map(Value::to_string),
                f.error,
                f.status,
                f.response.as_ref().map(Value::to_string),
                ts(f.updated_at),
            ],
        )?;
        let id = conn.query_row(
            "SELECT id FROM failures WHERE flow = ?1 AND key = ?2",
            params![f.flow, f.key],
            |r| r.get(0),
        )?;
        Ok(id)
    }

    fn clear_failure(&self, flow: &str, key: &str) -> Result<()> {
        self.conn().execute(
            "DELETE FROM failures WHERE flow = ?1 AND key = ?2",
            params![flow, key],
        )?;
        Ok(())
    }

    fn failures(&self, flow: Option<&str>) -> Result<Vec<Failure>> {
        self.select_failures(flow, None)
    }

    fn failure(&self, id: i64) -> Result<Option<Failure>> {
        Ok(self.select_failures(None, Some(id))?.pop())
    }

    fn discard_failure(&self, id: i64) -> Result<bool> {
        Ok(self
            .conn()
            .execute("DELETE FROM failures WHERE id = ?1", [id])?
            > 0)
    }

    fn run_start(&self, flow: &str, kind: &str, at: DateTime<Utc>) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO runs (flow, kind, started_at, status, counts) VALUES (?1, ?2, ?3, 'running', '{}')",
            params![flow, kind, ts(at)],
        )?;
        Ok(conn.last_insert_rowid())
    }

    fn run_finish(
        &self,
        id: i64,
        at: DateTime<Utc>,
        status: &str,
        counts: &Value,
        error: Option<&str>,
    ) -> Result<()> {
        self.conn().execute(
            "UPDATE runs SET finished_at = ?2, status = ?3, counts = ?4, error = ?5 WHERE id = ?1",
            params![id, ts(at), status, counts.to_string(), error],
        )?;
        Ok(())
    }

    fn runs(&self, flow: Option<&str>, limit: usize) -> Result<Vec<RunRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, flow, kind, started_at, finished_at, status, counts, error FROM runs
             WHERE (?1 IS NULL OR flow = ?1) ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![flow, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, Option<String>>(7)?,
            ))
        })?;
        rows.map(|row| {
            let (id, flow, kind, started, finished, status, counts, error) = row?;
            Ok(RunRecord {
                id,
                flow,
                kind,
                started_at: parse_ts(&started)?,
                finished_at: finished.as_deref().map(parse_ts).transpose()?,
                status,
                counts: serde_json::from_str(&counts).unwrap_or(Value::Null),
                error,
            })
        })
        .collect()
    }

    // One SQLite file serves one node, but the lease still keeps two processes started on
    // the same file (a stray second daemon) from running a flow together.
    fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<bool> {
        let until = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        // Timestamps share one fixed-width UTC format, so text order is time order.
        let n = self.conn().execute(
            "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?4)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
               expires_at = excluded.expires_at
             WHERE leases.holder = excluded.holder OR leases.expires_at <= ?3",
            params![name, holder, ts(now), ts(until)],
        )?;
        Ok(n > 0)
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.conn().execute(
            "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
            params![name, holder],
        )?;
        Ok(())
    }

    fn leases(&self) -> Result<Vec<Lease>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT name, holder, expires_at FROM leases ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        rows.map(|row| {
            let (name, holder, expires) = row?;
            Ok(Lease {
                name,
                holder,
                expires_at: parse_ts(&expires)?,
            })
        })
        .collect()
    }

    fn claim_firing(&self, name: &str, at: DateTime<Utc>) -> Result<bool> {
        let n = self.conn().execute(
            "INSERT INTO firings (name, fired_at) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET fired_at = excluded.fired_at
             WHERE firings.fired_at < excluded.fired_at",
            params![name, ts(at)],
        )?;
        Ok(n > 0)
    }

    fn remember_delivery(
        &self,
        webhook: &str,
        id: &str,
        at: DateTime<Utc>,
        keep: std::time::Duration,
    ) -> Result<bool> {
        let mut conn = self.conn();
        // One write transaction: a second daemon on the same file waits for it (busy
        // timeout) and then finds the delivery.
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM deliveries WHERE received_at < ?1",
            [ts(keep_since(at, keep))],
        )?;
        let n = tx.execute(
            "INSERT INTO deliveries (webhook, id, received_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (webhook, id) DO NOTHING",
            params![webhook, id, ts(at)],
        )?;
        tx.commit()?;
        Ok(n > 0)
    }

    fn forget_delivery(&self, webhook: &str, id: &str) -> Result<()> {
        self.conn().execute(
            "DELETE FROM deliveries WHERE webhook = ?1 AND id = ?2",
            params![webhook, id],
        )?;
        Ok(())
    }

    fn put_system_health(&self, h: &SystemHealth) -> Result<()> {
        let health =
            serde_json::to_string(h).map_err(|e| StateStoreError::Corrupt(e.to_string()))?;
        self.conn().execute(
            "INSERT INTO system_health (system, health, checked_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (system) DO UPDATE SET health = excluded.health, checked_at = excluded.checked_at",
            params![h.system, health, ts(h.checked_at)],
        )?;
        Ok(())
    }

    fn system_health(&self) -> Result<Vec<SystemHealth>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT health FROM system_health ORDER BY system")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|row| {
            serde_json::from_str(&row?).map_err(|e| StateStoreError::Corrupt(e.to_string()))
        })
        .collect()
    }

    // The operator's state: see `state::operator` and `sqlite/operator.rs`.
    fn flow_switches(&self) -> Result<Vec<FlowSwitch>> {
        self.op_flow_switches()
    }
    fn set_flow_switch(&self, switch: &FlowSwitch) -> Result<()> {
        self.op_set_flow_switch(switch)
    }
    fn put_run_lines(&self, lines: &[RunLine]) -> Result<()> {
        self.op_put_run_lines(lines)
    }
    fn run_lines(&self, run_id: i64) -> Result<Vec<RunLine>> {
        self.op_run_lines(run_id)
    }
    fn run_lines_of_key(&self, key: &str, limit: usize) -> Result<Vec<RunLine>> {
        self.op_run_lines_of_key(key, limit)
    }
    fn run(&self, id: i64) -> Result<Option<RunRecord>> {
        self.op_run(id)
    }
    fn journal_of_key(&self, key: &str) -> Result<Vec<JournalEntry>> {
        self.op_journal_of_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bindings_survive_reopen_and_journal_is_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        let scope = Scope::new("product", "shop", "erp");
        assert_eq!((scope.a.as_str(), scope.b.as_str()), ("erp", "shop"));
        {
            let s = SqliteStore::open(&path).unwrap();
            let b = Binding {
                key: "A1".into(),
                id_b: Some("812".into()),
                base_b: Some(json!({"sku": "A1", "price": 50})),
                ..Default::default()
            };
            let e = JournalEntry {
                id: 0,
                flow: "f".into(),
                key: "A1".into(),
                target: "erp".into(),
                operation: "create".into(),
                idempotency_key: "k".into(),
                payload: json!({"x": 1}),
                state: JournalState::Pending,
                created_at: Utc::now(),
            };
            let id = s.journal_begin(&e).unwrap();
            assert_eq!(s.journal_pending(Some("f")).unwrap().len(), 1);
            s.journal_finish(id, JournalState::Done, Some((&scope, &b)))
                .unwrap();
            assert!(s.journal_pending(Some("f")).unwrap().is_empty());
            s.set_cursor("f", "2026-11-26T10:00:00Z".parse().unwrap())
                .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let got = s.bindings(&scope, &["A1".into(), "B2".into()]).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(s.binding_count(&scope).unwrap(), 1);
        assert_eq!(
            s.binding_count(&Scope::new("stock", "shop", "erp"))
                .unwrap(),
            0
        );
        assert_eq!(got["A1"].base_b, Some(json!({"sku": "A1", "price": 50})));
        assert_eq!(
            s.binding_by_id(&scope, false, "812").unwrap().unwrap().key,
            "A1"
        );
        assert_eq!(
            s.cursor("f").unwrap().unwrap().to_rfc3339(),
            "2026-11-26T10:00:00+00:00"
        );
    }
}
