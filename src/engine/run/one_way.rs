//! One-way flows: the decision for a record read from the source (create, update, adopt,
//! skip, locked…), overwrite reports, and related records synced first.

use super::*;

impl<'e> Runner<'e> {
    /// A record read from the source.
    pub(super) async fn handle(&mut self, seen: Seen) -> Result<(), EngineRunError> {
        if let Some(down) = self.system_down() {
            return Err(down);
        }
        let key = seen.key.clone();
        let mut binding = self.binding(&key)?;
        if !self.eligible(&seen, binding.as_ref()) {
            if self.flow.config.trigger.on_transition.is_some() && !self.opts.dry_run {
                // Remember what was seen, so the next transition is recognised.
                let b = binding.get_or_insert_with(|| Binding {
                    key: key.clone(),
                    ..Default::default()
                });
                if let Some(id) = &seen.id {
                    b.set_id(self.src.is_a, id.clone());
                }
                *b.base_mut(self.src.is_a) = Some(seen.canon.clone());
                self.put_binding(b)?;
            }
            self.record(&key, Decision::Filtered, None, Vec::new(), None);
            return Ok(());
        }
        if self.bidirectional() {
            let other = match self.target_of(&key, binding.as_ref()).await {
                Ok(other) => other,
                Err(f) => return self.fail(&key, &seen.native, f),
            };
            return self.sync_both(seen, other, binding).await;
        }
        let outcome = self.one_way(&seen, binding).await;
        match outcome {
            Ok(()) => self.succeeded(&key),
            Err(f) => self.fail(&key, &seen.native, f),
        }
    }

    pub(super) async fn one_way(
        &mut self,
        seen: &Seen,
        binding: Option<Binding>,
    ) -> Result<(), Fail> {
        let (cmp, carried) = self.fields_for(&seen.canon);
        let (cmp, carried) = (cmp.into_owned(), carried.into_owned());
        let key = seen.key.clone();
        let export_once = self.flow.config.export_once;
        let mut b = binding.unwrap_or_else(|| Binding {
            key: key.clone(),
            ..Default::default()
        });
        // A binding made without the source's id (a create settled from the journal) learns
        // it here, and keeps it: post-actions and the flow back need it.
        let learned = b.id(self.src.is_a).is_none() && seen.id.is_some();
        if let Some(id) = &seen.id {
            b.set_id(self.src.is_a, id.clone());
        }
        let dst_name = self.dst.name;

        if b.id(self.dst.is_a).is_some() {
            if learned && !self.opts.dry_run {
                self.put_binding(&b).map_err(|e| Fail::msg(e.to_string()))?;
            }
            if export_once && !b.actions_done && !self.flow.config.after_export.is_empty() {
                // Exported, but its post-actions did not all succeed: try them again.
                self.deferred_actions.push(b.clone());
            }
            if export_once && !self.flow.config.allow_edit_after_export {
                self.record(
                    &key,
                    Decision::Locked,
                    None,
                    Vec::new(),
                    Some("already exported; edits are locked".into()),
                );
                return Ok(());
            }
            if matches!(
                self.flow.config.mode,
                SyncMode::Create | SyncMode::CreateMissing
            ) {
                self.record(
                    &key,
                    Decision::Skip,
                    None,
                    Vec::new(),
                    Some("exists in target; mode creates only".into()),
                );
                return Ok(());
            }
            let (current, corrected) = if self.opts.reconcile {
                let mut found = self.index.as_ref().and_then(|i| i.get(&key)).cloned();
                if found.is_none() {
                    // Missing from the full read: missed by shifting pages, or deleted.
                    found = self.confirm(false, &key, b.id(self.dst.is_a)).await?;
                }
                match found {
                    Some(c) => (Some(c.canon), true),
                    None => {
                        // Bound but gone from the target: report, never delete or recreate blindly.
                        self.record(
                            &key,
                            Decision::Failed,
                            Some(dst_name),
                            Vec::new(),
                            Some(format!("bound record is missing in `{dst_name}`")),
                        );
                        return Ok(());
                    }
                }
            } else {
                (None, false)
            };
            // What the target holds is what the source is compared with: the target's last
            // known record (read, adopted or written), on this flow's fields. A pair adopted
            // while it differed, or a field another flow on this pair left alone, is written
            // on the first run; a record this flow or the opposite one already wrote is not.
            let unchanged = match &current {
                Some(cur) => same(Some(cur), Some(&seen.canon), &cmp),
                None => {
                    b.base(self.dst.is_a).is_some()
                        && same(b.base(self.dst.is_a), Some(&seen.canon), &cmp)
                }
            };
            if unchanged {
                if current.is_some()
                    && !self.opts.dry_run
                    && !same(b.base(self.dst.is_a), current.as_ref(), &cmp)
                {
                    *b.base_mut(self.dst.is_a) = current;
                    *b.base_mut(self.src.is_a) = Some(seen.canon.clone());
                    self.put_binding(&b).map_err(|e| Fail::msg(e.to_string()))?;
                }
                self.record(&key, Decision::Skip, None, Vec::new(), None);
                return Ok(());
            }
            let old = current.clone().or_else(|| b.base(self.dst.is_a).cloned());
            let changes = diff(old.as_ref(), &seen.canon, &cmp);
            let mut reason = corrected.then(|| "drift corrected".to_string());
            if self.watch_overwrites
                && let Some(msg) = self.overwrites(&b, &seen.canon).await?
            {
                self.report.counts.overwrites += 1;
                reason = Some(msg);
            }
            let to_write = overlay(old.as_ref(), &seen.canon, &carried);
            if !self.opts.dry_run {
                self.update(false, &mut b, &to_write, Some(&seen.canon))
                    .await?;
            } else {
                self.move_bases(false, &mut b, &to_write, Some(&seen.canon))?;
            }
            if corrected {
                self.report.counts.corrected += 1;
            }
            self.touched(&seen.canon);
            self.record(&key, Decision::Update, Some(dst_name), changes, reason);
            return Ok(());
        }

        // Not bound yet: is it already in the target?
        if self.in_doubt.contains(&key) {
            return Err(Fail::msg(
                "an earlier write of this record has an unknown outcome; not sent again until it is settled",
            ));
        }
        self.ensure_required(seen).await?;
        if let Some(found) = self.lookup(false, &key).await? {
            if let Some(id) = &found.id {
                b.set_id(self.dst.is_a, id.clone());
            }
            let equal = same(Some(&found.canon), Some(&seen.canon), &cmp);
            if equal
                || matches!(
                    self.flow.config.mode,
                    SyncMode::Create | SyncMode::CreateMissing
                )
                || export_once
            {
                *b.base_mut(self.dst.is_a) = Some(found.canon.clone());
                *b.base_mut(self.src.is_a) = Some(seen.canon.clone());
                if export_once && b.exported_at.is_none() {
                    b.exported_at = Some(self.e.clock.now());
                }
                self.put_binding(&b).map_err(|e| Fail::msg(e.to_string()))?;
                self.record(
                    &key,
                    Decision::Adopt,
                    Some(dst_name),
                    Vec::new(),
                    Some(format!("already in `{dst_name}`; linked")),
                );
                return Ok(());
            }
            let changes = diff(Some(&found.canon), &seen.canon, &cmp);
            let to_write = overlay(Some(&found.canon), &seen.canon, &carried);
            if !self.opts.dry_run {
                self.update(false, &mut b, &to_write, Some(&seen.canon))
                    .await?;
            } else {
                *b.base_mut(self.dst.is_a) = Some(found.canon.clone());
                self.move_bases(false, &mut b, &to_write, Some(&seen.canon))?;
            }
            self.touched(&seen.canon);
            self.record(
                &key,
                Decision::Update,
                Some(dst_name),
                changes,
                Some(format!("already in `{dst_name}`; linked and updated")),
            );
            return Ok(());
        }
        if self.flow.config.mode == SyncMode::Update {
            self.record(
                &key,
                Decision::Skip,
                None,
                Vec::new(),
                Some(format!("not in `{dst_name}`; mode updates only")),
            );
            return Ok(());
        }
        let changes = diff(None, &seen.canon, &cmp);
        *b.base_mut(self.src.is_a) = Some(seen.canon.clone());
        if !self.opts.dry_run {
            self.create(false, &mut b, &seen.canon).await?;
            self.e.forget_absent(&self.flow.id, &key);
            self.deferred_actions.push(b.clone());
        } else {
            self.plan_create(false, &mut b, &seen.canon)?;
        }
        self.touched(&seen.canon);
        self.record(&key, Decision::Create, Some(dst_name), changes, None);
        Ok(())
    }

    /// Fields the target changed since the last sync that this update replaces.
    pub(super) async fn overwrites(
        &self,
        b: &Binding,
        new: &Value,
    ) -> Result<Option<String>, Fail> {
        let (Some(get), Some(id), Some(base)) = (
            &self.dst.ent.get,
            b.id(self.dst.is_a),
            b.base(self.dst.is_a),
        ) else {
            return Ok(None);
        };
        let input = CallInput {
            id: Some(id.to_string()),
            ..Default::default()
        };
        let out = match self.dst.http.call(get, &input).await {
            Ok(o) => o,
            Err(_) => return Ok(None),
        };
        let native = out.record.unwrap_or(out.body);
        let Ok(now) = self.seen(&self.dst, native) else {
            return Ok(None);
        };
        let fields: Vec<String> = self
            .cmp
            .iter()
            .filter(|f| now.canon.get(*f) != base.get(*f) && now.canon.get(*f) != new.get(*f))
            .cloned()
            .collect();
        Ok((!fields.is_empty()).then(|| {
            format!(
                "overwrites edits made in `{}` to {}",
                self.dst.name,
                fields
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }))
    }

    /// Related records this one needs in the target (an order's customer) are synced first.
    pub(super) async fn ensure_required(&mut self, seen: &Seen) -> Result<(), Fail> {
        for (flow_id, path) in self.flow.requires.clone() {
            let Some(sub) = path.first(&seen.canon).cloned() else {
                continue;
            };
            if sub.is_null() {
                continue;
            }
            let opts = RunOptions {
                dry_run: self.opts.dry_run,
                ..Default::default()
            };
            let Some(flow) = self.e.project.flow(&flow_id).cloned() else {
                continue;
            };
            if !flow.config.enabled {
                // `validate` refuses this for enabled flows; a disabled one run by hand
                // still never makes a disabled flow run.
                return Err(Fail::msg(format!(
                    "required flow `{flow_id}` is disabled; enable it to sync the related record"
                )));
            }
            let mut runner = Runner::new(self.e, &flow, &opts, self.started)
                .map_err(|e| Fail::msg(e.to_string()))?;
            if let Some(keys) = self.required_in_doubt.get(&flow_id) {
                runner.in_doubt = keys.clone();
            }
            let mapped = canonical::normalise(runner.entity, sub).map_err(Fail::msg)?;
            let Some(raw) = canonical::field_text(&mapped, &runner.flow.match_key) else {
                continue;
            };
            let key = normalize(&raw, &runner.flow.normalize);
            let sub_seen = Seen {
                key: key.clone(),
                id: None,
                canon: mapped.clone(),
                native: mapped,
            };
            let binding = runner.binding(&key).map_err(|e| Fail::msg(e.to_string()))?;
            if let Err(f) = Box::pin(runner.one_way(&sub_seen, binding)).await {
                return Err(Fail::msg(format!(
                    "required {} `{key}` could not be synced: {}",
                    runner.entity.name, f.error
                )));
            }
            let done = runner.report.counts;
            self.report.required.entry(flow_id).or_default().add(&done);
        }
        Ok(())
    }
}
