//! A node's PostgreSQL session: how it connects (TLS, session limits, search path) and
//! migrates the schema at its first connection. The driver is async: each connection is
//! driven by a task on the runtime that opened it.

use tokio_postgres::{Client, GenericClient};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::state::Result;
use crate::state::migrate::{STEPS, latest};

/// Nodes starting together would race on `CREATE TABLE IF NOT EXISTS` (it is not safe
/// against a concurrent twin), so schema creation takes this advisory lock.
const SCHEMA_LOCK: i64 = 0x0065_7270_7379_6e63; // "erpsync" in ASCII

/// Limits every session sets, so a process that stops inside a transaction (paused by the
/// host, a stalled disk, a cut connection) cannot block the other nodes for longer than a
/// few seconds: the server ends a session idle in a transaction, which releases its locks
/// (what it had not committed is not made, and a fenced write is refused on resume), and no
/// statement waits on a lock for ever.
const SESSION_LIMITS: &str =
    "SET idle_in_transaction_session_timeout = '5s'; SET lock_timeout = '10s'";

/// What a connection of one database is opened with.
#[derive(Clone)]
pub(super) struct Session {
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: MakeRustlsConnect,
    pub(super) schema: Option<String>,
    /// The URL with its password hidden, for messages.
    pub(super) shown: String,
}

impl Session {
    /// A connection set up for erpsync, the schema migrated. Its driver runs as a task on
    /// the current runtime until the client is dropped or the server ends the session.
    pub(super) async fn connect(&self) -> Result<Client> {
        let client = self.plain().await?;
        // `… IF NOT EXISTS` on what exists is a NOTICE, which the driver logs at INFO: a
        // start on an existing schema must not chatter.
        client
            .batch_execute("SET client_min_messages TO warning")
            .await?;
        client.batch_execute(SESSION_LIMITS).await?;
        if let Some(s) = &self.schema {
            // The session keeps it; the schema itself may not exist yet (created below).
            client
                .batch_execute(&format!("SET search_path TO {}", quote_ident(s)))
                .await?;
        }
        self.migrate(client).await
    }

    /// A connection as the URL asks for it, nothing set.
    pub(super) async fn plain(&self) -> Result<Client> {
        let (client, connection) = self.config.connect(self.tls.clone()).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "state database connection ended");
            }
        });
        Ok(client)
    }

    async fn migrate(&self, mut client: Client) -> Result<Client> {
        if applied_version(&client).await? >= latest() {
            return Ok(client);
        }
        let tx = client.transaction().await?;
        // Nodes starting together queue here for as long as a migration takes.
        tx.batch_execute("SET LOCAL lock_timeout = '60s'").await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await?;
        if let Some(s) = &self.schema {
            tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(s)))
                .await?;
        }
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY, name TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await?;
        // Another node may have migrated it while this one waited for the lock.
        let version = applied_version(&tx).await?;
        for step in STEPS.iter().filter(|s| s.version > version) {
            tx.batch_execute(step.postgres).await?;
            let v = i32::try_from(step.version).unwrap_or(i32::MAX);
            tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[&v, &step.name],
            )
            .await?;
            tracing::info!(
                version = step.version,
                step = step.name,
                "state schema step applied"
            );
        }
        tx.commit().await?;
        Ok(client)
    }
}

/// The last schema step applied to the database (0: none, or made before versioning).
async fn applied_version(c: &impl GenericClient) -> Result<i64> {
    let exists: bool = c
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await?
        .try_get(0)?;
    if !exists {
        return Ok(0);
    }
    let v: i32 = c
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .try_get(0)?;
    Ok(i64::from(v))
}

/// `s` as an SQL identifier (the schema's name).
pub(super) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
