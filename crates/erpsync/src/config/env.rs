//! `${ENV_VAR}`, `${ENV_VAR:-default}` and `${file:/path}` in flow-file strings.

use std::borrow::Cow;

/// A reference that could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SecretResolveError {
    #[error("environment variable `{0}` is not set")]
    MissingVar(String),
    #[error("cannot read secret file `{path}`: {reason}")]
    File { path: String, reason: String },
    #[error("unterminated `${{` in `{0}`")]
    Unterminated(String),
}

/// Where values come from; tests supply their own.
pub trait EnvSource {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub(crate) struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// Some values set here, the rest from the process environment (the demo points the flows
/// at the simulators it started this way).
pub struct Overrides(pub std::collections::HashMap<String, String>);

impl EnvSource for Overrides {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned().or_else(|| ProcessEnv.var(name))
    }
}

/// Substitutes every reference in `text`. Each substituted value is returned too, so the
/// caller can register it as a secret. `$${` writes a literal `${`.
pub(crate) fn substitute<'a>(
    text: &'a str,
    env: &dyn EnvSource,
    substituted: &mut Vec<String>,
) -> Result<Cow<'a, str>, SecretResolveError> {
    if !text.contains("${") {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        if i > 0 && rest.as_bytes()[i - 1] == b'$' {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| SecretResolveError::Unterminated(text.to_string()))?;
        let reference = &after[..end];
        let value = resolve(reference, env)?;
        substituted.push(value.clone());
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

fn resolve(reference: &str, env: &dyn EnvSource) -> Result<String, SecretResolveError> {
    if let Some(path) = reference.strip_prefix("file:") {
        return std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| SecretResolveError::File {
                path: path.to_string(),
                reason: e.to_string(),
            });
    }
    let (name, default) = match reference.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    match (env.var(name.trim()), default) {
        (Some(v), _) if !v.is_empty() || default.is_none() => Ok(v),
        (_, Some(d)) => Ok(d.to_string()),
        (None, None) => Err(SecretResolveError::MissingVar(name.trim().to_string())),
        (Some(v), None) => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fake(HashMap<&'static str, &'static str>);
    impl EnvSource for Fake {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|s| s.to_string())
        }
    }

    #[test]
    fn substitutes_vars_defaults_and_files() {
        let env = Fake(HashMap::from([("KEY", "k1"), ("EMPTY", "")]));
        let mut seen = Vec::new();
        assert_eq!(substitute("a ${KEY} b", &env, &mut seen).unwrap(), "a k1 b");
        assert_eq!(
            substitute("${NOPE:-dflt}", &env, &mut seen).unwrap(),
            "dflt"
        );
        assert_eq!(
            substitute("${EMPTY:-dflt}", &env, &mut seen).unwrap(),
            "dflt"
        );
        assert_eq!(substitute("$${KEY}", &env, &mut seen).unwrap(), "${KEY}");
        assert_eq!(
            substitute("${NOPE}", &env, &mut seen).unwrap_err(),
            SecretResolveError::MissingVar("NOPE".into())
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "from-file\n").unwrap();
        let text = format!("${{file:{}}}", f.display());
        assert_eq!(substitute(&text, &env, &mut seen).unwrap(), "from-file");
        assert!(seen.contains(&"k1".to_string()) && seen.contains(&"from-file".to_string()));
    }
}
