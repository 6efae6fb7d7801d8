//! A recorded or hand-written HTTP exchange: a request of one system and the response it
//! got. `call --record` and `run --record` write them (secrets masked); `erpsync test`
//! serves them back. Absolute URLs of the system inside a response are written as
//! `{{base_url}}`, so a recording replays on any address.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::redact::{MASK, redact};

/// Stands for the system's base URL inside recorded responses (next-page links).
pub const BASE_URL_PLACEHOLDER: &str = "{{base_url}}";

/// Matches any value in a fixture's `query` or `body` (as does a masked `***`).
pub(crate) const ANY: &str = "*";

/// One request of a system and the response served for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExchangeConfig {
    /// The system of the project that sends the request.
    pub system: String,
    pub request: RequestConfig,
    pub response: ResponseConfig,
    /// Served at most once unless `repeat` is true (a token endpoint asked again, a page
    /// read by two flows).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeat: bool,
    /// The test passes even when no request asked for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

/// What a request must be to get this exchange's response: an `operation` of the system,
/// or a `method` and `path`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    /// The system's operation whose request this is: its method and path (with `id` and
    /// `key` filled in) stand for `method` and `path`, which may still be given to override.
    /// A step of a multi-step operation is named `OPERATION.STEP` (`update_order.order`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// `{{id}}` in the operation's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `{{key}}` in the operation's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub method: String,
    /// The path after the system's `base_url` (`/products`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// Query parameters the request must carry with these values (`"*"`: any value).
    /// Without `query`, any query matches; with it, a parameter it does not name fails the
    /// match, so a recorded exchange pins the whole query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<BTreeMap<String, String>>,
    /// Headers sent, as recorded (secrets masked). Shown, never matched.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The body the request must carry: a JSON object or list is compared member by member
    /// (members not named here are not checked, `"*"` takes any value); text is compared
    /// whole. A different body is reported as a diff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

/// The response served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseConfig {
    /// HTTP status (200 unless said).
    #[serde(default = "ok_status")]
    pub status: u16,
    /// Response headers (`Link`, `X-WP-Total`, `Retry-After`…); `content-type` defaults to
    /// JSON for a JSON body and plain text for a text one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The body: JSON, or a string sent as text. `{{base_url}}` inside strings becomes the
    /// address the system is served on.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub body: Value,
}

fn ok_status() -> u16 {
    200
}

/// Header names whose values are credentials wherever they appear.
fn secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    if n.contains("idempotency") {
        return false;
    }
    matches!(
        n.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || ["token", "secret", "key", "signature", "auth", "password"]
        .iter()
        .any(|w| n.contains(w))
}

/// JSON members whose values are credentials (token responses, login bodies).
fn secret_member(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "access_token"
            | "refresh_token"
            | "id_token"
            | "token"
            | "password"
            | "client_secret"
            | "secret"
            | "api_key"
            | "apikey"
    )
}

/// A header's value as it may be written down.
pub(crate) fn mask_header(name: &str, value: &str) -> String {
    if secret_header(name) {
        MASK.to_string()
    } else {
        redact(value).into_owned()
    }
}

/// A JSON value with every registered secret and every credential member masked.
pub(crate) fn mask_json(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(redact(s).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(mask_json).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if secret_member(k) && v.is_string() {
                        Value::String(MASK.into())
                    } else {
                        mask_json(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A form-encoded body with credential fields and registered secrets masked.
pub(crate) fn mask_form(text: &str) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(text.as_bytes()) {
        let v = if secret_member(&k) {
            MASK.to_string()
        } else {
            redact(&v).into_owned()
        };
        out.append_pair(&k, &v);
    }
    out.finish()
}

/// Replaces `from` with `to` in every string of a JSON value.
pub fn replace_in_json(value: &Value, from: &str, to: &str) -> Value {
    match value {
        Value::String(s) if s.contains(from) => Value::String(s.replace(from, to)),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| replace_in_json(v, from, to)).collect())
        }
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), replace_in_json(v, from, to)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A body as bytes became a value: JSON when it parses, the text otherwise, null when empty.
pub(crate) fn body_value(bytes: &[u8]) -> Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// Where `actual` differs from what `expected` asks for, as `member: expected …, got …`
/// lines; empty when it matches. Objects are compared on the members `expected` names,
/// lists item by item and by length, `"*"` matches anything.
pub(crate) fn subset_diff(expected: &Value, actual: &Value, at: &str, out: &mut Vec<String>) {
    let place = |at: &str| {
        if at.is_empty() {
            "body".to_string()
        } else {
            format!("body.{at}")
        }
    };
    match (expected, actual) {
        // A masked value was a secret when recorded: any value stands in for it.
        (Value::String(s), _) if s == ANY || s == MASK => {}
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let child = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match a.get(k) {
                    Some(av) => subset_diff(ev, av, &child, out),
                    None => out.push(format!(
                        "{}: expected {}, missing",
                        place(&child),
                        short(ev)
                    )),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                out.push(format!(
                    "{}: expected {} item(s), got {}",
                    place(at),
                    e.len(),
                    a.len()
                ));
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                subset_diff(ev, av, &format!("{at}[{i}]"), out);
            }
        }
        (e, a) if same_scalar(e, a) => {}
        (e, a) => out.push(format!(
            "{}: expected {}, got {}",
            place(at),
            short(e),
            short(a)
        )),
    }
}

/// Equal, taking `50`, `50.0` and `"50.00"` as the same number (decimals, form bodies).
fn same_scalar(e: &Value, a: &Value) -> bool {
    if e == a {
        return true;
    }
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match (e, a) {
        (Value::Number(_), Value::Number(_) | Value::String(_))
        | (Value::String(_), Value::Number(_)) => number(e).is_some_and(|x| number(a) == Some(x)),
        _ => false,
    }
}

/// A value on one line, cut at 120 characters.
pub fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 120 {
        let cut: String = text.chars().take(117).collect();
        format!("{cut}…")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_diff_names_each_difference() {
        let mut out = Vec::new();
        subset_diff(
            &json!({"a": 1, "b": {"c": "x"}, "d": "*", "l": [1, 2]}),
            &json!({"a": 1.0, "b": {"c": "y"}, "d": 9, "l": [1], "extra": true}),
            "",
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                "body.b.c: expected \"x\", got \"y\"",
                "body.l: expected 2 item(s), got 1",
            ]
        );
    }

    #[test]
    fn credentials_are_masked() {
        assert_eq!(mask_header("Authorization", "Basic abc"), MASK);
        assert_eq!(mask_header("X-WC-Webhook-Signature", "abc"), MASK);
        assert_eq!(
            mask_header("Accept", "application/json"),
            "application/json"
        );
        assert_eq!(
            mask_json(&json!({"access_token": "t0k3n", "n": 1})),
            json!({"access_token": MASK, "n": 1})
        );
        assert_eq!(
            mask_form("grant_type=client_credentials&client_secret=s3"),
            "grant_type=client_credentials&client_secret=***"
        );
    }
}
