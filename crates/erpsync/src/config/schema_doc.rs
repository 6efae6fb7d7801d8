//! What the flow-file JSON Schema says about templates and mapping paths beyond the model's
//! docs: the names each place's templates see and the helpers they may call, both taken from
//! the code that checks and renders them, so an editor's hover and completion stay true.

use schemars::Schema;
use serde_json::{Value, json};

use crate::expr::scope::{self, PARENT, TARGET};

/// Name of the `$defs` entry that lists the template helpers.
pub(crate) const HELPER_DEF: &str = "TemplateHelper";

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The sentence naming every helper and how many arguments it needs at least.
fn helpers_sentence() -> String {
    let list: Vec<String> = crate::expr::helper_arities()
        .into_iter()
        .map(|(name, n)| format!("`{name}` ({n})"))
        .collect();
    format!(
        "Helpers (with the arguments they need at least): {}.",
        list.join(", ")
    )
}

fn append(schema: &mut Schema, text: &str) {
    let before = schema
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let description = if before.is_empty() {
        text.to_string()
    } else {
        format!("{before}\n\n{text}")
    };
    schema.insert("description".into(), Value::String(description));
}

fn examples(schema: &mut Schema, values: Value) {
    schema.insert("examples".into(), values);
}

fn operation_scope() -> String {
    format!("Template scope: {}.", quoted(scope::OPERATION))
}

/// A template of an operation (path, query, headers, body) or of a system's headers.
pub(crate) fn operation_template(schema: &mut Schema) {
    append(schema, &operation_scope());
    append(schema, &helpers_sentence());
}

/// The path of an operation: its scope, and examples.
pub(crate) fn operation_path(schema: &mut Schema) {
    operation_template(schema);
    examples(
        schema,
        json!(["/products/{{id}}", "/orders/{{urlencode key}}"]),
    );
}

/// A template of a step of a multi-step operation.
pub(crate) fn step_template(schema: &mut Schema) {
    append(
        schema,
        &format!(
            "Template scope: {}, and `{}.NAME.status`, `.body` and `.record` of the earlier \
             steps.",
            quoted(scope::OPERATION),
            scope::STEPS
        ),
    );
    append(schema, &helpers_sentence());
}

/// A `read` mapping: native record to canonical record.
pub(crate) fn read_mapping(schema: &mut Schema) {
    append(
        schema,
        &format!(
            "Template scope: the native record's fields, {}, and `{PARENT}` for a record of a \
             nested listing (`$parent.…` paths, `{{{{parent.…}}}}` templates).",
            quoted(scope::MAPPING)
        ),
    );
    append(schema, &helpers_sentence());
    entry(
        schema,
        "A canonical field read from the native record: `$.path`, `$parent.path` (the \
         record's parent in a nested listing), a template, or the full form.",
        json!(["$.sku", "$parent.name", "{{parent.name}} / {{sku}}"]),
    );
}

/// A `write` mapping: canonical record to native payload.
pub(crate) fn write_mapping(schema: &mut Schema) {
    append(
        schema,
        &format!(
            "Template scope: the canonical record's fields, {}, and `{TARGET}` on an update \
             (the record the target holds now: `$target.…` paths, `{{{{target.…}}}}` \
             templates; `merge` keeps its list entries or object members).",
            quoted(scope::MAPPING)
        ),
    );
    append(schema, &helpers_sentence());
    entry(
        schema,
        "A native field written from the canonical record: `$.path`, `$target.path` (what the \
         target holds now, on an update), a template, or the full form (with `merge`).",
        json!([
            "$.sku",
            "$target.meta_title",
            "{{target.name}} ({{sku}})",
            {"path": "$.address", "merge": true},
            {"each": "$.categories", "fields": {"name": "$.name"}, "merge": "name"}
        ]),
    );
}

/// Describes the entries of a mapping (its `additionalProperties`, a `$ref` to the field map).
fn entry(schema: &mut Schema, description: &str, values: Value) {
    if let Some(Value::Object(each)) = schema
        .as_object_mut()
        .and_then(|o| o.get_mut("additionalProperties"))
    {
        each.insert("description".into(), Value::String(description.into()));
        each.insert("examples".into(), values);
    }
}

/// An entity's `id`: a JSONPath or a template over the native record.
pub(crate) fn id_template(schema: &mut Schema) {
    append(
        schema,
        &format!(
            "Template scope: the native record's fields, and `{PARENT}` for a record of a \
             nested listing (`{{{{parent.id}}}}/{{{{id}}}}`)."
        ),
    );
    append(schema, &helpers_sentence());
    examples(schema, json!(["$.id", "{{parent.id}}/{{id}}"]));
}

/// A webhook's match key.
pub(crate) fn webhook_key(schema: &mut Schema) {
    append(schema, "Template scope: the delivered payload only.");
    append(schema, &helpers_sentence());
}

/// An error rule's message.
pub(crate) fn error_message(schema: &mut Schema) {
    append(
        schema,
        &format!(
            "Template scope: {} of the response.",
            quoted(scope::ERROR_MESSAGE)
        ),
    );
    append(schema, &helpers_sentence());
}

/// Adds the `$defs` entry naming every template helper, each with the arguments it needs.
pub(crate) fn add_helper_def(root: &mut Value) {
    let alternatives: Vec<Value> = crate::expr::helper_arities()
        .into_iter()
        .map(|(name, n)| {
            json!({
                "const": name,
                "description": format!(
                    "`{{{{{name} …}}}}`, or `({name} …)` inside another call: at least {n} \
                     argument{}",
                    if n == 1 { "" } else { "s" }
                ),
                "x-min-args": n,
            })
        })
        .collect();
    if let Some(Value::Object(defs)) = root.get_mut("$defs") {
        defs.insert(
            HELPER_DEF.into(),
            json!({
                "description": "A helper a template may call; `validate` rejects any other \
                                name and a call with fewer arguments than it needs.",
                "type": "string",
                "oneOf": alternatives,
            }),
        );
    }
}
