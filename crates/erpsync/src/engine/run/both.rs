//! Bidirectional flows: both sides of a record gathered for the three-way merge
//! (`decide::merge`), and its application, deferred while the source is being listed.

use super::*;

impl<'e> Runner<'e> {
    /// Bidirectional: a record read from the source, and what the target changed, if anything.
    pub(super) async fn sync_both(
        &mut self,
        mut a: Seen,
        b_seen: Option<Seen>,
        binding: Option<Binding>,
    ) -> Result<(), EngineRunError> {
        let key = a.key.clone();
        // The merge reads the canonical records only; the native one is for a failure.
        let native = std::mem::take(&mut a.native);
        match self.merge_sides(Some(a), b_seen, binding).await {
            Ok(None) => {
                self.drop_deferred(&key);
                self.succeeded(&key).await
            }
            Ok(Some(merge)) => {
                // Read again (the pages drifted): the latest reading replaces the first.
                match self.deferred.merge_at.get(&key) {
                    Some(&i) => self.deferred.merges[i] = Some((merge, native)),
                    None => {
                        self.deferred
                            .merge_at
                            .insert(key, self.deferred.merges.len());
                        self.deferred.merges.push(Some((merge, native)));
                    }
                }
                Ok(())
            }
            Err(f) => {
                self.drop_deferred(&key);
                self.fail(&key, &native, f).await
            }
        }
    }

    /// Notes that `key`'s target record was taken (or asked for) in this run: whether it
    /// was not yet. A listed key carries the mark in the listing's own entry; only keys
    /// the listing did not serve need a set: a run scoped to keys lists nothing, and records
    /// planned by earlier flows are handled after the listing, so a key is never taken
    /// unlisted and listed later.
    fn take_target(&mut self, key: &str) -> bool {
        self.listing
            .listed
            .take(key)
            .unwrap_or_else(|| self.changes.taken.add(key))
    }

    /// A later reading of a record decided without the merge its first reading left waiting.
    fn drop_deferred(&mut self, key: &str) {
        if let Some(i) = self.deferred.merge_at.remove(key) {
            self.deferred.merges[i] = None;
        }
    }

    /// The target's side of a record read from the source: its entry among the target's
    /// records read; for a record read again, what its first reading was merged with;
    /// `None` when the target is taken to hold what was last synced. A bound record missing
    /// from a read of the whole target, or from a read of its changes that shifted, is asked
    /// for: the read may have missed it.
    pub(super) async fn target_of(
        &mut self,
        key: &str,
        binding: Option<&Binding>,
    ) -> Result<Option<Seen>, Fail> {
        // The merge reads its canonical record only.
        let taken = self.changes.records.take_as(key, index::Native::Left);
        if let Some(found) = taken.map_err(|e| Fail::msg(e.to_string()))? {
            self.take_target(key);
            return Ok(Some(found));
        }
        if let Some((m, _)) = self
            .deferred
            .merge_at
            .get(key)
            .and_then(|&i| self.deferred.merges[i].as_ref())
        {
            // Its first merge waits to be written, so the binding still holds the state
            // before it: merge the new reading against the same target record.
            return Ok(Some(Seen {
                key: key.to_string(),
                id: self.id_on(&m.bind, Side::Target).map(str::to_string),
                canon: m.target.clone(),
                native: Value::Null,
                text: None,
            }));
        }
        // Taken before and merged: the binding holds what was written.
        if !self.changes.in_doubt || !self.take_target(key) {
            return Ok(None);
        }
        let Some(id) = binding.and_then(|b| self.id_on(b, Side::Target)) else {
            return Ok(None);
        };
        self.confirm(Side::Target, key, Some(id)).await
    }

    /// Bidirectional: a record only the target changed. With `source_in_doubt` (the source
    /// listing read everything or shifted), a bound record it did not serve is asked for
    /// rather than taken as unchanged.
    pub(super) async fn handle_reverse(
        &mut self,
        mut b_seen: Seen,
        source_in_doubt: bool,
    ) -> Result<(), EngineRunError> {
        if let Some(down) = self.system_down() {
            return Err(down);
        }
        // A run scoped to some keys leaves the others for a later run.
        if let Some(keys) = &self.opts.keys
            && !keys.contains(&b_seen.key)
        {
            return Ok(());
        }
        // Read from the target: counted here, once, whether or not the source is asked too.
        self.report.counts.read += 1;
        let key = b_seen.key.clone();
        let binding = self.binding(&key).await?;
        let native = std::mem::take(&mut b_seen.native);
        let src_id = binding.as_ref().and_then(|b| self.id_on(b, Side::Source));
        let mut a = None;
        if source_in_doubt
            && !self.listing.listed.contains(&key)
            && let Some(id) = src_id
        {
            match self.confirm(Side::Source, &key, Some(id)).await {
                Ok(found) => a = found,
                Err(f) => return self.fail(&key, &native, f).await,
            }
        }
        // As when listed and filtered out: an ineligible source is left out of the merge.
        if let Some(s) = &a
            && !self.eligible(s, binding.as_ref())
        {
            a = None;
        }
        match self.merge_sides(a, Some(b_seen), binding).await {
            Ok(None) => self.succeeded(&key).await,
            Ok(Some(merge)) => match self.apply_merge(merge).await {
                Ok(()) => self.succeeded(&key).await,
                Err(f) => self.fail(&key, &native, f).await,
            },
            Err(f) => self.fail(&key, &native, f).await,
        }
    }

    /// Three-way merge of one record: each side as read now (`None`: not read this run,
    /// taken as unchanged), against what was last synced; decided by `decide::merge`. A
    /// record not bound on a side is looked up there first. A merge that writes to the
    /// source while it is being listed is returned instead of applied.
    pub(super) async fn merge_sides(
        &mut self,
        source: Option<Seen>,
        target: Option<Seen>,
        binding: Option<Binding>,
    ) -> Result<Option<Merge>, Fail> {
        let key = source
            .as_ref()
            .or(target.as_ref())
            .map(|s| s.key.clone())
            .unwrap_or_default();
        let mut bind = binding.unwrap_or_else(|| Binding {
            key: key.clone(),
            ..Default::default()
        });
        // As one way: a record not bound on both sides whose earlier write is in doubt is
        // neither created nor linked until that write is settled.
        let unbound = [Side::Source, Side::Target]
            .iter()
            .any(|s| self.id_on(&bind, *s).is_none());
        if unbound && self.unsettled.in_doubt.contains(&key) {
            return Err(Fail::msg(
                "an earlier write of this record has an unknown outcome; not sent again until it is settled",
            ));
        }
        let read = [(Side::Source, source), (Side::Target, target)];
        for (side, seen) in &read {
            if let Some(id) = seen.as_ref().and_then(|s| s.id.clone()) {
                self.set_id_on(&mut bind, *side, id);
            }
        }
        // What each side holds now: as read, else as last synced, else as looked up.
        let mut now: [Option<Value>; 2] = [None, None];
        for (slot, (side, seen)) in now.iter_mut().zip(read) {
            *slot = seen
                .map(|s| s.canon)
                .or_else(|| self.base_on(&bind, side).cloned());
            if slot.is_none()
                && self.id_on(&bind, side).is_none()
                && let Some(found) = self.lookup(side, &key).await?
            {
                if let Some(id) = found.id {
                    self.set_id_on(&mut bind, side, id);
                }
                *slot = Some(found.canon);
            }
        }
        let [source, target] = now;
        let rules = MergeRules {
            mode: self.flow.mode,
            compared: &self.cmp,
            conflict: self.flow.conflict.as_ref(),
        };
        let verdict = decide::merge(
            &rules,
            Sides {
                source: source.as_ref(),
                target: target.as_ref(),
            },
            Sides {
                source: self.base_on(&bind, Side::Source),
                target: self.base_on(&bind, Side::Target),
            },
        );
        match (verdict, source, target) {
            (MergeVerdict::Skip { on }, _, _) => {
                let reason = format!("not in `{}`; mode updates only", self.end(on).name);
                self.record(&key, Decision::Skip, None, Vec::new(), Some(reason));
                Ok(None)
            }
            (MergeVerdict::Create { on }, s, t) => {
                let Some(canon) = s.or(t) else {
                    return Ok(None);
                };
                self.create_on(on, &key, bind, canon).await?;
                Ok(None)
            }
            (
                MergeVerdict::Park {
                    reason, changes, ..
                },
                _,
                _,
            ) => {
                if !self.opts.dry_run {
                    bind.parked = Some(reason.clone());
                    self.put_binding(&bind)
                        .await
                        .map_err(|e| Fail::msg(e.to_string()))?;
                }
                self.record(&key, Decision::Park, None, changes, Some(reason));
                Ok(None)
            }
            (MergeVerdict::Merge(merged), Some(source), Some(target)) => {
                let writes_source = merged.to_source;
                let merge = Merge {
                    key: key.clone(),
                    bind,
                    source,
                    target,
                    merged,
                };
                // A record read again while its first merge waits replaces that merge.
                if self.listing.active
                    && (writes_source || self.deferred.merge_at.contains_key(&key))
                {
                    return Ok(Some(merge));
                }
                self.apply_merge(merge).await?;
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// A record that exists on one side only is created on `side`, the other one.
    async fn create_on(
        &mut self,
        side: Side,
        key: &str,
        mut bind: Binding,
        canon: Value,
    ) -> Result<(), Fail> {
        *self.base_on_mut(&mut bind, side.other()) = Some(canon.clone());
        if !self.opts.dry_run {
            self.create(side, &mut bind, &canon).await?;
        } else {
            self.plan_steps(side, &bind, &canon, false).await;
            self.plan_create(side, &mut bind, &canon).await?;
        }
        let changes = diff(None, &canon, &self.cmp);
        let to = self.end(side).name;
        self.record(key, Decision::Create, Some(to), changes, None);
        Ok(())
    }

    /// Writes a merged record to the sides that differ from it, binds it and reports it.
    pub(super) async fn apply_merge(&mut self, m: Merge) -> Result<(), Fail> {
        let Merge {
            key,
            mut bind,
            source,
            target,
            merged,
        } = m;
        let key = key.as_str();
        let held = |side: Side| match side {
            Side::Source => &source,
            Side::Target => &target,
        };
        // The target is written first, then the source.
        let written: Vec<Side> = [Side::Target, Side::Source]
            .into_iter()
            .filter(|side| merged.writes(*side))
            .collect();
        if !self.opts.dry_run {
            bind.parked = None;
            if written.is_empty() {
                // Nothing written: both sides already agree (adopted or unchanged). The
                // binding takes the two records.
                *self.base_on_mut(&mut bind, Side::Source) = Some(source);
                *self.base_on_mut(&mut bind, Side::Target) = Some(target);
                self.hold_binding(bind)
                    .await
                    .map_err(|e| Fail::msg(e.to_string()))?;
                self.record(key, merged.decision, None, Vec::new(), merged.reason);
                return Ok(());
            }
            *self.base_on_mut(&mut bind, Side::Source) = Some(source.clone());
            *self.base_on_mut(&mut bind, Side::Target) = Some(target.clone());
            for &side in &written {
                let write = overlay(Some(held(side)), &merged.merged, &self.cmp);
                self.update(side, &mut bind, &write, None).await?;
            }
        }
        if self.opts.dry_run
            && let Some(&side) = written.first()
        {
            let write = overlay(Some(held(side)), &merged.merged, &self.cmp);
            self.plan_steps(side, &bind, &write, true).await;
        }
        let decision = merged.decision;
        let reason = merged.reason;
        let mut lines = written.iter().map(|&side| {
            let changes = diff(Some(held(side)), &merged.merged, &self.cmp);
            (self.end(side).name, changes)
        });
        let first = lines.next();
        let rest: Vec<_> = lines.collect();
        match first {
            None => self.record(key, decision, None, Vec::new(), reason),
            Some((name, changes)) => {
                self.record(key, decision, Some(name), changes, reason.clone());
                // Count one decision per record; list the other side's changes as well.
                if self.opts.dry_run || self.opts.details {
                    for (name, changes) in rest {
                        self.line(RecordReport {
                            key: key.to_string(),
                            decision,
                            target: Some(name.to_string()),
                            changes,
                            reason: reason.clone(),
                            steps: Vec::new(),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}
