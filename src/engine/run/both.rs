//! Bidirectional flows: the three-way merge of one record against what was last synced,
//! with the flow's conflict rule, and its deferred application.

use super::*;

impl<'e> Runner<'e> {
    /// Bidirectional: a record read from the source, and what the target changed, if anything.
    pub(super) async fn sync_both(
        &mut self,
        a: Seen,
        b_seen: Option<Seen>,
        binding: Option<Binding>,
    ) -> Result<(), EngineRunError> {
        let key = a.key.clone();
        let native = a.native.clone();
        match self.merge_sides(Some(a), b_seen, binding).await {
            Ok(None) => {
                self.drop_deferred(&key);
                self.succeeded(&key)
            }
            Ok(Some(merge)) => {
                // Read again (the pages drifted): the latest reading replaces the first.
                match self.deferred_index.get(&key) {
                    Some(&i) => self.deferred_merges[i] = Some((merge, native)),
                    None => {
                        self.deferred_index.insert(key, self.deferred_merges.len());
                        self.deferred_merges.push(Some((merge, native)));
                    }
                }
                Ok(())
            }
            Err(f) => {
                self.drop_deferred(&key);
                self.fail(&key, &native, f)
            }
        }
    }

    /// A later reading of a record decided without the merge its first reading left waiting.
    fn drop_deferred(&mut self, key: &str) {
        if let Some(i) = self.deferred_index.remove(key) {
            self.deferred_merges[i] = None;
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
        if let Some(found) = self.dst_changes.remove(key) {
            self.dst_taken.insert(key.to_string());
            return Ok(Some(found));
        }
        if let Some((m, _)) = self
            .deferred_index
            .get(key)
            .and_then(|&i| self.deferred_merges[i].as_ref())
        {
            // Its first merge waits to be written, so the binding still holds the state
            // before it: merge the new reading against the same target record.
            return Ok(Some(Seen {
                key: key.to_string(),
                id: m.bind.id(self.dst.is_a).map(str::to_string),
                canon: m.bv.clone(),
                native: Value::Null,
            }));
        }
        // Taken before and merged: the binding holds what was written.
        if !self.dst_in_doubt || !self.dst_taken.insert(key.to_string()) {
            return Ok(None);
        }
        let Some(id) = binding.and_then(|b| b.id(self.dst.is_a)) else {
            return Ok(None);
        };
        self.confirm(false, key, Some(id)).await
    }

    /// Bidirectional: a record only the target changed. With `source_in_doubt` (the source
    /// listing read everything or shifted), a bound record it did not serve is asked for
    /// rather than taken as unchanged.
    pub(super) async fn handle_reverse(
        &mut self,
        b_seen: Seen,
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
        let binding = self.binding(&key)?;
        let native = b_seen.native.clone();
        let src_id = binding.as_ref().and_then(|b| b.id(self.src.is_a));
        let mut a = None;
        if source_in_doubt
            && !self.listed.contains_key(&key)
            && let Some(id) = src_id
        {
            match self.confirm(true, &key, Some(id)).await {
                Ok(found) => a = found,
                Err(f) => return self.fail(&key, &native, f),
            }
        }
        // As when listed and filtered out: an ineligible source is left out of the merge.
        if let Some(s) = &a
            && !self.eligible(s, binding.as_ref())
        {
            a = None;
        }
        match self.merge_sides(a, Some(b_seen), binding).await {
            Ok(None) => self.succeeded(&key),
            Ok(Some(merge)) => match self.apply_merge(merge).await {
                Ok(()) => self.succeeded(&key),
                Err(f) => self.fail(&key, &native, f),
            },
            Err(f) => self.fail(&key, &native, f),
        }
    }

    /// Three-way merge of one record: `a` (source) and `b` (target) as read now, against
    /// what was last synced. Sides not read this run are taken as unchanged. A merge that
    /// writes to the source while it is being listed is returned instead of applied.
    pub(super) async fn merge_sides(
        &mut self,
        a: Option<Seen>,
        b: Option<Seen>,
        binding: Option<Binding>,
    ) -> Result<Option<Merge>, Fail> {
        let key = a
            .as_ref()
            .or(b.as_ref())
            .map(|s| s.key.clone())
            .unwrap_or_default();
        let mut bind = binding.unwrap_or_else(|| Binding {
            key: key.clone(),
            ..Default::default()
        });
        let (src_a, dst_a) = (self.src.is_a, self.dst.is_a);
        if let Some(s) = &a
            && let Some(id) = &s.id
        {
            bind.set_id(src_a, id.clone());
        }
        if let Some(s) = &b
            && let Some(id) = &s.id
        {
            bind.set_id(dst_a, id.clone());
        }
        // What each side holds now.
        let mut a_now = a
            .as_ref()
            .map(|s| s.canon.clone())
            .or_else(|| bind.base(src_a).cloned());
        let mut b_now = b
            .as_ref()
            .map(|s| s.canon.clone())
            .or_else(|| bind.base(dst_a).cloned());
        if a_now.is_none()
            && bind.id(src_a).is_none()
            && let Some(found) = self.lookup(true, &key).await?
        {
            if let Some(id) = &found.id {
                bind.set_id(src_a, id.clone());
            }
            a_now = Some(found.canon);
        }
        if b_now.is_none()
            && bind.id(dst_a).is_none()
            && let Some(found) = self.lookup(false, &key).await?
        {
            if let Some(id) = &found.id {
                bind.set_id(dst_a, id.clone());
            }
            b_now = Some(found.canon);
        }
        match (a_now, b_now) {
            // Only on one side: create it on the other.
            (Some(av), None) => self.create_on_other_side(&key, bind, av, false).await,
            (None, Some(bv)) => self.create_on_other_side(&key, bind, bv, true).await,
            (None, None) => Ok(None),
            (Some(av), Some(bv)) => self.three_way(&key, bind, av, bv).await,
        }
    }

    /// A record that exists on one side only is created on the other (`to_source`: the
    /// source), unless the flow only updates.
    async fn create_on_other_side(
        &mut self,
        key: &str,
        mut bind: Binding,
        canon: Value,
        to_source: bool,
    ) -> Result<Option<Merge>, Fail> {
        let (from, to) = if to_source {
            (self.dst.is_a, self.src.name)
        } else {
            (self.src.is_a, self.dst.name)
        };
        if self.flow.config.mode == SyncMode::Update {
            let reason = format!("not in `{to}`; mode updates only");
            self.record(key, Decision::Skip, None, Vec::new(), Some(reason));
            return Ok(None);
        }
        *bind.base_mut(from) = Some(canon.clone());
        if !self.opts.dry_run {
            self.create(to_source, &mut bind, &canon).await?;
        } else {
            self.plan_create(to_source, &mut bind, &canon)?;
        }
        let changes = diff(None, &canon, &self.cmp);
        self.record(key, Decision::Create, Some(to), changes, None);
        Ok(None)
    }

    pub(super) async fn three_way(
        &mut self,
        key: &str,
        mut bind: Binding,
        av: Value,
        bv: Value,
    ) -> Result<Option<Merge>, Fail> {
        let (src_a, dst_a) = (self.src.is_a, self.dst.is_a);
        let base_a = bind.base(src_a).cloned();
        let base_b = bind.base(dst_a).cloned();
        let first_sync = base_a.is_none() && base_b.is_none();
        let mut merged = serde_json::Map::new();
        let mut conflicts = Vec::new();
        let mut parked = Vec::new();
        let conflict = self.flow.config.conflict.clone();
        for f in &self.cmp {
            let (x, y) = (
                av.get(f).cloned().unwrap_or(Value::Null),
                bv.get(f).cloned().unwrap_or(Value::Null),
            );
            let a_changed = first_sync
                || base_a
                    .as_ref()
                    .and_then(|v| v.get(f))
                    .unwrap_or(&Value::Null)
                    != &x;
            let b_changed = first_sync
                || base_b
                    .as_ref()
                    .and_then(|v| v.get(f))
                    .unwrap_or(&Value::Null)
                    != &y;
            let value = if x == y || (a_changed && !b_changed) {
                x
            } else if b_changed && !a_changed {
                y
            } else {
                // Both changed, differently.
                conflicts.push(f.clone());
                match self.resolve(f, &av, &bv, conflict.as_ref()) {
                    Some(true) => x,
                    Some(false) => y,
                    None => {
                        parked.push(f.clone());
                        x
                    }
                }
            };
            merged.insert(f.clone(), value);
        }
        let merged = Value::Object(merged);
        if !parked.is_empty() {
            let fields = parked
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let reason = if first_sync {
                format!("the sides differ on {fields} at the first sync; parked for review")
            } else {
                format!("both sides changed {fields}; parked for review")
            };
            if !self.opts.dry_run {
                bind.parked = Some(reason.clone());
                self.put_binding(&bind)
                    .map_err(|e| Fail::msg(e.to_string()))?;
            }
            self.record(
                key,
                Decision::Park,
                None,
                diff(Some(&bv), &av, &parked),
                Some(reason),
            );
            return Ok(None);
        }
        let to_b = !same(Some(&merged), Some(&bv), &self.cmp);
        let to_a = !same(Some(&merged), Some(&av), &self.cmp);
        let decision = if !conflicts.is_empty() {
            Decision::Conflict
        } else if to_a || to_b {
            Decision::Update
        } else if first_sync {
            Decision::Adopt
        } else {
            Decision::Skip
        };
        let reason = (!conflicts.is_empty()).then(|| {
            let fields = conflicts
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ");
            // The rule as the flow file spells it (`erp_wins`).
            let rule = conflict
                .as_ref()
                .and_then(|c| serde_json::to_value(c.rule).ok())
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            if first_sync {
                format!("the sides differ on {fields} at the first sync; resolved by `{rule}`")
            } else {
                format!("both sides changed {fields}; resolved by `{rule}`")
            }
        });
        let merge = Merge {
            key: key.to_string(),
            bind,
            av,
            bv,
            merged,
            to_a,
            to_b,
            decision,
            reason,
        };
        // A record read again while its first merge waits replaces that merge.
        if self.listing_source && (to_a || self.deferred_index.contains_key(key)) {
            return Ok(Some(merge));
        }
        self.apply_merge(merge).await?;
        Ok(None)
    }

    /// Writes a merged record to the sides that differ from it, binds it and reports it.
    pub(super) async fn apply_merge(&mut self, m: Merge) -> Result<(), Fail> {
        let Merge {
            key,
            mut bind,
            av,
            bv,
            merged,
            to_a,
            to_b,
            decision,
            reason,
        } = m;
        let key = key.as_str();
        let (src_a, dst_a) = (self.src.is_a, self.dst.is_a);
        let b_write = overlay(Some(&bv), &merged, &self.cmp);
        let a_write = overlay(Some(&av), &merged, &self.cmp);
        if !self.opts.dry_run {
            bind.parked = None;
            *bind.base_mut(src_a) = Some(av.clone());
            *bind.base_mut(dst_a) = Some(bv.clone());
            if to_b {
                self.update(false, &mut bind, &b_write, None).await?;
            }
            if to_a {
                self.update(true, &mut bind, &a_write, None).await?;
            }
            if !to_a && !to_b {
                self.put_binding(&bind)
                    .map_err(|e| Fail::msg(e.to_string()))?;
            }
        }
        if to_b {
            self.record(
                key,
                decision,
                Some(self.dst.name),
                diff(Some(&bv), &merged, &self.cmp),
                reason.clone(),
            );
            if to_a {
                // Count one decision per record; list the other side's changes as well.
                self.report
                    .records
                    .extend(
                        (self.opts.dry_run || self.opts.details).then(|| RecordReport {
                            key: key.to_string(),
                            decision,
                            target: Some(self.src.name.to_string()),
                            changes: diff(Some(&av), &merged, &self.cmp),
                            reason: reason.clone(),
                        }),
                    );
            }
        } else if to_a {
            self.record(
                key,
                decision,
                Some(self.src.name),
                diff(Some(&av), &merged, &self.cmp),
                reason,
            );
        } else {
            self.record(key, decision, None, Vec::new(), reason);
        }
        Ok(())
    }

    /// Which side wins a conflicting field: `Some(true)` the source, `Some(false)` the
    /// target, `None` a person decides.
    pub(super) fn resolve(
        &self,
        field: &str,
        av: &Value,
        bv: &Value,
        conflict: Option<&crate::config::model::ConflictConfig>,
    ) -> Option<bool> {
        let c = conflict?;
        if let Some(owner) = c.owners.get(field) {
            return Some(owner == self.src.name || owner == &self.flow.config.from);
        }
        match c.rule {
            ConflictRule::ErpWins => Some(self.src.role == Some(SystemRole::Erp)),
            ConflictRule::ShopWins => Some(self.src.role == Some(SystemRole::Shop)),
            ConflictRule::NewestWins => {
                let ts = c
                    .timestamp_field
                    .as_deref()
                    .or(self.entity.updated_at.as_deref())?;
                let t = |v: &Value| {
                    v.get(ts)
                        .and_then(Value::as_str)
                        .and_then(crate::expr::parse_datetime)
                };
                Some(t(av) >= t(bv))
            }
            ConflictRule::Owner | ConflictRule::Park => None,
        }
    }

    // -----------------------------------------------------------------------------------
    // Applying
}
