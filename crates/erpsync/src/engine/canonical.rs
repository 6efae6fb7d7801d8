//! Canonical records: normalised to their entity's types, compared field by field.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::compile::types::{ValueConvertError, convert_in_place, normalize_owned};
use crate::compile::{CanonField, Entity, Mapping};

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
    // Every field in name order, declared or not, so that records of either side line up
    // field by field. Sorted in place: the map keeps each name's hash, nothing is copied or
    // hashed again, and the values are converted where they are. A mapping produces its
    // fields in name order already (its fields are compiled from a sorted map): checked,
    // not sorted again, since sorting rebuilds the map's table.
    if !map.keys().is_sorted() {
        map.sort_keys();
    }
    // The entity's fields are in name order too: walked beside the record's, one
    // comparison a step instead of a search of the entity per field.
    let mut declared = entity.fields.iter().peekable();
    for (name, v) in map.iter_mut() {
        let mut field = None;
        while let Some((d, f)) = declared.peek() {
            match d.as_str().cmp(name.as_str()) {
                std::cmp::Ordering::Less => {
                    declared.next();
                }
                std::cmp::Ordering::Equal => {
                    field = Some(*f);
                    declared.next();
                    break;
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        let Some(field) = field else {
            continue;
        };
        convert_field(name, v, field)?;
    }
    Ok(Value::Object(map))
}

/// The canonical field of each name of the records one read mapping makes, in their order
/// (`None` for a name the entity does not declare): `normalise_shaped` of such a record
/// converts each value by position, without looking its name up.
#[derive(Clone)]
pub(crate) struct Shaped<'e> {
    fields: Vec<Option<&'e CanonField>>,
    /// The names, to check in debug builds that a record is the mapping's.
    #[cfg(debug_assertions)]
    names: Vec<String>,
}

impl<'e> Shaped<'e> {
    /// For the records `mapping` makes, when they all have the same names in name order
    /// (what `normalise` sorts them into).
    pub(crate) fn of(entity: &'e Entity, mapping: &Mapping) -> Option<Shaped<'e>> {
        let names: Vec<&str> = mapping.shape_names()?.collect();
        if !names.is_sorted() {
            return None;
        }
        Some(Shaped {
            fields: names.iter().map(|n| entity.fields.get(*n)).collect(),
            #[cfg(debug_assertions)]
            names: names.iter().map(|n| (*n).to_owned()).collect(),
        })
    }
}

/// `normalise` of a record made by the mapping `shaped` was made `of`: the same record.
/// A record with other names than the mapping's (not made by it) is normalised by name.
pub(crate) fn normalise_shaped(
    entity: &Entity,
    shaped: &Shaped,
    record: Value,
) -> Result<Value, RecordNormaliseError> {
    let mut map = match record {
        Value::Object(map) if map.len() == shaped.fields.len() => map,
        other => return normalise(entity, other),
    };
    #[cfg(debug_assertions)]
    debug_assert!(map.keys().eq(&shaped.names), "not the mapping's record");
    convert_by_position(shaped, map.iter_mut().map(|(k, v)| (k.as_str(), v)))?;
    Ok(Value::Object(map))
}

/// `normalise_shaped` of the record whose fields are `names` with `values`, in the mapping's
/// order, normalised where they are.
pub(crate) fn normalise_values<'n>(
    shaped: &Shaped,
    names: impl Iterator<Item = &'n str>,
    values: &mut [Value],
) -> Result<(), RecordNormaliseError> {
    debug_assert_eq!(values.len(), shaped.fields.len());
    convert_by_position(shaped, names.zip(values.iter_mut()))
}

/// Each field of a record of `shaped`'s mapping, in the mapping's order, converted by the
/// canonical field at its place (a name the entity does not declare is left as it is).
fn convert_by_position<'n, 'v>(
    shaped: &Shaped,
    fields: impl Iterator<Item = (&'n str, &'v mut Value)>,
) -> Result<(), RecordNormaliseError> {
    for ((name, v), field) in fields.zip(&shaped.fields) {
        if let Some(field) = field {
            convert_field(name, v, field)?;
        }
    }
    Ok(())
}

/// A canonical field's value converted to its type and normalised, where it is.
fn convert_field(
    name: &str,
    v: &mut Value,
    field: &CanonField,
) -> Result<(), RecordNormaliseError> {
    convert_in_place(v, field.ty, field.scale).map_err(|error| RecordNormaliseError::Field {
        field: name.to_owned(),
        error,
    })?;
    if let Value::String(s) = v
        && !field.normalize.is_empty()
    {
        *s = normalize_owned(std::mem::take(s), &field.normalize);
    }
    Ok(())
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
    // One record, twice (a target found to hold exactly the source's record): equal.
    if let (Some(x), Some(y)) = (a, b)
        && std::ptr::eq(x, y)
    {
        return true;
    }
    let (mut a, mut b) = (InOrder::of(a), InOrder::of(b));
    fields.iter().all(|f| a.get(f) == b.get(f))
}

/// A record's fields looked up in the order they are asked for. Normalised records hold
/// their fields in name order, and flows compare them in the same order, so the
/// next field asked for is nearly always the next one held: checked first, before the name
/// is hashed. Any order gives the same answers.
pub(crate) struct InOrder<'a> {
    map: Option<&'a Map<String, Value>>,
    next: Option<std::iter::Peekable<serde_json::map::Iter<'a>>>,
}

impl<'a> InOrder<'a> {
    pub(crate) fn of(v: Option<&'a Value>) -> Self {
        let map = v.and_then(Value::as_object);
        InOrder {
            map,
            next: map.map(|m| m.iter().peekable()),
        }
    }

    pub(crate) fn get(&mut self, field: &str) -> &'a Value {
        // Skips what lies before the field; a field asked for out of order is hashed.
        if let Some(next) = &mut self.next {
            while let Some((name, v)) = next.peek() {
                match name.as_str().cmp(field) {
                    std::cmp::Ordering::Equal => {
                        let v = *v;
                        next.next();
                        return v;
                    }
                    std::cmp::Ordering::Less => {
                        next.next();
                    }
                    std::cmp::Ordering::Greater => break,
                }
            }
        }
        self.map.and_then(|m| m.get(field)).unwrap_or(&Value::Null)
    }
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

    /// `same` reads fields in order where it can; in any order, with fields missing, null,
    /// undeclared or asked twice, it answers as comparing field by field by name does.
    #[test]
    fn same_answers_as_a_field_by_field_comparison_whatever_the_order() {
        let by_name = |a: Option<&Value>, b: Option<&Value>, fields: &[String]| {
            fields.iter().all(|f| get(a, f) == get(b, f))
        };
        let records = [
            json!({"a": 1, "b": 2, "c": 3}),
            json!({"c": 3, "b": 2, "a": 1}),
            json!({"zz": 0, "a": 1, "b": 2, "c": 3}),
            json!({"a": 1, "c": 3}),
            json!({"a": 1, "b": null, "c": 3}),
            json!({"a": 1, "b": 5, "c": 3}),
            json!({"b": 2}),
            json!("not a record"),
        ];
        let orders: [&[&str]; 6] = [
            &["a", "b", "c"],
            &["c", "b", "a"],
            &["b", "a", "c", "a"],
            &["a", "zz"],
            &["b"],
            &[],
        ];
        for fields in orders {
            let fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
            for a in records.iter().map(Some).chain([None]) {
                for b in records.iter().map(Some).chain([None]) {
                    assert_eq!(
                        same(a, b, &fields),
                        by_name(a, b, &fields),
                        "{a:?} and {b:?} on {fields:?}"
                    );
                }
            }
        }
    }

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

    /// A record a mapping made, normalised by position (`normalise_shaped`), is the one
    /// `normalise` makes of it by name: every declared type and text normalisation, names
    /// the entity does not declare, nulls, and a value that does not convert (the same
    /// error, naming the field). A record of other names is normalised by name.
    #[test]
    fn a_mapped_record_normalised_by_position_is_the_one_normalised_by_name() {
        let entity = product();
        let cfg: std::collections::BTreeMap<String, crate::config::model::FieldMapConfig> =
            serde_json::from_value(json!({
                "sku": "$.code", "price": "$.p", "name": "$.n", "stock": "$.q", "extra": "$.x"
            }))
            .unwrap();
        let (mapping, problems) = Mapping::compile(&cfg);
        assert!(problems.is_empty(), "{problems:?}");
        let shaped = Shaped::of(&entity, &mapping).unwrap();
        let env = crate::compile::MapEnv {
            vars: &Value::Null,
            system: &Value::Null,
            refs: &crate::compile::NoRefs,
        };
        for native in [
            json!({"code": " ab-1 ", "p": 10.005, "n": 5, "q": "7", "x": [1]}),
            json!({"code": "x", "p": "12", "n": null, "q": 7.0}),
            json!({}),
            json!({"code": "y", "p": "not a price"}),
            json!({"code": "z", "q": "seven"}),
        ] {
            let mapped = mapping.apply(&native, &env, None).unwrap();
            assert_eq!(
                normalise_shaped(&entity, &shaped, mapped.clone()),
                normalise(&entity, mapped.clone()),
                "{native}"
            );
        }
        let other = json!({"stock": "7", "sku": " ab-1 "});
        assert_eq!(
            normalise_shaped(&entity, &shaped, other.clone()),
            normalise(&entity, other)
        );
    }

    #[test]
    fn normalising_puts_every_field_in_name_order() {
        // Two sides' mappings emit their fields in different orders; their canonical
        // records must line up field by field (a binding stores side b as its differences
        // from side a only when the names come in the same order).
        let shop = json!({"stock": "7", "extra": 1, "sku": " ab-1 ", "zz": [], "price": 10.005, "name": 5});
        let erp =
            json!({"zz": [], "name": 5, "price": "10.01", "sku": "AB-1", "extra": 1, "stock": 7.0});
        let (a, b) = (
            normalise(&product(), shop).unwrap(),
            normalise(&product(), erp).unwrap(),
        );
        let names = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&a), ["extra", "name", "price", "sku", "stock", "zz"]);
        assert_eq!(names(&a), names(&b));
        assert_eq!(
            a,
            json!({"extra": 1, "name": "5", "price": 10.01, "sku": "AB-1", "stock": 7, "zz": []})
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
