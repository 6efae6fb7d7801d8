//! Compiled field mappings: native record → canonical record, and canonical record → native
//! payload. Each field is a JSONPath, a template, a constant, a table lookup, a reference to a
//! related record's id, or a list mapped element by element.

use std::collections::BTreeMap;

use handlebars::Context;
use serde_json::{Map, Value};

use super::types::{convert, key_text};
use crate::config::Problem;
use crate::config::model::{FieldMapConfig, FieldSpecConfig, FieldType, MergeConfig};
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

/// Why one field's expression has no value for a record; `FieldMapError` adds the field.
#[derive(Debug, thiserror::Error)]
enum FieldEvalError {
    #[error("{}", .0.reason)]
    Template(crate::expr::TemplateRenderError),
    #[error("no key to look up in table `{table}`")]
    NoLookupKey { table: String },
    #[error("`{key}` is not in table `{table}`")]
    NotInTable { key: String, table: String },
    #[error("related {entity} `{key}` has not been synced yet")]
    NotSynced { entity: String, key: String },
    #[error("the id `{id}` of related {entity} `{key}` has no part {part}")]
    NoIdPart {
        id: String,
        entity: String,
        key: String,
        part: usize,
    },
    /// An element of an `each` list failed its own mapping.
    #[error(transparent)]
    Element(Box<FieldMapError>),
}

/// A problem found while compiling a mapping, with its relative path.
pub(crate) type MappingProblem = (String, Problem);

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Path(JsonPath),
    /// `$parent.…`: a path into the parent of a record of a nested listing.
    Parent(JsonPath),
    /// `$target.…`: a path into the record the target holds now (write mappings of updates).
    Target(JsonPath),
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
    /// Merged with what the target holds at the field's place (see [`merge`]).
    merge: Option<Merge>,
}

/// How a written value is merged with what the target holds at its place, so a write that
/// replaces a list or an object keeps what only the target has (a buyer's note, an entry
/// another system added).
#[derive(Debug, Clone, PartialEq)]
pub enum Merge {
    /// An object: the target's members the value lacks are kept.
    Object,
    /// A list of objects, paired on `key`: a pair is merged as objects (the value's members
    /// win), the target's unpaired elements are kept in place (with the `unpaired` members
    /// set, when given) and the value's are added after them.
    ByKey {
        key: String,
        unpaired: Option<Map<String, Value>>,
    },
}

/// A compiled mapping. Mappings compiled from equal declarations are equal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapping {
    fields: Vec<Field>,
    needs_context: bool,
    /// Whether no template can read what a context adds to the record (`vars`, `system`,
    /// `parent`, `target`): such templates render over the record itself.
    scope_free: bool,
    reads_target: bool,
    /// When every field lands at a top-level name of its own: the mapped record with each
    /// field present and null, in field order. A record is mapped into a copy of it, whose
    /// members keep their hashes, instead of into an empty map each of its names is hashed
    /// into (`serde_json` hashes with SipHash).
    shape: Option<Map<String, Value>>,
}

/// What a record is mapped within besides itself: its parent in a nested listing (read
/// mappings), the target's current record (write mappings of updates).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Around<'a> {
    pub parent: Option<&'a Value>,
    pub target: Option<&'a Value>,
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
        let scope_free = fields.iter().all(|f| !template_may_read_scope(&f.expr));
        let reads_target = fields.iter().any(|f| {
            f.merge.is_some()
                || !targets_of(&f.at, &f.expr).is_empty()
                || template_reads(&f.expr, TARGET)
        });
        let shape = fields.iter().all(|f| f.target.len() == 1).then(|| {
            fields
                .iter()
                .map(|f| (f.target[0].clone(), Value::Null))
                .collect::<Map<String, Value>>()
        });
        (
            Mapping {
                fields,
                needs_context,
                scope_free,
                reads_target,
                shape,
            },
            problems,
        )
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
    pub(crate) fn parent_reads(&self) -> Vec<String> {
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

    /// Places that read the target's current record (`$target…`, `{{target.…}}`, `merge`):
    /// only write mappings have one.
    pub(crate) fn target_reads(&self) -> Vec<String> {
        let mut out = Vec::new();
        for f in &self.fields {
            out.extend(targets_of(&f.at, &f.expr));
            if template_reads(&f.expr, TARGET) {
                out.push(f.at.clone());
            }
            if f.merge.is_some() {
                out.push(format!("{}.merge", f.name));
            }
        }
        out
    }

    /// Whether an update needs the target's current record to be mapped.
    pub(crate) fn reads_target(&self) -> bool {
        self.reads_target
    }

    /// Whether mapping a record resolves a reference (`ref`, in a field or among the
    /// fields of an `each`).
    pub(crate) fn resolves_refs(&self) -> bool {
        !self.referenced_entities().is_empty()
    }

    /// Names of the entities referenced through `ref`.
    pub(crate) fn referenced_entities(&self) -> Vec<(String, String)> {
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
    /// `target` is the record the target holds now, for `$target`, `{{target}}` and `merge`.
    pub(crate) fn apply_carried(
        &self,
        source: &Value,
        target: Option<&Value>,
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
        let around = Around {
            parent: None,
            target,
        };
        self.apply_around(source, around, env, Some(&only))
    }

    /// Maps one record. Only the listed fields are produced when `only` is given.
    pub fn apply(
        &self,
        source: &Value,
        env: &MapEnv,
        only: Option<&[String]>,
    ) -> Result<Value, FieldMapError> {
        self.apply_around(source, Around::default(), env, only)
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
        let around = Around {
            parent,
            target: None,
        };
        self.apply_around(source, around, env, only)
    }

    /// Maps one record within what is around it.
    pub(crate) fn apply_around(
        &self,
        source: &Value,
        around: Around,
        env: &MapEnv,
        only: Option<&[String]>,
    ) -> Result<Value, FieldMapError> {
        let ctx = self
            .needs_context
            .then(|| template_context(source, around, env));
        self.fields_of(source, around, ctx.as_ref(), env, only)
    }

    /// `apply_in` of a record the caller owns and gets back as it was. When no template can
    /// read what a context adds to the record (see `scope_free`), the record itself is moved
    /// into the templates' context and back, instead of copied into a new one.
    pub fn apply_in_mut(
        &self,
        source: &mut Value,
        parent: Option<&Value>,
        env: &MapEnv,
        only: Option<&[String]>,
    ) -> Result<Value, FieldMapError> {
        if !self.needs_context || !self.scope_free {
            return self.apply_in(source, parent, env, only);
        }
        let around = Around {
            parent,
            target: None,
        };
        let mut ctx = Context::from(std::mem::take(source));
        let out = self.fields_of(ctx.data(), around, Some(&ctx), env, only);
        *source = std::mem::take(ctx.data_mut());
        out
    }

    /// Maps the fields of one record, with templates rendered over `ctx`.
    fn fields_of(
        &self,
        source: &Value,
        around: Around,
        ctx: Option<&Context>,
        env: &MapEnv,
        only: Option<&[String]>,
    ) -> Result<Value, FieldMapError> {
        if only.is_none()
            && let Some(shape) = &self.shape
        {
            // The fields in order, each to its own member: the same record as inserting
            // them one by one into an empty map.
            let mut out = shape.clone();
            for (slot, f) in out.values_mut().zip(&self.fields) {
                *slot = f.value(source, around, ctx, env)?;
            }
            return Ok(Value::Object(out));
        }
        let mut out = Map::with_capacity(self.fields.len());
        for f in &self.fields {
            if let Some(only) = only
                && !only.iter().any(|o| o == &f.target[0])
            {
                continue;
            }
            let v = f.value(source, around, ctx, env)?;
            insert(&mut out, &f.target, v);
        }
        Ok(Value::Object(out))
    }
}

impl Field {
    /// The field's value for a record: its expression's, else its default; converted to its
    /// type and merged with what the target holds.
    fn value(
        &self,
        source: &Value,
        around: Around,
        ctx: Option<&Context>,
        env: &MapEnv,
    ) -> Result<Value, FieldMapError> {
        let failed = |reason: String| FieldMapError {
            field: self.name.clone(),
            reason,
        };
        let mut v =
            eval(&self.expr, source, around, ctx, env).map_err(|e| failed(e.to_string()))?;
        if v.is_null()
            && let Some(d) = &self.default
        {
            v = d.clone();
        }
        if let Some(ty) = self.ty {
            v = convert(v, ty, None).map_err(|e| failed(e.to_string()))?;
        }
        if let (Some(how), Some(held)) =
            (&self.merge, around.target.and_then(|t| at(t, &self.target)))
        {
            v = merge(held, v, how);
        }
        Ok(v)
    }
}

/// A read mapping, with the record's id, worked out over the values of the few members of a
/// record they read, for a listing read straight into those values (`json::parse_listing`)
/// instead of into whole records. Only mappings whose every field lands at a top-level name
/// of its own and reads one member of the record — a path from a member (`$.price`,
/// `$.stock.qty`), a `{{a.b}}` or `{{#if (eq a.b …)}}…{{/if}}` template — or none (a
/// constant) have one, and an id that is such a path: what they give is what mapping the
/// whole record gives.
#[derive(Debug)]
pub(crate) struct DirectRead {
    /// The members read, in the order their values come in.
    members: Vec<String>,
    fields: Vec<DirectField>,
    /// The id's path, from its member.
    id: (usize, JsonPath),
    shape: Map<String, Value>,
}

#[derive(Debug)]
struct DirectField {
    name: String,
    from: DirectFrom,
    ty: Option<FieldType>,
    default: Option<Value>,
}

#[derive(Debug)]
enum DirectFrom {
    /// A path from the member `slot`; `take`: the member whole, read by nothing else, so
    /// its value is moved, not copied.
    Path {
        slot: usize,
        path: JsonPath,
        take: bool,
    },
    Template {
        slot: usize,
        template: Template,
    },
    Const(Value),
}

impl Mapping {
    /// The names of the record the mapping makes, in their order, when every record it makes
    /// has exactly these (its fields all land at top-level names of their own).
    pub(crate) fn shape_names(&self) -> Option<impl Iterator<Item = &str>> {
        self.shape.as_ref().map(|s| s.keys().map(String::as_str))
    }

    /// The mapping as a `DirectRead` with the id `id`, when it can be one.
    pub(crate) fn direct(&self, id: &super::RecordId) -> Option<DirectRead> {
        let shape = self.shape.clone()?;
        if self.reads_target || (self.needs_context && !self.scope_free) {
            return None;
        }
        let mut members: Vec<String> = Vec::new();
        let mut slot_of = |name: &str| match members.iter().position(|m| m == name) {
            Some(i) => i,
            None => {
                members.push(name.to_owned());
                members.len() - 1
            }
        };
        let super::RecordId::Path(id_path) = id else {
            return None;
        };
        let id = (slot_of(id_path.split_at_member()?.name), id_path.clone());
        let mut fields = Vec::with_capacity(self.fields.len());
        for f in &self.fields {
            if f.merge.is_some() || f.target.len() != 1 {
                return None;
            }
            let from = match &f.expr {
                Expr::Path(p) => DirectFrom::Path {
                    slot: slot_of(p.split_at_member()?.name),
                    path: p.clone(),
                    take: false,
                },
                Expr::Template(t) if self.needs_context => DirectFrom::Template {
                    slot: slot_of(t.reads_one_member()?),
                    template: t.clone(),
                },
                Expr::Const(v) => DirectFrom::Const(v.clone()),
                _ => return None,
            };
            fields.push(DirectField {
                name: f.name.clone(),
                from,
                ty: f.ty,
                default: f.default.clone(),
            });
        }
        // A member read whole by one field only, and not by the id, is moved to it.
        let mut reads = vec![0usize; members.len()];
        reads[id.0] += 1;
        for f in &fields {
            match &f.from {
                DirectFrom::Path { slot, .. } | DirectFrom::Template { slot, .. } => {
                    reads[*slot] += 1;
                }
                DirectFrom::Const(_) => {}
            }
        }
        for f in &mut fields {
            if let DirectFrom::Path { slot, path, take } = &mut f.from {
                *take = reads[*slot] == 1 && path.split_at_member().is_some_and(|m| m.is_whole());
            }
        }
        Some(DirectRead {
            members,
            fields,
            id,
            shape,
        })
    }
}

impl DirectRead {
    /// The members of a record it reads, in the order `read` wants their values.
    pub(crate) fn members(&self) -> &[String] {
        &self.members
    }

    /// The id and the mapped record of a record whose members are `values` (in the order of
    /// `members`, null where the record lacks one): what `RecordId::of` and `apply` give for
    /// the whole record.
    pub(crate) fn read(
        &self,
        values: Vec<Value>,
    ) -> (Option<String>, Result<Value, FieldMapError>) {
        let (id, mapped) = self.read_values(values);
        (id, mapped.map(|mapped| self.object_of(mapped)))
    }

    /// The mapped record whose values `read_values` gave, as an object.
    pub(crate) fn object_of(&self, values: Vec<Value>) -> Value {
        let mut out = self.shape.clone();
        for (place, v) in out.values_mut().zip(values) {
            crate::json::put_value(place, v);
        }
        Value::Object(out)
    }

    /// `read`, with the mapped record as its values in the order of `names`.
    pub(crate) fn read_values(
        &self,
        mut values: Vec<Value>,
    ) -> (Option<String>, Result<Vec<Value>, FieldMapError>) {
        let (slot, path) = &self.id;
        let id = path
            .split_at_member()
            .and_then(|m| m.first(&values[*slot]))
            .and_then(key_text);
        // Collected at its size: a `Result`'s collect cannot know it, and grew the vector
        // twice for 14 fields.
        let mut mapped = Vec::with_capacity(self.fields.len());
        let read = self
            .fields
            .iter()
            .try_for_each(|f| f.value(&mut values).map(|v| mapped.push(v)));
        crate::json::drop_values(values);
        (id, read.map(|()| mapped))
    }

    /// The names of the mapped record's fields, in their order.
    pub(crate) fn names(&self) -> impl ExactSizeIterator<Item = &str> {
        self.shape.keys().map(String::as_str)
    }
}

impl DirectField {
    /// `Field::value` of the whole record, from its members' values.
    fn value(&self, values: &mut [Value]) -> Result<Value, FieldMapError> {
        let failed = |reason: String| FieldMapError {
            field: self.name.clone(),
            reason,
        };
        let mut v = match &self.from {
            DirectFrom::Path {
                slot, take: true, ..
            } => std::mem::take(&mut values[*slot]),
            DirectFrom::Path { slot, path, .. } => path
                .split_at_member()
                .and_then(|m| m.first(&values[*slot]))
                .cloned()
                .unwrap_or(Value::Null),
            DirectFrom::Template { slot, template } => {
                match template.render_value_of_member(&values[*slot]) {
                    Ok(Value::String(s)) if s.is_empty() => Value::Null,
                    Ok(v) => v,
                    Err(e) => return Err(failed(FieldEvalError::Template(e).to_string())),
                }
            }
            DirectFrom::Const(v) => v.clone(),
        };
        if v.is_null()
            && let Some(d) = &self.default
        {
            v = d.clone();
        }
        if let Some(ty) = self.ty {
            v = convert(v, ty, None).map_err(|e| failed(e.to_string()))?;
        }
        Ok(v)
    }
}

/// What a mapping's templates see: the record's fields, and `vars`, `system`, `parent` and
/// `target` unless the record has fields of those names (a record's own field wins).
fn template_context(source: &Value, around: Around, env: &MapEnv) -> Context {
    let mut data = source.clone();
    if let Value::Object(m) = &mut data {
        let mut add = |name: &str, v: Option<&Value>| {
            if let Some(v) = v
                && !m.contains_key(name)
            {
                m.insert(name.into(), v.clone());
            }
        };
        add("vars", Some(env.vars));
        add("system", Some(env.system));
        add(PARENT, around.parent);
        add(TARGET, around.target);
    }
    Context::from(data)
}

/// The name of a record's parent in read mappings: `$parent.title`, `{{parent.title}}`.
pub(crate) const PARENT: &str = crate::expr::scope::PARENT;

/// The name of the target's current record in write mappings: `$target.note_attributes`,
/// `{{target.note}}`.
pub(crate) const TARGET: &str = crate::expr::scope::TARGET;

/// The value at `path` (a field's dotted place) in a native record.
fn at<'v>(record: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(record, |v, name| v.get(name))
}

/// `value` merged with `held`, what the target holds at the same place. Shapes that do not
/// fit the rule (a list where an object was expected, elements without the key) leave
/// `value` as it is for those elements: the mapping's value is what the flow means to write.
pub fn merge(held: &Value, value: Value, how: &Merge) -> Value {
    match (how, held, value) {
        (Merge::Object, Value::Object(held), Value::Object(mine)) => {
            let mut out = held.clone();
            out.extend(mine);
            Value::Object(out)
        }
        (Merge::ByKey { key, unpaired }, Value::Array(held), Value::Array(mine)) => {
            let key_of = |v: &Value| v.get(key).and_then(key_text);
            let mut mine: Vec<Option<Value>> = mine.into_iter().map(Some).collect();
            let mut out = Vec::with_capacity(held.len() + mine.len());
            for h in held {
                let paired = key_of(h).and_then(|k| {
                    mine.iter_mut()
                        .find(|m| m.as_ref().and_then(key_of).as_deref() == Some(k.as_str()))
                });
                match (paired.and_then(Option::take), h) {
                    (Some(Value::Object(m)), Value::Object(h)) => {
                        let mut both = h.clone();
                        both.extend(m);
                        out.push(Value::Object(both));
                    }
                    (Some(m), _) => out.push(m),
                    (None, Value::Object(h)) if unpaired.is_some() => {
                        let mut gone = h.clone();
                        gone.extend(
                            unpaired
                                .iter()
                                .flatten()
                                .map(|(k, v)| (k.clone(), v.clone())),
                        );
                        out.push(Value::Object(gone));
                    }
                    (None, h) => out.push(h.clone()),
                }
            }
            out.extend(mine.into_iter().flatten());
            Value::Array(out)
        }
        (_, _, value) => value,
    }
}

/// Places of the `$target…` paths of an expression (a lookup's or ref's key included).
fn targets_of(at: &str, e: &Expr) -> Vec<String> {
    match e {
        Expr::Target(_) => vec![at.to_string()],
        Expr::Lookup { key, .. } => targets_of(&format!("{at}.lookup.key"), key),
        Expr::Ref { key, .. } => targets_of(&format!("{at}.ref.key"), key),
        _ => Vec::new(),
    }
}

/// Whether an expression's template (a key's included) reads the scope `root`.
fn template_reads(e: &Expr, root: &str) -> bool {
    match e {
        Expr::Template(t) => t
            .variables()
            .iter()
            .any(|v| v.first().is_some_and(|r| r == root)),
        Expr::Lookup { key, .. } | Expr::Ref { key, .. } => template_reads(key, root),
        _ => false,
    }
}

/// An expression as a person reads it.
fn describe(e: &Expr) -> String {
    match e {
        Expr::Path(p) => p.as_str().to_string(),
        Expr::Parent(p) => format!("${PARENT}{}", &p.as_str()[1..]),
        Expr::Target(p) => format!("${TARGET}{}", &p.as_str()[1..]),
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
        Expr::Template(_) | Expr::Const(_) | Expr::Parent(_) | Expr::Target(_) => None,
    }
}

fn reads_of(at: &str, e: &Expr, out: &mut Vec<(String, Vec<String>)>) {
    match e {
        Expr::Path(p) => {
            if let Some(root) = p.root_field() {
                out.push((at.to_string(), vec![root.to_string()]));
            }
        }
        // The parent's and the target's names are the system's own.
        Expr::Parent(_) | Expr::Target(_) => {}
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
        Expr::Each { .. } | Expr::Path(_) | Expr::Parent(_) | Expr::Target(_) | Expr::Const(_) => {
            false
        }
    }
}

/// Whether an expression's template (a key's included) may read a name its context adds to
/// the record (`vars`, `system`, `parent`, `target`). Read from the template's text, and
/// erring towards yes: any mention of such a name, and anything that reaches the context as
/// a whole or above a block's value (`this`, `.`, `..`, `@root`, `lookup`).
fn template_may_read_scope(e: &Expr) -> bool {
    match e {
        Expr::Template(t) if !t.is_literal() => {
            let src = t.source();
            let names = crate::expr::scope::MAPPING
                .iter()
                .chain([&PARENT, &TARGET])
                .any(|n| src.contains(n));
            let whole = ["this", "@root", "lookup", ".."]
                .iter()
                .any(|w| src.contains(w));
            // A path that starts with `.` (`{{.}}`, `{{#each ./x}}`).
            let dot = src.char_indices().any(|(i, c)| {
                c == '.'
                    && src[..i]
                        .chars()
                        .next_back()
                        .is_none_or(|p| !(p.is_alphanumeric() || p == '_' || p == ']'))
            });
            names || whole || dot
        }
        Expr::Lookup { key, .. } | Expr::Ref { key, .. } => template_may_read_scope(key),
        _ => false,
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

/// The value of one field's expression for a record.
fn eval(
    e: &Expr,
    source: &Value,
    around: Around,
    ctx: Option<&Context>,
    env: &MapEnv,
) -> Result<Value, FieldEvalError> {
    let read = |p: &JsonPath, v: Option<&Value>| v.and_then(|v| p.extract(v));
    match e {
        Expr::Path(p) => Ok(read(p, Some(source)).unwrap_or(Value::Null)),
        Expr::Parent(p) => Ok(read(p, around.parent).unwrap_or(Value::Null)),
        Expr::Target(p) => Ok(read(p, around.target).unwrap_or(Value::Null)),
        Expr::Template(t) => eval_template(t, ctx),
        Expr::Const(v) => Ok(v.clone()),
        Expr::Lookup {
            table,
            key,
            required,
        } => {
            let k = eval(key, source, around, ctx, env)?;
            eval_lookup(table, key_text(&k), *required, env)
        }
        Expr::Ref { entity, key, part } => {
            let k = eval(key, source, around, ctx, env)?;
            match key_text(&k) {
                Some(k) => eval_ref(entity, k, *part, env),
                None => Ok(Value::Null),
            }
        }
        Expr::Each { path, mapping } => eval_each(path, mapping, source, env),
    }
}

/// A template's value; without a context (no field of the mapping needs one) its text.
fn eval_template(t: &Template, ctx: Option<&Context>) -> Result<Value, FieldEvalError> {
    let Some(ctx) = ctx else {
        return Ok(Value::String(t.source().to_string()));
    };
    // A template that renders nothing means "no value", like a missing path.
    match t.render_value(ctx).map_err(FieldEvalError::Template)? {
        Value::String(s) if s.is_empty() => Ok(Value::Null),
        v => Ok(v),
    }
}

/// A value of a lookup table; a missing key or entry is no value unless `required`.
fn eval_lookup(
    table: &str,
    key: Option<String>,
    required: bool,
    env: &MapEnv,
) -> Result<Value, FieldEvalError> {
    let Some(k) = key else {
        return if required {
            Err(FieldEvalError::NoLookupKey {
                table: table.to_string(),
            })
        } else {
            Ok(Value::Null)
        };
    };
    match env.vars.get(table).and_then(|t| t.get(&k)) {
        Some(v) => Ok(v.clone()),
        None if required => Err(FieldEvalError::NotInTable {
            key: k,
            table: table.to_string(),
        }),
        None => Ok(Value::Null),
    }
}

/// The id (or one `part` of a composite id) a related record has in the target.
fn eval_ref(
    entity: &str,
    key: String,
    part: Option<usize>,
    env: &MapEnv,
) -> Result<Value, FieldEvalError> {
    let Some(id) = env.refs.resolve(entity, &key) else {
        return Err(FieldEvalError::NotSynced {
            entity: entity.to_string(),
            key,
        });
    };
    let Some(n) = part else {
        return Ok(Value::String(id));
    };
    match id.split(super::COMPOSITE_ID_SEPARATOR).nth(n) {
        Some(p) => Ok(Value::String(p.to_string())),
        None => Err(FieldEvalError::NoIdPart {
            id,
            entity: entity.to_string(),
            key,
            part: n,
        }),
    }
}

/// The elements at `path`, each mapped on its own.
fn eval_each(
    path: &JsonPath,
    mapping: &Mapping,
    source: &Value,
    env: &MapEnv,
) -> Result<Value, FieldEvalError> {
    let selected = match path.first(source) {
        Some(Value::Array(a)) => a.iter().collect::<Vec<_>>(),
        _ => path.query(source),
    };
    // A list's elements see their own fields: the record's parent is not theirs.
    let items = selected
        .into_iter()
        .map(|item| mapping.apply(item, env, None))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| FieldEvalError::Element(Box::new(e)))?;
    Ok(Value::Array(items))
}

/// A path of a mapping: `$…` into the record, `$parent…` into its parent, `$target…` into
/// the target's current record.
fn compile_path(text: &str, at: &str, problems: &mut Vec<MappingProblem>) -> Option<Expr> {
    let scoped = |scope: &str| {
        text.strip_prefix('$')
            .and_then(|t| t.strip_prefix(scope))
            .filter(|r| r.is_empty() || r.starts_with(['.', '[']))
    };
    let (scope, source, note) = match (scoped(PARENT), scoped(TARGET)) {
        (Some(rest), _) => (
            Some(PARENT),
            format!("${rest}"),
            " (after `$parent`, read from the record's parent)",
        ),
        (None, Some(rest)) => (
            Some(TARGET),
            format!("${rest}"),
            " (after `$target`, read from the target's current record)",
        ),
        (None, None) => (None, text.to_string(), ""),
    };
    match JsonPath::parse(&source) {
        Ok(p) if scope == Some(PARENT) => Some(Expr::Parent(p)),
        Ok(p) if scope == Some(TARGET) => Some(Expr::Target(p)),
        Ok(p) => Some(Expr::Path(p)),
        Err(e) => {
            problems.push((at.to_string(), Problem::json_path(format!("{e}{note}"))));
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
                problems.push((path.to_string(), Problem::template(e.to_string())));
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
            merge: None,
        }),
        FieldMapConfig::Full(spec) => {
            let expr = compile_spec(name, spec, problems)?;
            let at = match &expr {
                Expr::Path(_) | Expr::Parent(_) | Expr::Target(_) => format!("{name}.path"),
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
                merge: spec.merge.as_ref().and_then(|m| match m {
                    MergeConfig::Object(true) => Some(Merge::Object),
                    MergeConfig::Object(false) => None,
                    MergeConfig::ByKey(k) => Some(Merge::ByKey {
                        key: k.clone(),
                        unpaired: None,
                    }),
                    MergeConfig::Keyed(k) => Some(Merge::ByKey {
                        key: k.key.clone(),
                        unpaired: k.unpaired.clone(),
                    }),
                }),
            })
        }
    }
}

/// A field given as a map: exactly one of `path`, `template`, `const`, `lookup`, `ref`,
/// `each`, compiled.
fn compile_spec(
    name: &str,
    s: &FieldSpecConfig,
    problems: &mut Vec<MappingProblem>,
) -> Option<Expr> {
    if !has_one_kind(name, s, problems) {
        return None;
    }
    if s.fields.is_some() && s.each.is_none() {
        problems.push((
            format!("{name}.fields"),
            Problem::conflict("`fields` only goes with `each`"),
        ));
    }
    if let Some(p) = &s.path {
        compile_path(p, &format!("{name}.path"), problems)
    } else if let Some(t) = &s.template {
        compile_template(t, &format!("{name}.template"), problems)
    } else if let Some(c) = &s.constant {
        Some(Expr::Const(c.clone()))
    } else if let Some(l) = &s.lookup {
        let key = compile_expr_text(&l.key, &format!("{name}.lookup.key"), problems)?;
        Some(Expr::Lookup {
            table: l.table.clone(),
            key: Box::new(key),
            required: l.required,
        })
    } else if let Some(r) = &s.reference {
        let key = compile_expr_text(&r.key, &format!("{name}.ref.key"), problems)?;
        Some(Expr::Ref {
            entity: r.entity.clone(),
            key: Box::new(key),
            part: r.part,
        })
    } else {
        let each = s.each.as_deref()?;
        compile_each(name, each, s.fields.as_ref(), problems)
    }
}

/// Whether a field map names exactly one kind of value; reports it when it does not.
fn has_one_kind(name: &str, s: &FieldSpecConfig, problems: &mut Vec<MappingProblem>) -> bool {
    let given: Vec<String> = [
        ("path", s.path.is_some()),
        ("template", s.template.is_some()),
        ("const", s.constant.is_some()),
        ("lookup", s.lookup.is_some()),
        ("ref", s.reference.is_some()),
        ("each", s.each.is_some()),
    ]
    .iter()
    .filter(|(_, present)| *present)
    .map(|(n, _)| format!("`{n}`"))
    .collect();
    if given.len() == 1 {
        return true;
    }
    let found = if given.is_empty() {
        "none".to_string()
    } else {
        given.join(", ")
    };
    problems.push((
        name.to_string(),
        Problem::conflict(format!(
            "a mapped field needs exactly one of `path`, `template`, `const`, `lookup`, `ref`, \
             `each`; found {found}"
        )),
    ));
    false
}

fn compile_template(text: &str, at: &str, problems: &mut Vec<MappingProblem>) -> Option<Expr> {
    match Template::compile(text) {
        Ok(t) => Some(Expr::Template(t)),
        Err(e) => {
            problems.push((at.to_string(), Problem::template(e.to_string())));
            None
        }
    }
}

/// `each` with its `fields`: a list whose elements are mapped on their own.
fn compile_each(
    name: &str,
    each: &str,
    fields: Option<&BTreeMap<String, FieldMapConfig>>,
    problems: &mut Vec<MappingProblem>,
) -> Option<Expr> {
    let path = match JsonPath::parse(each) {
        Ok(p) => p,
        Err(e) => {
            problems.push((format!("{name}.each"), Problem::json_path(e.to_string())));
            return None;
        }
    };
    let Some(fields) = fields else {
        problems.push((name.to_string(), Problem::invalid("`each` needs `fields`")));
        return None;
    };
    let (mapping, inner) = Mapping::compile(fields);
    for (p, problem) in inner {
        problems.push((format!("{name}.fields.{p}"), problem));
    }
    Some(Expr::Each { path, mapping })
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

    /// A listing read straight into the members a mapping and an id read (`DirectRead`,
    /// `json::parse_listing`) gives each record the id and the mapped record (or the error)
    /// that parsing the page whole and mapping each record gives: members missing, null,
    /// out of order, given twice, escaped, nested, read by several fields or by the id too,
    /// templates, constants, defaults and types. Pages not made as it expects are not read
    /// that way.
    #[test]
    fn a_listing_read_into_its_members_maps_as_its_whole_records_do() {
        let (vars, system) = (json!({}), json!({}));
        let env = MapEnv {
            vars: &vars,
            system: &system,
            refs: &NoRefs,
        };
        let records = r#"[
            {"id":1,"sku":" a-1 ","name":"Scaun","price":"12.50","status":"active",
             "stock":{"qty":4,"w":[1,2]},"extra":{"deep":[1,2,{"x":null}]}},
            {"sku":"B","id":"2","price":7,"status":"hidden","stock":null},
            {"id":3,"status":"active","price":null,"name":null},
            {"name":"Mas\u0103 \"x\"","id":4,"sku":"D","sku":"D2","price":1e2,"stock":{"qty":"x"}},
            {"id":5,"sku":"E","name":"q","status":["a","b"],"stock":[{"qty":1}]},
            {},
            {"id":null,"sku":7,"price":true,"status":"active","name":"ok"},
            {"id":8,"sku":"H","price":"not a price"}
        ]"#;
        let page = format!(r#"{{"meta":{{"count":8}},"data":{records},"links":{{"next":null}}}}"#);
        let cases = [
            json!({
                "sku": "$.sku",
                "name": "$.name",
                "price": {"path": "$.price", "type": "decimal"},
                "qty": "$.stock.qty",
                "first": "$.stock.w[0]",
                "active": "{{#if (eq status 'active')}}true{{else}}false{{/if}}",
                "state": "{{status}}",
                "kind": {"const": "product"},
                "label": {"path": "$.extra.deep[2]", "default": "none"}
            }),
            json!({"sku": "$.sku", "again": "$.sku", "id_too": "$.id", "price": "$.price"}),
            json!({"sku": "$.sku", "on": {"template": "{{#if (eq status 'active')}}1{{/if}}", "type": "boolean"}}),
        ];
        let id = super::super::RecordId::parse("$.id").unwrap();
        for cfg in cases {
            let m = mapping(cfg.clone());
            let direct = m
                .direct(&id)
                .unwrap_or_else(|| panic!("no direct read: {cfg}"));
            let chain = ["data".to_string()];
            let listed =
                crate::json::parse_listing(page.as_bytes(), &chain, direct.members(), false)
                    .unwrap();
            let whole = crate::json::from_slice(page.as_bytes()).unwrap();
            let Value::Array(natives) = &whole["data"] else {
                panic!("{whole}");
            };
            // The page as the listing sees it: a null in the place of each record.
            let mut body = whole.clone();
            body["data"] = Value::Array(vec![Value::Null; natives.len()]);
            assert_eq!(listed.body, body);
            assert_eq!(listed.records.len(), natives.len());
            for (native, values) in natives.iter().zip(listed.records) {
                // Read as values by position: the same fields, in the names' order.
                let (values_id, as_values) = direct.read_values(values.clone());
                let (got_id, got) = direct.read(values);
                assert_eq!(values_id, got_id);
                match (&as_values, &got) {
                    (Ok(vs), Ok(Value::Object(map))) => {
                        assert!(direct.names().eq(map.keys().map(String::as_str)));
                        assert!(vs.iter().eq(map.values()), "{cfg} {native}");
                    }
                    (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                    other => panic!("{cfg} {native}: {other:?}"),
                }
                let mut native = native.clone();
                let want_id = id.of(&native);
                let want = m.apply_in_mut(&mut native, None, &env, None);
                assert_eq!(got_id, want_id, "{cfg} {native}");
                assert_eq!(got, want, "{cfg} {native}");
                if let Ok(v) = &got {
                    // Same members in the same order.
                    assert_eq!(v.to_string(), want.unwrap().to_string());
                }
            }
            // Records at the page itself; with their texts, each the record whole.
            let listed =
                crate::json::parse_listing(records.as_bytes(), &[], direct.members(), false);
            assert_eq!(listed.map(|l| l.records.len()), Some(natives.len()));
            for (chain, text) in [(&chain[..], page.as_str()), (&[][..], records)] {
                let listed =
                    crate::json::parse_listing(text.as_bytes(), chain, direct.members(), true)
                        .unwrap();
                let texts: Vec<Value> = listed
                    .texts
                    .iter()
                    .map(|t| crate::json::from_str(t).unwrap())
                    .collect();
                assert_eq!(&texts, natives, "{cfg}");
            }
        }
        // Pages a reader does not read: the caller parses them whole.
        let members = ["sku".to_string()];
        let chain = ["data".to_string()];
        for odd in [
            r#"{"data":[{"sku":"A"},"text"]}"#,
            r#"{"data":[{"sku":"A"},[1]]}"#,
            r#"{"data":null}"#,
            r#"{"data":{"sku":"A"}}"#,
            r#"{"data":[],"data":[{"sku":"A"}]}"#,
            r#"{"items":[{"sku":"A"}]}"#,
            r#"[{"sku":"A"}]"#,
            r#"{"data":[{"sku":"A"}]"#,
            "not json",
            "",
        ] {
            assert!(
                crate::json::parse_listing(odd.as_bytes(), &chain, &members, false).is_none(),
                "{odd}"
            );
        }
        // Mappings it does not read that way: a template reading two members, a lookup, a
        // template id.
        for cfg in [
            json!({"sku": "$.sku", "label": "{{sku}} {{name}}"}),
            json!({"sku": "$.sku", "all": "$..price"}),
        ] {
            assert!(mapping(cfg.clone()).direct(&id).is_none(), "{cfg}");
        }
        let template_id = super::super::RecordId::parse("{{id}}/{{sku}}").unwrap();
        assert!(
            mapping(json!({"sku": "$.sku"}))
                .direct(&template_id)
                .is_none()
        );
    }

    #[test]
    fn a_record_mapped_in_place_maps_as_a_copy_does_and_comes_back_whole() {
        let vars = json!({"statuses": {"active": "on"}, "vars": "project"});
        let system = json!({"warehouse": "W1"});
        let env = MapEnv {
            vars: &vars,
            system: &system,
            refs: &Refs,
        };
        let parent = json!({"title": "Tricou"});
        let records = [
            json!({"sku": "A", "status": "active", "name": "bec", "vars": "own",
                   "tags": [{"n": "x"}, {"n": "y"}]}),
            json!({"sku": "B", "status": "hidden"}),
            json!("not an object"),
        ];
        let cases = [
            (
                json!({"active": "{{#if (eq status 'active')}}true{{else}}false{{/if}}"}),
                true,
            ),
            (json!({"label": "{{sku}} / {{name}}", "sku": "$.sku"}), true),
            (json!({"tags": "{{#each tags}}{{n}},{{/each}}"}), true),
            (json!({"w": "{{system.warehouse}}-{{sku}}"}), false),
            (json!({"v": "{{vars}}"}), false),
            (json!({"p": "{{parent.title}}"}), false),
            (json!({"all": "{{json this}}"}), false),
            (json!({"up": "{{#each tags}}{{../sku}}{{/each}}"}), false),
            (
                json!({"root": "{{#each tags}}{{@root.vars}}{{/each}}"}),
                false,
            ),
            (json!({"dot": "{{#each tags}}{{./n}}{{/each}}"}), false),
            (
                json!({"k": {"lookup": {"table": "statuses", "key": "{{status}}"}}}),
                true,
            ),
            (
                json!({"k": {"lookup": {"table": "statuses", "key": "{{vars.x}}"}}}),
                false,
            ),
        ];
        for (decl, scope_free) in cases {
            let m = mapping(decl.clone());
            assert_eq!(m.scope_free, scope_free, "{decl}");
            for record in &records {
                for parent in [None, Some(&parent)] {
                    let copied = m.apply_in(record, parent, &env, None);
                    let mut own = record.clone();
                    let in_place = m.apply_in_mut(&mut own, parent, &env, None);
                    assert_eq!(in_place, copied, "{decl} on {record}");
                    assert_eq!(&own, record, "{decl} gave {record} back changed");
                }
            }
        }
    }

    /// Whether a mapping resolves references, wherever a `ref` sits: a run writes the
    /// bindings it holds back before such a mapping reads them from the store.
    #[test]
    fn a_mapping_resolves_references_wherever_a_ref_sits() {
        let none = mapping(json!({
            "sku": "$.sku",
            "status": {"lookup": {"table": "statuses", "key": "$.status"}},
            "lines": {"each": "$.lines", "fields": {"code": "$.sku"}}
        }));
        assert!(!none.resolves_refs());
        let cases = [
            json!({"customer_id": {"ref": {"entity": "customer", "key": "$.email"}}}),
            json!({"lines": {"each": "$.lines", "fields": {
                "product_id": {"ref": {"entity": "product", "key": "$.sku"}}
            }}}),
        ];
        for case in cases {
            assert!(mapping(case.clone()).resolves_refs(), "{case}");
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

    /// A mapping whose fields all land at top-level names of their own maps a record into a
    /// copy of its shape; the record is the one inserting the fields one by one gives (as a
    /// mapping asked for some of its fields still does), members in the same order, and a
    /// field that fails fails the record alike.
    #[test]
    fn a_record_mapped_into_its_shape_is_the_one_inserted_field_by_field() {
        let m = mapping(json!({
            "sku": "$.sku",
            "price": {"path": "$.price_gross", "type": "decimal"},
            "qty": {"path": "$.quantity", "type": "integer"},
            "title": "{{upper name}} ({{sku}})",
            "active": "{{#if (eq status 'active')}}true{{else}}false{{/if}}",
            "currency": {"const": "RON"},
            "status": {"lookup": {"table": "statuses", "key": "$.shipping_status"}},
            "customer_id": {"ref": {"entity": "customer", "key": "$.customer.email"}},
            "lines": {"each": "$.lines", "fields": {"code": "$.sku"}},
            "note": {"path": "$.missing", "default": "-"},
            "zero": "$.nothing"
        }));
        assert!(m.shape.is_some());
        assert!(
            mapping(json!({"sku": "$.sku", "client.email": "$.email"}))
                .shape
                .is_none()
        );
        let names: Vec<String> = m.fields.iter().map(|f| f.name.clone()).collect();
        let vars = json!({"statuses": {"confirmed": "Confirmata"}});
        let env = MapEnv {
            vars: &vars,
            system: &Value::Null,
            refs: &Refs,
        };
        let records = [
            json!({"sku": "A1", "price_gross": "50.004", "quantity": "2", "name": "bec",
                   "status": "active", "shipping_status": "confirmed",
                   "customer": {"email": "a@x.ro"}, "lines": [{"sku": "A1"}]}),
            json!({"sku": "B2", "status": "hidden", "customer": {"email": "a@x.ro"}}),
            json!({"sku": "C3", "quantity": "2.5", "customer": {"email": "a@x.ro"}}),
            json!({"sku": "D4", "customer": {"email": "nobody@x.ro"}}),
        ];
        for record in &records {
            let shaped = m.apply(record, &env, None);
            let inserted = m.apply(record, &env, Some(&names));
            assert_eq!(shaped, inserted, "{record}");
            if let (Ok(a), Ok(b)) = (&shaped, &inserted) {
                assert_eq!(a.to_string(), b.to_string(), "member order of {record}");
            }
        }
        // Both ways taken: a record mapped whole, one refused by a field.
        assert!(m.apply(&records[0], &env, None).is_ok());
        assert!(m.apply(&records[2], &env, None).is_err());
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
    fn an_update_merges_lists_by_key_and_objects_with_what_the_target_holds() {
        let m = mapping(json!({
            "sku": "$.sku",
            "note_attributes": {
                "each": "$.docs",
                "fields": {"name": "$.kind", "value": "$.number"},
                "merge": "name"
            },
            "address": {"path": "$.address", "merge": true},
            "note": "{{target.note}} / {{sku}}",
            "was": "$target.status"
        }));
        assert!(m.reads_target());
        assert_eq!(
            m.target_reads(),
            vec!["address.merge", "note", "note_attributes.merge", "was"],
            "where the target is read, for `validate`"
        );
        let env = MapEnv {
            vars: &Value::Null,
            system: &Value::Null,
            refs: &NoRefs,
        };
        let canon = json!({"sku": "A-1", "address": {"city": "Cluj"},
            "docs": [{"kind": "awb", "number": "AWB-2"}, {"kind": "invoice", "number": "F-9"}]});
        let held = json!({"status": "open", "note": "ring twice",
        "address": {"city": "Iasi", "floor": "3"},
        "note_attributes": [
            {"name": "gift_message", "value": "La multi ani"},
            {"name": "awb", "value": "AWB-1", "id": 7},
            "not an object"
        ]});
        let out = m
            .apply_carried(
                &canon,
                Some(&held),
                &env,
                &["sku".into(), "docs".into(), "address".into()],
            )
            .unwrap();
        assert_eq!(
            out["note_attributes"],
            json!([
                {"name": "gift_message", "value": "La multi ani"},
                {"name": "awb", "value": "AWB-2", "id": 7},
                "not an object",
                {"name": "invoice", "value": "F-9"}
            ]),
            "the buyer's entry stays, the paired one takes the new value and keeps its id, \
             the new one is added"
        );
        assert_eq!(out["address"], json!({"city": "Cluj", "floor": "3"}));
        assert_eq!(out["note"], "ring twice / A-1");
        assert_eq!(out["was"], "open");
        // A create has no target record: the mapped values go as they are.
        let created = m.apply(&canon, &env, None).unwrap();
        assert_eq!(
            created["note_attributes"],
            json!([{"name": "awb", "value": "AWB-2"}, {"name": "invoice", "value": "F-9"}])
        );
        assert_eq!(created["address"], json!({"city": "Cluj"}));
        assert_eq!(created["was"], Value::Null);
        // A mapping that never reads the target does not make the run fetch it.
        assert!(!mapping(json!({"sku": "$.sku", "n": "{{name}}"})).reads_target());
    }

    #[test]
    fn a_keyed_merge_sets_the_unpaired_members_on_the_entries_the_value_dropped() {
        let m = mapping(json!({
            "line_items": {
                "each": "$.lines",
                "fields": {"sku": "$.sku", "quantity": "$.quantity"},
                "merge": {"key": "sku", "unpaired": {"quantity": 0}}
            }
        }));
        assert_eq!(m.target_reads(), vec!["line_items.merge"]);
        let env = MapEnv {
            vars: &Value::Null,
            system: &Value::Null,
            refs: &NoRefs,
        };
        let canon = json!({"lines": [{"sku": "B", "quantity": 5}, {"sku": "C", "quantity": 1}]});
        let held = json!({"line_items": [
            {"id": 1, "sku": "A", "quantity": 2, "name": "Apa"},
            {"id": 2, "sku": "B", "quantity": 3, "name": "Bere"}
        ]});
        let out = m
            .apply_carried(&canon, Some(&held), &env, &["lines".into()])
            .unwrap();
        assert_eq!(
            out["line_items"],
            json!([
                {"id": 1, "sku": "A", "quantity": 0, "name": "Apa"},
                {"id": 2, "sku": "B", "quantity": 5, "name": "Bere"},
                {"sku": "C", "quantity": 1}
            ]),
            "the dropped line keeps its id and takes quantity 0, the paired one keeps its id, \
             the new one is added"
        );
        // Without `unpaired`, the dropped line is sent as the target holds it.
        let keep = mapping(json!({
            "line_items": {
                "each": "$.lines",
                "fields": {"sku": "$.sku", "quantity": "$.quantity"},
                "merge": {"key": "sku"}
            }
        }));
        let out = keep
            .apply_carried(&canon, Some(&held), &env, &["lines".into()])
            .unwrap();
        assert_eq!(out["line_items"][0]["quantity"], 2);
    }

    #[test]
    fn a_record_of_a_three_level_listing_reads_its_grandparent() {
        let m = mapping(json!({
            "sku": "$.sku",
            "warehouse": "$parent.parent.name",
            "place": "{{parent.parent.name}}/{{parent.code}}"
        }));
        let listing = crate::connector::RecordsPath::new(
            JsonPath::parse("$.data[*].aisles[*].bins[*]").unwrap(),
        );
        let body = json!({"data": [{"name": "Cluj", "aisles": [
            {"code": "A", "bins": [{"sku": "B-1"}]}
        ]}]});
        let got = listing.extract(&body);
        let env = MapEnv {
            vars: &Value::Null,
            system: &Value::Null,
            refs: &NoRefs,
        };
        let out = m
            .apply_in(&got.records[0], got.parents[0].as_deref(), &env, None)
            .unwrap();
        assert_eq!(
            out,
            json!({"sku": "B-1", "warehouse": "Cluj", "place": "Cluj/A"})
        );
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
        assert_eq!(problems[0].1.code, crate::config::Code::JsonPath);
        let message = &problems[0].1.message;
        assert!(message.contains("$parent"), "{message}");
        // `$parents` is an ordinary (invalid) path, not the parent.
        let (m, _) =
            Mapping::compile(&serde_json::from_value(json!({"a": "$.parents.x"})).unwrap());
        assert!(m.parent_reads().is_empty());
    }
}
