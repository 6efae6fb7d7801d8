//! Secrets never reach a log line, an error, a dry-run plan or the failure store in clear:
//! every secret value resolved from the flow files is registered here, and every text that
//! leaves the process goes through `redact`.

use std::borrow::Cow;
use std::sync::{LazyLock, RwLock};

static SECRETS: LazyLock<RwLock<Vec<String>>> = LazyLock::new(|| RwLock::new(Vec::new()));

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Remembers a secret value. Very short values are not registered: masking every "1" in a
/// log would hide more than it protects.
pub fn register(secret: &str) {
    if secret.len() < 4 {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| s == secret) {
        secrets.push(secret.to_string());
        // Longest first, so a secret that contains another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// The text with every registered secret masked. Callers register derived forms too (the
/// connector registers the base64 of Basic credentials).
pub fn redact(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if secrets.is_empty() || !secrets.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    Cow::Owned(out)
}

/// Redacts every string inside a JSON value.
pub fn redact_json(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(redact(s).into_owned()),
        Value::Array(a) => Value::Array(a.iter().map(redact_json).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), redact_json(v))).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_are_masked() {
        register("s3cr3t-token-xyz");
        assert_eq!(
            redact("Authorization: Bearer s3cr3t-token-xyz failed"),
            "Authorization: Bearer *** failed"
        );
        assert_eq!(redact("nothing here"), "nothing here");
        let v = serde_json::json!({"a": ["x s3cr3t-token-xyz"]});
        assert_eq!(redact_json(&v), serde_json::json!({"a": ["x ***"]}));
    }
}
