//! How one entity lives in a system: its operations and the field mappings to and from the canonical record.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How one entity lives in a system.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SystemEntityConfig {
    /// JSONPath to the system's own id in one of its records, e.g. `$.id`; or a template over
    /// the record that joins several ids with `/` into a composite id, e.g.
    /// `{{template}}/{{id}}` when updates go to one record and references to another. Operations
    /// get the composite as `{{id}}` (split it with the `part` helper); `ref` picks a part.
    #[serde(default = "default_id_path")]
    #[schemars(transform = crate::config::schema_doc::id_template)]
    pub id: String,
    /// Operation that lists records (incremental with `{{since}}` when it uses it).
    #[serde(default)]
    pub list: Option<String>,
    /// Operation that lists the records changed since `{{since}}`, for APIs where what changes
    /// is found elsewhere than where the records are listed (stock levels found through the
    /// stock moves written since). Incremental runs use it; full reads and reconciliation use
    /// `list`.
    #[serde(default)]
    pub changes: Option<String>,
    /// Operation that finds one record by the match key, `{{key}}`.
    #[serde(default)]
    pub lookup: Option<String>,
    /// Operation that reads one record by id, `{{id}}`.
    #[serde(default)]
    pub get: Option<String>,
    /// Operation that creates a record from `{{record}}`.
    #[serde(default)]
    pub create: Option<String>,
    /// Operation that updates record `{{id}}` from `{{record}}`.
    #[serde(default)]
    pub update: Option<String>,
    /// Named custom actions on one record (`{{id}}`), e.g. `lock: lock_order`; flows call them
    /// as post-actions.
    #[serde(default)]
    pub actions: BTreeMap<String, String>,
    /// Native record → canonical record: one entry per canonical field, evaluated on the
    /// native record (`$` is the native record).
    #[serde(default)]
    #[schemars(transform = crate::config::schema_doc::read_mapping)]
    pub read: BTreeMap<String, FieldMapConfig>,
    /// Canonical record → native payload for create and update: one entry per native field
    /// (dotted names build nested objects), evaluated on the canonical record.
    #[serde(default)]
    #[schemars(transform = crate::config::schema_doc::write_mapping)]
    pub write: BTreeMap<String, FieldMapConfig>,
}

fn default_id_path() -> String {
    "$.id".into()
}

/// Where a mapped field's value comes from. A plain string is a shorthand: one that starts
/// with `$` is a JSONPath, any other is a Handlebars template. Besides `$.…` (the record
/// mapped), a read mapping's paths may start at `$parent.…` (the element a record of a nested
/// listing sits in) and a write mapping's at `$target.…` (the record the target holds now, on
/// an update); templates read them as `{{parent.…}}` and `{{target.…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum FieldMapConfig {
    /// Shorthand: `$.path`, `$parent.path` (read), `$target.path` (write) or a template.
    Short(String),
    /// The full form.
    Full(Box<FieldSpecConfig>),
}

impl<'de> Deserialize<'de> for FieldMapConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Hand-written instead of `untagged`, so that a mistake in the full form is reported as
        // itself ("unknown field `tmplate`") and not as "did not match any variant".
        let value = Value::deserialize(d)?;
        match value {
            Value::String(s) => Ok(FieldMapConfig::Short(s)),
            other @ Value::Object(_) => FieldSpecConfig::deserialize(other)
                .map(|f| FieldMapConfig::Full(Box::new(f)))
                .map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!(
                "expected a JSONPath, a template or a field map, found {}",
                json_kind(&other)
            ))),
        }
    }
}

pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// The full form of a mapped field: exactly one of `path`, `template`, `const`, `lookup`, `ref`
/// or `each`, with an optional type and default.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldSpecConfig {
    /// JSONPath into the source record (`$.…`); in a read mapping of a nested listing,
    /// `$parent.…` reads the record's parent; in a write mapping, `$target.…` reads the record
    /// the target holds now (null on a create).
    #[serde(default)]
    #[schemars(extend("examples" = ["$.price_gross", "$parent.name", "$target.meta_data"]))]
    pub path: Option<String>,
    /// Handlebars template over the source record; `{{parent.…}}` in a read mapping of a
    /// nested listing, `{{target.…}}` in a write mapping (see the mapping's template scope).
    #[serde(default)]
    #[schemars(extend("examples" = ["{{parent.name}} / {{sku}}", "{{target.name}} ({{sku}})"]))]
    pub template: Option<String>,
    /// A constant value.
    #[serde(default, rename = "const")]
    pub constant: Option<Value>,
    /// Translate a value through a table of `vars` (e.g. a shop status to an ERP status).
    #[serde(default)]
    pub lookup: Option<LookupConfig>,
    /// The id, in the target system, of a related record erpsync has already synced (e.g. the
    /// ERP id of the order's customer, or of a line's product).
    #[serde(default, rename = "ref")]
    pub reference: Option<RefConfig>,
    /// A list: map every element selected by this JSONPath with `fields`.
    #[serde(default)]
    pub each: Option<String>,
    /// Fields of each element, with `each`; their paths and templates read the element.
    #[serde(default)]
    pub fields: Option<BTreeMap<String, FieldMapConfig>>,
    /// Type the value is converted to.
    #[serde(default, rename = "type")]
    pub field_type: Option<FieldType>,
    /// Value used when the source has none (missing or null).
    #[serde(default)]
    pub default: Option<Value>,
    /// In a write mapping, merge the value with what the target holds at the field's place
    /// when a record is updated, so a write that replaces the whole list or object keeps what
    /// only the target has: `true` for an object (the target's other members stay), or the
    /// member a list's objects are paired on (e.g. `key` for `[{key, value}]`: paired entries
    /// take the mapped members, the target's other entries stay, new ones are added), or
    /// `{key, unpaired}` where the target's entries the value has no pair for are sent with
    /// the `unpaired` members set (`{quantity: 0}` removes a WooCommerce order line).
    #[serde(default)]
    #[schemars(extend("examples" = [true, "key", "name", {"key": "sku", "unpaired": {"quantity": 0}}]))]
    pub merge: Option<MergeConfig>,
}

/// How a written field is merged with the target's current value (`merge`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum MergeConfig {
    /// `true`: an object keeps the target's members the value lacks.
    Object(bool),
    /// A list of objects paired on this member.
    ByKey(String),
    /// A list of objects paired on `key`, whose unpaired target entries take `unpaired`.
    Keyed(KeyedMergeConfig),
}

/// `merge: {key, unpaired}`: a list merge that also says what becomes of the target's
/// entries the written list has no pair for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct KeyedMergeConfig {
    /// The member the lists' objects are paired on, e.g. `sku`.
    pub key: String,
    /// Members set on each of the target's entries that has no pair in the written list (the
    /// entry keeps its other members, its `id` among them); without it they are sent as they
    /// are. APIs that delete a list entry only when told to (a zero quantity, `_destroy`) need
    /// this for an entry the source no longer has.
    #[serde(default)]
    pub unpaired: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A lookup of a value in a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct LookupConfig {
    /// Name of a table in `vars` (an object from keys to values).
    pub table: String,
    /// JSONPath (or template) of the key in the source record (`$parent.…` in a read mapping
    /// of a nested listing).
    pub key: String,
    /// Fail the record when the key is not in the table (otherwise `default` applies).
    #[serde(default)]
    pub required: bool,
}

/// A reference to a related record through erpsync's bindings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RefConfig {
    /// Entity of the related record, e.g. `customer`.
    pub entity: String,
    /// JSONPath (or template) of the related record's match key in the source record
    /// (`$parent.…` in a read mapping of a nested listing).
    pub key: String,
    /// When the related entity has a composite id (an `id` template joining ids with `/`), the
    /// part to use, counted from 0.
    #[serde(default)]
    pub part: Option<usize>,
}

/// Types a mapped or canonical field can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// Text.
    String,
    /// Whole number.
    Integer,
    /// Number.
    Number,
    /// Money or quantity with a fixed number of decimals (see `scale`); compared exactly.
    Decimal,
    /// true / false (also from "1"/"0", "yes"/"no", "on"/"off").
    Boolean,
    /// Date and time, normalised to RFC 3339 UTC.
    Datetime,
    /// Calendar date `YYYY-MM-DD`.
    Date,
    /// Any JSON value, kept as it is.
    Json,
}
