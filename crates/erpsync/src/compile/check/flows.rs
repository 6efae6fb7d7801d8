//! Flows: each flow (and each per-shop copy of an `{{each}}` flow) checked against the
//! systems and entities it names: its sides' operations, fields, filter, triggers, chains
//! (`requires`, `then`) and conflict rules, then compiled with typed settings.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Checker;
use super::systems::CompiledSystem;
use crate::compile::settings::Ends;
use crate::compile::{
    Conflict, DeclaredFlow, Entity, Flow, Incremental, PostAction, Schedule, SystemEntity,
};
use crate::config::model::{ConflictRule, Direction, FlowConfig, SyncMode, SystemRole};
use crate::config::{Problem, ProjectConfig};
use crate::expr::{JsonPath, Predicate};

/// The canonical fields a flow filter reads (`@.name`, first member only), each with
/// whether it stands alone as a test of existence (`@.awb && …`), which RFC 9535 makes true
/// for a null value as well.
pub(super) fn filter_members(text: &str) -> Vec<(String, bool)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut quote: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        if c == '\'' || c == '"' {
            quote = Some(c);
            i += 1;
            continue;
        }
        if c == '@' && chars.get(i + 1) == Some(&'.') {
            let start = i + 2;
            let mut end = start;
            while end < chars.len() && (chars[end].is_alphanumeric() || chars[end] == '_') {
                end += 1;
            }
            if end > start {
                let name: String = chars[start..end].iter().collect();
                out.push((name, stands_alone(&chars, i, end)));
            }
            i = end;
            continue;
        }
        i += 1;
    }
    out
}

/// Whether the member at `chars[at..end]` (`@.name`) stands alone as a test: nothing but
/// `&&`, `||` or a bracket between it and the ends of its operands.
fn stands_alone(chars: &[char], at: usize, end: usize) -> bool {
    // The whole member chain, then what comes after and before it.
    let mut after = end;
    while after < chars.len()
        && (chars[after].is_alphanumeric() || matches!(chars[after], '_' | '.'))
    {
        after += 1;
    }
    let rest: String = chars[after..].iter().collect::<String>();
    let rest = rest.trim_start();
    let before: String = chars[..at].iter().collect::<String>();
    let before = before.trim_end();
    let alone_after = rest.is_empty()
        || rest.starts_with("&&")
        || rest.starts_with("||")
        || rest.starts_with(')');
    let alone_before = before.is_empty()
        || before.ends_with("&&")
        || before.ends_with("||")
        || (before.ends_with('(') && !before.ends_with("!("));
    alone_after && alone_before
}

const EACH: &str = "{{each}}";

/// One flow declaration being checked: what each step of its check needs to know.
struct FlowDecl<'a> {
    project: &'a ProjectConfig,
    name: &'a str,
    file: usize,
    base: &'a str,
    f: &'a FlowConfig,
    /// Its entity, when that exists.
    entity: Option<&'a Arc<Entity>>,
}

impl FlowDecl<'_> {
    /// The path of `rel` inside the flow.
    fn at(&self, rel: &str) -> String {
        format!("{}.{rel}", self.base)
    }

    fn report(&self, ck: &mut Checker, rel: &str, problem: Problem) {
        ck.report(self.file, &self.at(rel), problem);
    }

    /// Reports a name that is not a field of the flow's entity.
    fn check_field(&self, ck: &mut Checker, rel: &str, field: &str) {
        if let Some(e) = self.entity
            && !e.fields.contains_key(field)
        {
            let what = format!("field of entity `{}`", e.name);
            let known = e.fields.keys().map(String::as_str);
            self.report(ck, rel, Problem::unknown_name(&what, field, known));
        }
    }
}

/// What a flow declaration compiles to, shared by each of its copies.
struct Checked {
    key: String,
    filter: Option<Predicate>,
    schedule: Option<Schedule>,
    incremental: Option<Incremental>,
    reconcile_schedule: Option<Schedule>,
    then: Vec<(String, Option<JsonPath>)>,
    requires: Vec<(String, JsonPath)>,
}

/// The systems flows may name.
struct Systems<'a> {
    all: &'a BTreeMap<String, CompiledSystem>,
    /// The names of the concrete ones, for "did you mean".
    concrete: Vec<&'a str>,
}

/// Checks every flow and compiles one `Flow` per copy whose systems and entity exist.
pub(super) fn compile_flows(
    ck: &mut Checker,
    entities: &BTreeMap<String, Arc<Entity>>,
    systems: &BTreeMap<String, CompiledSystem>,
    webhooks: &[String],
) -> Vec<Arc<Flow>> {
    let project = ck.project;
    let systems = Systems {
        all: systems,
        concrete: systems
            .iter()
            .filter(|(_, s)| !s.is_abstract)
            .map(|(k, _)| k.as_str())
            .collect(),
    };
    let mut out = Vec::new();
    for (name, decl) in &project.flows {
        let fl = FlowDecl {
            project,
            name,
            file: decl.file,
            base: &decl.path,
            f: &decl.value,
            entity: check_entity(ck, entities, decl.file, &decl.path, &decl.value),
        };
        let copies = check_copies(ck, &fl);
        let checked = check_declaration(ck, &fl, webhooks);
        for (each, i) in copies {
            let Some((from, to)) = check_endpoints(ck, &fl, &systems, each, i) else {
                continue;
            };
            if fl.entity.is_none() {
                continue;
            }
            let source = &systems.all[&from];
            check_sides(ck, &fl, source, &systems.all[&to]);
            out.push(Arc::new(build_copy(&fl, &checked, each, source, from, to)));
        }
    }
    out
}

/// Checks what every copy of a flow shares.
fn check_declaration(ck: &mut Checker, fl: &FlowDecl, webhooks: &[String]) -> Checked {
    let key = check_match(ck, fl);
    let filter = check_filter(ck, fl);
    let schedule = check_trigger(ck, fl, webhooks);
    let incremental = check_incremental(ck, fl);
    let reconcile_schedule = check_reconcile(ck, fl);
    check_conflict_fields(ck, fl);
    let then = check_then(ck, fl);
    check_after(ck, fl);
    let requires = check_requires(ck, fl);
    Checked {
        key,
        filter,
        schedule,
        incremental,
        reconcile_schedule,
        then,
        requires,
    }
}

/// The flow's entity, reported when it does not exist.
fn check_entity<'a>(
    ck: &mut Checker,
    entities: &'a BTreeMap<String, Arc<Entity>>,
    file: usize,
    base: &str,
    f: &FlowConfig,
) -> Option<&'a Arc<Entity>> {
    let entity = entities.get(&f.entity);
    if entity.is_none() && !ck.project.is_broken("entities", &f.entity) {
        let known = entities.keys().map(String::as_str);
        let problem = Problem::unknown_name("entity", &f.entity, known);
        ck.report(file, &format!("{base}.entity"), problem);
    }
    entity
}

/// The copies of a flow: one per `for_each` system (with its index), or the flow itself.
fn check_copies<'a>(ck: &mut Checker, fl: &FlowDecl<'a>) -> Vec<(Option<&'a str>, usize)> {
    let f = fl.f;
    let uses_each = f.from.contains(EACH) || f.to.contains(EACH);
    if f.for_each.is_empty() {
        if uses_each {
            let problem = Problem::conflict("`{{each}}` needs a `for_each` list");
            fl.report(ck, "from", problem);
        }
        return vec![(None, 0)];
    }
    if !uses_each {
        let problem = Problem::conflict("`for_each` needs `{{each}}` in `from` or `to`");
        fl.report(ck, "for_each", problem);
    }
    f.for_each
        .iter()
        .enumerate()
        .map(|(i, s)| (Some(s.as_str()), i))
        .collect()
}

/// The match key (the flow's, else its entity's) and the fields the flow syncs.
fn check_match(ck: &mut Checker, fl: &FlowDecl) -> String {
    let f = fl.f;
    let declared = f.match_key.as_ref().and_then(|m| m.key.as_deref());
    if let Some(k) = declared {
        fl.check_field(ck, "match.key", k);
    }
    for (i, field) in f.fields.iter().enumerate() {
        fl.check_field(ck, &format!("fields.{i}"), field);
    }
    declared
        .map(str::to_string)
        .or_else(|| fl.entity.map(|e| e.key.clone()))
        .unwrap_or_default()
}

/// The filter: a condition on the canonical record's fields, warned about where a bare
/// `@.member` lets null values through.
fn check_filter(ck: &mut Checker, fl: &FlowDecl) -> Option<Predicate> {
    let text = fl.f.filter.as_ref()?;
    let at = fl.at("filter");
    let filter = ck.predicate(fl.file, &at, text)?;
    for (member, bare) in filter_members(text) {
        fl.check_field(ck, "filter", &member);
        if bare {
            ck.report(fl.file, &at, Problem::filter_null(&member));
        }
    }
    Some(filter)
}

/// The trigger: schedule and time zone, the status fields and the webhook it names.
fn check_trigger(ck: &mut Checker, fl: &FlowDecl, webhooks: &[String]) -> Option<Schedule> {
    let t = &fl.f.trigger;
    let timezone = t.timezone.as_deref();
    let schedule = t
        .schedule
        .as_ref()
        .and_then(|s| ck.schedule(fl.file, &fl.at("trigger.schedule"), s, timezone));
    if t.schedule.is_none()
        && let Some(tz) = timezone
        && tz.parse::<chrono_tz::Tz>().is_err()
    {
        let problem = Problem::schedule(format!("unknown time zone `{tz}`"));
        fl.report(ck, "trigger.timezone", problem);
    }
    if let Some(s) = &t.on_status {
        fl.check_field(ck, "trigger.on_status.field", &s.field);
    }
    if let Some(s) = &t.on_transition {
        fl.check_field(ck, "trigger.on_transition.field", &s.field);
    }
    if let Some(w) = &t.webhook
        && !webhooks.contains(w)
    {
        let known = webhooks.iter().map(String::as_str);
        let problem = Problem::unknown_name("webhook (under `daemon.webhooks`)", w, known);
        fl.report(ck, "trigger.webhook", problem);
    }
    schedule
}

/// Where an incremental flow starts the first time, and how far back later runs reach.
fn check_incremental(ck: &mut Checker, fl: &FlowDecl) -> Option<Incremental> {
    let inc = fl.f.incremental.as_ref()?;
    let parsed = crate::expr::parse_datetime(&inc.start);
    if parsed.is_none() {
        let problem = Problem::invalid(format!(
            "invalid start `{}`: expected RFC 3339 or YYYY-MM-DD",
            inc.start
        ));
        fl.report(ck, "incremental.start", problem);
    }
    let overlap = Incremental::overlap(inc.overlap_secs);
    if overlap.is_none() {
        let problem = Problem::invalid(format!(
            "`overlap_secs` {} is too large to be a span of time",
            inc.overlap_secs
        ));
        fl.report(ck, "incremental.overlap_secs", problem);
    }
    Some(Incremental {
        start: parsed?,
        overlap: overlap?,
    })
}

/// The reconciliation: its schedule, and `correct: false` only where it means something.
fn check_reconcile(ck: &mut Checker, fl: &FlowDecl) -> Option<Schedule> {
    let f = fl.f;
    let r = f.reconcile.as_ref()?;
    if !r.correct && f.direction == Direction::Bidirectional {
        let problem = Problem::conflict(
            "`correct: false` reports a one-way flow's drift without writing; a \
             bidirectional flow's reconciliation merges both sides and has no drift to \
             leave alone",
        );
        fl.report(ck, "reconcile.correct", problem);
    }
    let timezone = f.trigger.timezone.as_deref();
    ck.schedule(fl.file, &fl.at("reconcile.schedule"), &r.schedule, timezone)
}

/// The fields the conflict rule names, and a timestamp for `newest_wins`.
fn check_conflict_fields(ck: &mut Checker, fl: &FlowDecl) {
    let Some(c) = &fl.f.conflict else {
        return;
    };
    if let Some(t) = &c.timestamp_field {
        fl.check_field(ck, "conflict.timestamp_field", t);
    }
    if c.rule == ConflictRule::NewestWins
        && c.timestamp_field.is_none()
        && fl.entity.is_some_and(|e| e.updated_at.is_none())
    {
        let problem = Problem::invalid(
            "`newest_wins` needs `timestamp_field` or an entity with `updated_at`",
        );
        fl.report(ck, "conflict", problem);
    }
    for field in c.owners.keys() {
        fl.check_field(ck, &format!("conflict.owners.{field}"), field);
    }
}

/// Whether `flow` exists; reported at `rel` when it does not.
fn check_flow_name(ck: &mut Checker, fl: &FlowDecl, rel: &str, flow: &str) -> bool {
    if fl.project.flows.contains_key(flow) {
        return true;
    }
    let known = fl.project.flows.keys().map(String::as_str);
    fl.report(ck, rel, Problem::unknown_name("flow", flow, known));
    false
}

/// The flows run after this one (`then`), with the keys they are given.
fn check_then(ck: &mut Checker, fl: &FlowDecl) -> Vec<(String, Option<JsonPath>)> {
    let mut out = Vec::new();
    for (i, c) in fl.f.then.iter().enumerate() {
        if !check_flow_name(ck, fl, &format!("then.{i}.flow"), &c.flow) {
            continue;
        }
        let keys = c
            .keys
            .as_ref()
            .and_then(|k| ck.path(fl.file, &fl.at(&format!("then.{i}.keys")), k));
        out.push((c.flow.clone(), keys));
    }
    out
}

/// The flows this one waits for (`after`).
fn check_after(ck: &mut Checker, fl: &FlowDecl) {
    for (i, a) in fl.f.after.iter().enumerate() {
        check_flow_name(ck, fl, &format!("after.{i}"), a);
    }
}

/// The flows this one requires to have synced a record first, each with where the record's
/// key is; a required flow must be able to run.
fn check_requires(ck: &mut Checker, fl: &FlowDecl) -> Vec<(String, JsonPath)> {
    let (f, name) = (fl.f, fl.name);
    let mut out = Vec::new();
    for (i, r) in f.requires.iter().enumerate() {
        let at = format!("requires.{i}.flow");
        if !check_flow_name(ck, fl, &at, &r.flow) {
            continue;
        }
        if f.enabled && !fl.project.flows[&r.flow].value.enabled {
            let problem = Problem::conflict(format!(
                "flow `{name}` requires flow `{}`, which is disabled and never runs",
                r.flow
            ))
            .with_help(format!(
                "enable `{}` (a flow without `schedule` runs only when needed), or \
                 disable `{name}` too",
                r.flow
            ));
            fl.report(ck, &at, problem);
        }
        let record = fl.at(&format!("requires.{i}.record"));
        if let Some(p) = ck.path(fl.file, &record, &r.record) {
            out.push((r.flow.clone(), p));
        }
    }
    out
}

/// The systems one copy reads from and writes to, `{{each}}` replaced; `None` when either
/// is unknown or abstract.
fn check_endpoints(
    ck: &mut Checker,
    fl: &FlowDecl,
    systems: &Systems,
    each: Option<&str>,
    i: usize,
) -> Option<(String, String)> {
    let f = fl.f;
    let side = |declared: &str, rel: &str| match each {
        Some(s) => (
            declared.replace(EACH, s),
            if declared.contains(EACH) {
                format!("for_each.{i}")
            } else {
                rel.to_string()
            },
        ),
        None => (declared.to_string(), rel.to_string()),
    };
    let (from, to) = (side(&f.from, "from"), side(&f.to, "to"));
    let mut ok = true;
    for (sys, rel) in [&from, &to] {
        match systems.all.get(sys.as_str()) {
            Some(s) if !s.is_abstract => {}
            Some(_) => {
                ok = false;
                let problem = Problem::invalid(format!(
                    "system `{sys}` is abstract: flows use systems that extend it"
                ));
                fl.report(ck, rel, problem);
            }
            None => {
                ok = false;
                if !fl.project.is_broken("systems", sys) {
                    let known = systems.concrete.iter().copied();
                    fl.report(ck, rel, Problem::unknown_name("system", sys, known));
                }
            }
        }
    }
    ok.then_some((from.0, to.0))
}

/// The flow's conflict rule for the copy between `from` and `to`: an owner named as the flow
/// file writes a side (`{{each}}`) is that side's system.
fn copy_conflict(fl: &FlowDecl, source: &CompiledSystem, from: &str, to: &str) -> Option<Conflict> {
    let f = fl.f;
    let ends = Ends {
        declared_from: &f.from,
        declared_to: &f.to,
        from,
        to,
    };
    match (&f.conflict, fl.entity) {
        (Some(c), Some(entity)) => Some(Conflict::compile(c, &ends, source.role, entity)),
        _ => None,
    }
}

/// One compiled copy of a checked flow, between `from` and `to`.
fn build_copy(
    fl: &FlowDecl,
    checked: &Checked,
    each: Option<&str>,
    source: &CompiledSystem,
    from: String,
    to: String,
) -> Flow {
    let (f, name, project) = (fl.f, fl.name, fl.project);
    let id = match each {
        Some(s) => format!("{name}.{s}"),
        None => name.to_string(),
    };
    let then = resolve_chained(project, &checked.then, each);
    let requires = resolve_chained(project, &checked.requires, each);
    let conflict = copy_conflict(fl, source, &from, &to);
    let after_export = source
        .entities
        .get(&f.entity)
        .map(|src| PostAction::compile(&f.after_export, src))
        .unwrap_or_default();
    Flow {
        id,
        name: name.to_string(),
        description: f.description.clone(),
        enabled: f.enabled,
        entity: f.entity.clone(),
        direction: f.direction,
        mode: f.mode,
        fields: f.fields.clone(),
        skip_nulls: f.skip_nulls,
        webhook: f.trigger.webhook.clone(),
        on_status: f.trigger.on_status.as_ref().map(Into::into),
        on_transition: f.trigger.on_transition.as_ref().map(Into::into),
        incremental: checked.incremental.clone(),
        conflict,
        after_export,
        allow_edit_after_export: f.allow_edit_after_export,
        export_once: f.export_once,
        after: f.after.clone(),
        declared: DeclaredFlow::new(f.clone()),
        from,
        to,
        match_key: checked.key.clone(),
        normalize: key_steps(fl.entity, &checked.key, f),
        filter: checked.filter.clone(),
        schedule: checked.schedule.clone(),
        reconcile_schedule: checked.reconcile_schedule.clone(),
        reconcile_corrects: f.reconcile.as_ref().is_none_or(|r| r.correct),
        then,
        requires,
    }
}

/// How a flow's match keys are normalised: the match field's own normalisation (what its
/// canonical records carry), then the flow's `match.normalize`. Every key the flow meets —
/// read, required, referenced, looked up, named on the command line or by a webhook — goes
/// through the same steps, so one record never has two keys.
fn key_steps(
    entity: Option<&Arc<Entity>>,
    key: &str,
    f: &FlowConfig,
) -> Vec<crate::config::model::Normalize> {
    let mut steps: Vec<_> = entity
        .and_then(|e| e.fields.get(key))
        .map(|c| c.normalize.clone())
        .unwrap_or_default();
    if let Some(m) = &f.match_key {
        steps.extend(m.normalize.iter().copied());
    }
    steps
}

/// Flows chained to a copy (`then`, `requires`): one copied per shop resolves to the copy
/// for the same shop.
fn resolve_chained<T: Clone>(
    project: &ProjectConfig,
    chained: &[(String, T)],
    each: Option<&str>,
) -> Vec<(String, T)> {
    let resolve = |target: &str| match (each, project.flows.get(target)) {
        (Some(s), Some(d)) if d.value.for_each.iter().any(|x| x == s) => format!("{target}.{s}"),
        _ => target.to_string(),
    };
    chained
        .iter()
        .map(|(target, with)| (resolve(target), with.clone()))
        .collect()
}

/// The operations a flow needs exist on both sides, its post-actions exist on its source,
/// and its conflict rule fits the systems.
fn check_sides(ck: &mut Checker, fl: &FlowDecl, from: &CompiledSystem, to: &CompiledSystem) {
    let entity = &fl.f.entity;
    let (Some(src), Some(dst)) = (from.entities.get(entity), to.entities.get(entity)) else {
        for (sys, rel) in [(from, "from"), (to, "to")] {
            if !sys.entities.contains_key(entity) {
                let known = sys.entities.keys().map(String::as_str);
                let problem = Problem::unresolved(format!(
                    "system `{}` does not declare entity `{entity}`",
                    sys.name
                ))
                .with_names(entity, known);
                fl.report(ck, rel, problem);
            }
        }
        return;
    };
    let sides = Sides { from, to, src, dst };
    check_operations(ck, fl, &sides);
    check_post_actions(ck, fl, &sides);
    check_conflict_systems(ck, fl, &sides);
}

/// The two systems of one flow copy, each with its mapping of the flow's entity.
struct Sides<'a> {
    from: &'a CompiledSystem,
    to: &'a CompiledSystem,
    src: &'a SystemEntity,
    dst: &'a SystemEntity,
}

/// The operations the flow's direction and mode need.
fn check_operations(ck: &mut Checker, fl: &FlowDecl, sides: &Sides) {
    let f = fl.f;
    let Sides { from, to, src, dst } = sides;
    let mut need = |sys: &CompiledSystem, role: &str, present: bool, why: &str, rel: &str| {
        if !present {
            let problem = Problem::invalid(format!(
                "system `{}` has no `{role}` operation for entity `{}`, which {why}",
                sys.name, f.entity
            ));
            fl.report(ck, rel, problem);
        }
    };
    need(
        from,
        "list",
        src.list.is_some(),
        "the flow reads from",
        "from",
    );
    // An export-once create matches through its own bindings; anything else must be able to
    // find existing target records.
    let create_once = f.export_once && f.mode == SyncMode::Create;
    let can_match = create_once || dst.lookup.is_some() || dst.list.is_some();
    need(to, "lookup` or `list", can_match, "matching needs", "to");
    let mode_needs = "the flow's mode needs";
    if matches!(
        f.mode,
        SyncMode::Create | SyncMode::Upsert | SyncMode::CreateMissing
    ) {
        need(to, "create", dst.create.is_some(), mode_needs, "mode");
    }
    if matches!(f.mode, SyncMode::Update | SyncMode::Upsert) {
        need(to, "update", dst.update.is_some(), mode_needs, "mode");
    }
    if f.direction == Direction::Bidirectional {
        let why = "a bidirectional flow needs";
        need(from, "update", src.update.is_some(), why, "direction");
        need(to, "list", dst.list.is_some(), why, "direction");
    }
}

/// The actions run on the source after an export exist there.
fn check_post_actions(ck: &mut Checker, fl: &FlowDecl, sides: &Sides) {
    for (i, a) in fl.f.after_export.iter().enumerate() {
        if !sides.src.actions.contains_key(&a.action) {
            let what = format!("action of `{}`", sides.from.name);
            let known = sides.src.actions.keys().map(String::as_str);
            let problem = Problem::unknown_name(&what, &a.action, known);
            fl.report(ck, &format!("after_export.{i}.action"), problem);
        }
    }
}

/// A conflict rule that names a role needs a system with it; owners are the flow's systems.
fn check_conflict_systems(ck: &mut Checker, fl: &FlowDecl, sides: &Sides) {
    let f = fl.f;
    let Some(c) = &f.conflict else {
        return;
    };
    let (from, to) = (sides.from, sides.to);
    let need_role = match c.rule {
        ConflictRule::ErpWins => Some(SystemRole::Erp),
        ConflictRule::ShopWins => Some(SystemRole::Shop),
        _ => None,
    };
    if let Some(r) = need_role
        && ![from.role, to.role].contains(&Some(r))
    {
        let problem = Problem::conflict(format!(
            "neither `{}` nor `{}` has `role: {}`",
            from.name,
            to.name,
            if r == SystemRole::Erp { "erp" } else { "shop" }
        ));
        fl.report(ck, "conflict.rule", problem);
    }
    for (field, owner) in &c.owners {
        if owner != &from.name && owner != &to.name && owner != &f.from && owner != &f.to {
            let known = [from.name.as_str(), to.name.as_str()];
            let problem = Problem::unknown_name("owner system", owner, known);
            fl.report(ck, &format!("conflict.owners.{field}"), problem);
        }
    }
}
