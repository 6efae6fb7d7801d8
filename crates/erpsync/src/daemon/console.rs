//! The operator's console: server-rendered pages (Handlebars templates and assets embedded in
//! the binary) under `/console`, on top of the admin API's operations (`api.rs`), the only
//! path to the data. Login takes the admin or the viewer token and gives a session cookie
//! (`HttpOnly`, `SameSite=Strict`); every POST carries the session's CSRF token; the viewer's
//! session changes nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, RenderContext, RenderErrorReason,
};
use rand::RngCore as _;
use serde_json::{Value, json};

use super::api::{
    self, ApiError, FailuresQuery, Role, RunRequest, RunsQuery, SettleRequest, role_of, same_secret,
};
use super::core::Daemon;

/// Name of the session cookie.
const COOKIE: &str = "erpsync_console";
/// How long a session lasts after login.
const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at most; the oldest go first.
const MAX_SESSIONS: usize = 256;

const CSS: &str = include_str!("console/console.css");
const JS: &str = include_str!("console/console.js");

const TEMPLATES: &[(&str, &str)] = &[
    ("layout", include_str!("console/layout.hbs")),
    ("records_table", include_str!("console/records_table.hbs")),
    ("login", include_str!("console/login.hbs")),
    ("flows", include_str!("console/flows.hbs")),
    ("runs", include_str!("console/runs.hbs")),
    ("run", include_str!("console/run.hbs")),
    ("failures", include_str!("console/failures.hbs")),
    ("failure", include_str!("console/failure.hbs")),
    ("records", include_str!("console/records.hbs")),
    ("dry_run", include_str!("console/dry_run.hbs")),
    ("error", include_str!("console/error.hbs")),
];

/// A one-time message shown on the next page.
#[derive(Debug, Clone)]
struct Flash {
    error: bool,
    text: String,
}

#[derive(Debug, Clone)]
struct Session {
    role: Role,
    csrf: String,
    expires: Instant,
    flash: Option<Flash>,
}

struct Console {
    daemon: Arc<Daemon>,
    templates: Handlebars<'static>,
    sessions: Mutex<HashMap<String, Session>>,
}

/// The console's routes, for the daemon's router.
pub(super) fn router<S>(daemon: Arc<Daemon>) -> Router<S> {
    let console = Arc::new(Console {
        daemon,
        templates: templates(),
        sessions: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/flows") }))
        .route(
            "/console/",
            get(|| async { Redirect::to("/console/flows") }),
        )
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/flows", get(flows_page))
        .route("/console/flows/{id}/switch", post(switch))
        .route("/console/flows/{id}/run", post(run_now))
        .route(
            "/console/flows/{id}/dry-run",
            get(dry_run_page).post(dry_run),
        )
        .route("/console/runs", get(runs_page))
        .route("/console/runs/{id}", get(run_page))
        .route("/console/failures", get(failures_page))
        .route("/console/failures/{id}", get(failure_page))
        .route("/console/failures/action", post(failures_action))
        .route("/console/pending/settle", post(settle))
        .route("/console/records", get(records_page))
        .with_state(console)
}

fn templates() -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(false);
    for (name, text) in TEMPLATES {
        // The templates are part of the binary: one that does not parse is a build defect
        // the console tests catch.
        if let Err(e) = hb.register_template_string(name, *text) {
            tracing::error!(template = name, error = %e, "console template does not parse");
        }
    }
    hb.register_helper("json", Box::new(json_helper));
    hb.register_helper("time", Box::new(time_helper));
    hb
}

/// `{{json value}}`: the value as indented JSON (escaped like any text).
fn json_helper(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let v = h.param(0).map(|p| p.value().clone()).unwrap_or(Value::Null);
    let text = serde_json::to_string_pretty(&v).map_err(RenderErrorReason::SerdeError)?;
    out.write(&handlebars::html_escape(&text))?;
    Ok(())
}

/// `{{time t}}`: an RFC 3339 time as `2026-05-04 10:00:30 UTC`.
fn time_helper(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let raw = h.param(0).and_then(|p| p.value().as_str()).unwrap_or("");
    let text = match raw.parse::<DateTime<Utc>>() {
        Ok(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        Err(_) => raw.to_string(),
    };
    out.write(&handlebars::html_escape(&text))?;
    Ok(())
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn cookie_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

fn form(body: &Bytes) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// What a page knows of the session it is shown to.
struct Viewer {
    id: String,
    role: Role,
    csrf: String,
    flash: Option<Flash>,
}

impl Console {
    /// The session of a request, its flash taken; None when there is none or it expired.
    fn viewer(&self, headers: &HeaderMap) -> Option<Viewer> {
        let id = cookie_of(headers)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let s = sessions.get_mut(&id)?;
        if s.expires <= Instant::now() {
            sessions.remove(&id);
            return None;
        }
        Some(Viewer {
            role: s.role,
            csrf: s.csrf.clone(),
            flash: s.flash.take(),
            id,
        })
    }

    /// The session of a POST whose CSRF token matches it, and that may change things.
    fn writer(
        &self,
        headers: &HeaderMap,
        form: &[(String, String)],
    ) -> Result<Viewer, Box<Response>> {
        let Some(v) = self.viewer(headers) else {
            return Err(Box::new(Redirect::to("/console/login").into_response()));
        };
        let token = field(form, "csrf").unwrap_or("");
        if !same_secret(token, &v.csrf) {
            return Err(Box::new(self.error_page(
                Some(&v),
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form is out of date (or did not come from the console). Reload the page and try again.",
            )));
        }
        if v.role != Role::Operator {
            return Err(Box::new(self.error_page(
                Some(&v),
                StatusCode::FORBIDDEN,
                "Read-only",
                "You are logged in with the viewer token, which only reads.",
            )));
        }
        Ok(v)
    }

    fn flash(&self, v: &Viewer, error: bool, text: impl Into<String>) {
        if let Some(s) = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&v.id)
        {
            s.flash = Some(Flash {
                error,
                text: text.into(),
            });
        }
    }

    /// The outcome of an operation as the next page's message, then back to `to`.
    fn done(&self, v: &Viewer, result: Result<String, ApiError>, to: &str) -> Response {
        match result {
            Ok(text) => self.flash(v, false, text),
            Err(e) => self.flash(v, true, e.message),
        }
        Redirect::to(to).into_response()
    }

    fn render(
        &self,
        status: StatusCode,
        template: &str,
        v: Option<&Viewer>,
        page: &str,
        title: &str,
        mut ctx: Value,
    ) -> Response {
        if let Value::Object(m) = &mut ctx {
            m.insert("title".into(), json!(title));
            m.insert("page".into(), json!(page));
            if let Some(v) = v {
                m.insert(
                    "session".into(),
                    json!({"csrf": v.csrf, "can_write": v.role == Role::Operator}),
                );
                if let Some(f) = &v.flash {
                    m.insert(
                        "flash".into(),
                        json!({"kind": if f.error { "error" } else { "ok" }, "text": f.text}),
                    );
                }
            }
        }
        match self.templates.render(template, &ctx) {
            Ok(html) => (
                status,
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/html; charset=utf-8"),
                    ),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                    (
                        header::CONTENT_SECURITY_POLICY,
                        HeaderValue::from_static(
                            "default-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
                        ),
                    ),
                    (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
                ],
                html,
            )
                .into_response(),
            Err(e) => {
                tracing::error!(template, error = %e, "console page cannot be rendered");
                (StatusCode::INTERNAL_SERVER_ERROR, "console page cannot be rendered")
                    .into_response()
            }
        }
    }

    fn error_page(
        &self,
        v: Option<&Viewer>,
        status: StatusCode,
        heading: &str,
        message: &str,
    ) -> Response {
        self.render(
            status,
            "error",
            v,
            "",
            heading,
            json!({"heading": heading, "message": message}),
        )
    }

    /// A page showing what the admin API answered (as `data`), or its error.
    fn api_page(
        &self,
        v: &Viewer,
        answer: Result<impl serde::Serialize, ApiError>,
        template: &str,
        page: &str,
        title: &str,
    ) -> Response {
        match answer {
            Ok(data) => self.render(
                StatusCode::OK,
                template,
                Some(v),
                page,
                title,
                json!({"data": data}),
            ),
            Err(e) => self.api_error(v, e),
        }
    }

    fn api_error(&self, v: &Viewer, e: ApiError) -> Response {
        let heading = if e.status == StatusCode::NOT_FOUND {
            "Not found"
        } else {
            "Something went wrong"
        };
        self.error_page(Some(v), e.status, heading, &e.message)
    }

    fn flow_ids(&self) -> Vec<String> {
        self.daemon
            .engine()
            .project
            .flows
            .iter()
            .map(|f| f.id.clone())
            .collect()
    }
}

macro_rules! viewer_or_login {
    ($c:expr, $headers:expr) => {
        match $c.viewer(&$headers) {
            Some(v) => v,
            None => return Redirect::to("/console/login").into_response(),
        }
    };
}

/// The operator who may change things, from the session and the form's CSRF token; or the
/// answer that refuses the request.
macro_rules! writer_or_refuse {
    ($c:expr, $headers:expr, $form:expr) => {
        match $c.writer(&$headers, &$form) {
            Ok(v) => v,
            Err(r) => return *r,
        }
    };
}

async fn css() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/css; charset=utf-8"),
        )],
        CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        )],
        JS,
    )
        .into_response()
}

async fn login_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if c.viewer(&headers).is_some() {
        return Redirect::to("/console/flows").into_response();
    }
    c.render(StatusCode::OK, "login", None, "login", "Log in", json!({}))
}

async fn login(State(c): State<Arc<Console>>, body: Bytes) -> Response {
    let form = form(&body);
    let token = field(&form, "token").unwrap_or("");
    let Some(role) = role_of(&c.daemon, token) else {
        tracing::warn!("console login refused");
        let message = if c.daemon.admin_token().is_none() && c.daemon.viewer_token().is_none() {
            "The console is off: set `daemon.admin_token` (or ERPSYNC_ADMIN_TOKEN)."
        } else {
            "That token is not the admin or the viewer token."
        };
        return c.render(
            StatusCode::UNAUTHORIZED,
            "login",
            None,
            "login",
            "Log in",
            json!({"error": message}),
        );
    };
    let id = random_token();
    {
        let mut sessions = c.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        while sessions.len() >= MAX_SESSIONS {
            let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                role,
                csrf: random_token(),
                expires: now + SESSION_TTL,
                flash: None,
            },
        );
    }
    tracing::info!(role = ?role, "console login");
    let cookie = format!(
        "{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    let mut r = Redirect::to("/console/flows").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn logout(State(c): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = form(&body);
    if let Some(v) = c.viewer(&headers)
        && same_secret(field(&form, "csrf").unwrap_or(""), &v.csrf)
    {
        c.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&v.id);
    }
    let mut r = Redirect::to("/console/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "erpsync_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    r
}

async fn flows_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let v = viewer_or_login!(c, headers);
    c.api_page(&v, api::flows(&c.daemon).await, "flows", "flows", "Flows")
}

async fn switch(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let form = form(&body);
    let v = writer_or_refuse!(c, headers, form);
    let enabled = field(&form, "enabled") == Some("on");
    let result = api::switch_flow(&c.daemon, &id, enabled, "console")
        .await
        .map(|_| format!("Flow {id} switched {}.", if enabled { "on" } else { "off" }));
    c.done(&v, result, "/console/flows")
}

async fn run_now(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let form = form(&body);
    let v = writer_or_refuse!(c, headers, form);
    let reconcile = field(&form, "mode") == Some("reconcile");
    let req = RunRequest {
        reconcile,
        ..Default::default()
    };
    let what = if reconcile { "Reconcile" } else { "Run" };
    let result = api::run_flow(&c.daemon, &id, req)
        .await
        .map(|_| format!("{what} of {id} started."));
    c.done(&v, result, "/console/flows")
}

async fn dry_run_page(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let v = viewer_or_login!(c, headers);
    if let Err(e) = api::flow(&c.daemon, &id).await {
        return c.api_error(&v, e);
    }
    c.render(
        StatusCode::OK,
        "dry_run",
        Some(&v),
        "flows",
        "Dry run",
        json!({"flow": id}),
    )
}

async fn dry_run(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let form = form(&body);
    let v = writer_or_refuse!(c, headers, form);
    let keys_text = field(&form, "keys").unwrap_or("").to_string();
    let keys: Vec<String> = keys_text
        .split([',', '\n'])
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect();
    let keys = (!keys.is_empty()).then_some(keys);
    let ctx = match api::dry_run(&c.daemon, &id, keys).await {
        Ok(plan) => json!({"flow": id, "keys": keys_text, "plan": plan}),
        Err(e) if e.status == StatusCode::NOT_FOUND => return c.api_error(&v, e),
        Err(e) => json!({"flow": id, "keys": keys_text, "error": e.message}),
    };
    c.render(StatusCode::OK, "dry_run", Some(&v), "flows", "Dry run", ctx)
}

async fn runs_page(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<RunsQuery>,
) -> Response {
    let v = viewer_or_login!(c, headers);
    match api::runs(&c.daemon, &q).await {
        Ok(data) => c.render(
            StatusCode::OK,
            "runs",
            Some(&v),
            "runs",
            "Runs",
            json!({
                "data": data,
                "flows": c.flow_ids(),
                "statuses": ["ok", "partial", "error", "running"],
                "filter": {"flow": q.flow, "status": q.status},
            }),
        ),
        Err(e) => c.api_error(&v, e),
    }
}

async fn run_page(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    let v = viewer_or_login!(c, headers);
    c.api_page(
        &v,
        api::run(&c.daemon, id).await,
        "run",
        "runs",
        &format!("Run #{id}"),
    )
}

/// The choices of the failures' age filter.
const AGES: &[(&str, &str)] = &[
    ("", "any age"),
    ("3600", "1 hour"),
    ("86400", "1 day"),
    ("604800", "7 days"),
];

async fn failures_page(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(raw): Query<HashMap<String, String>>,
) -> Response {
    let v = viewer_or_login!(c, headers);
    let get = |k: &str| raw.get(k).filter(|s| !s.is_empty()).cloned();
    let q = FailuresQuery {
        flow: get("flow"),
        system: get("system"),
        q: get("q"),
        min_age_secs: get("min_age_secs").and_then(|s| s.parse().ok()),
    };
    let data = match api::failures(&c.daemon, &q).await {
        Ok(d) => d,
        Err(e) => return c.api_error(&v, e),
    };
    let pending = match api::pending(&c.daemon, q.flow.as_deref()).await {
        Ok(p) => p["pending"].clone(),
        Err(e) => return c.api_error(&v, e),
    };
    let systems: Vec<String> = c.daemon.engine().project.systems.keys().cloned().collect();
    let ages: Vec<Value> = AGES
        .iter()
        .map(|(value, label)| json!({"value": value, "label": label}))
        .collect();
    c.render(
        StatusCode::OK,
        "failures",
        Some(&v),
        "failures",
        "Failures",
        json!({
            "data": data,
            "pending": pending,
            "flows": c.flow_ids(),
            "systems": systems,
            "ages": ages,
            "filter": {
                "flow": q.flow,
                "system": q.system,
                "q": q.q,
                "min_age_secs": get("min_age_secs").unwrap_or_default(),
            },
        }),
    )
}

async fn failure_page(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    let v = viewer_or_login!(c, headers);
    c.api_page(
        &v,
        api::failure(&c.daemon, id).await,
        "failure",
        "failures",
        "Failure",
    )
}

async fn failures_action(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = form(&body);
    let v = writer_or_refuse!(c, headers, form);
    let ids: Vec<i64> = form
        .iter()
        .filter(|(k, _)| k == "id")
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    // Back to the list either way: a retried record leaves it when it syncs.
    let result = match field(&form, "action") {
        Some("retry") => api::retry(&c.daemon, &ids).await.map(|_| {
            format!(
                "Retry of {} record(s) started; a record that syncs leaves the list.",
                ids.len()
            )
        }),
        Some("discard") => api::discard(&c.daemon, &ids).await.map(|v| {
            format!(
                "{} failure(s) discarded.",
                v["discarded"].as_array().map_or(0, Vec::len)
            )
        }),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "choose retry or discard",
        )),
    };
    c.done(&v, result, "/console/failures")
}

async fn settle(State(c): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = form(&body);
    let v = writer_or_refuse!(c, headers, form);
    let arrived = field(&form, "outcome") == Some("arrived");
    let target_id = field(&form, "target_id")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if arrived && target_id.is_none() {
        let result = Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "give the record's id in the target to say it arrived",
        ));
        return c.done(&v, result, "/console/failures");
    }
    let req = SettleRequest {
        flow: field(&form, "flow").unwrap_or("").to_string(),
        key: field(&form, "key").unwrap_or("").to_string(),
        target_id: if arrived { target_id } else { None },
        not_sent: !arrived,
    };
    let result = api::settle(&c.daemon, &req).await.map(|_| {
        if arrived {
            format!(
                "{} settled: it arrived; it will not be sent again.",
                req.key
            )
        } else {
            format!("{} settled: not sent; the next run sends it.", req.key)
        }
    });
    c.done(&v, result, "/console/failures")
}

async fn records_page(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(raw): Query<HashMap<String, String>>,
) -> Response {
    let v = viewer_or_login!(c, headers);
    let key = raw.get("key").map(|k| k.trim()).unwrap_or("");
    let data = if key.is_empty() {
        Value::Null
    } else {
        match api::record(&c.daemon, key).await {
            Ok(d) => d,
            Err(e) => return c.api_error(&v, e),
        }
    };
    c.render(
        StatusCode::OK,
        "records",
        Some(&v),
        "records",
        "Record history",
        json!({"key": key, "data": data}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_escapes_html() {
        let hb = templates();
        for (name, _) in TEMPLATES {
            assert!(hb.has_template(name), "template `{name}` did not register");
        }
        let html = hb
            .render(
                "error",
                &json!({"heading": "<b>x</b>", "message": "a & b", "title": "t", "page": ""}),
            )
            .unwrap();
        assert!(html.contains("&lt;b&gt;x&lt;/b&gt;"), "{html}");
        assert!(!html.contains("<b>x</b>"));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; erpsync_console=abc; b=2"),
        );
        assert_eq!(cookie_of(&h).as_deref(), Some("abc"));
    }
}
