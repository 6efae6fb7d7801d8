//! The daemon's HTTP surface: the admin API (JSON, bearer token), health and readiness probes,
//! Prometheus metrics, and the webhook endpoints, which are looked up per request so a reload
//! can add or change them.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

#[cfg(test)]
use super::api::same_secret;
use super::api::{self, ApiResult, Role, RunRequest, role_of};
use super::core::Daemon;
use crate::redact::redact;

/// The router of everything the daemon serves.
pub(crate) fn router(daemon: Arc<Daemon>) -> Router {
    let admin = Router::new()
        .route("/api/flows", get(list_flows))
        .route("/api/flows/{id}", get(show_flow))
        .route("/api/flows/{id}/run", post(run_flow))
        .route("/api/systems", get(list_systems))
        .route("/api/flows/{id}/enabled", post(switch_flow))
        .route("/api/flows/{id}/dry-run", post(dry_run))
        .route("/api/runs", get(list_runs))
        .route("/api/runs/{id}", get(show_run))
        .route("/api/failures", get(list_failures))
        .route("/api/failures/retry", post(retry_failures))
        .route("/api/failures/discard", post(discard_failures))
        .route(
            "/api/failures/{id}",
            get(show_failure).delete(discard_failure),
        )
        .route("/api/failures/{id}/retry", post(retry_failure))
        .route("/api/failures/{id}/discard", post(discard_failure))
        .route("/api/pending", get(list_pending))
        .route("/api/pending/settle", post(settle_pending))
        .route("/api/records/{key}", get(show_record))
        .route("/api/reload", post(reload))
        .route_layer(middleware::from_fn_with_state(
            daemon.clone(),
            require_token,
        ));
    Router::new()
        .merge(admin)
        .merge(super::console::router(daemon.clone()))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(webhook_or_not_found)
        .with_state(daemon)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let message: String = message.into();
    (status, Json(json!({"error": redact(&message)}))).into_response()
}

/// The JSON answer of an operation.
fn answer(result: ApiResult) -> Response {
    answer_with(StatusCode::OK, result)
}

fn answer_with(ok: StatusCode, result: ApiResult) -> Response {
    match result {
        Ok(v) => (ok, Json(v)).into_response(),
        Err(e) => error(e.status, e.message),
    }
}

async fn require_token(State(d): State<Arc<Daemon>>, req: Request, next: Next) -> Response {
    if d.admin_token().is_none() && d.viewer_token().is_none() {
        return unauthorized(
            "the admin API is off: set `daemon.admin_token` or ERPSYNC_ADMIN_TOKEN",
        );
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let role = match given {
        Some(t) => match role_of(&d, t) {
            Some(r) => r,
            None => return unauthorized("wrong bearer token"),
        },
        None => return unauthorized("a bearer token is required"),
    };
    if role == Role::Viewer && req.method() != Method::GET {
        return error(
            StatusCode::FORBIDDEN,
            "the viewer token only reads; this needs the admin token",
        );
    }
    next.run(req).await
}

fn unauthorized(message: &str) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, message);
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(d): State<Arc<Daemon>>) -> Response {
    if d.is_stopping() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "stopping"})),
        )
            .into_response();
    }
    Json(json!({"status": "ready", "flows": d.engine().project.flows.len()})).into_response()
}

async fn metrics(State(d): State<Arc<Daemon>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        d.render_metrics().await,
    )
        .into_response()
}

/// A JSON body, or the default when the body is empty.
fn body_or_default<T: serde::de::DeserializeOwned + Default>(
    body: &Bytes,
) -> Result<T, Box<Response>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("invalid request: {e}"),
        ))
    })
}

fn body_of<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("invalid request: {e}"),
        ))
    })
}

async fn list_flows(State(d): State<Arc<Daemon>>) -> Response {
    // The node's own name, to tell its leases from other nodes'.
    answer(api::flows(&d).await)
}

async fn show_flow(State(d): State<Arc<Daemon>>, Path(id): Path<String>) -> Response {
    answer(api::flow(&d, &id).await)
}

async fn run_flow(State(d): State<Arc<Daemon>>, Path(id): Path<String>, body: Bytes) -> Response {
    let req: RunRequest = match body_or_default(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    answer_with(StatusCode::ACCEPTED, api::run_flow(&d, &id, req).await)
}

/// Body of `POST /api/flows/{id}/enabled`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchRequest {
    enabled: bool,
}

async fn switch_flow(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let req: SwitchRequest = match body_of(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    answer(api::switch_flow(&d, &id, req.enabled, "api").await)
}

/// Body of `POST /api/flows/{id}/dry-run`; optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DryRunRequest {
    #[serde(default)]
    keys: Option<Vec<String>>,
}

async fn dry_run(State(d): State<Arc<Daemon>>, Path(id): Path<String>, body: Bytes) -> Response {
    let req: DryRunRequest = match body_or_default(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    answer(api::dry_run(&d, &id, req.keys).await)
}

async fn list_runs(State(d): State<Arc<Daemon>>, Query(q): Query<api::RunsQuery>) -> Response {
    answer(api::runs(&d, &q).await)
}

/// Each system with what its circuit breaker knows: up or down, since when, the requests in a
/// row without a response, the last of them, and the next probe.
async fn list_systems(State(d): State<Arc<Daemon>>) -> Response {
    let engine = d.engine();
    let systems: Vec<Value> = engine
        .systems
        .iter()
        .map(|(name, sys)| {
            let h = sys.health();
            json!({
                "system": name,
                "up": !h.down,
                "down_since": h.down_since,
                "consecutive_failures": h.consecutive_failures,
                "last_error": h.last_error.as_deref().map(redact),
                "next_probe": h.next_probe,
            })
        })
        .collect();
    Json(json!({"systems": systems})).into_response()
}

async fn show_run(State(d): State<Arc<Daemon>>, Path(id): Path<i64>) -> Response {
    answer(api::run(&d, id).await)
}

async fn list_failures(
    State(d): State<Arc<Daemon>>,
    Query(q): Query<api::FailuresQuery>,
) -> Response {
    answer(api::failures(&d, &q).await)
}

async fn show_failure(State(d): State<Arc<Daemon>>, Path(id): Path<i64>) -> Response {
    answer(api::failure(&d, id).await)
}

/// Body of the batch operations on failures.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdsRequest {
    ids: Vec<i64>,
}

async fn retry_failure(State(d): State<Arc<Daemon>>, Path(id): Path<i64>) -> Response {
    // One failure answers as before: its flow, key and what became of the run.
    match api::retry(&d, &[id]).await {
        Ok(v) => {
            let one = &v["retried"][0];
            let key = one["keys"][0].clone();
            (
                StatusCode::ACCEPTED,
                Json(json!({"flow": one["flow"], "key": key, "outcome": one["outcome"]})),
            )
                .into_response()
        }
        Err(e) => error(e.status, e.message),
    }
}

async fn retry_failures(State(d): State<Arc<Daemon>>, body: Bytes) -> Response {
    let req: IdsRequest = match body_of(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    answer_with(StatusCode::ACCEPTED, api::retry(&d, &req.ids).await)
}

async fn discard_failure(State(d): State<Arc<Daemon>>, Path(id): Path<i64>) -> Response {
    match api::discard(&d, &[id]).await {
        Ok(_) => Json(json!({"discarded": id})).into_response(),
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            error(StatusCode::NOT_FOUND, format!("no failure with id {id}"))
        }
        Err(e) => error(e.status, e.message),
    }
}

async fn discard_failures(State(d): State<Arc<Daemon>>, body: Bytes) -> Response {
    let req: IdsRequest = match body_of(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    answer(api::discard(&d, &req.ids).await)
}

#[derive(Debug, Deserialize)]
struct PendingQuery {
    flow: Option<String>,
}

async fn list_pending(State(d): State<Arc<Daemon>>, Query(q): Query<PendingQuery>) -> Response {
    answer(api::pending(&d, q.flow.as_deref()).await)
}

async fn settle_pending(State(d): State<Arc<Daemon>>, body: Bytes) -> Response {
    let req: api::SettleRequest = match body_of(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    answer(api::settle(&d, &req).await)
}

async fn show_record(State(d): State<Arc<Daemon>>, Path(key): Path<String>) -> Response {
    answer(api::record(&d, &key).await)
}

async fn reload(State(d): State<Arc<Daemon>>) -> Response {
    match d.reload().await {
        Ok(changed) => Json(json!({"reloaded": true, "changed": changed})).into_response(),
        Err(e) => {
            let detail = match &e {
                super::core::ConfigReloadError::Invalid { diagnostics, .. } => diagnostics.clone(),
                other => other.to_string(),
            };
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"reloaded": false, "error": redact(&e.to_string()), "diagnostics": redact(&detail)})),
            )
                .into_response()
        }
    }
}

async fn webhook_or_not_found(
    State(d): State<Arc<Daemon>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let engine = d.engine();
    let hook = engine
        .project
        .webhooks
        .values()
        .find(|w| w.path == uri.path())
        .cloned();
    drop(engine);
    match hook {
        None => error(
            StatusCode::NOT_FOUND,
            format!("nothing at `{}`", uri.path()),
        ),
        Some(_) if method != Method::POST => {
            error(StatusCode::METHOD_NOT_ALLOWED, "webhooks take POST")
        }
        Some(hook) => super::webhook::receive(d, hook, headers, body).await,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_compare_by_value() {
        assert!(super::same_secret("abc", "abc"));
        assert!(!super::same_secret("abc", "abd"));
        assert!(!super::same_secret("abc", "abcd"));
    }
}
