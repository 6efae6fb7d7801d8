//! A YAML document read into JSON values plus the line and column of every key and value, so
//! that any problem found later, by path, can point at its place in the file.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::Spanned;

/// Line and column, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

/// A parsed document: its value and where each path is.
#[derive(Debug, Default)]
pub struct LocatedDoc {
    pub value: Value,
    /// Position of the value at a path (`flows.a.trigger.schedule`).
    values: HashMap<String, Pos>,
    /// Position of the key that names a path, when it is a map entry.
    keys: HashMap<String, Pos>,
}

impl LocatedDoc {
    /// Where the value at `path` is; falls back to the closest enclosing path.
    pub(crate) fn value_pos(&self, path: &str) -> Pos {
        self.lookup(path, &self.values)
    }

    /// Where the key of `path` is (for "unknown key" problems); falls back to the value.
    pub(crate) fn key_pos(&self, path: &str) -> Pos {
        self.keys
            .get(path)
            .copied()
            .unwrap_or_else(|| self.value_pos(path))
    }

    fn lookup(&self, path: &str, map: &HashMap<String, Pos>) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = map.get(p) {
                return *pos;
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None => return map.get("").copied().unwrap_or(Pos { line: 1, col: 1 }),
            }
        }
    }
}

/// A YAML problem that stops the file from being read at all.
#[derive(Debug)]
pub struct YamlParseError {
    pub message: String,
    pub pos: Pos,
    /// What to do about it, when the parser's words do not say.
    pub help: Option<String>,
}

/// Parses YAML text. Booleans follow YAML 1.2 (`no` stays the string "no").
pub fn parse(text: &str) -> Result<LocatedDoc, YamlParseError> {
    let options = serde_saphyr::options! { strict_booleans: true };
    if text.trim().is_empty() {
        return Ok(LocatedDoc {
            value: Value::Object(Map::new()),
            ..Default::default()
        });
    }
    let root: Spanned<Node> = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let pos = e
            .location()
            .map(|l| Pos {
                line: l.line() as u32,
                col: l.column() as u32,
            })
            .unwrap_or(Pos { line: 1, col: 1 });
        let message = first_line(&e.without_snippet().to_string());
        // The breach may come wrapped; its words are what the parser prints.
        let message = match message.strip_prefix("budget breached: ") {
            Some(rest) => budget_message(rest),
            None => message,
        };
        // `{ path: $.variants[0].price }`: inside `{ }` the `[` and `]` are YAML's own.
        let line = text
            .lines()
            .nth((pos.line as usize).saturating_sub(1))
            .unwrap_or("");
        let help = (message.contains("flow mapping") || message.contains("flow sequence"))
            .then_some(())
            .filter(|_| line.contains('$') && (line.contains('[') || line.contains(']')))
            .map(|_| {
                "inside `{ … }` or `[ … ]` YAML reads `[`, `]` and `,` itself: quote a JSONPath \
                 that has them, e.g. `{ path: \"$.variants[0].price\" }`"
                    .to_string()
            });
        YamlParseError { message, pos, help }
    })?;
    let mut doc = LocatedDoc::default();
    doc.value = flatten(root, String::new(), &mut doc.values, &mut doc.keys);
    Ok(doc)
}

/// A breached parser limit (`Nodes { nodes: 250001 } at line …`), in words.
fn budget_message(breach: &str) -> String {
    let kind = breach.split([' ', '{']).next().unwrap_or("");
    match kind {
        "Nodes" => "the file has more than 250,000 YAML nodes (values, lists and maps); split \
                    it into several files of the project"
            .into(),
        "Events" => "the file is too large to read (more than 1,000,000 YAML events); split it \
                     into several files of the project"
            .into(),
        "Depth" => "values are nested more than 64 levels deep".into(),
        "Aliases" | "Anchors" | "AliasAnchorRatio" => {
            "the file repeats too much through YAML anchors and aliases (`&a`, `*a`)".into()
        }
        "ScalarBytes" => "the file holds too much text in its values".into(),
        "Documents" => "the file holds too many YAML documents (`---`)".into(),
        _ => format!("the file exceeds a limit of the YAML reader ({breach})"),
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// Joins a document path with a key.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn pos_of<T>(s: &Spanned<T>) -> Pos {
    Pos {
        line: s.referenced.line() as u32,
        col: s.referenced.column() as u32,
    }
}

fn flatten(
    node: Spanned<Node>,
    path: String,
    values: &mut HashMap<String, Pos>,
    keys: &mut HashMap<String, Pos>,
) -> Value {
    values.insert(path.clone(), pos_of(&node));
    match node.value {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(b),
        Node::Num(n) => Value::Number(n),
        Node::Str(s) => Value::String(s),
        Node::Seq(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| flatten(item, join(&path, &i.to_string()), values, keys))
                .collect(),
        ),
        Node::Map(entries) => {
            let mut map = Map::new();
            for (k, v) in entries {
                let child = join(&path, &k.value);
                keys.insert(child.clone(), pos_of(&k));
                let value = flatten(v, child, values, keys);
                map.insert(k.value, value);
            }
            Value::Object(map)
        }
    }
}

/// An untyped YAML node whose children carry their spans.
enum Node {
    Null,
    Bool(bool),
    Num(Number),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Num(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Num(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        // .inf and .nan have no JSON form; keep them as text rather than fail the file.
        Ok(Number::from_f64(v)
            .map(Node::Num)
            .unwrap_or_else(|| Node::Str(v.to_string())))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Node, E> {
        Ok(Node::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
            let value = map.next_value::<Spanned<Node>>()?;
            let key = Spanned::new(key.value.0, key.referenced, key.defined);
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

/// A map key as text, whatever its YAML type (`200:` is a number key).
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar map key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<KeyText, E> {
                Ok(KeyText(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyText, E> {
                Ok(KeyText("null".into()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_keys_and_values() {
        let doc = parse("a:\n  b: 1\n  c:\n    - x\n    - y: 2\n").unwrap();
        assert_eq!(doc.key_pos("a.b"), Pos { line: 2, col: 3 });
        assert_eq!(doc.value_pos("a.b"), Pos { line: 2, col: 6 });
        assert_eq!(doc.value_pos("a.c.1.y"), Pos { line: 5, col: 10 });
        assert_eq!(doc.key_pos("a.c.1.y"), Pos { line: 5, col: 7 });
        // Unknown paths fall back to the closest known parent.
        assert_eq!(doc.value_pos("a.b.zzz"), Pos { line: 2, col: 6 });
        assert_eq!(doc.value["a"]["c"][1]["y"], 2);
    }

    #[test]
    fn yaml_12_booleans_and_errors() {
        let doc = parse("country: no\nok: true\n").unwrap();
        assert_eq!(doc.value["country"], "no");
        assert_eq!(doc.value["ok"], true);
        let err = parse("a: [1, 2\n").unwrap_err();
        assert!(err.pos.line >= 1);
    }
}
