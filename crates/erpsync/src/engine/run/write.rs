//! Writing: payloads from the write mapping, journaled creates with idempotency keys,
//! updates, post-actions, and the settling of writes whose outcome was unknown.

use super::*;

impl<'e> Runner<'e> {
    pub(super) fn end(&self, side: Side) -> &End<'e> {
        match side {
            Side::Source => &self.src,
            Side::Target => &self.dst,
        }
    }

    /// The native payload for a side: everything for a create, what the flow carries for an
    /// update (`Some(current)`: the record the side holds now, when the mapping reads it).
    pub(super) async fn payload(
        &self,
        side: Side,
        canon: &Value,
        update: Option<Option<&Value>>,
    ) -> Result<Value, Fail> {
        let (to, from) = (self.end(side).name, self.end(side.other()).name);
        let mut refs = Refs::new(self.e, from, to);
        let ent = self.end(side).ent;
        let write = &ent.write;
        loop {
            let mapped = {
                let env = MapEnv {
                    vars: &ent.tables,
                    system: self.end(side).http.system_vars(),
                    refs: &refs,
                };
                if let Some(current) = update {
                    write.apply_carried(canon, current, &env, &self.carried)
                } else {
                    write.apply(canon, &env, None)
                }
            };
            if !refs.fetch().await {
                return mapped.map_err(|e| Fail::msg(e.to_string()));
            }
        }
    }

    /// A write's journal entry before it is sent: pending, with the record's idempotency key.
    fn intent(&self, target: &str, key: &str, op: &str, payload: Value) -> JournalEntry {
        JournalEntry {
            id: 0,
            flow: self.flow.id.clone(),
            key: key.to_string(),
            target: target.to_string(),
            operation: op.to_string(),
            idempotency_key: self.idempotency_key(key),
            payload,
            state: JournalState::Pending,
            created_at: self.e.clock.now(),
        }
    }

    /// Creates `canon` on a side, exactly once: the intent is journaled first, an
    /// idempotency key goes with it, and an unknown outcome stays pending until a lookup
    /// settles it.
    pub(super) async fn create(
        &mut self,
        side: Side,
        b: &mut Binding,
        canon: &Value,
    ) -> Result<(), Fail> {
        self.write_held_for(side)
            .await
            .map_err(|e| Fail::msg(e.to_string()))?;
        let payload = self.payload(side, canon, None).await?;
        let end = self.end(side);
        let Some(op) = end.ent.create.clone() else {
            return Err(Fail::msg(format!(
                "`{}` cannot create {}",
                end.name, self.entity.name
            )));
        };
        let key = b.key.clone();
        let payload = if self.has_steps(side, &op) {
            steps::envelope(payload, None)
        } else {
            payload
        };
        let entry = self.intent(end.name, &key, &op, payload.clone());
        let journal_id = self
            .e
            .store
            .journal
            .journal_begin(&entry)
            .await
            .map_err(|e| Fail::msg(e.to_string()))?;
        let written_base = canon.clone();
        self.send_create(side, journal_id, &entry, b, written_base)
            .await
    }

    /// What a dry run does where the run would create: the record and the binding the create
    /// would leave (the new record's id a placeholder) are planned, so the next flows of the
    /// plan find them as the run would.
    /// An export-once flow's record counts as exported from its first write (or adoption)
    /// on; later writes keep that moment.
    pub(super) fn mark_exported(&self, b: &mut Binding) {
        if self.flow.export_once && b.exported_at.is_none() {
            b.exported_at = Some(self.e.clock.now());
        }
    }

    pub(super) async fn plan_create(
        &mut self,
        side: Side,
        b: &mut Binding,
        canon: &Value,
    ) -> Result<(), Fail> {
        let end = self.end(side);
        let name = end.name;
        let listing = crate::engine::listing(&self.entity.name, end.ent);
        if let Ok(payload) = self.payload(side, canon, None).await {
            self.e.plan_create(name, listing, &b.key, payload);
        }
        self.set_id_on(b, side, crate::engine::PLANNED_ID.to_string());
        *self.base_on_mut(b, side) = Some(canon.clone());
        // As the create would: an export-once record counts as exported from then on.
        self.mark_exported(b);
        self.put_binding(b)
            .await
            .map_err(|e| Fail::msg(e.to_string()))
    }

    pub(super) async fn send_create(
        &mut self,
        side: Side,
        journal_id: i64,
        entry: &JournalEntry,
        b: &mut Binding,
        written: Value,
    ) -> Result<(), Fail> {
        let end = self.end(side);
        let (http, ent, side_name) = (end.http, end.ent, end.name);
        let stepped = self.has_steps(side, &entry.operation);
        let record = if stepped {
            steps::record_of(&entry.payload)
        } else {
            entry.payload.clone()
        };
        let input = CallInput {
            record: record.clone(),
            key: Some(entry.key.clone()),
            idempotency_key: Some(entry.idempotency_key.clone()),
            ..Default::default()
        };
        let mut log = steps::StepJournal::new(&self.e.store, journal_id, entry.payload.clone());
        let called = http.call_logged(&entry.operation, &input, &mut log).await;
        // A step that wrote keeps the entry pending whatever happens next: forgetting it
        // would write it again.
        let keep = stepped && log.wrote();
        drop(log);
        let entry_payload = record;
        match called {
            Ok(out) => {
                let id = out
                    .record
                    .as_ref()
                    .and_then(|r| ent.id.of(r))
                    .or_else(|| ent.id.of(&out.body));
                let id = match id {
                    Some(id) => Some(id),
                    None => self
                        .lookup(side, &entry.key)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|s| s.id),
                };
                let Some(id) = id else {
                    // Accepted but unidentifiable: stay pending so the next run looks it up.
                    return Err(Fail::msg(format!(
                        "`{side_name}` accepted the record but its id could not be read; it will be looked up"
                    )));
                };
                self.set_id_on(b, side, id);
                *self.base_on_mut(b, side) = Some(written);
                self.mark_exported(b);
                self.forget_read(&b.key);
                self.e
                    .store
                    .journal
                    .journal_finish(journal_id, JournalState::Done, Some((&self.scope, b)))
                    .await
                    .map_err(|e| Fail::msg(e.to_string()))?;
                Ok(())
            }
            Err(e) if matches!(e.root(), CallError::InDoubt { .. }) || keep => {
                Err(Fail::call(&e, Some(entry_payload)))
            }
            Err(e) if e.is_transient() => {
                // Not applied for sure? A transport failure after retries may still have been
                // applied if the request is not idempotent; the connector reports that as in
                // doubt. Here it was safe to retry and failed: settle as failed.
                let _ = self
                    .e
                    .store
                    .journal
                    .journal_finish(journal_id, JournalState::Failed, None)
                    .await;
                Err(Fail::call(&e, Some(entry_payload.clone())))
            }
            Err(e) => {
                let _ = self
                    .e
                    .store
                    .journal
                    .journal_finish(journal_id, JournalState::Failed, None)
                    .await;
                Err(Fail::call(&e, Some(entry_payload.clone())))
            }
        }
    }

    /// Updates a side with `canon` (the full canonical record to hold there).
    pub(super) async fn update(
        &mut self,
        side: Side,
        b: &mut Binding,
        canon: &Value,
        source_now: Option<&Value>,
    ) -> Result<(), Fail> {
        self.write_held_for(side)
            .await
            .map_err(|e| Fail::msg(e.to_string()))?;
        let current = self.current_record(side, b).await?;
        let payload = self.payload(side, canon, Some(current.as_ref())).await?;
        let end = self.end(side);
        let Some(op) = end.ent.update.clone() else {
            return Err(Fail::msg(format!(
                "`{}` cannot update {}",
                end.name, self.entity.name
            )));
        };
        let Some(id) = self.id_on(b, side).map(str::to_string) else {
            return Err(Fail::msg(format!("no `{}` id for `{}`", end.name, b.key)));
        };
        let input = CallInput {
            record: payload.clone(),
            id: Some(id.clone()),
            key: Some(b.key.clone()),
            idempotency_key: Some(self.idempotency_key(&b.key)),
            ..Default::default()
        };
        if self.journaled_steps(side, &op) {
            let entry = self.intent(
                end.name,
                &b.key,
                &op,
                steps::envelope(payload.clone(), Some(&id)),
            );
            let journal_id = self
                .e
                .store
                .journal
                .journal_begin(&entry)
                .await
                .map_err(|e| Fail::msg(e.to_string()))?;
            self.send_steps(side, journal_id, &entry, &input).await?;
        } else {
            end.http
                .call(&op, &input)
                .await
                .map_err(|e| Fail::call(&e, Some(payload)))?;
        }
        // Only what this flow wrote moves the side's base: a field the flow does not carry
        // keeps what was last known of it, so another flow carrying that field still sees
        // its own change.
        self.move_bases(side, b, canon, source_now).await
    }

    /// The record a side holds now, for a write mapping that reads it (`$target`, `merge`):
    /// asked for just before the update (by id with `get`, else by key with `lookup`), else
    /// as a whole reading of the side serves it (this run's, or one made now). A write that
    /// would replace what it cannot see fails instead.
    async fn current_record(&mut self, side: Side, b: &Binding) -> Result<Option<Value>, Fail> {
        let end = self.end(side);
        if !end.ent.write.reads_target() {
            return Ok(None);
        }
        let found = if end.ent.get.is_some() || end.ent.lookup.is_some() {
            let id = self.id_on(b, side);
            self.confirm(side, &b.key, id).await?
        } else if side == Side::Target && end.ent.list.is_some() {
            self.lookup(side, &b.key).await?
        } else {
            None
        };
        match found {
            Some(seen) if !seen.native.is_null() => Ok(Some(seen.native)),
            _ => {
                let end = self.end(side);
                Err(Fail::msg(format!(
                    "the write mapping of {} in `{}` reads the record it holds (`$target`, \
                     `merge`), and `{}` did not serve `{}`: not written, so as not to replace \
                     what it holds unseen",
                    self.entity.name, end.name, end.name, b.key
                )))
            }
        }
    }

    /// In a dry run, notes the steps a multi-step create or update would send, for the
    /// record's line of the plan.
    pub(super) async fn plan_steps(
        &mut self,
        side: Side,
        b: &Binding,
        canon: &Value,
        update: bool,
    ) {
        let end = self.end(side);
        let op = if update {
            end.ent.update.clone()
        } else {
            end.ent.create.clone()
        };
        let Some(op) = op.filter(|op| self.has_steps(side, op)) else {
            return;
        };
        let Ok(payload) = self.payload(side, canon, update.then_some(None)).await else {
            return;
        };
        let input = CallInput {
            record: payload,
            id: self.id_on(b, side).map(str::to_string),
            key: Some(b.key.clone()),
            idempotency_key: Some(self.idempotency_key(&b.key)),
            ..Default::default()
        };
        self.planned_steps = end
            .http
            .plan_steps(&op, &input)
            .iter()
            .map(ToString::to_string)
            .collect();
    }

    /// Whether a side's operation has steps.
    fn has_steps(&self, side: Side, op: &str) -> bool {
        self.end(side)
            .http
            .operation_steps(op)
            .is_some_and(|s| !s.is_empty())
    }

    /// Whether a side's operation has steps that must not be sent twice, so that an update
    /// through it is journaled like a create.
    pub(super) fn journaled_steps(&self, side: Side, op: &str) -> bool {
        self.end(side)
            .http
            .operation_steps(op)
            .is_some_and(|s| s.iter().any(|s| s.journaled()))
    }

    /// Sends a journaled multi-step update; its entry is settled when it is done, or when it
    /// failed before any step wrote, and kept pending otherwise (the next run resumes it).
    async fn send_steps(
        &self,
        side: Side,
        journal_id: i64,
        entry: &JournalEntry,
        input: &CallInput,
    ) -> Result<(), Fail> {
        let http = self.end(side).http;
        let mut log = steps::StepJournal::new(&self.e.store, journal_id, entry.payload.clone());
        let called = http.call_logged(&entry.operation, input, &mut log).await;
        let wrote = log.wrote();
        drop(log);
        let state = match &called {
            Ok(_) => JournalState::Done,
            Err(e) if matches!(e.root(), CallError::InDoubt { .. }) || wrote => {
                return Err(Fail::call(e, Some(input.record.clone())));
            }
            Err(_) => JournalState::Failed,
        };
        self.e
            .store
            .journal
            .journal_finish(journal_id, state, None)
            .await
            .map_err(|e| Fail::msg(e.to_string()))?;
        called
            .map(drop)
            .map_err(|e| Fail::call(&e, Some(input.record.clone())))
    }

    /// Post-actions on the source record after it was exported (e.g. lock the order).
    /// Runs after the source was read to the end: writing to the source while paging through
    /// it would move records between pages and make the listing skip some.
    ///
    /// The actions are marked done only once every one of them ran. A record whose actions
    /// cannot run (its id in the source is unknown, or an action failed) is kept in the
    /// failure store: the next reading of the record, or `failures retry`, runs them.
    pub(super) async fn after_export(&mut self, queued: Binding) -> Result<(), EngineRunError> {
        if self.flow.after_export.is_empty() || self.opts.dry_run {
            return Ok(());
        }
        // The binding may have changed since the actions were queued: work on the stored one,
        // with the source id the queued copy learned from the listing.
        let mut b = self
            .binding(&queued.key)
            .await?
            .unwrap_or_else(|| queued.clone());
        if b.actions_done {
            return Ok(());
        }
        let learned =
            self.id_on(&b, Side::Source).is_none() && self.id_on(&queued, Side::Source).is_some();
        if learned && let Some(id) = self.id_on(&queued, Side::Source) {
            self.set_id_on(&mut b, Side::Source, id.to_string());
        }
        let key = b.key.clone();
        if self.id_on(&b, Side::Source).is_none() && self.src.ent.lookup.is_some() {
            match self.lookup(Side::Source, &key).await {
                Ok(Some(found)) => {
                    if let Some(id) = found.id {
                        self.set_id_on(&mut b, Side::Source, id);
                        self.put_binding(&b).await?;
                    }
                }
                Ok(None) => {}
                Err(f) => return self.fail(&key, &Value::Null, f).await,
            }
        } else if learned {
            self.put_binding(&b).await?;
        }
        let Some(id) = self.id_on(&b, Side::Source).map(str::to_string) else {
            let actions = self.action_names();
            return self.fail(
                &key,
                &Value::Null,
                Fail::msg(format!(
                    "{actions} cannot run yet: the id of `{key}` in `{}` is not known; it runs when the record is read again (or `erpsync failures retry`)",
                    self.src.name
                )),
            ).await;
        };
        for action in &self.flow.after_export {
            let input = CallInput {
                id: Some(id.clone()),
                key: Some(key.clone()),
                ..Default::default()
            };
            if let Err(e) = self.src.http.call(&action.operation, &input).await {
                let mut f = Fail::call(&e, None);
                f.error = format!("`{}` of `{key}` failed: {}", action.action, f.error);
                return self.fail(&key, &Value::Null, f).await;
            }
        }
        b.actions_done = true;
        self.put_binding(&b).await?;
        self.succeeded(&key).await
    }

    /// A binding settled from the journal knows the written side's id only; the record
    /// kept with the write's failure (when there is one) names the id on `side`, where it
    /// was read.
    async fn source_id_from_failure(
        &self,
        b: &mut Binding,
        side: Side,
    ) -> Result<(), EngineRunError> {
        let end = self.end(side);
        if self.id_on(b, side).is_some() {
            return Ok(());
        }
        let id = self
            .e
            .store
            .failures
            .failures(Some(FlowName::new(&self.flow.id)))
            .await?
            .into_iter()
            .find(|f| f.key == b.key)
            .and_then(|f| end.ent.id.of(&f.source_record));
        if let Some(id) = id {
            self.set_id_on(b, side, id);
        }
        Ok(())
    }

    /// The flow's post-actions, for messages: "`lock`", "`lock`, `notify`".
    fn action_names(&self) -> String {
        self.flow
            .after_export
            .iter()
            .map(|a| format!("`{}`", a.action))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The exported records whose post-actions wait, once per key in the order they were
    /// queued. A record settled from the journal is queued without its source id and again,
    /// with it, when the listing reads it: the copies are merged so the id is not lost.
    pub(super) fn take_deferred_actions(&mut self) -> Vec<Binding> {
        let mut out: Vec<Binding> = Vec::new();
        let mut at: HashMap<String, usize> = HashMap::new();
        for b in std::mem::take(&mut self.deferred.actions) {
            match at.get(&b.key) {
                Some(&i) => {
                    if self.id_on(&out[i], Side::Source).is_none()
                        && let Some(id) = self.id_on(&b, Side::Source)
                    {
                        let id = id.to_string();
                        self.set_id_on(&mut out[i], Side::Source, id);
                    }
                }
                None => {
                    at.insert(b.key.clone(), out.len());
                    out.push(b);
                }
            }
        }
        out
    }

    /// Writes of unknown outcome that this flow's runs made for its required records (an
    /// order's customer, created on demand) are settled here too, as the required flow would:
    /// that flow may never run on its own. Keys still in doubt are never created again by
    /// `requires` in this run.
    pub(super) async fn settle_required_in_doubt(&mut self) -> Result<(), EngineRunError> {
        for (flow_id, _) in self.flow.requires.clone() {
            if self
                .e
                .store
                .journal
                .journal_pending(Some(FlowName::new(&flow_id)))
                .await?
                .is_empty()
            {
                continue;
            }
            let Some(flow) = self.e.project.flow(&flow_id).cloned() else {
                continue;
            };
            let opts = RunOptions::default();
            let mut sub = Runner::new(self.e, &flow, &opts, self.started).await?;
            Box::pin(sub.settle_in_doubt()).await?;
            for b in sub.take_deferred_actions() {
                Box::pin(sub.after_export(b)).await?;
            }
            sub.write_held().await?;
            let r = sub.report;
            self.report.counts.resolved_in_doubt += r.counts.resolved_in_doubt;
            self.report.counts.failed += r.counts.failed;
            for record in r.records {
                self.line(record);
            }
            self.report.errors.extend(
                r.errors
                    .into_iter()
                    .map(|e| format!("required flow `{flow_id}`: {e}")),
            );
            self.unsettled
                .required
                .insert(flow_id, sub.unsettled.in_doubt);
        }
        Ok(())
    }

    /// Writes whose outcome was unknown (timeout, crash) are settled before anything new is
    /// sent: found in the target → bound; not found → sent again with the same idempotency key.
    pub(super) async fn settle_in_doubt(&mut self) -> Result<(), EngineRunError> {
        for entry in self
            .e
            .store
            .journal
            .journal_pending(Some(FlowName::new(&self.flow.id)))
            .await?
        {
            let side = if entry.target == self.src.name && entry.target != self.dst.name {
                Side::Source
            } else {
                Side::Target
            };
            let mut b = self.binding(&entry.key).await?.unwrap_or_else(|| Binding {
                key: entry.key.clone(),
                ..Default::default()
            });
            let end = self.end(side);
            if self.has_steps(side, &entry.operation) {
                // A multi-step write resumes where it stopped: the steps it journaled are not
                // sent again, and a step whose answer was lost is sent again only where a
                // later step takes over a refusal (see `StepLog`).
                let is_create = end.ent.create.as_deref() == Some(entry.operation.as_str());
                if !is_create {
                    let input = CallInput {
                        record: steps::record_of(&entry.payload),
                        id: steps::id_of(&entry.payload),
                        key: Some(entry.key.clone()),
                        idempotency_key: Some(entry.idempotency_key.clone()),
                        ..Default::default()
                    };
                    match self.send_steps(side, entry.id, &entry, &input).await {
                        Ok(()) => {
                            self.report.counts.resolved_in_doubt += 1;
                            self.succeeded(&entry.key).await?;
                        }
                        Err(f) => {
                            if let Some(down) = self.system_down() {
                                return Err(down);
                            }
                            self.unsettled.in_doubt.insert(entry.key.clone());
                            self.report.errors.push(format!(
                                "`{}`: an interrupted `{}` could not be finished: {}",
                                entry.key, entry.operation, f.error
                            ));
                        }
                    }
                    continue;
                }
            }
            let stepped_create = self.has_steps(side, &entry.operation);
            let end = self.end(side);
            let (side_name, searchable) =
                (end.name, end.ent.lookup.is_some() || end.ent.list.is_some());
            let keyed = self.e.project.systems[side_name]
                .operations
                .get(&entry.operation)
                .is_some_and(|op| op.idempotency_key.is_some());
            if !stepped_create && !searchable && !keyed {
                // Neither a lookup nor an idempotency key can tell whether it was applied:
                // sending it again could duplicate it. A person decides.
                self.unsettled.in_doubt.insert(entry.key.clone());
                self.report.errors.push(format!(
                    "`{}` may or may not have reached `{side_name}`, which cannot be searched: check it by hand and settle it (`erpsync failures settle`); it is held back until then",
                    entry.key
                ));
                continue;
            }
            // A multi-step create resumes instead: a record found by key may still lack its
            // later steps.
            let found = if stepped_create {
                Ok(None)
            } else {
                self.lookup(side, &entry.key).await
            };
            match found {
                Ok(Some(found)) => {
                    if let Some(id) = found.id.clone() {
                        self.set_id_on(&mut b, side, id);
                    }
                    *self.base_on_mut(&mut b, side) = Some(found.canon);
                    self.source_id_from_failure(&mut b, side.other()).await?;
                    self.mark_exported(&mut b);
                    self.forget_read(&b.key);
                    self.e
                        .store
                        .journal
                        .journal_finish(entry.id, JournalState::Done, Some((&self.scope, &b)))
                        .await?;
                    self.report.counts.resolved_in_doubt += 1;
                    self.deferred.actions.push(b.clone());
                    continue;
                }
                Ok(None) => {}
                Err(f) => {
                    if let Some(down) = self.system_down() {
                        return Err(down);
                    }
                    self.unsettled.in_doubt.insert(entry.key.clone());
                    self.report.errors.push(format!(
                        "in-doubt `{}` could not be checked: {}",
                        entry.key, f.error
                    ));
                    continue;
                }
            }
            // Not there: it was never applied. Send it again, same key.
            let written = if stepped_create {
                steps::record_of(&entry.payload)
            } else {
                entry.payload.clone()
            };
            match self
                .send_create(side, entry.id, &entry, &mut b, written)
                .await
            {
                Ok(()) => {
                    self.report.counts.resolved_in_doubt += 1;
                    // The base must be canonical, not native: read it back.
                    if let Ok(Some(found)) = self.lookup(side, &entry.key).await {
                        *self.base_on_mut(&mut b, side) = Some(found.canon);
                        self.put_binding(&b).await?;
                    }
                    self.deferred.actions.push(b.clone());
                    self.succeeded(&entry.key).await?;
                }
                Err(f) => {
                    if stepped_create {
                        // A step that may have been applied and that nothing guards: neither
                        // created nor adopted again in this run, a person settles it.
                        self.unsettled.in_doubt.insert(entry.key.clone());
                    }
                    self.fail(&entry.key.clone(), &entry.payload.clone(), f)
                        .await?
                }
            }
        }
        Ok(())
    }
}
