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

/// What is wrong, before it is placed in a file: the kind, the message and the hints. Each
/// kind of problem is worded here, once; the checks only say what they found.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub code: Code,
    pub message: String,
    pub suggestion: Option<String>,
    pub expected: Vec<String>,
    pub help: Option<String>,
}

impl Problem {
    fn new(code: Code, message: impl Into<String>) -> Self {
        Problem {
            code,
            message: message.into(),
            suggestion: None,
            expected: Vec::new(),
            help: None,
        }
    }

    /// A key the language does not have, with the keys it has there.
    pub fn unknown_key<'a>(key: &str, known: impl IntoIterator<Item = &'a str>) -> Self {
        Problem::new(Code::UnknownKey, format!("unknown key `{key}`")).with_names(key, known)
    }

    /// A misspelt key that leaves a required one missing.
    pub fn misspelt_key<'a>(
        key: &str,
        missing: &str,
        known: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        Problem::new(
            Code::UnknownKey,
            format!("unknown key `{key}` (required key `{missing}` is missing)"),
        )
        .with_names(key, known)
    }

    /// A value that is not one of the values the key takes.
    pub fn unknown_value<'a>(value: &str, known: impl IntoIterator<Item = &'a str>) -> Self {
        Problem::new(Code::Invalid, format!("unknown value `{value}`")).with_names(value, known)
    }

    /// A reference to a name that does not exist: "unknown {what} `{name}`".
    pub fn unknown_name<'a>(
        what: &str,
        name: &str,
        known: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        Problem::new(Code::UnknownName, format!("unknown {what} `{name}`")).with_names(name, known)
    }

    /// A name read where it is not one of the names there: "`{name}` is not a {what}".
    pub fn not_a<'a>(name: &str, what: &str, known: impl IntoIterator<Item = &'a str>) -> Self {
        Problem::new(Code::UnknownName, format!("`{name}` is not a {what}")).with_names(name, known)
    }

    /// A template that reads `system` or `vars` where it is rendered over one value alone.
    pub fn system_and_vars_unavailable(rendered: &str) -> Self {
        Problem::unresolved(format!(
            "{rendered}: `system` and `vars` are not available there"
        ))
    }

    /// A name declared twice: "{what} is already declared in {elsewhere}", `what` being the
    /// name in backticks with what it is before it, if anything.
    pub fn duplicate(kind: Option<&str>, name: &str, elsewhere: &str) -> Self {
        let what = match kind {
            Some(kind) => format!("{kind} `{name}`"),
            None => format!("`{name}`"),
        };
        Problem::new(
            Code::Duplicate,
            format!("{what} is already declared in {elsewhere}"),
        )
    }

    /// A project with nothing to run.
    pub fn empty_project() -> Self {
        Problem::new(
            Code::EmptyProject,
            "the project declares no systems and no flows: there is nothing to run",
        )
        .with_help(
            "point erpsync at the folder of the project's flow files; a folder shared by \
             several projects is checked through the projects that `include` it",
        )
    }

    /// Warning: an error rule whose status class covers 429.
    pub fn covers_429(message: impl Into<String>) -> Self {
        Problem::new(Code::Covers429, message).with_help(
            "say so with `- { status: [429], action: rate_limited }` before this rule, \
             or name 429 in a rule of its own to handle it otherwise",
        )
    }

    /// Warning: a filter's bare `@.member`, which holds for a null value too.
    pub fn filter_null(member: &str) -> Self {
        Problem::new(
            Code::FilterNull,
            format!(
                "`@.{member}` only asks whether the record has `{member}`: it \
                 holds when `{member}` is null or empty too"
            ),
        )
        .with_help(format!(
            "to leave out records without a value, write `@.{member} != null` \
             (and `@.{member} != ''` for empty text)"
        ))
    }

    /// Adds a hint on what to do.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds "did you mean" and the list of known names.
    pub fn with_names<'a>(mut self, wrong: &str, known: impl IntoIterator<Item = &'a str>) -> Self {
        let mut known: Vec<String> = known.into_iter().map(str::to_string).collect();
        known.sort();
        known.dedup();
        self.suggestion = did_you_mean(wrong, &known).map(str::to_string);
        self.expected = known;
        self
    }
}

/// The kinds whose message says it all: `Problem::invalid(message)` and the like.
macro_rules! plain_kinds {
    ($($(#[$doc:meta])* $name:ident => $code:ident,)*) => {
        impl Problem {
            $(
                $(#[$doc])*
                pub fn $name(message: impl Into<String>) -> Self {
                    Problem::new(Code::$code, message)
                }
            )*
        }
    };
}

plain_kinds! {
    /// A file that cannot be read (or included).
    io => Io,
    /// Text that is not YAML.
    yaml => Yaml,
    /// A value of the wrong type or shape, or a required key missing.
    invalid => Invalid,
    /// A JSONPath (or a condition) that does not parse.
    json_path => JsonPath,
    /// A template that does not parse.
    template => Template,
    /// A cron expression or a time zone that does not parse.
    schedule => Schedule,
    /// A name that does not exist, or not where it is used, told in words of its own.
    unresolved => UnknownName,
    /// `${VAR}` or `${file:…}` that cannot be resolved.
    secret => Secret,
    /// Settings that contradict each other.
    conflict => Conflict,
}

impl Diagnostic {
    /// A problem placed at `pos` of `file`, at `path` inside the document.
    pub fn new(problem: Problem, file: PathBuf, pos: Pos, path: &str) -> Self {
        let code = problem.code;
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
            message: problem.message,
            suggestion: problem.suggestion,
            expected: problem.expected,
            help: problem.help,
        }
    }

    /// A file that cannot be read, at its start.
    pub fn unreadable(file: PathBuf, error: impl fmt::Display) -> Self {
        Diagnostic::new(
            Problem::io(format!("cannot read: {error}")),
            file,
            Pos { line: 1, col: 1 },
            "",
        )
    }

    /// Whether the problem makes the project invalid.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
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
