//! JSON text to a `Value` whose objects are allocated once, at their final size.
//!
//! Text is read by `scan`, which falls back on `serde_json`'s deserializer for what it is
//! not sure of (errors above all, so their messages and positions are `serde_json`'s).
//!
//! `serde_json`'s own `Value` parser starts every object empty and grows it key by key: a
//! 20-field record reallocates its entries and its hash table several times over. Here the
//! entries of the objects being read wait on one stack shared by the whole document, and
//! each object is built from its finished slice in one allocation; an object with the
//! names of one built before, in the same order (the records of a listing), is built as a
//! copy of that one's shape, its names neither allocated nor hashed again. The value is the
//! one `serde_json::from_slice` gives, duplicate keys included (the last value wins, at the
//! first one's place).

use std::fmt;
use std::hash::{Hash, Hasher};

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

pub(crate) mod packed;
mod scan;

/// Drops `v`, without a call where it owns nothing. `Value`'s drop is out of line, so
/// dropping a null, a boolean or a number still cost a call (some 25 instructions), and a
/// listing leaves millions of those behind: the null placeholders of members being read,
/// the places values were taken from, numbers converted into new ones.
#[inline(always)]
pub(crate) fn drop_value(v: Value) {
    match v {
        // Nothing to free: a number owns no memory (no `arbitrary_precision`, checked below).
        Value::Null | Value::Bool(_) | Value::Number(_) => std::mem::forget(v),
        owning => drop(owning),
    }
}

const _: () = assert!(
    !std::mem::needs_drop::<Number>(),
    "`drop_value` forgets numbers: they must own no memory"
);

/// `*slot = v`, what `slot` held dropped as `drop_value` drops it.
#[inline(always)]
pub(crate) fn put_value(slot: &mut Value, v: Value) {
    drop_value(std::mem::replace(slot, v));
}

/// Drops `values` as `drop_value` drops each.
pub(crate) fn drop_values(values: Vec<Value>) {
    values.into_iter().for_each(drop_value);
}

/// `n` nulls. `vec![Value::Null; n]` clones its element into every place, a call of
/// `Value::clone` each (a page's records take some 330 instructions apiece that way).
pub(crate) fn nulls(n: usize) -> Vec<Value> {
    let mut values = Vec::with_capacity(n);
    values.resize_with(n, || Value::Null);
    values
}

/// Parses `bytes` as one JSON document (a response body, a record kept as text).
///
/// The whole document is checked to be UTF-8 once, up front, and parsed as text: parsed as
/// bytes, `serde_json` checks every string on its own, which cost more than the check of
/// the whole body (a string at a time was 3.7% of a first sync's instructions). Bytes that
/// are not UTF-8 are parsed as bytes, for `serde_json`'s own error and its position.
pub(crate) fn from_slice(bytes: &[u8]) -> serde_json::Result<Value> {
    match std::str::from_utf8(bytes) {
        Ok(text) => from_str(text),
        Err(_) => parse(serde_json::Deserializer::from_slice(bytes)),
    }
}

/// Parses `text` as one JSON document: read by `scan`, or by `serde_json` where `scan` is
/// not sure of it (a syntax error among them, for `serde_json`'s message and position).
pub(crate) fn from_str(text: &str) -> serde_json::Result<Value> {
    let mut scanner = scan::Scanner::new(text);
    let mut parser = Parser::new();
    if let Some(value) = scanner.value(&mut parser)
        && scanner.end().is_some()
    {
        return Ok(value);
    }
    parse(serde_json::Deserializer::from_str(text))
}

/// The one document `de` reads, and nothing after it.
fn parse<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
) -> serde_json::Result<Value> {
    let mut parser = Parser::new();
    let value = Node(&mut parser).deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// `value` as compact JSON text, as its `Display` writes it, byte for byte. Written
/// straight into a string: a string with nothing to escape (nearly all of them) is checked
/// eight bytes at a step and copied whole, where `serde_json` looks each byte up in its
/// escape table; one that needs escapes is written by `serde_json`.
pub(crate) fn to_text(value: &Value) -> String {
    // Texts written one after another are the records of one kind, of about one length:
    // the last one's, with some room, is allocated at once instead of grown twice or more.
    thread_local! {
        static LAST: std::cell::Cell<usize> = const { std::cell::Cell::new(256) };
    }
    let mut out = String::with_capacity(LAST.get() + LAST.get() / 8);
    write_text(value, &mut out);
    LAST.set(out.len().clamp(64, 64 * 1024));
    out
}

fn write_text(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_text(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(k, out);
                out.push(':');
                write_text(v, out);
            }
            out.push('}');
        }
    }
}

/// A number as its `Display` writes it (its JSON form): integers by `itoa`, floats (always
/// finite in a `Value`) by `zmij`, the crates `serde_json` writes them with. Called
/// directly, not through `write!`, whose formatting machinery cost more than the digits.
fn write_number(n: &Number, out: &mut String) {
    if let Some(u) = n.as_u64() {
        out.push_str(itoa::Buffer::new().format(u));
    } else if let Some(i) = n.as_i64() {
        out.push_str(itoa::Buffer::new().format(i));
    } else if let Some(f) = n.as_f64() {
        out.push_str(zmij::Buffer::new().format_finite(f));
    }
}

fn write_str(s: &str, out: &mut String) {
    if needs_escape(s.as_bytes()) {
        // `Display` of a string value: its JSON form, escapes included (and no error to
        // handle, where serialising a `&str` returns one that cannot happen).
        out.push_str(&Value::String(s.to_owned()).to_string());
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

/// Whether JSON escapes a byte of `bytes`: a quote, a backslash or a control character.
/// (Every other byte, UTF-8 sequences included, is written as it is.) Eight bytes at a step.
fn needs_escape(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(8);
    let any_word = chunks.by_ref().any(|c| {
        let word = u64::from_le_bytes(c.try_into().expect("eight bytes"));
        specials(word) != 0
    });
    any_word
        || chunks
            .remainder()
            .iter()
            .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `w` that is a quote, a backslash or a control character;
/// the lowest set bit marks the first of them exactly (borrows only spill upwards).
#[inline]
fn specials(w: u64) -> u64 {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    zero(w ^ (ONES * u64::from(b'"')))
        | zero(w ^ (ONES * u64::from(b'\\')))
        | (w.wrapping_sub(ONES * 0x20) & !w & HIGHS)
}

/// Feeds a JSON value to a hasher without rendering it (a listing's pages, the fingerprints
/// of what it served): kinds, numbers, strings, members in order.
pub(crate) fn hash_value(v: &Value, h: &mut impl Hasher) {
    match v {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => (1u8, b).hash(h),
        Value::Number(n) => {
            2u8.hash(h);
            match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => i.hash(h),
                (None, Some(u)) => u.hash(h),
                _ => n.as_f64().unwrap_or(f64::NAN).to_bits().hash(h),
            }
        }
        Value::String(s) => (3u8, s).hash(h),
        Value::Array(items) => {
            (4u8, items.len()).hash(h);
            for item in items {
                hash_value(item, h);
            }
        }
        Value::Object(fields) => {
            (5u8, fields.len()).hash(h);
            for (k, item) in fields {
                k.hash(h);
                hash_value(item, h);
            }
        }
    }
}

/// A listing's page read for a reader that wants only some members of its records
/// (`parse_listing`).
#[derive(Debug)]
pub(crate) struct Listed {
    /// The page, its records' list holding a null for each record: what decides where the
    /// listing goes (its size, its links) is read from it as from the page itself.
    pub(crate) body: Value,
    /// Each record as the values of the members asked for, in their order; null where a
    /// record lacks one.
    pub(crate) records: Vec<Vec<Value>>,
    /// Each record's own text, when asked for (empty otherwise).
    pub(crate) texts: Vec<Box<str>>,
}

/// Parses a listing's page whose records are the list at the chain of members `chain`,
/// reading of each record only the members `members` names: the others are skipped in the
/// text, and no object is built for the record. A member given twice keeps its later value,
/// as parsing the record whole does.
///
/// With `texts`, each record's text is kept as well (`Listed::texts`): the record whole, for
/// whoever needs it later, without parsing it whole now.
///
/// `None` when the page is not made that way (not JSON, no list at the chain, a record
/// that is not an object, the chain's member given twice): the caller parses it whole, and
/// reports what is wrong with it as it would have.
pub(crate) fn parse_listing(
    bytes: &[u8],
    chain: &[String],
    members: &[String],
    texts: bool,
) -> Option<Listed> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut scanner = scan::Scanner::new(text);
    let mut listing = Listing {
        parser: Parser::new(),
        members,
        guess: 0,
        last: Vec::new(),
        records: None,
        texts: texts.then(Vec::new),
    };
    let body = listing.walk(&mut scanner, chain)?;
    scanner.end()?;
    Some(Listed {
        body,
        records: listing.records?,
        texts: listing.texts.unwrap_or_default(),
    })
}

/// What `parse_listing` keeps on its way through a page.
struct Listing<'a, 'c> {
    parser: Parser<'a>,
    members: &'c [String],
    /// Where the next member name is looked for first: records of one listing come with
    /// their members in one order, so it is nearly always the next one after the last found.
    guess: usize,
    /// The members of the last record, in order: each one's text up to its colon, as it
    /// stands in the page, and its place among the members asked for. Records of one listing
    /// come with the same members in the same order, so a member whose text is the one in
    /// the same place in the last record is that member again: its name is neither read nor
    /// looked for.
    last: Vec<(&'a str, Option<usize>)>,
    records: Option<Vec<Vec<Value>>>,
    /// Each record's text, when they are kept.
    texts: Option<Vec<Box<str>>>,
}

impl<'a> Listing<'a, '_> {
    /// The value on the way down `chain` to the records: objects along it read member by
    /// member, the chain's member one step further, the others whole; at its end, the list
    /// of records, each read into `members` and left as a null in the list.
    fn walk(&mut self, s: &mut scan::Scanner<'a>, chain: &[String]) -> Option<Value> {
        let Some((next, rest)) = chain.split_first() else {
            // The records' list, found once.
            if self.records.is_some() {
                return None;
            }
            let mut records = Vec::new();
            s.each(b'[', b']', |s| {
                let start = s.next_at();
                records.push(self.record(s)?);
                if let Some(texts) = &mut self.texts {
                    texts.push(s.since(start).into());
                }
                Some(())
            })?;
            let placeholders = nulls(records.len());
            self.records = Some(records);
            return Some(Value::Array(placeholders));
        };
        let start = self.parser.entries.len();
        s.each(b'{', b'}', |s| {
            let name = s.name()?;
            let value = if name.as_str() == next.as_str() {
                self.walk(s, rest)?
            } else {
                s.value(&mut self.parser)?
            };
            self.parser.entries.push((name, value));
            Some(())
        })?;
        Some(Value::Object(self.parser.object(start)))
    }

    /// One record, an object: the values of `members`, null where it has none. A member
    /// given twice keeps its later value.
    fn record(&mut self, s: &mut scan::Scanner<'a>) -> Option<Vec<Value>> {
        let mut values = nulls(self.members.len());
        let mut k = 0;
        s.each(b'{', b'}', |s| {
            let slot = match self.last.get(k) {
                Some(&(seen, slot)) if s.take(seen) => slot,
                _ => {
                    let start = s.next_at();
                    let name = s.name()?;
                    let slot = self.slot(name.as_str());
                    let seen = (s.since(start), slot);
                    match self.last.get_mut(k) {
                        Some(place) => *place = seen,
                        None => self.last.push(seen),
                    }
                    slot
                }
            };
            k += 1;
            match slot {
                Some(i) => put_value(&mut values[i], s.value(&mut self.parser)?),
                None => s.skip()?,
            }
            Some(())
        })?;
        Some(values)
    }

    /// The place of `name` among the members asked for.
    fn slot(&mut self, name: &str) -> Option<usize> {
        let n = self.members.len();
        let found = (0..n)
            .map(|i| (self.guess + i) % n)
            .find(|&i| self.members[i] == name)?;
        self.guess = found + 1;
        Some(found)
    }
}

/// What parsing one document keeps between its values.
struct Parser<'de> {
    /// The entries of the objects being read, innermost last. A member name without
    /// escapes is borrowed from the text until its object is built.
    entries: Vec<(Name<'de>, Value)>,
    /// Objects built before, as their members' names with null values: the records of one
    /// listing share theirs. An object whose names are one of these, in the same order, is
    /// built as a copy of it (its members keep their hashes) with its values put in place:
    /// no name is allocated, hashed (SipHash, in `serde_json`'s maps) or looked up.
    shapes: Vec<Map<String, Value>>,
    /// The shape the next new one replaces once `SHAPES` are kept.
    next_shape: usize,
}

/// Shapes kept while parsing one document.
const SHAPES: usize = 8;

/// Objects with fewer members are built as they are, not kept as shapes.
const SHAPE_MEMBERS: usize = 4;

impl Parser<'_> {
    fn new() -> Self {
        Parser {
            entries: Vec::new(),
            shapes: Vec::new(),
            next_shape: 0,
        }
    }

    /// The kept shape with the names of the entries from `start`, in their order.
    fn shape_of(&self, start: usize) -> Option<&Map<String, Value>> {
        let entries = &self.entries[start..];
        if entries.len() < SHAPE_MEMBERS {
            return None;
        }
        self.shapes.iter().find(|shape| {
            shape.len() == entries.len()
                && shape
                    .keys()
                    .zip(entries)
                    .all(|(name, (entry, _))| name == entry.as_str())
        })
    }

    /// Builds the object of the entries from `start` and takes them off the stack.
    fn object(&mut self, start: usize) -> Map<String, Value> {
        if let Some(shape) = self.shape_of(start) {
            let mut object = shape.clone();
            for (slot, (_, value)) in object.values_mut().zip(self.entries.drain(start..)) {
                *slot = value;
            }
            return object;
        }
        let members = self.entries.len() - start;
        // `Map` reserves the drained slice's exact length, then inserts in order.
        let object: Map<String, Value> = self
            .entries
            .drain(start..)
            .map(|(name, value)| (name.into_string(), value))
            .collect();
        // A name given twice leaves fewer members than entries: not a shape to copy.
        if members >= SHAPE_MEMBERS && object.len() == members {
            let shape = object.keys().map(|k| (k.clone(), Value::Null)).collect();
            if self.shapes.len() < SHAPES {
                self.shapes.push(shape);
            } else {
                self.shapes[self.next_shape] = shape;
                self.next_shape = (self.next_shape + 1) % SHAPES;
            }
        }
        object
    }
}

/// A member's name: borrowed from the text when it has no escapes.
enum Name<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Name<'_> {
    fn as_str(&self) -> &str {
        match self {
            Name::Borrowed(s) => s,
            Name::Owned(s) => s,
        }
    }

    fn into_string(self) -> String {
        match self {
            Name::Borrowed(s) => s.to_owned(),
            Name::Owned(s) => s,
        }
    }
}

/// Reads a member's name.
struct NameSeed;

impl<'de> DeserializeSeed<'de> for NameSeed {
    type Value = Name<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Name<'de>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NameSeed {
    type Value = Name<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Name<'de>, E> {
        Ok(Name::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<Name<'de>, E> {
        Ok(Name::Owned(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Name<'de>, E> {
        Ok(Name::Owned(s))
    }
}

/// One value, with what parsing its document keeps (the entries of the objects it is
/// inside, the shapes of objects built before).
struct Node<'s, 'de>(&'s mut Parser<'de>);

impl<'de> DeserializeSeed<'de> for Node<'_, 'de> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, 'de> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element_seed(Node(&mut *self.0))? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let start = self.0.entries.len();
        while let Some(name) = map.next_key_seed(NameSeed)? {
            let value = map.next_value_seed(Node(&mut *self.0))?;
            self.0.entries.push((name, value));
        }
        Ok(Value::Object(self.0.object(start)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_parse_to_the_value_serde_json_gives() {
        let docs = [
            r#"{"data":[{"id":1,"sku":"A-1","name":"Scaun \u0103","price":12.5,"tags":["x",{"k":null}],"on":true},{"id":2,"nested":{"a":{"b":{"c":[1,2,{"d":-3}]}}}}],"meta":{"total":2,"next":null}}"#,
            r#"{"a":1,"b":2,"a":3}"#,
            r#"[18446744073709551615,-9223372036854775808,1e308,-0.0,0,1.5e-7]"#,
            r#""just text""#,
            "  null ",
            "[]",
            "{}",
            r#"[{"x":{}},{"y":[[],[{}]]}]"#,
        ];
        for doc in docs {
            let ours = from_slice(doc.as_bytes()).unwrap();
            let theirs: Value = serde_json::from_slice(doc.as_bytes()).unwrap();
            assert_eq!(ours, theirs, "{doc}");
            // Same keys in the same order, not only equal as maps.
            assert_eq!(ours.to_string(), theirs.to_string(), "{doc}");
            // Written back as `Display` writes it, escapes and number forms included.
            assert_eq!(to_text(&ours), theirs.to_string(), "{doc}");
            assert_eq!(from_slice(to_text(&ours).as_bytes()).unwrap(), theirs);
        }
        let escaped =
            serde_json::json!({"q\"\\": "tab\t, nl\n, ctl\u{1}, ă 🙂", "long": "x".repeat(600)});
        assert_eq!(to_text(&escaped), escaped.to_string());
    }

    /// Strings written as `Display` writes them wherever the character to escape falls: in
    /// every position around the sixteen-byte steps of the check, every control character,
    /// DEL and multi-byte characters (not escaped).
    #[test]
    fn strings_are_written_as_display_writes_them() {
        let mut strings: Vec<String> = (0u8..0x20).map(|c| format!("a{}b", c as char)).collect();
        for special in ["\"", "\\", "\n", "\u{7f}", "ă", "🙂", "\u{1}"] {
            for at in [0, 1, 14, 15, 16, 17, 31, 32, 33, 47] {
                let mut s = "x".repeat(48);
                s.insert_str(at, special);
                strings.push(s);
            }
        }
        strings.push(String::new());
        strings.push("plain".into());
        // Numbers of every kind and size, as they are written beside the strings.
        let numbers = serde_json::json!([
            0,
            1,
            -1,
            u64::MAX,
            i64::MIN,
            12.0,
            12.5,
            0.1,
            -0.0,
            1e15,
            1e16,
            1e21,
            1e-7,
            123456789.125,
            -1.5e-300,
            f64::MAX,
            5e-324
        ]);
        assert_eq!(to_text(&numbers), numbers.to_string());
        for s in strings {
            let v = Value::String(s.clone());
            assert_eq!(to_text(&v), v.to_string(), "{s:?}");
            let as_key = serde_json::json!({s.clone(): [1, -2, 2.5, null, true, {"k": s}]});
            assert_eq!(to_text(&as_key), as_key.to_string());
        }
    }

    /// Objects built as copies of an earlier object's shape are the ones `serde_json` gives:
    /// repeated shapes, the same names in another order or with one changed, a name given
    /// twice, names with escapes (equal to one without, or not), nested objects, and more
    /// shapes than are kept, in turn.
    #[test]
    fn objects_of_one_shape_parse_as_serde_json_parses_them() {
        let mut records = vec![
            r#"{"id":1,"sku":"A","name":"x","price":1.5,"tags":{"k":1,"l":2,"m":3,"n":4}}"#
                .to_string(),
            r#"{"id":2,"sku":"B","name":"y","price":2,"tags":{"k":5,"l":6,"m":7,"n":8}}"#.into(),
            r#"{"id":3,"sku":"C","name":"z","price":null,"tags":{}}"#.into(),
            r#"{"sku":"D","id":4,"name":"w","price":3,"tags":[]}"#.into(),
            r#"{"id":5,"sku":"E","nume":"v","price":4,"tags":1}"#.into(),
            r#"{"id":6,"sku":"F","name":"u","id":7,"tags":2}"#.into(),
            r#"{"id":8,"sku":"G","name":"t","price":5,"tags":3}"#.into(),
            r#"{"i\"d":9,"sku":"H","name":"s","price":6,"tags":4}"#.into(),
            r#"{"id":10,"sku":"I","name":"r","price":7,"tags":{"k":1,"l":2,"m":3,"n":4,"o":5}}"#
                .into(),
            r#"{"id":11,"sku":"J","name":"q","price":8,"tags":{"k":9,"l":9,"m":9,"n":9}}"#.into(),
        ];
        // More shapes than are kept, twice over, each seen again after the others.
        for round in 0..2 {
            for n in 0..(SHAPES + 3) {
                let fields: Vec<String> = (0..SHAPE_MEMBERS + n % 3)
                    .map(|i| format!(r#""f{n}_{i}":{}"#, round * 100 + i))
                    .collect();
                records.push(format!("{{{}}}", fields.join(",")));
            }
        }
        records.extend(records.clone());
        let doc = format!(r#"{{"data":[{}],"meta":{{"total":1}}}}"#, records.join(","));
        let ours = from_slice(doc.as_bytes()).unwrap();
        let theirs: Value = serde_json::from_slice(doc.as_bytes()).unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(ours.to_string(), theirs.to_string());
        assert_eq!(from_str(&doc).unwrap().to_string(), theirs.to_string());
    }

    #[test]
    fn what_serde_json_refuses_is_refused() {
        let not_utf8: &[u8] = b"{\"name\":\"caf\xe9\"}";
        let (ours, theirs) = (
            from_slice(not_utf8).unwrap_err(),
            serde_json::from_slice::<Value>(not_utf8).unwrap_err(),
        );
        assert_eq!(ours.to_string(), theirs.to_string());
        // The message and position are `serde_json`'s, wherever the text goes wrong.
        for doc in [
            "{\"a\":1",
            "[1,]",
            "{\"a\":1} x",
            "nul",
            "{1:2}",
            "{\"a\":\"\\ud83d\"}",
            "[1.5e999]",
            "{\"data\":[{\"id\":01}]}",
            "{\"name\":\"tab\there\"}",
        ] {
            let (ours, theirs) = (
                from_slice(doc.as_bytes()).unwrap_err(),
                serde_json::from_slice::<Value>(doc.as_bytes()).unwrap_err(),
            );
            assert_eq!(ours.to_string(), theirs.to_string(), "{doc}");
        }
    }

    /// Pages whose records come with members in one order, in another, with some left out,
    /// given twice, written with escapes or spaces: each record read into its members is
    /// what the record parsed whole holds under those names (the later of a member given
    /// twice), and its kept text is the record.
    #[test]
    fn records_read_into_their_members_are_the_records_read_whole() {
        const NAMES: &[&str] = &[
            "\"sku\":",
            "\"sku\" :",
            "\"s\\u006bu\":",
            "\"name\":",
            "\"price\":",
            "\"extra\":",
            "\"pricey\":",
            "\"nam\":",
        ];
        const VALUES: &[&str] = &[
            "1",
            "\"a\"",
            "null",
            "[1,{\"sku\":2}]",
            "{\"name\":3}",
            "-2.5",
        ];
        let members = ["sku".to_string(), "name".to_string(), "price".to_string()];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut below = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for seed in 0..400 {
            // A few orders of members, repeated from record to record as listings do.
            let orders: Vec<Vec<&str>> = (0..1 + below(3))
                .map(|_| (0..below(6)).map(|_| NAMES[below(NAMES.len())]).collect())
                .collect();
            let records: Vec<String> = (0..1 + below(12))
                .map(|_| {
                    let order = &orders[below(orders.len())];
                    let members: Vec<String> = order
                        .iter()
                        .map(|name| format!("{name}{}", VALUES[below(VALUES.len())]))
                        .collect();
                    format!("{{{}}}", members.join(","))
                })
                .collect();
            let page = format!("{{\"data\": [{}], \"next\": null}}", records.join(", "));
            let chain = ["data".to_string()];
            let listed = parse_listing(page.as_bytes(), &chain, &members, true)
                .unwrap_or_else(|| panic!("seed {seed}: {page}"));
            let whole: Value = serde_json::from_str(&page).unwrap();
            let natives = whole["data"].as_array().unwrap();
            assert_eq!(listed.records.len(), natives.len(), "seed {seed}: {page}");
            for ((values, text), native) in listed.records.iter().zip(&listed.texts).zip(natives) {
                let want: Vec<Value> = members
                    .iter()
                    .map(|m| native.get(m).cloned().unwrap_or(Value::Null))
                    .collect();
                assert_eq!(values, &want, "seed {seed}: {page}");
                assert_eq!(&from_str(text).unwrap(), native, "seed {seed}: {text}");
            }
        }
    }
}
