//! Template helpers available to every flow file. `erpsync validate` rejects a template that
//! calls any other.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use chrono::{DateTime, NaiveDate, Utc};
use handlebars::{Handlebars, handlebars_helper};
use serde_json::Value;

/// Text of a value: strings as they are, null as empty, others as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

fn num_value(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        serde_json::Number::from_f64(x)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

pub fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    // The form erpsync writes (every canonical date-time, each record's modification stamp
    // among them) read from its digits: what RFC 3339 parsing gives, at a tenth of the cost.
    if let Some(d) = canonical_moment(s) {
        return Some(d);
    }
    let s = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(d) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            return Some(d.and_utc());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
}

/// Whether `s` has the form `to_datetime` writes: `YYYY-MM-DDTHH:MM:SS`, then a fraction
/// only if it is not zero, of 3, 6 or 9 digits, the fewest that hold it (no trailing `000`),
/// then `Z`. Seconds up to 59: a leap second is written again. Only the form: the values
/// themselves (month 13, February 30) are not checked.
fn written_as_canonical(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 || b[b.len() - 1] != b'Z' {
        return false;
    }
    let digits = |from: usize, to: usize| b[from..to].iter().all(u8::is_ascii_digit);
    let shape = digits(0, 4)
        && b[4] == b'-'
        && digits(5, 7)
        && b[7] == b'-'
        && digits(8, 10)
        && b[10] == b'T'
        && digits(11, 13)
        && b[13] == b':'
        && digits(14, 16)
        && b[16] == b':'
        && digits(17, 19)
        && b[17] <= b'5';
    let fraction = &b[19..b.len() - 1];
    shape
        && match fraction.len() {
            0 => true,
            4 | 7 | 10 => {
                fraction[0] == b'.'
                    && fraction[1..].iter().all(u8::is_ascii_digit)
                    && !fraction.ends_with(b"000")
            }
            _ => false,
        }
}

/// Whether `b`, in the form `written_as_canonical` checks, names a moment of the proleptic
/// Gregorian calendar, as parsing it would find: a month of the year, a day of that month
/// (29 February in leap years only), an hour before 24 and a minute before 60 (seconds
/// were checked with the form).
fn names_a_real_moment(b: &[u8]) -> bool {
    let at = |from, to| digits_at(b, from, to);
    let (year, month, day) = (at(0, 4), at(5, 7), at(8, 10));
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day) && at(11, 13) < 24 && at(14, 16) < 60
}

/// Whether `s` is a date-time as erpsync writes it: the form `written_as_canonical`
/// checks, naming a real moment (`canonical_moment` reads it).
pub(crate) fn is_canonical_moment(s: &str) -> bool {
    written_as_canonical(s) && names_a_real_moment(s.as_bytes())
}

/// The number the ASCII digits `b[from..to]` write.
fn digits_at(b: &[u8], from: usize, to: usize) -> u32 {
    b[from..to]
        .iter()
        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
}

/// `s` read from its digits, when it is a date-time as erpsync writes it.
fn canonical_moment(s: &str) -> Option<DateTime<Utc>> {
    if !is_canonical_moment(s) {
        return None;
    }
    let b = s.as_bytes();
    let digits_at = |from, to| digits_at(b, from, to);
    // After the seconds: `Z`, or `.`, 3, 6 or 9 digits and `Z`.
    let fraction = b.len().saturating_sub(21);
    let nanos = match fraction {
        0 => 0,
        _ => digits_at(20, 20 + fraction) * 10u32.pow(9 - fraction as u32),
    };
    let year = i32::try_from(digits_at(0, 4)).ok()?;
    NaiveDate::from_ymd_opt(year, digits_at(5, 7), digits_at(8, 10))?
        .and_hms_nano_opt(
            digits_at(11, 13),
            digits_at(14, 16),
            digits_at(17, 19),
            nanos,
        )
        .map(|d| d.and_utc())
}

handlebars_helper!(json: |v: Value| serde_json::to_string(&v).unwrap_or_default());
handlebars_helper!(default: |v: Value, fallback: Value| {
    match &v { Value::Null => fallback, Value::String(s) if s.is_empty() => fallback, _ => v }
});
handlebars_helper!(b64: |v: Value| STANDARD.encode(text(&v)));
// Padded, as RFC 4648 §5 defines it: Python's `urlsafe_b64decode` (Tryton's `d=` domains and
// context header) rejects a value without its `=`.
handlebars_helper!(b64url: |v: Value| URL_SAFE.encode(text(&v)));
handlebars_helper!(json_b64url: |v: Value| {
    URL_SAFE.encode(serde_json::to_string(&v).unwrap_or_default())
});
handlebars_helper!(upper: |v: Value| text(&v).to_uppercase());
handlebars_helper!(lower: |v: Value| text(&v).to_lowercase());
handlebars_helper!(trim: |v: Value| text(&v).trim().to_string());
handlebars_helper!(fixed: |v: Value, digits: u64| {
    number(&v).map(|x| format!("{:.*}", digits as usize, x)).unwrap_or_default()
});
handlebars_helper!(to_str: |v: Value| text(&v));
handlebars_helper!(num: |v: Value| number(&v).map(num_value).unwrap_or(Value::Null));
handlebars_helper!(add: |a: Value, b: Value| num_value(number(&a).unwrap_or(0.0) + number(&b).unwrap_or(0.0)));
handlebars_helper!(sub: |a: Value, b: Value| num_value(number(&a).unwrap_or(0.0) - number(&b).unwrap_or(0.0)));
handlebars_helper!(mul: |a: Value, b: Value| num_value(number(&a).unwrap_or(0.0) * number(&b).unwrap_or(0.0)));
handlebars_helper!(div: |a: Value, b: Value| {
    match number(&b) { Some(d) if d != 0.0 => num_value(number(&a).unwrap_or(0.0) / d), _ => Value::Null }
});
handlebars_helper!(round: |v: Value, digits: u64| {
    let f = 10f64.powi(digits as i32);
    number(&v).map(|x| num_value((x * f).round() / f)).unwrap_or(Value::Null)
});
handlebars_helper!(date: |v: Value, fmt: str| {
    parse_datetime(text(&v).as_str()).map(|d| d.format(fmt).to_string()).unwrap_or_default()
});
handlebars_helper!(now: |*_args| Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
handlebars_helper!(concat: |*args| args.iter().map(|v| text(v)).collect::<String>());
handlebars_helper!(replace: |v: Value, from: str, to: str| text(&v).replace(from, to));
handlebars_helper!(urlencode: |v: Value| url::form_urlencoded::byte_serialize(text(&v).as_bytes()).collect::<String>());
handlebars_helper!(join: |v: Value, sep: str| {
    match &v { Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(sep), other => text(other) }
});
handlebars_helper!(list: |*args| Value::Array(args.iter().map(|v| (*v).clone()).collect()));
handlebars_helper!(object: |*args| {
    let mut m = serde_json::Map::new();
    for pair in args.chunks(2) {
        m.insert(text(pair[0]), pair.get(1).map_or(Value::Null, |v| (*v).clone()));
    }
    Value::Object(m)
});
handlebars_helper!(part: |v: Value, n: u64| {
    text(&v).split(super::COMPOSITE_ID_SEPARATOR).nth(n as usize).unwrap_or_default().to_string()
});
handlebars_helper!(coalesce: |*args| {
    args.iter().find(|v| !matches!(v, Value::Null) && !matches!(v, Value::String(s) if s.is_empty()))
        .map(|v| (*v).clone()).unwrap_or(Value::Null)
});

/// Helpers handlebars itself provides.
const BUILT_IN: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "raw", "log", "eq", "ne", "gt", "gte", "lt", "lte",
    "and", "or", "not", "len",
];

/// Helpers erpsync adds.
const OURS: &[&str] = &[
    "json",
    "default",
    "base64",
    "base64url",
    "json_base64url",
    "upper",
    "lower",
    "trim",
    "fixed",
    "str",
    "num",
    "add",
    "sub",
    "mul",
    "div",
    "round",
    "date",
    "now",
    "concat",
    "replace",
    "urlencode",
    "join",
    "coalesce",
    "list",
    "object",
    "part",
];

/// How many arguments a helper needs at least (`None`: not a helper).
pub(super) fn min_args(name: &str) -> Option<usize> {
    Some(match name {
        "now" | "list" | "object" | "raw" | "log" => 0,
        "json" | "base64" | "base64url" | "json_base64url" | "upper" | "lower" | "trim" | "str"
        | "num" | "concat" | "urlencode" | "coalesce" | "if" | "unless" | "each" | "with"
        | "not" | "len" | "and" | "or" => 1,
        "default" | "fixed" | "add" | "sub" | "mul" | "div" | "round" | "date" | "join"
        | "part" | "lookup" | "eq" | "ne" | "gt" | "gte" | "lt" | "lte" => 2,
        "replace" => 3,
        _ => return None,
    })
}

/// Every helper name a template may call.
pub(super) fn names() -> impl Iterator<Item = &'static str> {
    BUILT_IN.iter().chain(OURS).copied()
}

pub(super) fn register(hb: &mut Handlebars<'static>) {
    hb.register_helper("json", Box::new(json));
    hb.register_helper("default", Box::new(default));
    hb.register_helper("base64", Box::new(b64));
    hb.register_helper("base64url", Box::new(b64url));
    hb.register_helper("json_base64url", Box::new(json_b64url));
    hb.register_helper("upper", Box::new(upper));
    hb.register_helper("lower", Box::new(lower));
    hb.register_helper("trim", Box::new(trim));
    hb.register_helper("fixed", Box::new(fixed));
    hb.register_helper("str", Box::new(to_str));
    hb.register_helper("num", Box::new(num));
    hb.register_helper("add", Box::new(add));
    hb.register_helper("sub", Box::new(sub));
    hb.register_helper("mul", Box::new(mul));
    hb.register_helper("div", Box::new(div));
    hb.register_helper("round", Box::new(round));
    hb.register_helper("date", Box::new(date));
    hb.register_helper("now", Box::new(now));
    hb.register_helper("concat", Box::new(concat));
    hb.register_helper("replace", Box::new(replace));
    hb.register_helper("urlencode", Box::new(urlencode));
    hb.register_helper("join", Box::new(join));
    hb.register_helper("coalesce", Box::new(coalesce));
    hb.register_helper("list", Box::new(list));
    hb.register_helper("object", Box::new(object));
    hb.register_helper("part", Box::new(part));
}

#[cfg(test)]
mod tests {
    use handlebars::Handlebars;
    use serde_json::json;

    /// Renders with these helpers alone, as `Template` registers them (no HTML escaping).
    fn r(src: &str, data: serde_json::Value) -> String {
        let mut hb = Handlebars::new();
        hb.register_escape_fn(handlebars::no_escape);
        super::register(&mut hb);
        hb.render_template(src, &data).unwrap()
    }

    /// A date-time in erpsync's own form, read from its digits, is the moment RFC 3339
    /// parsing finds, and one that names no moment is none: years across the range, each
    /// month's last days with leap years, the ends of the clock, fractions of each length.
    #[test]
    fn a_date_time_in_erpsync_form_is_read_as_rfc_3339_reads_it() {
        let rfc = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|d| d.with_timezone(&chrono::Utc))
        };
        let mut checked = 0;
        for year in [0, 1, 1900, 1970, 2000, 2024, 2026, 2100, 9999] {
            for month in [0, 1, 2, 4, 12, 13] {
                for day in [0, 1, 28, 29, 30, 31, 32] {
                    for time in ["00:00:00", "23:59:59", "24:00:00", "12:60:00", "07:08:09"] {
                        for fraction in ["", ".5", ".500", ".123", ".000001", ".123456789"] {
                            let s = format!("{year:04}-{month:02}-{day:02}T{time}{fraction}Z");
                            let fast = super::canonical_moment(&s);
                            if super::written_as_canonical(&s) {
                                assert_eq!(fast, rfc(&s), "{s}");
                                checked += 1;
                            } else {
                                assert_eq!(fast, None, "{s}");
                            }
                            assert_eq!(super::parse_datetime(&s), rfc(&s), "{s}");
                        }
                    }
                }
            }
        }
        assert!(checked > 5000, "{checked}");
        assert!(rfc("2024-02-29T23:59:59.123456789Z").is_some());
        assert_eq!(super::canonical_moment("2023-02-29T00:00:00Z"), None);
    }

    #[test]
    fn helpers_render() {
        let d = json!({"p": 42.5, "s": " ab ", "n": null, "dom": [["code", "=", "A"]], "t": "2026-11-26T10:00:00Z"});
        assert_eq!(r("{{fixed p 2}}", d.clone()), "42.50");
        assert_eq!(r("{{upper (trim s)}}", d.clone()), "AB");
        assert_eq!(r("{{default n 'x'}}", d.clone()), "x");
        assert_eq!(
            r("{{json_base64url dom}}", d.clone()),
            "W1siY29kZSIsIj0iLCJBIl1d"
        );
        assert_eq!(r("{{base64 'a:b'}}", d.clone()), "YTpi");
        assert_eq!(r("{{base64url '[1]'}}", d.clone()), "WzFd");
        assert_eq!(r("{{base64url '[10]'}}", d.clone()), "WzEwXQ==");
        assert_eq!(r("{{date t '%Y-%m-%d'}}", d.clone()), "2026-11-26");
        assert_eq!(r("{{mul p 2}}", d.clone()), "85");
        assert_eq!(r("{{concat 'a' s 'b'}}", d.clone()), "a ab b");
        assert_eq!(r("{{#if (eq p 42.5)}}yes{{/if}}", d.clone()), "yes");
        assert_eq!(
            r("{{json (list 'OR' (list 'a' '>' p))}}", d.clone()),
            r#"["OR",["a",">",42.5]]"#
        );
        assert_eq!(r("{{part '7/12' 1}}", d.clone()), "12");
        assert_eq!(
            r(
                "{{json (object 'company' 1 'locations' (list p))}}",
                d.clone()
            ),
            r#"{"company":1,"locations":[42.5]}"#
        );
        assert_eq!(r("{{part '7' 3}}", d), "");
    }
}
