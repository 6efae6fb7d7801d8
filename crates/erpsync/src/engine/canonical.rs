//! Canonical records: normalised to their entity's types, compared field by field.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::compile::Entity;
use crate::compile::types::{ValueConvertError, convert, normalize};

/// Why a mapped record does not fit its entity.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordNormaliseError {
    #[error("a mapping must produce a map")]
    NotAMap,
    #[error("field `{field}`: {error}")]
    Field {
        field: String,
        error: ValueConvertError,
    },
}

/// Normalises a mapped record to its entity: declared types, decimal scale and text
/// normalisation, so equal data compares equal whatever side it came from.
pub fn normalise(entity: &Entity, record: Value) -> Result<Value, RecordNormaliseError> {
    let Value::Object(mut map) = record else {
        return Err(RecordNormaliseError::NotAMap);
    };
    for (name, field) in &entity.fields {
        if let Some(v) = map.remove(name) {
            let mut v =
                convert(v, field.ty, field.scale).map_err(|error| RecordNormaliseError::Field {
                    field: name.clone(),
                    error,
                })?;
            if !field.normalize.is_empty()
                && let Value::String(s) = &v
            {
                v = Value::String(normalize(s, &field.normalize));
            }
            map.insert(name.clone(), v);
        }
    }
    Ok(Value::Object(map))
}

/// Fields compared by a flow: the ones it carries, less volatile ones and the timestamp.
pub(crate) fn compared_fields(entity: &Entity, carried: &[String]) -> Vec<String> {
    carried
        .iter()
        .filter(|f| {
            entity.updated_at.as_deref() != Some(f.as_str())
                && !entity.fields.get(*f).is_some_and(|c| c.volatile)
        })
        .cloned()
        .collect()
}

/// One field that differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub old: Value,
    pub new: Value,
}

fn get<'a>(v: Option<&'a Value>, field: &str) -> &'a Value {
    v.and_then(|v| v.get(field)).unwrap_or(&Value::Null)
}

/// The compared fields whose values differ between `old` and `new`.
pub(crate) fn diff(old: Option<&Value>, new: &Value, fields: &[String]) -> Vec<FieldChange> {
    fields
        .iter()
        .filter_map(|f| {
            let (o, n) = (get(old, f), get(Some(new), f));
            (o != n).then(|| FieldChange {
                field: f.clone(),
                old: o.clone(),
                new: n.clone(),
            })
        })
        .collect()
}

/// Whether two records agree on the compared fields.
pub(crate) fn same(a: Option<&Value>, b: Option<&Value>, fields: &[String]) -> bool {
    fields.iter().all(|f| get(a, f) == get(b, f))
}

/// `base` with the compared fields taken from `fields_from`.
pub(crate) fn overlay(base: Option<&Value>, fields_from: &Value, fields: &[String]) -> Value {
    let mut out = match base {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    for f in fields {
        out.insert(f.clone(), get(Some(fields_from), f).clone());
    }
    if let Value::Object(src) = fields_from {
        for (k, v) in src {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    Value::Object(out)
}

/// `base` with the listed fields (and only those) taken from `fields_from`.
pub(crate) fn overlay_fields(
    base: Option<&Value>,
    fields_from: &Value,
    fields: &[String],
) -> Value {
    let mut out = match base {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    for f in fields {
        out.insert(f.clone(), get(Some(fields_from), f).clone());
    }
    Value::Object(out)
}

/// A field's value as text, for keys.
pub fn field_text(record: &Value, field: &str) -> Option<String> {
    crate::compile::types::key_text(record.get(field)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_and_overlay() {
        let fields = vec!["price".to_string(), "stock".to_string()];
        let old = json!({"sku": "A", "price": 10, "stock": 1});
        let new = json!({"sku": "A", "price": 12, "stock": 1, "name": "x"});
        let d = diff(Some(&old), &new, &fields);
        assert_eq!(
            d,
            vec![FieldChange {
                field: "price".into(),
                old: json!(10),
                new: json!(12)
            }]
        );
        assert!(!same(Some(&old), Some(&new), &fields));
        assert!(same(Some(&old), Some(&new), &["stock".to_string()]));
        let o = overlay(
            Some(&json!({"sku": "A", "price": 10, "name": "keep"})),
            &new,
            &fields,
        );
        assert_eq!(
            o,
            json!({"sku": "A", "price": 12, "name": "keep", "stock": 1})
        );
    }
}
