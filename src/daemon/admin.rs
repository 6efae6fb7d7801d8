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
use sha2::{Digest, Sha256};

use super::core::{Cause, Daemon, TriggerRefusedError};
use crate::engine::RunOptions;
use crate::redact::redact;

/// The router of everything the daemon serves.
pub fn router(daemon: Arc<Daemon>) -> Router {
    let admin = Router::new()
        .route("/api/flows", get(list_flows))
        .route("/api/flows/{id}", get(show_flow))
        .route("/api/flows/{id}/run", post(run_flow))
        .route("/api/runs", get(list_runs))
        .route("/api/failures", get(list_failures))
        .route(
            "/api/failures/{id}",
            get(show_failure).delete(discard_failure),
        )
        .route("/api/failures/{id}/retry", post(retry_failure))
        .route("/api/failures/{id}/discard", post(discard_failure))
        .route("/api/reload", post(reload))
        .route_layer(middleware::from_fn_with_state(
            daemon.clone(),
            require_token,
        ));
    Router::new()
        .merge(admin)
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

/// Equality whose time does not depend on where the inputs differ: both sides are hashed
/// first, so even the length of the token does not leak.
fn same_secret(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

async fn require_token(State(d): State<Arc<Daemon>>, req: Request, next: Next) -> Response {
    let Some(expected) = d.admin_token() else {
        return unauthorized(
            "the admin API is off: set `daemon.admin_token` or ERPSYNC_ADMIN_TOKEN",
        );
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if same_secret(t.trim(), &expected) => next.run(req).await,
        Some(_) => unauthorized("wrong bearer token"),
        None => unauthorized("a bearer token is required"),
    }
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
        d.render_metrics(),
    )
        .into_response()
}

async fn list_flows(State(d): State<Arc<Daemon>>) -> Response {
    // The node's own name, to tell its leases from other nodes'.
    Json(json!({"node": d.node_id(), "flows": d.flow_statuses()})).into_response()
}

async fn show_flow(State(d): State<Arc<Daemon>>, Path(id): Path<String>) -> Response {
    match d.flow_statuses().into_iter().find(|f| f.id == id) {
        Some(f) => Json(f).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("unknown flow `{id}`")),
    }
}

/// Body of `POST /api/flows/{id}/run`; all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    #[serde(default)]
    reconcile: bool,
    #[serde(default)]
    full: bool,
    #[serde(default)]
    keys: Option<Vec<String>>,
}

fn refused(e: TriggerRefusedError) -> Response {
    let status = match e {
        TriggerRefusedError::ShuttingDown | TriggerRefusedError::StateUnavailable(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        TriggerRefusedError::Elsewhere { .. } => StatusCode::CONFLICT,
        TriggerRefusedError::UnknownFlow(_) => StatusCode::NOT_FOUND,
        TriggerRefusedError::Disabled(_) | TriggerRefusedError::Busy(_) => StatusCode::CONFLICT,
    };
    error(status, e.to_string())
}

async fn run_flow(State(d): State<Arc<Daemon>>, Path(id): Path<String>, body: Bytes) -> Response {
    let req: RunRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RunRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid request: {e}")),
        }
    };
    // A person asked for it: a disabled flow runs too, as with `run --flow`.
    let opts = RunOptions {
        reconcile: req.reconcile,
        full: req.full,
        keys: req.keys,
        force: true,
        ..Default::default()
    };
    match d.trigger(&id, opts, Cause::Manual) {
        Ok(t) => (
            StatusCode::ACCEPTED,
            Json(json!({"flow": id, "outcome": t})),
        )
            .into_response(),
        Err(e) => refused(e),
    }
}

#[derive(Debug, Deserialize)]
struct RunsQuery {
    flow: Option<String>,
    limit: Option<usize>,
}

async fn list_runs(State(d): State<Arc<Daemon>>, Query(q): Query<RunsQuery>) -> Response {
    let limit = q.limit.unwrap_or(50).min(1000);
    match d.store().runs(q.flow.as_deref(), limit) {
        Ok(runs) => Json(json!({"runs": runs})).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct FailuresQuery {
    flow: Option<String>,
}

async fn list_failures(State(d): State<Arc<Daemon>>, Query(q): Query<FailuresQuery>) -> Response {
    match d.store().failures(q.flow.as_deref()) {
        Ok(list) => {
            let list = serde_json::to_value(&list).unwrap_or(Value::Null);
            Json(json!({"failures": crate::redact::redact_json(&list)})).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn show_failure(State(d): State<Arc<Daemon>>, Path(id): Path<i64>) -> Response {
    match d.store().failure(id) {
        Ok(Some(f)) => {
            let v = serde_json::to_value(&f).unwrap_or(Value::Null);
            Json(crate::redact::redact_json(&v)).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no failure with id {id}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn retry_failure(State(d): State<Arc<Daemon>>, Path(id): Path<i64>) -> Response {
    let f = match d.store().failure(id) {
        Ok(Some(f)) => f,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no failure with id {id}")),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    match d.trigger(
        &f.flow,
        RunOptions::retry(vec![f.key.clone()]),
        Cause::Retry,
    ) {
        Ok(t) => (
            StatusCode::ACCEPTED,
            Json(json!({"flow": f.flow, "key": f.key, "outcome": t})),
        )
            .into_response(),
        Err(e) => refused(e),
    }
}

async fn discard_failure(State(d): State<Arc<Daemon>>, Path(id): Path<i64>) -> Response {
    match d.store().discard_failure(id) {
        Ok(true) => {
            tracing::info!(failure = id, "failure discarded");
            Json(json!({"discarded": id})).into_response()
        }
        Ok(false) => error(StatusCode::NOT_FOUND, format!("no failure with id {id}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn reload(State(d): State<Arc<Daemon>>) -> Response {
    match d.reload() {
        Ok(()) => Json(json!({"reloaded": true})).into_response(),
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
        .daemon
        .as_ref()
        .and_then(|c| c.webhooks.iter().find(|(_, w)| w.path == uri.path()))
        .map(|(name, w)| (name.clone(), w.clone()));
    drop(engine);
    match hook {
        None => error(
            StatusCode::NOT_FOUND,
            format!("nothing at `{}`", uri.path()),
        ),
        Some(_) if method != Method::POST => {
            error(StatusCode::METHOD_NOT_ALLOWED, "webhooks take POST")
        }
        Some((name, cfg)) => super::webhook::receive(d, name, cfg, headers, body).await,
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
