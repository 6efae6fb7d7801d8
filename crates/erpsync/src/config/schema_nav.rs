//! Finds, in the flow-file JSON Schema, which keys are allowed at a place in a document, so an
//! unknown key can be answered with the valid ones.

use std::sync::LazyLock;

use serde_json::Value;

use super::model::FileConfig;

/// The flow-file JSON Schema, as generated from the model.
pub(crate) fn flow_schema() -> &'static Value {
    static SCHEMA: LazyLock<Value> = LazyLock::new(|| {
        let schema = schemars::schema_for!(FileConfig);
        let mut value = serde_json::to_value(schema).unwrap_or(Value::Null);
        super::schema_doc::add_helper_def(&mut value);
        value
    });
    &SCHEMA
}

/// Keys allowed in the map at `parent` (a path of segments) of `doc`.
pub(crate) fn allowed_keys(doc: &Value, parent: &[&str]) -> Vec<String> {
    let root = flow_schema();
    let mut schema = root;
    let mut value = doc;
    for seg in parent {
        let Some(s) = child_schema(root, schema, value, seg) else {
            return Vec::new();
        };
        schema = s;
        value = match value {
            Value::Object(m) => m.get(*seg).unwrap_or(&Value::Null),
            Value::Array(a) => seg
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get(i))
                .unwrap_or(&Value::Null),
            _ => &Value::Null,
        };
    }
    let mut keys = Vec::new();
    for s in candidates(root, schema, value) {
        if let Some(Value::Object(props)) = s.get("properties") {
            keys.extend(props.keys().cloned());
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    let mut s = schema;
    for _ in 0..16 {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.rsplit('/').next().unwrap_or("");
                match root.get("$defs").and_then(|d| d.get(name)) {
                    Some(def) => s = def,
                    None => return s,
                }
            }
            None => return s,
        }
    }
    s
}

/// The alternatives a value may match, with `oneOf`/`anyOf` narrowed by a `kind` tag when the
/// document has one.
fn candidates<'a>(root: &'a Value, schema: &'a Value, value: &Value) -> Vec<&'a Value> {
    let s = resolve(root, schema);
    let mut out = Vec::new();
    let alts = s
        .get("oneOf")
        .or_else(|| s.get("anyOf"))
        .and_then(Value::as_array);
    match alts {
        Some(alts) => {
            let tag = value.get("kind").and_then(Value::as_str);
            for alt in alts {
                for c in candidates(root, alt, value) {
                    let const_kind = c
                        .get("properties")
                        .and_then(|p| p.get("kind"))
                        .and_then(|k| k.get("const"))
                        .and_then(Value::as_str);
                    match (tag, const_kind) {
                        (Some(t), Some(k)) if t != k => {}
                        _ => out.push(c),
                    }
                }
            }
        }
        None => out.push(s),
    }
    out
}

fn child_schema<'a>(
    root: &'a Value,
    schema: &'a Value,
    value: &Value,
    seg: &str,
) -> Option<&'a Value> {
    for c in candidates(root, schema, value) {
        if let Some(p) = c.get("properties").and_then(|p| p.get(seg)) {
            return Some(p);
        }
        if let Some(ap) = c.get("additionalProperties")
            && ap.is_object()
        {
            return Some(ap);
        }
        if let Some(items) = c.get("items")
            && items.is_object()
        {
            return Some(items);
        }
    }
    None
}

/// The flow schema's text, as committed in `schemas/flow.schema.json`.
pub fn flow_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(flow_schema()).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_of_nested_places() {
        let doc =
            json!({"flows": {"f": {"trigger": {}}}, "systems": {"s": {"auth": {"kind": "basic"}}}});
        let keys = allowed_keys(&doc, &["flows", "f", "trigger"]);
        assert!(keys.contains(&"schedule".to_string()), "{keys:?}");
        let keys = allowed_keys(&doc, &["systems", "s", "auth"]);
        assert_eq!(keys, vec!["kind", "password", "username"]);
        let keys = allowed_keys(&doc, &[]);
        assert!(keys.contains(&"flows".to_string()));
    }

    /// An editor completes the keys of a step and of its `on`.
    #[test]
    fn keys_of_a_step_and_its_condition() {
        let doc = json!({"systems": {"s": {"operations": {"o": {"steps": [
            {"name": "a", "path": "/a", "on": {"step": "x"}}
        ]}}}}});
        let at = ["systems", "s", "operations", "o"];
        assert!(allowed_keys(&doc, &at).contains(&"steps".to_string()));
        let step = [&at[..], &["steps", "0"]].concat();
        let keys = allowed_keys(&doc, &step);
        for k in [
            "name", "method", "path", "body", "record", "on", "if", "errors",
        ] {
            assert!(keys.contains(&k.to_string()), "{k}: {keys:?}");
        }
        let on = [&step[..], &["on"]].concat();
        assert_eq!(allowed_keys(&doc, &on), vec!["status", "step", "when"]);
    }

    /// An editor completes the full form of a mapped field, `merge` included, in a write
    /// mapping and in the `fields` of an `each` nested in it.
    #[test]
    fn keys_of_a_mapped_field_and_of_its_nested_fields() {
        let doc = json!({"systems": {"s": {"entities": {"e": {"write": {
            "lines": {"each": "$.lines", "fields": {"code": {"path": "$.sku"}}}
        }}}}}});
        let field = ["systems", "s", "entities", "e", "write", "lines"];
        let keys = allowed_keys(&doc, &field);
        for k in [
            "path", "template", "each", "fields", "merge", "ref", "lookup",
        ] {
            assert!(keys.contains(&k.to_string()), "{k}: {keys:?}");
        }
        let nested = [&field[..], &["fields", "code"]].concat();
        assert_eq!(allowed_keys(&doc, &nested), keys);
    }
}
