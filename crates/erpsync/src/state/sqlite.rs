//! The embedded SQLite state store: one file, WAL mode, every call one transaction.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;

mod operator;

use super::blocking::{Blocking, OffRuntime};
use super::store::Store;

use super::migrate::{STEPS, latest};
use super::model::{PackedBase, StoredBases, base_of_packed, json_text};
use super::operator::{FlowSwitch, RunLine};
use super::{
    Adopted, Binding, Failure, Fence, Instance, JournalEntry, JournalState, Lease, NodeRecord,
    Pruned, Result, RunRecord, Scope, StateStoreError, StateWrite, SystemHealth,
    json_column as json, keep_since,
};

/// State in one SQLite file. Its calls block (on the file's lock, up to the busy timeout):
/// as a `Store` they run on the blocking pool.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A binding as its row: the bases packed and the timestamp written out as text.
pub(crate) struct BindingRow {
    key: String,
    id_a: Option<String>,
    id_b: Option<String>,
    bases: StoredBases<PackedBase>,
    exported_at: Option<String>,
    parked: Option<String>,
    actions_done: bool,
}

impl BindingRow {
    fn of(b: &Binding) -> Self {
        BindingRow {
            key: b.key.clone(),
            id_a: b.id_a.clone(),
            id_b: b.id_b.clone(),
            bases: StoredBases::of(b),
            exported_at: b.exported_at.map(ts),
            parked: b.parked.clone(),
            actions_done: b.actions_done,
        }
    }

    /// `of` the binding `a` stands for, its record stored as it was packed.
    fn adopted(a: &Adopted) -> Self {
        BindingRow {
            key: a.key.clone(),
            id_a: a.id_a.clone(),
            id_b: a.id_b.clone(),
            bases: StoredBases::adopted(a),
            exported_at: None,
            parked: None,
            actions_done: false,
        }
    }
}

impl From<SqliteStore> for Store {
    fn from(s: SqliteStore) -> Store {
        Store::of(std::sync::Arc::new(OffRuntime(std::sync::Arc::new(s))))
    }
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| StateStoreError::Corrupt(format!("timestamp `{s}`: {e}")))
}

/// How long a call waits for another process's lock of the file before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

thread_local! {
    /// Set on a thread while it makes a call at once (`Blocking::at_once`).
    static AT_ONCE: Cell<bool> = const { Cell::new(false) };
}

/// Clears `AT_ONCE` when the call made at once ends, however it ends.
struct AtOnce;

impl AtOnce {
    fn begin() -> Self {
        AT_ONCE.set(true);
        AtOnce
    }
}

impl Drop for AtOnce {
    fn drop(&mut self) {
        AT_ONCE.set(false);
    }
}

/// SQLite's own answer for a file locked by another connection, for a call made at once
/// that found the connection in use.
fn busy(why: &str) -> StateStoreError {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
        Some(why.to_string()),
    )
    .into()
}

/// Whether a call failed only because it would have had to wait.
fn is_busy(e: &StateStoreError) -> bool {
    matches!(
        e,
        StateStoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
            if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// The connection, held (`SqliteStore::conn`). Taken for a call made at once, it waits for
/// other processes' locks again once released.
struct Held<'a> {
    conn: MutexGuard<'a, Connection>,
    at_once: bool,
}

impl std::ops::Deref for Held<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl std::ops::DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.at_once {
            let _ = self.conn.busy_timeout(BUSY_TIMEOUT);
        }
    }
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

    fn init(mut conn: Connection) -> Result<Self> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL keeps readers (admin API) from blocking the writer; NORMAL sync is durable
        // across process crashes, which is the failure that matters here.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // A statement of many rows (binding batches) keeps what it changed in a statement
        // journal until it ends, to undo just itself; in a file, past 64 KB, that was a
        // system call a page (27,500 for a first sync of 100,000 bindings).
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    /// Makes one write in a transaction of its own, under `fence` when given. The
    /// transaction takes the write lock at once, so the fence check and the write see the
    /// same lease row (another process on the file waits, up to the busy timeout).
    fn apply(&self, fence: Option<&Fence>, w: &StateWrite) -> Result<i64> {
        self.write(fence, |tx| apply(tx, w))
    }

    /// `write` in a transaction of its own, under `fence` when given (see `apply`).
    fn write<R>(
        &self,
        fence: Option<&Fence>,
        write: impl FnOnce(&Connection) -> Result<R>,
    ) -> Result<R> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(f) = fence {
            let current: Option<i64> = tx
                .query_row(
                    "SELECT token FROM leases WHERE name = ?1",
                    [&f.lease],
                    |r| r.get(0),
                )
                .optional()?;
            if current != Some(f.token) {
                return Err(StateStoreError::Fenced(f.lease.clone()));
            }
        }
        let out = write(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// The connection, held until the guard drops. In a call made at once (`at_once`) only
    /// a free connection is taken, and SQLite does not wait for another process's lock
    /// while it is held: either fails the call as busy, before it changed anything.
    fn conn(&self) -> Result<Held<'_>> {
        if !AT_ONCE.get() {
            let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
            return Ok(Held {
                conn,
                at_once: false,
            });
        }
        let conn = match self.conn.try_lock() {
            Ok(conn) => conn,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(busy("the state connection is in use")),
        };
        conn.busy_timeout(Duration::ZERO)?;
        Ok(Held {
            conn,
            at_once: true,
        })
    }

    /// Failures of one flow (or all), or the one with `id`, in id order.
    fn select_failures(&self, flow: Option<&str>, id: Option<i64>) -> Result<Vec<Failure>> {
        let conn = self.conn()?;
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

/// A binding row with its bases read where SQLite held them (no copy of a column kept) and
/// its timestamp still as text.
type RawBinding = (Binding, StoredBases<Result<Value>>, Option<String>);

/// A base column read in place: a blob unpacked, text parsed; an error is reported when the
/// binding is finished, as a corrupt state.
struct ReadBase(Result<Value>);

impl rusqlite::types::FromSql for ReadBase {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        use rusqlite::types::{FromSqlError, ValueRef};
        Ok(ReadBase(match v {
            ValueRef::Blob(bytes) => base_of_packed(bytes),
            ValueRef::Text(text) => std::str::from_utf8(text)
                .map_err(|e| StateStoreError::Corrupt(e.to_string()))
                .and_then(json_text),
            _ => return Err(FromSqlError::InvalidType),
        }))
    }
}

/// Column `i` of `row`, a base or null.
fn read_base(row: &rusqlite::Row, i: usize) -> rusqlite::Result<Option<Result<Value>>> {
    Ok(row.get::<_, Option<ReadBase>>(i)?.map(|b| b.0))
}

/// A base written packed, as a blob.
impl rusqlite::ToSql for PackedBase {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::Borrowed(
            rusqlite::types::ValueRef::Blob(&self.0),
        ))
    }
}

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
            bases_equal: false,
        },
        StoredBases {
            base_a: read_base(row, 3)?,
            base_b: read_base(row, 4)?,
            b_delta: read_base(row, 8)?,
        },
        row.get(5)?,
    ))
}

fn finish_binding(parts: RawBinding) -> Result<Binding> {
    let (mut b, bases, exported) = parts;
    (b.base_a, b.base_b) = bases.load()?;
    b.exported_at = exported.as_deref().map(parse_ts).transpose()?;
    Ok(b)
}

const BINDING_COLS: &str =
    "key, id_a, id_b, base_a, base_b, exported_at, parked, actions_done, base_b_delta";

fn upsert_binding(tx: &Connection, scope: &Scope, b: &Binding) -> Result<()> {
    upsert_rows(tx, scope, &[BindingRow::of(b)])
}

/// Binding rows written by one statement of a batch (`put_binding_rows`): each statement
/// costs SQLite a program start, five cursors opened and closed and a halt, whatever its
/// rows; the rows themselves cost the same either way.
const ROWS_PER_UPSERT: usize = 32;

/// The values of a binding row besides its scope.
const ROW_VALUES: usize = 9;

/// The number `scopes` gives `scope`, given it first if it has none yet (in the caller's
/// transaction: a write rolled back takes the new scope with it). Every write of a binding
/// asks; only the first of a scope inserts.
fn scope_id(tx: &Connection, scope: &Scope) -> Result<i64> {
    let args = params![scope.entity, scope.a, scope.b];
    let known: Option<i64> = tx
        .prepare_cached(&format!("SELECT {SCOPE_ID}"))?
        .query_row(args, |r| r.get(0))?;
    if let Some(id) = known {
        return Ok(id);
    }
    tx.prepare_cached("INSERT INTO scopes (entity, sys_a, sys_b) VALUES (?1, ?2, ?3)")?
        .execute(args)?;
    Ok(tx.last_insert_rowid())
}

/// The number of the scope whose entity and systems are `?1` – `?3`, in a query's terms;
/// null for a scope that has no bindings yet (so it matches no row).
const SCOPE_ID: &str = "(SELECT id FROM scopes WHERE entity = ?1 AND sys_a = ?2 AND sys_b = ?3)";

/// The bindings of the scope `?1` – `?3` that `filter` (a condition led by `AND`, and an
/// order) keeps.
fn select_bindings(filter: &str) -> String {
    format!("SELECT {BINDING_COLS} FROM bindings WHERE scope = {SCOPE_ID} {filter}")
}

const ALL_BINDINGS: &str = "ORDER BY key";
const AWAITING_ACTIONS: &str = "AND exported_at IS NOT NULL AND actions_done = 0 ORDER BY key";

fn count_bindings() -> String {
    format!("SELECT COUNT(*) FROM bindings WHERE scope = {SCOPE_ID}")
}

/// The upsert of `rows` binding rows in one statement. The scope's number is bound once,
/// as `?1` in every row; row `i`'s own nine are `?(2 + 9i)` onwards, in the order of
/// `BindingRow::values`.
fn upsert_sql(rows: usize) -> String {
    let rows: Vec<String> = (0..rows)
        .map(|i| {
            let own: Vec<String> = (0..ROW_VALUES)
                .map(|j| format!("?{}", 2 + ROW_VALUES * i + j))
                .collect();
            format!("(?1, {})", own.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO bindings (scope, key, id_a, id_b, base_a, base_b, base_b_delta, exported_at, parked, actions_done)
     VALUES {}
     ON CONFLICT (scope, key) DO UPDATE SET
       id_a = excluded.id_a, id_b = excluded.id_b, base_a = excluded.base_a,
       base_b = excluded.base_b, base_b_delta = excluded.base_b_delta,
       exported_at = excluded.exported_at, parked = excluded.parked,
       actions_done = excluded.actions_done",
        rows.join(", ")
    )
}

/// Whether the scope `?1` – `?3` has a binding whose key is between `?4` and `?5`.
static ANY_BINDING_BETWEEN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT EXISTS (SELECT 1 FROM bindings WHERE scope = {SCOPE_ID} AND key BETWEEN ?4 AND ?5)"
    )
});

static UPSERT_ONE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| upsert_sql(1));
static UPSERT_BATCH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| upsert_sql(ROWS_PER_UPSERT));

impl BindingRow {
    /// The row's values in the upsert's order, after its scope.
    fn values(&self) -> [&dyn rusqlite::ToSql; ROW_VALUES] {
        [
            &self.key,
            &self.id_a,
            &self.id_b,
            &self.bases.base_a,
            &self.bases.base_b,
            &self.bases.b_delta,
            &self.exported_at,
            &self.parked,
            &self.actions_done,
        ]
    }
}

/// Runs the upsert `stmt` (of `rows.len()` rows) for `rows`.
fn execute_upsert(stmt: &mut rusqlite::Statement, scope: i64, rows: &[BindingRow]) -> Result<()> {
    stmt.raw_bind_parameter(1, scope)?;
    let values = rows.iter().flat_map(BindingRow::values);
    for (at, v) in (2..).zip(values) {
        stmt.raw_bind_parameter(at, v)?;
    }
    stmt.raw_execute()?;
    Ok(())
}

/// Writes `rows` in statements of `ROWS_PER_UPSERT` rows, the rest one at a time. A key
/// given twice ends as its later row, as row-by-row upserts leave it.
fn upsert_rows(tx: &Connection, scope: &Scope, rows: &[BindingRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let scope = scope_id(tx, scope)?;
    let mut batches = rows.chunks_exact(ROWS_PER_UPSERT);
    if batches.len() > 0 {
        let mut stmt = tx.prepare_cached(&UPSERT_BATCH)?;
        for batch in batches.by_ref() {
            execute_upsert(&mut stmt, scope, batch)?;
        }
    }
    let rest = batches.remainder();
    if !rest.is_empty() {
        let mut stmt = tx.prepare_cached(&UPSERT_ONE)?;
        for row in rest {
            execute_upsert(&mut stmt, scope, std::slice::from_ref(row))?;
        }
    }
    Ok(())
}

/// Applies the schema steps the file lacks, in one transaction.
fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > latest() {
        return Err(StateStoreError::LaterRelease {
            found: version,
            known: latest(),
        });
    }
    if version == latest() {
        return Ok(());
    }
    // Another process may be migrating it too: read again under the write lock.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for step in STEPS.iter().filter(|s| s.version > version) {
        tx.execute_batch(step.sqlite)?;
        tx.pragma_update(None, "user_version", step.version)?;
        tracing::debug!(
            version = step.version,
            step = step.name,
            "state schema step applied"
        );
    }
    tx.commit()?;
    Ok(())
}

fn apply(c: &Connection, w: &StateWrite) -> Result<i64> {
    match w {
        StateWrite::PutBindings(scope, bindings) => {
            let rows: Vec<BindingRow> = bindings.iter().map(BindingRow::of).collect();
            upsert_rows(c, scope, &rows)?;
            Ok(0)
        }
        StateWrite::PutHeld(scope, bindings, adopted) => {
            let rows: Vec<BindingRow> = (bindings.iter().map(BindingRow::of))
                .chain(adopted.iter().map(BindingRow::adopted))
                .collect();
            upsert_rows(c, scope, &rows)?;
            Ok(0)
        }
        StateWrite::SetCursor(flow, at) => {
            c.execute(
                "INSERT INTO cursors (flow, since) VALUES (?1, ?2)
                 ON CONFLICT (flow) DO UPDATE SET since = excluded.since",
                params![flow, ts(*at)],
            )?;
            Ok(0)
        }
        StateWrite::JournalBegin(e) => {
            c.execute(
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
            Ok(c.last_insert_rowid())
        }
        StateWrite::JournalFinish(id, state, binding) => {
            if *state == JournalState::Pending {
                c.execute(
                    "UPDATE journal SET state = 'pending' WHERE id = ?1",
                    params![id],
                )?;
            } else {
                // Settled writes are not needed any more: keep the journal small.
                c.execute("DELETE FROM journal WHERE id = ?1", params![id])?;
            }
            if let Some((scope, b)) = binding {
                upsert_binding(c, scope, b)?;
            }
            Ok(0)
        }
        StateWrite::JournalProgress(id, payload) => {
            c.execute(
                "UPDATE journal SET payload = ?2 WHERE id = ?1 AND state = 'pending'",
                params![id, payload.to_string()],
            )?;
            Ok(0)
        }
        StateWrite::JournalSettle { flow, key, binding } => {
            let n = c.execute(
                "DELETE FROM journal WHERE flow = ?1 AND key = ?2 AND state = 'pending'",
                params![flow, key],
            )?;
            if n > 0
                && let Some((scope, b)) = binding
            {
                upsert_binding(c, scope, b)?;
            }
            Ok(n as i64)
        }
        StateWrite::PutFailure(f) => {
            c.execute(
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
            Ok(c.query_row(
                "SELECT id FROM failures WHERE flow = ?1 AND key = ?2",
                params![f.flow, f.key],
                |r| r.get(0),
            )?)
        }
        StateWrite::ClearFailure { flow, key } => {
            c.execute(
                "DELETE FROM failures WHERE flow = ?1 AND key = ?2",
                params![flow, key],
            )?;
            Ok(0)
        }
        StateWrite::RunStart {
            flow,
            kind,
            at,
            instance,
        } => {
            c.execute(
                "INSERT INTO runs (flow, kind, started_at, status, counts, node, instance)
                 VALUES (?1, ?2, ?3, 'running', '{}', ?4, ?5)",
                params![flow, kind, ts(*at), instance.node, instance.id],
            )?;
            Ok(c.last_insert_rowid())
        }
        StateWrite::RunFinish {
            id,
            at,
            status,
            counts,
            error,
        } => {
            c.execute(
                "UPDATE runs SET finished_at = ?2, status = ?3, counts = ?4, error = ?5 WHERE id = ?1",
                params![id, ts(*at), status, counts.to_string(), error],
            )?;
            Ok(0)
        }
    }
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

impl Blocking for SqliteStore {
    fn at_once<R>(&self, f: &dyn Fn(&Self) -> Result<R>) -> Option<Result<R>> {
        let out = {
            let _at_once = AtOnce::begin();
            f(self)
        };
        match out {
            Err(e) if is_busy(&e) => None,
            out => Some(out),
        }
    }

    fn bindings(&self, scope: &Scope, keys: &[String]) -> Result<HashMap<String, Binding>> {
        /// Keys per query: a page of a list is one query, far below SQLite's bound on
        /// parameters.
        const CHUNK: usize = 250;
        let conn = self.conn()?;
        let mut out = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(CHUNK) {
            // Whether the scope has any binding between the chunk's least and greatest key
            // (SQLite orders text as Rust does, by its UTF-8 bytes): one descent, where
            // the lookup below is one a key. A first sync, and a catalogue listed in key
            // order, has none ahead of its pages.
            let (Some(least), Some(greatest)) = (chunk.iter().min(), chunk.iter().max()) else {
                continue;
            };
            let any: bool = conn.prepare_cached(&ANY_BINDING_BETWEEN)?.query_row(
                params![scope.entity, scope.a, scope.b, least, greatest],
                |r| r.get(0),
            )?;
            if !any {
                continue;
            }
            let marks = vec!["?"; chunk.len()].join(", ");
            let mut stmt =
                conn.prepare_cached(&select_bindings(&format!("AND key IN ({marks})")))?;
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
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(&select_bindings(ALL_BINDINGS))?;
        let rows = stmt.query_map(params![scope.entity, scope.a, scope.b], row_binding)?;
        rows.map(|r| finish_binding(r?)).collect()
    }

    fn binding_count(&self, scope: &Scope) -> Result<usize> {
        let n: i64 = self.conn()?.query_row(
            &count_bindings(),
            params![scope.entity, scope.a, scope.b],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    type BindingRow = BindingRow;

    fn binding_row(b: &Binding) -> BindingRow {
        BindingRow::of(b)
    }
    fn adopted_row(a: &Adopted) -> Result<BindingRow> {
        Ok(BindingRow::adopted(a))
    }

    fn put_binding_rows(
        &self,
        fence: Option<&Fence>,
        scope: &Scope,
        rows: &[BindingRow],
    ) -> Result<()> {
        self.write(fence, |tx| upsert_rows(tx, scope, rows))
    }

    fn set_cursor(&self, flow: &str, at: DateTime<Utc>) -> Result<()> {
        self.apply(None, &StateWrite::SetCursor(flow.to_string(), at))
            .map(drop)
    }

    fn journal_begin(&self, e: &JournalEntry) -> Result<i64> {
        self.apply(None, &StateWrite::JournalBegin(e.clone()))
    }

    fn journal_finish(
        &self,
        id: i64,
        state: JournalState,
        binding: Option<(&Scope, &Binding)>,
    ) -> Result<()> {
        let binding = binding.map(|(s, b)| (s.clone(), b.clone()));
        self.apply(None, &StateWrite::JournalFinish(id, state, binding))
            .map(drop)
    }

    fn journal_progress(&self, id: i64, payload: &Value) -> Result<()> {
        self.apply(None, &StateWrite::JournalProgress(id, payload.clone()))
            .map(drop)
    }

    fn journal_settle(
        &self,
        flow: &str,
        key: &str,
        binding: Option<(&Scope, &Binding)>,
    ) -> Result<usize> {
        let binding = binding.map(|(s, b)| (s.clone(), b.clone()));
        let w = StateWrite::JournalSettle {
            flow: flow.to_string(),
            key: key.to_string(),
            binding,
        };
        Ok(usize::try_from(self.apply(None, &w)?).unwrap_or(0))
    }

    fn put_failure(&self, f: &Failure) -> Result<i64> {
        self.apply(None, &StateWrite::PutFailure(f.clone()))
    }

    fn clear_failure(&self, flow: &str, key: &str) -> Result<()> {
        self.apply(
            None,
            &StateWrite::ClearFailure {
                flow: flow.to_string(),
                key: key.to_string(),
            },
        )
        .map(drop)
    }

    fn run_start(
        &self,
        flow: &str,
        kind: &str,
        at: DateTime<Utc>,
        instance: &Instance,
    ) -> Result<i64> {
        self.apply(
            None,
            &StateWrite::RunStart {
                flow: flow.to_string(),
                kind: kind.to_string(),
                at,
                instance: instance.clone(),
            },
        )
    }

    fn run_finish(
        &self,
        id: i64,
        at: DateTime<Utc>,
        status: &str,
        counts: &Value,
        error: Option<&str>,
    ) -> Result<()> {
        self.apply(
            None,
            &StateWrite::RunFinish {
                id,
                at,
                status: status.to_string(),
                counts: counts.clone(),
                error: error.map(str::to_string),
            },
        )
        .map(drop)
    }

    fn fenced(&self, fence: &Fence, write: &StateWrite) -> Result<i64> {
        self.apply(Some(fence), write)
    }

    // One SQLite file serves one node, but the lease still keeps two processes started on
    // the same file (a stray second daemon, a `run --once` beside it) from running a flow
    // together.
    fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        node: &str,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
        take_from: Option<&str>,
    ) -> Result<Option<i64>> {
        let until = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO lease_tokens (id, last) VALUES (1, 1)
             ON CONFLICT (id) DO UPDATE SET last = last + 1",
            [],
        )?;
        let token: i64 = tx.query_row("SELECT last FROM lease_tokens WHERE id = 1", [], |r| {
            r.get(0)
        })?;
        // Timestamps share one fixed-width UTC format, so text order is time order.
        let n = tx.execute(
            "INSERT INTO leases (name, holder, node, token, expires_at) VALUES (?1, ?2, ?3, ?4, ?6)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, node = excluded.node,
               token = excluded.token, expires_at = excluded.expires_at
             WHERE leases.holder = excluded.holder OR leases.expires_at <= ?5
               OR leases.holder = ?7",
            params![name, holder, node, token, ts(now), ts(until), take_from],
        )?;
        tx.commit()?;
        Ok((n > 0).then_some(token))
    }

    fn renew_lease(
        &self,
        name: &str,
        token: i64,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<bool> {
        let until = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let n = self.conn()?.execute(
            "UPDATE leases SET expires_at = ?3 WHERE name = ?1 AND token = ?2",
            params![name, token, ts(until)],
        )?;
        Ok(n > 0)
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.conn()?.execute(
            "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
            params![name, holder],
        )?;
        Ok(())
    }

    fn abandon_runs(
        &self,
        flow: Option<&str>,
        of: Option<&str>,
        keep: &str,
        at: DateTime<Utc>,
        why: &str,
    ) -> Result<usize> {
        Ok(self.conn()?.execute(
            "UPDATE runs SET status = 'abandoned', finished_at = ?4, error = ?5
             WHERE status = 'running' AND (?1 IS NULL OR flow = ?1)
               AND (?2 IS NULL OR instance = ?2) AND instance IS NOT ?3",
            params![flow, of, keep, ts(at), why],
        )?)
    }

    fn heartbeat(&self, instance: &str, node: &str, now: DateTime<Utc>) -> Result<Vec<NodeRecord>> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO nodes (instance, node, started_at, seen_at) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (instance) DO UPDATE SET node = excluded.node, seen_at = excluded.seen_at",
            params![instance, node, ts(now)],
        )?;
        let mut stmt = conn.prepare_cached(
            "SELECT instance, node, started_at, seen_at FROM nodes ORDER BY node, instance",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        rows.map(|row| {
            let (instance, node, started, seen) = row?;
            Ok(NodeRecord {
                instance,
                node,
                started_at: parse_ts(&started)?,
                seen_at: parse_ts(&seen)?,
            })
        })
        .collect()
    }

    fn prune(&self, runs_before: DateTime<Utc>, nodes_before: DateTime<Utc>) -> Result<Pruned> {
        let conn = self.conn()?;
        let runs = conn.execute(
            "DELETE FROM runs WHERE finished_at IS NOT NULL AND finished_at < ?1",
            [ts(runs_before)],
        )?;
        let nodes = conn.execute("DELETE FROM nodes WHERE seen_at < ?1", [ts(nodes_before)])?;
        Ok(Pruned { runs, nodes })
    }

    fn awaiting_actions(&self, scope: &Scope) -> Result<Vec<Binding>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(&select_bindings(AWAITING_ACTIONS))?;
        let rows = stmt.query_map(params![scope.entity, scope.a, scope.b], row_binding)?;
        rows.map(|r| finish_binding(r?)).collect()
    }

    fn cursor(&self, flow: &str) -> Result<Option<DateTime<Utc>>> {
        let conn = self.conn()?;
        let s: Option<String> = conn
            .query_row("SELECT since FROM cursors WHERE flow = ?1", [flow], |r| {
                r.get(0)
            })
            .optional()?;
        s.as_deref().map(parse_ts).transpose()
    }

    fn is_absent(&self, flow: &str, key: &str, since: DateTime<Utc>) -> Result<bool> {
        let found: Option<i64> = self
            .conn()?
            .query_row(
                "SELECT 1 FROM known_absent WHERE flow = ?1 AND key = ?2 AND read_at >= ?3",
                params![flow, key, ts(since)],
                |r| r.get(0),
            )
            .optional()?;
        Ok(found.is_some())
    }

    fn note_absent(&self, flow: &str, key: &str, at: DateTime<Utc>) -> Result<()> {
        self.conn()?.execute(
            "INSERT INTO known_absent (flow, key, read_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (flow, key) DO UPDATE SET read_at = excluded.read_at",
            params![flow, key, ts(at)],
        )?;
        Ok(())
    }

    fn forget_absent(&self, flow: &str, key: &str) -> Result<()> {
        self.conn()?.execute(
            "DELETE FROM known_absent WHERE flow = ?1 AND key = ?2",
            params![flow, key],
        )?;
        Ok(())
    }

    fn journal_pending(&self, flow: Option<&str>) -> Result<Vec<JournalEntry>> {
        query_journal(
            &*self.conn()?,
            "WHERE (?1 IS NULL OR flow = ?1) AND state = 'pending' ORDER BY id",
            [flow],
        )
    }

    fn failures(&self, flow: Option<&str>) -> Result<Vec<Failure>> {
        self.select_failures(flow, None)
    }

    fn failure(&self, id: i64) -> Result<Option<Failure>> {
        Ok(self.select_failures(None, Some(id))?.pop())
    }

    fn discard_failure(&self, id: i64) -> Result<bool> {
        Ok(self
            .conn()?
            .execute("DELETE FROM failures WHERE id = ?1", [id])?
            > 0)
    }

    fn runs(&self, flow: Option<&str>, limit: usize) -> Result<Vec<RunRecord>> {
        query_runs(
            &*self.conn()?,
            "WHERE (?1 IS NULL OR flow = ?1) ORDER BY id DESC LIMIT ?2",
            params![flow, limit as i64],
        )
    }

    fn leases(&self) -> Result<Vec<Lease>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT name, holder, node, token, expires_at FROM leases ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        rows.map(|row| {
            let (name, holder, node, token, expires) = row?;
            Ok(Lease {
                name,
                holder,
                node,
                token,
                expires_at: parse_ts(&expires)?,
            })
        })
        .collect()
    }

    fn claim_firing(&self, name: &str, at: DateTime<Utc>) -> Result<bool> {
        let n = self.conn()?.execute(
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
        let mut conn = self.conn()?;
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
        self.conn()?.execute(
            "DELETE FROM deliveries WHERE webhook = ?1 AND id = ?2",
            params![webhook, id],
        )?;
        Ok(())
    }

    fn put_system_health(&self, h: &SystemHealth) -> Result<()> {
        let health =
            serde_json::to_string(h).map_err(|e| StateStoreError::Corrupt(e.to_string()))?;
        self.conn()?.execute(
            "INSERT INTO system_health (system, health, checked_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (system) DO UPDATE SET health = excluded.health, checked_at = excluded.checked_at",
            params![h.system, health, ts(h.checked_at)],
        )?;
        Ok(())
    }

    fn system_health(&self) -> Result<Vec<SystemHealth>> {
        let conn = self.conn()?;
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

/// The journal entries a `WHERE …` tail picks.
fn query_journal(
    conn: &Connection,
    tail: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<JournalEntry>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, flow, key, target, operation, idempotency_key, payload, state, created_at
         FROM journal {tail}"
    ))?;
    let rows = stmt.query_map(params, |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, String>(6)?,
            r.get::<_, String>(7)?,
            r.get::<_, String>(8)?,
        ))
    })?;
    rows.map(|row| {
        let (id, flow, key, target, operation, idempotency_key, payload, state, at) = row?;
        Ok(JournalEntry {
            id,
            flow,
            key,
            target,
            operation,
            idempotency_key,
            payload: serde_json::from_str(&payload)
                .map_err(|e| StateStoreError::Corrupt(e.to_string()))?,
            state: journal_state(&state)?,
            created_at: parse_ts(&at)?,
        })
    })
    .collect()
}

fn journal_state(s: &str) -> Result<JournalState> {
    match s {
        "pending" => Ok(JournalState::Pending),
        "done" => Ok(JournalState::Done),
        "failed" => Ok(JournalState::Failed),
        other => Err(StateStoreError::Corrupt(format!("journal state `{other}`"))),
    }
}

/// The runs a `WHERE …` tail picks, as records.
fn query_runs(
    conn: &Connection,
    tail: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<RunRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, flow, kind, started_at, finished_at, status, counts, error, node, instance
         FROM runs {tail}"
    ))?;
    let rows = stmt.query_map(params, |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, String>(6)?,
            r.get::<_, Option<String>>(7)?,
            r.get::<_, Option<String>>(8)?,
            r.get::<_, Option<String>>(9)?,
        ))
    })?;
    rows.map(|row| {
        let (id, flow, kind, started, finished, status, counts, error, node, instance) = row?;
        Ok(RunRecord {
            id,
            flow,
            kind,
            started_at: parse_ts(&started)?,
            finished_at: finished.as_deref().map(parse_ts).transpose()?,
            status,
            counts: serde_json::from_str(&counts).unwrap_or(Value::Null),
            error,
            node,
            instance,
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::FlowName;
    use serde_json::json;

    /// A write that waits for another process's lock of the SQLite file waits off the
    /// runtime: on a runtime of one thread, a task beside it keeps running meanwhile.
    #[tokio::test(flavor = "current_thread")]
    async fn a_locked_sqlite_file_does_not_stall_the_other_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        let store: Store = SqliteStore::open(&path).unwrap().into();
        // Another process holds the file's write lock for a while.
        let held = std::time::Duration::from_millis(600);
        let (locked, is_locked) = std::sync::mpsc::channel();
        let other = {
            let path = path.clone();
            std::thread::spawn(move || {
                let c = rusqlite::Connection::open(&path).unwrap();
                c.execute_batch("BEGIN IMMEDIATE").unwrap();
                locked.send(()).unwrap();
                std::thread::sleep(held);
                c.execute_batch("COMMIT").unwrap();
            })
        };
        is_locked.recv().unwrap();
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ticker = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    ticks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        let started = std::time::Instant::now();
        store
            .bindings
            .set_cursor(FlowName::new("f"), chrono::Utc::now())
            .await
            .unwrap();
        let waited = started.elapsed();
        ticker.abort();
        other.join().unwrap();
        assert!(
            waited >= held / 2,
            "the write waited for the lock ({waited:?})"
        );
        let ticks = ticks.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            ticks >= 10,
            "the ticker ran {ticks} times while the write waited {waited:?}"
        );
        assert!(
            store
                .bindings
                .cursor(FlowName::new("f"))
                .await
                .unwrap()
                .is_some()
        );
    }

    /// The calls a run makes for each page and record (a page's bindings, held bindings,
    /// journal entries, the cursor, absent keys, failures) are made on the caller's thread when nothing
    /// makes them wait, fenced or not: with tokio's only blocking thread taken, they still
    /// answer, while a call kept on the pool waits for it.
    #[test]
    fn a_runs_calls_are_made_at_once_beside_a_busy_blocking_pool() {
        let dir = tempfile::tempdir().unwrap();
        let store: Store = SqliteStore::open(&dir.path().join("state.sqlite"))
            .unwrap()
            .into();
        let rt = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let ttl = std::time::Duration::from_secs(60);
            let token = store
                .coordination
                .acquire_lease("flow:f", "me", "node", Utc::now(), ttl, None)
                .await
                .unwrap()
                .unwrap();
            let (release, released) = std::sync::mpsc::channel::<()>();
            let pool = tokio::task::spawn_blocking(move || released.recv());
            let run = store.fenced(Fence {
                lease: "flow:f".into(),
                token,
            });
            let soon = std::time::Duration::from_secs(10);
            let scope = Scope {
                entity: "product".into(),
                a: "erp".into(),
                b: "shop".into(),
            };
            let bound = Binding {
                key: "A1".into(),
                id_a: Some("7".into()),
                base_a: Some(json!({"sku": "A1", "price": 5})),
                ..Default::default()
            };
            let adopted = crate::state::Adopted::new(
                "B2".into(),
                Some("8".into()),
                Some("9".into()),
                crate::json::packed::pack(&json!({"sku": "B2"})),
                None,
            );
            tokio::time::timeout(
                soon,
                run.bindings
                    .put_held(&scope, vec![bound.clone()], vec![adopted]),
            )
            .await
            .expect("held bindings written at once")
            .unwrap();
            for s in [&store, &run] {
                let found = tokio::time::timeout(
                    soon,
                    s.bindings.bindings(
                        &scope,
                        &[
                            crate::state::RecordKey::new("A1"),
                            crate::state::RecordKey::new("B2"),
                        ],
                    ),
                )
                .await
                .expect("a page's bindings read at once")
                .unwrap();
                assert_eq!(found["A1"].id_a.as_deref(), Some("7"));
                assert_eq!(found["B2"].id_b.as_deref(), Some("9"));
            }
            let entry = JournalEntry {
                id: 0,
                flow: "f".into(),
                key: "A1".into(),
                target: "shop".into(),
                operation: "create".into(),
                idempotency_key: "k".into(),
                payload: json!({"sku": "A1"}),
                state: JournalState::Pending,
                created_at: Utc::now(),
            };
            let id = tokio::time::timeout(soon, run.journal.journal_begin(&entry))
                .await
                .expect("journal entry begun at once")
                .unwrap();
            let mut done = bound.clone();
            done.id_b = Some("70".into());
            tokio::time::timeout(
                soon,
                run.journal
                    .journal_finish(id, JournalState::Done, Some((&scope, &done))),
            )
            .await
            .expect("journal entry finished at once")
            .unwrap();
            let at: DateTime<Utc> = "2026-12-06T10:00:00Z".parse().unwrap();
            tokio::time::timeout(soon, run.bindings.set_cursor(FlowName::new("f"), at))
                .await
                .expect("cursor moved at once")
                .unwrap();
            let cursor = tokio::time::timeout(soon, run.bindings.cursor(FlowName::new("f")))
                .await
                .expect("cursor read at once")
                .unwrap();
            assert_eq!(cursor, Some(at));
            let (flow, key) = (FlowName::new("f"), crate::state::RecordKey::new("C3"));
            tokio::time::timeout(soon, run.bindings.note_absent(flow, key, at))
                .await
                .expect("an absent key noted at once")
                .unwrap();
            let absent = tokio::time::timeout(soon, run.bindings.is_absent(flow, key, at))
                .await
                .expect("an absent key read at once")
                .unwrap();
            assert!(absent);
            tokio::time::timeout(soon, run.bindings.forget_absent(flow, key))
                .await
                .expect("an absent key forgotten at once")
                .unwrap();
            let failure = Failure {
                id: 0,
                flow: "f".into(),
                key: "C3".into(),
                source_record: json!({"sku": "C3"}),
                payload: None,
                error: "refused".into(),
                status: Some(422),
                response: None,
                attempts: 1,
                created_at: at,
                updated_at: at,
            };
            tokio::time::timeout(soon, run.failures.put_failure(&failure))
                .await
                .expect("a failure kept at once")
                .unwrap();
            tokio::time::timeout(soon, run.failures.clear_failure(flow, key))
                .await
                .expect("a failure cleared at once")
                .unwrap();

            // A call that is not one of them (the run history) waits for the pool.
            let history = store.runs.runs(None, 10);
            assert!(
                tokio::time::timeout(std::time::Duration::from_millis(200), history)
                    .await
                    .is_err(),
                "the blocking pool was not taken"
            );
            release.send(()).unwrap();
            pool.await.unwrap().unwrap();
        });
        let s = SqliteStore::open(&dir.path().join("state.sqlite")).unwrap();
        let scope = Scope {
            entity: "product".into(),
            a: "erp".into(),
            b: "shop".into(),
        };
        let got = s.bindings(&scope, &["A1".into()]).unwrap();
        assert_eq!(got["A1"].id_b.as_deref(), Some("70"));
        assert!(s.journal_pending(Some("f")).unwrap().is_empty());
        assert!(
            !s.is_absent("f", "C3", "2026-12-06T10:00:00Z".parse().unwrap())
                .unwrap()
        );
        assert!(s.failures(Some("f")).unwrap().is_empty());
    }

    #[test]
    fn a_file_made_before_versioning_is_adopted_with_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(STEPS[0].sqlite).unwrap();
            conn.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES ('flow:x', 'old', '2026-01-01T00:00:00.000000Z')",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO runs (flow, kind, started_at, status, counts) VALUES ('x', 'sync', '2026-01-01T00:00:00.000000Z', 'ok', '{}')",
                [],
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let lease = &s.leases().unwrap()[0];
        assert_eq!((lease.holder.as_str(), lease.token), ("old", 0));
        let run = &s.runs(None, 1).unwrap()[0];
        assert_eq!((run.status.as_str(), run.node.as_deref()), ("ok", None));
        let version: i64 = s
            .conn()
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, latest());
        // Opened again: nothing to do.
        drop(s);
        SqliteStore::open(&path).unwrap();
    }

    /// A batch written in statements of many rows reads back as written row by row: sizes
    /// around the statement's, a key given twice in one statement and across two (the later
    /// row wins), rows updating ones already stored, and nothing of another scope touched.
    #[test]
    fn bindings_written_many_to_a_statement_read_back_as_written_one_by_one() {
        let binding = |i: usize, price: usize| Binding {
            key: format!("K{i:03}"),
            id_a: Some(format!("{i}")),
            id_b: (!i.is_multiple_of(3)).then(|| format!("s-{i}")),
            base_a: Some(json!({"sku": format!("K{i:03}"), "price": price})),
            base_b: (!i.is_multiple_of(5))
                .then(|| json!({"sku": format!("K{i:03}"), "price": price + i % 2})),
            exported_at: i
                .is_multiple_of(7)
                .then(|| "2026-01-02T00:00:00Z".parse().unwrap()),
            parked: i.is_multiple_of(11).then(|| "review".to_string()),
            actions_done: i.is_multiple_of(2),
            bases_equal: false,
        };
        let scope = Scope::new("product", "shop", "erp");
        let other = Scope::new("product", "shop2", "erp");
        for n in [
            1,
            ROWS_PER_UPSERT - 1,
            ROWS_PER_UPSERT,
            ROWS_PER_UPSERT + 1,
            2 * ROWS_PER_UPSERT + 5,
        ] {
            let s = SqliteStore::in_memory().unwrap();
            let untouched = binding(0, 1);
            s.put_binding_rows(None, &other, &[BindingRow::of(&untouched)])
                .unwrap();
            let first: Vec<Binding> = (0..n).map(|i| binding(i, 10)).collect();
            let rows: Vec<BindingRow> = first.iter().map(BindingRow::of).collect();
            s.put_binding_rows(None, &scope, &rows).unwrap();
            assert_eq!(s.all_bindings(&scope).unwrap(), first, "{n} rows");

            // Again, over what is stored: every other row changed, and keys repeated within
            // the batch (nearby and a statement apart) with the later row different.
            let mut again: Vec<Binding> = (0..n).map(|i| binding(i, 10 + i % 2)).collect();
            let repeats: Vec<Binding> = [1, ROWS_PER_UPSERT + 2]
                .into_iter()
                .filter(|&i| i < n)
                .map(|i| binding(i, 99))
                .collect();
            again.extend(repeats.iter().cloned());
            let rows: Vec<BindingRow> = again.iter().map(BindingRow::of).collect();
            s.put_binding_rows(None, &scope, &rows).unwrap();
            let mut expected: Vec<Binding> = (0..n).map(|i| binding(i, 10 + i % 2)).collect();
            for r in repeats {
                let at = expected.iter().position(|b| b.key == r.key).unwrap();
                expected[at] = r;
            }
            assert_eq!(s.all_bindings(&scope).unwrap(), expected, "{n} rows again");
            assert_eq!(s.all_bindings(&other).unwrap(), vec![untouched], "{n} rows");
        }
    }

    /// Each query of a flow's bindings goes through an index, the one for what it looks up:
    /// a scan would cost every page of a run over 100,000 bindings a pass over all of them.
    /// And the table keeps no index that no query searches: each binding written pays for
    /// every index of the table.
    #[test]
    fn binding_queries_search_the_index_of_what_they_look_up() {
        let s = SqliteStore::in_memory().unwrap();
        let key = "sqlite_autoindex_bindings_1";
        let queries = [
            (select_bindings("AND key IN (?4, ?5)"), key),
            (select_bindings(ALL_BINDINGS), key),
            (count_bindings(), key),
            (select_bindings(AWAITING_ACTIONS), "bindings_awaiting"),
        ];
        let conn = s.conn().unwrap();
        let mut searched: Vec<&str> = queries.iter().map(|(_, index)| *index).collect();
        searched.sort();
        searched.dedup();
        assert_eq!(binding_indexes(&conn), searched);
        for (query, index) in queries {
            let mut explain = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {query}"))
                .unwrap();
            let unbound = vec![rusqlite::types::Null; explain.parameter_count()];
            let plan: Vec<String> = explain
                .query_map(rusqlite::params_from_iter(unbound), |r| r.get(3))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            let on_bindings: Vec<&String> = plan
                .iter()
                .filter(|step| step.contains(" bindings "))
                .collect();
            assert!(
                on_bindings.len() == 1
                    && on_bindings[0].starts_with("SEARCH bindings USING ")
                    && on_bindings[0].contains(&format!("INDEX {index} ")),
                "{query}: {plan:?}"
            );
        }
    }

    /// The names of the bindings table's indexes, in order.
    fn binding_indexes(conn: &Connection) -> Vec<String> {
        conn.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'bindings' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn bindings_kept_before_the_compact_layout_still_read_and_new_ones_keep_one_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v5.sqlite");
        let old_a = r#"{"sku":"A1","price":50,"updated_at":"2026-01-01T00:00:00Z"}"#;
        let old_b = r#"{"sku":"A1","price":55,"updated_at":"2026-01-02T00:00:00Z"}"#;
        {
            // A file as the version before the compact layout left it, with a binding.
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            for step in STEPS.iter().filter(|s| s.version <= 5) {
                tx.execute_batch(step.sqlite).unwrap();
                tx.pragma_update(None, "user_version", step.version)
                    .unwrap();
            }
            tx.execute(
                "INSERT INTO bindings (entity, sys_a, sys_b, key, id_a, id_b, base_a, base_b)
                 VALUES ('product', 'erp', 'shop', 'A1', '7', '812', ?1, ?2)",
                params![old_a, old_b],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let scope = Scope::new("product", "shop", "erp");
        let got = s.bindings(&scope, &["A1".into()]).unwrap();
        let old = &got["A1"];
        assert_eq!(old.base_a, Some(serde_json::from_str(old_a).unwrap()));
        assert_eq!(old.base_b, Some(serde_json::from_str(old_b).unwrap()));
        assert_eq!(old.id_b.as_deref(), Some("812"));
        // The upgraded file keeps the indexes of a new one: the id indexes, rebuilt by step
        // 7, dropped by step 10.
        assert_eq!(
            binding_indexes(&s.conn().unwrap()),
            binding_indexes(&SqliteStore::in_memory().unwrap().conn().unwrap())
        );

        // Written again, and a binding whose sides agree: each reads back as written, and
        // the second side is kept as what differs from the first.
        let same = json!({"sku": "B2", "name": "Cana", "price": 10});
        let bindings = [
            old.clone(),
            Binding {
                key: "B2".into(),
                id_a: Some("8".into()),
                id_b: Some("813".into()),
                base_a: Some(same.clone()),
                base_b: Some(same.clone()),
                ..Default::default()
            },
        ];
        let rows: Vec<BindingRow> = bindings.iter().map(BindingRow::of).collect();
        s.put_binding_rows(None, &scope, &rows).unwrap();
        let got = s.bindings(&scope, &["A1".into(), "B2".into()]).unwrap();
        assert_eq!(got["A1"], bindings[0]);
        assert_eq!(got["B2"], bindings[1]);
        assert_eq!(s.all_bindings(&scope).unwrap(), bindings.to_vec());
        // Written again, the bases are packed: blobs, not text.
        type Blob = Option<Vec<u8>>;
        let stored: Vec<(Blob, Blob, Blob)> = s
            .conn()
            .unwrap()
            .prepare("SELECT base_a, base_b, base_b_delta FROM bindings ORDER BY key")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        // (Text would not read as bytes.)
        let unpacked = |c: &Blob| match c {
            Some(bytes) => crate::json::packed::unpack_stored(bytes)
                .unwrap()
                .to_string(),
            None => panic!("no base"),
        };
        assert_eq!(stored.len(), 2);
        assert_eq!(unpacked(&stored[0].0), old_a);
        assert_eq!(unpacked(&stored[1].0), same.to_string());
        assert_eq!((&stored[0].1, &stored[1].1), (&None, &None));
        assert_eq!(
            unpacked(&stored[0].2),
            r#"{"price":55,"updated_at":"2026-01-02T00:00:00Z"}"#
        );
        assert_eq!(unpacked(&stored[1].2), "{}");

        // A damaged base is an error of that binding's read, not a misread record.
        s.conn()
            .unwrap()
            .execute(
                "UPDATE bindings SET base_a = x'B10801' WHERE key = 'B2'",
                [],
            )
            .unwrap();
        let err = s.bindings(&scope, &["B2".into()]).unwrap_err().to_string();
        assert!(err.contains("is not a packed record"), "{err}");
        assert_eq!(
            s.bindings(&scope, &["A1".into()]).unwrap()["A1"],
            bindings[0]
        );
    }

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
        assert_eq!(got["A1"].id_b.as_deref(), Some("812"));
        assert_eq!(
            s.cursor("f").unwrap().unwrap().to_rfc3339(),
            "2026-11-26T10:00:00+00:00"
        );
    }

    /// A page's keys are asked for in the order the page lists them: a stored binding is
    /// found whichever of them come first or last, one outside the keys' span is not
    /// asked for, and keys of which none is stored find nothing.
    #[test]
    fn a_pages_bindings_are_found_whatever_the_order_of_its_keys() {
        let s = SqliteStore::in_memory().unwrap();
        let scope = Scope::new("product", "shop", "erp");
        let other = Scope::new("product", "shop2", "erp");
        let binding = |key: &str| Binding {
            key: key.into(),
            id_a: Some(format!("id-{key}")),
            base_a: Some(json!({"sku": key})),
            ..Default::default()
        };
        let put = |scope: &Scope, keys: &[&str]| {
            let rows: Vec<BindingRow> = keys.iter().map(|k| BindingRow::of(&binding(k))).collect();
            s.put_binding_rows(None, scope, &rows).unwrap();
        };
        put(&scope, &["M-2", "SKU-Ă"]);
        put(&other, &["B"]);
        let found = |keys: &[&str]| {
            let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            let mut got: Vec<String> = s.bindings(&scope, &keys).unwrap().into_keys().collect();
            got.sort();
            got
        };
        assert_eq!(found(&["Z", "M-2", "A"]), ["M-2"]);
        assert_eq!(found(&["SKU-Ă", "SKU-A", "M-1"]), ["SKU-Ă"]);
        assert_eq!(found(&["M-3", "M-1", "SKU-B"]), Vec::<String>::new());
        assert_eq!(found(&["N", "Z"]), Vec::<String>::new());
        assert_eq!(found(&["B", "A", "C"]), Vec::<String>::new());
        assert_eq!(found(&[]), Vec::<String>::new());
        assert_eq!(
            binding("M-2"),
            s.bindings(&scope, &["M-2".into()]).unwrap()["M-2"]
        );
    }
}
