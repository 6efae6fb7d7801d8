//! Systems: each declaration checked where it is written (operations, error rules, address
//! and auth), then each concrete system merged with what it `extends`, its entity mappings
//! and templates checked against their scopes, and its spec compiled once.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::Checker;
use crate::compile::mapping::Mapping;
use crate::compile::{Entity, RecordId, RecordIdParseError, SystemDef, SystemEntity};
use crate::config::model::{FieldMapConfig, SystemConfig, SystemEntityConfig, SystemRole};
use crate::config::{Decl, Problem, ProjectConfig};
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
                ck.report(
                    decl.file,
                    &format!("{}.extends", decl.path),
                    Problem::unknown_name("system", parent, known),
                );
            }
            return None;
        }
        if chain.contains(&parent) {
            if current == name || parent == name {
                ck.report(
                    decl.file,
                    &format!("{}.extends", decl.path),
                    Problem::conflict(format!(
                        "`extends` forms a cycle: {} → {parent}",
                        chain.join(" → ")
                    )),
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
    let name = project
        .systems
        .get_key_value(name)
        .map(|(k, _)| k.as_str())?;
    let chain = ancestry(ck, name)?;
    let merged = merge_systems(&chain, &project.systems);
    check_base_url(ck, name, &merged);
    check_resolve(ck, name, &merged);
    let sys = SystemCtx {
        project,
        name,
        tables: mapping_tables(project, &merged),
        chain,
        merged,
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
    let operations = inherited_operations(&sys, declared);
    let spec = compile_spec(ck, &sys, declared, &operations);
    let merged = sys.merged;
    Some(CompiledSystem {
        name: name.to_string(),
        is_abstract: merged.is_abstract,
        role: merged.role,
        operations,
        entities: compiled_entities,
        config: merged,
        spec,
    })
}

/// A concrete system has a `base_url`.
fn check_base_url(ck: &mut Checker, name: &str, merged: &SystemConfig) {
    if !merged.is_abstract && merged.base_url.is_none() {
        let project = ck.project;
        let decl = &project.systems[name];
        let problem = Problem::invalid(format!(
            "system `{name}` has no `base_url` (set it, or mark the system `abstract: true`)"
        ));
        ck.report(decl.file, &decl.path, problem);
    }
}

/// Lookup tables of a system's mappings: the project's, overlaid by the tables in the
/// system's own (merged) `vars`, so a template system carries its tables and a system
/// extending it may replace one.
fn mapping_tables(project: &ProjectConfig, merged: &SystemConfig) -> Arc<Value> {
    let mut tables = project.vars.clone();
    for (k, v) in &merged.vars {
        if v.is_object() {
            tables.insert(k.clone(), v.clone());
        }
    }
    Arc::new(Value::Object(tables))
}

/// The operations a system's own `resolve` entries call exist.
fn check_resolve(ck: &mut Checker, name: &str, merged: &SystemConfig) {
    let project = ck.project;
    let decl = &project.systems[name];
    for (var, r) in &decl.value.resolve {
        if !merged.operations.contains_key(&r.operation)
            && !project.is_broken(&format!("operations.{name}"), &r.operation)
        {
            let known = merged.operations.keys().map(String::as_str);
            let problem = Problem::unknown_name("operation", &r.operation, known);
            ck.report(
                decl.file,
                &format!("{}.resolve.{var}.operation", decl.path),
                problem,
            );
        }
    }
}

/// A system's operations, each compiled once where it is declared.
fn inherited_operations(sys: &SystemCtx, declared: &Declared) -> BTreeMap<String, Arc<Operation>> {
    let systems = &sys.project.systems;
    sys.merged
        .operations
        .keys()
        .filter_map(|op| {
            let owner = sys
                .chain
                .iter()
                .find(|s| systems[**s].value.operations.contains_key(op))?;
            let compiled = declared.operations.get(&(owner.to_string(), op.clone()))?;
            Some((op.clone(), compiled.clone()))
        })
        .collect()
}

/// The spec the engine runs: compiled once, here; none for an abstract system. What could
/// fail in it was reported at the declarations; should anything be left, it is reported at
/// the system.
fn compile_spec(
    ck: &mut Checker,
    sys: &SystemCtx,
    declared: &Declared,
    operations: &BTreeMap<String, Arc<Operation>>,
) -> Option<Arc<SystemSpec>> {
    let merged = &sys.merged;
    if merged.is_abstract {
        return None;
    }
    let vars = Value::Object(sys.project.vars.clone());
    match SystemSpec::compile(sys.name, merged, operations.clone(), vars) {
        Ok(spec) => Some(Arc::new(spec)),
        Err(problems) => {
            let reported =
                merged.base_url.is_none() || sys.chain.iter().any(|s| declared.bad.contains(*s));
            if !reported {
                let decl = &sys.project.systems[sys.name];
                ck.problems(decl.file, &decl.path, problems);
            }
            None
        }
    }
}

/// One entity mapping of a concrete or template system, and where its problems are told:
/// at the system that declares it (the system itself or one it extends).
struct EntityDecl<'a> {
    sys: &'a SystemCtx<'a>,
    name: &'a str,
    se: &'a SystemEntityConfig,
    /// The system that declares the mapping.
    owner: &'a str,
    file: usize,
    base: String,
    /// The canonical entity, when it exists.
    canonical: Option<&'a Arc<Entity>>,
}

impl EntityDecl<'_> {
    fn report(&self, ck: &mut Checker, rel: &str, problem: Problem) {
        ck.report(self.file, &format!("{}.{rel}", self.base), problem);
    }
}

/// Checks and compiles one entity mapping of a system; reported at the system that declares
/// it, once. `None` when its `id` does not compile.
fn compile_system_entity(
    ck: &mut Checker,
    sys: &SystemCtx,
    entities: &BTreeMap<String, Arc<Entity>>,
    checked_entities: &mut HashSet<(String, String)>,
    entity_name: &str,
    se: &SystemEntityConfig,
) -> Option<Arc<SystemEntity>> {
    let project = sys.project;
    let owner = declaring_system(sys, entity_name);
    let owner_decl = &project.systems[owner];
    let ed = EntityDecl {
        sys,
        name: entity_name,
        se,
        owner,
        file: owner_decl.file,
        base: format!("{}.entities.{entity_name}", owner_decl.path),
        canonical: entities.get(entity_name),
    };
    // What the declaration itself has wrong is told once, however many systems extend it.
    let report = checked_entities.insert((owner.to_string(), entity_name.to_string()));
    let before = ck.diags.len();
    if ed.canonical.is_none() && !project.is_broken("entities", entity_name) {
        let known = entities.keys().map(String::as_str);
        let problem = Problem::unknown_name("entity", entity_name, known);
        ck.report_key(ed.file, &ed.base, problem);
    }
    let id = compile_id(ck, &ed);
    check_entity_operations(ck, &ed);
    check_listings(ck, &ed);
    let read = compile_mapping(ck, &ed, "read", &se.read);
    check_read_fields(ck, &ed);
    let write = compile_mapping(ck, &ed, "write", &se.write);
    check_mapping_names(ck, &ed, entities, &read, "read");
    check_mapping_names(ck, &ed, entities, &write, "write");
    if !report {
        ck.diags.truncate(before);
    }
    if !sys.merged.is_abstract {
        check_parent_reads(ck, &ed, &read);
        check_mapping_variables(ck, &ed, &read, &write);
    }
    Some(Arc::new(system_entity(sys, se, id?, read, write)))
}

/// The system of the chain that declares the entity mapping: the nearest that has it, or the
/// system itself.
fn declaring_system<'a>(sys: &SystemCtx<'a>, entity_name: &str) -> &'a str {
    sys.chain
        .iter()
        .find(|s| {
            sys.project.systems[**s]
                .value
                .entities
                .contains_key(entity_name)
        })
        .copied()
        .unwrap_or(sys.name)
}

/// The compiled entity mapping: its operations as declared, with what was compiled of it.
fn system_entity(
    sys: &SystemCtx,
    se: &SystemEntityConfig,
    id: RecordId,
    read: Mapping,
    write: Mapping,
) -> SystemEntity {
    SystemEntity {
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
        tables: sys.tables.clone(),
    }
}

/// The entity's `id`: a JSONPath or a template over the record alone.
fn compile_id(ck: &mut Checker, ed: &EntityDecl) -> Option<RecordId> {
    match RecordId::parse(&ed.se.id) {
        Ok(id) => {
            if let RecordId::Template(t) = &id
                && t.variables()
                    .iter()
                    .any(|v| v[0] == "system" || v[0] == "vars")
            {
                let problem = Problem::system_and_vars_unavailable(
                    "an `id` template is rendered over the record alone",
                );
                ed.report(ck, "id", problem);
            }
            Some(id)
        }
        Err(e) => {
            let problem = match e {
                RecordIdParseError::Path(e) => Problem::json_path(e.to_string()),
                RecordIdParseError::Template(e) => Problem::template(e.to_string()),
            };
            ed.report(ck, "id", problem);
            None
        }
    }
}

/// The operations of the entity's roles, by role.
fn roles(se: &SystemEntityConfig) -> [(&'static str, &Option<String>); 6] {
    [
        ("list", &se.list),
        ("changes", &se.changes),
        ("lookup", &se.lookup),
        ("get", &se.get),
        ("create", &se.create),
        ("update", &se.update),
    ]
}

/// The operations the entity's roles and actions name exist on the system.
fn check_entity_operations(ck: &mut Checker, ed: &EntityDecl) {
    let (project, merged) = (ed.sys.project, &ed.sys.merged);
    for (role, op) in roles(ed.se) {
        if let Some(op) = op
            && !merged.operations.contains_key(op)
            && !project.is_broken(&format!("operations.{}", ed.owner), op)
        {
            let problem = Problem::unknown_name("operation", op, ed.sys.op_names());
            ed.report(ck, role, problem);
        }
    }
    for (action, op) in &ed.se.actions {
        if !merged.operations.contains_key(op) {
            let problem = Problem::unknown_name("operation", op, ed.sys.op_names());
            ed.report(ck, &format!("actions.{action}"), problem);
        }
    }
}

/// A listing (`list`, `changes`) is one paginated request, not a chain of steps.
fn check_listings(ck: &mut Checker, ed: &EntityDecl) {
    for (role, op) in roles(ed.se).into_iter().take(2) {
        if let Some(op) = op
            && ed
                .sys
                .merged
                .operations
                .get(op)
                .is_some_and(|o| !o.steps.is_empty())
        {
            let problem = Problem::invalid(format!(
                "operation `{op}` has `steps`: a listing is one paginated request, \
                 steps are for lookups and writes"
            ));
            ed.report(ck, role, problem);
        }
    }
}

/// Compiles the `read` or `write` mapping, reporting its problems.
fn compile_mapping(
    ck: &mut Checker,
    ed: &EntityDecl,
    side: &str,
    fields: &BTreeMap<String, FieldMapConfig>,
) -> Mapping {
    let (mapping, problems) = Mapping::compile(fields);
    for (p, problem) in problems {
        ed.report(ck, &format!("{side}.{p}"), problem);
    }
    mapping
}

/// A read mapping fills fields of the canonical entity (`customer.email` fills `customer`).
fn check_read_fields(ck: &mut Checker, ed: &EntityDecl) {
    let Some(c) = ed.canonical else {
        return;
    };
    let what = format!("field of entity `{}`", ed.name);
    for f in ed.se.read.keys() {
        let top = f.split('.').next().unwrap_or(f);
        if !c.fields.contains_key(top) {
            let problem = Problem::not_a(f, &what, c.fields.keys().map(String::as_str));
            ck.report_key(ed.file, &format!("{}.read.{f}", ed.base), problem);
        }
    }
}

/// The entities a mapping's `ref`s name and the tables its `lookup`s read exist.
fn check_mapping_names(
    ck: &mut Checker,
    ed: &EntityDecl,
    entities: &BTreeMap<String, Arc<Entity>>,
    mapping: &Mapping,
    side: &str,
) {
    for (p, ent) in mapping.referenced_entities() {
        if !entities.contains_key(&ent) {
            let known = entities.keys().map(String::as_str);
            let problem = Problem::unknown_name("entity", &ent, known);
            ed.report(ck, &format!("{side}.{p}"), problem);
        }
    }
    let tables = &ed.sys.tables;
    for (p, table) in mapping.tables() {
        if !matches!(tables.get(&table), Some(Value::Object(_))) {
            let known = tables
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, v)| v.is_object())
                .map(|(k, _)| k.as_str());
            let problem = Problem::unknown_name("table in `vars`", &table, known);
            ed.report(ck, &format!("{side}.{p}"), problem);
        }
    }
}

/// `$parent` is there for records of a nested listing only.
fn check_parent_reads(ck: &mut Checker, ed: &EntityDecl, read: &Mapping) {
    let se = ed.se;
    let reading: Vec<(&str, &str)> = roles(se)
        .into_iter()
        .take(3)
        .filter_map(|(role, op)| Some((role, op.as_deref()?)))
        .collect();
    let nested = reading.iter().any(|(_, op)| {
        ed.sys
            .merged
            .operations
            .get(*op)
            .and_then(|o| o.records.as_deref())
            .is_some_and(crate::connector::RecordsPath::nests)
    });
    if nested {
        return;
    }
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
        let problem = Problem::unresolved(format!(
            "`$parent` reads the element a record of a nested listing sits \
             in (`records: $.products[*].variants[*]` gives each variant its \
             product); {ops}"
        ));
        ed.report(ck, &format!("read.{p}"), problem);
    }
}

/// The variables the mappings' templates read exist where they are rendered: a read mapping
/// over the native record, a write mapping over the canonical one.
fn check_mapping_variables(ck: &mut Checker, ed: &EntityDecl, read: &Mapping, write: &Mapping) {
    let scope = Scopes::of(ed.sys.project, &ed.sys.merged);
    let (file, base) = (ed.file, &ed.base);
    for p in read.target_reads() {
        let problem = Problem::unresolved(
            "`$target`, `{{target}}` and `merge` read the record the target holds \
             when it is updated: they belong in a `write` mapping",
        );
        ed.report(ck, &format!("read.{p}"), problem);
    }
    for (p, var) in read.reads() {
        // The native record's names are the system's own: only `system` and
        // `vars` are known here.
        scope.check(ck, file, &format!("{base}.read.{p}"), &var, None, "");
    }
    let Some(canonical) = ed.canonical else {
        return;
    };
    let fields: Vec<String> = canonical.fields.keys().cloned().collect();
    let what = format!("field of entity `{}`", ed.name);
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
            Some((&fields, &what)),
            "a write mapping reads the canonical record: its fields, \
             `system` and `vars`",
        );
    }
}

/// Checks the templates of a concrete system's headers and operations against what they
/// see, each reported at the system that declares it.
fn check_request_templates(ck: &mut Checker, sys: &SystemCtx) {
    let scope = Scopes::of(sys.project, &sys.merged);
    check_header_templates(ck, sys, &scope);
    check_operation_templates(ck, sys, &scope);
}

/// The templates of the system's headers, each reported at the system that declares it.
fn check_header_templates(ck: &mut Checker, sys: &SystemCtx, scope: &Scopes) {
    let project = sys.project;
    let known: Vec<String> = OPERATION_SCOPE.iter().map(|s| s.to_string()).collect();
    for (header, text) in &sys.merged.headers {
        // Reported at the system that declares the header.
        let Some(owner) = sys
            .chain
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
}

/// The templates of the system's operations, each reported at the system that declares the
/// operation.
fn check_operation_templates(ck: &mut Checker, sys: &SystemCtx, scope: &Scopes) {
    let project = sys.project;
    let known: Vec<String> = OPERATION_SCOPE.iter().map(|s| s.to_string()).collect();
    for (op_name, op) in &sys.merged.operations {
        let owner = sys
            .chain
            .iter()
            .find(|s| project.systems[**s].value.operations.contains_key(op_name))
            .copied()
            .unwrap_or(sys.name);
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
                let problem = Problem::not_a(
                    &var[0],
                    "variable of error messages",
                    crate::expr::scope::ERROR_MESSAGE.iter().copied(),
                )
                .with_help("an error rule's message reads the response: `body` and `status`");
                ck.report(file, &format!("{base}.{i}.message"), problem);
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
        let (names, what) = match root.as_str() {
            "system" => (
                &self.system,
                "system variable (in the system's `vars` or `resolve`)",
            ),
            "vars" => (&self.vars, "variable (in `vars`)"),
            _ => {
                if let Some((names, what)) = roots
                    && !names.contains(root)
                {
                    let mut known: Vec<&str> = names.iter().map(String::as_str).collect();
                    known.extend(["system", "vars"]);
                    let problem = Problem::not_a(root, what, known).with_help(place);
                    ck.report(file, at, problem);
                }
                return;
            }
        };
        if let Some(n) = var.get(1)
            && !names.contains(n)
        {
            let problem = Problem::unknown_name(what, n, names.iter().map(String::as_str));
            ck.report(file, at, problem);
        }
    }
}
