//! Systems: each declaration checked where it is written (operations, error rules, address
//! and auth), then each concrete system merged with what it `extends`, its entity mappings
//! and templates checked against their scopes, and its spec compiled once.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::Checker;
use crate::compile::mapping::Mapping;
use crate::compile::{Entity, RecordId, SystemDef, SystemEntity};
use crate::config::model::{SystemConfig, SystemRole};
use crate::config::{Code, Decl, ProjectConfig};
use crate::connector::request_texts;
use crate::connector::{Operation, SystemSpec, lint_rules};

/// A system as compiled: a concrete one that has no problem has its spec.
pub(super) struct CompiledSystem {
    pub(super) name: String,
    pub(super) is_abstract: bool,
    pub(super) role: Option<SystemRole>,
    pub(super) config: SystemConfig,
    pub(super) operations: BTreeMap<String, Arc<Operation>>,
    pub(super) entities: BTreeMap<String, Arc<SystemEntity>>,
    pub(super) spec: Option<Arc<SystemSpec>>,
}

impl CompiledSystem {
    /// The system as a project holds it; `None` for an abstract or a broken one.
    pub(super) fn into_def(self) -> Option<Arc<SystemDef>> {
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
        merged.concurrency = c.concurrency.or(merged.concurrency);
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

pub(super) fn compile_systems(
    ck: &mut Checker,
    entities: &BTreeMap<String, Arc<Entity>>,
) -> BTreeMap<String, CompiledSystem> {
    let declared = check_declarations(ck);
    let mut checked_entities: HashSet<(String, String)> = HashSet::new();
    let mut out = BTreeMap::new();
    for name in ck.project.systems.keys() {
        if let Some(system) = compile_system(ck, entities, &declared, &mut checked_entities, name) {
            out.insert(name.clone(), system);
        }
    }
    out
}

/// What the systems declare themselves: their operations, compiled once at their own place,
/// and the systems whose own declaration has a problem.
struct Declared {
    operations: BTreeMap<(String, String), Arc<Operation>>,
    bad: HashSet<String>,
}

/// Checks each system where it is declared: error rules, operations, address, auth, headers
/// and limits.
fn check_declarations(ck: &mut Checker) -> Declared {
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

    Declared {
        operations,
        bad: declared_bad,
    }
}

/// What the checks of one concrete system share: the system merged with what it extends.
struct SystemCtx<'a> {
    project: &'a ProjectConfig,
    name: &'a str,
    /// The system, then what it extends, nearest first.
    chain: Vec<&'a str>,
    merged: SystemConfig,
    /// Lookup tables of its mappings (see `compile_system`).
    tables: Arc<Value>,
}

impl SystemCtx<'_> {
    /// The names of the operations the system has.
    fn op_names(&self) -> Vec<&str> {
        self.merged.operations.keys().map(String::as_str).collect()
    }
}

/// Compiles one system: merged with what it `extends`, its entity mappings and templates
/// checked, its spec compiled (none for an abstract system). `None` when its `extends` is
/// broken.
fn compile_system(
    ck: &mut Checker,
    entities: &BTreeMap<String, Arc<Entity>>,
    declared: &Declared,
    checked_entities: &mut HashSet<(String, String)>,
    name: &str,
) -> Option<CompiledSystem> {
    let project = ck.project;
    let decl = &project.systems[name];
    let name = project
        .systems
        .get_key_value(name)
        .map(|(k, _)| k.as_str())?;
    let chain = ancestry(ck, name)?;
    let merged = merge_systems(&chain, &project.systems);
    if !merged.is_abstract && merged.base_url.is_none() {
        ck.at(
            decl.file,
            Code::Invalid,
            &decl.path,
            format!(
                "system `{name}` has no `base_url` (set it, or mark the system `abstract: true`)"
            ),
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
    let sys = SystemCtx {
        project,
        name,
        chain,
        merged,
        tables,
    };
    let mut compiled_entities = BTreeMap::new();
    for (entity_name, se) in &sys.merged.entities {
        if let Some(e) =
            compile_system_entity(ck, &sys, entities, checked_entities, entity_name, se)
        {
            compiled_entities.insert(entity_name.clone(), e);
        }
    }
    if !sys.merged.is_abstract {
        check_request_templates(ck, &sys);
    }
    let SystemCtx { chain, merged, .. } = sys;
    let compiled_ops: BTreeMap<String, Arc<Operation>> = merged
        .operations
        .keys()
        .filter_map(|op| {
            let owner = chain
                .iter()
                .find(|s| project.systems[**s].value.operations.contains_key(op))?;
            let compiled = declared.operations.get(&(owner.to_string(), op.clone()))?;
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
                let reported =
                    merged.base_url.is_none() || chain.iter().any(|s| declared.bad.contains(*s));
                if !reported {
                    ck.problems(decl.file, &decl.path, problems);
                }
                None
            }
        }
    };
    Some(CompiledSystem {
        name: name.to_string(),
        is_abstract: merged.is_abstract,
        role: merged.role,
        operations: compiled_ops,
        entities: compiled_entities,
        config: merged,
        spec,
    })
}

/// Checks and compiles one entity mapping of a system; reported at the system that declares
/// it, once. `None` when its `id` does not compile.
fn compile_system_entity(
    ck: &mut Checker,
    sys: &SystemCtx,
    entities: &BTreeMap<String, Arc<Entity>>,
    checked_entities: &mut HashSet<(String, String)>,
    entity_name: &String,
    se: &crate::config::model::SystemEntityConfig,
) -> Option<Arc<SystemEntity>> {
    let SystemCtx {
        project,
        name,
        chain,
        merged,
        tables,
    } = sys;
    let (project, name, merged) = (*project, *name, merged);
    let op_names = sys.op_names();
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
        let scope = Scopes::of(project, merged);
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
    Some(Arc::new(SystemEntity {
        id: id?,
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
    }))
}

/// Checks the templates of a concrete system's headers and operations against what they
/// see, each reported at the system that declares it.
fn check_request_templates(ck: &mut Checker, sys: &SystemCtx) {
    let (project, name, chain, merged) = (sys.project, sys.name, &sys.chain, &sys.merged);
    let scope = Scopes::of(project, merged);
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
