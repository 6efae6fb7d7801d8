//! Updates in flight: with a target system's `concurrency` above 1, a one-way flow sends the
//! update of a record and goes on to the next record before the answer comes. Each update is
//! sent as it would be alone (same payload, through the system's rate limit, retries and
//! breaker) and, once answered, in the order the records were read, finished as it would be
//! alone: its binding moved and written, its line reported, its failure kept or cleared.
//!
//! An update is not journaled, alone or here: one cut short by a crash left the binding's
//! base where it was, so the next run finds the same difference and sends it again, which
//! an update, unlike a create, may repeat. Two updates of one record are never in flight at
//! once, so they reach the system in the order they were read.

use std::collections::VecDeque;

use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;

use super::*;
use crate::connector::CallOutput;

/// Updates sent and not answered yet.
#[derive(Default)]
pub(super) struct InFlight<'e> {
    /// Updates the run may have in flight: the target's `concurrency` in the listing of a
    /// one-way flow, 1 (none in flight) anywhere else.
    pub(super) width: usize,
    /// The requests, in a mutex only so the runner stays `Sync`: it is reached through
    /// `get_mut`, never locked.
    calls: std::sync::Mutex<FuturesOrdered<BoxFuture<'e, Result<CallOutput, CallError>>>>,
    updates: VecDeque<Queued>,
    /// Set when the record just handled was queued: it is reported once answered.
    pub(super) queued: bool,
}

/// What finishing an update needs, as the record's decision left it.
pub(super) struct Queued {
    pub(super) binding: Binding,
    /// The canonical record written, and the source's reading of it.
    pub(super) written: Value,
    pub(super) source: Value,
    pub(super) native: Value,
    pub(super) payload: Value,
    pub(super) decision: Decision,
    pub(super) changes: Vec<FieldChange>,
    pub(super) reason: Option<String>,
    pub(super) corrected: bool,
}

impl<'e> Runner<'e> {
    /// Whether the update of this record may be sent without waiting for its answer.
    pub(super) fn may_queue(&self) -> bool {
        self.in_flight.width > 1
            && !self.opts.dry_run
            && !self.dst.ent.write.reads_target()
            && self
                .dst
                .ent
                .update
                .as_deref()
                .is_some_and(|op| !self.journaled_steps(Side::Target, op))
    }

    /// Room for one more update in flight, and none of `key`'s: the oldest are finished
    /// first.
    pub(super) async fn room_for(&mut self, key: &str) -> Result<(), EngineRunError> {
        if self.updates_in_flight_of(key) {
            return self.finish_updates().await;
        }
        while self.in_flight.updates.len() >= self.in_flight.width.max(1) {
            self.finish_update().await?;
        }
        Ok(())
    }

    fn updates_in_flight_of(&self, key: &str) -> bool {
        self.in_flight.updates.iter().any(|q| q.binding.key == key)
    }

    /// Sends the update of a record on the target (see `update`) and returns without
    /// waiting for the answer; `finish_update` takes it.
    pub(super) async fn queue_update(&mut self, q: Queued) -> Result<(), Fail> {
        // As `update`.
        self.write_held_for(Side::Target)
            .await
            .map_err(|e| Fail::msg(e.to_string()))?;
        let mut q = q;
        let payload = self.payload(Side::Target, &q.written, Some(None)).await?;
        let end = &self.dst;
        let Some(op) = end.ent.update.clone() else {
            return Err(Fail::msg(format!(
                "`{}` cannot update {}",
                end.name, self.entity.name
            )));
        };
        let Some(id) = self.id_on(&q.binding, Side::Target).map(str::to_string) else {
            return Err(Fail::msg(format!(
                "no `{}` id for `{}`",
                end.name, q.binding.key
            )));
        };
        let input = CallInput {
            record: payload.clone(),
            id: Some(id),
            key: Some(q.binding.key.clone()),
            idempotency_key: Some(self.idempotency_key(&q.binding.key)),
            ..Default::default()
        };
        q.payload = payload;
        let http: &'e HttpSystem = self.dst.http;
        self.in_flight
            .calls
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(Box::pin(async move { http.call(&op, &input).await }));
        self.in_flight.updates.push_back(q);
        self.in_flight.queued = true;
        Ok(())
    }

    /// Finishes the oldest update in flight once it is answered, as `one_way` finishes an
    /// update it waited for.
    async fn finish_update(&mut self) -> Result<(), EngineRunError> {
        let calls = self
            .in_flight
            .calls
            .get_mut()
            .unwrap_or_else(|p| p.into_inner());
        let Some(answer) = calls.next().await else {
            return Ok(());
        };
        let Some(mut q) = self.in_flight.updates.pop_front() else {
            return Ok(());
        };
        let key = q.binding.key.clone();
        let done = match answer {
            Ok(_) => {
                self.move_bases(Side::Target, &mut q.binding, &q.written, Some(&q.source))
                    .await
            }
            Err(e) => Err(Fail::call(&e, Some(q.payload))),
        };
        match done {
            Ok(()) => {
                if q.corrected {
                    self.report.counts.corrected += 1;
                }
                self.touched(&q.source);
                let target = self.dst.name;
                self.record(&key, q.decision, Some(target), q.changes, q.reason);
                self.succeeded(&key).await
            }
            Err(f) => self.fail(&key, &q.native, f).await,
        }
    }

    /// Finishes every update in flight.
    pub(super) async fn finish_updates(&mut self) -> Result<(), EngineRunError> {
        while !self.in_flight.updates.is_empty() {
            self.finish_update().await?;
        }
        Ok(())
    }
}
