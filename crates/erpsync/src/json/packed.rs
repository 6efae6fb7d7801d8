//! A `Value` in a compact binary form, read back to the same `Value` (keys in their order,
//! numbers of the same kind and value): how a run's target index keeps its records, and how
//! the SQLite state keeps a binding's bases.
//!
//! The index writes every target record once and reads it back once per source record.
//! As JSON text, that was a serialiser escaping every string and formatting every number,
//! then a parser scanning them back (11% of a first sync's instructions); here a string is
//! its length and its bytes, a number its eight bytes or fewer. A binding's bases were JSON
//! text too, written for every binding a run stores.
//!
//! One byte says what follows: `null`, `false`, `true`; an unsigned or a negative integer
//! (LEB128); a float (8 bytes, little-endian); a string (length, UTF-8 bytes); an array
//! (count, items); an object (count, then per member its key as a string without the tag,
//! and its value).
//!
//! What is stored outside a run (`pack_stored`) starts with a byte naming the form, so that
//! a state file keeps reading after the form changes: a new form is a new first byte, and
//! the old ones stay readable.

use serde_json::{Map, Number, Value};

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const UINT: u8 = 3;
/// A negative integer, as `-(n + 1)` in LEB128.
const NEG: u8 = 4;
const FLOAT: u8 = 5;
const STRING: u8 = 6;
const ARRAY: u8 = 7;
const OBJECT: u8 = 8;

/// `value` in the packed form.
pub(crate) fn pack(value: &Value) -> Box<[u8]> {
    let mut out = Vec::with_capacity(256);
    write(value, &mut out);
    out.into_boxed_slice()
}

/// `pack` of the object whose members are `names` with `values`, in that order (names
/// not repeated), built from them as they are: no object is made only to be packed.
pub(crate) fn pack_object<'n>(
    names: impl ExactSizeIterator<Item = &'n str>,
    values: &[Value],
) -> Box<[u8]> {
    debug_assert_eq!(names.len(), values.len());
    let mut out = Vec::with_capacity(256);
    out.push(OBJECT);
    leb(names.len() as u64, &mut out);
    for (k, v) in names.zip(values) {
        text(k, &mut out);
        write(v, &mut out);
    }
    out.into_boxed_slice()
}

/// `pack_object`, and where each value's bytes are in it, in the order of `values`: the
/// object's `members` without reading them back.
pub(crate) fn pack_object_spans<'n>(
    names: impl ExactSizeIterator<Item = &'n str>,
    values: &[Value],
) -> (Box<[u8]>, Vec<std::ops::Range<usize>>) {
    debug_assert_eq!(names.len(), values.len());
    let mut out = Vec::with_capacity(256);
    let mut spans = Vec::with_capacity(values.len());
    out.push(OBJECT);
    leb(names.len() as u64, &mut out);
    for (k, v) in names.zip(values) {
        text(k, &mut out);
        let start = out.len();
        write(v, &mut out);
        spans.push(start..out.len());
    }
    (out.into_boxed_slice(), spans)
}

/// A member of an object as `pack` writes it within the object: its name, then its value.
pub(crate) fn pack_member(name: &str, value: &Value, out: &mut Vec<u8>) {
    text(name, out);
    write(value, out);
}

/// Where each member of the packed object `packed` is (its name, then its value, as
/// `pack_member` writes them), given where its values are (`pack_object_spans`' spans, in
/// order): a member starts where the one before it ends.
pub(crate) fn member_spans<'b>(
    packed: &[u8],
    spans: &'b [std::ops::Range<usize>],
) -> impl Iterator<Item = std::ops::Range<usize>> + 'b {
    debug_assert_eq!(packed.first(), Some(&OBJECT));
    // The object's tag and its count of members come first.
    let head = 1 + leb_len(spans.len() as u64);
    spans.iter().scan(head, |start, span| {
        let member = *start..span.end;
        *start = span.end;
        Some(member)
    })
}

/// The value `pack` was given, or None when `bytes` were not written by it.
pub(crate) fn unpack(bytes: &[u8]) -> Option<Value> {
    let mut r = Reader { bytes, at: 0 };
    let value = r.value(0)?;
    (r.at == bytes.len()).then_some(value)
}

/// The first byte of a value packed to be stored (`pack_stored`): the form described above.
/// Not a tag of the form, nor a byte that starts JSON text.
const STORED_FORM_1: u8 = 0xB1;

/// `value` packed to be kept outside the run: the form's byte, then `pack` of it.
pub(crate) fn pack_stored(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(STORED_FORM_1);
    write(value, &mut out);
    out
}

/// `pack_stored` of the value `packed` is the `pack` of: the form's byte before it.
pub(crate) fn stored_of_packed(packed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + packed.len());
    out.push(STORED_FORM_1);
    out.extend_from_slice(packed);
    out
}

/// The value `pack_stored` was given, or None when `bytes` were not written by it (another
/// form, damaged, cut short).
pub(crate) fn unpack_stored(bytes: &[u8]) -> Option<Value> {
    match bytes.split_first()? {
        (&STORED_FORM_1, packed) => unpack(packed),
        _ => None,
    }
}

/// A member of a packed object: its name's bytes (UTF-8 when the object was packed), and its
/// value's (a `pack` of it).
pub(crate) type Member<'b> = (&'b [u8], &'b [u8]);

/// The members of the packed object `bytes`, in order. `None` when `bytes` are not a packed
/// object.
pub(crate) fn members(bytes: &[u8]) -> Option<Vec<Member<'_>>> {
    let mut r = Reader { bytes, at: 0 };
    if r.byte()? != OBJECT {
        return None;
    }
    let n = r.count()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.count()?;
        let name = &bytes[r.at..r.at + len];
        r.at += len;
        let start = r.at;
        r.skip(0)?;
        out.push((name, &bytes[start..r.at]));
    }
    (r.at == bytes.len()).then_some(out)
}

/// Whether two packed values are equal as values. Values of other kinds, or scalars other
/// than floats whose bytes differ, are not; floats are compared as numbers (a zero is one
/// value, whatever its sign), arrays and objects read back. `None` when they cannot be read.
pub(crate) fn same_value(x: &[u8], y: &[u8]) -> Option<bool> {
    if x == y {
        return Some(true);
    }
    match (*x.first()?, *y.first()?) {
        (FLOAT, FLOAT) => {
            let f = |b: &[u8]| Some(f64::from_le_bytes(b.get(1..9)?.try_into().ok()?));
            Some(f(x)? == f(y)?)
        }
        (ARRAY, ARRAY) | (OBJECT, OBJECT) => Some(unpack(x)? == unpack(y)?),
        (tag, other) if tag <= OBJECT && other <= OBJECT => Some(false),
        _ => None,
    }
}

/// A member two packed objects hold with different values: its name, `a`'s value and `b`'s.
pub(crate) type Differing<'b> = (&'b [u8], &'b [u8], &'b [u8]);

/// The members where `b`'s values differ from `a`'s, as values. `None` unless both have the
/// same names in the same order, or a value cannot be read.
pub(crate) fn differing<'b>(a: &[Member<'b>], b: &[Member<'b>]) -> Option<Vec<Differing<'b>>> {
    if a.len() != b.len() || a.iter().zip(b).any(|((x, _), (y, _))| x != y) {
        return None;
    }
    let mut differ = Vec::new();
    for (&(name, x), &(_, y)) in a.iter().zip(b) {
        if !same_value(x, y)? {
            differ.push((name, x, y));
        }
    }
    Some(differ)
}

/// `pack` of the object of `b`'s members where they differ from `a`'s (`differing`): what
/// side `b` is kept as beside side `a` (`state::StoredBases`).
pub(crate) fn delta(a: &[Member<'_>], b: &[Member<'_>]) -> Option<Vec<u8>> {
    let differ = differing(a, b)?;
    let members: Vec<Member> = differ.iter().map(|&(name, _, y)| (name, y)).collect();
    Some(object_of(&members))
}

/// `pack` of the object whose members are `members`, their values packed already.
pub(crate) fn object_of(members: &[Member<'_>]) -> Vec<u8> {
    let size: usize = members.iter().map(|(n, v)| n.len() + v.len() + 2).sum();
    let mut out = Vec::with_capacity(size + 4);
    out.push(OBJECT);
    leb(members.len() as u64, &mut out);
    for (name, value) in members {
        leb(name.len() as u64, &mut out);
        out.extend_from_slice(name);
        out.extend_from_slice(value);
    }
    out
}

/// Arrays and objects within one another deeper than this are refused when read back, as
/// `serde_json` refuses them in text: bytes from a damaged file cannot exhaust the stack.
const MAX_DEPTH: usize = 128;

/// Whether `bytes` are what `pack` makes of `value` (the same members in the same order,
/// numbers of the same kind), found without building a value. Bytes `pack` did not write
/// hold nothing.
pub(crate) fn holds(bytes: &[u8], value: &Value) -> bool {
    let mut r = Reader { bytes, at: 0 };
    r.matches(value) && r.at == bytes.len()
}

fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(NULL),
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.push(UINT);
                leb(u, out);
            } else if let Some(i) = n.as_i64() {
                // Negative: `as_u64` took the others. `-(i + 1)` fits, `i64::MIN` included.
                out.push(NEG);
                leb(!(i as u64), out);
            } else {
                out.push(FLOAT);
                out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_le_bytes());
            }
        }
        Value::String(s) => {
            out.push(STRING);
            text(s, out);
        }
        Value::Array(items) => {
            out.push(ARRAY);
            leb(items.len() as u64, out);
            for item in items {
                write(item, out);
            }
        }
        Value::Object(map) => {
            out.push(OBJECT);
            leb(map.len() as u64, out);
            for (k, v) in map {
                text(k, out);
                write(v, out);
            }
        }
    }
}

fn text(s: &str, out: &mut Vec<u8>) {
    leb(s.len() as u64, out);
    out.extend_from_slice(s.as_bytes());
}

/// How many bytes `leb` writes for `n`.
fn leb_len(n: u64) -> usize {
    (64 - (n | 1).leading_zeros() as usize).div_ceil(7)
}

fn leb(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

struct Reader<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn leb(&mut self) -> Option<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(n);
            }
        }
        None
    }

    /// A count of items still to read: never more than the bytes left, so a damaged count
    /// cannot ask for a huge allocation.
    fn count(&mut self) -> Option<usize> {
        let n = usize::try_from(self.leb()?).ok()?;
        (n <= self.bytes.len() - self.at).then_some(n)
    }

    fn text(&mut self) -> Option<String> {
        let n = self.count()?;
        let s = std::str::from_utf8(&self.bytes[self.at..self.at + n]).ok()?;
        self.at += n;
        Some(s.to_owned())
    }

    /// Reads a string and tells whether it is `s`.
    fn text_is(&mut self, s: &str) -> bool {
        match self.count() {
            Some(n) if n == s.len() => {
                let same = &self.bytes[self.at..self.at + n] == s.as_bytes();
                self.at += n;
                same
            }
            _ => false,
        }
    }

    /// Reads a value and tells whether `write` made it of `v`; stops at the first difference.
    fn matches(&mut self, v: &Value) -> bool {
        let Some(tag) = self.byte() else {
            return false;
        };
        match v {
            Value::Null => tag == NULL,
            Value::Bool(false) => tag == FALSE,
            Value::Bool(true) => tag == TRUE,
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    tag == UINT && self.leb() == Some(u)
                } else if let Some(i) = n.as_i64() {
                    tag == NEG && self.leb() == Some(!(i as u64))
                } else {
                    let f = n.as_f64().unwrap_or(0.0).to_le_bytes();
                    let Some(held) = self.bytes.get(self.at..self.at + 8) else {
                        return false;
                    };
                    self.at += 8;
                    tag == FLOAT && held == f
                }
            }
            Value::String(s) => tag == STRING && self.text_is(s),
            Value::Array(items) => {
                tag == ARRAY
                    && self.leb() == Some(items.len() as u64)
                    && items.iter().all(|item| self.matches(item))
            }
            Value::Object(map) => {
                tag == OBJECT
                    && self.leb() == Some(map.len() as u64)
                    && map.iter().all(|(k, v)| self.text_is(k) && self.matches(v))
            }
        }
    }

    /// Reads past a value.
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.byte()? {
            NULL | FALSE | TRUE => {}
            UINT | NEG => {
                self.leb()?;
            }
            FLOAT => {
                self.bytes.get(self.at..self.at + 8)?;
                self.at += 8;
            }
            STRING => self.at += self.count()?,
            ARRAY => {
                for _ in 0..self.count()? {
                    self.skip(depth + 1)?;
                }
            }
            OBJECT => {
                for _ in 0..self.count()? {
                    self.at += self.count()?;
                    self.skip(depth + 1)?;
                }
            }
            _ => return None,
        }
        Some(())
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        Some(match self.byte()? {
            NULL => Value::Null,
            FALSE => Value::Bool(false),
            TRUE => Value::Bool(true),
            UINT => Value::Number(self.leb()?.into()),
            NEG => Value::Number((!self.leb()? as i64).into()),
            FLOAT => {
                let b = self.bytes.get(self.at..self.at + 8)?;
                self.at += 8;
                let f = f64::from_le_bytes(b.try_into().ok()?);
                Value::Number(Number::from_f64(f)?)
            }
            STRING => Value::String(self.text()?),
            ARRAY => {
                let n = self.count()?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::Array(items)
            }
            OBJECT => {
                let n = self.count()?;
                let mut map = Map::with_capacity(n);
                for _ in 0..n {
                    let k = self.text()?;
                    let v = self.value(depth + 1)?;
                    map.insert(k, v);
                }
                Value::Object(map)
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Equal, and written back as the same text: keys in the same order, numbers of the
    /// same kind (`1` is not `1.0`).
    fn round_trips(v: &Value) {
        let back = unpack(&pack(v)).unwrap_or_else(|| panic!("{v} did not read back"));
        assert_eq!(&back, v);
        assert_eq!(back.to_string(), v.to_string());
    }

    /// `leb_len` is the length `leb` writes, at every boundary of seven bits.
    #[test]
    fn leb_len_is_what_leb_writes() {
        for n in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            leb(n, &mut out);
            assert_eq!(leb_len(n), out.len(), "{n}");
        }
    }

    /// An object's members are its names and its values' packed bytes; bytes cut short or
    /// not an object have none, and a value that cannot be read is not compared.
    #[test]
    fn members_are_the_names_and_packed_values_of_an_object() {
        let record = json!({"sku": "A", "n": 1.5, "tags": [1, {"k": null}], "z": -0.0});
        let x = pack(&record);
        let got = members(&x).unwrap();
        let want: Vec<(Vec<u8>, Vec<u8>)> = record
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), pack(v).to_vec()))
            .collect();
        let got: Vec<(Vec<u8>, Vec<u8>)> =
            got.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        assert_eq!(got, want);
        let (spans_packed, spans) = pack_object_spans(
            ["sku", "n", "tags", "z"].into_iter(),
            &record
                .as_object()
                .unwrap()
                .values()
                .cloned()
                .collect::<Vec<_>>(),
        );
        assert_eq!(spans_packed, x);
        let from_spans: Vec<Vec<u8>> = spans.iter().map(|s| x[s.clone()].to_vec()).collect();
        assert_eq!(
            from_spans,
            want.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>()
        );
        for cut in 1..x.len() {
            assert_eq!(members(&x[..cut]), None, "cut at {cut}");
        }
        assert_eq!(members(&pack(&json!([1]))), None);
        assert_eq!(same_value(&[], &x), None);
    }

    /// Two packed values are the same as the values are, whatever their bytes.
    #[test]
    fn packed_values_are_the_same_as_their_values_are() {
        let values = [
            json!(null),
            json!(false),
            json!(0),
            json!(0.0),
            json!(-0.0),
            json!(1),
            json!(1.0),
            json!(-1),
            json!("1"),
            json!(""),
            json!([0.0]),
            json!([-0.0]),
            json!({"a": 0.0}),
            json!({"a": -0.0}),
            json!({"b": 0.0}),
        ];
        for x in &values {
            for y in &values {
                assert_eq!(same_value(&pack(x), &pack(y)), Some(x == y), "{x} / {y}");
            }
        }
    }

    #[test]
    fn values_read_back_as_they_were_packed() {
        let values = [
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(127),
            json!(128),
            json!(u64::MAX),
            json!(-1),
            json!(i64::MIN),
            json!(i64::MAX),
            json!(0.0),
            json!(-0.0),
            json!(12.5),
            json!(1e308),
            json!(-1.5e-7),
            json!(""),
            json!("Scaun ă \"quoted\" \\ \n\t\u{1F600}"),
            json!([]),
            json!({}),
            json!({"z": 1, "a": {"y": [1, "x", null, {"k": false}]}, "m": -2.25}),
        ];
        for v in &values {
            round_trips(v);
        }
        // Every value above, nested at once, and a wide record.
        round_trips(&Value::Array(values.to_vec()));
        let wide: Map<String, Value> = (0..300).map(|i| (format!("f{i}"), json!(i))).collect();
        round_trips(&Value::Object(wide));
    }

    #[test]
    fn random_documents_read_back_as_they_were_packed() {
        // A fixed xorshift sequence: the same documents on every run.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        fn doc(next: &mut impl FnMut() -> u64, depth: u32) -> Value {
            match next() % if depth > 3 { 6 } else { 8 } {
                0 => Value::Null,
                1 => Value::Bool(next().is_multiple_of(2)),
                2 => json!(next() >> (next() % 64)),
                3 => json!(-((next() >> (1 + next() % 63)) as i64)),
                4 => json!(
                    f64::from_bits(next() >> 2) * if next().is_multiple_of(2) { 1.0 } else { -1.0 }
                ),
                5 => {
                    let len = (next() % 12) as usize;
                    Value::String(
                        (0..len)
                            .map(|_| char::from_u32((next() % 0x2fff) as u32).unwrap_or('?'))
                            .collect(),
                    )
                }
                6 => Value::Array((0..next() % 5).map(|_| doc(next, depth + 1)).collect()),
                _ => Value::Object(
                    (0..next() % 6)
                        .map(|i| (format!("k{}_{i}", next() % 100), doc(next, depth + 1)))
                        .collect(),
                ),
            }
        }
        let mut before = Value::Null;
        for _ in 0..2000 {
            let v = doc(&mut next, 0);
            round_trips(&v);
            let packed = pack(&v);
            assert!(holds(&packed, &v), "{v}");
            // Two documents in a row: held exactly when they pack alike.
            assert_eq!(holds(&packed, &before), pack(&before) == packed);
            before = v;
        }
    }

    /// An object packed from its names and values is the object packed whole, byte for
    /// byte: the target index compares one with the other.
    #[test]
    fn an_object_packed_from_its_names_and_values_is_the_object_packed() {
        let objects = [
            json!({}),
            json!({"a": 1}),
            json!({"sku": "A-1", "name": "Scaun ă", "price": 12.5, "stock": -3, "on": true,
                   "tags": ["x", {"k": null}], "big": u64::MAX, "meta": {"z": 1, "a": [1.5]}}),
            json!({"z": null, "y": "", "x": 0.0}),
        ];
        for object in objects {
            let map = object.as_object().unwrap();
            let values: Vec<Value> = map.values().cloned().collect();
            let packed = pack_object(map.keys().map(String::as_str), &values);
            assert_eq!(packed, pack(&object), "{object}");
            assert_eq!(unpack(&packed).as_ref(), Some(&object));
        }
    }

    #[test]
    fn a_packed_record_holds_the_value_it_was_packed_from_and_no_other() {
        let record = json!({
            "sku": "A-1", "price": 12.5, "stock": 3, "delta": -2,
            "tags": ["x", 1], "on": true, "none": null, "dims": {"w": 1.5}
        });
        let bytes = pack(&record);
        assert!(holds(&bytes, &record));
        let with = |key: &str, v: Value| {
            let mut r = record.clone();
            r[key] = v;
            r
        };
        let mut reordered: Map<String, Value> = Map::new();
        for (k, v) in record.as_object().unwrap().iter().rev() {
            reordered.insert(k.clone(), v.clone());
        }
        let mut fewer = record.clone();
        fewer.as_object_mut().unwrap().shift_remove("none");
        let others = [
            with("sku", json!("A-2")),
            with("sku", json!("A-1 ")),
            with("price", json!(12.6)),
            with("stock", json!(3.0)),
            with("stock", json!(4)),
            with("delta", json!(-3)),
            with("delta", json!(2)),
            with("tags", json!(["x"])),
            with("tags", json!(["x", 1, 2])),
            with("tags", json!(["x", "1"])),
            with("on", json!(false)),
            with("none", json!(0)),
            with("dims", json!({"w": 1.5, "h": 2})),
            with("dims", json!({"w": -1.5})),
            with("extra", json!(null)),
            Value::Object(reordered),
            fewer,
            json!(null),
            json!([]),
        ];
        for other in &others {
            assert!(!holds(&bytes, other), "{other}");
        }
        for end in 0..bytes.len() {
            assert!(!holds(&bytes[..end], &record), "cut at {end}");
        }
        let mut longer = bytes.to_vec();
        longer.push(NULL);
        assert!(!holds(&longer, &record));
    }

    #[test]
    fn damaged_bytes_read_as_nothing() {
        let good = pack(&json!({"sku": "A-1", "price": 12.5, "tags": ["x", 1]}));
        // Every truncation, a trailing byte, an unknown tag, a count past the end, and a
        // string that is not UTF-8.
        for end in 0..good.len() {
            assert_eq!(unpack(&good[..end]), None, "cut at {end}");
        }
        let mut longer = good.to_vec();
        longer.push(NULL);
        assert_eq!(unpack(&longer), None);
        assert_eq!(unpack(&[42]), None);
        assert_eq!(unpack(&[ARRAY, 0xff, 0xff, 0xff, 0xff, 0x0f]), None);
        assert_eq!(unpack(&[STRING, 2, 0xc3, 0x28]), None);
        // A float that is not a JSON number.
        let mut nan = vec![FLOAT];
        nan.extend_from_slice(&f64::NAN.to_le_bytes());
        assert_eq!(unpack(&nan), None);
    }

    #[test]
    fn a_stored_value_names_its_form_and_reads_back_as_it_was() {
        let record =
            json!({"sku": "A-1", "price": 12.5, "stock": -3, "tags": ["x", 1], "on": true});
        let stored = pack_stored(&record);
        assert_eq!(stored[0], STORED_FORM_1);
        assert_eq!(&stored[1..], &*pack(&record));
        let back = unpack_stored(&stored).unwrap();
        assert_eq!(back.to_string(), record.to_string());
        // Bytes of another form, JSON text, nothing, damaged: none read as a value.
        assert_eq!(unpack_stored(&pack(&record)), None);
        assert_eq!(unpack_stored(br#"{"sku":"A-1"}"#), None);
        assert_eq!(unpack_stored(&[]), None);
        assert_eq!(unpack_stored(&stored[..stored.len() - 1]), None);
    }

    #[test]
    fn arrays_nested_past_the_limit_are_refused_not_a_stack_overflow() {
        let nested = |depth: usize| {
            let mut bytes = vec![STORED_FORM_1];
            bytes.extend(std::iter::repeat_n([ARRAY, 1], depth).flatten());
            bytes.push(NULL);
            bytes
        };
        assert!(unpack_stored(&nested(MAX_DEPTH)).is_some());
        assert_eq!(unpack_stored(&nested(MAX_DEPTH + 1)), None);
        assert_eq!(unpack_stored(&nested(1_000_000)), None);
        // What `serde_json` reads from text, at its own limit, is stored and read back.
        let text = format!("{}{}", "[".repeat(127), "]".repeat(127));
        let deep: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(unpack_stored(&pack_stored(&deep)), Some(deep));
    }
}
