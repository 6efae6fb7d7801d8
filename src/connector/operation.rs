//! An operation compiled once from its `OperationConfig`: templates, JSONPaths, rules and
//! pagination parsed up front, so a broken expression fails `erpsync validate`, not a run.

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, SecondsFormat, Utc};
use handlebars::Context;
use serde_json::{Map, Value};

use super::paginate::Paginate;
use super::problem::{CompileProblem, Problems};
use super::rules::Rule;
use crate::config::model::{
    BodyFormat, DecodeRuleConfig, HttpMethod, OperationConfig, PaginationConfig,
};
use crate::expr::{JsonPath, Template, TemplateRenderError};

/// A JSON body whose string leaves are templates.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BodyTemplate {
    Fixed(Value),
    Text(Template),
    Array(Vec<BodyTemplate>),
    Object(Vec<(String, BodyTemplate)>),
}

impl BodyTemplate {
    pub fn compile(value: &Value, path: &str, problems: &mut Problems) -> BodyTemplate {
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

    pub fn render(&self, ctx: &Context) -> Result<Value, TemplateRenderError> {
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
    pub fn format(&self, t: DateTime<Utc>) -> Value {
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
}

impl Operation {
    /// Compiles an operation, collecting every problem rather than stopping at the first.
    pub fn compile(cfg: &OperationConfig) -> Result<Operation, Vec<CompileProblem>> {
        let mut p = Problems::default();
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
        })
    }

    pub fn method(&self) -> HttpMethod {
        self.method
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
