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
    let Value::Object(map) = record else {
        return Err(RecordNormaliseError::NotAMap);
    };
    // Fields the entity does not declare keep their order and come first; declared ones
    // follow in the entity's (name) order, so that records of either side line up field by
    // field. Names and values are moved, not copied.
    let mut out = Map::with_capacity(map.len());
    let mut declared = Vec::with_capacity(map.len().min(entity.fields.len()));
    for (name, v) in map {
        match entity.fields.get(&name) {
            Some(field) => declared.push((name, v, field)),
            None => {
                out.insert(name, v);
            }
        }
    }
    declared.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (name, v, field) in declared {
        let mut v = match convert(v, field.ty, field.scale) {
            Ok(v) => v,
            Err(error) => return Err(RecordNormaliseError::Field { field: name, error }),
        };
        if !field.normalize.is_empty()
            && let Value::String(s) = &v
        {
            v = Value::String(normalize(s, &field.normalize));
        }
        out.insert(name, v);
    }
    Ok(Value::Object(out))
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
    use crate::compile::CanonField;
    use crate::config::model::{FieldType, Normalize};
    use serde_json::json;

    fn product() -> Entity {
        let field = |ty, scale, normalize| CanonField {
            ty,
            scale,
            normalize,
            volatile: false,
        };
        Entity {
            name: "product".into(),
            key: "sku".into(),
            updated_at: None,
            fields: [
                (
                    "sku",
                    field(
                        FieldType::String,
                        None,
                        vec![Normalize::Trim, Normalize::Uppercase],
                    ),
                ),
                ("price", field(FieldType::Decimal, Some(2), vec![])),
                ("name", field(FieldType::String, None, vec![])),
                ("stock", field(FieldType::Integer, None, vec![])),
            ]
            .into_iter()
            .map(|(n, f)| (n.to_string(), f))
            .collect(),
        }
    }

    #[test]
    fn normalising_puts_undeclared_fields_first_and_declared_ones_in_name_order() {
        // Two sides' mappings emit their fields in different orders; their canonical
        // records must line up field by field (a binding stores side b as its differences
        // from side a only when the names come in the same order).
        let shop = json!({"stock": "7", "extra": 1, "sku": " ab-1 ", "price": 10.005, "name": 5});
        let erp = json!({"name": 5, "price": "10.01", "sku": "AB-1", "extra": 1, "stock": 7.0});
        let (a, b) = (
            normalise(&product(), shop).unwrap(),
            normalise(&product(), erp).unwrap(),
        );
        let names = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&a), ["extra", "name", "price", "sku", "stock"]);
        assert_eq!(names(&a), names(&b));
        assert_eq!(
            a,
            json!({"extra": 1, "name": "5", "price": 10.01, "sku": "AB-1", "stock": 7})
        );
        assert_eq!(a.to_string(), b.to_string());
    }

    #[test]
    fn normalising_names_the_first_field_in_name_order_that_does_not_convert() {
        let e = normalise(&product(), json!({"stock": "many", "price": "dear"})).unwrap_err();
        assert!(
            matches!(&e, RecordNormaliseError::Field { field, .. } if field == "price"),
            "{e}"
        );
        assert_eq!(
            normalise(&product(), json!([1])),
            Err(RecordNormaliseError::NotAMap)
        );
    }

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
