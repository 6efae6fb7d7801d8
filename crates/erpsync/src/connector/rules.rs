//! The error policy: response classification rules (operation's, then system's, then the
//! built-in defaults) that turn a status and a body into an action.

use handlebars::Context;
use serde_json::{Value, json};

use super::problem::{CompileProblem, ProblemKind};
use crate::config::model::{ErrorAction, ErrorRuleConfig, StatusPattern};
use crate::expr::{Predicate, Template};

/// An inclusive range of status codes; a single code is a range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatusRange {
    pub(crate) low: u16,
    pub(crate) high: u16,
}

impl StatusRange {
    pub(crate) fn contains(&self, status: u16) -> bool {
        (self.low..=self.high).contains(&status)
    }
}

/// Why an `errors`/`on.status` entry is not a status code, class or range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StatusPatternParseError {
    #[error("`{0}` is not a status class such as `4xx`")]
    Class(String),
    #[error("`{0}` is not a status range such as `500-599`")]
    Range(String),
    #[error("`{0}` is not a status code, class or range")]
    Code(String),
    #[error("status codes lie between 100 and 599")]
    OutOfBounds,
}

/// Reads `404`, `"404"`, `"4xx"` or `"500-504"`.
pub(crate) fn parse_status_pattern(
    pattern: &StatusPattern,
) -> Result<StatusRange, StatusPatternParseError> {
    let valid = |c: u16| (100..=599).contains(&c);
    let range = match pattern {
        StatusPattern::Code(c) => StatusRange { low: *c, high: *c },
        StatusPattern::Pattern(p) => {
            let p = p.trim();
            let lower = p.to_ascii_lowercase();
            if let Some(class) = lower.strip_suffix("xx") {
                let d: u16 = class
                    .parse()
                    .ok()
                    .filter(|d| (1..=5).contains(d) && class.len() == 1)
                    .ok_or_else(|| StatusPatternParseError::Class(p.to_string()))?;
                StatusRange {
                    low: d * 100,
                    high: d * 100 + 99,
                }
            } else if let Some((a, b)) = p.split_once('-') {
                let parse = |s: &str| s.trim().parse::<u16>().ok();
                match (parse(a), parse(b)) {
                    (Some(low), Some(high)) if low <= high => StatusRange { low, high },
                    _ => return Err(StatusPatternParseError::Range(p.to_string())),
                }
            } else {
                let c = p
                    .parse::<u16>()
                    .map_err(|_| StatusPatternParseError::Code(p.to_string()))?;
                StatusRange { low: c, high: c }
            }
        }
    };
    if valid(range.low) && valid(range.high) {
        Ok(range)
    } else {
        Err(StatusPatternParseError::OutOfBounds)
    }
}

/// A compiled classification rule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rule {
    statuses: Vec<StatusRange>,
    when: Option<Predicate>,
    pub(crate) action: ErrorAction,
    message: Option<Template>,
}

/// What a response means, with the rule's message when it has one.
#[derive(Debug, Clone)]
pub(crate) struct Verdict {
    pub(crate) action: ErrorAction,
    pub(crate) message: Option<String>,
}

impl Rule {
    /// Whether the rule's condition or message may read the member `name` of a body: its
    /// text holds that name anywhere (so a rule that cannot be told apart counts; with
    /// `name` empty, any condition or message).
    pub(crate) fn may_read(&self, name: &str) -> bool {
        self.when
            .as_ref()
            .is_some_and(|w| w.source().contains(name))
            || self
                .message
                .as_ref()
                .is_some_and(|m| m.source().contains(name))
    }

    /// Compiles `errors` rules; problem paths start with `prefix` (`errors`).
    pub(crate) fn compile_all(
        rules: &[ErrorRuleConfig],
        prefix: &str,
        problems: &mut Vec<CompileProblem>,
    ) -> Vec<Rule> {
        let mut out = Vec::new();
        for (i, cfg) in rules.iter().enumerate() {
            let at = format!("{prefix}.{i}");
            let mut ok = true;
            let mut statuses = Vec::new();
            for (j, s) in cfg.status.iter().enumerate() {
                match parse_status_pattern(s) {
                    Ok(r) => statuses.push(r),
                    Err(e) => {
                        ok = false;
                        problems.push(CompileProblem::new(
                            format!("{at}.status.{j}"),
                            ProblemKind::Invalid,
                            e.to_string(),
                        ));
                    }
                }
            }
            let when = match cfg.when.as_deref().map(Predicate::parse).transpose() {
                Ok(w) => w,
                Err(e) => {
                    ok = false;
                    problems.push(CompileProblem::new(
                        format!("{at}.when"),
                        ProblemKind::JsonPath,
                        e.to_string(),
                    ));
                    None
                }
            };
            let message = match cfg.message.as_deref().map(Template::compile).transpose() {
                Ok(m) => m,
                Err(e) => {
                    ok = false;
                    problems.push(CompileProblem::new(
                        format!("{at}.message"),
                        ProblemKind::Template,
                        e.to_string(),
                    ));
                    None
                }
            };
            if ok {
                out.push(Rule {
                    statuses,
                    when,
                    action: cfg.action,
                    message,
                });
            }
        }
        out
    }

    fn matches(&self, status: u16, body: &Value) -> bool {
        (self.statuses.is_empty() || self.statuses.iter().any(|r| r.contains(status)))
            && self.when.as_ref().is_none_or(|p| p.matches(body))
    }

    /// Whether the rule lists `status` as a code of its own (`429`, not `4xx` or `400-499`).
    fn names(&self, status: u16) -> bool {
        self.statuses
            .iter()
            .any(|r| r.low == status && r.high == status)
    }
}

/// Whether a response asks the client to slow down: a 429, or a refusal that carries a
/// `Retry-After` (a 4xx, or a 503). Such a response is rate limiting whatever a broader rule
/// says: a `4xx` rule meant for validation errors must not turn a busy system into failed
/// records. A 500, 502 or 504 stays a server error even with the header: the request may
/// have been acted on, so a write is not sent again blindly.
fn slow_down(status: u16, retry_after: bool) -> bool {
    status == 429 || (retry_after && ((400..500).contains(&status) || status == 503))
}

/// Warnings on rules that a status class or range would apply to 429 but no longer do: the
/// rule is skipped for 429, which is rate limiting unless a rule names `429` itself. A rule
/// is quiet when an earlier rule names 429, or when it rate-limits anyway.
pub(crate) fn lint_rules(rules: &[ErrorRuleConfig], prefix: &str) -> Vec<CompileProblem> {
    let mut out = Vec::new();
    let mut named = false;
    for (i, cfg) in rules.iter().enumerate() {
        let ranges: Vec<(usize, StatusRange)> = cfg
            .status
            .iter()
            .enumerate()
            .filter_map(|(j, s)| parse_status_pattern(s).ok().map(|r| (j, r)))
            .collect();
        if ranges.iter().any(|(_, r)| r.low == 429 && r.high == 429) {
            named = true;
            continue;
        }
        if named || cfg.action == ErrorAction::RateLimited {
            continue;
        }
        if let Some((j, _)) = ranges.iter().find(|(_, r)| r.contains(429)) {
            out.push(CompileProblem::new(
                format!("{prefix}.{i}.status.{j}"),
                ProblemKind::Covers429,
                "this status class covers 429, which is rate limiting (wait and retry) unless \
                 a rule names 429 itself"
                    .to_string(),
            ));
        }
    }
    out
}

/// Classifies a response: the first matching operation rule, then system rule, then the
/// defaults (2xx success, 404 not found, 409 fail, 429 rate limited, 5xx retry, else fail).
/// A 429, or an error with a `Retry-After` (`retry_after`), is rate limiting unless the
/// matching rule names its status as a code of its own.
pub(crate) fn classify(
    layers: &[&[Rule]],
    status: u16,
    body: &Value,
    retry_after: bool,
) -> Verdict {
    let slow = slow_down(status, retry_after);
    for rule in layers.iter().flat_map(|l| l.iter()) {
        if slow && !rule.names(status) {
            continue;
        }
        if rule.matches(status, body) {
            let message = rule.message.as_ref().map(|t| {
                let ctx = Context::from(json!({"body": body, "status": status}));
                // A message that fails to render must not hide the failure it describes.
                t.render(&ctx).unwrap_or_else(|e| e.to_string())
            });
            return Verdict {
                action: rule.action,
                message,
            };
        }
    }
    let action = match status {
        _ if slow => ErrorAction::RateLimited,
        200..=299 => ErrorAction::Success,
        404 => ErrorAction::NotFound,
        500..=599 => ErrorAction::Retry,
        _ => ErrorAction::Fail,
    };
    Verdict {
        action,
        message: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> StatusPattern {
        StatusPattern::Pattern(s.into())
    }

    #[test]
    fn status_patterns() {
        let r = |low, high| Ok(StatusRange { low, high });
        assert_eq!(parse_status_pattern(&StatusPattern::Code(404)), r(404, 404));
        assert_eq!(parse_status_pattern(&pat("409")), r(409, 409));
        assert_eq!(parse_status_pattern(&pat("5xx")), r(500, 599));
        assert_eq!(parse_status_pattern(&pat("4XX")), r(400, 499));
        assert_eq!(parse_status_pattern(&pat("500-504")), r(500, 504));
        assert_eq!(parse_status_pattern(&pat(" 400 - 403 ")), r(400, 403));
        for bad in ["6xx", "45xx", "504-500", "abc", "99", "1000", "x-y"] {
            assert!(parse_status_pattern(&pat(bad)).is_err(), "{bad}");
        }
        assert!(parse_status_pattern(&StatusPattern::Code(42)).is_err());
    }

    fn rules(yaml: Value) -> Vec<Rule> {
        let cfg: Vec<ErrorRuleConfig> = serde_json::from_value(yaml).unwrap();
        let mut problems = Vec::new();
        let rules = Rule::compile_all(&cfg, "errors", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        rules
    }

    #[test]
    fn rules_come_before_defaults_and_body_predicates_apply() {
        let sys = rules(json!([
            {"status": [200], "when": "@.errorText && @.errorText != ''", "action": "fail",
             "message": "smartbill: {{body.errorText}}"},
            {"status": ["409"], "action": "already_done"}
        ]));
        let v = classify(
            &[&[], &sys],
            200,
            &json!({"errorText": "Seria nu exista"}),
            false,
        );
        assert_eq!(v.action, ErrorAction::Fail);
        assert_eq!(v.message.as_deref(), Some("smartbill: Seria nu exista"));
        let ok = classify(
            &[&sys],
            200,
            &json!({"errorText": "", "number": "12"}),
            false,
        );
        assert_eq!(ok.action, ErrorAction::Success);
        assert_eq!(
            classify(&[&sys], 409, &Value::Null, false).action,
            ErrorAction::AlreadyDone
        );
        let op = rules(json!([{"status": ["4xx"], "action": "retry"}]));
        assert_eq!(
            classify(&[&op, &sys], 409, &Value::Null, false).action,
            ErrorAction::Retry
        );
    }

    #[test]
    fn defaults() {
        let d = |s| classify(&[], s, &Value::Null, false).action;
        assert_eq!(d(204), ErrorAction::Success);
        assert_eq!(d(404), ErrorAction::NotFound);
        assert_eq!(d(409), ErrorAction::Fail);
        assert_eq!(d(429), ErrorAction::RateLimited);
        assert_eq!(d(503), ErrorAction::Retry);
        assert_eq!(d(400), ErrorAction::Fail);
        assert_eq!(d(301), ErrorAction::Fail);
    }

    #[test]
    fn a_status_class_never_turns_rate_limiting_into_a_failure() {
        let broad = rules(json!([
            {"status": ["4xx"], "when": "@.error.message", "action": "fail"},
            {"when": "@.statusMessage", "action": "fail"}
        ]));
        let body = json!({"error": {"message": "too many requests"}, "statusMessage": "x"});
        let v = |status, retry_after| classify(&[&broad], status, &body, retry_after).action;
        assert_eq!(v(429, false), ErrorAction::RateLimited);
        assert_eq!(v(400, false), ErrorAction::Fail);
        // A `Retry-After` on any error is a request to slow down.
        assert_eq!(v(400, true), ErrorAction::RateLimited);
        assert_eq!(v(503, true), ErrorAction::RateLimited);
        assert_eq!(
            classify(&[], 503, &Value::Null, true).action,
            ErrorAction::RateLimited
        );
        assert_eq!(
            classify(&[], 200, &Value::Null, true).action,
            ErrorAction::Success
        );
        assert_eq!(
            classify(&[], 504, &Value::Null, true).action,
            ErrorAction::Retry
        );
        // A rule that names 429 itself decides.
        let named = rules(json!([{"status": [429], "when": "@.quota", "action": "fail"}]));
        assert_eq!(
            classify(&[&named], 429, &json!({"quota": "exhausted"}), true).action,
            ErrorAction::Fail
        );
        assert_eq!(
            classify(&[&named], 429, &json!({}), true).action,
            ErrorAction::RateLimited
        );
    }

    #[test]
    fn status_classes_covering_429_are_linted() {
        let cfg = |v: Value| -> Vec<ErrorRuleConfig> { serde_json::from_value(v).unwrap() };
        let paths = |v: Value| -> Vec<String> {
            lint_rules(&cfg(v), "errors")
                .into_iter()
                .map(|p| p.path)
                .collect()
        };
        assert_eq!(
            paths(json!([{"status": [404], "action": "not_found"},
                         {"status": [400, "4xx"], "action": "fail"}])),
            ["errors.1.status.1"]
        );
        assert_eq!(
            paths(json!([{"status": ["400-499"], "action": "fail"}])),
            ["errors.0.status.0"]
        );
        assert!(
            paths(json!([{"status": [429], "action": "rate_limited"},
                             {"status": ["4xx"], "action": "fail"}]))
            .is_empty()
        );
        assert!(paths(json!([{"status": ["4xx"], "action": "rate_limited"}])).is_empty());
        assert!(
            paths(json!([{"status": ["400-428", "5xx"], "action": "fail"},
                             {"when": "@.x", "action": "fail"}]))
            .is_empty()
        );
    }

    #[test]
    fn broken_rules_are_reported_with_their_path() {
        let cfg: Vec<ErrorRuleConfig> = serde_json::from_value(json!([
            {"action": "fail"},
            {"status": ["7xx"], "when": "@.a ==", "message": "{{#if}}", "action": "fail"}
        ]))
        .unwrap();
        let mut problems = Vec::new();
        Rule::compile_all(&cfg, "errors", &mut problems);
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["errors.1.status.0", "errors.1.when", "errors.1.message"]
        );
    }
}
