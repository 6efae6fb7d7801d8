//! JSONPath (RFC 9535) queries. Simple member/index chains such as `$.data.items[0].sku`, the
//! bulk of every mapping, are evaluated by a direct walk; everything else goes through
//! jsonpath-rust.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};

use jsonpath_rust::parser::model::{Filter, FilterAtom, JpQuery, Segment, Selector};
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::state::State;
use jsonpath_rust::query::{Query, js_path_process};
use serde_json::{Map, Value};

/// A JSONPath that failed to parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid JSONPath `{path}`: {reason}")]
pub struct JsonPathParseError {
    pub path: String,
    pub reason: String,
}

#[derive(Clone)]
enum Step {
    Key(Member),
    Index(i64),
}

/// A member name, with where it was last found. Records of one API list their members in
/// the same order, so the position of the last record's member is nearly always this one's:
/// one comparison instead of hashing the name (`serde_json`'s map hashes with SipHash).
struct Member {
    name: String,
    at: AtomicU32,
}

/// Objects up to this size are scanned for a member the hint missed; larger ones hashed.
const SCAN: usize = 32;

impl Member {
    fn new(name: String) -> Self {
        Member {
            name,
            at: AtomicU32::new(0),
        }
    }

    /// Where the member was last found: where to look first.
    fn hint(&self) -> usize {
        self.at.load(Ordering::Relaxed) as usize
    }

    fn found_at(&self, position: usize) {
        self.at.store(position as u32, Ordering::Relaxed);
    }

    fn get<'a>(&self, m: &'a Map<String, Value>) -> Option<&'a Value> {
        if let Some((name, v)) = m.iter().nth(self.hint())
            && *name == self.name
        {
            return Some(v);
        }
        if m.len() > SCAN {
            return m.get(&self.name);
        }
        let (i, (_, v)) = m.iter().enumerate().find(|(_, (n, _))| **n == self.name)?;
        self.found_at(i);
        Some(v)
    }

    fn get_mut<'a>(&self, m: &'a mut Map<String, Value>) -> Option<&'a mut Value> {
        let hint = self.hint();
        let hit = m
            .iter()
            .nth(hint)
            .is_some_and(|(name, _)| *name == self.name);
        let at = if hit {
            hint
        } else if m.len() > SCAN {
            return m.get_mut(&self.name);
        } else {
            let i = m.keys().position(|n| *n == self.name)?;
            self.found_at(i);
            i
        };
        m.iter_mut().nth(at).map(|(_, v)| v)
    }
}

impl Clone for Member {
    fn clone(&self) -> Self {
        Member {
            name: self.name.clone(),
            at: AtomicU32::new(self.at.load(Ordering::Relaxed)),
        }
    }
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
                Some(Step::Key(k)) => Some(&k.name),
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
                (Step::Key(k), Value::Object(m)) => k.get_mut(m)?,
                (Step::Index(i), Value::Array(a)) => {
                    let idx = if *i < 0 { a.len() as i64 + i } else { *i };
                    a.get_mut(usize::try_from(idx).ok()?)?
                }
                _ => return None,
            };
        }
        Some(v)
    }

    /// For a chain that starts with a member (`$.price`, `$.stock.qty`): that member's name,
    /// and what the rest of the chain selects in a value of that member. `None` for other
    /// paths.
    pub(crate) fn split_at_member(&self) -> Option<AtMember<'_>> {
        let Plan::Simple(steps) = &self.plan else {
            return None;
        };
        match steps.split_first() {
            Some((Step::Key(k), rest)) => Some(AtMember {
                name: &k.name,
                rest,
            }),
            _ => None,
        }
    }

    /// The names of a path that is a chain of members only (`$.data`, `$.result.items`).
    pub(crate) fn member_names(&self) -> Option<Vec<String>> {
        let Plan::Simple(steps) = &self.plan else {
            return None;
        };
        steps
            .iter()
            .map(|s| match s {
                Step::Key(k) => Some(k.name.clone()),
                Step::Index(_) => None,
            })
            .collect()
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
            (Step::Key(k), Value::Object(m)) => k.get(m)?,
            (Step::Index(i), Value::Array(a)) => {
                let idx = if *i < 0 { a.len() as i64 + i } else { *i };
                a.get(usize::try_from(idx).ok()?)?
            }
            _ => return None,
        };
    }
    Some(v)
}

/// A simple path split after its first member (`JsonPath::split_at_member`).
#[derive(Clone, Copy)]
pub(crate) struct AtMember<'p> {
    pub(crate) name: &'p str,
    rest: &'p [Step],
}

impl AtMember<'_> {
    /// What the path selects in a record whose first member's value is `value`: the
    /// path's `first` of that record.
    pub(crate) fn first<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        walk(self.rest, value)
    }

    /// Whether the path is the member alone.
    pub(crate) fn is_whole(&self) -> bool {
        self.rest.is_empty()
    }
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
            steps.push(Step::Key(Member::new(r[..end].to_string())));
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
                steps.push(Step::Key(Member::new(q.to_string())));
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

    /// The condition as written inside the filter.
    pub(crate) fn source(&self) -> &str {
        let whole = self.query.source();
        whole
            .strip_prefix("$[?")
            .and_then(|c| c.strip_suffix(']'))
            .unwrap_or(whole)
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

    /// One compiled path over records whose members come in different orders, sizes and
    /// absences: the position remembered from the record before never picks the wrong
    /// member.
    #[test]
    fn a_member_is_found_whatever_the_order_of_the_record_before() {
        let path = JsonPath::parse("$.item.price").unwrap();
        let wide: serde_json::Map<String, Value> = (0..40)
            .map(|i| (format!("f{i}"), json!(i)))
            .chain([("price".to_string(), json!("wide"))])
            .collect();
        let records = [
            (json!({"item": {"sku": "A", "price": 1}}), Some(json!(1))),
            (json!({"item": {"price": 2, "sku": "B"}}), Some(json!(2))),
            (json!({"item": {"sku": "C"}}), None),
            (
                json!({"item": {"a": 0, "b": 0, "price": 3}}),
                Some(json!(3)),
            ),
            (json!({"item": {"price": 4}}), Some(json!(4))),
            (json!({"item": wide}), Some(json!("wide"))),
            (
                json!({"price": 5, "item": {"sku": "D", "price": 6}}),
                Some(json!(6)),
            ),
            (json!({"item": {"sku": "E", "prices": 7}}), None),
        ];
        for (record, expected) in records {
            assert_eq!(path.extract(&record), expected, "in {record}");
            let mut changed = record.clone();
            match path.first_mut(&mut changed) {
                Some(slot) => *slot = json!("set"),
                None => assert!(expected.is_none(), "no slot in {record}"),
            }
            if expected.is_some() {
                assert_eq!(path.first(&changed), Some(&json!("set")), "in {record}");
                let mut others = changed.clone();
                others["item"].as_object_mut().unwrap().remove("price");
                let mut before = record.clone();
                before["item"].as_object_mut().unwrap().remove("price");
                assert_eq!(others, before, "only the member was set in {record}");
            }
        }
    }

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
