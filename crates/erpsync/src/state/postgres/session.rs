//! A node's PostgreSQL session: how it connects (session limits, search path), migrates the
//! schema at first connection, and reconnects after the server dropped it.

use postgres::{Client, GenericClient};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::state::migrate::{STEPS, latest};
use crate::state::{Result, StateStoreError};

/// Nodes starting together would race on `CREATE TABLE IF NOT EXISTS` (it is not safe
/// against a concurrent twin), so schema creation takes this advisory lock.
pub(super) const SCHEMA_LOCK: i64 = 0x0065_7270_7379_6e63; // "erpsync" in ASCII

/// Limits every session sets, so a process that stops inside a transaction (paused by the
/// host, a stalled disk, a cut connection) cannot block the other nodes for longer than a
/// few seconds: the server ends a session idle in a transaction, which releases its locks
/// (what it had not committed is not made, and a fenced write is refused on resume), and no
/// statement waits on a lock for ever.
pub(super) const SESSION_LIMITS: &str =
    "SET idle_in_transaction_session_timeout = '5s'; SET lock_timeout = '10s'";

/// A call the connection thread runs.
pub(super) type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The connection thread's side: reconnects when the server dropped the connection, so a
/// restart of PostgreSQL costs the calls made while it was down, not the daemon.
pub(super) struct Connection {
    pub(super) config: postgres::Config,
    pub(super) tls: MakeRustlsConnect,
    pub(super) schema: Option<String>,
    pub(super) client: Option<Client>,
}

impl Connection {
    pub(super) fn client(&mut self) -> Result<&mut Client> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            self.client = Some(connect(&self.config, &self.tls, self.schema.as_deref())?);
        }
        self.client
            .as_mut()
            .ok_or_else(|| StateStoreError::Disconnected(String::new()))
    }
}

pub(super) fn connect(
    config: &postgres::Config,
    tls: &MakeRustlsConnect,
    schema: Option<&str>,
) -> Result<Client> {
    let mut client = config.connect(tls.clone())?;
    // `… IF NOT EXISTS` on what exists is a NOTICE, which the driver logs at INFO: a
    // start on an existing schema must not chatter.
    client.batch_execute("SET client_min_messages TO warning")?;
    client.batch_execute(SESSION_LIMITS)?;
    if let Some(s) = schema {
        // The session keeps it; the schema itself may not exist yet (created below).
        client.batch_execute(&format!("SET search_path TO {}", quote_ident(s)))?;
    }
    if applied_version(&mut client)? >= latest() {
        return Ok(client);
    }
    let mut tx = client.transaction()?;
    // Nodes starting together queue here for as long as a migration takes.
    tx.batch_execute("SET LOCAL lock_timeout = '60s'")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
    if let Some(s) = schema {
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(s)))?;
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, name TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )?;
    // Another node may have migrated it while this one waited for the lock.
    let version = applied_version(&mut tx)?;
    for step in STEPS.iter().filter(|s| s.version > version) {
        tx.batch_execute(step.postgres)?;
        let v = i32::try_from(step.version).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&v, &step.name],
        )?;
        tracing::info!(
            version = step.version,
            step = step.name,
            "state schema step applied"
        );
    }
    tx.commit()?;
    Ok(client)
}

/// The last schema step applied to the database (0: none, or made before versioning).
pub(super) fn applied_version(c: &mut impl GenericClient) -> Result<i64> {
    let exists: bool = c
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])?
        .try_get(0)?;
    if !exists {
        return Ok(0);
    }
    let v: i32 = c
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )?
        .try_get(0)?;
    Ok(i64::from(v))
}

pub(super) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
