//! The checker: resolves every reference, compiles every expression and collects every
//! problem with its place.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::mapping::Mapping;
use super::webhook::Webhook;
use super::{CanonField, Entity, Flow, Project, RecordId, Schedule, SystemDef, SystemEntity};
use crate::config::model::{
    CanonicalFieldConfig, ConflictRule, Direction, FlowConfig, SyncMode, SystemConfig, SystemRole,
};
use crate::config::{Code, Decl, Diagnostic, ProjectConfig};
use crate::connector::request_texts;
use crate::connector::{CompileProblem, Operation, ProblemKind, SystemSpec, lint_rules};
use crate::expr::{JsonPath, Predicate};

struct Checker<'a> {
    project: &'a ProjectConfig,
    diags: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn at(&mut self, file: usize, code: Code, path: &str, message: String) -> &mut Diagnostic {
        let d = self.project.at(file, code, path, message);
        self.diags.push(d);
        self.diags.last_mut().unwrap()
    }

    fn unknown<'n>(
        &mut self,
        file: usize,
        path: &str,
        what: &str,
        name: &str,
        known: impl IntoIterator<Item = &'n str>,
    ) {
        let d = self
            .project
            .at(
                file,
                Code::UnknownName,
                path,
                format!("unknown {what} `{name}`"),
            )
            .with_names(name, known);
        self.diags.push(d);
    }

    fn path(&mut self, file: usize, path: &str, text: &str) -> Option<JsonPath> {
        match JsonPath::parse(text) {
            Ok(p) => Some(p),
            Err(e) => {
                self.at(file, Code::JsonPath, path, e.to_string());
                None
            }
        }
    }

    fn predicate(&mut self, file: usize, path: &str, text: &str) -> Option<Predicate> {
        match Predicate::parse(text) {
            Ok(p) => Some(p),
            Err(e) => {
                self.at(
                    file,
                    Code::JsonPath,
                    path,
                    format!("invalid condition: {e}"),
                );
                None
            }
        }
    }

    fn schedule(
        &mut self,
        file: usize,
        path: &str,
        expr: &str,
        tz: Option<&str>,
    ) -> Option<Schedule> {
        match Schedule::parse(expr, tz) {
            Ok(s) => Some(s),
            Err(e) => {
                self.at(file, Code::Schedule, path, e.to_string());
                None
            }
        }
    }

    fn problems(&mut self, file: usize, base: &str, problems: Vec<CompileProblem>) {
        for p in problems {
            let code = match p.kind {
                ProblemKind::JsonPath => Code::JsonPath,
                ProblemKind::Template => Code::Template,
                ProblemKind::Invalid => Code::Invalid,
                ProblemKind::Covers429 => Code::Covers429,
            };
            let d = self.at(file, code, &format!("{base}.{}", p.path), p.message);
            if code == Code::Covers429 {
                d.help = Some(
                    "say so with `- { status: [429], action: rate_limited }` before this rule, \
                     or name 429 in a rule of its own to handle it otherwise"
                        .into(),
                );
            }
        }
    }
}

/// Compiles a loaded project. The project is returned only when there is no problem at all.
pub fn compile(project: &ProjectConfig) -> (Option<Project>, Vec<Diagnostic>) {
    let mut ck = Checker {
        project,
        diags: Vec::new(),
    };
    let entities = compile_entities(&mut ck);
    let systems = compile_systems(&mut ck, &entities);
    let webhooks: Vec<String> = project
        .daemon
        .as_ref()
        .map(|d| d.value.webhooks.keys().cloned().collect())
        .unwrap_or_default();
    let mut compiled_webhooks = BTreeMap::new();
    if let Some(d) = &project.daemon {
        for (name, w) in &d.value.webhooks {
            match Webhook::compile(name, w) {
                Ok(hook) => {
                    compiled_webhooks.insert(name.clone(), Arc::new(hook));
                }
                Err(problems) => {
                    for (at, code, message) in problems {
                        ck.at(
                            d.file,
                            code,
                            &format!("daemon.webhooks.{name}.{at}"),
                            message,
                        );
                    }
                }
            }
        }
    }
    let flows = compile_flows(&mut ck, &entities, &systems, &webhooks);
    if let Some(d) = &project.daemon
        && let Some(n) = &d.value.notify
    {
        check_notify(&mut ck, d.file, n, &flows);
    }
    // A folder of shared definitions declares systems (templates) or entities; a project
    // with no system and no flow at all is a wrong path or an empty file.
    if project.systems.is_empty()
        && project.flows.is_empty()
        && !project.files.is_empty()
        && project.broken.is_empty()
        && ck.diags.iter().all(|d| !d.is_error())
    {
        let d = ck
            .project
            .at(
                0,
                Code::EmptyProject,
                "",
                "the project declares no systems and no flows: there is nothing to run".into(),
            )
            .with_help(
                "point erpsync at the folder of the project's flow files; a folder shared by \
                 several projects is checked through the projects that `include` it",
            );
        ck.diags.push(d);
    }

    let mut diags = ck.diags;
    let mut seen = HashSet::new();
    diags.retain(|d| seen.insert((d.file.clone(), d.line, d.col, d.message.clone())));
    diags.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
    if diags.iter().any(Diagnostic::is_error) {
        return (None, diags);
    }
    let project = Project {
        root: project.root.clone(),
        vars: Value::Object(project.vars.clone()),
        entities,
        systems: systems
            .into_iter()
            .filter_map(|(k, s)| Some((k, s.into_def()?)))
            .collect(),
        flows,
        webhooks: compiled_webhooks,
        state_url: project.state.as_ref().map(|s| s.value.url.clone()),
        daemon: project.daemon.as_ref().map(|d| d.value.clone()),
    };
    (Some(project), diags)
}

fn compile_entities(ck: &mut Checker) -> BTreeMap<String, Arc<Entity>> {
    let mut out = BTreeMap::new();
    for (name, decl) in &ck.project.entities {
        let (file, path) = (decl.file, decl.path.clone());
        let e = &decl.value;
        let names: Vec<&str> = e.fields.keys().map(String::as_str).collect();
        if !e.fields.contains_key(&e.key) {
            ck.unknown(file, &format!("{path}.key"), "field", &e.key, names.clone());
        }
        if let Some(u) = &e.updated_at
            && !e.fields.contains_key(u)
        {
            ck.unknown(
                file,
                &format!("{path}.updated_at"),
                "field",
                u,
                names.clone(),
            );
        }
        let fields = e
            .fields
            .iter()
            .map(|(k, f)| {
                let field = match f {
                    CanonicalFieldConfig::Type(t) => CanonField {
                        ty: *t,
                        scale: None,
                        normalize: Vec::new(),
                        volatile: false,
                    },
                    CanonicalFieldConfig::Full(s) => CanonField {
                        ty: s.field_type,
                        scale: s.scale,
                        normalize: s.normalize.clone(),
                        volatile: s.volatile,
                    },
                };
                (k.clone(), field)
            })
            .collect();
        out.insert(
            name.clone(),
            Arc::new(Entity {
                name: name.clone(),
                key: e.key.clone(),
                updated_at: e.updated_at.clone(),
                fields,
            }),
        );
    }
    out
}

/// A system as compiled: a concrete one that has no problem has its spec.
struct CompiledSystem {
    name: String,
    is_abstract: bool,
    role: Option<SystemRole>,
    config: SystemConfig,
    operations: BTreeMap<String, Arc<Operation>>,
    entities: BTreeMap<String, Arc<SystemEntity>>,
    spec: Option<Arc<SystemSpec>>,
}

impl CompiledSystem {
    /// The system as a project holds it; `None` for an abstract or a broken one.
    fn into_def(self) -> Option<Arc<SystemDef>> {
        Some(Arc::new(SystemDef {
            spec: self.spec?,
            name: self.name,
            role: self.role,
            config: self.config,
            operations: self.operations,
            entities: self.entities,
        }))
    }
}

/// The chain `[system, parent, grandparent…]`, or None on an unknown parent or a cycle (both
/// reported once, at the system that declares the bad `extends`).
fn ancestry<'a>(ck: &mut Checker<'a>, name: &'a str) -> Option<Vec<&'a str>> {
    let systems = &ck.project.systems;
    let mut chain = vec![name];
    let mut current = name;
    loop {
        let decl = &systems[current];
        let Some(parent) = decl.value.extends.as_deref() else {
            return Some(chain);
        };
        if !systems.contains_key(parent) {
            if current == name && !ck.project.is_broken("systems", parent) {
                let known: Vec<&str> = systems.keys().map(String::as_str).collect();
                ck.unknown(
                    decl.file,
                    &format!("{}.extends", decl.path),
                    "system",
                    parent,
                    known,
                );
            }
            return None;
        }
        if chain.contains(&parent) {
            if current == name || parent == name {
                ck.at(
                    decl.file,
                    Code::Conflict,
                    &format!("{}.extends", decl.path),
                    format!("`extends` forms a cycle: {} → {parent}", chain.join(" → ")),
                );
            }
            return None;
        }
        let parent_key = systems.get_key_value(parent).map(|(k, _)| k.as_str())?;
        chain.push(parent_key);
        current = parent_key;
    }
}

fn merge_systems(chain: &[&str], systems: &BTreeMap<String, Decl<SystemConfig>>) -> SystemConfig {
    let mut merged = SystemConfig::default();
    for name in chain.iter().rev() {
        let c = &systems[*name].value;
        merged.role = c.role.or(merged.role);
        merged.base_url = c.base_url.clone().or(merged.base_url);
        merged.auth = c.auth.clone().or(merged.auth);
        merged.headers.extend(c.headers.clone());
        merged.timeouts = c.timeouts.clone().or(merged.timeouts);
        merged.rate_limit = c.rate_limit.clone().or(merged.rate_limit);
        merged.retry = c.retry.clone().or(merged.retry);
        merged.circuit_breaker = c.circuit_breaker.clone().or(merged.circuit_breaker);
        // A child's rules are tried before the ones it inherits.
        let mut errors = c.errors.clone();
        errors.extend(std::mem::take(&mut merged.errors));
        merged.errors = errors;
        merged.vars.extend(c.vars.clone());
        merged.resolve.extend(c.resolve.clone());
        merged.operations.extend(c.operations.clone());
        merged.entities.extend(c.entities.clone());
    }
    merged.is_abstract = systems[chain[0]].value.is_abstract;
    merged.extends = systems[chain[0]].value.extends.clone();
    merged
}

fn compile_systems(
    ck: &mut Checker,
    entities: &BTreeMap<String, Arc<Entity>>,
) -> BTreeMap<String, CompiledSystem> {
    let project = ck.project;
    // What each system declares itself is compiled and checked once, at its own place.
    let mut operations: BTreeMap<(String, String), Arc<Operation>> = BTreeMap::new();
    // Systems whose own declaration has a problem.
    let mut declared_bad: HashSet<String> = HashSet::new();
    for (name, decl) in &project.systems {
        let (file, path) = (decl.file, decl.path.clone());
        let s = &decl.value;
        ck.problems(file, &path, lint_rules(&s.errors, "errors"));
        check_rule_messages(ck, file, &format!("{path}.errors"), &s.errors);
        for (op_name, op) in &s.operations {
            ck.problems(
                file,
                &format!("{path}.operations.{op_name}"),
                lint_rules(&op.errors, "errors"),
            );
            check_rule_messages(
                ck,
                file,
                &format!("{path}.operations.{op_name}.errors"),
                &op.errors,
            );
            match Operation::compile(op) {
                Ok(compiled) => {
                    operations.insert((name.clone(), op_name.clone()), Arc::new(compiled));
                }
                Err(problems) => {
                    ck.problems(file, &format!("{path}.operations.{op_name}"), problems)
                }
            }
        }
        // Address, auth, headers, error rules and limits: checked where they are declared.
        let problems = SystemSpec::check_declaration(s);
        if !problems.is_empty() {
            declared_bad.insert(name.clone());
        }
        ck.problems(file, &path, problems);
    }

    let mut out = BTreeMap::new();
    let mut checked_entities: HashSet<(String, String)> = HashSet::new();
    for (name, decl) in &project.systems {
        let Some(chain) = ancestry(ck, name) else {
            continue;
        };
        let merged = merge_systems(&chain, &project.systems);
        if !merged.is_abstract && merged.base_url.is_none() {
            ck.at(
                decl.file,
                Code::Invalid,
                &decl.path,
                format!("system `{name}` has no `base_url` (set it, or mark the system `abstract: true`)"),
            );
        }
        // Lookup tables of this system's mappings: the project's, overlaid by the tables in
        // the system's own (merged) `vars`, so a template system carries its tables and a
        // system extending it may replace one.
        let mut tables = project.vars.clone();
        for (k, v) in &merged.vars {
            if v.is_object() {
                tables.insert(k.clone(), v.clone());
            }
        }
        let tables = Arc::new(Value::Object(tables));
        let op_names: Vec<&str> = merged.operations.keys().map(String::as_str).collect();
        for (var, r) in &decl.value.resolve {
            if !merged.operations.contains_key(&r.operation)
                && !project.is_broken(&format!("operations.{name}"), &r.operation)
            {
                ck.unknown(
                    decl.file,
                    &format!("{}.resolve.{var}.operation", decl.path),
                    "operation",
                    &r.operation,
                    op_names.clone(),
                );
            }
        }
        let mut compiled_entities = BTreeMap::new();
        for (entity_name, se) in &merged.entities {
            // Report at the system that declares the entity mapping, once.
            let owner = chain
                .iter()
                .find(|s| {
                    project.systems[**s]
                        .value
                        .entities
                        .contains_key(entity_name)
                })
                .copied()
                .unwrap_or(name);
            let owner_decl = &project.systems[owner];
            let (file, base) = (
                owner_decl.file,
                format!("{}.entities.{entity_name}", owner_decl.path),
            );
            let report = checked_entities.insert((owner.to_string(), entity_name.clone()));
            let before = ck.diags.len();
            let canonical = entities.get(entity_name);
            if canonical.is_none() && !project.is_broken("entities", entity_name) {
                let known: Vec<&str> = entities.keys().map(String::as_str).collect();
                ck.unknown(file, &base, "entity", entity_name, known);
                if let Some(d) = ck.diags.last_mut() {
                    let pos = project.files[file].doc.key_pos(&base);
                    d.line = pos.line;
                    d.col = pos.col;
                }
            }
            let id = match RecordId::parse(&se.id) {
                Ok(id) => {
                    if let RecordId::Template(t) = &id
                        && t.variables()
                            .iter()
                            .any(|v| v[0] == "system" || v[0] == "vars")
                    {
                        ck.at(
                            file,
                            Code::UnknownName,
                            &format!("{base}.id"),
                            "an `id` template is rendered over the record alone: `system` and \
                             `vars` are not available there"
                                .into(),
                        );
                    }
                    Some(id)
                }
                Err(e) => {
                    let code = if se.id.starts_with('$') {
                        Code::JsonPath
                    } else {
                        Code::Template
                    };
                    ck.at(file, code, &format!("{base}.id"), e);
                    None
                }
            };
            for (role, op) in [
                ("list", &se.list),
                ("changes", &se.changes),
                ("lookup", &se.lookup),
                ("get", &se.get),
                ("create", &se.create),
                ("update", &se.update),
            ] {
                if let Some(op) = op
                    && !merged.operations.contains_key(op)
                    && !project.is_broken(&format!("operations.{owner}"), op)
                {
                    ck.unknown(
                        file,
                        &format!("{base}.{role}"),
                        "operation",
                        op,
                        op_names.clone(),
                    );
                }
                if let Some(op) = op
                    && matches!(role, "list" | "changes")
                    && merged
                        .operations
                        .get(op)
                        .is_some_and(|o| !o.steps.is_empty())
                {
                    ck.at(
                        file,
                        Code::Invalid,
                        &format!("{base}.{role}"),
                        format!(
                            "operation `{op}` has `steps`: a listing is one paginated request, \
                             steps are for lookups and writes"
                        ),
                    );
                }
            }
            for (action, op) in &se.actions {
                if !merged.operations.contains_key(op) {
                    ck.unknown(
                        file,
                        &format!("{base}.actions.{action}"),
                        "operation",
                        op,
                        op_names.clone(),
                    );
                }
            }
            let (read, read_problems) = Mapping::compile(&se.read);
            for (p, code, m) in read_problems {
                ck.at(file, code, &format!("{base}.read.{p}"), m);
            }
            if let Some(c) = canonical {
                let fields: Vec<&str> = c.fields.keys().map(String::as_str).collect();
                for f in se.read.keys() {
                    // `customer.email` fills field `customer`.
                    let top = f.split('.').next().unwrap_or(f);
                    if !c.fields.contains_key(top) {
                        let d = project
                            .at_key(
                                file,
                                Code::UnknownName,
                                &format!("{base}.read.{f}"),
                                format!("`{f}` is not a field of entity `{entity_name}`"),
                            )
                            .with_names(f, fields.iter().copied());
                        ck.diags.push(d);
                    }
                }
            }
            let (write, write_problems) = Mapping::compile(&se.write);
            for (p, code, m) in write_problems {
                ck.at(file, code, &format!("{base}.write.{p}"), m);
            }
            for mapping in [(&read, "read"), (&write, "write")] {
                for (p, ent) in mapping.0.referenced_entities() {
                    if !entities.contains_key(&ent) {
                        let known: Vec<&str> = entities.keys().map(String::as_str).collect();
                        ck.unknown(
                            file,
                            &format!("{base}.{}.{p}", mapping.1),
                            "entity",
                            &ent,
                            known,
                        );
                    }
                }
                for (p, table) in mapping.0.tables() {
                    if !matches!(tables.get(&table), Some(Value::Object(_))) {
                        let known: Vec<&str> = tables
                            .as_object()
                            .into_iter()
                            .flatten()
                            .filter(|(_, v)| v.is_object())
                            .map(|(k, _)| k.as_str())
                            .collect();
                        ck.unknown(
                            file,
                            &format!("{base}.{}.{p}", mapping.1),
                            "table in `vars`",
                            &table,
                            known,
                        );
                    }
                }
            }
            if !report {
                ck.diags.truncate(before);
            }
            if !merged.is_abstract {
                let scope = Scopes::of(project, &merged);
                let fields: Vec<String> = canonical
                    .map(|c| c.fields.keys().cloned().collect())
                    .unwrap_or_default();
                // `parent` is there for records of a nested listing only.
                let reading: Vec<(&str, &str)> = [
                    ("list", &se.list),
                    ("changes", &se.changes),
                    ("lookup", &se.lookup),
                ]
                .into_iter()
                .filter_map(|(role, op)| Some((role, op.as_deref()?)))
                .collect();
                let nested = reading.iter().any(|(_, op)| {
                    merged
                        .operations
                        .get(*op)
                        .and_then(|o| o.records.as_deref())
                        .is_some_and(crate::connector::RecordsPath::nests)
                });
                if !nested {
                    let ops = if reading.is_empty() {
                        "the entity has no `list`, `changes` or `lookup` operation".to_string()
                    } else {
                        let named: Vec<String> = reading
                            .iter()
                            .map(|(role, op)| format!("`{role}` (`{op}`)"))
                            .collect();
                        format!("the `records` of {} are not nested", named.join(", "))
                    };
                    for p in read.parent_reads() {
                        ck.at(
                            file,
                            Code::UnknownName,
                            &format!("{base}.read.{p}"),
                            format!(
                                "`$parent` reads the element a record of a nested listing sits \
                                 in (`records: $.products[*].variants[*]` gives each variant its \
                                 product); {ops}"
                            ),
                        );
                    }
                }
                for p in read.target_reads() {
                    ck.at(
                        file,
                        Code::UnknownName,
                        &format!("{base}.read.{p}"),
                        "`$target`, `{{target}}` and `merge` read the record the target holds \
                         when it is updated: they belong in a `write` mapping"
                            .to_string(),
                    );
                }
                for (p, var) in read.reads() {
                    // The native record's names are the system's own: only `system` and
                    // `vars` are known here.
                    scope.check(ck, file, &format!("{base}.read.{p}"), &var, None, "");
                }
                if canonical.is_some() {
                    for (p, var) in write.reads() {
                        // The target's current record has the system's own names.
                        if var
                            .first()
                            .is_some_and(|r| r == crate::compile::mapping::TARGET)
                        {
                            continue;
                        }
                        scope.check(
                            ck,
                            file,
                            &format!("{base}.write.{p}"),
                            &var,
                            Some((&fields, &format!("field of entity `{entity_name}`"))),
                            "a write mapping reads the canonical record: its fields, \
                             `system` and `vars`",
                        );
                    }
                }
            }
            if let Some(id) = id {
                compiled_entities.insert(
                    entity_name.clone(),
                    Arc::new(SystemEntity {
                        id,
                        list: se.list.clone(),
                        changes: se.changes.clone(),
                        lookup: se.lookup.clone(),
                        get: se.get.clone(),
                        create: se.create.clone(),
                        update: se.update.clone(),
                        actions: se.actions.clone(),
                        read,
                        write,
                        tables: tables.clone(),
                    }),
                );
            }
        }
        if !merged.is_abstract {
            let scope = Scopes::of(project, &merged);
            let known: Vec<String> = OPERATION_SCOPE.iter().map(|s| s.to_string()).collect();
            for (header, text) in &merged.headers {
                // Reported at the system that declares the header.
                let Some(owner) = chain
                    .iter()
                    .find(|s| project.systems[**s].value.headers.contains_key(header))
                else {
                    continue;
                };
                let od = &project.systems[*owner];
                let Ok(t) = crate::expr::Template::compile(text) else {
                    continue;
                };
                let at = format!("{}.headers.{header}", od.path);
                for var in t.variables() {
                    scope.check(
                        ck,
                        od.file,
                        &at,
                        &var,
                        Some((&known, "variable of request templates")),
                        "a system's headers are rendered with each request: `record`, `id`, \
                         `key`, `since`, `idempotency_key`, `system` and `vars`",
                    );
                }
            }
            for (op_name, op) in &merged.operations {
                let owner = chain
                    .iter()
                    .find(|s| project.systems[**s].value.operations.contains_key(op_name))
                    .copied()
                    .unwrap_or(name);
                let od = &project.systems[owner];
                for (rel, text) in operation_templates(op) {
                    let Ok(t) = crate::expr::Template::compile(&text) else {
                        continue;
                    };
                    let at = format!("{}.operations.{op_name}.{rel}", od.path);
                    let in_step = rel.starts_with("steps.");
                    for var in t.variables() {
                        if in_step && var[0] == "steps" {
                            // Checked against the earlier steps when the step compiles.
                            continue;
                        }
                        scope.check(
                            ck,
                            od.file,
                            &at,
                            &var,
                            Some((&known, "variable of operation templates")),
                            "operation templates read `record`, `id`, `key`, `since`, \
                             `idempotency_key`, `system` and `vars`, and a step's templates \
                             `steps` too",
                        );
                    }
                }
            }
        }
        let compiled_ops: BTreeMap<String, Arc<Operation>> = merged
            .operations
            .keys()
            .filter_map(|op| {
                let owner = chain
                    .iter()
                    .find(|s| project.systems[**s].value.operations.contains_key(op))?;
                let compiled = operations.get(&(owner.to_string(), op.clone()))?;
                Some((op.clone(), compiled.clone()))
            })
            .collect();
        // The spec the engine runs: compiled once, here. What could fail in it was reported
        // at the declarations above; should anything be left, it is reported at the system.
        let spec = if merged.is_abstract {
            None
        } else {
            match SystemSpec::compile(
                name,
                &merged,
                compiled_ops.clone(),
                Value::Object(project.vars.clone()),
            ) {
                Ok(spec) => Some(Arc::new(spec)),
                Err(problems) => {
                    let reported = merged.base_url.is_none()
                        || chain.iter().any(|s| declared_bad.contains(*s));
                    if !reported {
                        ck.problems(decl.file, &decl.path, problems);
                    }
                    None
                }
            }
        };
        out.insert(
            name.clone(),
            CompiledSystem {
                name: name.clone(),
                is_abstract: merged.is_abstract,
                role: merged.role,
                operations: compiled_ops,
                entities: compiled_entities,
                config: merged,
                spec,
            },
        );
    }
    out
}

/// The canonical fields a flow filter reads (`@.name`, first member only), each with
/// whether it stands alone as a test of existence (`@.awb && …`), which RFC 9535 makes true
/// for a null value as well.
fn filter_members(text: &str) -> Vec<(String, bool)> {
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

/// An error rule's `message` sees the response: `body` and `status`.
fn check_rule_messages(
    ck: &mut Checker,
    file: usize,
    base: &str,
    rules: &[crate::config::model::ErrorRuleConfig],
) {
    for (i, r) in rules.iter().enumerate() {
        let Some(Ok(t)) = r.message.as_deref().map(crate::expr::Template::compile) else {
            continue;
        };
        for var in t.variables() {
            if !crate::expr::scope::ERROR_MESSAGE.contains(&var[0].as_str()) {
                let d = ck
                    .project
                    .at(
                        file,
                        Code::UnknownName,
                        &format!("{base}.{i}.message"),
                        format!("`{}` is not a variable of error messages", var[0]),
                    )
                    .with_names(&var[0], crate::expr::scope::ERROR_MESSAGE.iter().copied())
                    .with_help("an error rule's message reads the response: `body` and `status`");
                ck.diags.push(d);
            }
        }
    }
}

/// What an operation's templates see (`CallInput` and the system).
const OPERATION_SCOPE: &[&str] = crate::expr::scope::OPERATION;

/// The strings of an operation that are templates, with their place in it.
fn operation_templates(op: &crate::config::model::OperationConfig) -> Vec<(String, String)> {
    let mut out = request_texts("", &op.path, &op.query, &op.headers, op.body.as_ref());
    for (i, step) in op.steps.iter().enumerate() {
        let at = format!("steps.{i}.");
        out.extend(request_texts(
            &at,
            &step.path,
            &step.query,
            &step.headers,
            step.body.as_ref(),
        ));
        if let Some(t) = &step.if_ {
            out.push((format!("{at}if"), t.clone()));
        }
    }
    out
}

/// The names a template may read besides its record: the system's `vars` and `resolve`
/// names (`{{system.NAME}}`) and the `vars` (`{{vars.NAME}}`).
struct Scopes {
    system: Vec<String>,
    vars: Vec<String>,
}

impl Scopes {
    fn of(project: &ProjectConfig, merged: &SystemConfig) -> Scopes {
        let mut system: Vec<String> = merged
            .vars
            .keys()
            .chain(merged.resolve.keys())
            .cloned()
            .collect();
        system.sort();
        system.dedup();
        let mut vars: Vec<String> = project
            .vars
            .keys()
            .chain(
                merged
                    .vars
                    .iter()
                    .filter(|(_, v)| v.is_object())
                    .map(|(k, _)| k),
            )
            .cloned()
            .collect();
        vars.sort();
        vars.dedup();
        Scopes { system, vars }
    }

    /// Checks one variable a template reads. `roots`: the names its record has (and what
    /// they are called), or `None` when they are not known (a native record).
    fn check(
        &self,
        ck: &mut Checker,
        file: usize,
        at: &str,
        var: &[String],
        roots: Option<(&Vec<String>, &str)>,
        place: &str,
    ) {
        let Some(root) = var.first() else {
            return;
        };
        let second = var.get(1);
        match root.as_str() {
            "system" => {
                if let Some(n) = second
                    && !self.system.contains(n)
                {
                    ck.unknown(
                        file,
                        at,
                        "system variable (in the system's `vars` or `resolve`)",
                        n,
                        self.system.iter().map(String::as_str),
                    );
                }
            }
            "vars" => {
                if let Some(n) = second
                    && !self.vars.contains(n)
                {
                    ck.unknown(
                        file,
                        at,
                        "variable (in `vars`)",
                        n,
                        self.vars.iter().map(String::as_str),
                    );
                }
            }
            _ => {
                if let Some((names, what)) = roots
                    && !names.contains(root)
                {
                    let mut known: Vec<&str> = names.iter().map(String::as_str).collect();
                    known.extend(["system", "vars"]);
                    let d = ck
                        .project
                        .at(
                            file,
                            Code::UnknownName,
                            at,
                            format!("`{root}` is not a {what}"),
                        )
                        .with_names(root, known)
                        .with_help(place);
                    ck.diags.push(d);
                }
            }
        }
    }
}

const EACH: &str = "{{each}}";

fn compile_flows(
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

/// `daemon.notify`: each channel has what its kind needs; rules name channels and flows that
/// exist, and carry the numbers their event needs.
fn check_notify(
    ck: &mut Checker,
    file: usize,
    n: &crate::config::model::NotifyConfig,
    flows: &[Arc<Flow>],
) {
    use crate::config::model::{NotifyChannelKind as Kind, NotifyOn};
    for (name, c) in &n.channels {
        let at = format!("daemon.notify.channels.{name}");
        let missing: &[(&str, bool)] = match c.kind {
            Kind::Webhook | Kind::Slack => &[("url", c.url.is_none())],
            Kind::Email => &[
                ("smtp", c.smtp.is_none()),
                ("from", c.from.is_none()),
                ("to", c.to.is_empty()),
            ],
        };
        for (key, absent) in missing {
            if *absent {
                ck.at(
                    file,
                    Code::Invalid,
                    &at,
                    format!("channel `{name}` needs `{key}`"),
                );
            }
        }
    }
    let mut flow_names: Vec<&str> = flows.iter().map(|f| f.id.as_str()).collect();
    flow_names.extend(flows.iter().map(|f| f.name.as_str()));
    flow_names.sort_unstable();
    flow_names.dedup();
    for (name, r) in &n.rules {
        let at = format!("daemon.notify.rules.{name}");
        if r.to.is_empty() {
            ck.at(
                file,
                Code::Invalid,
                &format!("{at}.to"),
                format!("rule `{name}` sends to no channel"),
            );
        }
        for c in &r.to {
            if !n.channels.contains_key(c) {
                ck.unknown(
                    file,
                    &format!("{at}.to"),
                    "channel",
                    c,
                    n.channels.keys().map(String::as_str),
                );
            }
        }
        for f in &r.flows {
            if !flow_names.contains(&f.as_str()) {
                ck.unknown(
                    file,
                    &format!("{at}.flows"),
                    "flow",
                    f,
                    flow_names.iter().copied(),
                );
            }
        }
        if r.on == NotifyOn::Failures && r.count.is_none_or(|c| c == 0) {
            ck.at(
                file,
                Code::Invalid,
                &format!("{at}.count"),
                format!("rule `{name}` on `failures` needs a `count` of at least 1"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::filter_members;
    use crate::compile::Project;
    use crate::config::Diagnostic;

    /// Compiles a project of one file.
    fn check(text: &str) -> (Option<Project>, Vec<Diagnostic>) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("project.yaml");
        std::fs::write(&file, text).unwrap();
        let (loaded, mut diags) = crate::config::load(&[file], &crate::config::env::ProcessEnv);
        let (project, more) = super::compile(&loaded);
        diags.extend(more);
        (project, diags)
    }

    #[test]
    fn every_problem_of_a_system_is_found_by_compiling_once_at_the_declaration_that_has_it() {
        let (project, diags) = check(
            "version: 1
systems:
  base:
    abstract: true
    headers: { X-Tenant: \"{{nope x}}\" }
    rate_limit: { per_second: 0 }
  shop:
    extends: base
    base_url: ftp://shop.example
  erp:
    extends: base
    base_url: https://erp.example
    retry: { max_attempts: 0 }
",
        );
        assert!(project.is_none());
        let mut paths: Vec<&str> = diags.iter().map(|d| d.path.as_str()).collect();
        paths.sort();
        // Inherited problems are told once, at `base`, not again at each system using them.
        assert_eq!(
            paths,
            [
                "systems.base.headers.X-Tenant",
                "systems.base.rate_limit.per_second",
                "systems.erp.retry.max_attempts",
                "systems.shop.base_url",
            ],
            "{diags:#?}"
        );
    }

    #[test]
    fn a_flow_copy_has_its_settings_typed_and_its_owners_named_by_system() {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../flows");
        let demo = std::fs::read_to_string(repo.join("demo/demo.yaml")).unwrap();
        let common = repo.join("common").display().to_string();
        let text = demo.replace("include: [../common]", &format!("include: [\"{common}\"]"))
            + "
  prices:
    entity: product
    from: \"{{each}}\"
    to: erp
    for_each: [shop]
    direction: bidirectional
    fields: [sku, price]
    conflict: { rule: owner, owners: { price: \"{{each}}\", sku: erp } }
    trigger: { webhook: shop_orders }
";
        let (project, diags) = check(&text);
        let project = project.unwrap_or_else(|| panic!("{diags:#?}"));
        let flow = project.flow("prices.shop").unwrap();
        assert_eq!((flow.from.as_str(), flow.to.as_str()), ("shop", "erp"));
        assert_eq!(flow.entity, "product");
        assert_eq!(flow.fields, ["sku", "price"]);
        assert_eq!(flow.webhook.as_deref(), Some("shop_orders"));
        let owners = &flow.conflict.as_ref().unwrap().owners;
        assert_eq!(
            owners["price"], "shop",
            "`{{{{each}}}}` is the copy's system"
        );
        assert_eq!(owners["sku"], "erp");
        // What the file declares stays as written, for `validate --print-config`.
        assert_eq!(flow.declared().from, "{{each}}");
    }

    #[test]
    fn a_valid_project_has_the_spec_of_every_concrete_system_and_none_of_a_template() {
        let (project, diags) = check(
            "version: 1
systems:
  base:
    abstract: true
    headers: { X-Tenant: acme }
    timeouts: { connect_ms: 1000, request_ms: 2000 }
  shop:
    extends: base
    base_url: https://shop.example/api
",
        );
        let project = project.unwrap_or_else(|| panic!("{diags:#?}"));
        assert_eq!(project.systems.keys().collect::<Vec<_>>(), ["shop"]);
        let spec = &project.systems["shop"].spec;
        assert_eq!(spec.base_url().as_str(), "https://shop.example/api");
        assert_eq!(spec.connect_timeout, std::time::Duration::from_secs(1));
        assert_eq!(spec.headers.len(), 1, "the template's header is inherited");
    }

    #[test]
    fn existence_tests_are_told_from_comparisons() {
        let m = |t: &str| filter_members(t);
        let s = |n: &str, b: bool| (n.to_string(), b);
        assert_eq!(
            m("@.awb && @.status == 'shipped'"),
            [s("awb", true), s("status", false)]
        );
        assert_eq!(m("@.awb != null"), [s("awb", false)]);
        assert_eq!(
            m("!@.awb || (@.total > 5)"),
            [s("awb", false), s("total", false)]
        );
        assert_eq!(m("@.customer.email"), [s("customer", true)]);
        assert_eq!(m("@.note == '@.x'"), [s("note", false)]);
    }
}
