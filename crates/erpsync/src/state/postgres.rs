//! The PostgreSQL state store, for several nodes sharing one state: the tables and semantics
//! of the SQLite store, every call one transaction, leases taken in one atomic statement.
//!
//! The driver is `tokio-postgres`, used from the async role traits directly: each call takes
//! a connection of the store's own small pool (`pool.rs`), so a call that waits on a row
//! lock holds one connection, not the others (the flows' other calls go on), and no call
//! holds a runtime worker while it waits. Each connection is driven by a task on the runtime
//! that opened it and serves only calls made on that runtime (a call from another one, such
//! as a lease released as a runtime shuts down, gets a connection of its own).
//!
//! `url.rs` reads the URL (`schema=`, TLS), `session.rs` connects and migrates, `rows.rs`
//! maps rows and makes the writes; one file per role holds the role's calls.

use std::sync::Arc;

mod bindings;
mod coordination;
mod failures;
mod journal;
mod operator;
mod pool;
mod rows;
mod runs;
mod session;
mod tls;
mod url;

use super::store::Store;
use super::{Fence, Result, StateWrite};
use pool::{CONNECTIONS, Pool};
use session::quote_ident;
pub use tls::TlsSetupError;
pub use url::redact_url;
use url::split_url;

/// State in a PostgreSQL database, optionally in a schema of its own.
pub struct PostgresStore {
    pool: Pool,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.pool.session().shown)
            .finish()
    }
}

impl PostgresStore {
    /// Connects to `postgres://…` (or `postgresql://…`), creating the tables if needed. A
    /// `schema=NAME` parameter keeps the tables in that schema, created if missing, so
    /// several erpsync installations (or tests) can share a database. The store's
    /// connections run on the current tokio runtime.
    pub async fn open(url: &str) -> Result<Self> {
        Self::with_connections(url, CONNECTIONS).await
    }

    /// `open`, with at most `connections` connections open at once.
    async fn with_connections(url: &str, connections: usize) -> Result<Self> {
        let session = split_url(url)?.session(&redact_url(url))?;
        if let Some(p) = session.config.get_password() {
            crate::redact::register(&String::from_utf8_lossy(p));
        }
        let store = PostgresStore {
            pool: Pool::new(session, connections),
        };
        // Connect now, so a wrong URL or a server that is down fails at start.
        drop(store.pool.get().await?);
        Ok(store)
    }

    /// A connection set up exactly as the store sets up its own (session limits, schema,
    /// migrations), for tools and tests that must act as a node would. It runs on the
    /// current runtime.
    pub async fn session(url: &str) -> Result<tokio_postgres::Client> {
        split_url(url)?.session(&redact_url(url))?.connect().await
    }

    /// Drops the store's schema with everything in it (tests clean up with it).
    pub async fn drop_schema(url: &str) -> Result<()> {
        let target = split_url(url)?;
        let Some(schema) = target.schema.clone() else {
            return Ok(());
        };
        let client = target.session(&redact_url(url))?.plain().await?;
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                quote_ident(&schema)
            ))
            .await?;
        Ok(())
    }

    /// Whether the session to the server is encrypted (`sslmode` and the server decide).
    pub async fn encrypted(&self) -> Result<bool> {
        let c = self.pool.get().await?;
        let row = c
            .query_one(
                "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
                &[],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    /// A server setting, as `SHOW` gives it.
    pub async fn setting(&self, name: &str) -> Result<String> {
        let c = self.pool.get().await?;
        let row = c.query_one("SELECT current_setting($1)", &[&name]).await?;
        Ok(row.try_get(0)?)
    }

    /// Makes one write in a transaction of its own, under `fence` when given.
    async fn write(&self, fence: Option<&Fence>, w: &StateWrite) -> Result<i64> {
        let mut c = self.pool.get().await?;
        rows::apply(&mut c, fence, w).await
    }
}

impl From<PostgresStore> for Store {
    fn from(s: PostgresStore) -> Store {
        Store::of(Arc::new(s))
    }
}
