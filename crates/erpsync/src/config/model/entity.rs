//! Canonical entities: the shape every system's records are mapped to and from.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::*;

/// A canonical record type.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct EntityConfig {
    /// Field that identifies a record across systems (`sku`, `number`, `email`).
    pub key: String,
    /// Field holding the last-modified time, used by `newest_wins`.
    #[serde(default)]
    pub updated_at: Option<String>,
    /// The canonical fields.
    pub fields: BTreeMap<String, CanonicalFieldConfig>,
}

/// A canonical field: a type, or a type with options.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum CanonicalFieldConfig {
    /// Just the type.
    Type(FieldType),
    /// Type and options.
    Full(CanonicalFieldSpecConfig),
}

impl<'de> Deserialize<'de> for CanonicalFieldConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        match value {
            s @ Value::String(_) => FieldType::deserialize(s)
                .map(CanonicalFieldConfig::Type)
                .map_err(serde::de::Error::custom),
            o @ Value::Object(_) => CanonicalFieldSpecConfig::deserialize(o)
                .map(CanonicalFieldConfig::Full)
                .map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!(
                "expected a field type or a field map, found {}",
                json_kind(&other)
            ))),
        }
    }
}

/// A canonical field with options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CanonicalFieldSpecConfig {
    /// Type of the field.
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// Decimals kept for `decimal` fields.
    #[serde(default)]
    pub scale: Option<u32>,
    /// Normalisation applied before comparing and hashing.
    #[serde(default)]
    pub normalize: Vec<Normalize>,
    /// Left out of change detection (e.g. a timestamp that changes on every read).
    #[serde(default)]
    pub volatile: bool,
}

/// Text normalisations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    /// Remove leading and trailing white space.
    Trim,
    /// Lower case.
    Lowercase,
    /// Upper case.
    Uppercase,
    /// Remove all white space.
    StripSpaces,
    /// Keep digits only (phone numbers, VAT codes).
    DigitsOnly,
    /// Remove leading zeros.
    StripLeadingZeros,
}
