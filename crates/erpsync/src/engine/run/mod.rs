//! One run of one flow: read, map, match, decide, apply. This file reads and matches;
//! `one_way` and `both` gather what `engine::decide` needs and apply its verdicts; `adopt`
//! links the records a first sync finds alike without building them whole; `write` sends,
//! journals and binds; `shift` keeps full reads whole when the pages shift under them.

mod adopt;
mod both;
mod index;
mod one_way;
use crate::json::packed;
mod queued;
mod shift;
mod spill;
mod steps;
mod write;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::canonical::{self, FieldChange, compared_fields, diff, overlay, overlay_fields};
use super::decide::{
    self, Counterpart, Link, MergeRules, MergeVerdict, Merged, OneWayRules, Side, Sides, Verdict,
};
use super::lease::HeldLease;
use super::{Decision, Engine, EngineRunError, RecordReport, RunOptions, RunReport};
use crate::compile::mapping::DirectRead;
use crate::compile::types::{key_text, normalize, normalize_owned};
use crate::compile::{Entity, Flow, MapEnv, RefResolver, SystemEntity};
use crate::config::model::Direction;
use crate::connector::{CallError, CallInput, HttpSystem};
use crate::redact::redact_json;
use crate::state::{
    Binding, Failure, FlowName, JournalEntry, JournalState, PairSide, RecordKey, Scope,
};
use adopt::{Positional, Positions, Served};
use index::{IndexReadError, KeyIndex, KeySet, Like, Listed, ListedKeys};

/// A record read and mapped, or why it could not be: its key (or `id:…`), its native record
/// and the failure.
type Mapped = Result<Seen, Box<(String, Value, Fail)>>;

/// A record of a source page, mapped (whole or by position), or why it could not be.
type Page = Result<Served, Box<(String, Value, Fail)>>;

/// After this many single lookups in one run, the target may be read in full instead.
const BULK_LOOKUPS: usize = 50;
/// Pages a listing is read ahead of the page being decided, and the requests a listing of
/// known size keeps in flight (see `HttpSystem::list_ahead`).
const READ_AHEAD: usize = 4;
/// Records a list page is taken to hold when weighing single lookups against a full read of
/// the target: one lookup costs about one page request.
const RECORDS_PER_PAGE: usize = 100;
/// Records that only the target changed, taken out of its index at a time to be merged
/// (a bidirectional flow, after its source listing).
const REVERSE_BATCH: usize = 250;
/// Times a full read of a target that cannot be searched by key is read again in one run
/// because its pages shifted (see `Runner::reread_index`).
const INDEX_REREADS: usize = 2;
/// The runner's maps and sets by key: hashed with foldhash, several times cheaper than the
/// standard library's SipHash on short keys. Keys come from the systems being synced, not
/// from whoever reaches a listening port, and each map lives for one run.
pub(super) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
pub(super) type FastSet<T> = HashSet<T, foldhash::fast::RandomState>;

/// Bindings held back (see `HeldBindings`) are written together once this many wait, even
/// before the page ends.
const BINDINGS_PER_WRITE: usize = 500;

/// One end of a flow: its system and how the entity is read and written there.
struct End<'e> {
    name: &'e str,
    ent: &'e SystemEntity,
    http: &'e Arc<HttpSystem>,
    /// Which of the binding's two columns holds this end: bindings are stored by system
    /// pair (`a`, `b`), shared by the flows of both directions.
    pair_side: PairSide,
    /// The canonical fields of the records its read mapping makes, by position.
    shaped: Option<canonical::Shaped<'e>>,
}

/// A record read from a side, mapped.
#[derive(Clone)]
struct Seen {
    key: String,
    id: Option<String>,
    canon: Value,
    native: Value,
    /// The record's own text, for a record read into its members only (`native` is then
    /// null): what a failure of it reports, parsed only then (`Seen::native`).
    text: Option<Box<str>>,
}

impl Seen {
    /// The native record: as it was read whole, or parsed from its text.
    fn native(&self) -> std::borrow::Cow<'_, Value> {
        match &self.text {
            Some(text) => std::borrow::Cow::Owned(native_of(text)),
            None => std::borrow::Cow::Borrowed(&self.native),
        }
    }
}

/// How `end`'s listing `op` is read into the members its read mapping reads, where its pages
/// allow it: the mapping's direct read and the pages' reader (each record's text kept too with
/// `texts`). Neither when `whole` wants its records whole.
fn direct_read(
    end: &End,
    op: &str,
    whole: bool,
    texts: bool,
) -> (
    Option<DirectRead>,
    Option<Arc<crate::connector::ListingReader>>,
) {
    let direct = if whole {
        None
    } else {
        end.ent.read.direct(&end.ent.id)
    };
    let reader = direct
        .as_ref()
        .and_then(|d| end.http.listing_reader(op, d.members(), texts));
    (direct, reader)
}

/// Why the record with the id `id` could not be mapped or normalised.
fn unmappable(
    id: &Option<String>,
    native: Value,
    e: impl std::fmt::Display,
) -> Box<(String, Value, Fail)> {
    Box::new((
        id.clone().unwrap_or_default(),
        native,
        Fail::msg(e.to_string()),
    ))
}

/// The moment a record's `updated_at` value says.
fn stamp_of(value: &Value) -> Option<DateTime<Utc>> {
    match value {
        // Read where it is (a stamp of every record a listing serves).
        Value::String(text) => crate::expr::parse_datetime(text),
        other => key_text(other).and_then(|t| crate::expr::parse_datetime(&t)),
    }
}

/// A record's text as the native record it is (the text itself, should it not parse).
fn native_of(text: &str) -> Value {
    crate::json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// A three-way merge of one record, ready to be written: the binding, what each side held
/// when it was merged, and the merged record.
struct Merge {
    key: String,
    bind: Binding,
    source: Value,
    target: Value,
    merged: Merged,
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
            // Which step failed, what it sent and what it got.
            CallError::Step { step, request, .. } => Some(Box::new(serde_json::json!({
                "step": step,
                "request": request,
                "status": e.status(),
                "response": e.body(),
            }))),
            _ => e.body().cloned().map(Box::new),
        };
        Fail {
            error: e.to_string(),
            status: e.status(),
            response,
            payload: payload.map(Box::new),
        }
    }
}

/// The ids of related records a mapping's `ref`s name, looked up in the state before the
/// mapping runs: a mapping is sync, the state is not. A first pass asks for what it needs,
/// the ids are fetched, and the mapping runs again with them (until it asks for nothing new).
struct Refs<'a> {
    engine: &'a Engine,
    from: &'a str,
    to: &'a str,
    /// What was looked up: the target id, by entity and normalised key.
    found: HashMap<(String, String), Option<String>>,
    /// What the last pass asked for and was not looked up yet.
    asked: Mutex<Vec<(String, String)>>,
}

impl<'a> Refs<'a> {
    fn new(engine: &'a Engine, from: &'a str, to: &'a str) -> Self {
        Refs {
            engine,
            from,
            to,
            found: HashMap::new(),
            asked: Mutex::new(Vec::new()),
        }
    }

    fn normalized(&self, entity: &str, key: &str) -> String {
        let steps = self
            .engine
            .key_normalize
            .get(entity)
            .cloned()
            .unwrap_or_default();
        normalize(key, &steps)
    }

    /// Looks up what the last pass asked for; false when it asked for nothing new.
    async fn fetch(&mut self) -> bool {
        let asked = std::mem::take(&mut *self.asked.lock().unwrap_or_else(|e| e.into_inner()));
        if asked.is_empty() {
            return false;
        }
        for (entity, key) in asked {
            let scope = Scope::new(&entity, self.from, self.to);
            let id = self
                .engine
                .bindings(&scope, std::slice::from_ref(&key))
                .await
                .ok()
                .and_then(|found| {
                    found
                        .get(&key)
                        .and_then(|b| b.id(scope.side_of(self.to)).map(str::to_string))
                });
            self.found.insert((entity, key), id);
        }
        true
    }
}

impl RefResolver for Refs<'_> {
    fn resolve(&self, entity: &str, key: &str) -> Option<String> {
        let k = (entity.to_string(), self.normalized(entity, key));
        if let Some(id) = self.found.get(&k) {
            return id.clone();
        }
        self.asked.lock().unwrap_or_else(|e| e.into_inner()).push(k);
        None
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
        Some(
            engine
                .store
                .runs
                .run_start(FlowName::new(&flow.id), kind, started, &engine.instance)
                .await?,
        )
    };
    let mut runner = Runner::new(engine, flow, opts, started).await?;
    runner.report.kind = kind.to_string();
    let mut result = runner.execute().await;
    // Bindings held back are written however the run ended (a lost lease refuses them).
    if let Err(e) = runner.write_held().await {
        if result.is_ok() {
            result = Err(e);
        } else {
            tracing::warn!(flow = %flow.id, error = %e, "bindings held back could not be written");
        }
    }
    let mut report = runner.report;
    if let Err(e) = &result {
        report.errors.push(e.to_string());
        if let EngineRunError::Read { system, .. } = e {
            report.unreachable = Some(system.clone());
        }
    }
    if !opts.dry_run {
        let mut systems = vec![flow.from.as_str(), flow.to.as_str()];
        for (required, _) in &flow.requires {
            if let Some(f) = engine.project.flow(required) {
                systems.extend([f.from.as_str(), f.to.as_str()]);
            }
        }
        engine.record_system_health(systems).await;
    }
    let lost = matches!(
        result,
        Err(EngineRunError::LeaseLost(_)
            | EngineRunError::State(crate::state::StateStoreError::Fenced(_)))
    );
    if lost {
        // Recorded only if no other holder has taken the flow yet (the write is fenced);
        // else the new holder has closed it as abandoned already.
        if let Some(id) = run_id {
            let counts = serde_json::to_value(&report.counts).unwrap_or(Value::Null);
            let _ = engine.store.runs.run_finish(
                id,
                engine.clock.now(),
                "abandoned",
                &counts,
                Some(
                    "the flow's lease was lost mid-run; the next holder settles what was in flight",
                ),
            ).await;
        }
        tracing::error!(flow = %flow.id, "lease lost mid-run: stopped; the next holder settles what was in flight");
        return Err(EngineRunError::LeaseLost(flow.id.clone()));
    }
    if let Some(id) = run_id {
        let status = if report.interrupted {
            "interrupted"
        } else if !report.ok() {
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
            .runs
            .run_finish(id, engine.clock.now(), status, &counts, error.as_deref())
            .await?;
        super::run_lines::keep(engine, id, &report).await;
    }
    report.run_id = run_id;
    report.status = report.outcome().to_string();
    report.started_at = Some(started);
    report.finished_at = Some(engine.clock.now());
    tracing::info!(
        flow = %flow.id,
        kind,
        dry_run = opts.dry_run,
        interrupted = report.interrupted,
        created = report.counts.created,
        updated = report.counts.updated,
        skipped = report.counts.skipped,
        failed = report.counts.failed,
        "run finished"
    );
    Ok(report)
}

/// The target read in full, searched in memory instead of asked record by record (see
/// `Runner::lookup`).
#[derive(Default)]
struct TargetIndex {
    /// The target's records by key, once the whole target was read.
    records: Option<KeyIndex>,
    /// Whether the read served a record twice: its pages shifted, so a record missing from
    /// it may still be in the target and is asked for before it is created.
    shifted: bool,
    /// Times the target was read again in this run.
    rereads: usize,
    /// When `lookup` read it (not a reconciliation).
    read_at: Option<DateTime<Utc>>,
    /// Single lookups made so far.
    lookups: usize,
    /// Lookups after which the target is read in full; set at the first lookup.
    bulk_after: Option<usize>,
    /// Set when a page of the source holds more records to look up than the lookups left
    /// before `bulk_after`: the full read comes at the page's first lookup instead of after
    /// the lookups it would replace (see `Runner::plan_lookups`).
    bulk_now: bool,
}

/// What the target changed since the cursor: the target's half of a bidirectional flow.
#[derive(Default)]
struct TargetChanges {
    /// Records not merged yet, by key: in flat memory, as the target index of a one-way
    /// flow keeps them (native records included, which a merge reports).
    records: KeyIndex,
    /// Whether a bound record missing from `records` may have been missed rather than left
    /// unchanged — the whole target was read (no cursor), or the read shifted: such a
    /// record is asked for before it is merged.
    in_doubt: bool,
    /// Keys the source listing did not serve whose target record was taken from `records`,
    /// or asked for, in this run (a listed key is marked in `SourceListing::listed`; see
    /// `Runner::take_target`).
    taken: KeySet,
}

/// The source listing in progress.
#[derive(Default)]
struct SourceListing {
    /// Whether the source is being paged through: writes to it now would move records
    /// between pages (lists ordered by modification time) and make the listing skip some.
    active: bool,
    /// Keys read so far: a key read twice shows that the pages shifted while they were read.
    listed: ListedKeys,
    /// Whether a record was served twice.
    shifted: bool,
    /// The hasher of readings' fingerprints: foldhash, seeded once per run (both readings of
    /// a record must hash alike) at random (so no one can aim at a collision), several times
    /// cheaper than SipHash over a whole record.
    prints: foldhash::quality::RandomState,
    /// The stored bindings of the page being handled (`None`: no binding), read in one
    /// call; a key is dropped from it when its binding is written.
    page_bindings: FastMap<String, Option<Binding>>,
}

/// Writes held back until the source listing is over.
#[derive(Default)]
struct DeferredWrites {
    /// Exported records whose post-actions wait.
    actions: Vec<Binding>,
    /// Bidirectional merges that write to the source, with the source record (for a
    /// failure), written once per key from its latest reading (`None`: a later reading
    /// decided otherwise).
    merges: Vec<Option<(Merge, Value)>>,
    /// Where each key's merge is in `merges`.
    merge_at: FastMap<String, usize>,
}

/// Bindings whose loss no write depends on — records adopted, or found unchanged while
/// the binding learns the target's current reading — written in one transaction per page
/// (or per `BINDINGS_PER_WRITE`) instead of one per record. They are written before the
/// cursor moves, before a write whose mapping resolves references (`write_held_for`), and
/// at the end of the run however it ends (interrupted, failed); a crash loses at most these,
/// and the next run, reading from the same cursor, decides them again without writing.
/// Writes whose outcome matters (creates, updates, post-actions) bind at once, journaled as
/// before. Records adopted alike (`adopt`) are held as their packed records, and written in
/// the same transaction as the others.
#[derive(Default)]
struct HeldBindings {
    by_key: FastMap<String, Binding>,
    /// Records adopted alike (see `adopt`), by key: a key is held here or in `by_key`,
    /// never both.
    adopted: FastMap<String, crate::state::Adopted>,
}

impl HeldBindings {
    fn len(&self) -> usize {
        self.by_key.len() + self.adopted.len()
    }

    fn holds(&self, key: &str) -> bool {
        self.by_key.contains_key(key) || self.adopted.contains_key(key)
    }
}

/// Keys with something left from earlier runs.
#[derive(Default)]
struct Unsettled {
    /// Keys with a stored failure, cleared when they succeed.
    failing: FastSet<String>,
    /// Keys with a write of unknown outcome still unsettled: never sent again blindly.
    in_doubt: FastSet<String>,
    /// The same, of the flows this one requires, by flow.
    required: FastMap<String, FastSet<String>>,
}

/// Where the cursor goes at the end of the run (see `Runner::note_reread`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum CursorHold {
    /// No listing shifted: the cursor moves to the run's start.
    #[default]
    Free,
    /// A listing shifted: the cursor moves no further than this.
    AtMost(DateTime<Utc>),
    /// A listing shifted and nothing bounds what it missed: the cursor stays.
    Kept,
}

impl CursorHold {
    /// Holds the cursor at or before `floor`; `None`: where it was.
    fn hold(self, floor: Option<DateTime<Utc>>) -> CursorHold {
        match (self, floor) {
            (CursorHold::Kept, _) | (_, None) => CursorHold::Kept,
            (CursorHold::Free, Some(f)) => CursorHold::AtMost(f),
            (CursorHold::AtMost(d), Some(f)) => CursorHold::AtMost(d.min(f)),
        }
    }
}

struct Runner<'e> {
    e: &'e Engine,
    flow: &'e Flow,
    opts: &'e RunOptions,
    entity: &'e Entity,
    src: End<'e>,
    dst: End<'e>,
    scope: Scope,
    /// Canonical fields the flow carries (shared, so a record's rules can borrow them
    /// while the runner works).
    carried: Arc<[String]>,
    /// Carried fields that take part in change detection.
    cmp: Arc<[String]>,
    /// Canonical fields a reading's fingerprint leaves out (see `fingerprint`): the
    /// entity's modification stamp and its volatile fields.
    volatile: Box<[String]>,
    /// Whether target edits can exist that an update would overwrite: this or the opposite
    /// flow allows editing after export, or this flow has a conflict rule. Such updates read
    /// the target first and report what they overwrite.
    watch_overwrites: bool,
    started: DateTime<Utc>,
    index: TargetIndex,
    changes: TargetChanges,
    listing: SourceListing,
    deferred: DeferredWrites,
    held: HeldBindings,
    unsettled: Unsettled,
    cursor: CursorHold,
    report: RunReport,
    /// The steps the next reported write would send (dry runs).
    planned_steps: Vec<String>,
    /// Updates sent and not answered yet (see `queued`).
    in_flight: queued::InFlight<'e>,
}

impl<'e> Runner<'e> {
    pub(super) async fn new(
        e: &'e Engine,
        flow: &'e Flow,
        opts: &'e RunOptions,
        started: DateTime<Utc>,
    ) -> Result<Self, EngineRunError> {
        let entity: &Entity = &e.project.entities[&flow.entity];
        let scope = Scope::new(&entity.name, &flow.from, &flow.to);
        let end = |name: &'e str| -> End<'e> {
            let def = &e.project.systems[name];
            let ent = &def.entities[&entity.name];
            End {
                name,
                ent,
                http: &e.systems[name],
                pair_side: scope.side_of(name),
                shaped: canonical::Shaped::of(entity, &ent.read),
            }
        };
        let carried: Vec<String> = if flow.fields.is_empty() {
            entity.fields.keys().cloned().collect()
        } else {
            let mut f = flow.fields.clone();
            if !f.contains(&flow.match_key) {
                f.push(flow.match_key.clone());
            }
            f
        };
        let cmp = compared_fields(entity, &carried);
        let failing = if opts.dry_run {
            FastSet::default()
        } else {
            e.store
                .failures
                .failures(Some(FlowName::new(&flow.id)))
                .await?
                .into_iter()
                .map(|f| f.key)
                .collect()
        };
        Ok(Runner {
            e,
            flow,
            opts,
            entity,
            src: end(&flow.from),
            dst: end(&flow.to),
            scope,
            carried: carried.into(),
            cmp: cmp.into(),
            volatile: entity
                .updated_at
                .iter()
                .chain(
                    entity
                        .fields
                        .iter()
                        .filter(|(_, f)| f.volatile)
                        .map(|(name, _)| name),
                )
                .cloned()
                .collect(),
            started,
            index: TargetIndex::default(),
            changes: TargetChanges::default(),
            listing: SourceListing::default(),
            deferred: DeferredWrites::default(),
            held: HeldBindings::default(),
            unsettled: Unsettled {
                failing,
                ..Unsettled::default()
            },
            cursor: CursorHold::Free,
            in_flight: queued::InFlight::default(),
            watch_overwrites: flow.allow_edit_after_export
                || flow.conflict.is_some()
                || e.project.flows.iter().any(|f| {
                    f.entity == flow.entity
                        && f.from == flow.to
                        && f.to == flow.from
                        && f.allow_edit_after_export
                }),
            report: RunReport {
                flow: flow.id.clone(),
                dry_run: opts.dry_run,
                progress: opts.progress.clone(),
                ..Default::default()
            },
            planned_steps: Vec::new(),
        })
    }

    pub(super) fn bidirectional(&self) -> bool {
        self.flow.direction == Direction::Bidirectional
    }

    pub(super) async fn execute(&mut self) -> Result<(), EngineRunError> {
        if !self.opts.dry_run {
            self.settle_required_in_doubt().await?;
            self.settle_in_doubt().await?;
            self.pending_actions().await?;
        }
        let incremental = self.flow.incremental.as_ref();
        let since = if self.opts.reconcile || self.opts.full || self.opts.keys.is_some() {
            None
        } else if let Some(inc) = incremental {
            match self
                .e
                .store
                .bindings
                .cursor(FlowName::new(&self.flow.id))
                .await?
            {
                Some(c) => Some(c - inc.overlap),
                None => Some(inc.start),
            }
        } else {
            None
        };

        if self.bidirectional() {
            // The target's side of the merge: what changed since the cursor, or — when
            // reconciling, `since` is None — everything, so drift on either side is seen.
            let (mut changes, shifted) = self.read_all_dst(since, true).await?;
            let unreadable = |e| self.index_unreadable(e);
            if self.opts.dry_run {
                // What earlier flows of the plan would have created in the target is among
                // its changes, as the run will read it.
                let listing = crate::engine::listing(&self.entity.name, self.dst.ent);
                for native in self.e.planned_creates(self.dst.name, listing) {
                    if let Ok(mut seen) = self.seen(&self.dst, native) {
                        seen.id
                            .get_or_insert_with(|| crate::engine::PLANNED_ID.to_string());
                        changes.put_absent(seen).map_err(unreadable)?;
                    }
                }
            }
            if let Some(keys) = &self.opts.keys {
                // A run for some records (a retry, a webhook) merges those only: another
                // record's merge could clear its failure without syncing it.
                changes = changes.only(keys).map_err(unreadable)?;
            }
            self.changes.records = changes;
            self.changes.in_doubt = since.is_none() || shifted;
        } else if self.opts.reconcile {
            let (index, shifted) = self.read_all_dst(None, false).await?;
            self.index.records = Some(index);
            self.index.shifted = shifted;
        }

        // The source, page by page.
        let scoped_lookup = self.opts.keys.is_some() && self.src.ent.lookup.is_some();
        // Keys named from outside (a webhook, `then`, a retried failure) are normalised as
        // the flow's own keys are.
        let wanted: Option<Vec<String>> = self.opts.keys.as_ref().map(|k| {
            k.iter()
                .map(|k| normalize(k, &self.flow.normalize))
                .collect()
        });
        if scoped_lookup {
            let keys = wanted.clone().unwrap_or_default();
            if let Some(p) = &self.report.progress {
                p.total
                    .store(keys.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            for key in keys {
                if !self.go_on()? {
                    break;
                }
                match self.lookup(Side::Source, &key).await {
                    Ok(Some(seen)) => {
                        self.report.counts.read += 1;
                        self.handle(seen).await?
                    }
                    Ok(None) => self.report.errors.push(format!(
                        "`{}` has no {} `{key}`",
                        self.src.name, self.entity.name
                    )),
                    Err(f) => {
                        self.report.counts.read += 1;
                        self.fail(&key, &Value::Null, f).await?
                    }
                }
            }
        } else {
            let keys: Option<HashSet<String>> = wanted.map(|k| k.into_iter().collect());
            let list_op = list_operation(self.src.ent, since).unwrap_or_default();
            let input = CallInput {
                since,
                ..Default::default()
            };
            // In a dry run, what earlier flows of the plan would have created in the source
            // is listed too, after the rest, as the run will list it.
            let planned = if self.opts.dry_run {
                self.e.planned_creates(
                    self.src.name,
                    crate::engine::listing(&self.entity.name, self.src.ent),
                )
            } else {
                Vec::new()
            };
            // A one-way flow reads its source's records into the members its read mapping
            // reads, where the listing's pages allow it; each keeps its text for a failure's
            // report. No record is built whole only to be mapped and dropped. (Both ways, the
            // source's native records take part in merges.)
            let (direct, reader) = direct_read(&self.src, &list_op, self.bidirectional(), true);
            // Where records may be adopted alike, they are read by position (`adopt`).
            let positions = self.positions(direct.as_ref());
            let mut pages = Box::pin(
                self.src
                    .http
                    .list_ahead_reading(&list_op, input, READ_AHEAD, reader),
            );
            // Dry runs write nothing, so they have nothing to hold back.
            self.listing.active = !self.opts.dry_run;
            if !self.bidirectional() {
                self.in_flight.width = self.dst.http.concurrency();
            }
            'pages: while let Some(page) = pages.next().await {
                let page = page.map_err(|e| self.read_error(self.src.name, e))?;
                // The listing's own count is what the run will decide, unless it is scoped or
                // the other side's records are decided too (both ways).
                if let (Some(total), Some(p), None, false) = (
                    page.total,
                    &self.report.progress,
                    &keys,
                    self.bidirectional(),
                ) {
                    p.total.store(total, std::sync::atomic::Ordering::Relaxed);
                }
                let read: Vec<Page> = match (&direct, &positions) {
                    (Some(_), Some(at)) if !page.read.is_empty() => page
                        .read
                        .into_iter()
                        .zip(page.texts)
                        .map(|(values, text)| self.positional(at, values, text).map(Served::Values))
                        .collect(),
                    (Some(direct), None) if !page.read.is_empty() => page
                        .read
                        .into_iter()
                        .zip(page.texts)
                        .map(|(values, text)| {
                            self.seen_read_text(&self.src, direct, values, text)
                                .map(Served::Whole)
                        })
                        .collect(),
                    _ => {
                        let mut parents = page.parents.into_iter();
                        page.records
                            .into_iter()
                            .map(|native| {
                                let parent = parents.next().flatten();
                                self.seen_in(&self.src, native, parent.as_deref())
                                    .map(Served::Whole)
                            })
                            .collect()
                    }
                };
                let mut mapped = Vec::with_capacity(read.len());
                for served in read {
                    let served = match served {
                        Ok(s) => s,
                        Err(bad) => {
                            self.report.counts.read += 1;
                            mapped.push(Err(bad));
                            continue;
                        }
                    };
                    let handled = match (&served, &positions) {
                        (Served::Values(read), Some(at)) => self.note_listed_values(read, at),
                        (Served::Values(read), None) => {
                            unreachable!("`{}` read by position without positions", read.key)
                        }
                        (Served::Whole(seen), _) => self.note_listed(seen),
                    };
                    if !handled {
                        continue;
                    }
                    if let Some(k) = &keys
                        && !k.contains(served.key())
                    {
                        continue;
                    }
                    self.report.counts.read += 1;
                    mapped.push(Ok(served));
                }
                // The page's bindings in one call rather than one query per record.
                let page_keys: Vec<String> = mapped
                    .iter()
                    .filter_map(|m| m.as_ref().ok().map(|s| s.key().to_string()))
                    .collect();
                let mut found = self.e.bindings(&self.scope, &page_keys).await?;
                self.listing.page_bindings = page_keys
                    .into_iter()
                    .map(|k| {
                        let b = found.remove(&k);
                        (k, b)
                    })
                    .collect();
                self.plan_lookups(&mapped).await?;
                for m in mapped {
                    if !self.go_on()? {
                        break 'pages;
                    }
                    match m {
                        Ok(Served::Whole(seen)) => self.handle(seen).await?,
                        Ok(Served::Values(read)) => match &positions {
                            Some(at) => self.handle_values(read, at).await?,
                            None => unreachable!("records are read by position with positions"),
                        },
                        Err(bad) => {
                            let (key, native, f) = *bad;
                            self.fail(&key, &native, f).await?;
                        }
                    }
                }
                self.write_held().await?;
                self.listing.page_bindings.clear();
            }
            drop(pages);
            self.finish_updates().await?;
            self.in_flight.width = 1;
            self.write_held().await?;
            self.listing.page_bindings.clear();
            for native in planned {
                let Ok(mut seen) = self.seen(&self.src, native) else {
                    continue;
                };
                if self.listing.listed.contains(&seen.key)
                    || keys.as_ref().is_some_and(|k| !k.contains(&seen.key))
                {
                    continue;
                }
                seen.id
                    .get_or_insert_with(|| crate::engine::PLANNED_ID.to_string());
                self.report.counts.read += 1;
                self.handle(seen).await?;
            }
            self.listing.active = false;
            if self.report.interrupted {
                return self.stop_interrupted().await;
            }
            if self.opts.reconcile && since.is_none() && keys.is_none() && !self.bidirectional() {
                self.write_held().await?;
                self.recover_unlisted().await?;
            }
        }
        if self.report.interrupted {
            return self.stop_interrupted().await;
        }
        // Whether a target record without a source reading in this run may have been missed
        // by the source listing rather than left unchanged.
        let source_in_doubt = !scoped_lookup
            && ((since.is_none() && self.opts.keys.is_none()) || self.listing.shifted);

        self.deferred.merge_at.clear();
        for (merge, native) in std::mem::take(&mut self.deferred.merges)
            .into_iter()
            .flatten()
        {
            let key = merge.key.clone();
            match self.apply_merge(merge).await {
                Ok(()) => self.succeeded(&key).await?,
                Err(f) => self.fail(&key, &native, f).await?,
            }
        }

        for b in self.take_deferred_actions() {
            self.go_on()?;
            self.after_export(b).await?;
        }

        if self.bidirectional() {
            // What only the target changed, a page's worth at a time out of the index.
            loop {
                let rest = self
                    .changes
                    .records
                    .take_some(REVERSE_BATCH)
                    .map_err(|e| self.index_unreadable(e))?;
                if rest.is_empty() {
                    break;
                }
                for seen in rest {
                    if !self.go_on()? {
                        return Ok(());
                    }
                    self.handle_reverse(seen, source_in_doubt).await?;
                }
            }
        }
        self.listing.listed = ListedKeys::default();

        if !self.opts.dry_run
            && incremental.is_some()
            && self.opts.keys.is_none()
            && self.report.ok()
        {
            // Failed records sit in the failure store, so the cursor may move past them.
            // What the run bound goes first: the cursor never passes a binding not written.
            self.write_held().await?;
            match self.cursor {
                CursorHold::Free => {
                    self.e
                        .store
                        .bindings
                        .set_cursor(FlowName::new(&self.flow.id), self.started)
                        .await?
                }
                CursorHold::AtMost(floor) => {
                    let at = self.started.min(floor);
                    tracing::info!(flow = %self.flow.id, cursor = %at, "pages shifted while listing; cursor held back");
                    self.e
                        .store
                        .bindings
                        .set_cursor(FlowName::new(&self.flow.id), at)
                        .await?;
                }
                CursorHold::Kept => {
                    tracing::info!(flow = %self.flow.id, "pages shifted while listing; cursor kept");
                }
            }
        }
        Ok(())
    }

    /// Whether to take another record: an error once the run's lease is lost (it may write
    /// nothing more), false once the run was asked to stop.
    pub(super) fn go_on(&mut self) -> Result<bool, EngineRunError> {
        if crate::state::lease::lease_lost() {
            return Err(EngineRunError::LeaseLost(self.flow.id.clone()));
        }
        if self.opts.interrupt.as_ref().is_some_and(|i| i.raised()) {
            if !self.report.interrupted {
                tracing::warn!(flow = %self.flow.id, "run interrupted: no new records are taken");
            }
            self.report.interrupted = true;
            return Ok(false);
        }
        Ok(true)
    }

    /// The end of an interrupted run: the post-actions of what it exported go out (an
    /// exported order is locked), nothing else; the cursor stays where it was, so the next
    /// run reads the records not reached.
    async fn stop_interrupted(&mut self) -> Result<(), EngineRunError> {
        for b in std::mem::take(&mut self.deferred.actions) {
            self.go_on()?;
            self.after_export(b).await?;
        }
        Ok(())
    }

    /// Post-actions of exports whose run was cut short (killed, or its lease lost) go out
    /// first, so an exported order does not stay unlocked until its record is read again.
    async fn pending_actions(&mut self) -> Result<(), EngineRunError> {
        if !self.flow.export_once || self.flow.after_export.is_empty() || self.opts.keys.is_some() {
            return Ok(());
        }
        let waiting: Vec<Binding> = self
            .e
            .store
            .bindings
            .awaiting_actions(&self.scope)
            .await?
            .into_iter()
            .filter(|b| {
                self.id_on(b, Side::Source).is_some() && self.id_on(b, Side::Target).is_some()
            })
            .collect();
        if !waiting.is_empty() {
            tracing::info!(flow = %self.flow.id, records = waiting.len(), "post-actions left by an earlier run go out first");
        }
        for b in waiting {
            if !self.go_on()? {
                break;
            }
            self.after_export(b).await?;
        }
        Ok(())
    }

    /// The `updated_at` of a record, when its entity maps one.
    pub(super) fn stamp(&self, seen: &Seen) -> Option<DateTime<Utc>> {
        let field = self.entity.updated_at.as_deref()?;
        stamp_of(seen.canon.get(field)?)
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
    pub(super) fn note_reread(&mut self, first_stamp: Option<DateTime<Utc>>) {
        let floor = first_stamp.map(|t| t - chrono::Duration::seconds(1));
        self.cursor = self.cursor.hold(floor);
    }

    /// Maps a native record of a side to its key, id and canonical record.
    pub(super) fn seen(
        &self,
        end: &End,
        native: Value,
    ) -> Result<Seen, Box<(String, Value, Fail)>> {
        self.seen_in(end, native, None)
    }

    /// `seen` of a record a nested listing served, with its parent for the read mapping.
    pub(super) fn seen_in(&self, end: &End, mut native: Value, parent: Option<&Value>) -> Mapped {
        let env = MapEnv {
            vars: &end.ent.tables,
            system: end.http.system_vars(),
            refs: &crate::compile::NoRefs,
        };
        let id = end.ent.id.of_in(&native, parent);
        let mapped = end.ent.read.apply_in_mut(&mut native, parent, &env, None);
        self.seen_mapped(end, id, mapped, native)
    }

    /// `seen` of a record read as the values of the members `direct` reads (a listing read
    /// through a `ListingReader`): no native record.
    pub(super) fn seen_read(&self, end: &End, direct: &DirectRead, values: Vec<Value>) -> Mapped {
        let (id, mapped) = direct.read(values);
        self.seen_mapped(end, id, mapped, Value::Null)
    }

    /// `seen_read` of a record whose text is kept (`Seen::text`): a failure of it, mapping
    /// included, reports the record whole.
    fn seen_read_text(
        &self,
        end: &End,
        direct: &DirectRead,
        values: Vec<Value>,
        text: Box<str>,
    ) -> Mapped {
        match self.seen_read(end, direct, values) {
            Ok(mut seen) => {
                seen.text = Some(text);
                Ok(seen)
            }
            Err(mut bad) => {
                bad.1 = native_of(&text);
                Err(bad)
            }
        }
    }

    /// `seen_read` made straight into what the target index keeps, for a read mapping whose
    /// records all have one shape: the record's values are mapped, normalised and packed where
    /// they are, and no object is built for it. `None` for a record `seen_read` refuses (it
    /// cannot be mapped, it has no key: `key_at` is the key's place among the fields).
    fn indexed_read(
        &self,
        shaped: &canonical::Shaped,
        direct: &DirectRead,
        key_at: Option<usize>,
        values: Vec<Value>,
    ) -> Option<(String, spill::Indexed)> {
        let (id, mapped) = direct.read_values(values);
        let mut mapped = mapped.ok()?;
        canonical::normalise_values(shaped, direct.names(), &mut mapped).ok()?;
        let raw_key = key_text(mapped.get(key_at?)?)?;
        let key = normalize_owned(raw_key, &self.flow.normalize);
        let canon = packed::pack_object(direct.names(), &mapped);
        crate::json::drop_values(mapped);
        Some((key, spill::Indexed::packed(id, canon)))
    }

    /// A record's key, id and canonical record, from its id and mapped record.
    fn seen_mapped(
        &self,
        end: &End,
        id: Option<String>,
        mapped: Result<Value, crate::compile::mapping::FieldMapError>,
        native: Value,
    ) -> Mapped {
        let mapped = mapped.map_err(|e| unmappable(&id, native.clone(), e))?;
        let canon = match &end.shaped {
            Some(shaped) => canonical::normalise_shaped(self.entity, shaped, mapped),
            None => canonical::normalise(self.entity, mapped),
        }
        .map_err(|e| unmappable(&id, native.clone(), e))?;
        let Some(raw_key) = canonical::field_text(&canon, &self.flow.match_key) else {
            return Err(self.keyless(&id, native));
        };
        let key = normalize_owned(raw_key, &self.flow.normalize);
        Ok(Seen {
            key,
            id,
            canon,
            native,
            text: None,
        })
    }

    /// Why a record with the id `id` and no match key cannot be synced.
    fn keyless(&self, id: &Option<String>, native: Value) -> Box<(String, Value, Fail)> {
        let shown = id.as_deref().unwrap_or("?");
        Box::new((
            format!("id:{shown}"),
            native,
            Fail::msg(format!(
                "record has no `{}` to match on",
                self.flow.match_key
            )),
        ))
    }

    /// Reads every record of the target (or those changed since `since`). Without
    /// `keep_native` only the key, id and canonical record are kept: an index of a whole
    /// catalogue is held for the rest of the run, and the native records (the bulk of it,
    /// needed only to report a failure of that record) would multiply its size.
    ///
    /// A record served twice keeps its later reading (later pages carry newer versions),
    /// and tells that the pages shifted (`true` with the records): the read may then lack
    /// records the target has. A read since a cursor (the target's changes) watches for
    /// shifting pages as the source listing does (see `note_reread`).
    pub(super) async fn read_all_dst(
        &mut self,
        since: Option<DateTime<Utc>>,
        keep_native: bool,
    ) -> Result<(KeyIndex, bool), EngineRunError> {
        let mut out = KeyIndex::with_bound(self.index_bound());
        let Some(op) = list_operation(self.dst.ent, since) else {
            return Ok((out, false));
        };
        // A write mapping that merges with what the target holds may have only this reading.
        let keep_native = keep_native || self.dst.ent.write.reads_target();
        // Without their native records, the records of a listing whose pages allow it are
        // read straight into the members the read mapping and the id read: no record is
        // built whole only to be mapped and dropped.
        let (direct, reader) = direct_read(&self.dst, &op, keep_native, false);
        // Where the match key is among a read record's fields (`indexed_read`).
        let key_at = direct
            .as_ref()
            .and_then(|d| d.names().position(|n| n == self.flow.match_key));
        let mut rereads = Vec::new();
        let mut pages = Box::pin(self.dst.http.list_ahead_reading(
            &op,
            CallInput {
                since,
                ..Default::default()
            },
            READ_AHEAD,
            reader,
        ));
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.read_error(self.dst.name, e))?;
            if let Some(direct) = &direct {
                for values in page.read {
                    let first = match &self.dst.shaped {
                        Some(shaped) => self
                            .indexed_read(shaped, direct, key_at, values)
                            .and_then(|(key, kept)| out.keep_indexed(key, kept, |r| self.stamp(r))),
                        None => self
                            .seen_read(&self.dst, direct, values)
                            .ok()
                            .and_then(|s| out.keep(s, |r| self.stamp(r))),
                    };
                    rereads.extend(first);
                }
            }
            let mut parents = page.parents.into_iter();
            for native in page.records {
                let parent = parents.next().flatten();
                if let Ok(mut s) = self.seen_in(&self.dst, native, parent.as_deref()) {
                    if !keep_native {
                        s.native = Value::Null;
                    }
                    if let Some(first) = out.keep(s, |r| self.stamp(r)) {
                        rereads.push(first);
                    }
                }
            }
        }
        let shifted = !rereads.is_empty();
        if since.is_some() {
            for first in rereads {
                self.note_reread(first);
            }
        }
        Ok((out, shifted))
    }

    /// Finds one record by key on a side. On the target, a system
    /// without a lookup operation, or a run that has already looked up many records (a first
    /// sync), is read once in full instead and searched in memory.
    ///
    /// "Many" grows with the target: a lookup costs about what a page of its listing costs,
    /// so the full read pays only once the lookups outnumber the target's pages (estimated
    /// from the records bound so far). The 500 new products of a 100,000-product catalogue
    /// are looked up one by one, instead of reading 100,000 products to find them.
    ///
    /// A full read whose pages shifted is not trusted with a record it lacks: that record is
    /// looked up, or, without a lookup operation, the target is read again.
    pub(super) async fn lookup(&mut self, side: Side, key: &str) -> Result<Option<Seen>, Fail> {
        Ok(match self.lookup_like(side, key, None).await? {
            Some(Like::Other(found)) => Some(found),
            Some(Like::Same { .. }) => unreachable!("only a record asked with is found the same"),
            None => None,
        })
    }

    /// Lookups after which the target is read in full (see `lookup`), from the records bound
    /// so far; asked of the store once a run.
    async fn bulk_after(&mut self) -> Result<usize, crate::state::StateStoreError> {
        if let Some(n) = self.index.bulk_after {
            return Ok(n);
        }
        let bound = self.e.store.bindings.binding_count(&self.scope).await?;
        let n = BULK_LOOKUPS.max(bound / RECORDS_PER_PAGE);
        self.index.bulk_after = Some(n);
        Ok(n)
    }

    /// Before a page of a one-way source is decided: when its records that are not bound yet
    /// and pass the flow's filter (each looked up in the target) are more than the lookups
    /// left before the target is read in full, that read would come in this page anyway; it
    /// comes at the page's first lookup instead, sparing the single lookups before it. A first
    /// sync (nothing bound) of a listing whose first page holds more than `BULK_LOOKUPS`
    /// records reads the target at once; against a shop answering 3 – 4 requests a second,
    /// the first 50 lookups cost some 15 s.
    async fn plan_lookups(&mut self, mapped: &[Page]) -> Result<(), EngineRunError> {
        if self.index.bulk_now
            || self.index.records.is_some()
            || self.bidirectional()
            || self.dst.ent.list.is_none()
        {
            return Ok(());
        }
        let to_look_up = mapped
            .iter()
            .filter_map(|m| m.as_ref().ok())
            .filter(|served| {
                matches!(self.listing.page_bindings.get(served.key()), Some(None))
                    && !self.held.holds(served.key())
                    && match served {
                        Served::Whole(seen) => self.eligible(seen, None),
                        // Read by position only where every record is eligible.
                        Served::Values(_) => true,
                    }
            })
            .count();
        if to_look_up > 0 {
            let after = self.bulk_after().await?;
            self.index.bulk_now = self.index.lookups + to_look_up > after;
        }
        Ok(())
    }

    /// As `lookup`, for a caller that expects a record `like` this canonical one and does
    /// not read the native record of what it finds: a record the full read kept comes
    /// without its native record, or, when it holds exactly `like`, as `Like::Same` (see
    /// `KeyIndex::get_like`).
    pub(super) async fn lookup_like(
        &mut self,
        side: Side,
        key: &str,
        like: Option<&Value>,
    ) -> Result<Option<Like>, Fail> {
        if side == Side::Target {
            // In a dry run, a record an earlier flow of the plan would have created here is
            // there, as it will be when the run gets to this flow.
            if self.opts.dry_run
                && let Some(native) = self.e.planned_create(
                    self.dst.name,
                    crate::engine::listing(&self.entity.name, self.dst.ent),
                    key,
                )
                && let Ok(mut seen) = self.seen(&self.dst, native)
                && seen.key == key
            {
                seen.id
                    .get_or_insert_with(|| crate::engine::PLANNED_ID.to_string());
                return Ok(Some(Like::Other(seen)));
            }
            let lookup_op = self.dst.ent.lookup.is_some();
            let bulk_after = self
                .bulk_after()
                .await
                .map_err(|e| Fail::msg(e.to_string()))?;
            let bulk = self.index.bulk_now || self.index.lookups >= bulk_after;
            // A target that cannot be searched is read in full to find one record; that a
            // recent read lacked this key is remembered, so one unmatched record does not
            // cost a full read on every run. Reconciliation always reads.
            let remembered = !lookup_op
                && !self.opts.reconcile
                && self.index.records.is_none()
                && self.e.known_absent(&self.flow.id, key).await;
            if remembered {
                return Ok(None);
            }
            if self.index.records.is_none() && self.dst.ent.list.is_some() && (!lookup_op || bulk) {
                let read_at = self.e.clock.now();
                let (index, shifted) = self
                    .read_all_dst(None, false)
                    .await
                    .map_err(|e| Fail::msg(e.to_string()))?;
                self.index.records = Some(index);
                self.index.shifted = shifted;
                self.index.read_at = Some(read_at);
            }
            if let Some(index) = &self.index.records {
                let found = match like {
                    Some(like) => index.get_like(key, like),
                    None => index.get(key).map(|found| found.map(Like::Other)),
                };
                if let Some(found) = found.map_err(|e| Fail::msg(e.to_string()))? {
                    return Ok(Some(found));
                }
                if !self.index.shifted {
                    if !lookup_op && let Some(t) = self.index.read_at {
                        self.e
                            .note_absent(&self.flow.id, t, key, !self.opts.dry_run)
                            .await;
                    }
                    return Ok(None);
                }
                // The read shifted and may have missed it: ask, or read again, rather than
                // create it a second time.
                if !lookup_op {
                    return Ok(self.reread_index(key).await?.map(Like::Other));
                }
            } else {
                self.index.lookups += 1;
            }
        }
        let end = self.end(side);
        let Some(op) = &end.ent.lookup else {
            return Ok(None);
        };
        let input = CallInput {
            key: Some(key.to_string()),
            ..Default::default()
        };
        Ok(self.ask(end, op, &input, key).await?.map(Like::Other))
    }

    /// Calls a `lookup` (by key) or `get` (by id) operation of a side and returns the
    /// record it answers with under `key`, if any.
    pub(super) async fn ask(
        &self,
        side: &End<'_>,
        op: &str,
        input: &CallInput,
        key: &str,
    ) -> Result<Option<Seen>, Fail> {
        let out = match side.http.call(op, input).await {
            Ok(o) => o,
            Err(e) if matches!(e.root(), CallError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(Fail::call(&e, None)),
        };
        // A `get` by id may answer with the bare record, without a `record` path.
        let by_id = input.id.is_some();
        let (candidates, parents): (Vec<Value>, _) = match out.record {
            Some(Value::Array(a)) => (a, Vec::new()),
            Some(r) => (vec![r], Vec::new()),
            None if by_id => (vec![out.body], Vec::new()),
            None => (out.records, out.parents),
        };
        let mut parents = parents.into_iter();
        for native in candidates {
            let parent = parents.next().flatten();
            if let Ok(s) = self.seen_in(side, native, parent.as_deref())
                && s.key == key
            {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    /// A binding's id on a side. Bindings keep their two columns by system pair (`a`, `b`),
    /// shared by the flows of both directions; these four name them by this flow's sides.
    pub(super) fn id_on<'b>(&self, b: &'b Binding, side: Side) -> Option<&'b str> {
        b.id(self.end(side).pair_side)
    }

    pub(super) fn set_id_on(&self, b: &mut Binding, side: Side, id: String) {
        b.set_id(self.end(side).pair_side, id);
    }

    /// What a binding last knew a side to hold.
    pub(super) fn base_on<'b>(&self, b: &'b Binding, side: Side) -> Option<&'b Value> {
        b.base(self.end(side).pair_side)
    }

    pub(super) fn base_on_mut<'b>(&self, b: &'b mut Binding, side: Side) -> &'b mut Option<Value> {
        b.base_mut(self.end(side).pair_side)
    }

    pub(super) async fn binding(&self, key: &str) -> Result<Option<Binding>, EngineRunError> {
        if let Some(b) = self.held.by_key.get(key) {
            let mut b = b.clone();
            b.settle_bases();
            return Ok(Some(b));
        }
        if let Some(a) = self.held.adopted.get(key) {
            let mut b = a.binding()?;
            b.settle_bases();
            return Ok(Some(b));
        }
        if let Some(b) = self.listing.page_bindings.get(key) {
            return Ok(b.clone());
        }
        Ok(self
            .e
            .bindings(&self.scope, std::slice::from_ref(&key.to_string()))
            .await?
            .remove(key))
    }

    /// The binding of a record about to be decided: as `binding`, but taken out of its
    /// page's bindings instead of copied. Deciding stores what it makes of it; a second
    /// reading of the key in the same page asks the store, which holds the same.
    pub(super) async fn take_binding(
        &mut self,
        key: &str,
    ) -> Result<Option<Binding>, EngineRunError> {
        if !self.held.holds(key)
            && let Some(b) = self.listing.page_bindings.remove(key)
        {
            return Ok(b);
        }
        self.binding(key).await
    }

    pub(super) async fn put_binding(&mut self, b: &Binding) -> Result<(), EngineRunError> {
        self.forget_read(&b.key);
        if !self.opts.dry_run {
            self.e
                .store
                .bindings
                .put_bindings(&self.scope, vec![b.clone()])
                .await?;
        } else {
            self.e
                .plan_binding(&self.scope, || Ok::<_, EngineRunError>(b.clone()))?;
        }
        Ok(())
    }

    /// Stores a binding that no write depends on (see `HeldBindings`): held back and written
    /// with the others of its page. A dry run plans it as `put_binding` does.
    pub(super) async fn hold_binding(&mut self, b: Binding) -> Result<(), EngineRunError> {
        if self.opts.dry_run {
            return self.put_binding(&b).await;
        }
        self.listing.page_bindings.remove(&b.key);
        self.held.adopted.remove(&b.key);
        self.held.by_key.insert(b.key.clone(), b);
        if self.held.len() >= BINDINGS_PER_WRITE {
            self.write_held().await?;
        }
        Ok(())
    }

    /// `hold_binding` of an adoption, kept as its packed records (`Adopted`) until its page is
    /// written. A dry run plans the binding it stands for, only where a flow planned later
    /// reads it (one base for both sides when they are the same bytes, as stored).
    pub(super) async fn hold_adopted(
        &mut self,
        a: crate::state::Adopted,
    ) -> Result<(), EngineRunError> {
        self.listing.page_bindings.remove(&a.key);
        if self.opts.dry_run {
            self.e.plan_binding(&self.scope, || a.binding())?;
            return Ok(());
        }
        self.held.by_key.remove(&a.key);
        self.held.adopted.insert(a.key.clone(), a);
        if self.held.len() >= BINDINGS_PER_WRITE {
            self.write_held().await?;
        }
        Ok(())
    }

    /// What the run's target index keeps in memory before it moves to a temporary file:
    /// the run's own bound, else its engine's (`--index-memory`), else `SPILL_BYTES`.
    pub(super) fn index_bound(&self) -> usize {
        self.opts
            .index_spill_bytes
            .or(self.e.index_memory)
            .unwrap_or(index::SPILL_BYTES)
    }

    /// Before a write to `side`: the bindings held back are written first when the side's
    /// write mapping resolves references (`ref`), which it reads from the stored bindings
    /// and may find among those held. Otherwise they stay held and go with their page,
    /// instead of a transaction of their own before each write.
    pub(super) async fn write_held_for(&mut self, side: Side) -> Result<(), EngineRunError> {
        if self.end(side).ent.write.resolves_refs() {
            self.write_held().await?;
        }
        Ok(())
    }

    /// Writes the bindings held back, in one transaction.
    pub(super) async fn write_held(&mut self) -> Result<(), EngineRunError> {
        if self.held.len() == 0 {
            return Ok(());
        }
        let held: Vec<Binding> = std::mem::take(&mut self.held.by_key)
            .into_values()
            .collect();
        let adopted: Vec<_> = std::mem::take(&mut self.held.adopted)
            .into_values()
            .collect();
        let bindings = &self.e.store.bindings;
        if adopted.is_empty() {
            bindings.put_bindings(&self.scope, held).await?;
        } else {
            bindings.put_held(&self.scope, held, adopted).await?;
        }
        Ok(())
    }

    /// A binding about to be stored otherwise (at once, or with a journal entry): what was
    /// read or held of it before is stale.
    pub(super) fn forget_read(&mut self, key: &str) {
        self.listing.page_bindings.remove(key);
        self.held.by_key.remove(key);
        self.held.adopted.remove(key);
    }

    /// The bases an update of `side` with `canon` leaves, stored (or, in a dry
    /// run, planned, so the next flow of the plan compares with them).
    pub(super) async fn move_bases(
        &mut self,
        side: Side,
        b: &mut Binding,
        canon: &Value,
        source_now: Option<&Value>,
    ) -> Result<(), Fail> {
        let written = match self.base_on(b, side) {
            Some(Value::Object(_)) => overlay_fields(self.base_on(b, side), canon, &self.carried),
            _ => canon.clone(),
        };
        *self.base_on_mut(b, side) = Some(written);
        if let Some(s) = source_now {
            *self.base_on_mut(b, side.other()) = Some(s.clone());
        }
        self.put_binding(b)
            .await
            .map_err(|e| Fail::msg(e.to_string()))
    }

    /// Whether a record is eligible under the flow's filter and status triggers.
    pub(super) fn eligible(&self, seen: &Seen, binding: Option<&Binding>) -> bool {
        if let Some(f) = &self.flow.filter
            && !f.matches(&seen.canon)
        {
            return false;
        }
        decide::triggered(
            self.flow.on_status.as_ref(),
            self.flow.on_transition.as_ref(),
            &seen.canon,
            binding.and_then(|b| self.base_on(b, Side::Source)),
        )
    }

    pub(super) fn record(
        &mut self,
        key: &str,
        decision: Decision,
        target: Option<&str>,
        changes: Vec<FieldChange>,
        reason: Option<String>,
    ) {
        self.report.count(decision);
        if self.lines(decision) {
            let steps = std::mem::take(&mut self.planned_steps);
            self.line(RecordReport {
                key: key.to_string(),
                decision,
                target: target.map(str::to_string),
                changes,
                reason,
                steps,
            });
        }
    }

    /// Whether a record decided so gets a line (`record`): what a reason only it shows is
    /// made for.
    pub(super) fn lines(&self, decision: Decision) -> bool {
        self.opts.dry_run || self.opts.details || decision == Decision::Failed
    }

    /// A record's line: to the caller's sink when it streams them, else kept in the report.
    pub(super) fn line(&mut self, record: RecordReport) {
        match &self.opts.sink {
            Some(sink) => sink.send(record),
            None => self.report.records.push(record),
        }
    }

    /// A listing that failed: the flow stops either way; when the system went down, it says
    /// so.
    /// The target's records held for the run could not be read back from their temporary
    /// database: the run stops, as when the target itself cannot be read.
    fn index_unreadable(&self, e: IndexReadError) -> EngineRunError {
        EngineRunError::Read {
            flow: self.flow.id.clone(),
            system: self.dst.name.to_string(),
            message: e.to_string(),
        }
    }

    fn read_error(&self, system: &str, e: CallError) -> EngineRunError {
        self.system_down().unwrap_or_else(|| EngineRunError::Read {
            flow: self.flow.id.clone(),
            system: system.to_string(),
            message: e.to_string(),
        })
    }

    /// The error that stops the run when a system it calls is down. A record that fails
    /// then failed for that reason: it is not kept as a failure, and the records after it
    /// are not tried (each would wait out the same outage); the cursor stays where it was.
    pub(super) fn system_down(&self) -> Option<EngineRunError> {
        [&self.src, &self.dst]
            .into_iter()
            .find(|side| side.http.is_down())
            .map(|side| {
                let h = side.http.health();
                let mut message = format!(
                    "{} requests in a row got no response",
                    h.consecutive_failures
                );
                if let Some(e) = &h.last_error {
                    message.push_str(&format!("; last: {e}"));
                }
                EngineRunError::SystemDown {
                    flow: self.flow.id.clone(),
                    system: side.name.to_string(),
                    message: crate::redact::redact(&message).into_owned(),
                }
            })
    }

    pub(super) async fn fail(
        &mut self,
        key: &str,
        native: &Value,
        f: Fail,
    ) -> Result<(), EngineRunError> {
        if let Some(down) = self.system_down() {
            return Err(down);
        }
        if crate::state::lease::lease_lost() {
            // Not the record's fault: the run stops, and a write it had begun stays in the
            // journal as in doubt for the next holder.
            return Err(EngineRunError::LeaseLost(self.flow.id.clone()));
        }
        tracing::warn!(flow = %self.flow.id, key, error = %crate::redact::redact(&f.error), "record failed");
        if !self.opts.dry_run {
            let now = self.e.clock.now();
            self.e
                .store
                .failures
                .put_failure(&Failure {
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
                })
                .await?;
        }
        let reason = crate::redact::redact(&f.error).into_owned();
        self.record(key, Decision::Failed, None, Vec::new(), Some(reason));
        Ok(())
    }

    /// A record synced: a failure kept for it is cleared, and the report says so.
    pub(super) async fn succeeded(&mut self, key: &str) -> Result<(), EngineRunError> {
        if self.unsettled.failing.remove(key) && !self.opts.dry_run {
            self.e
                .store
                .failures
                .clear_failure(FlowName::new(&self.flow.id), RecordKey::new(key))
                .await?;
            tracing::info!(flow = %self.flow.id, key, "record synced; its failure is cleared");
            self.report.counts.failures_cleared += 1;
            self.report.cleared.push(key.to_string());
        }
        Ok(())
    }

    /// Remembers a written record for the flows chained after this one. Flows without any
    /// keep nothing: a first sync that creates a whole catalogue would otherwise hold every
    /// record until the run ends.
    pub(super) fn touched(&mut self, canon: &Value) {
        if !self.flow.then.is_empty() {
            self.report.touched.push(canon.clone());
        }
    }

    pub(super) fn idempotency_key(&self, key: &str) -> String {
        let digest = Sha256::digest(format!("{}\u{0}{key}", self.flow.id).as_bytes());
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!("erpsync-{hex}")
    }
}

impl Engine {
    /// Runs one flow now, holding its lease (dry runs, which write nothing, take none).
    pub async fn run(&self, flow_id: &str, opts: &RunOptions) -> Result<RunReport, EngineRunError> {
        self.check(flow_id, opts)?;
        if opts.dry_run {
            return self.run_leased(flow_id, opts, None).await;
        }
        let lease = self.take_lease(flow_id).await?;
        let report = self.run_leased(flow_id, opts, Some(&lease)).await;
        lease.release().await;
        report
    }

    fn check(
        &self,
        flow_id: &str,
        opts: &RunOptions,
    ) -> Result<Arc<crate::compile::Flow>, EngineRunError> {
        let flow = self
            .project
            .flow(flow_id)
            .ok_or_else(|| EngineRunError::UnknownFlow(flow_id.to_string()))?
            .clone();
        if !flow.enabled && !opts.force {
            return Err(EngineRunError::Disabled(flow_id.to_string()));
        }
        Ok(flow)
    }

    /// Runs one flow under a lease already taken (`take_lease`): every state write of the
    /// run is fenced by the lease's grant, and every remote write checks the lease first.
    pub(crate) async fn run_leased(
        &self,
        flow_id: &str,
        opts: &RunOptions,
        lease: Option<&HeldLease>,
    ) -> Result<RunReport, EngineRunError> {
        let flow = self.check(flow_id, opts)?;
        let Some(lease) = lease else {
            return run_flow(self, &flow, opts).await;
        };
        let fenced = Engine {
            store: self.store.fenced(lease.watch.fence.clone()),
            ..self.clone()
        };
        let result = crate::state::lease::with_watch(
            Some(lease.watch.clone()),
            run_flow(&fenced, &flow, opts),
        )
        .await;
        match result {
            Err(EngineRunError::State(crate::state::StateStoreError::Fenced(_))) => {
                lease.watch.lose();
                Err(EngineRunError::LeaseLost(flow_id.to_string()))
            }
            other => other,
        }
    }

    /// Runs the stored failures `ids` again (all of them with `None`), each flow once for its
    /// failed keys, with the flow files as they are now; a record that succeeds leaves the
    /// failure store. One report (or error) per flow, in flow-name order.
    pub async fn retry_failures(
        &self,
        ids: Option<&[i64]>,
    ) -> Result<Vec<(String, Result<RunReport, EngineRunError>)>, EngineRunError> {
        let mut by_flow: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in self.store.failures.failures(None).await? {
            if ids.is_none_or(|ids| ids.contains(&f.id)) {
                by_flow.entry(f.flow).or_default().push(f.key);
            }
        }
        // Flows that sync others' records on demand (orders their customers) go first: a
        // required record they sync clears its own failure, which is then not retried.
        let mut order: Vec<(String, Vec<String>)> = by_flow.into_iter().collect();
        order.sort_by_key(|(flow, _)| {
            self.project
                .flows
                .iter()
                .any(|f| f.requires.iter().any(|(r, _)| r == flow))
        });
        let mut out = Vec::with_capacity(order.len());
        for (flow, keys) in order {
            let kept: HashSet<String> = self
                .store
                .failures
                .failures(Some(FlowName::new(&flow)))
                .await?
                .into_iter()
                .map(|f| f.key)
                .collect();
            let keys: Vec<String> = keys.into_iter().filter(|k| kept.contains(k)).collect();
            if keys.is_empty() {
                continue;
            }
            let report = self.run(&flow, &RunOptions::retry(keys)).await;
            out.push((flow, report));
        }
        Ok(out)
    }
}
