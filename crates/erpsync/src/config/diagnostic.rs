//! Problems found in flow files: each with a stable code, its place and, for unknown names,
//! the names that would have been valid.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::node::Pos;

/// Kinds of problems. The code is stable: scripts may match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Code {
    /// The file could not be read.
    #[serde(rename = "E001")]
    Io,
    /// The text is not valid YAML.
    #[serde(rename = "E002")]
    Yaml,
    /// A key the language does not have.
    #[serde(rename = "E003")]
    UnknownKey,
    /// A value of the wrong type or shape, or a required key missing.
    #[serde(rename = "E004")]
    Invalid,
    /// A JSONPath that does not parse.
    #[serde(rename = "E005")]
    JsonPath,
    /// A Handlebars template that does not parse.
    #[serde(rename = "E006")]
    Template,
    /// A cron expression or time zone that does not parse.
    #[serde(rename = "E007")]
    Schedule,
    /// A reference to a system, operation, entity, field, flow or webhook that does not exist.
    #[serde(rename = "E008")]
    UnknownName,
    /// A name declared twice across the project.
    #[serde(rename = "E009")]
    Duplicate,
    /// `${VAR}` or `${file:…}` that cannot be resolved.
    #[serde(rename = "E010")]
    Secret,
    /// Settings that contradict each other.
    #[serde(rename = "E011")]
    Conflict,
    /// A project with nothing to run: no system or no flow.
    #[serde(rename = "E012")]
    EmptyProject,
    /// Warning: an error rule's status class covers 429, which stays rate limiting unless a
    /// rule names 429 itself.
    #[serde(rename = "W001")]
    Covers429,
    /// Warning: a flow filter that lets records through that it probably means to leave out
    /// (`@.awb` holds for `"awb": null`).
    #[serde(rename = "W002")]
    FilterNull,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Io => "E001",
            Code::Yaml => "E002",
            Code::UnknownKey => "E003",
            Code::Invalid => "E004",
            Code::JsonPath => "E005",
            Code::Template => "E006",
            Code::Schedule => "E007",
            Code::UnknownName => "E008",
            Code::Duplicate => "E009",
            Code::Secret => "E010",
            Code::Conflict => "E011",
            Code::EmptyProject => "E012",
            Code::Covers429 => "W001",
            Code::FilterNull => "W002",
        }
    }

    /// Whether problems of this kind are warnings: reported, but the project stays valid.
    pub(crate) fn is_warning(self) -> bool {
        matches!(self, Code::Covers429 | Code::FilterNull)
    }
}

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The project cannot run.
    Error,
    /// The project runs, perhaps not as meant.
    Warning,
}

/// One problem in a flow file.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub file: PathBuf,
    pub line: u32,
    pub col: u32,
    /// Path inside the document, e.g. `flows.order_export.trigger.schedule`.
    pub path: String,
    pub message: String,
    /// "did you mean `x`?", when a close name exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
    /// The valid names, for unknown keys and names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expected: Vec<String>,
    /// What to do about it, when the message alone does not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(code: Code, file: PathBuf, pos: Pos, path: &str, message: String) -> Self {
        Diagnostic {
            code,
            severity: if code.is_warning() {
                Severity::Warning
            } else {
                Severity::Error
            },
            file,
            line: pos.line,
            col: pos.col,
            path: path.to_string(),
            message,
            suggestion: None,
            expected: Vec::new(),
            help: None,
        }
    }

    /// Adds a hint on what to do.
    pub(crate) fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Whether the problem makes the project invalid.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Adds "did you mean" and the list of known names.
    pub(crate) fn with_names<'a>(
        mut self,
        wrong: &str,
        known: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut known: Vec<String> = known.into_iter().map(str::to_string).collect();
        known.sort();
        known.dedup();
        self.suggestion = did_you_mean(wrong, &known).map(str::to_string);
        self.expected = known;
        self
    }
}

/// The closest known name, when it is close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(wrong: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(wrong, k), k))
        .filter(|(d, k)| *d <= (k.len().max(wrong.len()) / 3).max(1) + 1)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}[{}]: {}",
            self.file.display(),
            self.line,
            self.col,
            if self.is_error() { "error" } else { "warning" },
            self.code.as_str(),
            self.message
        )?;
        if !self.path.is_empty() {
            write!(f, "\n  at `{}`", self.path)?;
        }
        if let Some(s) = &self.suggestion {
            write!(f, "\n  help: did you mean `{s}`?")?;
        }
        if let Some(h) = &self.help {
            write!(f, "\n  help: {h}")?;
        }
        if !self.expected.is_empty() {
            const SHOWN: usize = 12;
            let mut list = self
                .expected
                .iter()
                .take(SHOWN)
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ");
            if self.expected.len() > SHOWN {
                list.push_str(&format!(" and {} more", self.expected.len() - SHOWN));
            }
            write!(f, "\n  expected one of: {list}")?;
        }
        Ok(())
    }
}

/// Renders diagnostics as text, secrets masked.
pub fn render_text(diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&crate::redact::redact(&d.to_string()));
        out.push_str("\n\n");
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    if errors > 0 || warnings == 0 {
        out.push_str(&format!("{errors} problem{} found", plural(errors)));
        if warnings > 0 {
            out.push_str(&format!(", and {warnings} warning{}", plural(warnings)));
        }
    } else {
        out.push_str(&format!("{warnings} warning{}", plural(warnings)));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_close_names_only() {
        let known: Vec<String> = ["schedule", "timezone", "webhook"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(did_you_mean("schedul", &known), Some("schedule"));
        assert_eq!(did_you_mean("shcedule", &known), Some("schedule"));
        assert_eq!(did_you_mean("xyz", &known), None);
    }
}
