//! Problems found while compiling an operation or a system, each at a path relative to it, and
//! the collector the compilers share.

use std::fmt;

use crate::expr::{JsonPath, Template};

/// What kind of expression a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProblemKind {
    /// A JSONPath (or a JSONPath filter condition) that does not parse.
    JsonPath,
    /// A template that does not compile.
    Template,
    /// Any other invalid value.
    Invalid,
    /// A warning: an error rule's status class covers 429, which stays rate limiting.
    Covers429,
}

/// One problem in an operation or a system, at a path relative to it (`query.limit`,
/// `body.client.name`, `errors.0.when`), so `erpsync validate` can point at the YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileProblem {
    pub path: String,
    pub(crate) kind: ProblemKind,
    pub message: String,
}

impl CompileProblem {
    pub(crate) fn new(
        path: impl Into<String>,
        kind: ProblemKind,
        message: impl Into<String>,
    ) -> Self {
        CompileProblem {
            path: path.into(),
            kind,
            message: message.into(),
        }
    }

    /// The same problem under a parent path (`operations.list_products.` + `query.limit`).
    pub(crate) fn prefixed(mut self, prefix: &str) -> Self {
        self.path = format!("{prefix}.{}", self.path);
        self
    }
}

impl fmt::Display for CompileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.path, self.message)
    }
}

/// Collects problems while compiling; each helper records a failure and returns `None`.
#[derive(Default)]
pub(crate) struct Problems(pub(crate) Vec<CompileProblem>);

impl Problems {
    pub(crate) fn template(&mut self, path: &str, src: &str) -> Option<Template> {
        Template::compile(src)
            .map_err(|e| {
                self.0.push(CompileProblem::new(
                    path,
                    ProblemKind::Template,
                    e.to_string(),
                ))
            })
            .ok()
    }

    pub(crate) fn path(&mut self, path: &str, src: &str) -> Option<JsonPath> {
        JsonPath::parse(src)
            .map_err(|e| {
                self.0.push(CompileProblem::new(
                    path,
                    ProblemKind::JsonPath,
                    e.to_string(),
                ))
            })
            .ok()
    }

    pub(crate) fn invalid(&mut self, path: &str, message: impl Into<String>) {
        self.0
            .push(CompileProblem::new(path, ProblemKind::Invalid, message))
    }

    /// Templates of a map (`query`, `headers`), in key order.
    pub(crate) fn template_map<'a>(
        &mut self,
        prefix: &str,
        map: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Vec<(String, Template)> {
        map.into_iter()
            .filter_map(|(k, v)| Some((k.clone(), self.template(&format!("{prefix}.{k}"), v)?)))
            .collect()
    }
}
