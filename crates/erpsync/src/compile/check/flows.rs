//! Flows: each flow (and each per-shop copy of an `{{each}}` flow) checked against the
//! systems and entities it names: its sides' operations, fields, filter, triggers, chains
//! (`requires`, `then`) and conflict rules, then compiled with typed settings.

use super::systems::CompiledSystem;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::Checker;
use crate::compile::{Entity, Flow};
use crate::config::model::{ConflictRule, Direction, FlowConfig, SyncMode, SystemRole};
use crate::config::{Code, ProjectConfig};
use crate::expr::JsonPath;

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
                // The whole member chain, then what comes after and before it.
                let mut after = end;
                while after < chars.len()
                    && (chars[after].is_alphanumeric() || matches!(chars[after], '_' | '.'))
                {
                    after += 1;
                }
                let rest: String = chars[after..].iter().collect::<String>();
                let rest = rest.trim_start();
                let before: String = chars[..i].iter().collect::<String>();
                let before = before.trim_end();
                let alone_after = rest.is_empty()
                    || rest.starts_with("&&")
                    || rest.starts_with("||")
                    || rest.starts_with(')');
                let alone_before = before.is_empty()
                    || before.ends_with("&&")
                    || before.ends_with("||")
                    || (before.ends_with('(') && !before.ends_with("!("));
                out.push((name, alone_after && alone_before));
            }
            i = end;
            continue;
        }
        i += 1;
    }
    out
}

const EACH: &str = "{{each}}";

pub(super) fn compile_flows(
    ck: &mut Checker,
    entities: &BTreeMap<String, Arc<Entity>>,
    systems: &BTreeMap<String, CompiledSystem>,
    webhooks: &[String],
) -> Vec<Arc<Flow>> {
    let project = ck.project;
    let concrete: Vec<&str> = systems
        .iter()
        .filter(|(_, s)| !s.is_abstract)
        .map(|(k, _)| k.as_str())
        .collect();
    let flow_names: Vec<&str> = project.flows.keys().map(String::as_str).collect();
    let mut out = Vec::new();
    for (name, decl) in &project.flows {
        let (file, base) = (decl.file, decl.path.clone());
        let f = &decl.value;
        let entity = entities.get(&f.entity);
        if entity.is_none() && !project.is_broken("entities", &f.entity) {
            let known: Vec<&str> = entities.keys().map(String::as_str).collect();
            ck.unknown(file, &format!("{base}.entity"), "entity", &f.entity, known);
        }
        let field_names: Vec<&str> = entity
            .map(|e| e.fields.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let check_field = |ck: &mut Checker, path: &str, field: &str| {
            if let Some(e) = entity
                && !e.fields.contains_key(field)
            {
                ck.unknown(
                    file,
                    path,
                    &format!("field of entity `{}`", e.name),
                    field,
                    field_names.iter().copied(),
                );
            }
        };

        // Copies: one per `for_each` system, or the flow itself.
        let copies: Vec<(Option<&str>, usize)> = if f.for_each.is_empty() {
            if f.from.contains(EACH) || f.to.contains(EACH) {
                ck.at(
                    file,
                    Code::Conflict,
                    &format!("{base}.from"),
                    "`{{each}}` needs a `for_each` list".into(),
                );
            }
            vec![(None, 0)]
        } else {
            if !f.from.contains(EACH) && !f.to.contains(EACH) {
                ck.at(
                    file,
                    Code::Conflict,
                    &format!("{base}.for_each"),
                    "`for_each` needs `{{each}}` in `from` or `to`".into(),
                );
            }
            f.for_each
                .iter()
                .enumerate()
                .map(|(i, s)| (Some(s.as_str()), i))
                .collect()
        };

        let key = f
            .match_key
            .as_ref()
            .and_then(|m| m.key.clone())
            .or_else(|| entity.map(|e| e.key.clone()))
            .unwrap_or_default();
        if let Some(k) = f.match_key.as_ref().and_then(|m| m.key.as_deref()) {
            check_field(ck, &format!("{base}.match.key"), k);
        }
        for (i, field) in f.fields.iter().enumerate() {
            check_field(ck, &format!("{base}.fields.{i}"), field);
        }
        let filter = f
            .filter
            .as_ref()
            .and_then(|t| ck.predicate(file, &format!("{base}.filter"), t));
        if let (Some(text), Some(_)) = (&f.filter, &filter) {
            let at = format!("{base}.filter");
            for (member, bare) in filter_members(text) {
                check_field(ck, &at, &member);
                if bare {
                    let d = ck
                        .project
                        .at(
                            file,
                            Code::FilterNull,
                            &at,
                            format!(
                                "`@.{member}` only asks whether the record has `{member}`: it \
                                 holds when `{member}` is null or empty too"
                            ),
                        )
                        .with_help(format!(
                            "to leave out records without a value, write `@.{member} != null` \
                             (and `@.{member} != ''` for empty text)"
                        ));
                    ck.diags.push(d);
                }
            }
        }
        let schedule = f.trigger.schedule.as_ref().and_then(|s| {
            ck.schedule(
                file,
                &format!("{base}.trigger.schedule"),
                s,
                f.trigger.timezone.as_deref(),
            )
        });
        if f.trigger.schedule.is_none()
            && let Some(tz) = &f.trigger.timezone
            && tz.parse::<chrono_tz::Tz>().is_err()
        {
            ck.at(
                file,
                Code::Schedule,
                &format!("{base}.trigger.timezone"),
                format!("unknown time zone `{tz}`"),
            );
        }
        if let Some(s) = &f.trigger.on_status {
            check_field(ck, &format!("{base}.trigger.on_status.field"), &s.field);
        }
        if let Some(t) = &f.trigger.on_transition {
            check_field(ck, &format!("{base}.trigger.on_transition.field"), &t.field);
        }
        if let Some(w) = &f.trigger.webhook
            && !webhooks.contains(w)
        {
            ck.unknown(
                file,
                &format!("{base}.trigger.webhook"),
                "webhook (under `daemon.webhooks`)",
                w,
                webhooks.iter().map(String::as_str),
            );
        }
        let incremental_start = f.incremental.as_ref().and_then(|inc| {
            let parsed = crate::expr::parse_datetime(&inc.start);
            if parsed.is_none() {
                ck.at(
                    file,
                    Code::Invalid,
                    &format!("{base}.incremental.start"),
                    format!(
                        "invalid start `{}`: expected RFC 3339 or YYYY-MM-DD",
                        inc.start
                    ),
                );
            }
            parsed
        });
        if let Some(r) = &f.reconcile
            && !r.correct
            && f.direction == Direction::Bidirectional
        {
            ck.at(
                file,
                Code::Conflict,
                &format!("{base}.reconcile.correct"),
                "`correct: false` reports a one-way flow's drift without writing; a \
                 bidirectional flow's reconciliation merges both sides and has no drift to \
                 leave alone"
                    .into(),
            );
        }
        let reconcile_schedule = f.reconcile.as_ref().and_then(|r| {
            ck.schedule(
                file,
                &format!("{base}.reconcile.schedule"),
                &r.schedule,
                f.trigger.timezone.as_deref(),
            )
        });
        if let Some(c) = &f.conflict {
            if let Some(t) = &c.timestamp_field {
                check_field(ck, &format!("{base}.conflict.timestamp_field"), t);
            }
            if c.rule == ConflictRule::NewestWins
                && c.timestamp_field.is_none()
                && entity.is_some_and(|e| e.updated_at.is_none())
            {
                ck.at(
                    file,
                    Code::Invalid,
                    &format!("{base}.conflict"),
                    "`newest_wins` needs `timestamp_field` or an entity with `updated_at`".into(),
                );
            }
            for field in c.owners.keys() {
                check_field(ck, &format!("{base}.conflict.owners.{field}"), field);
            }
        }
        let then: Vec<(String, Option<JsonPath>)> = f
            .then
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                if !project.flows.contains_key(&c.flow) {
                    ck.unknown(
                        file,
                        &format!("{base}.then.{i}.flow"),
                        "flow",
                        &c.flow,
                        flow_names.iter().copied(),
                    );
                    return None;
                }
                let keys = c
                    .keys
                    .as_ref()
                    .and_then(|k| ck.path(file, &format!("{base}.then.{i}.keys"), k));
                Some((c.flow.clone(), keys))
            })
            .collect();
        for (i, a) in f.after.iter().enumerate() {
            if !project.flows.contains_key(a) {
                ck.unknown(
                    file,
                    &format!("{base}.after.{i}"),
                    "flow",
                    a,
                    flow_names.iter().copied(),
                );
            }
        }
        let requires: Vec<(String, JsonPath)> = f
            .requires
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                if !project.flows.contains_key(&r.flow) {
                    ck.unknown(
                        file,
                        &format!("{base}.requires.{i}.flow"),
                        "flow",
                        &r.flow,
                        flow_names.iter().copied(),
                    );
                    return None;
                }
                let required = &project.flows[&r.flow].value;
                if f.enabled && !required.enabled {
                    let d = ck.at(
                        file,
                        Code::Conflict,
                        &format!("{base}.requires.{i}.flow"),
                        format!(
                            "flow `{name}` requires flow `{}`, which is disabled and never runs",
                            r.flow
                        ),
                    );
                    d.help = Some(format!(
                        "enable `{}` (a flow without `schedule` runs only when needed), or \
                         disable `{name}` too",
                        r.flow
                    ));
                }
                let p = ck.path(file, &format!("{base}.requires.{i}.record"), &r.record)?;
                Some((r.flow.clone(), p))
            })
            .collect();

        for (each, i) in copies {
            let (from, to) = match each {
                Some(s) => (f.from.replace(EACH, s), f.to.replace(EACH, s)),
                None => (f.from.clone(), f.to.clone()),
            };
            let mut ok = true;
            for (side, sys, path) in [
                (
                    "from",
                    &from,
                    if each.is_some() && f.from.contains(EACH) {
                        format!("{base}.for_each.{i}")
                    } else {
                        format!("{base}.from")
                    },
                ),
                (
                    "to",
                    &to,
                    if each.is_some() && f.to.contains(EACH) {
                        format!("{base}.for_each.{i}")
                    } else {
                        format!("{base}.to")
                    },
                ),
            ] {
                let _ = side;
                match systems.get(sys.as_str()) {
                    Some(s) if !s.is_abstract => {}
                    Some(_) => {
                        ok = false;
                        ck.at(
                            file,
                            Code::Invalid,
                            &path,
                            format!("system `{sys}` is abstract: flows use systems that extend it"),
                        );
                    }
                    None => {
                        ok = false;
                        if !project.is_broken("systems", sys) {
                            ck.unknown(file, &path, "system", sys, concrete.iter().copied());
                        }
                    }
                }
            }
            if !ok || entity.is_none() {
                continue;
            }
            check_sides(ck, file, &base, f, &systems[&from], &systems[&to]);
            let id = match each {
                Some(s) => format!("{name}.{s}"),
                None => name.clone(),
            };
            let chained = then
                .iter()
                .map(|(target, keys)| (resolve_chained(project, target, each), keys.clone()))
                .collect();
            let required = requires
                .iter()
                .map(|(target, p)| (resolve_chained(project, target, each), p.clone()))
                .collect();
            // An owner named as the flow file writes a side (`{{each}}`) is that side's system.
            let conflict = f.conflict.clone().map(|mut c| {
                for owner in c.owners.values_mut() {
                    if *owner == f.from {
                        owner.clone_from(&from);
                    } else if *owner == f.to {
                        owner.clone_from(&to);
                    }
                }
                c
            });
            out.push(Arc::new(Flow {
                id,
                name: name.clone(),
                description: f.description.clone(),
                enabled: f.enabled,
                entity: f.entity.clone(),
                direction: f.direction,
                mode: f.mode,
                fields: f.fields.clone(),
                skip_nulls: f.skip_nulls,
                webhook: f.trigger.webhook.clone(),
                on_status: f.trigger.on_status.clone(),
                on_transition: f.trigger.on_transition.clone(),
                incremental: f.incremental.clone(),
                conflict,
                after_export: f.after_export.clone(),
                allow_edit_after_export: f.allow_edit_after_export,
                export_once: f.export_once,
                after: f.after.clone(),
                declared: f.clone(),
                from,
                to,
                match_key: key.clone(),
                normalize: key_steps(entity, &key, f),
                filter: filter.clone(),
                schedule: schedule.clone(),
                reconcile_schedule: reconcile_schedule.clone(),
                reconcile_corrects: f.reconcile.as_ref().is_none_or(|r| r.correct),
                incremental_start,
                then: chained,
                requires: required,
            }));
        }
    }
    out
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

/// A chained flow copied per shop resolves to the copy for the same shop.
fn resolve_chained(project: &ProjectConfig, target: &str, each: Option<&str>) -> String {
    match (each, project.flows.get(target)) {
        (Some(s), Some(d)) if d.value.for_each.iter().any(|x| x == s) => format!("{target}.{s}"),
        _ => target.to_string(),
    }
}

/// The operations a flow needs exist on both sides, and the conflict rule fits the systems.
fn check_sides(
    ck: &mut Checker,
    file: usize,
    base: &str,
    f: &FlowConfig,
    from: &CompiledSystem,
    to: &CompiledSystem,
) {
    let entity = &f.entity;
    let need = |ck: &mut Checker,
                sys: &CompiledSystem,
                role: &str,
                present: bool,
                why: &str,
                path: &str| {
        if !present {
            ck.at(
                file,
                Code::Invalid,
                path,
                format!(
                    "system `{}` has no `{role}` operation for entity `{entity}`, which {why}",
                    sys.name
                ),
            );
        }
    };
    let (Some(src), Some(dst)) = (from.entities.get(entity), to.entities.get(entity)) else {
        for (sys, path) in [(from, "from"), (to, "to")] {
            if !sys.entities.contains_key(entity) {
                let known: Vec<&str> = sys.entities.keys().map(String::as_str).collect();
                let d = ck
                    .project
                    .at(
                        file,
                        Code::UnknownName,
                        &format!("{base}.{path}"),
                        format!("system `{}` does not declare entity `{entity}`", sys.name),
                    )
                    .with_names(entity, known);
                ck.diags.push(d);
            }
        }
        return;
    };
    need(
        ck,
        from,
        "list",
        src.list.is_some(),
        "the flow reads from",
        &format!("{base}.from"),
    );
    // An export-once create matches through its own bindings; anything else must be able to
    // find existing target records.
    let create_once = f.export_once && f.mode == SyncMode::Create;
    need(
        ck,
        to,
        "lookup` or `list",
        create_once || dst.lookup.is_some() || dst.list.is_some(),
        "matching needs",
        &format!("{base}.to"),
    );
    if matches!(
        f.mode,
        SyncMode::Create | SyncMode::Upsert | SyncMode::CreateMissing
    ) {
        need(
            ck,
            to,
            "create",
            dst.create.is_some(),
            "the flow's mode needs",
            &format!("{base}.mode"),
        );
    }
    if matches!(f.mode, SyncMode::Update | SyncMode::Upsert) {
        need(
            ck,
            to,
            "update",
            dst.update.is_some(),
            "the flow's mode needs",
            &format!("{base}.mode"),
        );
    }
    if f.direction == Direction::Bidirectional {
        need(
            ck,
            from,
            "update",
            src.update.is_some(),
            "a bidirectional flow needs",
            &format!("{base}.direction"),
        );
        need(
            ck,
            to,
            "list",
            dst.list.is_some(),
            "a bidirectional flow needs",
            &format!("{base}.direction"),
        );
    }
    for (i, a) in f.after_export.iter().enumerate() {
        if !src.actions.contains_key(&a.action) {
            ck.unknown(
                file,
                &format!("{base}.after_export.{i}.action"),
                &format!("action of `{}`", from.name),
                &a.action,
                src.actions.keys().map(String::as_str),
            );
        }
    }
    if let Some(c) = &f.conflict {
        let roles = [from.role, to.role];
        let need_role = match c.rule {
            ConflictRule::ErpWins => Some(SystemRole::Erp),
            ConflictRule::ShopWins => Some(SystemRole::Shop),
            _ => None,
        };
        if let Some(r) = need_role
            && !roles.contains(&Some(r))
        {
            ck.at(
                file,
                Code::Conflict,
                &format!("{base}.conflict.rule"),
                format!(
                    "neither `{}` nor `{}` has `role: {}`",
                    from.name,
                    to.name,
                    if r == SystemRole::Erp { "erp" } else { "shop" }
                ),
            );
        }
        for (field, owner) in &c.owners {
            if owner != &from.name && owner != &to.name && owner != &f.from && owner != &f.to {
                ck.unknown(
                    file,
                    &format!("{base}.conflict.owners.{field}"),
                    "owner system",
                    owner,
                    [from.name.as_str(), to.name.as_str()],
                );
            }
        }
    }
}
