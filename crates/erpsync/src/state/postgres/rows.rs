//! Rows to records and records to rows, and the writes a run makes (fenced or not), each in
//! one transaction.

use serde_json::Value;
use tokio_postgres::{Client, GenericClient, Row};

use crate::state::model::StoredBases;
use crate::state::{
    Binding, Failure, Fence, JournalEntry, JournalState, Result, RunRecord, Scope, StateStoreError,
    StateWrite, json_column as json,
};

pub(super) const BINDING_COLS: &str =
    "key, id_a, id_b, base_a, base_b, exported_at, parked, actions_done, base_b_delta";

pub(super) fn row_binding(r: &Row) -> Result<Binding> {
    let (base_a, base_b) = StoredBases::<String> {
        base_a: r.try_get(3)?,
        base_b: r.try_get(4)?,
        b_delta: r.try_get(8)?,
    }
    .load()?;
    Ok(Binding {
        key: r.try_get(0)?,
        id_a: r.try_get(1)?,
        id_b: r.try_get(2)?,
        base_a,
        base_b,
        exported_at: r.try_get(5)?,
        parked: r.try_get(6)?,
        actions_done: r.try_get(7)?,
        bases_equal: false,
    })
}

pub(super) async fn upsert_binding(
    c: &impl GenericClient,
    scope: &Scope,
    b: &Binding,
) -> Result<()> {
    upsert_bindings(c, scope, std::slice::from_ref(b)).await
}

/// Inserts or replaces bindings in one statement (one round trip however many there are).
/// A key given twice keeps its last binding.
pub(super) async fn upsert_bindings(
    c: &impl GenericClient,
    scope: &Scope,
    bindings: &[Binding],
) -> Result<()> {
    let mut last: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, b) in bindings.iter().enumerate() {
        last.insert(b.key.as_str(), i);
    }
    let n = last.len();
    let (mut keys, mut ids_a, mut ids_b) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut bases_a, mut bases_b, mut deltas) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut exported, mut parked, mut done) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (i, b) in bindings.iter().enumerate() {
        if last.get(b.key.as_str()) != Some(&i) {
            continue;
        }
        let bases: StoredBases = StoredBases::of(b);
        keys.push(b.key.as_str());
        ids_a.push(b.id_a.as_deref());
        ids_b.push(b.id_b.as_deref());
        bases_a.push(bases.base_a);
        bases_b.push(bases.base_b);
        deltas.push(bases.b_delta);
        exported.push(b.exported_at);
        parked.push(b.parked.as_deref());
        done.push(b.actions_done);
    }
    if keys.is_empty() {
        return Ok(());
    }
    c.execute(
        "INSERT INTO bindings (entity, sys_a, sys_b, key, id_a, id_b, base_a, base_b, base_b_delta, exported_at, parked, actions_done)
         SELECT $1, $2, $3, t.* FROM UNNEST(
           $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
           $10::timestamptz[], $11::text[], $12::bool[]) AS t
         ON CONFLICT (entity, sys_a, sys_b, key) DO UPDATE SET
           id_a = excluded.id_a, id_b = excluded.id_b, base_a = excluded.base_a,
           base_b = excluded.base_b, base_b_delta = excluded.base_b_delta,
           exported_at = excluded.exported_at, parked = excluded.parked,
           actions_done = excluded.actions_done",
        &[
            &scope.entity,
            &scope.a,
            &scope.b,
            &keys,
            &ids_a,
            &ids_b,
            &bases_a,
            &bases_b,
            &deltas,
            &exported,
            &parked,
            &done,
        ],
    ).await?;
    Ok(())
}

pub(super) const FAILURE_COLS: &str = "id, flow, key, source_record, payload, error, status, response, attempts, created_at, updated_at";

pub(super) fn row_failure(r: &Row) -> Result<Failure> {
    let status: Option<i32> = r.try_get(6)?;
    let attempts: i32 = r.try_get(8)?;
    Ok(Failure {
        id: r.try_get(0)?,
        flow: r.try_get(1)?,
        key: r.try_get(2)?,
        source_record: json(r.try_get(3)?)?.unwrap_or(Value::Null),
        payload: json(r.try_get(4)?)?,
        error: r.try_get(5)?,
        status: status.and_then(|s| u16::try_from(s).ok()),
        response: json(r.try_get(7)?)?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        created_at: r.try_get(9)?,
        updated_at: r.try_get(10)?,
    })
}

pub(super) fn row_journal(r: &Row) -> Result<JournalEntry> {
    let payload: String = r.try_get(6)?;
    Ok(JournalEntry {
        id: r.try_get(0)?,
        flow: r.try_get(1)?,
        key: r.try_get(2)?,
        target: r.try_get(3)?,
        operation: r.try_get(4)?,
        idempotency_key: r.try_get(5)?,
        payload: serde_json::from_str(&payload)
            .map_err(|e| StateStoreError::Corrupt(e.to_string()))?,
        state: JournalState::Pending,
        created_at: r.try_get(7)?,
    })
}

pub(super) fn owned_binding(binding: Option<(&Scope, &Binding)>) -> Option<(Scope, Binding)> {
    binding.map(|(s, b)| (s.clone(), b.clone()))
}

/// Makes one write in a transaction, under `fence` when given: the lease row is read with a
/// share lock, so a takeover (which updates that row) waits for this transaction, and a
/// write after a takeover finds the new token and is refused.
pub(super) async fn apply(c: &mut Client, fence: Option<&Fence>, w: &StateWrite) -> Result<i64> {
    let tx = c.transaction().await?;
    if let Some(f) = fence {
        let current: Option<i64> = tx
            .query_opt(
                "SELECT token FROM leases WHERE name = $1 FOR SHARE",
                &[&f.lease],
            )
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        if current != Some(f.token) {
            return Err(StateStoreError::Fenced(f.lease.clone()));
        }
    }
    let n = apply_in(&tx, w).await?;
    tx.commit().await?;
    Ok(n)
}

async fn apply_in(c: &impl GenericClient, w: &StateWrite) -> Result<i64> {
    match w {
        StateWrite::PutBindings(scope, bindings) => {
            upsert_bindings(c, scope, bindings).await?;
            Ok(0)
        }
        StateWrite::PutHeld(scope, bindings, adopted) => {
            let mut bindings = bindings.clone();
            for a in adopted {
                bindings.push(a.binding()?);
            }
            upsert_bindings(c, scope, &bindings).await?;
            Ok(0)
        }
        StateWrite::SetCursor(flow, at) => {
            c.execute(
                "INSERT INTO cursors (flow, since) VALUES ($1, $2)
                 ON CONFLICT (flow) DO UPDATE SET since = excluded.since",
                &[flow, at],
            ).await?;
            Ok(0)
        }
        StateWrite::JournalBegin(e) => Ok(c
            .query_one(
                "INSERT INTO journal (flow, key, target, operation, idempotency_key, payload, state, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7) RETURNING id",
                &[
                    &e.flow,
                    &e.key,
                    &e.target,
                    &e.operation,
                    &e.idempotency_key,
                    &e.payload.to_string(),
                    &e.created_at,
                ],
            ).await?
            .try_get(0)?),
        StateWrite::JournalFinish(id, state, binding) => {
            if *state == JournalState::Pending {
                c.execute("UPDATE journal SET state = 'pending' WHERE id = $1", &[id]).await?;
            } else {
                // Settled writes are not needed any more: keep the journal small.
                c.execute("DELETE FROM journal WHERE id = $1", &[id]).await?;
            }
            if let Some((scope, b)) = binding {
                upsert_binding(c, scope, b).await?;
            }
            Ok(0)
        }
        StateWrite::JournalProgress(id, payload) => {
            c.execute(
                "UPDATE journal SET payload = $2 WHERE id = $1 AND state = 'pending'",
                &[id, &payload.to_string()],
            ).await?;
            Ok(0)
        }
        StateWrite::JournalSettle { flow, key, binding } => {
            let n = c.execute(
                "DELETE FROM journal WHERE flow = $1 AND key = $2 AND state = 'pending'",
                &[flow, key],
            ).await?;
            if n > 0
                && let Some((scope, b)) = binding
            {
                upsert_binding(c, scope, b).await?;
            }
            Ok(i64::try_from(n).unwrap_or(i64::MAX))
        }
        StateWrite::PutFailure(f) => Ok(c
            .query_one(
                "INSERT INTO failures (flow, key, source_record, payload, error, status, response, attempts, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8)
                 ON CONFLICT (flow, key) DO UPDATE SET source_record = excluded.source_record,
                   payload = excluded.payload, error = excluded.error, status = excluded.status,
                   response = excluded.response, attempts = failures.attempts + 1,
                   updated_at = excluded.updated_at
                 RETURNING id",
                &[
                    &f.flow,
                    &f.key,
                    &f.source_record.to_string(),
                    &f.payload.as_ref().map(Value::to_string),
                    &f.error,
                    &f.status.map(i32::from),
                    &f.response.as_ref().map(Value::to_string),
                    &f.updated_at,
                ],
            ).await?
            .try_get(0)?),
        StateWrite::ClearFailure { flow, key } => {
            c.execute(
                "DELETE FROM failures WHERE flow = $1 AND key = $2",
                &[flow, key],
            ).await?;
            Ok(0)
        }
        StateWrite::RunStart {
            flow,
            kind,
            at,
            instance,
        } => Ok(c
            .query_one(
                "INSERT INTO runs (flow, kind, started_at, status, counts, node, instance)
                 VALUES ($1, $2, $3, 'running', '{}', $4, $5) RETURNING id",
                &[flow, kind, at, &instance.node, &instance.id],
            ).await?
            .try_get(0)?),
        StateWrite::RunFinish {
            id,
            at,
            status,
            counts,
            error,
        } => {
            c.execute(
                "UPDATE runs SET finished_at = $2, status = $3, counts = $4, error = $5 WHERE id = $1",
                &[id, at, status, &counts.to_string(), error],
            ).await?;
            Ok(0)
        }
    }
}

/// The columns `row_run` reads, in its order.
pub(super) const RUN_COLS: &str =
    "id, flow, kind, started_at, finished_at, status, counts, error, node, instance";

pub(super) fn row_run(r: &Row) -> Result<RunRecord> {
    let counts: String = r.try_get(6)?;
    Ok(RunRecord {
        id: r.try_get(0)?,
        flow: r.try_get(1)?,
        kind: r.try_get(2)?,
        started_at: r.try_get(3)?,
        finished_at: r.try_get(4)?,
        status: r.try_get(5)?,
        counts: serde_json::from_str(&counts).unwrap_or(Value::Null),
        error: r.try_get(7)?,
        node: r.try_get(8)?,
        instance: r.try_get(9)?,
    })
}
