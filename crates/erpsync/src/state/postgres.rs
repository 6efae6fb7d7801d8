//! The PostgreSQL state store, for several nodes sharing one state: the tables and semantics
//! of the SQLite store, every call one transaction, leases taken in one atomic statement.
//!
//! The sync `postgres::Client` drives its own runtime and panics inside a tokio runtime. So
//! a few OS threads each own a connection and take the calls sent to the store over one
//! channel, whichever is free: a call that waits on a row lock holds one connection, not the
//! others (the flows' other calls go on). As a `Store`, each call waits for its answer on
//! tokio's blocking pool (`blocking::OffRuntime`), never on a runtime worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, mpsc};

use chrono::{DateTime, Utc};
use postgres::Client;
use serde_json::Value;

mod operator;
mod rows;
mod session;
mod tls;
mod url;

use super::blocking::{Blocking, OffRuntime};
use super::store::Store;
use rows::*;
use session::*;
pub use url::redact_url;
use url::*;

use super::operator::{FlowSwitch, RunLine};
use super::{
    Binding, Failure, Fence, Instance, JournalEntry, JournalState, Lease, NodeRecord, Pruned,
    Result, RunRecord, Scope, StateStoreError, StateWrite, SystemHealth, keep_since,
};

/// Connections a store opens, at most (one per connection thread, each opened at its first
/// call).
const CONNECTIONS: usize = 4;

/// State in a PostgreSQL database, optionally in a schema of its own.
pub struct PostgresStore {
    jobs: mpsc::Sender<Job>,
    /// The URL with its password hidden, for messages.
    shown: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.shown)
            .finish()
    }
}

impl PostgresStore {
    /// Connects to `postgres://…` (or `postgresql://…`), creating the tables if needed. A
    /// `schema=NAME` parameter keeps the tables in that schema, created if missing, so
    /// several erpsync installations (or tests) can share a database.
    pub fn open(url: &str) -> Result<Self> {
        let shown = redact_url(url);
        let target = split_url(url)?;
        let (config, tls) = target.config(&shown)?;
        if let Some(p) = config.get_password() {
            crate::redact::register(&String::from_utf8_lossy(p));
        }
        let (jobs, inbox) = mpsc::channel::<Job>();
        let inbox = Arc::new(Mutex::new(inbox));
        for _ in 0..CONNECTIONS {
            let mut conn = Connection {
                config: config.clone(),
                tls: tls.clone(),
                schema: target.schema.clone(),
                client: None,
            };
            let inbox = inbox.clone();
            std::thread::Builder::new()
                .name("erpsync-postgres".into())
                .spawn(move || {
                    // Ends when the store, and with it the sender, is dropped.
                    loop {
                        let job = inbox.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(&mut conn),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|_| StateStoreError::Disconnected(shown.clone()))?;
        }
        let store = PostgresStore { jobs, shown };
        // Connect now, so a wrong URL or a server that is down fails at start.
        store.call(|_| Ok(()))?;
        Ok(store)
    }

    /// A connection set up exactly as the store sets up its own (session limits, schema,
    /// migrations), for tools and tests that must act as a node would. Blocking: call it off
    /// the async runtime.
    pub fn session(url: &str) -> Result<Client> {
        let target = split_url(url)?;
        let (config, tls) = target.config(&redact_url(url))?;
        connect(&config, &tls, target.schema.as_deref())
    }

    /// Drops the store's schema with everything in it (tests clean up with it).
    pub fn drop_schema(url: &str) -> Result<()> {
        let target = split_url(url)?;
        let Some(schema) = target.schema.clone() else {
            return Ok(());
        };
        let (config, tls) = target.config(&redact_url(url))?;
        // On a thread of its own for the same reason as the store: callers may be async.
        std::thread::spawn(move || -> Result<()> {
            let mut client = config.connect(tls)?;
            client.batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                quote_ident(&schema)
            ))?;
            Ok(())
        })
        .join()
        .map_err(|_| StateStoreError::Disconnected(redact_url(url)))?
    }

    /// Whether the session to the server is encrypted (`sslmode` and the server decide).
    pub fn encrypted(&self) -> Result<bool> {
        self.call(|c| {
            let row = c.query_one(
                "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
                &[],
            )?;
            Ok(row.try_get(0)?)
        })
    }

    /// A server setting, as `SHOW` gives it.
    pub fn setting(&self, name: &str) -> Result<String> {
        let name = name.to_string();
        self.call(move |c| {
            let row = c.query_one("SELECT current_setting($1)", &[&name])?;
            Ok(row.try_get(0)?)
        })
    }

    /// Runs `f` on a free connection thread and waits for its answer.
    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |conn| {
            let _ = reply.send(conn.client().and_then(f));
        });
        let gone = || StateStoreError::Disconnected(self.shown.clone());
        self.jobs.send(job).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

impl From<PostgresStore> for Store {
    fn from(s: PostgresStore) -> Store {
        Store::of(std::sync::Arc::new(OffRuntime(std::sync::Arc::new(s))))
    }
}

impl PostgresStore {
    fn write(&self, fence: Option<Fence>, w: StateWrite) -> Result<i64> {
        self.call(move |c| apply(c, fence.as_ref(), &w))
    }
}

impl Blocking for PostgresStore {
    fn put_bindings(&self, scope: &Scope, bindings: &[Binding]) -> Result<()> {
        self.write(
            None,
            StateWrite::PutBindings(scope.clone(), bindings.to_vec()),
        )
        .map(drop)
    }

    fn set_cursor(&self, flow: &str, at: DateTime<Utc>) -> Result<()> {
        self.write(None, StateWrite::SetCursor(flow.to_string(), at))
            .map(drop)
    }

    fn journal_begin(&self, e: &JournalEntry) -> Result<i64> {
        self.write(None, StateWrite::JournalBegin(e.clone()))
    }

    fn journal_finish(
        &self,
        id: i64,
        state: JournalState,
        binding: Option<(&Scope, &Binding)>,
    ) -> Result<()> {
        self.write(
            None,
            StateWrite::JournalFinish(id, state, owned_binding(binding)),
        )
        .map(drop)
    }

    fn journal_progress(&self, id: i64, payload: &Value) -> Result<()> {
        self.write(None, StateWrite::JournalProgress(id, payload.clone()))
            .map(drop)
    }

    fn journal_settle(
        &self,
        flow: &str,
        key: &str,
        binding: Option<(&Scope, &Binding)>,
    ) -> Result<usize> {
        let w =
            StateWrite::JournalSettle(flow.to_string(), key.to_string(), owned_binding(binding));
        Ok(usize::try_from(self.write(None, w)?).unwrap_or(0))
    }

    fn put_failure(&self, f: &Failure) -> Result<i64> {
        self.write(None, StateWrite::PutFailure(f.clone()))
    }

    fn clear_failure(&self, flow: &str, key: &str) -> Result<()> {
        self.write(
            None,
            StateWrite::ClearFailure(flow.to_string(), key.to_string()),
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
        self.write(
            None,
            StateWrite::RunStart {
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
        self.write(
            None,
            StateWrite::RunFinish {
                id,
                at,
                status: status.to_string(),
                counts: counts.clone(),
                error: error.map(str::to_string),
            },
        )
        .map(drop)
    }

    fn fenced(&self, fence: &Fence, write: StateWrite) -> Result<i64> {
        self.write(Some(fence.clone()), write)
    }

    fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        node: &str,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
        take_from: Option<&str>,
    ) -> Result<Option<i64>> {
        let (name, holder, node) = (name.to_string(), holder.to_string(), node.to_string());
        let take_from = take_from.map(str::to_string);
        let until = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        // One statement: the row lock of the upsert makes take-or-renew atomic between
        // nodes, with no read-then-write window. The sequence makes every grant's token
        // larger than the one before (a refused attempt only leaves a gap).
        self.call(move |c| {
            let row = match c.query_opt(
                "INSERT INTO leases (name, holder, node, token, expires_at)
                 VALUES ($1, $2, $3, nextval('lease_tokens'), $5)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, node = excluded.node,
                   token = excluded.token, expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder OR leases.expires_at <= $4
                   OR leases.holder = $6
                 RETURNING token",
                &[&name, &holder, &node, &now, &until, &take_from],
            ) {
                Ok(row) => row,
                // The row is locked past `lock_timeout` by a holder stuck in a write: it is
                // still held, as far as this attempt can tell.
                Err(e) if e.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            };
            Ok(row.map(|r| r.try_get(0)).transpose()?)
        })
    }

    fn renew_lease(
        &self,
        name: &str,
        token: i64,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<bool> {
        let name = name.to_string();
        let until = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        self.call(move |c| {
            let n = c.execute(
                "UPDATE leases SET expires_at = $3 WHERE name = $1 AND token = $2",
                &[&name, &token, &until],
            )?;
            Ok(n > 0)
        })
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.call(move |c| {
            c.execute(
                "DELETE FROM leases WHERE name = $1 AND holder = $2",
                &[&name, &holder],
            )?;
            Ok(())
        })
    }

    fn abandon_runs(
        &self,
        flow: Option<&str>,
        of: Option<&str>,
        keep: &str,
        at: DateTime<Utc>,
        why: &str,
    ) -> Result<usize> {
        let (flow, of) = (flow.map(str::to_string), of.map(str::to_string));
        let (keep, why) = (keep.to_string(), why.to_string());
        self.call(move |c| {
            let n = c.execute(
                "UPDATE runs SET status = 'abandoned', finished_at = $4, error = $5
                 WHERE status = 'running' AND ($1::text IS NULL OR flow = $1)
                   AND ($2::text IS NULL OR instance = $2) AND instance IS DISTINCT FROM $3",
                &[&flow, &of, &keep, &at, &why],
            )?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    fn heartbeat(&self, instance: &str, node: &str, now: DateTime<Utc>) -> Result<Vec<NodeRecord>> {
        let (instance, node) = (instance.to_string(), node.to_string());
        self.call(move |c| {
            c.execute(
                "INSERT INTO nodes (instance, node, started_at, seen_at) VALUES ($1, $2, $3, $3)
                 ON CONFLICT (instance) DO UPDATE SET node = excluded.node, seen_at = excluded.seen_at",
                &[&instance, &node, &now],
            )?;
            let rows = c.query(
                "SELECT instance, node, started_at, seen_at FROM nodes ORDER BY node, instance",
                &[],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(NodeRecord {
                        instance: r.try_get(0)?,
                        node: r.try_get(1)?,
                        started_at: r.try_get(2)?,
                        seen_at: r.try_get(3)?,
                    })
                })
                .collect()
        })
    }

    fn prune(&self, runs_before: DateTime<Utc>, nodes_before: DateTime<Utc>) -> Result<Pruned> {
        self.call(move |c| {
            let runs = c.execute(
                "DELETE FROM runs WHERE finished_at IS NOT NULL AND finished_at < $1",
                &[&runs_before],
            )?;
            let nodes = c.execute("DELETE FROM nodes WHERE seen_at < $1", &[&nodes_before])?;
            Ok(Pruned {
                runs: usize::try_from(runs).unwrap_or(usize::MAX),
                nodes: usize::try_from(nodes).unwrap_or(usize::MAX),
            })
        })
    }

    fn awaiting_actions(&self, scope: &Scope) -> Result<Vec<Binding>> {
        let scope = scope.clone();
        self.call(move |c| {
            let rows = c.query(
                &format!(
                    "SELECT {BINDING_COLS} FROM bindings
                     WHERE entity = $1 AND sys_a = $2 AND sys_b = $3
                       AND exported_at IS NOT NULL AND NOT actions_done ORDER BY key"
                ),
                &[&scope.entity, &scope.a, &scope.b],
            )?;
            rows.iter().map(row_binding).collect()
        })
    }

    fn bindings(&self, scope: &Scope, keys: &[String]) -> Result<HashMap<String, Binding>> {
        let (scope, keys) = (scope.clone(), keys.to_vec());
        self.call(move |c| {
            let rows = c.query(
                &format!(
                    "SELECT {BINDING_COLS} FROM bindings
                     WHERE entity = $1 AND sys_a = $2 AND sys_b = $3 AND key = ANY($4)"
                ),
                &[&scope.entity, &scope.a, &scope.b, &keys],
            )?;
            rows.iter()
                .map(|r| row_binding(r).map(|b| (b.key.clone(), b)))
                .collect()
        })
    }

    fn all_bindings(&self, scope: &Scope) -> Result<Vec<Binding>> {
        let scope = scope.clone();
        self.call(move |c| {
            let rows = c.query(
                &format!(
                    "SELECT {BINDING_COLS} FROM bindings
                     WHERE entity = $1 AND sys_a = $2 AND sys_b = $3 ORDER BY key"
                ),
                &[&scope.entity, &scope.a, &scope.b],
            )?;
            rows.iter().map(row_binding).collect()
        })
    }

    fn binding_count(&self, scope: &Scope) -> Result<usize> {
        let scope = scope.clone();
        self.call(move |c| {
            let n: i64 = c
                .query_one(
                    "SELECT COUNT(*) FROM bindings WHERE entity = $1 AND sys_a = $2 AND sys_b = $3",
                    &[&scope.entity, &scope.a, &scope.b],
                )?
                .try_get(0)?;
            Ok(usize::try_from(n).unwrap_or(0))
        })
    }

    fn binding_by_id(&self, scope: &Scope, side_a: bool, id: &str) -> Result<Option<Binding>> {
        let (scope, id) = (scope.clone(), id.to_string());
        let col = if side_a { "id_a" } else { "id_b" };
        self.call(move |c| {
            c.query_opt(
                &format!(
                    "SELECT {BINDING_COLS} FROM bindings
                     WHERE entity = $1 AND sys_a = $2 AND sys_b = $3 AND {col} = $4 LIMIT 1"
                ),
                &[&scope.entity, &scope.a, &scope.b, &id],
            )?
            .as_ref()
            .map(row_binding)
            .transpose()
        })
    }

    fn cursor(&self, flow: &str) -> Result<Option<DateTime<Utc>>> {
        let flow = flow.to_string();
        self.call(move |c| {
            Ok(
                c.query_opt("SELECT since FROM cursors WHERE flow = $1", &[&flow])?
                    .map(|r| r.try_get(0))
                    .transpose()?,
            )
        })
    }

    fn is_absent(&self, flow: &str, key: &str, since: DateTime<Utc>) -> Result<bool> {
        let (flow, key) = (flow.to_string(), key.to_string());
        self.call(move |c| {
            Ok(c.query_opt(
                "SELECT 1 FROM known_absent WHERE flow = $1 AND key = $2 AND read_at >= $3",
                &[&flow, &key, &since],
            )?
            .is_some())
        })
    }

    fn note_absent(&self, flow: &str, key: &str, at: DateTime<Utc>) -> Result<()> {
        let (flow, key) = (flow.to_string(), key.to_string());
        self.call(move |c| {
            c.execute(
                "INSERT INTO known_absent (flow, key, read_at) VALUES ($1, $2, $3)
                 ON CONFLICT (flow, key) DO UPDATE SET read_at = excluded.read_at",
                &[&flow, &key, &at],
            )?;
            Ok(())
        })
    }

    fn forget_absent(&self, flow: &str, key: &str) -> Result<()> {
        let (flow, key) = (flow.to_string(), key.to_string());
        self.call(move |c| {
            c.execute(
                "DELETE FROM known_absent WHERE flow = $1 AND key = $2",
                &[&flow, &key],
            )?;
            Ok(())
        })
    }

    fn journal_pending(&self, flow: Option<&str>) -> Result<Vec<JournalEntry>> {
        let flow = flow.map(str::to_string);
        self.call(move |c| {
            let rows = c.query(
                "SELECT id, flow, key, target, operation, idempotency_key, payload, created_at
                 FROM journal WHERE ($1::text IS NULL OR flow = $1) AND state = 'pending'
                 ORDER BY id",
                &[&flow],
            )?;
            rows.iter().map(row_journal).collect()
        })
    }

    fn failures(&self, flow: Option<&str>) -> Result<Vec<Failure>> {
        let flow = flow.map(str::to_string);
        self.call(move |c| {
            let rows = c.query(
                &format!(
                    "SELECT {FAILURE_COLS} FROM failures
                     WHERE ($1::text IS NULL OR flow = $1) ORDER BY id"
                ),
                &[&flow],
            )?;
            rows.iter().map(row_failure).collect()
        })
    }

    fn failure(&self, id: i64) -> Result<Option<Failure>> {
        self.call(move |c| {
            c.query_opt(
                &format!("SELECT {FAILURE_COLS} FROM failures WHERE id = $1"),
                &[&id],
            )?
            .as_ref()
            .map(row_failure)
            .transpose()
        })
    }

    fn discard_failure(&self, id: i64) -> Result<bool> {
        self.call(move |c| Ok(c.execute("DELETE FROM failures WHERE id = $1", &[&id])? > 0))
    }

    fn runs(&self, flow: Option<&str>, limit: usize) -> Result<Vec<RunRecord>> {
        let flow = flow.map(str::to_string);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |c| {
            let rows = c.query(
                &format!(
                    "SELECT {RUN_COLS} FROM runs WHERE ($1::text IS NULL OR flow = $1)
                     ORDER BY id DESC LIMIT $2"
                ),
                &[&flow, &limit],
            )?;
            rows.iter().map(row_run).collect()
        })
    }

    fn leases(&self) -> Result<Vec<Lease>> {
        self.call(|c| {
            let rows = c.query(
                "SELECT name, holder, node, token, expires_at FROM leases ORDER BY name",
                &[],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(Lease {
                        name: r.try_get(0)?,
                        holder: r.try_get(1)?,
                        node: r.try_get(2)?,
                        token: r.try_get(3)?,
                        expires_at: r.try_get(4)?,
                    })
                })
                .collect()
        })
    }

    fn claim_firing(&self, name: &str, at: DateTime<Utc>) -> Result<bool> {
        let name = name.to_string();
        self.call(move |c| {
            let n = c.execute(
                "INSERT INTO firings (name, fired_at) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET fired_at = excluded.fired_at
                 WHERE firings.fired_at < excluded.fired_at",
                &[&name, &at],
            )?;
            Ok(n > 0)
        })
    }

    fn remember_delivery(
        &self,
        webhook: &str,
        id: &str,
        at: DateTime<Utc>,
        keep: std::time::Duration,
    ) -> Result<bool> {
        let (webhook, id) = (webhook.to_string(), id.to_string());
        let since = keep_since(at, keep);
        self.call(move |c| {
            let mut tx = c.transaction()?;
            // Old rows another node is deleting right now are skipped, not waited for: two
            // prunes locking the same rows in different orders could deadlock.
            tx.execute(
                "DELETE FROM deliveries WHERE (webhook, id) IN (
                   SELECT webhook, id FROM deliveries WHERE received_at < $1
                   FOR UPDATE SKIP LOCKED)",
                &[&since],
            )?;
            // The unique key decides between nodes: a twin insert waits for this
            // transaction and then finds the row, so exactly one node inserts it.
            let n = tx.execute(
                "INSERT INTO deliveries (webhook, id, received_at) VALUES ($1, $2, $3)
                 ON CONFLICT (webhook, id) DO NOTHING",
                &[&webhook, &id, &at],
            )?;
            tx.commit()?;
            Ok(n > 0)
        })
    }

    fn forget_delivery(&self, webhook: &str, id: &str) -> Result<()> {
        let (webhook, id) = (webhook.to_string(), id.to_string());
        self.call(move |c| {
            c.execute(
                "DELETE FROM deliveries WHERE webhook = $1 AND id = $2",
                &[&webhook, &id],
            )?;
            Ok(())
        })
    }

    fn put_system_health(&self, h: &SystemHealth) -> Result<()> {
        let health =
            serde_json::to_string(h).map_err(|e| StateStoreError::Corrupt(e.to_string()))?;
        let (system, at) = (h.system.clone(), h.checked_at);
        self.call(move |c| {
            c.execute(
                "INSERT INTO system_health (system, health, checked_at) VALUES ($1, $2, $3)
                 ON CONFLICT (system) DO UPDATE SET health = excluded.health, checked_at = excluded.checked_at",
                &[&system, &health, &at],
            )?;
            Ok(())
        })
    }

    fn system_health(&self) -> Result<Vec<SystemHealth>> {
        self.call(move |c| {
            c.query("SELECT health FROM system_health ORDER BY system", &[])?
                .iter()
                .map(|r| {
                    let text: String = r.try_get(0)?;
                    serde_json::from_str(&text).map_err(|e| StateStoreError::Corrupt(e.to_string()))
                })
                .collect()
        })
    }

    // The operator's state: see `state::operator` and `postgres/operator.rs`.
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
