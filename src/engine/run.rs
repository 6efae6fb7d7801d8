//! One run of one flow: read, map, match, decide, apply.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::canonical::{self, FieldChange, compared_fields, diff, overlay, same};
use super::{Decision, Engine, EngineRunError, RecordReport, RunOptions, RunReport};
use crate::compile::types::normalize;
use crate::compile::{Entity, Flow, MapEnv, RefResolver, SystemEntity};
use crate::config::model::{ConflictRule, Direction, SyncMode, SystemRole};
use crate::connector::{CallError, CallInput, HttpSystem};
use crate::redact::redact_json;
use crate::state::{Binding, Failure, JournalEntry, JournalState, Scope};

/// After this many single lookups in one run, the target may be read in full instead.
const BULK_LOOKUPS: usize = 50;
/// Records a list page is taken to hold when weighing single lookups against a full read of
/// the target: one lookup costs about one page request.
const RECORDS_PER_PAGE: usize = 100;

/// One side of a flow.
struct Side<'e> {
    name: &'e str,
    ent: &'e SystemEntity,
    http: &'e HttpSystem,
    is_a: bool,
    role: Option<SystemRole>,
}

/// A record read from a side, mapped.
#[derive(Clone)]
struct Seen {
    key: String,
    id: Option<String>,
    canon: Value,
    native: Value,
}

/// The outcome of a three-way merge of one record, ready to be written.
struct Merge {
    key: String,
    bind: Binding,
    av: Value,
    bv: Value,
    merged: Value,
    to_a: bool,
    to_b: bool,
    decision: Decision,
    reason: Option<String>,
}

/// Why a record could not be synced.
struct Fail {
    error: String,
    status: Option<u16>,
    response: Option<Box<Value>>,
    payload: Option<Box<Value>>,
}

impl Fail {
    fn msg(error: impl Into<String>) -> Self {
        Fail {
            error: error.into(),
            status: None,
            response: None,
            payload: None,
        }
    }
    fn call(e: &CallError, payload: Option<Value>) -> Self {
        let response = match e {
            CallError::Permanent { body, .. } | CallError::NotFound { body, .. } => {
                Some(body.clone())
            }
            _ => None,
        };
        Fail {
            error: e.to_string(),
            status: e.status(),
            response,
            payload: payload.map(Box::new),
        }
    }
}

struct Refs<'a> {
    engine: &'a Engine,
    from: &'a str,
    to: &'a str,
}

impl RefResolver for Refs<'_> {
    fn resolve(&self, entity: &str, key: &str) -> Option<String> {
        let steps = self
            .engine
            .key_normalize
            .get(entity)
            .cloned()
            .unwrap_or_default();
        let key = normalize(key, &steps);
        let scope = Scope::new(entity, self.from, self.to);
        let found = self
            .engine
            .store
            .bindings(&scope, std::slice::from_ref(&key))
            .ok()?;
        found
            .get(&key)
            .and_then(|b| b.id(scope.is_a(self.to)).map(str::to_string))
    }
}

/// The operation that reads a side: what changed since the cursor when the entity has a
/// `changes` operation and the read is incremental, otherwise everything.
fn list_operation(ent: &SystemEntity, since: Option<DateTime<Utc>>) -> Option<String> {
    match (&ent.changes, since) {
        (Some(changes), Some(_)) => Some(changes.clone()),
        _ => ent.list.clone(),
    }
}

pub(super) async fn run_flow(
    engine: &Engine,
    flow: &Arc<Flow>,
    opts: &RunOptions,
) -> Result<RunReport, EngineRunError> {
    let kind = if opts.reconcile {
        "reconcile"
    } else if opts.keys.is_some() {
        "scoped"
    } else {
        "sync"
    };
    let started = engine.clock.now();
    let run_id = if opts.dry_run {
        None
    } else {
        Some(engine.store.run_start(&flow.id, kind, started)?)
    };
    let mut runner = Runner::new(engine, flow, opts, started)?;
    runner.report.kind = kind.to_string();
    let result = runner.execute().await;
    let mut report = runner.report;
    if let Err(e) = &result {
        report.errors.push(e.to_string());
    }
    if let Some(id) = run_id {
        let status = if !report.ok() {
            "error"
        } else if report.counts.failed > 0 {
            "partial"
        } else {
            "ok"
        };
        let counts = serde_json::to_value(&report.counts).unwrap_or(Value::Null);
        let error = report
            .errors
            .first()
            .map(|e| crate::redact::redact(e).into_owned());
        engine
            .store
            .run_finish(id, engine.clock.now(), status, &counts, error.as_deref())?;
    }
    tracing::info!(
        flow = %flow.id,
        kind,
        dry_run = opts.dry_run,
        created = report.counts.created,
        updated = report.counts.updated,
        skipped = report.counts.skipped,
        failed = report.counts.failed,
        "run finished"
    );
    Ok(report)
}

struct Runner<'e> {
    e: &'e Engine,
    flow: &'e Flow,
    opts: &'e RunOptions,
    entity: &'e Entity,
    src: Side<'e>,
    dst: Side<'e>,
    scope: Scope,
    /// Canonical fields the flow carries.
    carried: Vec<String>,
    /// Carried fields that take part in change detection.
    cmp: Vec<String>,
    started: DateTime<Utc>,
    /// The target's records by key, when the whole target was read.
    index: Option<HashMap<String, Seen>>,
    /// Target records changed since the cursor (bidirectional flows).
    dst_changes: HashMap<String, Seen>,
    /// Keys with a stored failure, cleared when they succeed.
    failing: HashSet<String>,
    /// Target lookups made so far (see `lookup`).
    lookups: usize,
    /// Keys with a write of unknown outcome still unsettled: never sent again blindly.
    in_doubt: HashSet<String>,
    /// Exported records whose post-actions wait for the end of the listing.
    deferred_actions: Vec<Binding>,
    /// Whether the source is being paged through: writes to it now would move records
    /// between pages (lists ordered by modification time) and make the listing skip some.
    listing_source: bool,
    /// Bidirectional merges that write to the source, applied once the listing is over,
    /// with the source record (for a failure) and by key, so a record read twice is
    /// written once, from its latest reading.
    deferred_merges: Vec<(Merge, Value)>,
    deferred_index: HashMap<String, usize>,
    /// Keys read so far by an incremental listing, with the `updated_at` they had then:
    /// a key read twice shows that the pages shifted while they were read.
    listed: HashMap<String, Option<DateTime<Utc>>>,
    /// Whether a listing of this run shifted (see `note_reread`): `Some(Some(t))` holds
    /// the next cursor at or before `t`; `Some(None)` keeps the cursor where it was.
    drift: Option<Option<DateTime<Utc>>>,
    /// The stored bindings of the source page being handled (`None`: no binding), read in
    /// one call; a key is dropped from it when its binding is written.
    page_bindings: HashMap<String, Option<Binding>>,
    /// Whether target edits can exist that an update would overwrite: this or the opposite
    /// flow allows editing after export, or this flow has a conflict rule. Such updates read
    /// the target first and report what they overwrite.
    watch_overwrites: bool,
    /// Lookups after which the target is read in full; set at the first target lookup.
    bulk_after: Option<usize>,
    report: RunReport,
}

impl<'e> Runner<'e> {
    fn new(
        e: &'e Engine,
        flow: &'e Flow,
        opts: &'e RunOptions,
        started: DateTime<Utc>,
    ) -> Result<Self, EngineRunError> {
        let entity: &Entity = &e.project.entities[&flow.config.entity];
        let scope = Scope::new(&entity.name, &flow.from, &flow.to);
        let side = |name: &'e str| -> Side<'e> {
            let def = &e.project.systems[name];
            Side {
                name,
                ent: &def.entities[&entity.name],
                http: &e.systems[name],
                is_a: scope.is_a(name),
                role: def.role,
            }
        };
        let carried: Vec<String> = if flow.config.fields.is_empty() {
            entity.fields.keys().cloned().collect()
        } else {
            let mut f = flow.config.fields.clone();
            if !f.contains(&flow.match_key) {
                f.push(flow.match_key.clone());
            }
            f
        };
        let cmp = compared_fields(entity, &carried);
        let failing = if opts.dry_run {
            HashSet::new()
        } else {
            e.store
                .failures(Some(&flow.id))?
                .into_iter()
                .map(|f| f.key)
                .collect()
        };
        Ok(Runner {
            e,
            flow,
            opts,
            entity,
            src: side(&flow.from),
            dst: side(&flow.to),
            scope,
            carried,
            cmp,
            started,
            index: None,
            dst_changes: HashMap::new(),
            failing,
            lookups: 0,
            in_doubt: HashSet::new(),
            deferred_actions: Vec::new(),
            listing_source: false,
            deferred_merges: Vec::new(),
            deferred_index: HashMap::new(),
            listed: HashMap::new(),
            drift: None,
            page_bindings: HashMap::new(),
            watch_overwrites: flow.config.allow_edit_after_export
                || flow.config.conflict.is_some()
                || e.project.flows.iter().any(|f| {
                    f.config.entity == flow.config.entity
                        && f.from == flow.to
                        && f.to == flow.from
                        && f.config.allow_edit_after_export
                }),
            bulk_after: None,
            report: RunReport {
                flow: flow.id.clone(),
                dry_run: opts.dry_run,
                ..Default::default()
            },
        })
    }

    fn bidirectional(&self) -> bool {
        self.flow.config.direction == Direction::Bidirectional
    }

    async fn execute(&mut self) -> Result<(), EngineRunError> {
        if !self.opts.dry_run {
            self.settle_in_doubt().await?;
        }
        let incremental = self.flow.config.incremental.as_ref();
        let since = if self.opts.reconcile || self.opts.full || self.opts.keys.is_some() {
            None
        } else if let Some(inc) = incremental {
            let overlap = chrono::Duration::seconds(inc.overlap_secs as i64);
            match self.e.store.cursor(&self.flow.id)? {
                Some(c) => Some(c - overlap),
                None => self.flow.incremental_start,
            }
        } else {
            None
        };

        if self.opts.reconcile {
            self.index = Some(self.read_all_dst(None, false).await?);
        } else if self.bidirectional() {
            let changes = self.read_all_dst(since, true).await?;
            self.dst_changes = changes;
        }

        // The source, page by page.
        let scoped_lookup = self.opts.keys.is_some() && self.src.ent.lookup.is_some();
        if scoped_lookup {
            let keys = self.opts.keys.clone().unwrap_or_default();
            for key in keys {
                match self.lookup(true, &key).await {
                    Ok(Some(seen)) => self.handle(seen).await?,
                    Ok(None) => self.report.errors.push(format!(
                        "`{}` has no {} `{key}`",
                        self.src.name, self.entity.name
                    )),
                    Err(f) => self.fail(&key, &Value::Null, f)?,
                }
            }
        } else {
            let keys: Option<HashSet<String>> =
                self.opts.keys.as_ref().map(|k| k.iter().cloned().collect());
            let list_op = list_operation(self.src.ent, since).unwrap_or_default();
            let input = CallInput {
                since,
                ..Default::default()
            };
            let http = self.src.http;
            let mut pages = Box::pin(http.list(&list_op, input));
            // Dry runs write nothing, so they have nothing to hold back.
            self.listing_source = !self.opts.dry_run;
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| EngineRunError::Read {
                    flow: self.flow.id.clone(),
                    system: self.src.name.to_string(),
                    message: e.to_string(),
                })?;
                self.report.counts.read += page.records.len() as u64;
                let mut mapped = Vec::with_capacity(page.records.len());
                for native in page.records {
                    let seen = match self.seen(&self.src, native) {
                        Ok(s) => s,
                        Err(bad) => {
                            mapped.push(Err(bad));
                            continue;
                        }
                    };
                    if incremental.is_some() {
                        let stamp = self.stamp(&seen);
                        if let Some(first) = self.listed.insert(seen.key.clone(), stamp) {
                            self.note_reread(first);
                        }
                    }
                    if let Some(k) = &keys
                        && !k.contains(&seen.key)
                    {
                        continue;
                    }
                    mapped.push(Ok(seen));
                }
                // The page's bindings in one call rather than one query per record.
                let page_keys: Vec<String> = mapped
                    .iter()
                    .filter_map(|m| m.as_ref().ok().map(|s| s.key.clone()))
                    .collect();
                let mut found = self.e.store.bindings(&self.scope, &page_keys)?;
                self.page_bindings = page_keys
                    .into_iter()
                    .map(|k| {
                        let b = found.remove(&k);
                        (k, b)
                    })
                    .collect();
                for m in mapped {
                    match m {
                        Ok(seen) => self.handle(seen).await?,
                        Err(bad) => {
                            let (key, native, f) = *bad;
                            self.fail(&key, &native, f)?;
                        }
                    }
                }
                self.page_bindings.clear();
            }
            self.listing_source = false;
            self.listed = HashMap::new();
        }

        self.deferred_index.clear();
        for (merge, native) in std::mem::take(&mut self.deferred_merges) {
            let key = merge.key.clone();
            match self.apply_merge(merge).await {
                Ok(()) => self.succeeded(&key)?,
                Err(f) => self.fail(&key, &native, f)?,
            }
        }

        for b in std::mem::take(&mut self.deferred_actions) {
            self.after_export(b).await?;
        }

        if self.bidirectional() {
            let rest: Vec<Seen> = std::mem::take(&mut self.dst_changes)
                .into_values()
                .collect();
            for seen in rest {
                self.handle_reverse(seen).await?;
            }
        }

        if !self.opts.dry_run
            && incremental.is_some()
            && self.opts.keys.is_none()
            && self.report.ok()
        {
            // Failed records sit in the failure store, so the cursor may move past them.
            match self.drift {
                None => self.e.store.set_cursor(&self.flow.id, self.started)?,
                Some(Some(floor)) => {
                    let at = self.started.min(floor);
                    tracing::info!(flow = %self.flow.id, cursor = %at, "pages shifted while listing; cursor held back");
                    self.e.store.set_cursor(&self.flow.id, at)?;
                }
                Some(None) => {
                    tracing::info!(flow = %self.flow.id, "pages shifted while listing; cursor kept");
                }
            }
        }
        Ok(())
    }

    /// The `updated_at` of a record, when its entity maps one.
    fn stamp(&self, seen: &Seen) -> Option<DateTime<Utc>> {
        let field = self.entity.updated_at.as_deref()?;
        canonical::field_text(&seen.canon, field).and_then(|t| crate::expr::parse_datetime(&t))
    }

    /// A record came back a second time in one listing, so the list order changed while it
    /// was paged through. Lists that page by position over an order by modification time
    /// shift when a record already read is modified (it moves to the end, and that is how
    /// it is read twice): the record that slid back across the next page boundary is never
    /// served. That record was not modified (else it would be at the end as well), so the
    /// next run must read from its `updated_at`, and the wall-clock start of this run is
    /// past it. It came after the re-read record in the list order, so its stamp is at
    /// least the one the re-read record had when first read: the next cursor is held there,
    /// one second earlier so an exclusive filter or one that keeps whole seconds still
    /// returns records stamped at that same instant. Without a stamp, nothing bounds it and
    /// the cursor stays where it was. (A record that leaves the list, deleted or filtered
    /// out by the operation, shifts it without a trace: reconciliation covers that.)
    fn note_reread(&mut self, first_stamp: Option<DateTime<Utc>>) {
        let floor = first_stamp.map(|t| t - chrono::Duration::seconds(1));
        self.drift = match (self.drift, floor) {
            (Some(None), _) | (_, None) => Some(None),
            (None, Some(f)) => Some(Some(f)),
            (Some(Some(d)), Some(f)) => Some(Some(d.min(f))),
        };
    }

    /// Maps a native record of a side to its key, id and canonical record.
    fn seen(&self, side: &Side, native: Value) -> Result<Seen, Box<(String, Value, Fail)>> {
        let env = MapEnv {
            vars: &self.e.project.vars,
            refs: &crate::compile::NoRefs,
        };
        let id = side.ent.id.of(&native);
        let mapped = side.ent.read.apply(&native, &env, None).map_err(|e| {
            Box::new((
                id.clone().unwrap_or_default(),
                native.clone(),
                Fail::msg(e.to_string()),
            ))
        })?;
        let canon = canonical::normalise(self.entity, mapped).map_err(|e| {
            Box::new((id.clone().unwrap_or_default(), native.clone(), Fail::msg(e)))
        })?;
        let Some(raw_key) = canonical::field_text(&canon, &self.flow.match_key) else {
            let shown = id.clone().unwrap_or_else(|| "?".into());
            return Err(Box::new((
                format!("id:{shown}"),
                native,
                Fail::msg(format!(
                    "record has no `{}` to match on",
                    self.flow.match_key
                )),
            )));
        };
        let key = normalize(&raw_key, &self.flow.normalize);
        Ok(Seen {
            key,
            id,
            canon,
            native,
        })
    }

    /// Reads every record of the target (or those changed since `since`). Without
    /// `keep_native` only the key, id and canonical record are kept: an index of a whole
    /// catalogue is held for the rest of the run, and the native records (the bulk of it,
    /// needed only to report a failure of that record) would multiply its size.
    ///
    /// A read since a cursor (the target's changes) watches for shifting pages as the
    /// source listing does (see `note_reread`).
    async fn read_all_dst(
        &mut self,
        since: Option<DateTime<Utc>>,
        keep_native: bool,
    ) -> Result<HashMap<String, Seen>, EngineRunError> {
        let mut out = HashMap::new();
        let Some(op) = list_operation(self.dst.ent, since) else {
            return Ok(out);
        };
        let mut rereads = Vec::new();
        let http = self.dst.http;
        let mut pages = Box::pin(http.list(
            &op,
            CallInput {
                since,
                ..Default::default()
            },
        ));
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| EngineRunError::Read {
                flow: self.flow.id.clone(),
                system: self.dst.name.to_string(),
                message: e.to_string(),
            })?;
            for native in page.records {
                if let Ok(mut s) = self.seen(&self.dst, native) {
                    if !keep_native {
                        s.native = Value::Null;
                    }
                    if let Some(first) = out.insert(s.key.clone(), s)
                        && since.is_some()
                    {
                        rereads.push(self.stamp(&first));
                    }
                }
            }
        }
        for first in rereads {
            self.note_reread(first);
        }
        Ok(out)
    }

    /// Finds one record by key on a side (`true`: the source). On the target, a system
    /// without a lookup operation, or a run that has already looked up many records (a first
    /// sync), is read once in full instead and searched in memory.
    ///
    /// "Many" grows with the target: a lookup costs about what a page of its listing costs,
    /// so the full read pays only once the lookups outnumber the target's pages (estimated
    /// from the records bound so far). The 500 new products of a 100,000-product catalogue
    /// are looked up one by one, instead of reading 100,000 products to find them.
    async fn lookup(&mut self, source: bool, key: &str) -> Result<Option<Seen>, Fail> {
        if !source {
            let lookup_op = self.dst.ent.lookup.is_some();
            let bulk_after = match self.bulk_after {
                Some(n) => n,
                None => {
                    let bound = self
                        .e
                        .store
                        .binding_count(&self.scope)
                        .map_err(|e| Fail::msg(e.to_string()))?;
                    let n = BULK_LOOKUPS.max(bound / RECORDS_PER_PAGE);
                    self.bulk_after = Some(n);
                    n
                }
            };
            let bulk = self.lookups >= bulk_after;
            if self.index.is_none() && self.dst.ent.list.is_some() && (!lookup_op || bulk) {
                let index = self
                    .read_all_dst(None, false)
                    .await
                    .map_err(|e| Fail::msg(e.to_string()))?;
                self.index = Some(index);
            }
            if let Some(index) = &self.index {
                return Ok(index.get(key).cloned());
            }
            self.lookups += 1;
        }
        let side = if source { &self.src } else { &self.dst };
        let Some(op) = &side.ent.lookup else {
            return Ok(None);
        };
        let input = CallInput {
            key: Some(key.to_string()),
            ..Default::default()
        };
        let out = match side.http.call(op, &input).await {
            Ok(o) => o,
            Err(CallError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(Fail::call(&e, None)),
        };
        let candidates: Vec<Value> = match out.record {
            Some(Value::Array(a)) => a,
            Some(r) => vec![r],
            None => out.records,
        };
        for native in candidates {
            if let Ok(s) = self.seen(side, native)
                && s.key == key
            {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    fn binding(&self, key: &str) -> Result<Option<Binding>, EngineRunError> {
        if let Some(b) = self.page_bindings.get(key) {
            return Ok(b.clone());
        }
        Ok(self
            .e
            .store
            .bindings(&self.scope, std::slice::from_ref(&key.to_string()))?
            .remove(key))
    }

    fn put_binding(&mut self, b: &Binding) -> Result<(), EngineRunError> {
        self.page_bindings.remove(&b.key);
        if !self.opts.dry_run {
            self.e
                .store
                .put_bindings(&self.scope, std::slice::from_ref(b))?;
        }
        Ok(())
    }

    /// Whether a record is eligible under the flow's filter and status triggers.
    fn eligible(&self, seen: &Seen, binding: Option<&Binding>) -> bool {
        if let Some(f) = &self.flow.filter
            && !f.matches(&seen.canon)
        {
            return false;
        }
        let trigger = &self.flow.config.trigger;
        if let Some(s) = &trigger.on_status {
            let v = canonical::field_text(&seen.canon, &s.field).unwrap_or_default();
            if !s.values.contains(&v) {
                return false;
            }
        }
        if let Some(t) = &trigger.on_transition {
            let now = canonical::field_text(&seen.canon, &t.field).unwrap_or_default();
            let before = binding
                .and_then(|b| b.base(self.src.is_a))
                .and_then(|b| canonical::field_text(b, &t.field));
            let moved = before.as_deref() != Some(now.as_str());
            let from_ok = t.from.is_empty() || before.as_ref().is_some_and(|b| t.from.contains(b));
            if !(moved && from_ok && t.to.contains(&now)) {
                return false;
            }
        }
        true
    }

    fn record(
        &mut self,
        key: &str,
        decision: Decision,
        target: Option<&str>,
        changes: Vec<FieldChange>,
        reason: Option<String>,
    ) {
        self.report.count(decision);
        if self.opts.dry_run || self.opts.details || decision == Decision::Failed {
            self.report.records.push(RecordReport {
                key: key.to_string(),
                decision,
                target: target.map(str::to_string),
                changes,
                reason,
            });
        }
    }

    fn fail(&mut self, key: &str, native: &Value, f: Fail) -> Result<(), EngineRunError> {
        tracing::warn!(flow = %self.flow.id, key, error = %crate::redact::redact(&f.error), "record failed");
        if !self.opts.dry_run {
            let now = self.e.clock.now();
            self.e.store.put_failure(&Failure {
                id: 0,
                flow: self.flow.id.clone(),
                key: key.to_string(),
                source_record: redact_json(native),
                payload: f.payload.as_deref().map(redact_json),
                error: crate::redact::redact(&f.error).into_owned(),
                status: f.status,
                response: f.response.as_deref().map(redact_json),
                attempts: 1,
                created_at: now,
                updated_at: now,
            })?;
        }
        let reason = crate::redact::redact(&f.error).into_owned();
        self.record(key, Decision::Failed, None, Vec::new(), Some(reason));
        Ok(())
    }

    fn succeeded(&mut self, key: &str) -> Result<(), EngineRunError> {
        if self.failing.remove(key) && !self.opts.dry_run {
            self.e.store.clear_failure(&self.flow.id, key)?;
        }
        Ok(())
    }

    /// Remembers a written record for the flows chained after this one. Flows without any
    /// keep nothing: a first sync that creates a whole catalogue would otherwise hold every
    /// record until the run ends.
    fn touched(&mut self, canon: &Value) {
        if !self.flow.then.is_empty() {
            self.report.touched.push(canon.clone());
        }
    }

    fn idempotency_key(&self, key: &str) -> String {
        let digest = Sha256::digest(format!("{}\u{0}{key}", self.flow.id).as_bytes());
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!("erpsync-{hex}")
    }

    // -----------------------------------------------------------------------------------
    // Deciding

    /// The compared and carried fields for one source record: with `skip_nulls`, fields the
    /// source leaves empty are neither compared nor written.
    fn fields_for(&self, canon: &Value) -> (Cow<'_, [String]>, Cow<'_, [String]>) {
        if !self.flow.config.skip_nulls {
            return (Cow::Borrowed(&self.cmp), Cow::Borrowed(&self.carried));
        }
        let present = |fields: &[String]| -> Vec<String> {
            fields
                .iter()
                .filter(|f| canon.get(f.as_str()).is_some_and(|v| !v.is_null()))
                .cloned()
                .collect()
        };
        (
            Cow::Owned(present(&self.cmp)),
            Cow::Owned(present(&self.carried)),
        )
    }

    /// A record read from the source.
    async fn handle(&mut self, seen: Seen) -> Result<(), EngineRunError> {
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
            let other = self.dst_changes.remove(&key);
            return self.sync_both(seen, other, binding).await;
        }
        let outcome = self.one_way(&seen, binding).await;
        match outcome {
            Ok(()) => self.succeeded(&key),
            Err(f) => self.fail(&key, &seen.native, f),
        }
    }

    async fn one_way(&mut self, seen: &Seen, binding: Option<Binding>) -> Result<(), Fail> {
        let (cmp, carried) = self.fields_for(&seen.canon);
        let (cmp, carried) = (cmp.into_owned(), carried.into_owned());
        let key = seen.key.clone();
        let export_once = self.flow.config.export_once;
        let mut b = binding.unwrap_or_else(|| Binding {
            key: key.clone(),
            ..Default::default()
        });
        if let Some(id) = &seen.id {
            b.set_id(self.src.is_a, id.clone());
        }
        let dst_name = self.dst.name;

        if b.id(self.dst.is_a).is_some() {
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
                match self.index.as_ref().and_then(|i| i.get(&key)).cloned() {
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
            let unchanged = match &current {
                Some(cur) => same(Some(cur), Some(&seen.canon), &cmp),
                None => {
                    b.base(self.dst.is_a).is_some()
                        && same(b.base(self.src.is_a), Some(&seen.canon), &cmp)
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
            }
            self.report.counts.adopted += 1;
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
        if !self.opts.dry_run {
            *b.base_mut(self.src.is_a) = Some(seen.canon.clone());
            self.create(false, &mut b, &seen.canon).await?;
            self.deferred_actions.push(b.clone());
        }
        self.touched(&seen.canon);
        self.record(&key, Decision::Create, Some(dst_name), changes, None);
        Ok(())
    }

    /// Fields the target changed since the last sync that this update replaces.
    async fn overwrites(&self, b: &Binding, new: &Value) -> Result<Option<String>, Fail> {
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
    async fn ensure_required(&mut self, seen: &Seen) -> Result<(), Fail> {
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
            let mut runner = Runner::new(self.e, &flow, &opts, self.started)
                .map_err(|e| Fail::msg(e.to_string()))?;
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
        }
        Ok(())
    }

    /// Bidirectional: a record read from the source, and what the target changed, if anything.
    async fn sync_both(
        &mut self,
        a: Seen,
        b_seen: Option<Seen>,
        binding: Option<Binding>,
    ) -> Result<(), EngineRunError> {
        let key = a.key.clone();
        let native = a.native.clone();
        match self.merge_sides(Some(a), b_seen, binding).await {
            Ok(None) => self.succeeded(&key),
            Ok(Some(merge)) => {
                // Read again (the pages drifted): the latest reading replaces the first.
                match self.deferred_index.get(&key) {
                    Some(&i) => self.deferred_merges[i] = (merge, native),
                    None => {
                        self.deferred_index.insert(key, self.deferred_merges.len());
                        self.deferred_merges.push((merge, native));
                    }
                }
                Ok(())
            }
            Err(f) => self.fail(&key, &native, f),
        }
    }

    /// Bidirectional: a record only the target changed.
    async fn handle_reverse(&mut self, b_seen: Seen) -> Result<(), EngineRunError> {
        let key = b_seen.key.clone();
        let binding = self.binding(&key)?;
        let native = b_seen.native.clone();
        match self.merge_sides(None, Some(b_seen), binding).await {
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
    async fn merge_sides(
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
            (Some(av), None) => {
                // Only in the source: create in the target.
                if self.flow.config.mode == SyncMode::Update {
                    self.record(
                        &key,
                        Decision::Skip,
                        None,
                        Vec::new(),
                        Some(format!("not in `{}`; mode updates only", self.dst.name)),
                    );
                    return Ok(None);
                }
                *bind.base_mut(src_a) = Some(av.clone());
                if !self.opts.dry_run {
                    self.create(false, &mut bind, &av).await?;
                }
                let changes = diff(None, &av, &self.cmp);
                self.record(&key, Decision::Create, Some(self.dst.name), changes, None);
                Ok(None)
            }
            (None, Some(bv)) => {
                if self.flow.config.mode == SyncMode::Update {
                    self.record(
                        &key,
                        Decision::Skip,
                        None,
                        Vec::new(),
                        Some(format!("not in `{}`; mode updates only", self.src.name)),
                    );
                    return Ok(None);
                }
                *bind.base_mut(dst_a) = Some(bv.clone());
                if !self.opts.dry_run {
                    self.create(true, &mut bind, &bv).await?;
                }
                let changes = diff(None, &bv, &self.cmp);
                self.record(&key, Decision::Create, Some(self.src.name), changes, None);
                Ok(None)
            }
            (None, None) => Ok(None),
            (Some(av), Some(bv)) => self.three_way(&key, bind, av, bv).await,
        }
    }

    async fn three_way(
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
            let reason = format!(
                "both sides changed {}; parked for review",
                parked
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
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
            format!(
                "both sides changed {}; resolved by `{}`",
                conflicts
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                conflict
                    .as_ref()
                    .map(|c| format!("{:?}", c.rule))
                    .unwrap_or_default()
                    .to_lowercase()
            )
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
        if to_a && self.listing_source {
            return Ok(Some(merge));
        }
        self.apply_merge(merge).await?;
        Ok(None)
    }

    /// Writes a merged record to the sides that differ from it, binds it and reports it.
    async fn apply_merge(&mut self, m: Merge) -> Result<(), Fail> {
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
    fn resolve(
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

    fn side(&self, to_source: bool) -> &Side<'e> {
        if to_source { &self.src } else { &self.dst }
    }

    /// The native payload for a side: everything for a create, what the flow carries for an
    /// update.
    fn payload(&self, to_source: bool, canon: &Value, update: bool) -> Result<Value, Fail> {
        let (to, from) = if to_source {
            (self.src.name, self.dst.name)
        } else {
            (self.dst.name, self.src.name)
        };
        let refs = Refs {
            engine: self.e,
            from,
            to,
        };
        let env = MapEnv {
            vars: &self.e.project.vars,
            refs: &refs,
        };
        let write = &self.side(to_source).ent.write;
        let mapped = if update {
            write.apply_carried(canon, &env, &self.carried)
        } else {
            write.apply(canon, &env, None)
        };
        mapped.map_err(|e| Fail::msg(e.to_string()))
    }

    /// Creates `canon` on a side, exactly once: the intent is journaled first, an
    /// idempotency key goes with it, and an unknown outcome stays pending until a lookup
    /// settles it.
    async fn create(
        &mut self,
        to_source: bool,
        b: &mut Binding,
        canon: &Value,
    ) -> Result<(), Fail> {
        let payload = self.payload(to_source, canon, false)?;
        let side = self.side(to_source);
        let Some(op) = side.ent.create.clone() else {
            return Err(Fail::msg(format!(
                "`{}` cannot create {}",
                side.name, self.entity.name
            )));
        };
        let key = b.key.clone();
        let entry = JournalEntry {
            id: 0,
            flow: self.flow.id.clone(),
            key: key.clone(),
            target: side.name.to_string(),
            operation: op.clone(),
            idempotency_key: self.idempotency_key(&key),
            payload: payload.clone(),
            state: JournalState::Pending,
            created_at: self.e.clock.now(),
        };
        let journal_id = self
            .e
            .store
            .journal_begin(&entry)
            .map_err(|e| Fail::msg(e.to_string()))?;
        let written_base = canon.clone();
        self.send_create(to_source, journal_id, &entry, b, written_base)
            .await
    }

    async fn send_create(
        &mut self,
        to_source: bool,
        journal_id: i64,
        entry: &JournalEntry,
        b: &mut Binding,
        written: Value,
    ) -> Result<(), Fail> {
        let side = self.side(to_source);
        let (is_a, http, ent, side_name) = (side.is_a, side.http, side.ent, side.name);
        let input = CallInput {
            record: entry.payload.clone(),
            key: Some(entry.key.clone()),
            idempotency_key: Some(entry.idempotency_key.clone()),
            ..Default::default()
        };
        match http.call(&entry.operation, &input).await {
            Ok(out) => {
                let id = out
                    .record
                    .as_ref()
                    .and_then(|r| ent.id.of(r))
                    .or_else(|| ent.id.of(&out.body));
                let id = match id {
                    Some(id) => Some(id),
                    None => self
                        .lookup(to_source, &entry.key)
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
                b.set_id(is_a, id);
                *b.base_mut(is_a) = Some(written);
                if self.flow.config.export_once && b.exported_at.is_none() {
                    b.exported_at = Some(self.e.clock.now());
                }
                self.page_bindings.remove(&b.key);
                self.e
                    .store
                    .journal_finish(journal_id, JournalState::Done, Some((&self.scope, b)))
                    .map_err(|e| Fail::msg(e.to_string()))?;
                Ok(())
            }
            Err(e @ CallError::InDoubt { .. }) => Err(Fail::call(&e, Some(entry.payload.clone()))),
            Err(e) if e.is_transient() => {
                // Not applied for sure? A transport failure after retries may still have been
                // applied if the request is not idempotent; the connector reports that as in
                // doubt. Here it was safe to retry and failed: settle as failed.
                let _ = self
                    .e
                    .store
                    .journal_finish(journal_id, JournalState::Failed, None);
                Err(Fail::call(&e, Some(entry.payload.clone())))
            }
            Err(e) => {
                let _ = self
                    .e
                    .store
                    .journal_finish(journal_id, JournalState::Failed, None);
                Err(Fail::call(&e, Some(entry.payload.clone())))
            }
        }
    }

    /// Updates a side with `canon` (the full canonical record to hold there).
    async fn update(
        &mut self,
        to_source: bool,
        b: &mut Binding,
        canon: &Value,
        source_now: Option<&Value>,
    ) -> Result<(), Fail> {
        let payload = self.payload(to_source, canon, true)?;
        let side = self.side(to_source);
        let Some(op) = side.ent.update.clone() else {
            return Err(Fail::msg(format!(
                "`{}` cannot update {}",
                side.name, self.entity.name
            )));
        };
        let Some(id) = b.id(side.is_a).map(str::to_string) else {
            return Err(Fail::msg(format!("no `{}` id for `{}`", side.name, b.key)));
        };
        let input = CallInput {
            record: payload.clone(),
            id: Some(id),
            key: Some(b.key.clone()),
            idempotency_key: Some(self.idempotency_key(&b.key)),
            ..Default::default()
        };
        side.http
            .call(&op, &input)
            .await
            .map_err(|e| Fail::call(&e, Some(payload)))?;
        let is_a = side.is_a;
        *b.base_mut(is_a) = Some(canon.clone());
        if let Some(s) = source_now {
            let other = !is_a;
            *b.base_mut(other) = Some(s.clone());
        }
        self.put_binding(b).map_err(|e| Fail::msg(e.to_string()))
    }

    /// Post-actions on the source record after it was exported (e.g. lock the order).
    /// Runs after the source was read to the end: writing to the source while paging through
    /// it would move records between pages and make the listing skip some.
    async fn after_export(&mut self, b: Binding) -> Result<(), EngineRunError> {
        let mut all_done = true;
        for action in self.flow.config.after_export.clone() {
            let Some(op) = self.src.ent.actions.get(&action.action) else {
                continue;
            };
            let Some(id) = b.id(self.src.is_a) else {
                continue;
            };
            let input = CallInput {
                id: Some(id.to_string()),
                key: Some(b.key.clone()),
                ..Default::default()
            };
            if let Err(e) = self.src.http.call(op, &input).await {
                all_done = false;
                self.report
                    .errors
                    .push(format!("`{}` of `{}` failed: {e}", action.action, b.key));
            }
        }
        if all_done && !self.opts.dry_run {
            // The binding may have changed since the actions were queued: mark the stored one.
            let mut current = self.binding(&b.key)?.unwrap_or(b);
            current.actions_done = true;
            self.put_binding(&current)?;
        }
        Ok(())
    }
    /// Writes whose outcome was unknown (timeout, crash) are settled before anything new is
    /// sent: found in the target → bound; not found → sent again with the same idempotency key.
    async fn settle_in_doubt(&mut self) -> Result<(), EngineRunError> {
        for entry in self.e.store.journal_pending(Some(&self.flow.id))? {
            let to_source = entry.target == self.src.name && entry.target != self.dst.name;
            let mut b = self.binding(&entry.key)?.unwrap_or_else(|| Binding {
                key: entry.key.clone(),
                ..Default::default()
            });
            let side = self.side(to_source);
            let (side_name, searchable) = (
                side.name,
                side.ent.lookup.is_some() || side.ent.list.is_some(),
            );
            let keyed = self.e.project.systems[side_name]
                .operations
                .get(&entry.operation)
                .is_some_and(|op| op.idempotency_key.is_some());
            if !searchable && !keyed {
                // Neither a lookup nor an idempotency key can tell whether it was applied:
                // sending it again could duplicate it. A person decides.
                self.in_doubt.insert(entry.key.clone());
                self.report.errors.push(format!(
                    "`{}` may or may not have reached `{side_name}`, which cannot be searched: check it by hand and settle it (`erpsync failures settle`); it is held back until then",
                    entry.key
                ));
                continue;
            }
            match self.lookup(to_source, &entry.key).await {
                Ok(Some(found)) => {
                    let side_a = self.side(to_source).is_a;
                    if let Some(id) = found.id.clone() {
                        b.set_id(side_a, id);
                    }
                    *b.base_mut(side_a) = Some(found.canon);
                    if self.flow.config.export_once && b.exported_at.is_none() {
                        b.exported_at = Some(self.e.clock.now());
                    }
                    self.page_bindings.remove(&b.key);
                    self.e.store.journal_finish(
                        entry.id,
                        JournalState::Done,
                        Some((&self.scope, &b)),
                    )?;
                    self.report.counts.resolved_in_doubt += 1;
                    self.deferred_actions.push(b.clone());
                    continue;
                }
                Ok(None) => {}
                Err(f) => {
                    self.in_doubt.insert(entry.key.clone());
                    self.report.errors.push(format!(
                        "in-doubt `{}` could not be checked: {}",
                        entry.key, f.error
                    ));
                    continue;
                }
            }
            // Not there: it was never applied. Send it again, same key.
            match self
                .send_create(to_source, entry.id, &entry, &mut b, entry.payload.clone())
                .await
            {
                Ok(()) => {
                    self.report.counts.resolved_in_doubt += 1;
                    // The base must be canonical, not native: read it back.
                    if let Ok(Some(found)) = self.lookup(to_source, &entry.key).await {
                        *b.base_mut(self.side(to_source).is_a) = Some(found.canon);
                        self.put_binding(&b)?;
                    }
                    self.deferred_actions.push(b.clone());
                    self.succeeded(&entry.key)?;
                }
                Err(f) => self.fail(&entry.key.clone(), &entry.payload.clone(), f)?,
            }
        }
        Ok(())
    }
}
