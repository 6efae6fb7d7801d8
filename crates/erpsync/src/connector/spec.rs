//! A system checked once: everything an `HttpSystem` needs (address, timeouts, auth, headers,
//! error rules, retry, breaker and rate-limit settings, operations, looked-up values), compiled
//! and validated from its merged declaration. `erpsync validate` compiles it; the engine builds
//! the running system from the very same spec, which cannot fail on the declaration.
//!
//! Specs compiled from equal declarations are equal, so a reload can tell which systems changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderName;
use serde_json::Value;
use url::Url;

use super::auth::AuthSpec;
use super::operation::Operation;
use super::problem::{CompileProblem, Problems};
use super::retry::RetryPolicy;
use super::rules::Rule;
use crate::config::model::{CircuitBreakerConfig, RateLimitConfig, SystemConfig};
use crate::expr::{JsonPath, Template};
use crate::redact::redact;

/// The most writes a system's `concurrency` may allow at once.
const MAX_CONCURRENCY: u32 = 64;
/// Connect timeout of a system whose `timeouts` do not say.
const DEFAULT_CONNECT: Duration = Duration::from_millis(5_000);
/// Request timeout of a system whose `timeouts` do not say.
const DEFAULT_REQUEST: Duration = Duration::from_millis(30_000);

/// A checked system, ready to be built into an `HttpSystem`.
#[derive(Clone, PartialEq)]
pub struct SystemSpec {
    pub(crate) name: String,
    pub(crate) base_url: Url,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) auth: AuthSpec,
    pub(crate) headers: Vec<(String, Template)>,
    pub(crate) rules: Vec<Rule>,
    pub(crate) retry: RetryPolicy,
    pub(crate) circuit_breaker: Option<CircuitBreakerConfig>,
    pub(crate) rate_limit: Option<RateLimitConfig>,
    /// Writes a run may have in flight at once (`concurrency`), at least 1.
    pub(crate) concurrency: usize,
    pub(crate) operations: BTreeMap<String, Arc<Operation>>,
    /// System vars looked up by a request: name, operation, where the value is.
    pub(crate) resolve: Vec<(String, String, JsonPath)>,
    /// The system's own `vars`, `{{system.NAME}}`.
    pub(crate) system_vars: Value,
    /// The project's `vars`, `{{vars.NAME}}`.
    pub(crate) vars: Value,
}

impl std::fmt::Debug for SystemSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials stay out: only what identifies the system.
        f.debug_struct("SystemSpec")
            .field("name", &self.name)
            .field("base_url", &redact(self.base_url.as_str()))
            .field("operations", &self.operations.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// What a declaration compiles to, its address aside.
struct Parts {
    connect_timeout: Duration,
    request_timeout: Duration,
    auth: AuthSpec,
    headers: Vec<(String, Template)>,
    rules: Vec<Rule>,
    resolve: Vec<(String, String, JsonPath)>,
}

impl SystemSpec {
    /// Compiles a system from its merged declaration (secrets substituted, `extends`
    /// resolved) and its compiled operations, collecting every problem. Problem paths are
    /// relative to the system.
    pub fn compile(
        name: &str,
        cfg: &SystemConfig,
        operations: BTreeMap<String, Arc<Operation>>,
        vars: Value,
    ) -> Result<SystemSpec, Vec<CompileProblem>> {
        let mut p = Problems::default();
        let base_url = match cfg.base_url.as_deref() {
            Some(u) => base_url(u, &mut p),
            None => {
                p.invalid("base_url", format!("system `{name}` has no `base_url`"));
                None
            }
        };
        let parts = parts(cfg, &mut p);
        match base_url {
            Some(base_url) if p.0.is_empty() => Ok(SystemSpec {
                name: name.to_string(),
                base_url,
                connect_timeout: parts.connect_timeout,
                request_timeout: parts.request_timeout,
                auth: parts.auth,
                headers: parts.headers,
                rules: parts.rules,
                retry: RetryPolicy::from_config(cfg.retry.as_ref()),
                circuit_breaker: cfg.circuit_breaker.clone(),
                rate_limit: cfg.rate_limit.clone(),
                concurrency: cfg.concurrency.unwrap_or(1).clamp(1, MAX_CONCURRENCY) as usize,
                operations,
                resolve: parts.resolve,
                system_vars: serde_json::to_value(&cfg.vars).unwrap_or(Value::Null),
                vars,
            }),
            _ => Err(p.0),
        }
    }

    /// The problems of what one declaration says itself (auth, headers, error rules, limits,
    /// its address when it gives one), before it is merged with what it extends or what
    /// extends it: each is reported once, at the declaration that has it.
    pub(crate) fn check_declaration(cfg: &SystemConfig) -> Vec<CompileProblem> {
        let mut p = Problems::default();
        if let Some(u) = cfg.base_url.as_deref() {
            base_url(u, &mut p);
        }
        parts(cfg, &mut p);
        p.0
    }

    #[cfg(test)]
    pub(crate) fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// The same system at another address (a recording or replaying proxy).
    pub(crate) fn at(&self, base_url: Url) -> SystemSpec {
        SystemSpec {
            base_url,
            ..self.clone()
        }
    }

    /// The same system without a request budget (a replay answers at once).
    pub(crate) fn unlimited(&self) -> SystemSpec {
        SystemSpec {
            rate_limit: None,
            ..self.clone()
        }
    }
}

/// An http(s) `base_url`.
fn base_url(text: &str, p: &mut Problems) -> Option<Url> {
    match Url::parse(text) {
        Ok(url) if url.scheme() == "http" || url.scheme() == "https" => Some(url),
        Ok(_) => {
            p.invalid(
                "base_url",
                format!("`{}` is not an http(s) URL", redact(text)),
            );
            None
        }
        Err(e) => {
            p.invalid(
                "base_url",
                format!("`{}` is not a valid URL: {e}", redact(text)),
            );
            None
        }
    }
}

fn parts(cfg: &SystemConfig, p: &mut Problems) -> Parts {
    for key in cfg.headers.keys() {
        if HeaderName::from_bytes(key.as_bytes()).is_err() {
            p.invalid(
                &format!("headers.{key}"),
                format!("`{key}` is not a valid header name"),
            );
        }
    }
    let headers = p.template_map("headers", &cfg.headers);
    let mut resolve = Vec::new();
    // That the operations exist is checked with the project, where inherited ones are known.
    for (name, r) in &cfg.resolve {
        if let Some(path) = p.path(&format!("resolve.{name}.path"), &r.path) {
            resolve.push((name.clone(), r.operation.clone(), path));
        }
    }
    let auth = AuthSpec::compile(cfg.auth.as_ref(), p);
    let rules = Rule::compile_all(&cfg.errors, "errors", &mut p.0);
    if let Some(rl) = &cfg.rate_limit {
        if !(rl.per_second.is_finite() && rl.per_second > 0.0) {
            p.invalid(
                "rate_limit.per_second",
                "`per_second` must be a positive number",
            );
        }
        if let Some(l) = &rl.lockout
            && !(100..=599).contains(&l.status)
        {
            p.invalid(
                "rate_limit.lockout.status",
                format!("`{}` is not an HTTP status", l.status),
            );
        }
    }
    if let Some(c) = cfg.concurrency
        && !(1..=MAX_CONCURRENCY).contains(&c)
    {
        p.invalid(
            "concurrency",
            format!("`concurrency` is the writes sent at once: 1 to {MAX_CONCURRENCY}, not {c}"),
        );
    }
    if cfg.retry.as_ref().is_some_and(|r| r.max_attempts == 0) {
        p.invalid(
            "retry.max_attempts",
            "`max_attempts` counts the first attempt: at least 1",
        );
    }
    let (connect_timeout, request_timeout) =
        cfg.timeouts
            .as_ref()
            .map_or((DEFAULT_CONNECT, DEFAULT_REQUEST), |t| {
                (
                    Duration::from_millis(t.connect_ms),
                    Duration::from_millis(t.request_ms),
                )
            });
    Parts {
        connect_timeout,
        request_timeout,
        auth,
        headers,
        rules,
        resolve,
    }
}
