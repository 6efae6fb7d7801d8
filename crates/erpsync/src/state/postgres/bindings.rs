//! The bindings role on PostgreSQL: bindings, cursors, and the keys a target lacked.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::PostgresStore;
use super::rows::{BINDING_COLS, row_binding};
use crate::state::store::Bindings;
use crate::state::{Binding, FlowName, RecordKey, Result, Scope, StateWrite};

#[async_trait]
impl Bindings for PostgresStore {
    async fn bindings(
        &self,
        scope: &Scope,
        keys: &[RecordKey<'_>],
    ) -> Result<HashMap<String, Binding>> {
        let keys: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
        let c = self.pool.get().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {BINDING_COLS} FROM bindings
                     WHERE entity = $1 AND sys_a = $2 AND sys_b = $3 AND key = ANY($4)"
                ),
                &[&scope.entity, &scope.a, &scope.b, &keys],
            )
            .await?;
        rows.iter()
            .map(|r| row_binding(r).map(|b| (b.key.clone(), b)))
            .collect()
    }

    async fn all_bindings(&self, scope: &Scope) -> Result<Vec<Binding>> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {BINDING_COLS} FROM bindings
                     WHERE entity = $1 AND sys_a = $2 AND sys_b = $3 ORDER BY key"
                ),
                &[&scope.entity, &scope.a, &scope.b],
            )
            .await?;
        rows.iter().map(row_binding).collect()
    }

    async fn binding_count(&self, scope: &Scope) -> Result<usize> {
        let c = self.pool.get().await?;
        let n: i64 = c
            .query_one(
                "SELECT COUNT(*) FROM bindings WHERE entity = $1 AND sys_a = $2 AND sys_b = $3",
                &[&scope.entity, &scope.a, &scope.b],
            )
            .await?
            .try_get(0)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    async fn put_bindings(&self, scope: &Scope, bindings: Vec<Binding>) -> Result<()> {
        let w = StateWrite::PutBindings(scope.clone(), bindings);
        self.write(None, &w).await.map(drop)
    }

    async fn cursor(&self, flow: FlowName<'_>) -> Result<Option<DateTime<Utc>>> {
        let flow = flow.as_str();
        let c = self.pool.get().await?;
        Ok(
            c.query_opt("SELECT since FROM cursors WHERE flow = $1", &[&flow])
                .await?
                .map(|r| r.try_get(0))
                .transpose()?,
        )
    }

    async fn set_cursor(&self, flow: FlowName<'_>, at: DateTime<Utc>) -> Result<()> {
        let flow = flow.as_str();
        let w = StateWrite::SetCursor(flow.to_string(), at);
        self.write(None, &w).await.map(drop)
    }

    async fn is_absent(
        &self,
        flow: FlowName<'_>,
        key: RecordKey<'_>,
        since: DateTime<Utc>,
    ) -> Result<bool> {
        let flow = flow.as_str();
        let key = key.as_str();
        let c = self.pool.get().await?;
        Ok(c.query_opt(
            "SELECT 1 FROM known_absent WHERE flow = $1 AND key = $2 AND read_at >= $3",
            &[&flow, &key, &since],
        )
        .await?
        .is_some())
    }

    async fn note_absent(
        &self,
        flow: FlowName<'_>,
        key: RecordKey<'_>,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let flow = flow.as_str();
        let key = key.as_str();
        let c = self.pool.get().await?;
        c.execute(
            "INSERT INTO known_absent (flow, key, read_at) VALUES ($1, $2, $3)
             ON CONFLICT (flow, key) DO UPDATE SET read_at = excluded.read_at",
            &[&flow, &key, &at],
        )
        .await?;
        Ok(())
    }

    async fn forget_absent(&self, flow: FlowName<'_>, key: RecordKey<'_>) -> Result<()> {
        let flow = flow.as_str();
        let key = key.as_str();
        let c = self.pool.get().await?;
        c.execute(
            "DELETE FROM known_absent WHERE flow = $1 AND key = $2",
            &[&flow, &key],
        )
        .await?;
        Ok(())
    }

    async fn awaiting_actions(&self, scope: &Scope) -> Result<Vec<Binding>> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {BINDING_COLS} FROM bindings
                     WHERE entity = $1 AND sys_a = $2 AND sys_b = $3
                       AND exported_at IS NOT NULL AND NOT actions_done ORDER BY key"
                ),
                &[&scope.entity, &scope.a, &scope.b],
            )
            .await?;
        rows.iter().map(row_binding).collect()
    }
}
