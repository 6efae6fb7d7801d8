//! A callable system: operations executed with the system's auth, rate-limit budget, retry
//! and error policy. One `HttpSystem` is shared (behind an `Arc`) by every flow and shop that
//! uses it, so the budget, the pauses and the token are shared too.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use handlebars::Context;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde_json::{Map, Value};
use url::Url;

use super::auth::{Auth, Credentials, TokenEndpoint};
use super::breaker::{Breaker, Health, Open};
use super::decode::decode;
use super::error::CallError;
use super::operation::Operation;
use super::paginate::{Next, PageSeen, Progress};
use super::ratelimit::RateLimiter;
use super::retry::parse_retry_after;
use super::rules::classify;
use super::spec::SystemSpec;
use super::stats::ConnectorStats;
use crate::clock::SharedClock;
use crate::config::model::{BodyFormat, ErrorAction, HttpMethod, LockoutConfig};
use crate::expr::Template;
use crate::redact::{redact, redact_json};

/// What an operation is called with; every field is offered to its templates.
#[derive(Debug, Clone, Default)]
pub struct CallInput {
    /// The payload, `{{record}}`.
    pub record: Value,
    /// The system's id of the record, `{{id}}`.
    pub id: Option<String>,
    /// The match key, `{{key}}`.
    pub key: Option<String>,
    /// Changed-since cursor of an incremental list, `{{since}}` (see `since_format`).
    pub since: Option<DateTime<Utc>>,
    /// Stable key of this write, `{{idempotency_key}}`; sent in the operation's
    /// `idempotency_key.header` when it has one.
    pub idempotency_key: Option<String>,
    /// Further values, each at the top level of the template context.
    pub extra: Map<String, Value>,
}

/// A successful call.
#[derive(Debug, Clone)]
pub struct CallOutput {
    pub status: u16,
    /// The response body after the `decode` rules: JSON, the text when it is not JSON, or
    /// null when empty.
    pub body: Value,
    /// What the operation's `record` path selects, when it has one and it selects something.
    pub record: Option<Value>,
    /// What the operation's `records` path selects (empty without one).
    pub records: Vec<Value>,
    /// Each record's parent when the `records` path is nested; empty otherwise.
    pub parents: Vec<Option<Arc<Value>>>,
    /// A rule said the write had already been applied (e.g. a duplicate idempotency key).
    pub already_done: bool,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    pub records: Vec<Value>,
    /// Each record's parent when the `records` path is nested (see `RecordsPath`); empty
    /// otherwise.
    pub parents: Vec<Option<Arc<Value>>>,
    /// 1 for the first page read.
    pub number: u32,
    /// Records of the whole listing, when the response tells (the operation's `total`).
    pub total: Option<u64>,
}

/// A response, decoded.
pub(super) struct Response {
    pub(super) status: u16,
    headers: HeaderMap,
    pub(super) body: Value,
    url: String,
}

/// A request ready to send but for its credentials.
struct Rendered {
    method: reqwest::Method,
    url: Url,
    headers: Vec<(String, String)>,
    body: Option<(Vec<u8>, &'static str)>,
}

/// A system built from its `SystemSpec`.
pub struct HttpSystem {
    pub(crate) name: String,
    spec: Arc<SystemSpec>,
    client: reqwest::Client,
    auth: Auth,
    breaker: Breaker,
    limiter: RateLimiter,
    /// `system_vars` with the looked-up values, once they are known.
    resolved: tokio::sync::OnceCell<Value>,
    pub(crate) clock: SharedClock,
    pub(crate) stats: ConnectorStats,
    /// How waits are bounded and announced (one-shot runs set it; see `Waits`).
    waits: std::sync::RwLock<Waits>,
}

/// A running system that could not be built from its spec: only what the machine lacks (the
/// HTTP client's TLS setup), never a problem of the flow files, which the spec has checked.
#[derive(Debug, thiserror::Error)]
#[error("the HTTP client of system `{system}` cannot be created: {message}")]
pub struct SystemStartError {
    pub system: String,
    pub message: String,
}

/// A wait at least this long is announced: a person watching a run must not take it for a
/// hang.
pub const ANNOUNCE_WAITS_FROM: Duration = Duration::from_secs(5);

/// Prints a wait to whoever watches (a terminal): system, why, how long, until when.
pub type WaitAnnouncer = Arc<dyn Fn(&WaitNotice) + Send + Sync>;

/// A wait a system imposes, as announced.
#[derive(Debug, Clone)]
pub struct WaitNotice {
    pub system: String,
    pub operation: String,
    pub reason: String,
    pub wait: Duration,
    pub until: DateTime<Utc>,
}

impl std::fmt::Display for WaitNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` {}: waiting {} s, until {}",
            self.system,
            self.reason,
            self.wait.as_secs_f64().ceil() as u64,
            self.until
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }
}

/// The bounds and witnesses of waits.
#[derive(Default, Clone)]
struct Waits {
    /// Longest wait allowed: a longer one fails the call (`CallError::WaitTooLong`).
    max: Option<Duration>,
    announce: Option<WaitAnnouncer>,
}

impl std::fmt::Debug for HttpSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSystem")
            .field("name", &self.name)
            .field("base_url", &redact(self.spec.base_url.as_str()))
            .finish_non_exhaustive()
    }
}

impl HttpSystem {
    /// Builds the running system of a spec: its HTTP client, token cache, breaker and
    /// request budget start afresh.
    pub fn new(spec: Arc<SystemSpec>, clock: SharedClock) -> Result<HttpSystem, SystemStartError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(spec.connect_timeout)
            .timeout(spec.request_timeout)
            // A redirect means a wrong base URL (MerchantPro redirects the non-www host);
            // following it would resend credentials and bodies to another place.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SystemStartError {
                system: spec.name.clone(),
                message: error_chain(&e),
            })?;
        Ok(HttpSystem {
            name: spec.name.clone(),
            client,
            auth: Auth::new(&spec.auth),
            breaker: Breaker::new(spec.circuit_breaker.as_ref()),
            limiter: RateLimiter::new(spec.rate_limit.as_ref()),
            resolved: tokio::sync::OnceCell::new(),
            clock,
            stats: ConnectorStats::default(),
            waits: Default::default(),
            spec,
        })
    }

    /// The lock-out the system imposes after a burst, if it says.
    fn lockout(&self) -> Option<&LockoutConfig> {
        self.spec.rate_limit.as_ref()?.lockout.as_ref()
    }

    /// The spec this system was built from.
    pub fn spec(&self) -> &Arc<SystemSpec> {
        &self.spec
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bounds every wait this system imposes (`None`: wait as long as it asks), and shows
    /// each long one to `announce` as well as in the logs.
    pub fn set_waits(&self, max: Option<Duration>, announce: Option<WaitAnnouncer>) {
        let mut w = self.waits.write().unwrap_or_else(|e| e.into_inner());
        *w = Waits { max, announce };
    }

    /// Before a wait of `wait`: announced when long, refused when longer than allowed.
    fn before_wait(&self, op_name: &str, wait: Duration, reason: &str) -> Result<(), CallError> {
        let until = self.clock.now() + chrono::Duration::from_std(wait).unwrap_or_default();
        let waits = self.waits.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(max) = waits.max
            && wait > max
        {
            return Err(CallError::WaitTooLong {
                system: self.name.clone(),
                operation: op_name.to_string(),
                reason: reason.to_string(),
                wait_secs: wait.as_secs_f64().ceil() as u64,
                until: until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                max_secs: max.as_secs(),
            });
        }
        if wait >= ANNOUNCE_WAITS_FROM {
            let notice = WaitNotice {
                system: self.name.clone(),
                operation: op_name.to_string(),
                reason: reason.to_string(),
                wait,
                until,
            };
            tracing::warn!(
                system = %self.name, operation = op_name, reason, wait_secs = wait.as_secs(),
                until = %notice.until, "{notice}"
            );
            if let Some(a) = &waits.announce {
                a(&notice);
            }
        }
        Ok(())
    }

    pub fn stats(&self) -> &ConnectorStats {
        &self.stats
    }

    /// Whether the system is reachable, by its circuit breaker.
    pub fn health(&self) -> Health {
        self.breaker.health()
    }

    /// Writes a run may have in flight to this system at once (its `concurrency`).
    pub fn concurrency(&self) -> usize {
        self.spec.concurrency
    }

    /// Whether the system is taken as down now.
    pub fn is_down(&self) -> bool {
        self.breaker.is_down()
    }

    /// The health, when it changed since it was last taken (to keep it in the state store).
    pub fn take_unreported_health(&self) -> Option<Health> {
        self.breaker.take_unreported()
    }

    /// When a system that is down may be probed again (`None` while it is up).
    pub fn next_probe(&self) -> Option<DateTime<Utc>> {
        self.breaker.health().next_probe
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

    /// Whether the operation only reads (GET), so a dry run may call it.
    pub fn is_read_only_op(&self, op: &str) -> bool {
        self.spec
            .operations
            .get(op)
            .is_some_and(|o| o.write_method().is_none())
    }

    /// The steps of an operation (empty for a single request); none for an unknown one.
    pub fn operation_steps(&self, op: &str) -> Option<&[super::operation::Step]> {
        self.spec.operations.get(op).map(|o| o.steps())
    }

    /// Looks up the `resolve` values once; every call waits for them.
    pub(super) async fn ensure_resolved(&self) -> Result<(), CallError> {
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

    /// The system's vars, with the looked-up ones when they are known.
    pub fn system_vars(&self) -> &Value {
        self.resolved.get().unwrap_or(&self.spec.system_vars)
    }

    /// Sends a single-request operation once (with its retries); `call` (in `steps`) is the
    /// entry point for every operation.
    pub(super) async fn call_single(
        &self,
        op_name: &str,
        op: &Operation,
        input: &CallInput,
    ) -> Result<CallOutput, CallError> {
        let (resp, already_done) = self
            .execute(op_name, op, input, &Next::Query(vec![]))
            .await?;
        let record = op.record.as_ref().and_then(|p| p.extract(&resp.body));
        let super::Extracted {
            records, parents, ..
        } = op
            .records
            .as_ref()
            .map(|p| p.extract(&resp.body))
            .unwrap_or_default();
        Ok(CallOutput {
            status: resp.status,
            body: resp.body,
            record,
            records,
            parents,
            already_done,
        })
    }

    /// Lists an operation page by page, following its `paginate` section; empty pages are
    /// not yielded. After an error the stream ends.
    pub fn list<'a>(
        &'a self,
        op_name: &str,
        input: CallInput,
    ) -> impl Stream<Item = Result<Page, CallError>> + 'a {
        self.list_with(op_name, input, 1)
    }

    /// `list`, with up to `width` requests in flight once a `page` or `offset` listing has
    /// told its size (see `Paginate::learn_size`): the pages that follow are asked for while
    /// the first of them is awaited, each through the rate limiter, retries and breaker as
    /// any request. They are taken strictly in page order and only as far as the listing
    /// goes: each page still decides, as it would alone, whether and where the listing goes
    /// on (a short or empty page ends it, a repeated page is an error), and a page asked for
    /// ahead that the listing does not reach is dropped unread.
    pub fn list_with<'a>(
        &'a self,
        op_name: &str,
        input: CallInput,
        width: usize,
    ) -> impl Stream<Item = Result<Page, CallError>> + 'a {
        type Fetch<'f> = futures::future::BoxFuture<'f, Result<(Response, bool), CallError>>;
        struct State<'s> {
            next: Result<Option<Next>, CallError>,
            progress: Progress,
            number: u32,
            last_hash: Option<u64>,
            input: CallInput,
            /// Requests in flight, in page order, and the page each asks for.
            ahead: futures::stream::FuturesOrdered<Fetch<'s>>,
            ahead_of: std::collections::VecDeque<Next>,
        }
        let op_name = op_name.to_string();
        let width = width.max(1);
        let mut progress = Progress::default();
        let start = self.operation(&op_name).map(|op| {
            Some(Next::Query(
                op.paginate
                    .as_ref()
                    .map(|p| p.first(&mut progress))
                    .unwrap_or_default(),
            ))
        });
        let state = State {
            next: start,
            progress,
            number: 0,
            last_hash: None,
            input,
            ahead: futures::stream::FuturesOrdered::new(),
            ahead_of: std::collections::VecDeque::new(),
        };
        futures::stream::unfold(Some(state), move |state| {
            let op_name = op_name.clone();
            async move {
                let mut st = state?;
                let target = match std::mem::replace(&mut st.next, Ok(None)) {
                    Err(e) => return Some((Some(Err(e)), None)),
                    Ok(None) => return None,
                    Ok(Some(t)) => t,
                };
                let op = match self.operation(&op_name) {
                    Ok(op) => op,
                    Err(e) => return Some((Some(Err(e)), None)),
                };
                if let Err(e) = self.ensure_resolved().await {
                    return Some((Some(Err(e)), None));
                }
                let pagination_error = |page: u32, message: String| CallError::Pagination {
                    system: self.name.clone(),
                    operation: op_name.clone(),
                    page,
                    message,
                };
                if st.number >= op.max_pages {
                    let e = pagination_error(
                        st.number,
                        format!(
                            "`max_pages` ({}) reached and the list goes on",
                            op.max_pages
                        ),
                    );
                    return Some((Some(Err(e)), None));
                }
                // Requests asked ahead are of use only while the listing goes where they
                // guessed.
                if st.ahead_of.front() != Some(&target) {
                    st.ahead = futures::stream::FuturesOrdered::new();
                    st.ahead_of.clear();
                }
                if width > 1
                    && let Some(p) = &op.paginate
                {
                    // This page and those after it, up to `max_pages`.
                    let room = (op.max_pages - st.number) as usize;
                    let wanted: Vec<Next> = std::iter::once(target.clone())
                        .chain(p.ahead(&st.progress, width - 1))
                        .take(width.min(room))
                        .collect();
                    if st.ahead_of.is_empty() && wanted.len() > 1 {
                        st.ahead_of.push_back(target.clone());
                        st.ahead
                            .push_back(self.fetch(&op_name, op, &st.input, target.clone()));
                    }
                    if !st.ahead_of.is_empty() {
                        for t in wanted.into_iter().skip(st.ahead_of.len()) {
                            st.ahead_of.push_back(t.clone());
                            st.ahead.push_back(self.fetch(&op_name, op, &st.input, t));
                        }
                    }
                }
                let fetched = if st.ahead_of.pop_front().is_some() {
                    st.ahead
                        .next()
                        .await
                        .expect("a request for each page asked ahead")
                } else {
                    self.execute(&op_name, op, &st.input, &target).await
                };
                let resp = match fetched {
                    Ok((resp, _)) => resp,
                    Err(e) => return Some((Some(Err(e)), None)),
                };
                st.number += 1;
                let super::Extracted {
                    records,
                    parents,
                    listed,
                } = op
                    .records
                    .as_ref()
                    .map(|p| p.extract(&resp.body))
                    .unwrap_or_default();
                if !records.is_empty() {
                    let hash = hash_records(&records);
                    if st.last_hash == Some(hash) {
                        let e = pagination_error(
                            st.number,
                            format!("page {} repeats page {}", st.number, st.number - 1),
                        );
                        return Some((Some(Err(e)), None));
                    }
                    st.last_hash = Some(hash);
                }
                let total = op
                    .total
                    .as_ref()
                    .and_then(|t| t.read(&resp.headers, &resp.body));
                st.next = match &op.paginate {
                    None => Ok(None),
                    Some(p) => {
                        let seen = PageSeen {
                            url: &resp.url,
                            headers: &resp.headers,
                            body: &resp.body,
                            // A nested listing's page holds its outer list's elements.
                            records: listed,
                        };
                        if width > 1 {
                            p.learn_size(&mut st.progress, &seen, total);
                        }
                        p.next(&mut st.progress, &seen)
                            .map_err(|m| pagination_error(st.number, redact(&m).into_owned()))
                    }
                };
                let page = (!records.is_empty()).then_some(Ok(Page {
                    records,
                    parents,
                    number: st.number,
                    total,
                }));
                Some((page, Some(st)))
            }
        })
        .filter_map(futures::future::ready)
    }

    /// A page's request, sent on its own: what `list_with` keeps in flight.
    fn fetch<'f>(
        &'f self,
        op_name: &str,
        op: &Arc<Operation>,
        input: &CallInput,
        target: Next,
    ) -> futures::future::BoxFuture<'f, Result<(Response, bool), CallError>> {
        let (op_name, op, input) = (op_name.to_string(), Arc::clone(op), input.clone());
        Box::pin(async move { self.execute(&op_name, &op, &input, &target).await })
    }

    /// `list_with` run by a task of its own, `ahead` pages ahead of the caller: while the
    /// caller works through one page, the next ones are read. Pages come in order, an error
    /// ends the stream as it does `list`'s, and dropping the stream stops the task (a page
    /// read ahead and not taken is never seen by the caller).
    pub fn list_ahead(
        self: &Arc<Self>,
        op_name: &str,
        input: CallInput,
        ahead: usize,
    ) -> impl Stream<Item = Result<Page, CallError>> + 'static {
        let (tx, rx) = tokio::sync::mpsc::channel(ahead.max(1));
        let (system, op_name) = (Arc::clone(self), op_name.to_string());
        // A leased run's lease goes with the task, as it would with the caller.
        let watch = crate::state::lease::current_watch();
        let task = async move {
            let mut pages = std::pin::pin!(system.list_with(&op_name, input, ahead));
            while let Some(page) = pages.next().await {
                if tx.send(page).await.is_err() {
                    break;
                }
            }
        };
        let task = tokio::spawn(tracing::Instrument::in_current_span(
            crate::state::lease::with_watch(watch, task),
        ));
        let stop = AbortOnDrop(task);
        futures::stream::unfold((rx, stop), |(mut rx, stop)| async move {
            let page = rx.recv().await?;
            Some((page, (rx, stop)))
        })
    }
    pub(super) fn operation(&self, name: &str) -> Result<&Arc<Operation>, CallError> {
        self.spec
            .operations
            .get(name)
            .ok_or_else(|| CallError::UnknownOperation {
                system: self.name.clone(),
                operation: name.to_string(),
                known: self.spec.operations.keys().cloned().collect(),
            })
    }

    /// The URL of a path: absolute URLs as they are, others appended to `base_url`.
    fn url_for(&self, path: &str) -> Result<Url, String> {
        if path.starts_with("http://") || path.starts_with("https://") {
            return Url::parse(path).map_err(|e| format!("`{path}` is not a valid URL: {e}"));
        }
        let joined = format!(
            "{}/{}",
            self.spec.base_url.as_str().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        Url::parse(&joined).map_err(|e| format!("`{joined}` is not a valid URL: {e}"))
    }

    pub(super) fn context(&self, op: &Operation, input: &CallInput) -> Context {
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

    fn render(&self, op: &Operation, input: &CallInput, target: &Next) -> Result<Rendered, String> {
        let ctx = self.context(op, input);
        let r = |t: &Template| t.render(&ctx).map_err(|e| e.to_string());
        let url = match target {
            Next::Url(u) => Url::parse(u).map_err(|e| format!("`{u}` is not a valid URL: {e}"))?,
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
                let mut value = b.render(&ctx).map_err(|e| e.to_string())?;
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
    pub(super) async fn execute(
        &self,
        op_name: &str,
        op: &Operation,
        input: &CallInput,
        target: &Next,
    ) -> Result<(Response, bool), CallError> {
        let rendered = self
            .render(op, input, target)
            .map_err(|m| CallError::Render {
                system: self.name.clone(),
                operation: op_name.to_string(),
                message: redact(&m).into_owned(),
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
            let sent = self.send(&rendered, &creds).await;
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
            let message = || {
                let m = verdict
                    .as_ref()
                    .and_then(|v| v.message.clone())
                    .unwrap_or_else(|| default_message(status, &resp.headers, &resp.body));
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
                    let reason = format!("answered {status}; trying again");
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

    /// Waits for a pause the system imposed to end (announced when long, refused when
    /// longer than allowed) and for a token of the budget.
    async fn wait_for_budget(&self, op_name: &str) -> Result<(), CallError> {
        let now = self.clock.now();
        if let Some((until, reason)) = self.limiter.pause(now) {
            self.before_wait(op_name, (until - now).to_std().unwrap_or_default(), &reason)?;
        }
        let waited = self.limiter.acquire(&self.clock).await;
        if !waited.is_zero() {
            self.stats.rate_limit_wait(waited);
        }
        Ok(())
    }

    async fn send(&self, req: &Rendered, creds: &Credentials) -> Result<Response, reqwest::Error> {
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
        Ok(Response {
            status,
            headers,
            body: parse_body(&bytes),
            url: req.url.to_string(),
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
    ) -> Result<(u16, Value), String> {
        let url = self.url_for(path)?;
        let op_name = "auth";
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Err(open) = self.breaker.admit(self.clock.now()) {
                return Err(self.down("token", open).to_string());
            }
            self.wait_for_budget(op_name)
                .await
                .map_err(|e| e.to_string())?;
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
                    return Err(message);
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
            let bytes = resp.bytes().await.map_err(|e| error_chain(&e))?;
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
                    self.before_wait(op_name, b, &reason)
                        .map_err(|e| e.to_string())?;
                    self.stats.rate_limit_wait(b);
                    self.clock.sleep(b).await;
                }
            }
        }
    }
}

fn method(m: HttpMethod) -> reqwest::Method {
    match m {
        HttpMethod::Get => reqwest::Method::GET,
        HttpMethod::Post => reqwest::Method::POST,
        HttpMethod::Put => reqwest::Method::PUT,
        HttpMethod::Patch => reqwest::Method::PATCH,
        HttpMethod::Delete => reqwest::Method::DELETE,
    }
}

fn encode_body(value: &Value, format: BodyFormat) -> (Vec<u8>, &'static str) {
    match format {
        BodyFormat::Json => (
            serde_json::to_vec(value).unwrap_or_default(),
            "application/json",
        ),
        BodyFormat::Form => {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            if let Value::Object(m) = value {
                for (k, v) in m {
                    match v {
                        Value::Null => {}
                        Value::String(s) => {
                            form.append_pair(k, s);
                        }
                        other => {
                            form.append_pair(k, &other.to_string());
                        }
                    }
                }
            }
            (
                form.finish().into_bytes(),
                "application/x-www-form-urlencoded",
            )
        }
    }
}

/// JSON when it parses, the text otherwise, null when empty.
fn parse_body(bytes: &[u8]) -> Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// Stops a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn hash_records(records: &[Value]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    records.len().hash(&mut h);
    for r in records {
        hash_value(r, &mut h);
    }
    h.finish()
}

/// Feeds a value to a hasher as it is, without writing it out as text first.
fn hash_value(v: &Value, h: &mut impl Hasher) {
    match v {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => (1u8, b).hash(h),
        Value::Number(n) => {
            2u8.hash(h);
            match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => i.hash(h),
                (None, Some(u), _) => u.hash(h),
                (None, None, f) => f.map(f64::to_bits).hash(h),
            }
        }
        Value::String(s) => (3u8, s).hash(h),
        Value::Array(items) => {
            (4u8, items.len()).hash(h);
            for i in items {
                hash_value(i, h);
            }
        }
        Value::Object(m) => {
            (5u8, m.len()).hash(h);
            for (k, v) in m {
                k.hash(h);
                hash_value(v, h);
            }
        }
    }
}

/// A message for a failure no rule described: the status and the start of the body.
fn default_message(status: u16, headers: &HeaderMap, body: &Value) -> String {
    if (300..400).contains(&status) {
        let to = headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?");
        return format!("status {status}: redirected to `{to}`; check the system's `base_url`");
    }
    let text = match body {
        Value::Null => return format!("status {status}"),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut short: String = text.chars().take(300).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    format!("status {status}: {short}")
}

/// An error with its causes: reqwest's own message hides whether it was a timeout.
fn error_chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Sets a (nested) field of a JSON object, creating the objects on the way.
fn set_field(value: &mut Value, path: &[String], v: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = value;
    for p in parents {
        if !cur.get(p).is_some_and(Value::is_object) {
            if let Value::Object(m) = cur {
                m.insert(p.clone(), Value::Object(Default::default()));
            } else {
                return;
            }
        }
        cur = cur.get_mut(p).expect("just ensured");
    }
    if let Value::Object(m) = cur {
        m.insert(last.clone(), v);
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
    ) -> Result<(u16, Value), String> {
        HttpSystem::token_request(self, method, path, headers, body, format).await
    }
}
