//! A reader of JSON text that is well formed, into the values `serde_json` gives for it.
//!
//! `serde_json`'s deserializer spends some 200 – 300 instructions on each member name and
//! value of a listing's page (its `MapAccess`/`SeqAccess` steps, a visitor call per token,
//! a byte at a time through each string): more than half of what reading a page cost. This
//! reader walks the text itself, eight bytes at a step through strings, and builds the
//! same values through the document's `Parser` (objects at their final size, shapes kept).
//!
//! It answers only for text it is sure of: anything it does not take as written — a syntax
//! error, a lone surrogate, nesting near `serde_json`'s limit — gives `None`, and the caller
//! parses the text with `serde_json`, for its value or its error and position. A number
//! whose value two readers could round differently (over 15 digits, an exponent) is read by
//! `serde_json` on its own text, so every number is the one `serde_json` reads.

use serde_json::{Number, Value};

use super::{Name, Parser, specials};

/// Containers nested deeper than this are left to `serde_json`, whose limit is 128.
const DEPTH: u32 = 100;

/// Powers of ten that are exact as `f64`: a significand under 2^53 divided by one of them is
/// rounded once, the same by any correct reader.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Where a text is being read.
pub(super) struct Scanner<'a> {
    text: &'a str,
    pos: usize,
    depth: u32,
}

impl<'a> Scanner<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Scanner {
            text,
            pos: 0,
            depth: 0,
        }
    }

    #[inline]
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    #[inline]
    fn ws(&mut self) {
        let bytes = self.bytes();
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next byte after any whitespace, not taken.
    #[inline]
    pub(super) fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.bytes().get(self.pos).copied()
    }

    /// Takes `byte` as the next one after any whitespace.
    #[inline]
    pub(super) fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    /// Where the next value starts, after any whitespace.
    pub(super) fn next_at(&mut self) -> usize {
        self.ws();
        self.pos
    }

    /// The text read since `start` (a place `next_at` gave).
    pub(super) fn since(&self, start: usize) -> &'a str {
        &self.text[start..self.pos]
    }

    /// Takes `text` if it comes next, after any whitespace.
    #[inline]
    pub(super) fn take(&mut self, text: &str) -> bool {
        self.ws();
        let here = self.text.as_bytes().get(self.pos..self.pos + text.len());
        let found = here == Some(text.as_bytes());
        if found {
            self.pos += text.len();
        }
        found
    }

    /// Nothing but whitespace is left.
    pub(super) fn end(&mut self) -> Option<()> {
        self.ws();
        (self.pos == self.text.len()).then_some(())
    }

    /// One more container entered, unless that nests too deep.
    #[inline]
    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= DEPTH).then_some(())
    }

    /// An object (`open` `{`, `close` `}`) or an array (`[`, `]`), `item` reading each of its
    /// members (name first) or elements in turn; `item` is not called for an empty one.
    #[inline]
    pub(super) fn each(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.eat(open)?;
        self.enter()?;
        if self.peek()? != close {
            loop {
                item(self)?;
                match self.peek()? {
                    b',' => self.pos += 1,
                    b if b == close => break,
                    _ => return None,
                }
            }
        }
        self.pos += 1;
        self.depth -= 1;
        Some(())
    }

    /// A member's name and its colon.
    #[inline]
    pub(super) fn name(&mut self) -> Option<Name<'a>> {
        if self.peek()? != b'"' {
            return None;
        }
        let name = self.string()?;
        self.eat(b':')?;
        Some(name)
    }

    /// One value, built.
    pub(super) fn value(&mut self, p: &mut Parser<'a>) -> Option<Value> {
        match self.peek()? {
            b'"' => Some(Value::String(self.string()?.into_string())),
            b'{' => {
                let start = p.entries.len();
                self.each(b'{', b'}', |s| {
                    let name = s.name()?;
                    let value = s.value(p)?;
                    p.entries.push((name, value));
                    Some(())
                })?;
                Some(Value::Object(p.object(start)))
            }
            b'[' => {
                let mut items = Vec::new();
                self.each(b'[', b']', |s| {
                    items.push(s.value(p)?);
                    Some(())
                })?;
                Some(Value::Array(items))
            }
            b't' => self.literal("true", Value::Bool(true)),
            b'f' => self.literal("false", Value::Bool(false)),
            b'n' => self.literal("null", Value::Null),
            _ => self.number(),
        }
    }

    /// One value, checked as `value` checks it and not built.
    pub(super) fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.each(b'{', b'}', |s| {
                s.name()?;
                s.skip()
            }),
            b'[' => self.each(b'[', b']', Self::skip),
            b't' => self.literal("true", ()),
            b'f' => self.literal("false", ()),
            b'n' => self.literal("null", ()),
            _ => self.number().map(drop),
        }
    }

    fn literal<T>(&mut self, word: &str, value: T) -> Option<T> {
        let end = self.pos + word.len();
        (self.bytes().get(self.pos..end)? == word.as_bytes()).then(|| {
            self.pos = end;
            value
        })
    }

    /// A string, at its opening quote: borrowed from the text when it has no escapes.
    fn string(&mut self) -> Option<Name<'a>> {
        let bytes = self.bytes();
        let start = self.pos + 1;
        let mut i = self.special(start)?;
        if bytes[i] == b'"' {
            self.pos = i + 1;
            return Some(Name::Borrowed(&self.text[start..i]));
        }
        let mut out = String::with_capacity(i - start + 16);
        out.push_str(&self.text[start..i]);
        loop {
            match bytes[i] {
                b'"' => {
                    self.pos = i + 1;
                    return Some(Name::Owned(out));
                }
                b'\\' => {
                    i = self.escape(i + 1, &mut out)?;
                }
                _ => return None,
            }
            let next = self.special(i)?;
            out.push_str(&self.text[i..next]);
            i = next;
        }
    }

    /// The first quote, backslash or control character from `i`; `None` at the text's end.
    #[inline]
    fn special(&self, mut i: usize) -> Option<usize> {
        let bytes = self.bytes();
        while let Some(chunk) = bytes.get(i..i + 8) {
            let found = specials(u64::from_le_bytes(chunk.try_into().ok()?));
            if found != 0 {
                return Some(i + (found.trailing_zeros() / 8) as usize);
            }
            i += 8;
        }
        while let Some(&b) = bytes.get(i) {
            if b == b'"' || b == b'\\' || b < 0x20 {
                return Some(i);
            }
            i += 1;
        }
        None
    }

    /// The escape whose letter is at `i`, pushed to `out`; where the string goes on after it.
    fn escape(&self, i: usize, out: &mut String) -> Option<usize> {
        let bytes = self.bytes();
        let c = match bytes.get(i)? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex(i + 1)?;
                let (c, after) = match unit {
                    0xD800..=0xDBFF => {
                        if bytes.get(i + 5..i + 7)? != b"\\u" {
                            return None;
                        }
                        let low = self.hex(i + 7)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return None;
                        }
                        let c = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        (char::from_u32(c)?, i + 11)
                    }
                    0xDC00..=0xDFFF => return None,
                    _ => (char::from_u32(unit)?, i + 5),
                };
                out.push(c);
                return Some(after);
            }
            _ => return None,
        };
        out.push(c);
        Some(i + 1)
    }

    /// The four hex digits at `i`.
    fn hex(&self, i: usize) -> Option<u32> {
        let digits = self.bytes().get(i..i + 4)?;
        digits.iter().try_fold(0u32, |n, &d| {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return None,
            };
            Some(n * 16 + u32::from(v))
        })
    }

    /// A number. Integers, and decimals of up to 15 digits and 22 after the point, are read
    /// here, exactly as `serde_json` reads them; any other number by `serde_json`, on its
    /// text alone.
    fn number(&mut self) -> Option<Value> {
        let bytes = self.bytes();
        let start = self.pos;
        let mut i = start;
        let negative = bytes.get(i) == Some(&b'-');
        if negative {
            i += 1;
        }
        let mut significand: u64 = 0;
        let mut digits = 0;
        match bytes.get(i)? {
            b'0' => {
                i += 1;
                digits = 1;
            }
            b'1'..=b'9' => {
                while let Some(&d @ b'0'..=b'9') = bytes.get(i) {
                    if digits == 19 {
                        return self.number_by_serde_json(start);
                    }
                    significand = significand * 10 + u64::from(d - b'0');
                    digits += 1;
                    i += 1;
                }
            }
            _ => return None,
        }
        match bytes.get(i) {
            Some(b'0'..=b'9') => None,
            Some(b'.') => {
                i += 1;
                let mut fraction = 0;
                while let Some(&d @ b'0'..=b'9') = bytes.get(i) {
                    if digits == 15 || fraction == 22 {
                        return self.number_by_serde_json(start);
                    }
                    significand = significand * 10 + u64::from(d - b'0');
                    digits += 1;
                    fraction += 1;
                    i += 1;
                }
                if fraction == 0 {
                    return None;
                }
                if let Some(b'e' | b'E') = bytes.get(i) {
                    return self.number_by_serde_json(start);
                }
                self.pos = i;
                let f = significand as f64 / POW10[fraction];
                Number::from_f64(if negative { -f } else { f }).map(Value::Number)
            }
            Some(b'e' | b'E') => self.number_by_serde_json(start),
            _ => {
                self.pos = i;
                if !negative {
                    return Some(Value::Number(significand.into()));
                }
                // As `serde_json`: `-0` and integers below `i64::MIN` are floats.
                let n = (significand as i64).wrapping_neg();
                Some(if n >= 0 {
                    Number::from_f64(-(significand as f64)).map_or(Value::Null, Value::Number)
                } else {
                    Value::Number(n.into())
                })
            }
        }
    }

    /// The number at `start`, read by `serde_json` from its text.
    #[cold]
    fn number_by_serde_json(&mut self, start: usize) -> Option<Value> {
        let bytes = self.bytes();
        let mut end = start;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = bytes.get(end) {
            end += 1;
        }
        let value =
            super::parse(serde_json::Deserializer::from_str(&self.text[start..end])).ok()?;
        self.pos = end;
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanned(text: &str) -> Option<Value> {
        let mut p = Parser::new();
        let mut s = Scanner::new(text);
        let v = s.value(&mut p)?;
        s.end()?;
        Some(v)
    }

    /// Tiny deterministic generator, so a failure names its seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const PIECES: &[&str] = &[
        "0",
        "-0",
        "1",
        "-1",
        "12",
        "007",
        "1.",
        ".5",
        "-",
        "1.5",
        "-0.0",
        "3.14159",
        "1e3",
        "1E-3",
        "2.5e+2",
        "1e400",
        "-1e400",
        "123456789012345",
        "1234567890123456",
        "0.1234567890123456789",
        "9007199254740993",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "12.50",
        "99.99",
        "0.30000000000000004",
        "4.35",
        "\"\"",
        "\"a\"",
        "\"caf\u{e9} \u{1f642}\"",
        "\"q\\\"b\\\\s\\/\\b\\f\\n\\r\\t\"",
        "\"\\u0103\\u00e9\"",
        "\"\\ud83d\\ude42\"",
        "\"\\ud83d\"",
        "\"\\ude42x\"",
        "\"\\ud83d\\u0041\"",
        "\"\\x\"",
        "\"\\u12\"",
        "\"tab\tin\"",
        "\"0123456789abcdef\\\"0123456789\"",
        "true",
        "false",
        "null",
        "tru",
        "nul",
        "{}",
        "[]",
        "{\"a\":1}",
        "[1,2]",
        "[1,]",
        "{\"a\":1,}",
        "{\"a\"1}",
        "{1:2}",
        " ",
        "\n",
        ",",
        ":",
        "{",
        "}",
        "[",
        "]",
        "\"",
        "\\",
    ];

    /// A document made of pieces, mostly well formed.
    fn document(rng: &mut Rng, depth: u32) -> String {
        let broken = rng.below(40) == 0;
        match rng.below(if depth > 3 { 2 } else { 5 }) {
            _ if broken => PIECES[rng.below(PIECES.len())].to_string(),
            0 | 1 => {
                let atoms = [
                    "0",
                    "-7",
                    "12.5",
                    "99.99",
                    "1e3",
                    "123456789012345678901",
                    "-0",
                    "\"x\"",
                    "\"\\n\\u0103\"",
                    "\"long text, long enough for several steps\"",
                    "true",
                    "null",
                ];
                atoms[rng.below(atoms.len())].to_string()
            }
            2 => {
                let n = rng.below(4);
                let items: Vec<String> = (0..n).map(|_| document(rng, depth + 1)).collect();
                format!(
                    "[{}]",
                    items.join(if rng.below(2) == 0 { "," } else { " , " })
                )
            }
            _ => {
                let n = rng.below(7);
                let names = ["id", "sku", "name", "a\\\"b", "price", "id"];
                let members: Vec<String> = (0..n)
                    .map(|_| {
                        let name = names[rng.below(names.len())];
                        format!("\"{name}\":{}", document(rng, depth + 1))
                    })
                    .collect();
                format!("{{{}}}", members.join(","))
            }
        }
    }

    /// Every piece, alone and inside an object, and thousands of generated documents: where
    /// the scanner gives a value it is `serde_json`'s, member order and number kinds
    /// included; where `serde_json` refuses the text the scanner gives none.
    #[test]
    fn what_it_reads_is_what_serde_json_reads() {
        let mut docs: Vec<String> = Vec::new();
        for piece in PIECES {
            docs.push(piece.to_string());
            docs.push(format!("{{\"v\":{piece},\"w\":[{piece}]}}"));
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            docs.push(document(&mut rng, 0));
        }
        let mut read = 0;
        for doc in &docs {
            let theirs = serde_json::from_str::<Value>(doc);
            match (scanned(doc), theirs) {
                (Some(ours), Ok(theirs)) => {
                    read += 1;
                    assert_eq!(ours.to_string(), theirs.to_string(), "{doc}");
                    assert_eq!(ours, theirs, "{doc}");
                }
                (Some(ours), Err(e)) => panic!("{doc}: read as {ours} where serde_json says {e}"),
                // Well-formed text, not nested deep, is read here, not left to `serde_json`.
                (None, Ok(theirs)) => panic!("{doc}: not read, where serde_json reads {theirs}"),
                (None, Err(_)) => {}
            }
        }
        assert!(read > docs.len() / 2, "{read} of {}", docs.len());
        for doc in [
            r#"{"a":"\ud83d\ude42","b":[1,2.5,-3],"c":{"d":null}}"#,
            "[123456789012345678901, 1e300, 0.1234567890123456789]",
            " \t\n[ 1 , \"x\" ]\r\n",
        ] {
            assert!(scanned(doc).is_some(), "{doc}");
        }
    }

    /// Decimals are the `f64`s `serde_json` reads, bit for bit, for every two-place price,
    /// at every length up to where the scanner hands them over.
    #[test]
    fn decimals_are_read_to_the_same_bits() {
        let mut rng = Rng(7);
        let mut texts: Vec<String> = (0..20_000)
            .map(|c| format!("{}.{:02}", c / 100, c % 100))
            .collect();
        for _ in 0..20_000 {
            let digits = 2 + rng.below(16);
            let point = 1 + rng.below(digits - 1);
            let mut t: String = (0..digits)
                .map(|_| char::from(b'0' + rng.below(10) as u8))
                .collect();
            t.insert(point, '.');
            let t = t.trim_start_matches('0').to_string();
            let t = if t.starts_with('.') {
                format!("0{t}")
            } else {
                t
            };
            texts.push(if rng.below(2) == 0 {
                format!("-{t}")
            } else {
                t
            });
        }
        for t in texts {
            let ours = scanned(&t).unwrap();
            let theirs: Value = serde_json::from_str(&t).unwrap();
            let (a, b) = (ours.as_f64().unwrap(), theirs.as_f64().unwrap());
            assert_eq!(a.to_bits(), b.to_bits(), "{t}");
        }
    }

    /// Strings with quotes, backslashes and control characters at every place around the
    /// eight-byte steps.
    #[test]
    fn strings_are_read_wherever_their_escapes_fall() {
        for special in [
            "\\\"",
            "\\\\",
            "\\n",
            "\\u00e9",
            "\\ud83d\\ude42",
            "ă",
            "🙂",
            "\u{1}",
            "\u{7f}",
        ] {
            for at in 0..20 {
                let mut s = "x".repeat(20);
                s.insert_str(at, special);
                let doc = format!("[\"{s}\",\"{s}{s}\"]");
                let theirs = serde_json::from_str::<Value>(&doc).ok();
                assert_eq!(scanned(&doc), theirs, "{doc}");
            }
        }
    }
}
