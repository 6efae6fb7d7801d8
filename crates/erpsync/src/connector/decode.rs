//! Decode rules: typed JSON objects such as `{"__class__":"Decimal","decimal":"21.00"}`
//! (Tryton's JSON-RPC) are rewritten into plain values before records are read.

use serde_json::Value;

use crate::config::model::{DecodeRuleConfig, FieldType};

/// Rewrites every object that carries a rule's marker, anywhere in `value`.
pub(crate) fn decode(value: &mut Value, rules: &[DecodeRuleConfig]) {
    if rules.is_empty() {
        return;
    }
    match value {
        Value::Array(items) => items.iter_mut().for_each(|v| decode(v, rules)),
        Value::Object(map) => {
            let rule = rules
                .iter()
                .find(|r| map.get(&r.marker).and_then(Value::as_str) == Some(r.equals.as_str()));
            match rule {
                Some(rule) => {
                    let mut plain = map.remove(&rule.value).unwrap_or(Value::Null);
                    decode(&mut plain, rules);
                    *value = convert(plain, rule.as_type);
                }
                None => map.values_mut().for_each(|v| decode(v, rules)),
            }
        }
        _ => {}
    }
}

/// Converts the plain value when asked; a value that does not convert is kept as it is, so
/// the mapping (which knows the field's type) reports it with context.
fn convert(v: Value, to: Option<FieldType>) -> Value {
    let text = match &v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return v,
    };
    let converted = match to {
        None | Some(FieldType::Json | FieldType::Datetime | FieldType::Date) => None,
        // Decimals stay text: a float would lose the exactness they exist for.
        Some(FieldType::String | FieldType::Decimal) => Some(Value::String(text)),
        Some(FieldType::Integer) => text.parse::<i64>().ok().map(Value::from),
        Some(FieldType::Number) => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        Some(FieldType::Boolean) => match text.to_ascii_lowercase().as_str() {
            "true" | "1" => Some(Value::Bool(true)),
            "false" | "0" => Some(Value::Bool(false)),
            _ => None,
        },
    };
    converted.unwrap_or(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_objects_become_plain_values_everywhere() {
        let rules: Vec<DecodeRuleConfig> = serde_json::from_value(json!([
            {"marker": "__class__", "equals": "Decimal", "value": "decimal", "as": "number"},
            {"marker": "__class__", "equals": "datetime", "value": "iso"}
        ]))
        .unwrap();
        let mut v = json!({"result": [
            {"price": {"__class__": "Decimal", "decimal": "21.50"},
             "write_date": {"__class__": "datetime", "iso": "2026-01-02T03:04:05"},
             "other": {"__class__": "Unknown", "x": 1}}
        ]});
        decode(&mut v, &rules);
        assert_eq!(
            v,
            json!({"result": [{"price": 21.5, "write_date": "2026-01-02T03:04:05",
                               "other": {"__class__": "Unknown", "x": 1}}]})
        );
    }

    #[test]
    fn conversions_keep_what_does_not_convert() {
        assert_eq!(convert(json!("7"), Some(FieldType::Integer)), json!(7));
        assert_eq!(
            convert(json!("7.5"), Some(FieldType::Integer)),
            json!("7.5")
        );
        assert_eq!(
            convert(json!(21.0), Some(FieldType::Decimal)),
            json!("21.0")
        );
        assert_eq!(convert(json!("1"), Some(FieldType::Boolean)), json!(true));
        assert_eq!(convert(json!("21.00"), None), json!("21.00"));
    }
}
