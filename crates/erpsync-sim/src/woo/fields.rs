//! How the WooCommerce simulator reads and prints fields as WordPress does: dates without a
//! zone, strings, integers, booleans and prices checked one by one (400 `rest_invalid_param`
//! naming the field), and `meta_data` entries matched by id or key.

use serde::Serialize;
use serde_json::Value;

use super::WooError;
use crate::server::cents;

/// WordPress's date format: seconds, no zone.
pub(super) mod wp_date {
    use chrono::{DateTime, Utc};
    use serde::Serializer;

    pub(crate) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.format("%Y-%m-%dT%H:%M:%S").to_string())
    }
}

/// One `meta_data` entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Meta {
    pub id: u64,
    pub key: String,
    pub value: Value,
}

pub(super) fn string_of(key: &str, v: &Value) -> Result<String, WooError> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| WooError::param(key, format!("{key} is not of type string.")))
}

pub(super) fn one_of(key: &str, v: &Value, allowed: &[&str]) -> Result<String, WooError> {
    let s = string_of(key, v)?;
    if allowed.contains(&s.as_str()) {
        Ok(s)
    } else {
        Err(WooError::param(
            key,
            format!("{key} is not one of {}.", allowed.join(", ")),
        ))
    }
}

/// An integer, or a string of digits (WordPress's `rest_is_integer`).
pub(super) fn integer_of(key: &str, v: &Value) -> Result<i64, WooError> {
    v.as_i64()
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        .ok_or_else(|| WooError::param(key, format!("{key} is not of type integer.")))
}

/// A boolean, or one of the strings and numbers WordPress takes for one.
pub(super) fn boolean_of(key: &str, v: &Value) -> Result<bool, WooError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if matches!(s.as_str(), "true" | "1") => Ok(true),
        Value::String(s) if matches!(s.as_str(), "false" | "0" | "") => Ok(false),
        Value::Number(n) if n.as_i64() == Some(1) => Ok(true),
        Value::Number(n) if n.as_i64() == Some(0) => Ok(false),
        _ => Err(WooError::param(
            key,
            format!("{key} is not of type boolean."),
        )),
    }
}

/// A price: a string holding a decimal number, or empty.
pub(super) fn price_of(key: &str, v: &Value) -> Result<String, WooError> {
    let s = string_of(key, v)?;
    if s.is_empty() || s.trim().parse::<f64>().is_ok() {
        Ok(s.trim().to_owned())
    } else {
        Err(WooError::param(key, format!("{key} is not a valid price.")))
    }
}

/// Applies `meta_data` entries: by `id` when given, else by key, else appended.
pub(super) fn apply_meta(
    meta: &mut Vec<Meta>,
    v: &Value,
    next_meta_id: &mut u64,
) -> Result<(), WooError> {
    let items = v
        .as_array()
        .ok_or_else(|| WooError::param("meta_data", "meta_data is not of type array."))?;
    for item in items {
        let key = item
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                WooError::param("meta_data", "meta_data[0][key] is not of type string.")
            })?
            .to_owned();
        let value = item.get("value").cloned().unwrap_or(Value::Null);
        let by_id = item.get("id").and_then(Value::as_u64);
        let existing = match by_id {
            Some(id) => meta.iter_mut().find(|m| m.id == id),
            None => meta.iter_mut().find(|m| m.key == key),
        };
        match existing {
            Some(m) => {
                m.key = key;
                m.value = value;
            }
            None => {
                meta.push(Meta {
                    id: *next_meta_id,
                    key,
                    value,
                });
                *next_meta_id += 1;
            }
        }
    }
    Ok(())
}

pub(super) fn money(x: f64) -> String {
    format!("{:.2}", cents(x))
}
