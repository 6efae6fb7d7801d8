//! Executing an operation's request: rendered from its templates, sent with credentials
//! through the breaker and the request budget, judged by the error rules, retried when that
//! is safe. Token requests for `auth` go the same way, without the rules.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use handlebars::Context;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde_json::{Map, Value};
use url::Url;

use super::body::{
    default_message, encode_body, error_chain, holds_records, method, parse_body, parse_body_json,
    set_field,
};
use super::{CallInput, CallOutput, HttpSystem, ListingReader};
use crate::config::model::{BodyFormat, ErrorAction, HttpMethod};
use crate::connector::Extracted;
use crate::connector::auth::{Credentials, TokenEndpoint};
use crate::connector::breaker::Open;
use crate::connector::decode::decode;
use crate::connector::error::{CallError, RequestRenderError, TokenRequestError, UrlParseError};
use crate::connector::operation::Operation;
use crate::connector::paginate::Next;
use crate::connector::retry::parse_retry_after;
use crate::connector::rules::classify;
use crate::expr::Template;
use crate::redact::{redact, redact_json};

/// A response, decoded.
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(super) headers: HeaderMap,
    pub(crate) body: Value,
    pub(super) url: String,
    /// The records of a listing read for a `ListingReader`: each as the values of the
    /// members it reads (`body` then holds a null for each).
    pub(super) read: Option<Vec<Vec<Value>>>,
    /// With `read`, each record's text when the reader keeps them (`ListingReader::texts`).
    pub(super) texts: Vec<Box<str>>,
    /// The body is not JSON (`body` holds its text): a maintenance page, a proxy's answer.
    pub(super) not_json: bool,
}

/// A request ready to send but for its credentials.
struct Rendered {
    method: reqwest::Method,
    url: Url,
    headers: Vec<(String, String)>,
    body: Option<(Vec<u8>, &'static str)>,
}

impl HttpSystem {
    /// Looks up the `resolve` values once; every call waits for them.
    pub(crate) async fn ensure_resolved(&self) -> Result<(), CallError> {
        if self.spec.resolve.is_empty() {
            return Ok(());
        }
        self.resolved
            .get_or_try_init(|| async {
                let mut vars = match &self.spec.system_vars {
                    Value::Object(m) => m.clone(),
                    _ => Map::new(),
                };
                for (name, op_name, path) in &self.spec.resolve {
                    let op = self.operation(op_name)?;
                    let input = CallInput::default();
                    let (resp, _) = self
                        .execute(op_name, op, &input, &Next::Query(vec![]))
                        .await?;
                    let Some(value) = path.first(&resp.body).filter(|v| !v.is_null()) else {
                        return Err(CallError::Permanent {
                            system: self.name.clone(),
                            operation: op_name.clone(),
                            status: resp.status,
                            message: format!("`resolve.{name}` found nothing"),
                            body: Box::new(redact_json(&resp.body)),
                        });
                    };
                    vars.insert(name.clone(), value.clone());
                }
                Ok(Value::Object(vars))
            })
            .await
            .map(|_| ())
    }

    /// Sends a single-request operation once (with its retries); `call` (in `steps`) is the
    /// entry point for every operation.
    pub(crate) async fn call_single(
        &self,
        op_name: &str,
        op: &Operation,
        input: &CallInput,
    ) -> Result<CallOutput, CallError> {
        let (resp, already_done) = self
            .execute(op_name, op, input, &Next::Query(vec![]))
            .await?;
        // A lookup answered without the member its records are read from did not say
        // "none": taken so, the record would be created again. Only a request safe to
        // repeat fails so; a write's answer is kept whatever it holds.
        let holds = match holds_records(op, &resp.body) {
            Ok(holds) => holds,
            Err(why) if op.safe_to_repeat(false) => {
                return Err(CallError::Permanent {
                    system: self.name.clone(),
                    operation: op_name.to_string(),
                    status: resp.status,
                    message: why,
                    body: Box::new(redact_json(&resp.body)),
                });
            }
            Err(_) => true,
        };
        let record = op.record.as_ref().and_then(|p| p.extract(&resp.body));
        let Extracted {
            records, parents, ..
        } = match &op.records {
            Some(p) if holds => p.extract(&resp.body),
            _ => Extracted::default(),
        };
        Ok(CallOutput {
            status: resp.status,
            body: resp.body,
            record,
            records,
            parents,
            already_done,
        })
    }

    /// Probes a system that is down, once its pause has run out: a plain GET of `base_url`
    /// without credentials. Any response shows the system answers again and closes the
    /// breaker; none makes the next pause longer. True when it answered.
    pub async fn probe(&self) -> bool {
        if self.breaker.admit(self.clock.now()).is_err() {
            return false;
        }
        // A probe waits like any call; one the system would hold too long is no probe now.
        if self.wait_for_budget("probe").await.is_err() {
            return false;
        }
        match self.client.get(self.spec.base_url.clone()).send().await {
            Ok(resp) => {
                self.stats.response(resp.status().as_u16());
                self.breaker.success(&self.name, self.clock.now());
                true
            }
            Err(e) => {
                self.stats.transport_error();
                let message = redact(&error_chain(&e)).into_owned();
                tracing::info!(system = %self.name, error = %message, "probe: still down");
                self.breaker.failure(&self.name, self.clock.now(), &message);
                false
            }
        }
    }

    fn down(&self, op_name: &str, open: Open) -> CallError {
        let mut message = format!("{} requests in a row got no response", open.failures);
        if let Some(since) = open.since {
            message.push_str(&format!(
                " since {}",
                since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
        if let Some(e) = open.last_error {
            message.push_str(&format!("; last: {e}"));
        }
        CallError::Down {
            system: self.name.clone(),
            operation: op_name.to_string(),
            message,
        }
    }

    /// The URL of a path: absolute URLs as they are, others appended to `base_url`.
    fn url_for(&self, path: &str) -> Result<Url, UrlParseError> {
        if path.starts_with("http://") || path.starts_with("https://") {
            return UrlParseError::parse(path);
        }
        let joined = format!(
            "{}/{}",
            self.spec.base_url.as_str().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        UrlParseError::parse(&joined)
    }

    pub(crate) fn context(&self, op: &Operation, input: &CallInput) -> Context {
        let mut m = input.extra.clone();
        let opt = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
        m.insert("record".into(), input.record.clone());
        m.insert("id".into(), opt(&input.id));
        m.insert("key".into(), opt(&input.key));
        m.insert(
            "since".into(),
            input
                .since
                .map_or(Value::Null, |t| op.since_format.format(t)),
        );
        m.insert("idempotency_key".into(), opt(&input.idempotency_key));
        m.insert("system".into(), self.system_vars().clone());
        m.insert("vars".into(), self.spec.vars.clone());
        Context::from(Value::Object(m))
    }

    fn render(
        &self,
        op: &Operation,
        input: &CallInput,
        target: &Next,
    ) -> Result<Rendered, RequestRenderError> {
        let ctx = self.context(op, input);
        let r = |t: &Template| t.render(&ctx);
        let url = match target {
            Next::Url(u) => UrlParseError::parse(u)?,
            Next::Query(paging) => {
                let mut url = self.url_for(&r(&op.path)?)?;
                let mut query = Vec::new();
                for (k, t) in &op.query {
                    let v = r(t)?;
                    // An empty value is left out: a first incremental run has no `since`.
                    if !v.is_empty() && !paging.iter().any(|(pk, _)| pk == k) {
                        query.push((k.clone(), v));
                    }
                }
                query.extend(paging.iter().cloned());
                if !query.is_empty() {
                    url.query_pairs_mut().extend_pairs(query);
                }
                url
            }
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        for (k, t) in self.spec.headers.iter().chain(&op.headers) {
            let v = r(t)?;
            headers.retain(|(hk, _)| !hk.eq_ignore_ascii_case(k));
            headers.push((k.clone(), v));
        }
        if let (Some(Some(h)), Some(key)) = (&op.idempotency_key, &input.idempotency_key) {
            headers.push((h.clone(), key.clone()));
        }
        let body = match &op.body {
            None => None,
            Some(b) => {
                let mut value = b.render(&ctx)?;
                if let (Some(field), Some(key)) = (&op.idempotency_field, &input.idempotency_key) {
                    set_field(&mut value, field, Value::String(key.clone()));
                }
                Some(encode_body(&value, op.body_format))
            }
        };
        Ok(Rendered {
            method: method(op.method),
            url,
            headers,
            body,
        })
    }

    /// Sends an operation's request with its retries; returns the response and whether a
    /// rule called it `already_done`.
    pub(crate) async fn execute(
        &self,
        op_name: &str,
        op: &Operation,
        input: &CallInput,
        target: &Next,
    ) -> Result<(Response, bool), CallError> {
        self.execute_reading(op_name, op, input, target, None).await
    }

    /// `execute`, a listing's records read by `reader` when it is given.
    pub(super) async fn execute_reading(
        &self,
        op_name: &str,
        op: &Operation,
        input: &CallInput,
        target: &Next,
        reader: Option<&ListingReader>,
    ) -> Result<(Response, bool), CallError> {
        let rendered = self
            .render(op, input, target)
            .map_err(|e| CallError::Render {
                system: self.name.clone(),
                operation: op_name.to_string(),
                message: redact(&e.to_string()).into_owned(),
            })?;
        let safe = op.safe_to_repeat(input.idempotency_key.is_some());
        let max = self.spec.retry.max_attempts;
        let mut attempt = 0;
        let mut reauthenticated = false;
        loop {
            attempt += 1;
            self.breaker
                .admit(self.clock.now())
                .map_err(|open| self.down(op_name, open))?;
            self.wait_for_budget(op_name).await?;
            let creds = self.auth.credentials(self).await?;
            // Checked last thing before each attempt: a run that lost its flow's lease (a
            // pause, a cut to the state database) must not write beside the new holder.
            if rendered.method != reqwest::Method::GET
                && let Err(source) = crate::state::lease::check_remote_write()
            {
                return Err(CallError::LeaseLost {
                    system: self.name.clone(),
                    operation: op_name.to_string(),
                    source,
                });
            }
            let started = Instant::now();
            let sent = self.send(&rendered, &creds, reader).await;
            let duration_ms = started.elapsed().as_millis() as u64;
            if let Ok(r) = &sent {
                tracing::debug!(
                    system = %self.name, operation = op_name, method = %rendered.method,
                    url = %redact(rendered.url.as_str()), status = r.status, duration_ms, attempt,
                    "request"
                );
            }
            let resp = match sent {
                Err(e) => {
                    self.stats.transport_error();
                    let message = redact(&error_chain(&e)).into_owned();
                    tracing::warn!(
                        system = %self.name, operation = op_name, method = %rendered.method,
                        duration_ms, attempt, error = %message, "request failed"
                    );
                    let down = self.breaker.failure(&self.name, self.clock.now(), &message);
                    // A refused connection never carried the request; anything later may
                    // have reached the system.
                    if !safe && !e.is_connect() {
                        return Err(self.in_doubt(op_name, None, message));
                    }
                    if down {
                        // No retry against a system that is down: the caller stops.
                        return Err(self.down(
                            op_name,
                            Open {
                                since: self.breaker.health().down_since,
                                failures: self.breaker.health().consecutive_failures,
                                last_error: Some(message),
                            },
                        ));
                    }
                    if attempt >= max {
                        return Err(CallError::Transport {
                            system: self.name.clone(),
                            operation: op_name.to_string(),
                            status: None,
                            attempts: attempt,
                            message,
                        });
                    }
                    self.stats.retry();
                    let b = self.spec.retry.backoff(attempt);
                    self.before_wait(op_name, b, "cannot be reached; trying again")?;
                    self.clock.sleep(b).await;
                    continue;
                }
                Ok(mut resp) => {
                    // Typed objects become plain values before rules and paths see them.
                    decode(&mut resp.body, &op.decode);
                    resp
                }
            };
            let status = resp.status;
            self.stats.response(status);
            self.breaker.success(&self.name, self.clock.now());
            tracing::debug!(
                system = %self.name, operation = op_name, method = %rendered.method, status,
                duration_ms, attempt, "request sent"
            );
            if status == 401 && self.auth.refreshable() && !reauthenticated {
                // The token may have been revoked or expired early: fetch one once more and
                // resend, without using up a retry (a 401 means nothing was done).
                reauthenticated = true;
                self.auth.invalidate(creds.serial).await;
                attempt -= 1;
                continue;
            }
            let now = self.clock.now();
            let retry_after = resp
                .headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, now));
            let lockout = self.lockout().filter(|l| l.status == status);
            let verdict = if lockout.is_some() {
                None
            } else {
                Some(classify(
                    &[&op.rules, &self.spec.rules],
                    status,
                    &resp.body,
                    retry_after.is_some(),
                ))
            };
            let action = verdict
                .as_ref()
                .map_or(ErrorAction::RateLimited, |v| v.action);
            // An answer the rules call a success, but whose records or record cannot be read
            // from it because it is not JSON (a maintenance page, a proxy's or a firewall's
            // page served with a 200): read as no records, it would end a listing early and
            // every record after it would look missing. It is a failed attempt instead.
            let unreadable = resp.not_json
                && (op.records.is_some() || op.record.is_some())
                && matches!(action, ErrorAction::Success | ErrorAction::AlreadyDone);
            let action = if unreadable {
                ErrorAction::Retry
            } else {
                action
            };
            let message = || {
                let m = verdict
                    .as_ref()
                    .filter(|_| !unreadable)
                    .and_then(|v| v.message.clone())
                    .unwrap_or_else(|| default_message(status, &resp.headers, &resp.body));
                let m = if unreadable {
                    let kind = resp
                        .headers
                        .get(CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("no content type");
                    format!("the answer is not JSON ({kind}), {m}")
                } else {
                    m
                };
                redact(&m).into_owned()
            };
            match action {
                ErrorAction::Success => return Ok((resp, false)),
                ErrorAction::AlreadyDone => return Ok((resp, true)),
                ErrorAction::NotFound => {
                    return Err(CallError::NotFound {
                        system: self.name.clone(),
                        operation: op_name.to_string(),
                        status,
                        body: Box::new(redact_json(&resp.body)),
                    });
                }
                ErrorAction::Fail if status == 401 => {
                    return Err(CallError::Auth {
                        system: self.name.clone(),
                        status: Some(status),
                        message: message(),
                    });
                }
                ErrorAction::Fail => {
                    // The error names the status itself: the message is the body's part.
                    let message = message();
                    let message = match message.strip_prefix(&format!("status {status}")) {
                        Some("") => "no body".to_string(),
                        Some(rest) => rest.trim_start_matches(": ").to_string(),
                        None => message,
                    };
                    return Err(CallError::Permanent {
                        system: self.name.clone(),
                        operation: op_name.to_string(),
                        status,
                        message,
                        body: Box::new(redact_json(&resp.body)),
                    });
                }
                ErrorAction::RateLimited => {
                    // The system declined the request without acting on it, so even a
                    // non-idempotent write may be sent again.
                    let wait = retry_after.or(lockout.map(|l| Duration::from_secs(l.seconds)));
                    if let Some(w) = wait {
                        let reason = match (retry_after, lockout) {
                            (Some(_), _) => {
                                format!("asks to slow down (status {status}, Retry-After)")
                            }
                            (None, _) => format!("has locked erpsync out (status {status})"),
                        };
                        // Shared: the budget is the system's, so every flow waits.
                        self.limiter.pause_until(
                            now + chrono::Duration::from_std(w).unwrap_or_default(),
                            &reason,
                        );
                        tracing::info!(
                            system = %self.name, operation = op_name, status,
                            wait_ms = w.as_millis() as u64, lockout = lockout.is_some(),
                            "system asked to slow down; every caller pauses"
                        );
                    }
                    if attempt >= max {
                        return Err(CallError::RateLimited {
                            system: self.name.clone(),
                            operation: op_name.to_string(),
                            attempts: attempt,
                        });
                    }
                    self.stats.retry();
                    if wait.is_none() {
                        let b = self.spec.retry.backoff(attempt);
                        let reason = format!("is rate limiting (status {status}); backing off");
                        self.before_wait(op_name, b, &reason)?;
                        self.stats.rate_limit_wait(b);
                        self.clock.sleep(b).await;
                    }
                }
                ErrorAction::Retry => {
                    if !safe {
                        return Err(self.in_doubt(op_name, Some(status), message()));
                    }
                    if attempt >= max {
                        return Err(CallError::Transport {
                            system: self.name.clone(),
                            operation: op_name.to_string(),
                            status: Some(status),
                            attempts: attempt,
                            message: message(),
                        });
                    }
                    self.stats.retry();
                    let wait = retry_after.unwrap_or_else(|| self.spec.retry.backoff(attempt));
                    let reason = if unreadable {
                        format!("answered {status} with a body that is not JSON; trying again")
                    } else {
                        format!("answered {status}; trying again")
                    };
                    self.before_wait(op_name, wait, &reason)?;
                    self.clock.sleep(wait).await;
                }
            }
        }
    }

    fn in_doubt(&self, op_name: &str, status: Option<u16>, message: String) -> CallError {
        self.stats.in_doubt();
        tracing::warn!(system = %self.name, operation = op_name, ?status, "write in doubt, not sent again");
        CallError::InDoubt {
            system: self.name.clone(),
            operation: op_name.to_string(),
            status,
            message,
        }
    }

    async fn send(
        &self,
        req: &Rendered,
        creds: &Credentials,
        reader: Option<&ListingReader>,
    ) -> Result<Response, reqwest::Error> {
        let mut url = req.url.clone();
        if !creds.query.is_empty() {
            let kept: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| !creds.query.iter().any(|(ck, _)| ck == k))
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            url.query_pairs_mut()
                .clear()
                .extend_pairs(kept)
                .extend_pairs(&creds.query);
        }
        let mut b = self.client.request(req.method.clone(), url.clone());
        for (k, v) in req.headers.iter().chain(&creds.headers) {
            b = b.header(k.as_str(), v.as_str());
        }
        if let Some((bytes, content_type)) = &req.body {
            b = b.header(CONTENT_TYPE, *content_type).body(bytes.clone());
        }
        let resp = b.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await?;
        // A listing's page for a reader is read as it asks, unless it is not made that way
        // (an error's body, say): then whole, as any other.
        let listed =
            reader.and_then(|r| crate::json::parse_listing(&bytes, &r.chain, &r.members, r.texts));
        let (body, read, texts, not_json) = match listed {
            Some(listed) => (listed.body, Some(listed.records), listed.texts, false),
            None => match parse_body_json(&bytes) {
                Ok(body) => (body, None, Vec::new(), false),
                Err(text) => (text, None, Vec::new(), true),
            },
        };
        Ok(Response {
            status,
            headers,
            body,
            url: req.url.to_string(),
            read,
            texts,
            not_json,
        })
    }

    /// A token or login request (for `auth`): budgeted like any request, not retried.
    pub(crate) async fn token_request(
        &self,
        method_: HttpMethod,
        path: &str,
        headers: &[(String, String)],
        body: Option<&Value>,
        format: BodyFormat,
    ) -> Result<(u16, Value), TokenRequestError> {
        let url = self.url_for(path)?;
        let op_name = "auth";
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Err(open) = self.breaker.admit(self.clock.now()) {
                return Err(self.down("token", open).into());
            }
            self.wait_for_budget(op_name).await?;
            let mut b = self.client.request(method(method_), url.clone());
            for (k, v) in headers {
                b = b.header(k.as_str(), v.as_str());
            }
            if let Some(v) = body {
                let (bytes, content_type) = encode_body(v, format);
                b = b.header(CONTENT_TYPE, content_type).body(bytes);
            }
            let resp = match b.send().await {
                Ok(r) => r,
                Err(e) => {
                    let message = error_chain(&e);
                    self.stats.transport_error();
                    self.breaker
                        .failure(&self.name, self.clock.now(), &redact(&message));
                    return Err(TokenRequestError::Transport(message));
                }
            };
            let status = resp.status().as_u16();
            self.stats.response(status);
            self.breaker.success(&self.name, self.clock.now());
            let now = self.clock.now();
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, now));
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| TokenRequestError::Transport(error_chain(&e)))?;
            // A token endpoint is rate limited like any other: a 429, a `Retry-After` on an
            // error or the system's lock-out status is waited out, not a failed flow.
            let lockout = self.lockout().filter(|l| l.status == status);
            let limited = status == 429
                || (retry_after.is_some() && ((400..500).contains(&status) || status == 503));
            if !(limited || lockout.is_some()) || attempt >= self.spec.retry.max_attempts {
                return Ok((status, parse_body(&bytes)));
            }
            self.stats.retry();
            match retry_after.or(lockout.map(|l| Duration::from_secs(l.seconds))) {
                Some(w) => {
                    let reason = format!("token endpoint asks to slow down (status {status})");
                    self.limiter.pause_until(
                        now + chrono::Duration::from_std(w).unwrap_or_default(),
                        &reason,
                    );
                }
                None => {
                    let b = self.spec.retry.backoff(attempt);
                    let reason =
                        format!("token endpoint is rate limiting (status {status}); backing off");
                    self.before_wait(op_name, b, &reason)?;
                    self.stats.rate_limit_wait(b);
                    self.clock.sleep(b).await;
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl TokenEndpoint for HttpSystem {
    fn system_name(&self) -> &str {
        &self.name
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn token_fetched(&self) {
        self.stats.token_fetch();
    }

    fn system_vars(&self) -> &Value {
        HttpSystem::system_vars(self)
    }

    fn vars(&self) -> &Value {
        &self.spec.vars
    }

    async fn token_request(
        &self,
        method: HttpMethod,
        path: &str,
        headers: &[(String, String)],
        body: Option<&Value>,
        format: BodyFormat,
    ) -> Result<(u16, Value), TokenRequestError> {
        HttpSystem::token_request(self, method, path, headers, body, format).await
    }
}
