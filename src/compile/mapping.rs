//! Compiled field mappings: native record → canonical record, and canonical record → native
//! payload. Each field is a JSONPath, a template, a constant, a table lookup, a reference to a
//! related record's id, or a list mapped element by element.

use std::collections::BTreeMap;

use handlebars::Context;
use serde_json::{Map, Value};

use super::types::{convert, key_text};
use crate::config::Code;
use crate::config::model::{FieldMapConfig, FieldSpecConfig, FieldType};
use crate::expr::{JsonPath, Template};

/// Finds the id, in the flow's target system, of a related record already synced.
pub trait RefResolver {
    fn resolve(&self, entity: &str, key: &str) -> Option<String>;
}

/// A resolver that knows nothing (mappings without `ref`).
pub struct NoRefs;

impl RefResolver for NoRefs {
    fn resolve(&self, _: &str, _: &str) -> Option<String> {
        None
    }
}

/// A mapped field that could not be produced.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct FieldMapError {
    pub field: String,
    pub reason: String,
}

/// A problem found while compiling a mapping: relative path, kind, message.
pub type MappingProblem = (String, Code, String);

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Path(JsonPath),
    /// `$parent.…`: a path into the parent of a record of a nested listing.
    Parent(JsonPath),
    Template(Template),
    Const(Value),
    Lookup {
        table: String,
        key: Box<Expr>,
        required: bool,
    },
    Ref {
        entity: String,
        key: Box<Expr>,
        part: Option<usize>,
    },
    Each {
        path: JsonPath,
        mapping: Mapping,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct Field {
    name: String,
    /// Where the field's expression is, relative to the mapping (`price.path`, `title`).
    at: String,
    target: Vec<String>,
    expr: Expr,
    ty: Option<FieldType>,
    default: Option<Value>,
}

/// A compiled mapping. Mappings compiled from equal declarations are equal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapping {
    fields: Vec<Field>,
    needs_context: bool,
}

/// What a mapping may consult besides the record.
pub struct MapEnv<'a> {
    /// Project `vars` (lookup tables live there), `{{vars.NAME}}` in templates.
    pub vars: &'a Value,
    /// The system's `vars` (with its `resolve`d values), `{{system.NAME}}` in templates.
    pub system: &'a Value,
    pub refs: &'a dyn RefResolver,
}

impl Mapping {
    /// Compiles a mapping; problems carry paths relative to the mapping (`price.template`).
    pub fn compile(map: &BTreeMap<String, FieldMapConfig>) -> (Mapping, Vec<MappingProblem>) {
        let mut problems = Vec::new();
        let mut fields = Vec::new();
        for (name, cfg) in map {
            if let Some(f) = compile_field(name, cfg, &mut problems) {
                fields.push(f);
            }
        }
        let needs_context = fields.iter().any(|f| uses_template(&f.expr));
        (
            Mapping {
                fields,
                needs_context,
            },
            problems,
        )
    }

    /// Names of the fields this mapping produces (top-level names).
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|f| f.target[0].as_str())
    }

    /// What each top-level field reads from the record it maps: the place of its expression
    /// and the path read (a JSONPath's first member, or a template variable), so `validate`
    /// can check names against the record's fields. Lists mapped with `each` read their
    /// elements, which are not checked.
    pub fn reads(&self) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        for f in &self.fields {
            reads_of(&f.at, &f.expr, &mut out);
        }
        out
    }

    /// Places of the `$parent…` paths (a lookup's or ref's key included): they need a
    /// nested `records` path.
    pub fn parent_reads(&self) -> Vec<String> {
        fn walk(at: &str, e: &Expr, out: &mut Vec<String>) {
            match e {
                Expr::Parent(_) => out.push(at.to_string()),
                Expr::Lookup { key, .. } => walk(&format!("{at}.lookup.key"), key, out),
                Expr::Ref { key, .. } => walk(&format!("{at}.ref.key"), key, out),
                _ => {}
            }
        }
        let mut out = Vec::new();
        for f in &self.fields {
            walk(&f.at, &f.expr, &mut out);
        }
        out
    }

    /// Names of the entities referenced through `ref`.
    pub fn referenced_entities(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for f in &self.fields {
            collect_refs(&f.name, &f.expr, &mut out);
        }
        out
    }

    /// Names of the lookup tables used.
    pub fn tables(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for f in &self.fields {
            collect_tables(&f.name, &f.expr, &mut out);
        }
        out
    }

    /// Where each field comes from, as a person reads it (`$.price_gross as decimal`,
    /// `template "{{name}}"`): `erpsync call` prints it beside each mapped value.
    pub fn sources(&self) -> Vec<(String, String)> {
        self.fields
            .iter()
            .map(|f| {
                let mut from = describe(&f.expr);
                if let Some(ty) = f.ty {
                    let ty = serde_json::to_value(ty)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    from.push_str(&format!(" as {ty}"));
                }
                if let Some(d) = &f.default {
                    from.push_str(&format!(", default {d}"));
                }
                (f.name.clone(), from)
            })
            .collect()
    }

    /// Maps one record, leaving out fields computed only from source fields outside
    /// `carried` (an update sends what the flow carries; constants and templates always go).
    pub fn apply_carried(
        &self,
        source: &Value,
        env: &MapEnv,
        carried: &[String],
    ) -> Result<Value, FieldMapError> {
        let only: Vec<String> = self
            .fields
            .iter()
            .filter(|f| match source_field(&f.expr) {
                Some(src) => carried.iter().any(|c| c == src),
                None => true,
            })
            .map(|f| f.target[0].clone())
            .collect();
        self.apply(source, env, Some(&only))
    }

    /// Maps one record. Only the listed fields are produced when `only` is given.
    pub fn apply(
        &self,
        source: &Value,
        env: &MapEnv,
        only: Option<&[String]>,
    ) -> Result<Value, FieldMapError> {
        self.apply_in(source, None, env, only)
    }

    /// Maps one record of a nested listing, with its parent (`$parent.…`,
    /// `{{parent.…}}`); without one, `$parent` reads nothing.
    pub fn apply_in(
        &self,
        source: &Value,
        parent: Option<&Value>,
        env: &MapEnv,
        only: Option<&[String]>,
    ) -> Result<Value, FieldMapError> {
        let ctx = if self.needs_context {
            let mut data = source.clone();
            if let Value::Object(m) = &mut data {
                // A record's own field of the same name wins.
                if !m.contains_key("vars") {
                    m.insert("vars".into(), env.vars.clone());
                }
                if !m.contains_key("system") {
                    m.insert("system".into(), env.system.clone());
                }
                if let Some(parent) = parent
                    && !m.contains_key(PARENT)
                {
                    m.insert(PARENT.into(), parent.clone());
                }
            }
            Some(Context::from(data))
        } else {
            None
        };
        let mut out = Map::new();
        for f in &self.fields {
            if let Some(only) = only
                && !only.iter().any(|o| o == &f.target[0])
            {
                continue;
            }
            let mut v = eval(&f.expr, source, parent, ctx.as_ref(), env).map_err(|reason| {
                FieldMapError {
                    field: f.name.clone(),
                    reason,
                }
            })?;
            if v.is_null()
                && let Some(d) = &f.default
            {
                v = d.clone();
            }
            if let Some(ty) = f.ty {
                v = convert(v, ty, None).map_err(|e| FieldMapError {
                    field: f.name.clone(),
                    reason: e.to_string(),
                })?;
            }
            insert(&mut out, &f.target, v);
        }
        Ok(Value::Object(out))
    }
}

/// The name of a record's parent in read mappings: `$parent.title`, `{{parent.title}}`.
pub const PARENT: &str = "parent";

/// An expression as a person reads it.
fn describe(e: &Expr) -> String {
    match e {
        Expr::Path(p) => p.as_str().to_string(),
        Expr::Parent(p) => format!("${PARENT}{}", &p.as_str()[1..]),
        Expr::Template(t) => format!("template {:?}", t.source()),
        Expr::Const(v) => format!("const {v}"),
        Expr::Lookup { table, key, .. } => format!("lookup `{table}` by {}", describe(key)),
        Expr::Ref { entity, key, part } => {
            let mut text = format!("ref `{entity}` by {}", describe(key));
            if let Some(n) = part {
                text.push_str(&format!(", part {n}"));
            }
            text
        }
        Expr::Each { path, mapping } => {
            format!("each {} ({} field(s))", path.as_str(), mapping.fields.len())
        }
    }
}

/// The source field an expression reads, when it reads exactly one known field.
fn source_field(e: &Expr) -> Option<&str> {
    match e {
        Expr::Path(p) => p.root_field(),
        Expr::Lookup { key, .. } | Expr::Ref { key, .. } => source_field(key),
        Expr::Each { path, .. } => path.root_field(),
        Expr::Template(_) | Expr::Const(_) | Expr::Parent(_) => None,
    }
}

fn reads_of(at: &str, e: &Expr, out: &mut Vec<(String, Vec<String>)>) {
    match e {
        Expr::Path(p) => {
            if let Some(root) = p.root_field() {
                out.push((at.to_string(), vec![root.to_string()]));
            }
        }
        // The parent's names are the system's own, as the record's are.
        Expr::Parent(_) => {}
        Expr::Template(t) => {
            for v in t.variables() {
                out.push((at.to_string(), v));
            }
        }
        Expr::Lookup { key, .. } => reads_of(&format!("{at}.lookup.key"), key, out),
        Expr::Ref { key, .. } => reads_of(&format!("{at}.ref.key"), key, out),
        Expr::Each { path, .. } => {
            if let Some(root) = path.root_field() {
                out.push((format!("{at}.each"), vec![root.to_string()]));
            }
        }
        Expr::Const(_) => {}
    }
}

fn uses_template(e: &Expr) -> bool {
    match e {
        Expr::Template(t) => !t.is_literal(),
        Expr::Lookup { key, .. } | Expr::Ref { key, .. } => uses_template(key),
        Expr::Each { .. } | Expr::Path(_) | Expr::Parent(_) | Expr::Const(_) => false,
    }
}

fn collect_refs(name: &str, e: &Expr, out: &mut Vec<(String, String)>) {
    match e {
        Expr::Ref { entity, .. } => out.push((format!("{name}.ref.entity"), entity.clone())),
        Expr::Each { mapping, .. } => {
            for f in &mapping.fields {
                collect_refs(&format!("{name}.fields.{}", f.name), &f.expr, out);
            }
        }
        _ => {}
    }
}

fn collect_tables(name: &str, e: &Expr, out: &mut Vec<(String, String)>) {
    match e {
        Expr::Lookup { table, .. } => out.push((format!("{name}.lookup.table"), table.clone())),
        Expr::Each { mapping, .. } => {
            for f in &mapping.fields {
                collect_tables(&format!("{name}.fields.{}", f.name), &f.expr, out);
            }
        }
        _ => {}
    }
}

fn insert(out: &mut Map<String, Value>, target: &[String], v: Value) {
    match target {
        [] => {}
        [last] => {
            out.insert(last.clone(), v);
        }
        [first, rest @ ..] => {
            let child = out
                .entry(first.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            if let Value::Object(m) = child {
                insert(m, rest, v);
            }
        }
    }
}

fn eval(
    e: &Expr,
    source: &Value,
    parent: Option<&Value>,
    ctx: Option<&Context>,
    env: &MapEnv,
) -> Result<Value, String> {
    match e {
        Expr::Path(p) => Ok(p.extract(source).unwrap_or(Value::Null)),
        Expr::Parent(p) => Ok(parent
            .and_then(|parent| p.extract(parent))
            .unwrap_or(Value::Null)),
        Expr::Template(t) => {
            let ctx = match ctx {
                Some(c) => c,
                None => return Ok(Value::String(t.source().to_string())),
            };
            // A template that renders nothing means "no value", like a missing path.
            match t.render_value(ctx).map_err(|e| e.reason)? {
                Value::String(s) if s.is_empty() => Ok(Value::Null),
                v => Ok(v),
            }
        }
        Expr::Const(v) => Ok(v.clone()),
        Expr::Lookup {
            table,
            key,
            required,
        } => {
            let k = eval(key, source, parent, ctx, env)?;
            let Some(k) = key_text(&k) else {
                return if *required {
                    Err(format!("no key to look up in table `{table}`"))
                } else {
                    Ok(Value::Null)
                };
            };
            match env.vars.get(table).and_then(|t| t.get(&k)) {
                Some(v) => Ok(v.clone()),
                None if *required => Err(format!("`{k}` is not in table `{table}`")),
                None => Ok(Value::Null),
            }
        }
        Expr::Ref { entity, key, part } => {
            let k = eval(key, source, parent, ctx, env)?;
            let Some(k) = key_text(&k) else {
                return Ok(Value::Null);
            };
            let Some(id) = env.refs.resolve(entity, &k) else {
                return Err(format!("related {entity} `{k}` has not been synced yet"));
            };
            match part {
                None => Ok(Value::String(id)),
                Some(n) => id
                    .split(super::COMPOSITE_ID_SEPARATOR)
                    .nth(*n)
                    .map(|p| Value::String(p.to_string()))
                    .ok_or_else(|| {
                        format!("the id `{id}` of related {entity} `{k}` has no part {n}")
                    }),
            }
        }
        Expr::Each { path, mapping } => {
            let mut items = Vec::new();
            let selected = match path.first(source) {
                Some(Value::Array(a)) => a.iter().collect::<Vec<_>>(),
                _ => path.query(source),
            };
            // A list's elements see their own fields: the record's parent is not theirs.
            for item in selected {
                items.push(mapping.apply(item, env, None).map_err(|e| e.to_string())?);
            }
            Ok(Value::Array(items))
        }
    }
}

/// A path of a mapping: `$…` into the record, `$parent…` into its parent.
fn compile_path(text: &str, at: &str, problems: &mut Vec<MappingProblem>) -> Option<Expr> {
    let parent = text
        .strip_prefix('$')
        .and_then(|t| t.strip_prefix(PARENT))
        .filter(|r| r.is_empty() || r.starts_with(['.', '[']));
    let (source, note) = match parent {
        Some(rest) => (
            format!("${rest}"),
            " (after `$parent`, read from the record's parent)",
        ),
        None => (text.to_string(), ""),
    };
    match JsonPath::parse(&source) {
        Ok(p) if parent.is_some() => Some(Expr::Parent(p)),
        Ok(p) => Some(Expr::Path(p)),
        Err(e) => {
            problems.push((at.to_string(), Code::JsonPath, format!("{e}{note}")));
            None
        }
    }
}

fn compile_expr_text(text: &str, path: &str, problems: &mut Vec<MappingProblem>) -> Option<Expr> {
    if text.starts_with('$') {
        compile_path(text, path, problems)
    } else {
        match Template::compile(text) {
            Ok(t) => Some(Expr::Template(t)),
            Err(e) => {
                problems.push((path.to_string(), Code::Template, e.to_string()));
                None
            }
        }
    }
}

fn compile_field(
    name: &str,
    cfg: &FieldMapConfig,
    problems: &mut Vec<MappingProblem>,
) -> Option<Field> {
    let target: Vec<String> = name.split('.').map(str::to_string).collect();
    match cfg {
        FieldMapConfig::Short(text) => Some(Field {
            name: name.to_string(),
            at: name.to_string(),
            target,
            expr: compile_expr_text(text, name, problems)?,
            ty: None,
            default: None,
        }),
        FieldMapConfig::Full(spec) => {
            let expr = compile_spec(name, spec, problems)?;
            let at = match &expr {
                Expr::Path(_) | Expr::Parent(_) => format!("{name}.path"),
                Expr::Template(_) => format!("{name}.template"),
                _ => name.to_string(),
            };
            Some(Field {
                name: name.to_string(),
                at,
                target,
                expr,
                ty: spec.field_type,
                default: spec.default.clone(),
            })
        }
    }
}

fn compile_spec(
    name: &str,
    s: &FieldSpecConfig,
    problems: &mut Vec<MappingProblem>,
) -> Option<Expr> {
    let given: Vec<&str> = [
        ("path", s.path.is_some()),
        ("template", s.template.is_some()),
        ("const", s.constant.is_some()),
        ("lookup", s.lookup.is_some()),
        ("ref", s.reference.is_some()),
        ("each", s.each.is_some()),
    ]
    .iter()
    .filter(|(_, present)| *present)
    .map(|(n, _)| *n)
    .collect();
    if given.len() != 1 {
        problems.push((
            name.to_string(),
            Code::Conflict,
            format!(
                "a mapped field needs exactly one of `path`, `template`, `const`, `lookup`, `ref`, `each`; found {}",
                if given.is_empty() { "none".to_string() } else { given.iter().map(|g| format!("`{g}`")).collect::<Vec<_>>().join(", ") }
            ),
        ));
        return None;
    }
    if s.fields.is_some() && s.each.is_none() {
        problems.push((
            format!("{name}.fields"),
            Code::Conflict,
            "`fields` only goes with `each`".into(),
        ));
    }
    if let Some(p) = &s.path {
        return compile_path(p, &format!("{name}.path"), problems);
    }
    if let Some(t) = &s.template {
        return match Template::compile(t) {
            Ok(t) => Some(Expr::Template(t)),
            Err(e) => {
                problems.push((format!("{name}.template"), Code::Template, e.to_string()));
                None
            }
        };
    }
    if let Some(c) = &s.constant {
        return Some(Expr::Const(c.clone()));
    }
    if let Some(l) = &s.lookup {
        let key = compile_expr_text(&l.key, &format!("{name}.lookup.key"), problems)?;
        return Some(Expr::Lookup {
            table: l.table.clone(),
            key: Box::new(key),
            required: l.required,
        });
    }
    if let Some(r) = &s.reference {
        let key = compile_expr_text(&r.key, &format!("{name}.ref.key"), problems)?;
        return Some(Expr::Ref {
            entity: r.entity.clone(),
            key: Box::new(key),
            part: r.part,
        });
    }
    if let Some(each) = &s.each {
        let path = match JsonPath::parse(each) {
            Ok(p) => p,
            Err(e) => {
                problems.push((format!("{name}.each"), Code::JsonPath, e.to_string()));
                return None;
            }
        };
        let Some(fields) = &s.fields else {
            problems.push((
                name.to_string(),
                Code::Invalid,
                "`each` needs `fields`".into(),
            ));
            return None;
        };
        let (mapping, inner) = Mapping::compile(fields);
        for (p, c, m) in inner {
            problems.push((format!("{name}.fields.{p}"), c, m));
        }
        return Some(Expr::Each { path, mapping });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping(yaml_json: Value) -> Mapping {
        let cfg: BTreeMap<String, FieldMapConfig> = serde_json::from_value(yaml_json).unwrap();
        let (m, problems) = Mapping::compile(&cfg);
        assert!(problems.is_empty(), "{problems:?}");
        m
    }

    struct Refs;
    impl RefResolver for Refs {
        fn resolve(&self, entity: &str, key: &str) -> Option<String> {
            (entity == "customer" && key == "a@x.ro").then(|| "C-7".to_string())
        }
    }

    #[test]
    fn maps_every_kind_of_field() {
        let m = mapping(json!({
            "sku": "$.sku",
            "price": {"path": "$.price_gross", "type": "decimal"},
            "title": "{{upper name}} ({{sku}})",
            "currency": {"const": "RON"},
            "status": {"lookup": {"table": "statuses", "key": "$.shipping_status"}},
            "customer_id": {"ref": {"entity": "customer", "key": "$.customer.email"}},
            "client.email": "$.customer.email",
            "lines": {"each": "$.lines", "fields": {"code": "$.sku", "qty": {"path": "$.quantity", "type": "integer"}}},
            "note": {"path": "$.missing", "default": "-"}
        }));
        let vars = json!({"statuses": {"confirmed": "Confirmata"}});
        let env = MapEnv {
            vars: &vars,
            system: &Value::Null,
            refs: &Refs,
        };
        let src = json!({"sku": "A1", "price_gross": "50.004", "name": "bec", "shipping_status": "confirmed",
            "customer": {"email": "a@x.ro"}, "lines": [{"sku": "A1", "quantity": "2"}]});
        let out = m.apply(&src, &env, None).unwrap();
        assert_eq!(
            out,
            json!({"client": {"email": "a@x.ro"}, "currency": "RON", "customer_id": "C-7",
                "lines": [{"code": "A1", "qty": 2}], "note": "-", "price": 50, "sku": "A1",
                "status": "Confirmata", "title": "BEC (A1)"})
        );
        let only = m.apply(&src, &env, Some(&["sku".to_string()])).unwrap();
        assert_eq!(only, json!({"sku": "A1"}));
    }

    #[test]
    fn unresolved_reference_fails_the_record() {
        let m = mapping(json!({"customer_id": {"ref": {"entity": "customer", "key": "$.email"}}}));
        let vars = json!({});
        let env = MapEnv {
            vars: &vars,
            system: &Value::Null,
            refs: &Refs,
        };
        let e = m
            .apply(&json!({"email": "b@x.ro"}), &env, None)
            .unwrap_err();
        assert_eq!(e.field, "customer_id");
        assert!(e.reason.contains("has not been synced"), "{}", e.reason);
    }

    #[test]
    fn compile_problems_have_paths() {
        let cfg: BTreeMap<String, FieldMapConfig> = serde_json::from_value(json!({
            "a": "$.x[",
            "b": "{{#if}}",
            "c": {"path": "$.x", "const": 1},
            "d": {"each": "$.l", "fields": {"e": "{{nohelper x}}"}}
        }))
        .unwrap();
        let (_, problems) = Mapping::compile(&cfg);
        let paths: Vec<&str> = problems.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(paths, vec!["a", "b", "c", "d.fields.e"]);
    }

    #[test]
    fn a_record_reads_its_parent_through_paths_and_templates() {
        let m = mapping(json!({
            "sku": "$.sku",
            "name": "$parent.title",
            "label": "{{parent.title}} / {{colour}}",
            "brand": {"path": "$parent['vendor']"},
            "group": {"lookup": {"table": "groups", "key": "$parent.type"}},
            "lines": {"each": "$.parts", "fields": {"p": "$parent.title", "code": "$.code"}}
        }));
        assert_eq!(
            m.parent_reads(),
            vec!["brand.path", "group.lookup.key", "name"],
            "where `$parent` is read, for `validate`"
        );
        let vars = json!({"groups": {"shirt": "Textile"}});
        let parent = json!({"title": "Tricou", "vendor": "Acme", "type": "shirt"});
        let env = MapEnv {
            vars: &vars,
            system: &Value::Null,
            refs: &NoRefs,
        };
        let src = json!({"sku": "T-2", "colour": "alb", "parts": [{"code": "x"}]});
        let out = m.apply_in(&src, Some(&parent), &env, None).unwrap();
        assert_eq!(
            out,
            json!({"sku": "T-2", "name": "Tricou", "label": "Tricou / alb", "brand": "Acme",
                "group": "Textile", "lines": [{"p": null, "code": "x"}]}),
            "an `each` element sees its own fields, not the record's parent"
        );
        // Without a parent (a flat listing), `$parent` reads nothing.
        let out = m.apply(&src, &env, None).unwrap();
        assert_eq!(out["name"], Value::Null);
        assert_eq!(out["brand"], Value::Null);
        // A record's own `parent` field wins in templates, as `system` and `vars` do.
        let own = json!({"sku": "T-3", "colour": "rosu", "parent": {"title": "propriu"}});
        let out = m.apply_in(&own, Some(&parent), &env, None).unwrap();
        assert_eq!(out["label"], "propriu / rosu");
        assert_eq!(out["name"], "Tricou");
        assert!(
            m.sources()
                .contains(&("name".to_string(), "$parent.title".to_string())),
            "{:?}",
            m.sources()
        );
    }

    #[test]
    fn a_broken_parent_path_is_reported_where_it_is() {
        let cfg: BTreeMap<String, FieldMapConfig> =
            serde_json::from_value(json!({"name": {"path": "$parent.[x"}})).unwrap();
        let (_, problems) = Mapping::compile(&cfg);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "name.path");
        assert_eq!(problems[0].1, Code::JsonPath);
        assert!(problems[0].2.contains("$parent"), "{}", problems[0].2);
        // `$parents` is an ordinary (invalid) path, not the parent.
        let (m, _) =
            Mapping::compile(&serde_json::from_value(json!({"a": "$.parents.x"})).unwrap());
        assert!(m.parent_reads().is_empty());
    }
}
