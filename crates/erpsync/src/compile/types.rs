//! Conversion of mapped values to their declared type, and text normalisation. Canonical
//! values are normalised so that equal data always hashes equal (`50`, `50.0` and `"50.00"`
//! are the same price).

use serde_json::{Number, Value};

use crate::config::model::{FieldType, Normalize};
use crate::expr::{is_canonical_moment, parse_datetime};

/// A value that cannot be converted to its declared type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot convert {value} to {to}")]
pub struct ValueConvertError {
    pub value: String,
    pub to: &'static str,
}

fn err(v: &Value, to: &'static str) -> ValueConvertError {
    let mut value = v.to_string();
    if value.len() > 60 {
        value.truncate(60);
        value.push('…');
    }
    ValueConvertError { value, to }
}

/// Converts `v` to `ty`; null stays null. `scale` applies to decimals (default 2).
pub(crate) fn convert(
    v: Value,
    ty: FieldType,
    scale: Option<u32>,
) -> Result<Value, ValueConvertError> {
    if v.is_null() {
        return Ok(v);
    }
    // A path with a filter or wildcard selects a list: one node is the value itself.
    if ty != FieldType::Json
        && let Value::Array(items) = &v
        && items.len() == 1
    {
        return convert(items[0].clone(), ty, scale);
    }
    match ty {
        FieldType::Json => Ok(v),
        FieldType::String => Ok(to_string(v)),
        FieldType::Integer => read_from(v, to_integer),
        FieldType::Number => read_from(v, |v| {
            let f = as_f64(v).ok_or_else(|| err(v, "a number"))?;
            Ok(number(f))
        }),
        FieldType::Decimal => read_from(v, |v| to_decimal(v, scale)),
        FieldType::Boolean => to_boolean(v),
        FieldType::Datetime => to_datetime(v),
        FieldType::Date => read_from(v, to_date),
    }
}

/// `read` of `v`, which is then dropped (see `json::drop_value`).
#[inline(always)]
fn read_from<T>(v: Value, read: impl FnOnce(&Value) -> T) -> T {
    let out = read(&v);
    crate::json::drop_value(v);
    out
}

/// `convert` of the value in `v`, where it is. Null, a string to be a string, a boolean to be a
/// boolean and anything to be JSON are already what `convert` gives, and are left as they
/// are (most fields of most records); the others are converted. On an error `v` is left null.
pub(crate) fn convert_in_place(
    v: &mut Value,
    ty: FieldType,
    scale: Option<u32>,
) -> Result<(), ValueConvertError> {
    match (ty, &*v) {
        (_, Value::Null)
        | (FieldType::Json, _)
        | (FieldType::String, Value::String(_))
        | (FieldType::Boolean, Value::Bool(_)) => Ok(()),
        _ => {
            let converted = convert(std::mem::take(v), ty, scale)?;
            crate::json::put_value(v, converted);
            Ok(())
        }
    }
}

/// A string as it is; anything else as its JSON text.
fn to_string(v: Value) -> Value {
    match v {
        Value::String(_) => v,
        Value::Number(n) => Value::String(n.to_string()),
        Value::Bool(b) => Value::String(b.to_string()),
        other => Value::String(other.to_string()),
    }
}

/// A number without a fraction.
fn to_integer(v: &Value) -> Result<Value, ValueConvertError> {
    let f = as_f64(v).ok_or_else(|| err(v, "an integer"))?;
    if f.fract().abs() > 1e-9 {
        return Err(err(v, "an integer"));
    }
    Ok(Value::from(f.round() as i64))
}

/// A number rounded to `scale` decimals (default 2).
fn to_decimal(v: &Value, scale: Option<u32>) -> Result<Value, ValueConvertError> {
    let f = as_f64(v).ok_or_else(|| err(v, "a decimal"))?;
    let s = scale.unwrap_or(2);
    let factor = 10f64.powi(s as i32);
    Ok(number((f * factor).round() / factor))
}

/// A boolean, a number (non-zero is true) or one of the usual words.
fn to_boolean(v: Value) -> Result<Value, ValueConvertError> {
    Ok(match &v {
        Value::Bool(_) => v,
        Value::Number(n) => Value::Bool(n.as_f64().unwrap_or(0.0) != 0.0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "y" => Value::Bool(true),
            "false" | "0" | "no" | "off" | "n" | "" => Value::Bool(false),
            _ => return Err(err(&v, "a boolean")),
        },
        _ => return Err(err(&v, "a boolean")),
    })
}

/// A date-time string, or seconds since the epoch, as RFC 3339 in UTC.
fn to_datetime(v: Value) -> Result<Value, ValueConvertError> {
    let s = match &v {
        Value::String(s) => s,
        Value::Number(n) => {
            let secs = n.as_i64().ok_or_else(|| err(&v, "a date-time"))?;
            let d =
                chrono::DateTime::from_timestamp(secs, 0).ok_or_else(|| err(&v, "a date-time"))?;
            return Ok(Value::String(
                d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ));
        }
        _ => return Err(err(&v, "a date-time")),
    };
    // Most APIs already write what this would: one in that form naming a real moment is
    // kept as it came, neither parsed nor written again.
    if is_canonical_moment(s) {
        return Ok(v);
    }
    let d = parse_datetime(s).ok_or_else(|| err(&v, "a date-time"))?;
    Ok(Value::String(
        d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
    ))
}

/// A date-time string as its date.
fn to_date(v: &Value) -> Result<Value, ValueConvertError> {
    let s = v.as_str().ok_or_else(|| err(v, "a date"))?;
    let d = parse_datetime(s).ok_or_else(|| err(v, "a date"))?;
    Ok(Value::String(d.format("%Y-%m-%d").to_string()))
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().replace(',', ".").parse().ok(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

/// A number as JSON, whole numbers as integers so `50.0` and `50` are equal.
fn number(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        Value::from(f as i64)
    } else {
        Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// Applies normalisations to a text.
pub fn normalize(s: &str, steps: &[Normalize]) -> String {
    if leaves_as_is(s, steps) {
        return s.to_owned();
    }
    normalized(s, steps)
}

/// `normalize` of a text the caller gives up: kept as it is, not built again, when no step
/// changes it (keys and codes nearly always come already trimmed and in their case).
pub fn normalize_owned(s: String, steps: &[Normalize]) -> String {
    if leaves_as_is(&s, steps) {
        return s;
    }
    normalized(&s, steps)
}

/// Whether every one of `steps` leaves `s` as it is, checked without building a text.
/// Case steps are decided here only for ASCII text; any other text is normalised in full.
fn leaves_as_is(s: &str, steps: &[Normalize]) -> bool {
    steps.iter().all(|step| match step {
        Normalize::Trim => s.trim().len() == s.len(),
        Normalize::Lowercase => s.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()),
        Normalize::Uppercase => s.bytes().all(|b| b.is_ascii() && !b.is_ascii_lowercase()),
        Normalize::StripSpaces => !s.chars().any(char::is_whitespace),
        Normalize::DigitsOnly => s.bytes().all(|b| b.is_ascii_digit()),
        Normalize::StripLeadingZeros => !s.starts_with('0'),
    })
}

/// Every step applied in turn.
fn normalized(s: &str, steps: &[Normalize]) -> String {
    let mut out = s.to_string();
    for step in steps {
        out = match step {
            Normalize::Trim => out.trim().to_string(),
            Normalize::Lowercase => out.to_lowercase(),
            Normalize::Uppercase => out.to_uppercase(),
            Normalize::StripSpaces => out.chars().filter(|c| !c.is_whitespace()).collect(),
            Normalize::DigitsOnly => out.chars().filter(char::is_ascii_digit).collect(),
            Normalize::StripLeadingZeros => {
                let t = out.trim_start_matches('0');
                if t.is_empty() && !out.is_empty() {
                    "0".into()
                } else {
                    t.to_string()
                }
            }
        };
    }
    out
}

/// The text of a key value (numbers and strings alike), for matching.
pub(crate) fn key_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Converting where the value is gives what `convert` gives, value, kind and error alike,
    /// for every type and every kind of value.
    #[test]
    fn converting_in_place_is_converting() {
        let values = [
            json!(null),
            json!("text"),
            json!(" 12,50 "),
            json!("2026-12-05T10:00:00Z"),
            json!("2026-12-05 10:00:00"),
            json!("yes"),
            json!(""),
            json!(true),
            json!(false),
            json!(0),
            json!(12),
            json!(12.5),
            json!(-0.0),
            json!([1]),
            json!(["a"]),
            json!([1, 2]),
            json!({"a": 1}),
        ];
        let types = [
            FieldType::String,
            FieldType::Integer,
            FieldType::Number,
            FieldType::Decimal,
            FieldType::Boolean,
            FieldType::Datetime,
            FieldType::Date,
            FieldType::Json,
        ];
        for ty in types {
            for v in &values {
                let mut in_place = v.clone();
                let got = convert_in_place(&mut in_place, ty, Some(2)).map(|()| in_place);
                let want = convert(v.clone(), ty, Some(2));
                assert_eq!(
                    got.as_ref().map(Value::to_string),
                    want.as_ref().map(Value::to_string),
                    "{ty:?} {v}"
                );
            }
        }
    }

    /// What `to_datetime` wrote before it kept canonical strings as they are.
    fn written_again(s: &str) -> Option<String> {
        parse_datetime(s).map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    }

    /// A date-time kept as it came is the one writing it again gives, whatever its
    /// fraction, offset, separator or range; what does not parse is still refused.
    #[test]
    fn a_date_time_kept_as_it_came_is_the_one_written_again() {
        let fractions = [
            "",
            ".0",
            ".1",
            ".000",
            ".120",
            ".12",
            ".1200",
            ".120000",
            ".000500",
            ".120500",
            ".000000001",
            ".100000000",
            ".1234567891",
            ".12a",
        ];
        let (mut kept, mut checked) = (0, 0);
        for year in [0, 1900, 2000, 2024, 2026, 9999] {
            for month in [0, 2, 4, 12, 13] {
                for day in [0, 1, 28, 29, 30, 31, 32] {
                    for (hour, minute) in [(0, 0), (23, 59), (24, 0), (12, 60)] {
                        for second in [0, 59, 60, 61] {
                            for fraction in fractions {
                                for end in ["Z", "z", "+00:00", ""] {
                                    for sep in ['T', ' '] {
                                        let s = format!(
                                            "{year:04}-{month:02}-{day:02}{sep}{hour:02}:{minute:02}:{second:02}{fraction}{end}"
                                        );
                                        let got = convert(
                                            Value::String(s.clone()),
                                            FieldType::Datetime,
                                            None,
                                        );
                                        match written_again(&s) {
                                            Some(want) => {
                                                kept += usize::from(want == s);
                                                assert_eq!(got.unwrap(), Value::String(want), "{s}")
                                            }
                                            None => assert!(got.is_err(), "{s}"),
                                        }
                                        checked += 1;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        // Both ways were taken: many strings were canonical already, most were not.
        assert!(kept >= 500 && kept < checked / 4, "{kept} of {checked}");
    }

    #[test]
    fn conversions() {
        assert_eq!(
            convert(json!("50.00"), FieldType::Decimal, None).unwrap(),
            json!(50)
        );
        assert_eq!(
            convert(json!(42.016), FieldType::Decimal, None).unwrap(),
            json!(42.02)
        );
        assert_eq!(
            convert(json!("12,5"), FieldType::Number, None).unwrap(),
            json!(12.5)
        );
        assert_eq!(
            convert(json!(37.0), FieldType::Integer, None).unwrap(),
            json!(37)
        );
        assert!(convert(json!("abc"), FieldType::Integer, None).is_err());
        assert!(convert(json!(1.5), FieldType::Integer, None).is_err());
        assert_eq!(
            convert(json!("on"), FieldType::Boolean, None).unwrap(),
            json!(true)
        );
        assert_eq!(
            convert(json!(812), FieldType::String, None).unwrap(),
            json!("812")
        );
        assert_eq!(
            convert(json!(["a@b.ro"]), FieldType::String, None).unwrap(),
            json!("a@b.ro"),
            "a filter that selected one node gives that node"
        );
        assert_eq!(
            convert(json!([3]), FieldType::Json, None).unwrap(),
            json!([3])
        );
        assert_eq!(
            convert(json!("2026-11-26 10:00:00"), FieldType::Datetime, None).unwrap(),
            json!("2026-11-26T10:00:00Z")
        );
        assert_eq!(
            convert(json!("2026-11-26T12:00:00+02:00"), FieldType::Date, None).unwrap(),
            json!("2026-11-26")
        );
        assert_eq!(
            convert(Value::Null, FieldType::Integer, None).unwrap(),
            Value::Null
        );
    }

    #[test]
    fn normalisation() {
        use Normalize::*;
        assert_eq!(normalize("  led-5050 ", &[Trim, Uppercase]), "LED-5050");
        assert_eq!(normalize("+40 (721) 000", &[DigitsOnly]), "40721000");
        assert_eq!(normalize("000120", &[StripLeadingZeros]), "120");
    }

    /// A text kept as it is because no step would change it is the text every step in
    /// turn makes of it: for each step alone and in pairs, over texts with spaces inside
    /// and around, both cases, non-ASCII letters whose case maps to more than one letter,
    /// digits, leading zeros and the empty text.
    #[test]
    fn a_text_kept_as_it_is_is_the_one_normalised_in_full() {
        use Normalize::*;
        let texts = [
            "",
            " ",
            "0",
            "00",
            "007",
            "120",
            "LED-5050",
            "led-5050",
            " LED",
            "LED ",
            "\tLED\n",
            "A B",
            "a b",
            "Ab",
            "ß",
            "STRASSE",
            "straße",
            "ÉCLAIR",
            "éclair",
            "ǅ",
            "İ",
            "40721000",
            "+40 (721) 000",
            "0 1",
            "\u{a0}X",
            "X\u{2003}",
            "Ω",
            "ω",
        ];
        let all = [
            Trim,
            Lowercase,
            Uppercase,
            StripSpaces,
            DigitsOnly,
            StripLeadingZeros,
        ];
        let mut cases: Vec<Vec<Normalize>> = vec![Vec::new()];
        for a in all {
            cases.push(vec![a]);
            for b in all {
                cases.push(vec![a, b]);
            }
        }
        let mut kept = 0;
        for steps in &cases {
            for text in texts {
                let full = normalized(text, steps);
                assert_eq!(normalize(text, steps), full, "{text:?} by {steps:?}");
                assert_eq!(
                    normalize_owned(text.to_owned(), steps),
                    full,
                    "{text:?} by {steps:?}"
                );
                kept += usize::from(leaves_as_is(text, steps));
            }
        }
        // Both paths were taken: texts kept as they are, and texts normalised in full.
        assert!(
            kept > 100 && kept < cases.len() * texts.len() - 100,
            "{kept}"
        );
    }
}
