//! An operation's `records` path, and the parent each record of a nested listing keeps.
//!
//! A path with two wildcards or more (`$.products[*].variants[*]`) flattens a listing of
//! listings. Each record it selects keeps the element of the wildcard above its own (the
//! product of a variant) as its parent, read-only context for read mappings (`$parent.…`,
//! `{{parent.…}}`). With three levels or more, a parent holds its own parent as its member
//! `parent` (`$parent.parent.…`, the shop of a variant's product), unless it has a member of
//! that name. The parents are shared (`Arc`) by all their records, and a parent's copy leaves
//! out the list its records came from, so a page is held about once.

use std::sync::Arc;

use serde_json::Value;

use crate::expr::JsonPath;

/// The wildcard that separates a nested path's levels.
const WILDCARD: &str = "[*]";

/// A compiled `records` path.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RecordsPath {
    whole: JsonPath,
    nested: Option<Nested>,
}

/// A nested path cut at each wildcard.
#[derive(Debug, Clone, PartialEq)]
struct Nested {
    /// Selects the elements of the outermost list, what a page is counted in.
    outer: JsonPath,
    /// Each level below: selects the next level's elements from an element of this one.
    levels: Vec<Level>,
}

#[derive(Debug, Clone, PartialEq)]
struct Level {
    path: JsonPath,
    /// The member holding the level's elements (`variants` of `$.variants[*]`), left out of
    /// the copy its records keep as their parent.
    member: Option<String>,
}

/// The member of a parent's copy that holds its own parent.
const PARENT: &str = "parent";

/// What a `records` path selects: the records, and for a nested path each record's parent.
#[derive(Debug, Clone, Default)]
pub(crate) struct Extracted {
    pub(crate) records: Vec<Value>,
    /// Empty, or one entry per record.
    pub(crate) parents: Vec<Option<Arc<Value>>>,
    /// Elements of the outermost list the response holds: what a page's size counts (the
    /// products of a page, not their variants). The number of records for a flat path.
    pub(crate) listed: usize,
}

impl RecordsPath {
    /// Compiles a `records` path.
    pub(crate) fn new(whole: JsonPath) -> Self {
        let nested = split(whole.as_str());
        RecordsPath { whole, nested }
    }

    /// Whether the records a `records` path (as written) selects have a parent.
    pub(crate) fn nests(source: &str) -> bool {
        split(source).is_some()
    }

    /// The chain of members a flat path's list is at (`$.data` → `data`): the records are
    /// that list's elements. `None` for a nested path, or one with indexes or wildcards.
    pub(crate) fn member_chain(&self) -> Option<Vec<String>> {
        if self.nested.is_some() {
            return None;
        }
        self.whole.member_names()
    }

    /// Whether records selected by the path have a parent.
    #[cfg(test)]
    pub(crate) fn is_nested(&self) -> bool {
        self.nested.is_some()
    }

    /// The records a response body holds: the items of an array, one record for an object.
    pub(crate) fn extract(&self, body: &Value) -> Extracted {
        let Some(n) = &self.nested else {
            let records = list_at(&self.whole, body);
            return Extracted {
                listed: records.len(),
                records,
                parents: Vec::new(),
            };
        };
        let outer = n.outer.query(body);
        let mut out = Extracted {
            listed: outer.len(),
            ..Extracted::default()
        };
        for element in outer {
            n.descend(element, 0, None, &mut out);
        }
        out
    }
}

impl RecordsPath {
    /// Why a response body is not a page of the path's records, if it is not: it lacks the
    /// member the records are read from (`$.data` of `{"error": …}`, where an empty page holds
    /// it empty or null), or, for records that are the body itself (`$`), it is an object
    /// rather than their list. Only a plain chain of members is asked; a body of any other
    /// path is never refused.
    pub(crate) fn not_a_page(&self, body: &Value) -> Option<String> {
        if self.nested.is_some() || !self.whole.is_simple() || !body.is_object() {
            return None;
        }
        match self.whole.first(body) {
            None => Some(format!("the answer has no `{}`", self.source())),
            Some(Value::Object(_)) if self.whole.member_names()?.is_empty() => {
                Some("the answer is an object, not a list of records".to_string())
            }
            Some(_) => None,
        }
    }

    /// The path as written.
    pub(crate) fn source(&self) -> &str {
        self.whole.source()
    }

    /// How many elements of the outermost list a response body holds (`listed` of
    /// `extract`), without copying them.
    pub(crate) fn count(&self, body: &Value) -> usize {
        match &self.nested {
            Some(n) => n.outer.query(body).len(),
            None if self.whole.is_simple() => match self.whole.first(body) {
                None | Some(Value::Null) => 0,
                Some(Value::Array(items)) => items.len(),
                Some(_) => 1,
            },
            None => self.whole.query(body).len(),
        }
    }

    /// `extract`, taking the records out of the body instead of copying them where the path
    /// is a plain chain of members (`$.data`, the common case): the body is left with
    /// `null` where the records were. Other paths copy, as `extract` does.
    pub(crate) fn take(&self, body: &mut Value) -> Extracted {
        if self.nested.is_none()
            && let Some(slot) = self.whole.first_mut(body)
        {
            let records = match std::mem::take(slot) {
                Value::Null => Vec::new(),
                Value::Array(items) => items,
                other => vec![other],
            };
            return Extracted {
                listed: records.len(),
                records,
                parents: Vec::new(),
            };
        }
        self.extract(body)
    }
}

impl Nested {
    /// Collects the records below `element`, an element of level `depth`, whose own parent
    /// (if any) is `above`.
    fn descend(
        &self,
        element: &Value,
        depth: usize,
        above: Option<&Arc<Value>>,
        out: &mut Extracted,
    ) {
        let level = &self.levels[depth];
        let children = list_at(&level.path, element);
        if children.is_empty() {
            return;
        }
        let mut copy = element.clone();
        if let Value::Object(m) = &mut copy {
            if let Some(member) = &level.member {
                m.remove(member);
            }
            if let Some(above) = above {
                m.entry(PARENT).or_insert_with(|| (**above).clone());
            }
        }
        let shared = Arc::new(copy);
        if depth + 1 == self.levels.len() {
            out.parents
                .extend(std::iter::repeat_n(Some(shared), children.len()));
            out.records.extend(children);
        } else {
            for child in &children {
                self.descend(child, depth + 1, Some(&shared), out);
            }
        }
    }
}

/// The list a path selects: the items of an array, one value for anything else but null.
fn list_at(path: &JsonPath, v: &Value) -> Vec<Value> {
    match path.extract(v) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items,
        Some(other) => vec![other],
    }
}

/// Cuts `$.a[*].b[*].c[*]` into `$.a[*]`, `$.b[*]` and `$.c[*]`; `None` for a path with one
/// wildcard or none.
fn split(source: &str) -> Option<Nested> {
    let ends: Vec<usize> = source
        .match_indices(WILDCARD)
        .map(|(at, w)| at + w.len())
        .collect();
    if ends.len() < 2 {
        return None;
    }
    let outer = JsonPath::parse(&source[..ends[0]]).ok()?;
    let mut levels = Vec::with_capacity(ends.len() - 1);
    for pair in ends.windows(2) {
        let rest = &source[pair[0]..pair[1]];
        let path = JsonPath::parse(&format!("${rest}")).ok()?;
        let member = rest
            .strip_prefix('.')
            .and_then(|r| r.strip_suffix(WILDCARD))
            .filter(|m| !m.is_empty() && m.chars().all(|c| c.is_alphanumeric() || c == '_'))
            .map(str::to_string);
        levels.push(Level { path, member });
    }
    Some(Nested { outer, levels })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(s: &str) -> RecordsPath {
        RecordsPath::new(JsonPath::parse(s).unwrap())
    }

    #[test]
    fn a_flat_path_has_no_parents() {
        let p = path("$.data");
        assert!(!p.is_nested());
        let got = p.extract(&json!({"data": [{"sku": "A"}, {"sku": "B"}]}));
        assert_eq!(got.records, vec![json!({"sku": "A"}), json!({"sku": "B"})]);
        assert!(got.parents.is_empty());
        assert_eq!(got.listed, 2);
        assert!(!path("$.data[*]").is_nested());
    }

    #[test]
    fn taking_records_gives_what_extracting_copies() {
        let bodies = [
            json!({"data": [{"sku": "A"}, {"sku": "B"}], "meta": {"total": 2}}),
            json!({"data": {"sku": "A"}}),
            json!({"data": null}),
            json!({"other": []}),
            json!([{"sku": "A"}]),
            json!({"data": [{"name": "Shirt", "variants": [{"sku": "S-1"}]}]}),
        ];
        for p in [
            "$.data",
            "$",
            "$.data[*]",
            "$.data[*].variants[*]",
            "$['data']",
        ] {
            let p = path(p);
            for body in &bodies {
                let copied = p.extract(body);
                assert_eq!(p.count(body), copied.listed, "{p:?} on {body}");
                let mut taken_from = body.clone();
                let taken = p.take(&mut taken_from);
                assert_eq!(taken.records, copied.records, "{p:?} on {body}");
                assert_eq!(taken.listed, copied.listed, "{p:?} on {body}");
                assert_eq!(taken.parents, copied.parents, "{p:?} on {body}");
            }
        }
        // The records leave the body; the rest of it stays.
        let mut body = json!({"data": [{"sku": "A"}], "meta": {"total": 1}});
        path("$.data").take(&mut body);
        assert_eq!(body, json!({"data": null, "meta": {"total": 1}}));
    }

    #[test]
    fn nested_records_keep_their_parent() {
        let body = json!({"data": [
            {"name": "Shirt", "variants": [{"sku": "S-1"}, {"sku": "S-2"}]},
            {"name": "Mug", "variants": []},
            {"name": "Cap", "variants": [{"sku": "C-1"}]}
        ]});
        let p = path("$.data[*].variants[*]");
        assert!(p.is_nested());
        let got = p.extract(&body);
        let skus: Vec<&Value> = got.records.iter().map(|r| &r["sku"]).collect();
        assert_eq!(skus, vec!["S-1", "S-2", "C-1"]);
        assert_eq!(
            got.listed, 3,
            "a page counts its products, the mug included"
        );
        let names: Vec<Value> = got
            .parents
            .iter()
            .map(|p| p.as_ref().unwrap()["name"].clone())
            .collect();
        assert_eq!(names, vec![json!("Shirt"), json!("Shirt"), json!("Cap")]);
        // The records themselves are as served, the parent is shared and without the list.
        assert_eq!(got.records[1], json!({"sku": "S-2"}));
        let (a, b) = (
            got.parents[0].as_ref().unwrap(),
            got.parents[1].as_ref().unwrap(),
        );
        assert!(Arc::ptr_eq(a, b));
        assert_eq!(**a, json!({"name": "Shirt"}));
    }

    #[test]
    fn every_level_up_is_reached_through_the_parents_parent() {
        let body = json!({"data": [
            {"id": "w1", "name": "Cluj", "aisles": [
                {"code": "A", "parent": "keep", "bins": [{"sku": "B-1"}, {"sku": "B-2"}]},
                {"code": "B", "bins": []}
            ]},
            {"id": "w2", "name": "Iasi", "aisles": [{"code": "C", "bins": [{"sku": "B-3"}]}]}
        ]});
        let got = path("$.data[*].aisles[*].bins[*]").extract(&body);
        let skus: Vec<&str> = got
            .records
            .iter()
            .map(|r| r["sku"].as_str().unwrap())
            .collect();
        assert_eq!(skus, vec!["B-1", "B-2", "B-3"]);
        assert_eq!(got.listed, 2, "the warehouses");
        let third = got.parents[2].as_ref().unwrap();
        assert_eq!(third["code"], "C");
        assert_eq!(third["parent"], json!({"id": "w2", "name": "Iasi"}));
        // An aisle with a `parent` of its own keeps it: the record's own data wins.
        assert_eq!(got.parents[0].as_ref().unwrap()["parent"], "keep");
        assert!(Arc::ptr_eq(
            got.parents[0].as_ref().unwrap(),
            got.parents[1].as_ref().unwrap()
        ));
    }

    #[test]
    fn the_parent_is_the_nearest_level_up() {
        let body = json!({"shops": [{"id": 1, "products": [
            {"name": "Shirt", "variants": [{"sku": "S-1"}]}
        ]}]});
        let got = path("$.shops[*].products[*].variants[*]").extract(&body);
        assert_eq!(got.records, vec![json!({"sku": "S-1"})]);
        assert_eq!(got.listed, 1, "the shops");
        assert_eq!(
            *got.parents[0].clone().unwrap(),
            json!({"name": "Shirt", "parent": {"id": 1}}),
            "the product, holding its shop as its parent"
        );
        // Records below a member of their list's element: the parent keeps everything.
        let body = json!({"data": [{"name": "Shirt", "x": {"variants": [{"sku": "S-1"}]}}]});
        let got = path("$.data[*].x.variants[*]").extract(&body);
        assert_eq!(got.parents[0].as_ref().unwrap()["name"], "Shirt");
        assert!(got.parents[0].as_ref().unwrap()["x"].is_object());
    }
}
