//! An operation compiled once from its `OperationConfig`: templates, JSONPaths, rules and
//! pagination parsed up front, so a broken expression fails `erpsync validate`, not a run.

use std::collections::BTreeMap;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, SecondsFormat, Utc};
use handlebars::Context;
use serde_json::{Map, Value};

use super::paginate::Paginate;
use super::problem::{CompileProblem, Problems};
use super::rules::Rule;
use super::rules::{StatusRange, parse_status_pattern};
use crate::config::model::{
    BodyFormat, DecodeRuleConfig, HttpMethod, OperationConfig, PaginationConfig, StepConfig,
};
use crate::expr::{JsonPath, Predicate, Template, TemplateRenderError};

/// A JSON body whose string leaves are templates.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BodyTemplate {
    Fixed(Value),
    Text(Template),
    Array(Vec<BodyTemplate>),
    Object(Vec<(String, BodyTemplate)>),
}

impl BodyTemplate {
    pub(crate) fn compile(value: &Value, path: &str, problems: &mut Problems) -> BodyTemplate {
        match value {
            Value::String(s) => match problems.template(path, s) {
                Some(t) if !t.is_literal() => BodyTemplate::Text(t),
                _ => BodyTemplate::Fixed(value.clone()),
            },
            Value::Array(items) => BodyTemplate::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| BodyTemplate::compile(v, &format!("{path}.{i}"), problems))
                    .collect(),
            ),
            Value::Object(m) => BodyTemplate::Object(
                m.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            BodyTemplate::compile(v, &format!("{path}.{k}"), problems),
                        )
                    })
                    .collect(),
            ),
            other => BodyTemplate::Fixed(other.clone()),
        }
    }

    pub(crate) fn render(&self, ctx: &Context) -> Result<Value, TemplateRenderError> {
        Ok(match self {
            BodyTemplate::Fixed(v) => v.clone(),
            BodyTemplate::Text(t) => t.render_value(ctx)?,
            BodyTemplate::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|b| b.render(ctx))
                    .collect::<Result<_, _>>()?,
            ),
            BodyTemplate::Object(fields) => {
                let mut m = Map::new();
                for (k, b) in fields {
                    m.insert(k.clone(), b.render(ctx)?);
                }
                Value::Object(m)
            }
        })
    }
}

/// How `{{since}}` is written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SinceFormat {
    Rfc3339,
    Unix,
    Chrono(String),
}

impl SinceFormat {
    pub(crate) fn format(&self, t: DateTime<Utc>) -> Value {
        match self {
            SinceFormat::Rfc3339 => Value::String(t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            SinceFormat::Unix => Value::from(t.timestamp()),
            SinceFormat::Chrono(f) => Value::String(t.format(f).to_string()),
        }
    }
}

/// A compiled operation. Operations compiled from equal declarations are equal.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub(crate) method: HttpMethod,
    pub(crate) path: Template,
    pub(crate) query: Vec<(String, Template)>,
    pub(crate) headers: Vec<(String, Template)>,
    pub(crate) body: Option<BodyTemplate>,
    pub(crate) body_format: BodyFormat,
    pub(crate) records: Option<super::RecordsPath>,
    /// A page without the member `records` reads (an object where the page is the list) is
    /// an empty page, not an error.
    pub(crate) absent_means_empty: bool,
    pub(crate) record: Option<JsonPath>,
    pub(crate) paginate: Option<Paginate>,
    pub(crate) max_pages: u32,
    /// Where a list response tells the number of records of the whole listing.
    pub(crate) total: Option<super::paginate::TotalPages>,
    pub(crate) since_format: SinceFormat,
    pub(crate) idempotent: Option<bool>,
    pub(crate) idempotency_key: Option<Option<String>>,
    /// Body field that carries the idempotency key.
    pub(crate) idempotency_field: Option<Vec<String>>,
    pub(crate) rules: Vec<Rule>,
    pub(crate) decode: Vec<DecodeRuleConfig>,
    /// The requests of a multi-step operation, in order; empty for a single request.
    pub(crate) steps: Vec<Step>,
}

/// One request of a multi-step operation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Step {
    pub(crate) name: String,
    /// The request, compiled as a single-request operation (with the operation's headers,
    /// error rules and decode rules).
    pub(crate) op: Operation,
    pub(crate) on: Option<StepOn>,
    pub(crate) if_: Option<Template>,
}

/// A step's condition on the answer of an earlier step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StepOn {
    pub(crate) step: String,
    pub(crate) statuses: Vec<StatusRange>,
    pub(crate) when: Option<Predicate>,
}

impl StepOn {
    /// Whether an answer (status and body) of the named step lets the step run; `failed`
    /// tells whether that answer failed the step.
    pub(crate) fn matches(&self, status: Option<u16>, body: &Value, failed: bool) -> bool {
        if self.statuses.is_empty() && self.when.is_none() {
            return !failed;
        }
        let status_ok = self.statuses.is_empty()
            || status.is_some_and(|s| self.statuses.iter().any(|r| r.contains(s)));
        let when_ok = self.when.as_ref().is_none_or(|w| w.matches(body));
        status.is_some() && status_ok && when_ok
    }
}

impl Step {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Whether the step is journaled: sending it twice could write twice.
    pub(crate) fn journaled(&self) -> bool {
        !self.op.safe_to_repeat(self.op.idempotency_key.is_some())
    }

    /// Whether a step that may have been applied can be sent again because a later step
    /// takes over when the system refuses it (e.g. "already exists").
    pub(crate) fn guarded_by(&self, later: &[Step]) -> bool {
        later.iter().any(|s| {
            s.on.as_ref()
                .is_some_and(|on| on.step == self.name && !on.statuses.is_empty())
        })
    }

    /// The step's condition, for plans: "when `update` answered 404".
    pub(crate) fn condition(&self) -> Option<String> {
        let on = self.on.as_ref()?;
        let mut parts = Vec::new();
        if !on.statuses.is_empty() {
            let s: Vec<String> = on
                .statuses
                .iter()
                .map(|r| {
                    if r.low == r.high {
                        r.low.to_string()
                    } else {
                        format!("{}-{}", r.low, r.high)
                    }
                })
                .collect();
            parts.push(format!("answered {}", s.join(" or ")));
        }
        if on.when.is_some() {
            parts.push("its body matches `when`".to_string());
        }
        if parts.is_empty() {
            parts.push("succeeded".into());
        }
        Some(format!("when `{}` {}", on.step, parts.join(" and ")))
    }

    fn compile(
        cfg: &StepConfig,
        parent: &OperationConfig,
        index: usize,
        earlier: &[String],
        p: &mut Problems,
    ) -> Option<Step> {
        let at = format!("steps.{index}");
        let mut headers = parent.headers.clone();
        headers.extend(cfg.headers.clone());
        let mut errors = cfg.errors.clone();
        errors.extend(parent.errors.iter().cloned());
        let single = OperationConfig {
            method: cfg.method,
            path: cfg.path.clone(),
            query: cfg.query.clone(),
            headers,
            body: cfg.body.clone(),
            body_format: cfg.body_format,
            records: None,
            absent_means_empty: false,
            record: cfg.record.clone(),
            paginate: None,
            max_pages: 1,
            total: None,
            since_format: parent.since_format.clone(),
            idempotent: cfg.idempotent,
            idempotency_key: cfg.idempotency_key.clone(),
            errors,
            decode: parent.decode.clone(),
            steps: Vec::new(),
        };
        if cfg.path.is_empty() {
            p.invalid(&format!("{at}.path"), "a step needs a `path`");
        }
        if cfg.name.is_empty() {
            p.invalid(&format!("{at}.name"), "a step needs a `name`");
        } else if earlier.contains(&cfg.name) {
            p.invalid(
                &format!("{at}.name"),
                format!("step `{}` is named twice", cfg.name),
            );
        }
        let on = cfg.on.as_ref().and_then(|on| {
            if !earlier.contains(&on.step) {
                let known = if earlier.is_empty() {
                    "no step comes before it".to_string()
                } else {
                    format!("earlier steps: {}", earlier.join(", "))
                };
                p.invalid(
                    &format!("{at}.on.step"),
                    format!("`{}` is not an earlier step ({known})", on.step),
                );
                return None;
            }
            let mut statuses = Vec::new();
            for (j, s) in on.status.iter().enumerate() {
                match parse_status_pattern(s) {
                    Ok(r) => statuses.push(r),
                    Err(e) => p.invalid(&format!("{at}.on.status.{j}"), e.to_string()),
                }
            }
            let when = match on.when.as_deref().map(Predicate::parse).transpose() {
                Ok(w) => w,
                Err(e) => {
                    p.0.push(CompileProblem::new(
                        format!("{at}.on.when"),
                        super::ProblemKind::JsonPath,
                        e.to_string(),
                    ));
                    None
                }
            };
            Some(StepOn {
                step: on.step.clone(),
                statuses,
                when,
            })
        });
        let if_ = cfg
            .if_
            .as_deref()
            .and_then(|t| p.template(&format!("{at}.if"), t));
        for (rel, text) in step_texts(cfg) {
            let Ok(t) = Template::compile(&text) else {
                continue;
            };
            for var in t.variables() {
                if var[0] != "steps" {
                    continue;
                }
                match var.get(1) {
                    Some(name) if earlier.contains(name) => {}
                    other => {
                        let known = if earlier.is_empty() {
                            "no step comes before this one".to_string()
                        } else {
                            format!("earlier steps: {}", earlier.join(", "))
                        };
                        p.invalid(
                            &format!("{at}.{rel}"),
                            format!(
                                "`steps.{}` is not an earlier step ({known})",
                                other.map_or("", String::as_str)
                            ),
                        );
                    }
                }
            }
        }
        match Operation::compile(&single) {
            Ok(op) => Some(Step {
                name: cfg.name.clone(),
                op,
                on,
                if_,
            }),
            Err(problems) => {
                // An empty path was reported above, in the terms of a step.
                let missing_path = cfg.path.is_empty();
                p.0.extend(
                    problems
                        .into_iter()
                        .filter(|q| !(missing_path && q.path == "path"))
                        .map(|q| q.prefixed(&at)),
                );
                None
            }
        }
    }
}

/// The template strings of a request (`path`, `query`, `headers`, `body`), each with its
/// place under `at` (`""` for the top level): what `validate` checks names in.
pub(crate) fn request_texts(
    at: &str,
    path: &str,
    query: &BTreeMap<String, String>,
    headers: &BTreeMap<String, String>,
    body: Option<&Value>,
) -> Vec<(String, String)> {
    fn walk(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::String(s) => out.push((at.to_string(), s.clone())),
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, &format!("{at}.{i}"), out);
                }
            }
            Value::Object(m) => {
                for (k, x) in m {
                    walk(x, &format!("{at}.{k}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = vec![(format!("{at}path"), path.to_string())];
    out.extend(
        query
            .iter()
            .map(|(k, v)| (format!("{at}query.{k}"), v.clone())),
    );
    out.extend(
        headers
            .iter()
            .map(|(k, v)| (format!("{at}headers.{k}"), v.clone())),
    );
    if let Some(b) = body {
        walk(b, &format!("{at}body"), &mut out);
    }
    out
}

/// The template strings of a step, with their place in it.
fn step_texts(cfg: &StepConfig) -> Vec<(String, String)> {
    let mut out = request_texts("", &cfg.path, &cfg.query, &cfg.headers, cfg.body.as_ref());
    if let Some(t) = &cfg.if_ {
        out.push(("if".into(), t.clone()));
    }
    out
}

impl Operation {
    /// Compiles an operation, collecting every problem rather than stopping at the first.
    pub fn compile(cfg: &OperationConfig) -> Result<Operation, Vec<CompileProblem>> {
        let mut p = Problems::default();
        let mut steps = Vec::new();
        let mut names = Vec::new();
        for (i, sc) in cfg.steps.iter().enumerate() {
            if let Some(step) = Step::compile(sc, cfg, i, &names, &mut p) {
                steps.push(step);
            }
            if !names.contains(&sc.name) {
                names.push(sc.name.clone());
            }
        }
        if !cfg.steps.is_empty() {
            for (key, set) in [
                ("path", !cfg.path.is_empty()),
                ("body", cfg.body.is_some()),
                ("record", cfg.record.is_some()),
                ("records", cfg.records.is_some()),
                ("paginate", cfg.paginate.is_some()),
                ("query", !cfg.query.is_empty()),
            ] {
                if set {
                    p.invalid(
                        key,
                        format!("an operation with `steps` has no `{key}` of its own: each step has its own"),
                    );
                }
            }
        } else if cfg.path.is_empty() {
            p.invalid("path", "an operation needs a `path` (or `steps`)");
        }
        let path = p.template("path", &cfg.path);
        let query = p.template_map("query", &cfg.query);
        for name in cfg
            .headers
            .keys()
            .chain(cfg.idempotency_key.as_ref().and_then(|k| k.header.as_ref()))
        {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                let at = if cfg.headers.contains_key(name) {
                    format!("headers.{name}")
                } else {
                    "idempotency_key.header".into()
                };
                p.invalid(&at, format!("`{name}` is not a valid header name"));
            }
        }
        let headers = p.template_map("headers", &cfg.headers);
        let body = cfg
            .body
            .as_ref()
            .map(|b| BodyTemplate::compile(b, "body", &mut p));
        if cfg.body_format == BodyFormat::Form && cfg.body.as_ref().is_some_and(|b| !b.is_object())
        {
            p.invalid("body", "a `form` body must be a map of fields");
        }
        let records = cfg
            .records
            .as_deref()
            .and_then(|s| p.path("records", s))
            .map(super::RecordsPath::new);
        let record = cfg.record.as_deref().and_then(|s| p.path("record", s));
        let paginate = cfg
            .paginate
            .as_ref()
            .and_then(|pc| Paginate::compile(pc, &mut p));
        if cfg.paginate.is_some() && cfg.records.is_none() {
            p.invalid(
                "records",
                "a paginated operation needs `records` to find each page's records",
            );
        }
        if let Some(PaginationConfig::Page { size: Some(0), .. }) = &cfg.paginate {
            p.invalid("paginate.size", "the page size must be at least 1");
        }
        if let Some(PaginationConfig::Offset { limit: 0, .. }) = &cfg.paginate {
            p.invalid("paginate.limit", "the limit must be at least 1");
        }
        let total = cfg
            .total
            .as_deref()
            .and_then(|t| super::paginate::TotalPages::compile(t, "total", &mut p));
        if cfg.absent_means_empty && cfg.records.is_none() {
            p.invalid(
                "absent_means_empty",
                "`absent_means_empty` says how a page without its `records` reads; the operation has no `records`",
            );
        }
        if cfg.max_pages == 0 {
            p.invalid("max_pages", "`max_pages` must be at least 1");
        }
        let since_format = match cfg.since_format.as_deref() {
            None | Some("rfc3339") => SinceFormat::Rfc3339,
            Some("unix") => SinceFormat::Unix,
            Some(f) => {
                if f.is_empty() || StrftimeItems::new(f).any(|i| matches!(i, Item::Error)) {
                    p.invalid(
                        "since_format",
                        format!("`{f}` is neither `rfc3339`, `unix` nor a valid chrono format"),
                    );
                }
                SinceFormat::Chrono(f.to_string())
            }
        };
        let rules = Rule::compile_all(&cfg.errors, "errors", &mut p.0);
        for (i, d) in cfg.decode.iter().enumerate() {
            if d.marker.is_empty() || d.value.is_empty() {
                p.invalid(
                    &format!("decode.{i}"),
                    "`marker` and `value` must not be empty",
                );
            }
        }
        if !p.0.is_empty() {
            return Err(p.0);
        }
        Ok(Operation {
            method: cfg.method,
            path: path.expect("no problem means the path compiled"),
            query,
            headers,
            body,
            body_format: cfg.body_format,
            records,
            absent_means_empty: cfg.absent_means_empty,
            record,
            paginate,
            max_pages: cfg.max_pages,
            total,
            since_format,
            idempotent: cfg.idempotent,
            idempotency_key: cfg.idempotency_key.as_ref().map(|k| k.header.clone()),
            idempotency_field: cfg
                .idempotency_key
                .as_ref()
                .and_then(|k| k.field.as_ref())
                .map(|f| f.split('.').map(str::to_string).collect()),
            rules,
            decode: cfg.decode.clone(),
            steps,
        })
    }

    /// The method of the first request that may change data (not a GET), of the operation or
    /// of one of its steps; none when it only reads.
    pub fn write_method(&self) -> Option<HttpMethod> {
        if self.steps.is_empty() {
            return (self.method != HttpMethod::Get).then_some(self.method);
        }
        self.steps
            .iter()
            .map(|s| s.op.method)
            .find(|m| *m != HttpMethod::Get)
    }

    /// The steps of a multi-step operation (empty for a single request).
    pub(crate) fn steps(&self) -> &[Step] {
        &self.steps
    }

    pub(crate) fn method(&self) -> HttpMethod {
        self.method
    }

    /// Whether the operation reads a listing page by page.
    pub fn paginated(&self) -> bool {
        self.paginate.is_some()
    }

    /// Whether the request may be sent again after a failure with unknown outcome.
    pub(crate) fn safe_to_repeat(&self, has_idempotency_key: bool) -> bool {
        let by_method = matches!(
            self.method,
            HttpMethod::Get | HttpMethod::Put | HttpMethod::Delete
        );
        self.idempotent.unwrap_or(by_method)
            || (self.idempotency_key.is_some() && has_idempotency_key)
    }
}

impl Operation {
    /// The chain of members a listing's records are at (`$.data` → `data`; empty for the
    /// page itself), when its pages may be read with each record as the values of some of
    /// its members (`HttpSystem::listing_reader`), the page keeping a null in each record's
    /// place: records at a chain of members, not nested; no `decode` rule (which rewrites
    /// values anywhere in a page); and nothing else that reads the page — its error rules,
    /// where its next page is, its total — that may read the records' list, by the text of
    /// its path (any body path when the page is the list itself). A cursor taken from the
    /// last record, read as a null, would end the listing after its first page.
    pub(crate) fn records_chain_for_reader(&self) -> Option<Vec<String>> {
        let chain = self.records.as_ref()?.member_chain()?;
        if !self.decode.is_empty() {
            return None;
        }
        let list = chain.first().map_or("", String::as_str);
        let reads_list = self.rules.iter().any(|r| r.may_read(list))
            || self.paginate.as_ref().is_some_and(|p| p.may_read(list))
            || self.total.as_ref().is_some_and(|t| t.may_read(list));
        (!reads_list).then_some(chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::ProblemKind;
    use serde_json::json;

    fn compile(v: Value) -> Result<Operation, Vec<CompileProblem>> {
        Operation::compile(&serde_json::from_value(v).unwrap())
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let problems = compile(json!({
            "path": "/x/{{#if}}",
            "query": {"limit": "{{upperr a}}", "ok": "{{a}}"},
            "body": {"client": {"name": "{{#each}}"}, "lines": [{"sku": "{{nope x}}"}]},
            "headers": {"Bad Name": "x"},
            "records": "data",
            "paginate": {"kind": "next_url", "path": "$.meta["},
            "since_format": "%Q",
            "errors": [{"when": "@.a ==", "action": "fail"}]
        }))
        .unwrap_err();
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "path",
                "query.limit",
                "headers.Bad Name",
                "body.client.name",
                "body.lines.0.sku",
                "records",
                "paginate.path",
                "since_format",
                "errors.0.when"
            ]
        );
        assert_eq!(problems[1].kind, ProblemKind::Template);
        assert_eq!(problems[5].kind, ProblemKind::JsonPath);
    }

    #[test]
    fn steps_are_checked_against_the_steps_before_them() {
        let problems = compile(json!({
            "path": "/x",
            "steps": [
                {"name": "find", "path": "/p/{{steps.later.record.id}}"},
                {"name": "find", "path": "/q"},
                {"name": "update", "method": "PUT", "path": "/p/{{steps.find.record.id}}",
                 "on": {"step": "nope", "status": [404]}},
                {"name": "create", "method": "POST", "path": "/p",
                 "on": {"step": "update", "status": ["4xy"], "when": "@.code =="}},
                {"name": "again", "path": "", "if": "{{#if}}"}
            ]
        }))
        .unwrap_err();
        let got: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "steps.0.path",
                    "`steps.later` is not an earlier step (no step comes before this one)"
                ),
                ("steps.1.name", "step `find` is named twice"),
                (
                    "steps.2.on.step",
                    "`nope` is not an earlier step (earlier steps: find)"
                ),
                (
                    "steps.3.on.status.0",
                    "`4xy` is not a status code, class or range"
                ),
                ("steps.3.on.when", problems[4].message.as_str()),
                ("steps.4.path", "a step needs a `path`"),
                ("steps.4.if", problems[6].message.as_str()),
                (
                    "path",
                    "an operation with `steps` has no `path` of its own: each step has its own"
                ),
            ]
        );
        assert_eq!(problems[4].kind, ProblemKind::JsonPath);
        assert_eq!(problems[6].kind, ProblemKind::Template);
        let none = compile(json!({"method": "POST"})).unwrap_err();
        assert_eq!(none[0].message, "an operation needs a `path` (or `steps`)");
    }

    #[test]
    fn a_step_runs_on_the_answer_it_names() {
        let op = compile(json!({"steps": [
            {"name": "update", "method": "PUT", "path": "/p"},
            {"name": "create", "method": "POST", "path": "/p",
             "on": {"step": "update", "status": [404]}},
            {"name": "find", "path": "/p", "on": {"step": "create", "status": ["4xx"],
             "when": "@.code == 'exists'"}},
            {"name": "after", "method": "PUT", "path": "/q", "on": {"step": "find"}}
        ]}))
        .unwrap();
        let [update, create, find, after] = &op.steps[..] else {
            panic!("four steps")
        };
        let on = |s: &Step| s.on.clone().unwrap();
        assert!(on(create).matches(Some(404), &Value::Null, true));
        assert!(!on(create).matches(Some(200), &Value::Null, false));
        assert!(on(find).matches(Some(422), &json!({"code": "exists"}), true));
        assert!(!on(find).matches(Some(422), &json!({"code": "other"}), true));
        assert!(on(after).matches(Some(200), &json!([]), false));
        assert!(!on(after).matches(Some(404), &json!([]), true));
        // Only writes that could be applied twice are journaled; a refusal taken over by a
        // later step guards a resend.
        assert!(!update.journaled() && create.journaled() && !find.journaled());
        assert!(create.guarded_by(&op.steps[2..]));
        assert!(!find.guarded_by(&op.steps[3..]));
        assert_eq!(
            op.write_method(),
            Some(HttpMethod::Put),
            "a PUT step writes"
        );
        assert_eq!(
            find.condition().as_deref(),
            Some("when `create` answered 400-499 and its body matches `when`")
        );
    }

    /// A listing's pages are read for a reader of some members of its records only when
    /// nothing else reads the records' list in them: not where the next page or the total
    /// is taken from, not an error rule, not a `decode` rule; and only for records at a
    /// chain of members.
    #[test]
    fn a_listing_is_read_into_its_records_members_only_when_nothing_else_reads_its_list() {
        let chain = |extra: &Value| {
            let mut op = json!({"path": "/p", "records": "$.data"});
            for (k, v) in extra.as_object().unwrap() {
                op[k] = v.clone();
            }
            compile(op).unwrap().records_chain_for_reader()
        };
        let data = Some(vec!["data".to_string()]);
        let cases = [
            (json!({}), data.clone()),
            (
                json!({"paginate": {"kind": "next_url", "path": "$.meta.links.next"}}),
                data.clone(),
            ),
            (
                json!({"paginate": {"kind": "offset", "limit": 100}}),
                data.clone(),
            ),
            (json!({"paginate": {"kind": "link_header"}}), data.clone()),
            (
                json!({"paginate": {"kind": "page", "total_pages": "$.meta.pages"}}),
                data.clone(),
            ),
            (json!({"total": "header:X-Total"}), data.clone()),
            (json!({"total": "$.meta.count"}), data.clone()),
            // The cursor is the last record's id: read as a null, the listing would end.
            (
                json!({"paginate": {"kind": "cursor", "cursor_path": "$.data[-1].id", "param": "after"}}),
                None,
            ),
            (
                json!({"paginate": {"kind": "next_url", "path": "$.data[0].next"}}),
                None,
            ),
            (
                json!({"paginate": {"kind": "page", "total_pages": "$.data.length"}}),
                None,
            ),
            (json!({"total": "$.data.length"}), None),
            (
                json!({"errors": [{"when": "@.data[0].error", "action": "fail"}]}),
                None,
            ),
            (
                json!({"errors": [{"status": [500], "action": "retry", "message": "{{body.data}}"}]}),
                None,
            ),
            (
                json!({"decode": [{"marker": "__class__", "equals": "Decimal", "value": "decimal"}]}),
                None,
            ),
            (
                json!({"records": "$.result.items"}),
                Some(vec!["result".to_string(), "items".to_string()]),
            ),
            (json!({"records": "$.data[*]"}), None),
            (json!({"records": "$.data[*].variants[*]"}), None),
            (json!({"records": "$"}), Some(Vec::new())),
            // The page is the list: any body path may read it.
            (
                json!({"records": "$", "paginate": {"kind": "next_url", "path": "$.next"}}),
                None,
            ),
            (
                json!({"records": "$", "paginate": {"kind": "link_header"}}),
                Some(Vec::new()),
            ),
        ];
        for (extra, want) in cases {
            assert_eq!(chain(&extra), want, "{extra}");
        }
    }

    #[test]
    fn a_listings_total_is_read_from_a_header_or_the_body() {
        use reqwest::header::{HeaderMap, HeaderValue};
        let op = |t: &str| {
            compile(json!({"path": "/p", "records": "$.data", "total": t}))
                .map(|o| o.total.unwrap())
        };
        let mut headers = HeaderMap::new();
        headers.insert("X-WP-Total", HeaderValue::from_static(" 230 "));
        let body = json!({"data": [], "meta": {"total": "41"}});
        assert_eq!(
            op("header:X-WP-Total").unwrap().read(&headers, &body),
            Some(230)
        );
        assert_eq!(op("$.meta.total").unwrap().read(&headers, &body), Some(41));
        assert_eq!(op("$.meta.count").unwrap().read(&headers, &body), None);
        assert_eq!(op("header:").map(|_| ()).unwrap_err()[0].path, "total");
        assert_eq!(op("$.meta[").map(|_| ()).unwrap_err()[0].path, "total");
    }

    #[test]
    fn paginated_operations_need_records() {
        let problems =
            compile(json!({"path": "/p", "paginate": {"kind": "link_header"}})).unwrap_err();
        assert_eq!(problems[0].path, "records");
    }

    #[test]
    fn safety_follows_method_flag_and_key() {
        let op = |v| compile(v).unwrap();
        assert!(op(json!({"path": "/p"})).safe_to_repeat(false));
        assert!(op(json!({"path": "/p", "method": "PUT"})).safe_to_repeat(false));
        let post = op(json!({"path": "/p", "method": "POST"}));
        assert!(!post.safe_to_repeat(true));
        let keyed = op(json!({"path": "/p", "method": "POST", "idempotency_key": {}}));
        assert!(keyed.safe_to_repeat(true));
        assert!(!keyed.safe_to_repeat(false));
        assert!(
            op(json!({"path": "/p", "method": "PATCH", "idempotent": true})).safe_to_repeat(false)
        );
        assert!(!op(json!({"path": "/p", "idempotent": false})).safe_to_repeat(false));
    }

    #[test]
    fn since_formats() {
        let t = DateTime::parse_from_rfc3339("2026-02-03T04:05:06Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            SinceFormat::Rfc3339.format(t),
            json!("2026-02-03T04:05:06Z")
        );
        assert_eq!(SinceFormat::Unix.format(t), json!(1770091506));
        assert_eq!(
            SinceFormat::Chrono("%Y-%m-%d %H:%M:%S".into()).format(t),
            json!("2026-02-03 04:05:06")
        );
    }
}
