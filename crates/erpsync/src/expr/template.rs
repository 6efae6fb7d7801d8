//! Handlebars templates, compiled once. Output is never HTML-escaped (erpsync renders URLs and
//! JSON, not pages); the `json` helper encodes a value as JSON.

use std::fmt;
use std::sync::{Arc, LazyLock};

use handlebars::template::{HelperTemplate, Parameter, TemplateElement};
use handlebars::{Context, Handlebars, RenderContext, Renderable, StringOutput};
use handlebars::{Path, PathSeg};
use serde_json::Value;

use super::helpers;

static REGISTRY: LazyLock<Handlebars<'static>> = LazyLock::new(|| {
    let mut hb = Handlebars::new();
    hb.register_escape_fn(handlebars::no_escape);
    helpers::register(&mut hb);
    hb
});

/// Names of every helper a template may call.
pub fn helper_names() -> Vec<String> {
    let mut names: Vec<String> = helpers::names().map(str::to_string).collect();
    names.sort();
    names
}

/// Every helper a template may call, with how many arguments it needs at least, sorted by
/// name.
pub fn helper_arities() -> Vec<(&'static str, usize)> {
    let mut out: Vec<(&'static str, usize)> = helpers::names()
        .filter_map(|n| Some((n, helpers::min_args(n)?)))
        .collect();
    out.sort();
    out
}

fn is_helper(name: &str) -> bool {
    helpers::names().any(|h| h == name)
}

/// A template that failed to compile.
#[derive(Debug, thiserror::Error)]
#[error("invalid template `{source_text}`: {reason}")]
pub struct TemplateParseError {
    pub source_text: String,
    pub reason: String,
    /// Line and column inside the template, 1-based.
    pub pos: Option<(usize, usize)>,
    /// For an unknown helper: its name.
    pub unknown_helper: Option<String>,
}

/// A template that failed to render.
#[derive(Debug, thiserror::Error)]
#[error("template `{template}` failed: {reason}")]
pub struct TemplateRenderError {
    pub template: String,
    pub reason: String,
}

#[derive(Clone)]
enum Kind {
    /// No mustache at all.
    Literal(String),
    /// Exactly `{{a.b.c}}`: the value itself, with its JSON type.
    Var(Vec<String>),
    /// Exactly `{{#if (eq a.b LITERAL)}}THEN{{else}}OTHERWISE{{/if}}` (either side of `eq`
    /// the literal, the `else` part optional), each part plain text: the text chosen by
    /// comparing the value with the literal, as handlebars' `eq` does (JSON equality, a
    /// missing value being null). A flow's `status` → `active` reads render this for every
    /// record; through handlebars it cost some 4,000 instructions a record.
    IfEq(Box<IfEq>),
    Compiled(Arc<handlebars::Template>),
}

/// The parts of a `Kind::IfEq` template.
#[derive(Clone)]
struct IfEq {
    path: Vec<String>,
    literal: Value,
    then: String,
    otherwise: String,
    /// The template itself, for what it reads (`variables`).
    compiled: Arc<handlebars::Template>,
}

impl IfEq {
    /// The `IfEq` form of a compiled template, when it has it.
    fn of(tpl: &Arc<handlebars::Template>) -> Option<IfEq> {
        let [TemplateElement::HelperBlock(block)] = tpl.elements.as_slice() else {
            return None;
        };
        if block.name.as_name() != Some("if")
            || !block.hash.is_empty()
            || block.block_param.is_some()
        {
            return None;
        }
        let [Parameter::Subexpression(sub)] = block.params.as_slice() else {
            return None;
        };
        let TemplateElement::Expression(eq) = sub.as_element() else {
            return None;
        };
        if eq.name.as_name() != Some("eq") || !eq.hash.is_empty() {
            return None;
        }
        let (path, literal) = match eq.params.as_slice() {
            [Parameter::Path(p), Parameter::Literal(l)]
            | [Parameter::Literal(l), Parameter::Path(p)] => (path_segments(p)?, l.clone()),
            _ => return None,
        };
        Some(IfEq {
            path,
            literal,
            then: plain_text(block.template.as_ref())?,
            otherwise: plain_text(block.inverse.as_ref())?,
            compiled: tpl.clone(),
        })
    }

    /// The text chosen for `data`; `None` where the path indexes a list by a name, which
    /// handlebars refuses with an error of its own (rendered there).
    fn choose(&self, data: &Value) -> Option<&str> {
        self.choose_below(data, &self.path)
    }

    /// `choose` along `path`, the end of the template's path, from `data`, the value its
    /// first names led to.
    fn choose_below(&self, data: &Value, path: &[String]) -> Option<&str> {
        let mut v = data;
        for seg in path {
            v = match v {
                Value::Object(m) => m.get(seg).unwrap_or(&Value::Null),
                Value::Array(a) => a.get(seg.parse::<usize>().ok()?).unwrap_or(&Value::Null),
                _ => &Value::Null,
            };
        }
        Some(if v == &self.literal {
            &self.then
        } else {
            &self.otherwise
        })
    }
}

/// The text of a block's part made of plain text only (none: empty); `None` for anything else.
fn plain_text(part: Option<&handlebars::Template>) -> Option<String> {
    match part.map(|t| t.elements.as_slice()) {
        None | Some([]) => Some(String::new()),
        Some([TemplateElement::RawString(s)]) => Some(s.clone()),
        Some(_) => None,
    }
}

/// A compiled template.
#[derive(Clone)]
pub struct Template {
    source: Arc<str>,
    kind: Kind,
}

/// Templates compiled from the same text behave alike: they are equal.
impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Template({:?})", self.source)
    }
}

/// Facade over the helper registry (kept for symmetry with `JsonPath`).
pub struct Templates;

impl Templates {
    pub fn helper_names() -> Vec<String> {
        helper_names()
    }
}

impl Template {
    pub fn compile(source: &str) -> Result<Self, TemplateParseError> {
        let kind = if !source.contains("{{") {
            Kind::Literal(source.to_string())
        } else if let Some(path) = single_var(source) {
            Kind::Var(path)
        } else {
            let tpl = handlebars::Template::compile(source).map_err(|e| {
                let mut reason = first_sentence(&e.reason().to_string());
                if let Some((line, col)) = e.pos() {
                    reason = if line > 1 {
                        format!("{reason} at line {line}, column {col}")
                    } else {
                        format!("{reason} at column {col}")
                    };
                }
                TemplateParseError {
                    source_text: source.to_string(),
                    reason,
                    pos: e.pos(),
                    unknown_helper: None,
                }
            })?;
            check_helpers(&tpl.elements, source)?;
            let tpl = Arc::new(tpl);
            match IfEq::of(&tpl) {
                Some(if_eq) => Kind::IfEq(Box::new(if_eq)),
                None => Kind::Compiled(tpl),
            }
        };
        Ok(Template {
            source: source.into(),
            kind,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The variables the template reads from its own context, each as its path (`{{record.sku}}`
    /// reads `["record", "sku"]`), so `validate` can check them against the template's scope.
    /// What is read inside `each` and `with` blocks, whose context is another value, and
    /// `this`, `..` and `@…` paths are left out.
    pub fn variables(&self) -> Vec<Vec<String>> {
        match &self.kind {
            Kind::Literal(_) => Vec::new(),
            Kind::Var(path) => vec![path.clone()],
            Kind::IfEq(if_eq) => {
                let mut out = Vec::new();
                collect_vars(&if_eq.compiled.elements, &mut out);
                out
            }
            Kind::Compiled(tpl) => {
                let mut out = Vec::new();
                collect_vars(&tpl.elements, &mut out);
                out
            }
        }
    }

    /// Whether the template is a plain string.
    pub(crate) fn is_literal(&self) -> bool {
        matches!(self.kind, Kind::Literal(_))
    }

    /// Renders to text. A missing variable renders empty.
    pub fn render(&self, ctx: &Context) -> Result<String, TemplateRenderError> {
        match &self.kind {
            Kind::Literal(s) => Ok(s.clone()),
            Kind::Var(path) => Ok(match lookup(ctx.data(), path) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            }),
            Kind::IfEq(if_eq) => match if_eq.choose(ctx.data()) {
                Some(text) => Ok(text.to_owned()),
                None => self.render_compiled(&if_eq.compiled, ctx),
            },
            Kind::Compiled(tpl) => self.render_compiled(tpl, ctx),
        }
    }

    /// Renders through handlebars.
    fn render_compiled(
        &self,
        tpl: &handlebars::Template,
        ctx: &Context,
    ) -> Result<String, TemplateRenderError> {
        let mut rc = RenderContext::new(None);
        let mut out = StringOutput::new();
        tpl.render(&REGISTRY, ctx, &mut rc, &mut out)
            .map_err(|e| TemplateRenderError {
                template: self.source.to_string(),
                reason: first_sentence(&e.to_string()),
            })?;
        out.into_string().map_err(|e| TemplateRenderError {
            template: self.source.to_string(),
            reason: e.to_string(),
        })
    }

    /// Renders to a JSON value: `{{x}}` alone keeps the type of `x` (missing gives null);
    /// anything else gives a string.
    /// The one member of its context a `{{a.b}}` or `{{#if (eq a.b …)}}…{{/if}}` template
    /// reads (`a`); `None` for any other template.
    pub(crate) fn reads_one_member(&self) -> Option<&str> {
        match &self.kind {
            Kind::Var(path) => path.first().map(String::as_str),
            Kind::IfEq(if_eq) => if_eq.path.first().map(String::as_str),
            _ => None,
        }
    }

    /// `render_value` over a record whose member `reads_one_member` names holds `value`
    /// (null when it lacks it, which these templates read alike), without the record.
    pub(crate) fn render_value_of_member(
        &self,
        value: &Value,
    ) -> Result<Value, TemplateRenderError> {
        match &self.kind {
            Kind::Var(path) if !path.is_empty() => {
                Ok(lookup(value, &path[1..]).cloned().unwrap_or(Value::Null))
            }
            Kind::IfEq(if_eq) if !if_eq.path.is_empty() => {
                match if_eq.choose_below(value, &if_eq.path[1..]) {
                    Some(text) => Ok(Value::String(text.to_owned())),
                    // A list indexed by a name: handlebars' own error, over the member.
                    None => self.render_value(&Self::record_of(&if_eq.path[0], value)),
                }
            }
            _ => self.render_value(&Self::record_of(
                self.reads_one_member().unwrap_or_default(),
                value,
            )),
        }
    }

    /// A context holding only `value`, as its member `name`.
    fn record_of(name: &str, value: &Value) -> Context {
        let mut m = serde_json::Map::new();
        m.insert(name.to_owned(), value.clone());
        Context::from(Value::Object(m))
    }

    pub(crate) fn render_value(&self, ctx: &Context) -> Result<Value, TemplateRenderError> {
        match &self.kind {
            Kind::Var(path) => Ok(lookup(ctx.data(), path).cloned().unwrap_or(Value::Null)),
            _ => self.render(ctx).map(Value::String),
        }
    }
}

fn lookup<'a>(mut v: &'a Value, path: &[String]) -> Option<&'a Value> {
    for seg in path {
        v = match v {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// `{{ a.b.0 }}` → `["a","b","0"]`; anything with a helper, a block or text around → None.
fn single_var(src: &str) -> Option<Vec<String>> {
    let inner = src.strip_prefix("{{")?.strip_suffix("}}")?.trim();
    if inner.is_empty()
        || inner.contains("{{")
        || inner.contains("}}")
        || inner == "this"
        || !inner
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '.' || c == '-')
        || inner.starts_with(['.', '-'])
        || inner.ends_with('.')
        || inner.contains("..")
    {
        return None;
    }
    let segs: Vec<String> = inner.split('.').map(str::to_string).collect();
    // A single bare name may be a zero-argument helper such as `{{now}}`.
    if segs.len() == 1 && is_helper(&segs[0]) {
        return None;
    }
    Some(segs)
}

fn collect_vars(elements: &[TemplateElement], out: &mut Vec<Vec<String>>) {
    for el in elements {
        match el {
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                let is_call = !h.params.is_empty() || !h.hash.is_empty();
                if !is_call {
                    if let Parameter::Path(p) = &h.name
                        && let Some(segs) = path_segments(p)
                        && !(segs.len() == 1 && is_helper(&segs[0]))
                    {
                        out.push(segs);
                    }
                } else {
                    collect_param_vars(h, out);
                }
            }
            TemplateElement::HelperBlock(h) => {
                collect_param_vars(h, out);
                let name = match &h.name {
                    Parameter::Name(n) => n.as_str(),
                    _ => "",
                };
                // `each` and `with` render their body against another value.
                if !matches!(name, "each" | "with")
                    && let Some(t) = &h.template
                {
                    collect_vars(&t.elements, out);
                }
                if let Some(t) = &h.inverse {
                    collect_vars(&t.elements, out);
                }
            }
            _ => {}
        }
    }
}

fn collect_param_vars(h: &HelperTemplate, out: &mut Vec<Vec<String>>) {
    for p in h.params.iter().chain(h.hash.values()) {
        match p {
            Parameter::Path(path) => {
                if let Some(segs) = path_segments(path) {
                    out.push(segs);
                }
            }
            Parameter::Subexpression(sub) => collect_vars(std::slice::from_ref(&*sub.element), out),
            _ => {}
        }
    }
}

/// The named segments of a plain relative path; `None` for `this`, `../x` and `@index`.
fn path_segments(p: &Path) -> Option<Vec<String>> {
    match p {
        Path::Relative((segs, _)) => segs
            .iter()
            .map(|s| match s {
                PathSeg::Named(n) => Some(n.clone()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .filter(|v| !v.is_empty()),
        Path::Local(_) => None,
    }
}

fn first_sentence(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// Every helper named in the template must be registered, so a typo fails `validate`, not a
/// run.
fn check_helpers(elements: &[TemplateElement], source: &str) -> Result<(), TemplateParseError> {
    for el in elements {
        match el {
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                let is_call = !h.params.is_empty() || !h.hash.is_empty();
                if is_call {
                    check_name(&h.name, source)?;
                }
                check_arity(h, source)?;
                check_params(&h.params, source)?;
                check_params(&h.hash.values().cloned().collect::<Vec<_>>(), source)?;
            }
            TemplateElement::HelperBlock(h) => {
                check_name(&h.name, source)?;
                check_arity(h, source)?;
                check_params(&h.params, source)?;
                if let Some(t) = &h.template {
                    check_helpers(&t.elements, source)?;
                }
                if let Some(t) = &h.inverse {
                    check_helpers(&t.elements, source)?;
                }
            }
            TemplateElement::PartialExpression(_) | TemplateElement::PartialBlock(_) => {
                return Err(TemplateParseError {
                    source_text: source.to_string(),
                    reason: "partials (`{{> name}}`) are not supported: flow files have no \
                             partials to include"
                        .into(),
                    pos: None,
                    unknown_helper: None,
                });
            }
            TemplateElement::DecoratorExpression(_) | TemplateElement::DecoratorBlock(_) => {
                return Err(TemplateParseError {
                    source_text: source.to_string(),
                    reason: "decorators (`{{* name}}`) are not supported".into(),
                    pos: None,
                    unknown_helper: None,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// A helper called with fewer arguments than it needs fails at every render: refuse it at
/// load. `{{urlencode}}` alone is a call of `urlencode` with nothing to encode.
fn check_arity(h: &HelperTemplate, source: &str) -> Result<(), TemplateParseError> {
    let name = match &h.name {
        Parameter::Name(n) => n.as_str(),
        Parameter::Path(Path::Relative((segs, _))) if segs.len() == 1 => match &segs[0] {
            PathSeg::Named(n) => n.as_str(),
            _ => return Ok(()),
        },
        _ => return Ok(()),
    };
    let Some(need) = helpers::min_args(name) else {
        return Ok(());
    };
    let given = h.params.len();
    if given < need {
        return Err(TemplateParseError {
            source_text: source.to_string(),
            reason: format!(
                "helper `{name}` needs {need} argument{}, given {given}",
                if need == 1 { "" } else { "s" }
            ),
            pos: None,
            unknown_helper: None,
        });
    }
    Ok(())
}

fn check_params(params: &[Parameter], source: &str) -> Result<(), TemplateParseError> {
    for p in params {
        if let Parameter::Subexpression(sub) = p {
            check_helpers(std::slice::from_ref(&*sub.element), source)?;
            if let TemplateElement::Expression(h) = &*sub.element {
                check_name(&h.name, source)?;
            }
        }
    }
    Ok(())
}

fn check_name(name: &Parameter, source: &str) -> Result<(), TemplateParseError> {
    let name = match name {
        Parameter::Name(n) => n.as_str(),
        _ => return Ok(()),
    };
    if is_helper(name) {
        Ok(())
    } else {
        Err(TemplateParseError {
            source_text: source.to_string(),
            reason: format!("unknown helper `{name}`"),
            pos: None,
            unknown_helper: Some(name.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(src: &str, data: Value) -> String {
        Template::compile(src)
            .unwrap()
            .render(&Context::from(data))
            .unwrap()
    }

    #[test]
    fn no_html_escaping_and_json_helper() {
        assert_eq!(render("{{a}} & <b>", json!({"a": "x<y"})), "x<y & <b>");
        assert_eq!(
            render(r#"{"name": {{json n}}}"#, json!({"n": "say \"hi\""})),
            r#"{"name": "say \"hi\""}"#
        );
    }

    #[test]
    fn single_variable_keeps_its_type() {
        let t = Template::compile("{{record.qty}}").unwrap();
        let ctx = Context::from(json!({"record": {"qty": 3}}));
        assert_eq!(t.render_value(&ctx).unwrap(), json!(3));
        let t = Template::compile("{{record}}").unwrap();
        assert_eq!(t.render_value(&ctx).unwrap(), json!({"qty": 3}));
        let t = Template::compile("n={{record.qty}}").unwrap();
        assert_eq!(t.render_value(&ctx).unwrap(), json!("n=3"));
    }

    /// The same template rendered through handlebars, whatever form `compile` chose.
    fn through_handlebars(t: &Template) -> Template {
        let tpl = handlebars::Template::compile(t.source()).unwrap();
        Template {
            source: t.source.clone(),
            kind: Kind::Compiled(Arc::new(tpl)),
        }
    }

    /// A conditional on equality with a literal renders what handlebars renders: for values
    /// equal and not, of each JSON type, missing, nested, in a list; with the literal on
    /// either side, without an `else`, with white space control and standalone lines.
    /// Templates with anything more are left to handlebars.
    #[test]
    fn an_equality_conditional_renders_as_handlebars_renders_it() {
        let taken = [
            "{{#if (eq status 'active')}}true{{else}}false{{/if}}",
            "{{#if (eq 'active' status)}}yes{{/if}}",
            "{{#if (eq status '')}}empty{{else}}set{{/if}}",
            "{{#if (eq status null)}}none{{else}}some{{/if}}",
            "{{#if (eq n 5)}}five{{else}}other{{/if}}",
            "{{#if (eq n 5.0)}}five{{else}}other{{/if}}",
            "{{#if (eq flag true)}}T{{else}}F{{/if}}",
            "{{#if (eq a.b 'x')}}in{{else}}out{{/if}}",
            "{{#if (eq list.1 'x')}}second{{else}}not{{/if}}",
            "{{~#if (eq status 'active')~}} on {{~else~}} off {{~/if~}}",
            "{{#if (eq status 'active')}}\non\n{{else}}\noff\n{{/if}}",
            "{{#if (eq status \"active\")}}{{else}}not active{{/if}}",
            "{{#if (eq this.status 'active')}}on{{/if}}",
        ];
        let left = [
            "{{#if (eq status 'active')}}on {{status}}{{else}}off{{/if}}",
            "{{#if (eq status 'active')}}on{{else if (eq status 'x')}}x{{else}}off{{/if}}",
            "{{#if (eq status 'active') includeZero=true}}on{{/if}}",
            "{{#if (eq status 'active')}}on{{/if}} and more",
            "{{#if (eq status other)}}same{{/if}}",
            "{{#if (ne status 'active')}}on{{/if}}",
            "{{#unless (eq status 'active')}}on{{/unless}}",
            "{{#if (eq status 'active')}}on{{! note }}{{/if}}",
            "{{#if (eq ../status 'active')}}on{{/if}}",
            "{{#if (eq @root.status 'active')}}on{{/if}}",
        ];
        let records = [
            json!({"status": "active"}),
            json!({"status": "Active"}),
            json!({"status": ""}),
            json!({"status": null}),
            json!({}),
            json!({"status": 1, "n": 5, "flag": true}),
            json!({"n": 5.0, "flag": "true"}),
            json!({"n": "5", "flag": 1}),
            json!({"a": {"b": "x"}, "list": ["y", "x"]}),
            json!({"a": {"b": ["x"]}, "list": ["x"]}),
            json!({"a": "x", "list": {"1": "x"}, "other": "active", "status": "active"}),
            json!([{"status": "active"}]),
            json!("active"),
            json!({"this": {"status": "active"}, "status": "draft"}),
        ];
        for src in taken {
            let t = Template::compile(src).unwrap();
            assert!(matches!(t.kind, Kind::IfEq(_)), "{src}");
            let hb = through_handlebars(&t);
            assert_eq!(t.variables(), hb.variables(), "{src}");
            for r in &records {
                let ctx = Context::from(r.clone());
                let shown = |r: Result<String, TemplateRenderError>| r.map_err(|e| e.to_string());
                assert_eq!(
                    shown(t.render(&ctx)),
                    shown(hb.render(&ctx)),
                    "{src} over {r}"
                );
            }
        }
        for src in left {
            let t = Template::compile(src).unwrap();
            assert!(matches!(t.kind, Kind::Compiled(_)), "{src}");
        }
        // Both outcomes were met above: the shop's status reading picks each of its texts.
        let t = Template::compile(taken[0]).unwrap();
        assert_eq!(render(taken[0], json!({"status": "active"})), "true");
        assert_eq!(
            t.render(&Context::from(json!({"status": "draft"})))
                .unwrap(),
            "false"
        );
    }

    #[test]
    fn broken_templates_and_unknown_helpers_fail_to_compile() {
        let e = Template::compile("{{#if a}}x").unwrap_err();
        assert!(e.unknown_helper.is_none());
        let e = Template::compile("{{uppercas name}}").unwrap_err();
        assert_eq!(e.unknown_helper.as_deref(), Some("uppercas"));
        let e = Template::compile("{{upper (jsn name)}}").unwrap_err();
        assert_eq!(e.unknown_helper.as_deref(), Some("jsn"));
    }
}
