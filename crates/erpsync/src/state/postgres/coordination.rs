//! The coordination role on PostgreSQL: what nodes agree on through the database (leases
//! and the writes they fence, schedule firings, webhook deliveries, processes alive).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;

use super::PostgresStore;
use crate::state::store::Coordination;
use crate::state::{Fence, Lease, NodeRecord, Pruned, Result, StateWrite, keep_since};

#[async_trait]
impl Coordination for PostgresStore {
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        node: &str,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
        take_from: Option<&str>,
    ) -> Result<Option<i64>> {
        let until = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let c = self.pool.get().await?;
        // One statement: the row lock of the upsert makes take-or-renew atomic between
        // nodes, with no read-then-write window. The sequence makes every grant's token
        // larger than the one before (a refused attempt only leaves a gap). `now` is when
        // the attempt was sent; an attempt that waited on the row lock (the holder inside a
        // fenced write, or its renewal queued first) judges the expiry when the wait ended,
        // as the server measured it: otherwise a holder cut off inside a write, whose late
        // renewal lands as its session is ended, would look alive to an attempt sent before.
        let row = match c
            .query_opt(
                "INSERT INTO leases (name, holder, node, token, expires_at)
                 VALUES ($1, $2, $3, nextval('lease_tokens'), $5)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, node = excluded.node,
                   token = excluded.token, expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder
                   OR leases.expires_at <= $4::timestamptz + (clock_timestamp() - statement_timestamp())
                   OR leases.holder = $6
                 RETURNING token",
                &[&name, &holder, &node, &now, &until, &take_from],
            )
            .await
        {
            Ok(row) => row,
            // The row is locked past `lock_timeout` by a holder stuck in a write: it is
            // still held, as far as this attempt can tell.
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn renew_lease(
        &self,
        name: &str,
        token: i64,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<bool> {
        let until = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let c = self.pool.get().await?;
        let n = c
            .execute(
                "UPDATE leases SET expires_at = $3 WHERE name = $1 AND token = $2",
                &[&name, &token, &until],
            )
            .await?;
        Ok(n > 0)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let c = self.pool.get().await?;
        c.execute(
            "DELETE FROM leases WHERE name = $1 AND holder = $2",
            &[&name, &holder],
        )
        .await?;
        Ok(())
    }

    async fn leases(&self) -> Result<Vec<Lease>> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT name, holder, node, token, expires_at FROM leases ORDER BY name",
                &[],
            )
            .await?;
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
    }

    async fn claim_firing(&self, name: &str, at: DateTime<Utc>) -> Result<bool> {
        let c = self.pool.get().await?;
        let n = c
            .execute(
                "INSERT INTO firings (name, fired_at) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET fired_at = excluded.fired_at
                 WHERE firings.fired_at < excluded.fired_at",
                &[&name, &at],
            )
            .await?;
        Ok(n > 0)
    }

    async fn remember_delivery(
        &self,
        webhook: &str,
        id: &str,
        at: DateTime<Utc>,
        keep: std::time::Duration,
    ) -> Result<bool> {
        let since = keep_since(at, keep);
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        // Old rows another node is deleting right now are skipped, not waited for: two
        // prunes locking the same rows in different orders could deadlock.
        tx.execute(
            "DELETE FROM deliveries WHERE (webhook, id) IN (
               SELECT webhook, id FROM deliveries WHERE received_at < $1
               FOR UPDATE SKIP LOCKED)",
            &[&since],
        )
        .await?;
        // The unique key decides between nodes: a twin insert waits for this
        // transaction and then finds the row, so exactly one node inserts it.
        let n = tx
            .execute(
                "INSERT INTO deliveries (webhook, id, received_at) VALUES ($1, $2, $3)
                 ON CONFLICT (webhook, id) DO NOTHING",
                &[&webhook, &id, &at],
            )
            .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn forget_delivery(&self, webhook: &str, id: &str) -> Result<()> {
        let c = self.pool.get().await?;
        c.execute(
            "DELETE FROM deliveries WHERE webhook = $1 AND id = $2",
            &[&webhook, &id],
        )
        .await?;
        Ok(())
    }

    async fn fenced(&self, fence: &Fence, write: StateWrite) -> Result<i64> {
        self.write(Some(fence), &write).await
    }

    async fn heartbeat(
        &self,
        instance: &str,
        node: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<NodeRecord>> {
        let c = self.pool.get().await?;
        c.execute(
            "INSERT INTO nodes (instance, node, started_at, seen_at) VALUES ($1, $2, $3, $3)
             ON CONFLICT (instance) DO UPDATE SET node = excluded.node, seen_at = excluded.seen_at",
            &[&instance, &node, &now],
        )
        .await?;
        let rows = c
            .query(
                "SELECT instance, node, started_at, seen_at FROM nodes ORDER BY node, instance",
                &[],
            )
            .await?;
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
    }

    async fn prune(
        &self,
        runs_before: DateTime<Utc>,
        nodes_before: DateTime<Utc>,
    ) -> Result<Pruned> {
        let c = self.pool.get().await?;
        let runs = c
            .execute(
                "DELETE FROM runs WHERE finished_at IS NOT NULL AND finished_at < $1",
                &[&runs_before],
            )
            .await?;
        let nodes = c
            .execute("DELETE FROM nodes WHERE seen_at < $1", &[&nodes_before])
            .await?;
        Ok(Pruned {
            runs: usize::try_from(runs).unwrap_or(usize::MAX),
            nodes: usize::try_from(nodes).unwrap_or(usize::MAX),
        })
    }
}
