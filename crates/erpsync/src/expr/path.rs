//! JSONPath (RFC 9535) queries. Simple member/index chains such as `$.data.items[0].sku`, the
//! bulk of every mapping, are evaluated by a direct walk; everything else goes through
//! jsonpath-rust.

use std::fmt;

use jsonpath_rust::parser::model::{Filter, FilterAtom, JpQuery, Segment, Selector};
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::state::State;
use jsonpath_rust::query::{Query, js_path_process};
use serde_json::Value;

/// A JSONPath that failed to parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid JSONPath `{path}`: {reason}")]
pub struct JsonPathParseError {
    pub path: String,
    pub reason: String,
}

#[derive(Clone)]
enum Step {
    Key(String),
    Index(i64),
}

#[derive(Clone)]
enum Plan {
    /// A chain of members and indexes: at most one result.
    Simple(Vec<Step>),
    Full(Box<JpQuery>),
}

/// A compiled JSONPath query.
#[derive(Clone)]
pub struct JsonPath {
    source: String,
    plan: Plan,
}

/// Paths parsed from the same text select alike: they are equal.
impl PartialEq for JsonPath {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "JsonPath({})", self.source)
    }
}

impl JsonPath {
    pub fn parse(source: &str) -> Result<Self, JsonPathParseError> {
        stray_text(source).map_or(Ok(()), |reason| {
            Err(JsonPathParseError {
                path: source.to_string(),
                reason,
            })
        })?;
        let query = parse_json_path(source).map_err(|e| JsonPathParseError {
            path: source.to_string(),
            reason: one_line(&e.to_string()),
        })?;
        let plan = match simple_steps(source) {
            Some(steps) => Plan::Simple(steps),
            None => Plan::Full(Box::new(query)),
        };
        Ok(JsonPath {
            source: source.to_string(),
            plan,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The first member a simple path reads (`$.customer.email` → `customer`), if it is
    /// simple.
    pub(crate) fn root_field(&self) -> Option<&str> {
        match &self.plan {
            Plan::Simple(steps) => match steps.first() {
                Some(Step::Key(k)) => Some(k),
                _ => None,
            },
            Plan::Full(_) => {
                let rest = self.source.strip_prefix("$.")?;
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (end > 0).then(|| &rest[..end])
            }
        }
    }

    /// Every node the path selects.
    pub fn query<'a>(&self, value: &'a Value) -> Vec<&'a Value> {
        match &self.plan {
            Plan::Simple(steps) => walk(steps, value).into_iter().collect(),
            Plan::Full(q) => js_path_process(q, value)
                .map(|hits| hits.into_iter().map(|h| h.val()).collect())
                .unwrap_or_default(),
        }
    }

    /// The first node selected, if any. `null` counts as a value.
    /// The text the path was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn first<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        match &self.plan {
            Plan::Simple(steps) => walk(steps, value),
            Plan::Full(_) => self.query(value).into_iter().next(),
        }
    }

    /// The node a simple path selects, to change or take; `None` for any other path (or
    /// when nothing is there).
    pub(crate) fn first_mut<'a>(&self, value: &'a mut Value) -> Option<&'a mut Value> {
        let Plan::Simple(steps) = &self.plan else {
            return None;
        };
        let mut v = value;
        for step in steps {
            v = match (step, v) {
                (Step::Key(k), Value::Object(m)) => m.get_mut(k)?,
                (Step::Index(i), Value::Array(a)) => {
                    let idx = if *i < 0 { a.len() as i64 + i } else { *i };
                    a.get_mut(usize::try_from(idx).ok()?)?
                }
                _ => return None,
            };
        }
        Some(v)
    }

    /// Whether the path is a chain of members and indexes (at most one node).
    pub(crate) fn is_simple(&self) -> bool {
        matches!(self.plan, Plan::Simple(_))
    }

    /// The value at a single-node path: the node itself when the path can only select one,
    /// otherwise the list of selected nodes.
    pub fn extract(&self, value: &Value) -> Option<Value> {
        match &self.plan {
            Plan::Simple(steps) => walk(steps, value).cloned(),
            Plan::Full(_) => {
                let hits = self.query(value);
                if hits.is_empty() {
                    None
                } else {
                    Some(Value::Array(hits.into_iter().cloned().collect()))
                }
            }
        }
    }
}

fn walk<'a>(steps: &[Step], mut v: &'a Value) -> Option<&'a Value> {
    for step in steps {
        v = match (step, v) {
            (Step::Key(k), Value::Object(m)) => m.get(k)?,
            (Step::Index(i), Value::Array(a)) => {
                let idx = if *i < 0 { a.len() as i64 + i } else { *i };
                a.get(usize::try_from(idx).ok()?)?
            }
            _ => return None,
        };
    }
    Some(v)
}

/// Recognises `$`, `$.a.b`, `$['a b']`, `$.a[0]`, `$.a[-1]`.
fn simple_steps(src: &str) -> Option<Vec<Step>> {
    let mut rest = src.strip_prefix('$')?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(r.len());
            if end == 0 {
                return None;
            }
            steps.push(Step::Key(r[..end].to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let close = r.find(']')?;
            let inner = r[..close].trim();
            if let Some(q) = inner
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
            {
                if q.contains(['\\', '\'', '"']) {
                    return None;
                }
                steps.push(Step::Key(q.to_string()));
            } else {
                steps.push(Step::Index(inner.parse().ok()?));
            }
            rest = &r[close + 1..];
        } else {
            return None;
        }
    }
    Some(steps)
}

/// RFC 9535 allows blanks between segments, and every segment starts with `.` or `[`:
/// `$.a b` is not a query (the parser would read `$.a` and drop the rest). Returns why.
fn stray_text(src: &str) -> Option<String> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut chars = src.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '[' | '(' => depth += 1,
            ']' | ')' => depth = depth.saturating_sub(1),
            c if c.is_whitespace() && depth == 0 => {
                while chars.peek().is_some_and(|(_, n)| n.is_whitespace()) {
                    chars.next();
                }
                match chars.peek() {
                    None | Some((_, '.' | '[')) => {}
                    Some((j, n)) => {
                        let _ = i;
                        return Some(format!(
                            "unexpected `{n}` at column {}: after a blank, a JSONPath goes on \
                             with `.name` or `[…]` (a name with a space is written `['a b']`)",
                            src[..*j].chars().count() + 1
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    None
}

/// The parser's report reduced to one line: what was expected and at which column.
fn one_line(s: &str) -> String {
    let column = s
        .split("-->")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|lc| lc.split(':').nth(1))
        .map(str::to_string);
    let what = s
        .rsplit("= ")
        .next()
        .filter(|_| s.contains("= "))
        .map(|w| w.split_whitespace().collect::<Vec<_>>().join(" "));
    match (what, column) {
        (Some(w), Some(c)) => format!("{w} at column {c}"),
        (Some(w), None) => w,
        _ => s.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// A condition written as the inside of a JSONPath filter, e.g.
/// `@.errorText && @.errorText != ''`, tested against one value.
#[derive(Clone, Debug, PartialEq)]
pub struct Predicate {
    query: JsonPath,
    /// The condition alone, tested on the value itself; `None` when the condition reads
    /// the root (`$`), which is the list wrapping the value, so the value is wrapped.
    filter: Option<Filter>,
}

impl Predicate {
    pub fn parse(condition: &str) -> Result<Self, JsonPathParseError> {
        let query =
            JsonPath::parse(&format!("$[?{condition}]")).map_err(|e| JsonPathParseError {
                path: condition.to_string(),
                reason: e.reason,
            })?;
        // Read on the value itself unless the condition reads the root (`$`, the list around
        // the value) or filters again (`[?`), where the library treats the value it tests
        // apart from the lists it selects from.
        let filter = match &query.plan {
            Plan::Full(q) if !condition.contains('$') && !condition.contains("[?") => {
                match q.segments.as_slice() {
                    [Segment::Selector(Selector::Filter(f))] => Some(f.clone()),
                    [Segment::Selectors(s)] => match s.as_slice() {
                        [Selector::Filter(f)] => Some(f.clone()),
                        _ => None,
                    },
                    _ => None,
                }
            }
            _ => None,
        };
        Ok(Predicate { query, filter })
    }

    /// Whether `value` satisfies the condition.
    pub fn matches(&self, value: &Value) -> bool {
        match &self.filter {
            // The condition evaluated on the value itself: no copy of it.
            Some(f) => holds(f, value),
            None => {
                // A filter selects children, so the value is wrapped in a one-element list.
                let wrapped = Value::Array(vec![value.clone()]);
                !self.query.query(&wrapped).is_empty()
            }
        }
    }
}

/// Whether `value` satisfies a filter condition, `@` being `value`.
fn holds(f: &Filter, value: &Value) -> bool {
    match f {
        Filter::Or(any) => any.iter().any(|f| holds(f, value)),
        Filter::And(all) => all.iter().all(|f| holds(f, value)),
        Filter::Atom(FilterAtom::Filter { expr, not }) => holds(expr, value) != *not,
        Filter::Atom(atom) => atom
            .process(State::root(value))
            .ok_val()
            .and_then(|v| v.as_bool())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn simple_and_full_paths_agree() {
        let v =
            json!({"data": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2}], "meta": {"n x": 3}});
        for (p, expected) in [
            ("$.data[0].sku", Some(json!("A"))),
            ("$.data[-1].qty", Some(json!(2))),
            ("$['meta']['n x']", Some(json!(3))),
            ("$.missing", None),
        ] {
            let path = JsonPath::parse(p).unwrap();
            assert!(matches!(path.plan, Plan::Simple(_)), "{p} should be simple");
            assert_eq!(path.extract(&v), expected, "{p}");
        }
        let full = JsonPath::parse("$.data[*].sku").unwrap();
        assert!(matches!(full.plan, Plan::Full(_)));
        assert_eq!(full.extract(&v), Some(json!(["A", "B"])));
        let filtered = JsonPath::parse("$.data[?@.qty > 1].sku").unwrap();
        assert_eq!(filtered.query(&v), vec![&json!("B")]);
    }

    #[test]
    fn broken_paths_are_rejected() {
        for p in ["$.data[", "data", "$..[?(@.a ==]", "$.a b", "$.a  b.c"] {
            assert!(JsonPath::parse(p).is_err(), "{p} should not parse");
        }
    }

    #[test]
    fn blanks_between_segments_are_allowed() {
        for p in ["$.a .b", "$['a b']", "$[?@.a == 'x y']", "$.a[?@.b && @.c]"] {
            assert!(JsonPath::parse(p).is_ok(), "{p} should parse");
        }
        let e = JsonPath::parse("$.a b").unwrap_err();
        assert!(
            e.reason.contains("unexpected `b` at column 5"),
            "{}",
            e.reason
        );
    }

    #[test]
    fn predicates_test_the_value_itself() {
        let p = Predicate::parse("@.errorText && @.errorText != ''").unwrap();
        assert!(p.matches(&json!({"errorText": "Seria nu exista"})));
        assert!(!p.matches(&json!({"errorText": ""})));
        assert!(!p.matches(&json!({"number": "12"})));
        let s = Predicate::parse("@.status != 200").unwrap();
        assert!(s.matches(&json!({"status": 400})));
        assert!(!s.matches(&json!({"status": 200})));
    }

    #[test]
    fn a_predicate_on_the_value_agrees_with_the_wrapped_filter() {
        let conditions = [
            "@.errorText && @.errorText != ''",
            "@.status != 200",
            "@.error.message",
            "!@.code",
            "@.n > 1 || @.tags[0] == 'x'",
            "length(@.tags) > 1",
            "@.message == 'The web ID on the sale must be unique per shop.'",
            "@ == 3",
        ];
        let values = [
            json!({"errorText": "Seria nu exista", "status": 400}),
            json!({"errorText": "", "status": 200}),
            json!({"error": {"message": "no"}, "n": 2}),
            json!({"code": "x", "tags": ["x", "y"]}),
            json!({"message": "The web ID on the sale must be unique per shop."}),
            json!([1, 2]),
            json!(3),
            json!("text"),
            Value::Null,
        ];
        for c in conditions {
            let p = Predicate::parse(c).unwrap();
            assert!(
                p.filter.is_some(),
                "{c} should be tested on the value itself"
            );
            for v in &values {
                let wrapped = Value::Array(vec![v.clone()]);
                let expected = !p.query.query(&wrapped).is_empty();
                assert_eq!(p.matches(v), expected, "{c} on {v}");
            }
        }
        // A condition that reads the root still sees the list around the value.
        let root = Predicate::parse("$[0].a == 1").unwrap();
        assert!(root.filter.is_none());
        assert!(root.matches(&json!({"a": 1})));
        assert!(!root.matches(&json!({"a": 2})));
    }
}
