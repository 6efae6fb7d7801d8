//! Request and response bodies and the texts made of them: encoding, parsing, the message of
//! a failure no rule described.

use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::config::model::{BodyFormat, HttpMethod};
use crate::connector::operation::Operation;
use crate::redact::redact_json;

pub(super) fn method(m: HttpMethod) -> reqwest::Method {
    match m {
        HttpMethod::Get => reqwest::Method::GET,
        HttpMethod::Post => reqwest::Method::POST,
        HttpMethod::Put => reqwest::Method::PUT,
        HttpMethod::Patch => reqwest::Method::PATCH,
        HttpMethod::Delete => reqwest::Method::DELETE,
    }
}

pub(super) fn encode_body(value: &Value, format: BodyFormat) -> (Vec<u8>, &'static str) {
    match format {
        BodyFormat::Json => (
            serde_json::to_vec(value).unwrap_or_default(),
            "application/json",
        ),
        BodyFormat::Form => {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            if let Value::Object(m) = value {
                for (k, v) in m {
                    match v {
                        Value::Null => {}
                        Value::String(s) => {
                            form.append_pair(k, s);
                        }
                        other => {
                            form.append_pair(k, &other.to_string());
                        }
                    }
                }
            }
            (
                form.finish().into_bytes(),
                "application/x-www-form-urlencoded",
            )
        }
    }
}

/// JSON when it parses, the text otherwise, null when empty.
pub(super) fn parse_body(bytes: &[u8]) -> Value {
    parse_body_json(bytes).unwrap_or_else(|text| text)
}

/// `parse_body`, telling a body that is not JSON (`Err`, holding its text) from one that is.
pub(super) fn parse_body_json(bytes: &[u8]) -> Result<Value, Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    crate::json::from_slice(bytes)
        .map_err(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// A message for a failure no rule described: the status and the start of the body.
pub(super) fn default_message(status: u16, headers: &HeaderMap, body: &Value) -> String {
    if (300..400).contains(&status) {
        let to = headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?");
        return format!("status {status}: redirected to `{to}`; check the system's `base_url`");
    }
    if body.is_null() {
        return format!("status {status}");
    }
    format!("status {status}: {}", body_start(body))
}

/// The first 300 characters of a body, its text or its JSON, with `…` where it goes on.
pub(super) fn body_start(body: &Value) -> String {
    let text = match body {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut short: String = text.chars().take(300).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

/// Whether a body answering `op` holds its records (`RecordsPath::not_a_page`: it may lack
/// the member `records` reads, or be an object where the body is the list): `Ok(true)` when
/// it does; `Ok(false)` when it does not and the operation says its API answers so when it
/// has nothing to list (`absent_means_empty`: an empty page); otherwise `Err` with the reason.
/// Such an answer is an error served with a 2xx: read as empty, it would make the records it
/// should have held look missing.
pub(super) fn holds_records(op: &Operation, body: &Value) -> Result<bool, String> {
    let Some(why) = op.records.as_ref().and_then(|p| p.not_a_page(body)) else {
        return Ok(true);
    };
    if op.absent_means_empty {
        return Ok(false);
    }
    Err(format!(
        "{why}: {} (if the API answers so when it has nothing to list, the operation takes \
         `absent_means_empty: true`)",
        body_start(&redact_json(body))
    ))
}

/// An error with its causes: reqwest's own message hides whether it was a timeout.
pub(super) fn error_chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Sets a (nested) field of a JSON object, creating the objects on the way.
pub(super) fn set_field(value: &mut Value, path: &[String], v: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = value;
    for p in parents {
        if !cur.get(p).is_some_and(Value::is_object) {
            if let Value::Object(m) = cur {
                m.insert(p.clone(), Value::Object(Default::default()));
            } else {
                return;
            }
        }
        cur = cur.get_mut(p).expect("just ensured");
    }
    if let Value::Object(m) = cur {
        m.insert(last.clone(), v);
    }
}
