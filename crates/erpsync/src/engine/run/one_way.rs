//! One-way flows: a record read from the source is decided by `decide::decide` (create,
//! update, adopt, skip, locked…) and applied; overwrite reports, and related records synced
//! first.

use super::*;

impl<'e> Runner<'e> {
    /// A record read from the source.
    pub(super) async fn handle(&mut self, mut seen: Seen) -> Result<(), EngineRunError> {
        if let Some(down) = self.system_down() {
            return Err(down);
        }
        let key = seen.key.clone();
        let mut binding = self.take_binding(&key).await?;
        if !self.eligible(&seen, binding.as_ref()) {
            if self.flow.on_transition.is_some() && !self.opts.dry_run {
                // Remember what was seen, so the next transition is recognised.
                let b = binding.get_or_insert_with(|| Binding {
                    key: key.clone(),
                    ..Default::default()
                });
                if let Some(id) = &seen.id {
                    self.set_id_on(b, Side::Source, id.clone());
                }
                *self.base_on_mut(b, Side::Source) = Some(seen.canon.clone());
                self.put_binding(b).await?;
            }
            self.record(&key, Decision::Filtered, None, Vec::new(), None);
            return Ok(());
        }
        if self.bidirectional() {
            let other = match self.target_of(&key, binding.as_ref()).await {
                Ok(other) => other,
                Err(f) => return self.fail(&key, &seen.native(), f).await,
            };
            return self.sync_both(seen, other, binding).await;
        }
        if self.in_flight.width > 1 {
            self.room_for(&key).await?;
        }
        let outcome = self.one_way(&mut seen, binding).await;
        if std::mem::take(&mut self.in_flight.queued) {
            // Sent; reported once answered.
            return Ok(());
        }
        match outcome {
            Ok(()) => self.succeeded(&key).await,
            Err(f) => self.fail(&key, &seen.native(), f).await,
        }
    }

    /// A record read from the source of a one-way flow: decided (see `decide::decide`),
    /// reading the target when the decision needs it, then applied.
    pub(super) async fn one_way(
        &mut self,
        seen: &mut Seen,
        binding: Option<Binding>,
    ) -> Result<(), Fail> {
        let (all_cmp, all_carried) = (self.cmp.clone(), self.carried.clone());
        let (cmp, carried) =
            decide::fields_for(self.flow.skip_nulls, &all_cmp, &all_carried, &seen.canon);
        let rules = OneWayRules {
            mode: self.flow.mode,
            export_once: self.flow.export_once,
            allow_edit_after_export: self.flow.allow_edit_after_export,
            reconcile: self.opts.reconcile,
            compared: &cmp,
            carried: &carried,
        };
        let key = seen.key.clone();
        let mut b = binding.unwrap_or_else(|| Binding {
            key: key.clone(),
            ..Default::default()
        });
        // A binding made without the source's id (a create settled from the journal) learns
        // it here, and keeps it: post-actions and the flow back need it.
        let learned = self.id_on(&b, Side::Source).is_none() && seen.id.is_some();
        if let Some(id) = &seen.id {
            self.set_id_on(&mut b, Side::Source, id.clone());
        }
        let dst_name = self.dst.name;
        let bound = self.id_on(&b, Side::Target).is_some();
        if bound {
            if learned && !self.opts.dry_run {
                self.put_binding(&b)
                    .await
                    .map_err(|e| Fail::msg(e.to_string()))?;
            }
            if rules.export_once && !b.actions_done && !self.flow.after_export.is_empty() {
                // Exported, but its post-actions did not all succeed: try them again.
                self.deferred.actions.push(b.clone());
            }
        }
        let link = Link {
            bound,
            target_base: self.base_on(&b, Side::Target),
        };
        let mut verdict = decide::decide(&rules, &seen.canon, link, Counterpart::NotRead);
        let mut found = None;
        if verdict == Verdict::ReadTarget {
            found = if bound {
                // Reconciling: the target as it is now, from the full read; missing from it,
                // it was missed by shifting pages, or deleted.
                let indexed = match &self.index.records {
                    Some(i) => i
                        .get_like(&key, &seen.canon)
                        .map_err(|e| Fail::msg(e.to_string()))?,
                    None => None,
                };
                match indexed {
                    Some(f) => Some(f),
                    None => self
                        .confirm(Side::Target, &key, self.id_on(&b, Side::Target))
                        .await?
                        .map(Like::Other),
                }
            } else {
                // Not bound yet: is it already in the target?
                if self.unsettled.in_doubt.contains(&key) {
                    return Err(Fail::msg(
                        "an earlier write of this record has an unknown outcome; not sent again until it is settled",
                    ));
                }
                self.ensure_required(seen).await?;
                // Only the canonical record and the id of what is found are read below.
                self.lookup_like(Side::Target, &key, Some(&seen.canon))
                    .await?
            };
            // The same record as the source's is compared as the source's own (`same` takes
            // one record twice as equal without looking at its fields).
            let counterpart = match &found {
                Some(Like::Same { .. }) => Counterpart::Read(&seen.canon),
                Some(Like::Other(f)) => Counterpart::Read(&f.canon),
                None => Counterpart::Absent,
            };
            let link = Link {
                bound,
                target_base: self.base_on(&b, Side::Target),
            };
            verdict = decide::decide(&rules, &seen.canon, link, counterpart);
            if !bound
                && let Some(Like::Same { id: Some(id) } | Like::Other(Seen { id: Some(id), .. })) =
                    &found
            {
                self.set_id_on(&mut b, Side::Target, id.clone());
            }
        }
        // Found the same as the source's, the target's base is the source's record: kept
        // once for both sides where the binding is stored as it is (see `bases_equal`).
        let once = !self.opts.dry_run && matches!(found, Some(Like::Same { .. }));
        let found = found.and_then(|f| match f {
            Like::Same { .. } if once => None,
            Like::Same { .. } => Some(seen.canon.clone()),
            Like::Other(f) => Some(f.canon),
        });
        let decision = verdict.decision();
        match verdict {
            Verdict::ReadTarget => {
                return Err(Fail::msg(format!(
                    "`{key}` could not be decided without reading `{dst_name}`"
                )));
            }
            Verdict::Locked => {
                let reason = "already exported; edits are locked";
                self.record(&key, decision, None, Vec::new(), Some(reason.into()));
            }
            Verdict::Missing => {
                // Bound but gone from the target: report, never delete or recreate blindly.
                let reason = format!("bound record is missing in `{dst_name}`");
                self.record(&key, decision, Some(dst_name), Vec::new(), Some(reason));
            }
            Verdict::Skip { why, rebase } => {
                if rebase && !self.opts.dry_run {
                    *self.base_on_mut(&mut b, Side::Target) = found;
                    *self.base_on_mut(&mut b, Side::Source) = Some(seen.canon.clone());
                    b.bases_equal = once;
                    self.hold_binding(b)
                        .await
                        .map_err(|e| Fail::msg(e.to_string()))?;
                }
                self.record(&key, decision, None, Vec::new(), why.reason(dst_name));
            }
            Verdict::Adopt => {
                *self.base_on_mut(&mut b, Side::Target) = found;
                // Its last use: the binding takes it (the caller keeps the native record).
                *self.base_on_mut(&mut b, Side::Source) = Some(std::mem::take(&mut seen.canon));
                b.bases_equal = once;
                self.mark_exported(&mut b);
                self.hold_binding(b)
                    .await
                    .map_err(|e| Fail::msg(e.to_string()))?;
                let reason = self
                    .lines(decision)
                    .then(|| adopt::adopted_reason(dst_name));
                self.record(&key, decision, Some(dst_name), Vec::new(), reason);
            }
            Verdict::Update {
                changes,
                corrected: true,
                ..
            } if !self.flow.reconcile_corrects => {
                // A reconciliation that only reports: the drift is said, with what differs,
                // and the target keeps what it holds.
                let fields: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
                tracing::warn!(flow = %self.flow.id, key, fields = ?fields, "drift found; not corrected (`reconcile.correct: false`)");
                self.report.counts.drifted += 1;
                self.report.count(Decision::Skip);
                self.line(RecordReport {
                    key: key.clone(),
                    decision: Decision::Skip,
                    target: Some(dst_name.to_string()),
                    changes,
                    reason: Some(format!(
                        "drift found in `{dst_name}`; not corrected (`reconcile.correct: false`)"
                    )),
                    steps: Vec::new(),
                });
            }
            Verdict::Update {
                write,
                changes,
                linked,
                corrected,
            } => {
                let mut reason = if linked {
                    Some(format!("already in `{dst_name}`; linked and updated"))
                } else {
                    corrected.then(|| "drift corrected".to_string())
                };
                if !linked
                    && self.watch_overwrites
                    && let Some(msg) = self.overwrites(&b, &seen.canon).await?
                {
                    self.report.counts.overwrites += 1;
                    reason = Some(msg);
                }
                if self.may_queue() {
                    return self
                        .queue_update(queued::Queued {
                            binding: b,
                            written: write,
                            source: seen.canon.clone(),
                            native: seen.native().into_owned(),
                            payload: Value::Null,
                            decision,
                            changes,
                            reason,
                            corrected,
                        })
                        .await;
                }
                if !self.opts.dry_run {
                    self.update(Side::Target, &mut b, &write, Some(&seen.canon))
                        .await?;
                } else {
                    self.plan_steps(Side::Target, &b, &write, true).await;
                    if linked {
                        *self.base_on_mut(&mut b, Side::Target) = found;
                    }
                    self.move_bases(Side::Target, &mut b, &write, Some(&seen.canon))
                        .await?;
                }
                if corrected {
                    self.report.counts.corrected += 1;
                }
                self.touched(&seen.canon);
                self.record(&key, decision, Some(dst_name), changes, reason);
            }
            Verdict::Create { changes } => {
                *self.base_on_mut(&mut b, Side::Source) = Some(seen.canon.clone());
                if !self.opts.dry_run {
                    self.create(Side::Target, &mut b, &seen.canon).await?;
                    self.e.forget_absent(&self.flow.id, &key).await;
                    self.deferred.actions.push(b.clone());
                } else {
                    self.plan_steps(Side::Target, &b, &seen.canon, false).await;
                    self.plan_create(Side::Target, &mut b, &seen.canon).await?;
                }
                self.touched(&seen.canon);
                self.record(&key, decision, Some(dst_name), changes, None);
            }
        }
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
            self.id_on(b, Side::Target),
            self.base_on(b, Side::Target),
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
            if !flow.enabled {
                // `validate` refuses this for enabled flows; a disabled one run by hand
                // still never makes a disabled flow run.
                return Err(Fail::msg(format!(
                    "required flow `{flow_id}` is disabled; enable it to sync the related record"
                )));
            }
            let mut runner = Runner::new(self.e, &flow, &opts, self.started)
                .await
                .map_err(|e| Fail::msg(e.to_string()))?;
            if let Some(keys) = self.unsettled.required.get(&flow_id) {
                runner.unsettled.in_doubt = keys.clone();
            }
            let mapped =
                canonical::normalise(runner.entity, sub).map_err(|e| Fail::msg(e.to_string()))?;
            let Some(raw) = canonical::field_text(&mapped, &runner.flow.match_key) else {
                continue;
            };
            let key = normalize(&raw, &runner.flow.normalize);
            let mut sub_seen = Seen {
                key: key.clone(),
                id: None,
                canon: mapped.clone(),
                native: mapped,
                text: None,
            };
            let binding = runner
                .binding(&key)
                .await
                .map_err(|e| Fail::msg(e.to_string()))?;
            let synced = Box::pin(runner.one_way(&mut sub_seen, binding)).await;
            // What it bound is needed now: this record's write mapping refers to it.
            runner
                .write_held()
                .await
                .map_err(|e| Fail::msg(e.to_string()))?;
            if let Err(f) = synced {
                return Err(Fail::msg(format!(
                    "required {} `{key}` could not be synced: {}",
                    runner.entity.name, f.error
                )));
            }
            // Synced: a failure the required flow kept for it (a refused resend of a create
            // left in doubt) is over, and no retry of that manual flow will look for it.
            runner
                .succeeded(&key)
                .await
                .map_err(|e| Fail::msg(e.to_string()))?;
            let done = runner.report.counts;
            self.report.required.entry(flow_id).or_default().add(&done);
        }
        Ok(())
    }
}
