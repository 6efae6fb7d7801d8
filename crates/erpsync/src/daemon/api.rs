//! The admin API's operations, apart from HTTP: each takes typed arguments and answers the
//! JSON the API sends. The JSON routes (`admin.rs`) and the console pages (`console.rs`) both
//! call these, so the console has no path to the data of its own. Every answer that carries
//! records, payloads or errors is masked (`redact`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::core::{Cause, Daemon, TriggerRefusedError};
use super::switches::FlowSwitchError;
use crate::compile::types::normalize;
use crate::engine::{PendingSettleError, RunOptions, Settlement, settle_pending};
use crate::redact::{redact, redact_json};
use crate::state::{Failure, FlowName, RecordKey, Scope};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Role {
    /// Reads everything, changes nothing (`daemon.viewer_token`).
    Viewer,
    /// Everything (`daemon.admin_token`).
    Operator,
}

/// An operation the API refused or could not carry out, with the HTTP status it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    /// Already masked.
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl AsRef<str>) -> Self {
        ApiError {
            status,
            message: redact(message.as_ref()).into_owned(),
        }
    }
    fn not_found(message: impl AsRef<str>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
    fn bad(message: impl AsRef<str>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

pub(crate) type ApiResult = Result<Value, ApiError>;

fn refused(e: TriggerRefusedError) -> ApiError {
    let status = match e {
        TriggerRefusedError::ShuttingDown | TriggerRefusedError::StateUnavailable(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        TriggerRefusedError::Elsewhere { .. } => StatusCode::CONFLICT,
        TriggerRefusedError::UnknownFlow(_) => StatusCode::NOT_FOUND,
        TriggerRefusedError::Disabled(_) | TriggerRefusedError::Busy(_) => StatusCode::CONFLICT,
    };
    ApiError::new(status, e.to_string())
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    redact_json(&serde_json::to_value(v).unwrap_or(Value::Null))
}

/// `GET /api/flows`: every flow with its status, and the systems marked down.
pub(crate) async fn flows(d: &Daemon) -> ApiResult {
    let down: Vec<_> = d.systems_down().into_values().collect();
    Ok(json!({
        "node": d.node_id(),
        "flows": to_json(&d.flow_statuses().await),
        "systems_down": to_json(&down),
    }))
}

/// `GET /api/flows/{id}`.
pub(crate) async fn flow(d: &Daemon, id: &str) -> ApiResult {
    match d.flow_statuses().await.into_iter().find(|f| f.id == id) {
        Some(f) => Ok(to_json(&f)),
        None => Err(ApiError::not_found(format!("unknown flow `{id}`"))),
    }
}

/// `POST /api/flows/{id}/enabled`: switches a flow on or off for good.
pub(crate) async fn switch_flow(d: &Daemon, id: &str, enabled: bool, by: &str) -> ApiResult {
    match d.switch_flow(id, enabled, by).await {
        Ok(s) => Ok(to_json(&s)),
        Err(FlowSwitchError::UnknownFlow(f)) => {
            Err(ApiError::not_found(format!("unknown flow `{f}`")))
        }
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// Body of `POST /api/flows/{id}/run`; all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunRequest {
    #[serde(default)]
    pub(crate) reconcile: bool,
    #[serde(default)]
    pub(crate) full: bool,
    #[serde(default)]
    pub(crate) keys: Option<Vec<String>>,
}

/// `POST /api/flows/{id}/run`: a run now, in the background.
pub(crate) async fn run_flow(d: &Arc<Daemon>, id: &str, req: RunRequest) -> ApiResult {
    // A person asked for it: a disabled flow runs too, as with `run --flow`.
    let opts = RunOptions {
        reconcile: req.reconcile,
        full: req.full,
        keys: req.keys,
        force: true,
        ..Default::default()
    };
    let t = d.trigger(id, opts, Cause::Manual).await.map_err(refused)?;
    Ok(json!({"flow": id, "outcome": t}))
}

/// `POST /api/flows/{id}/dry-run`: what a run would do now, per record, writing nothing.
pub(crate) async fn dry_run(d: &Daemon, id: &str, keys: Option<Vec<String>>) -> ApiResult {
    let engine = d.engine();
    if engine.project.flow(id).is_none() {
        return Err(ApiError::not_found(format!("unknown flow `{id}`")));
    }
    let opts = RunOptions {
        dry_run: true,
        keys,
        force: true,
        details: true,
        ..Default::default()
    };
    match engine.run(id, &opts).await {
        Ok(report) => Ok(to_json(&report)),
        Err(e) => Err(ApiError::new(StatusCode::BAD_GATEWAY, e.to_string())),
    }
}

/// Filters of `GET /api/runs`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RunsQuery {
    pub(crate) flow: Option<String>,
    /// `ok`, `partial`, `error` or `running`.
    pub(crate) status: Option<String>,
    pub(crate) limit: Option<usize>,
}

/// `GET /api/runs`: newest first.
pub(crate) async fn runs(d: &Daemon, q: &RunsQuery) -> ApiResult {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let flow = q.flow.as_deref().filter(|f| !f.is_empty());
    let status = q.status.as_deref().filter(|s| !s.is_empty());
    // A status filter reads further back, so it still finds `limit` runs.
    let read = if status.is_some() { 1000 } else { limit };
    let runs = d
        .store()
        .runs
        .runs(flow.map(FlowName::new), read)
        .await
        .map_err(ApiError::internal)?;
    let runs: Vec<_> = runs
        .into_iter()
        .filter(|r| status.is_none_or(|s| r.status == s))
        .take(limit)
        .collect();
    Ok(json!({"runs": to_json(&runs)}))
}

/// `GET /api/runs/{id}`: a run with its per-record report.
pub(crate) async fn run(d: &Daemon, id: i64) -> ApiResult {
    let run = d
        .store()
        .runs
        .run(id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no run with id {id}")))?;
    let lines = d
        .store()
        .runs
        .run_lines(id)
        .await
        .map_err(ApiError::internal)?;
    Ok(json!({"run": to_json(&run), "records": to_json(&lines)}))
}

/// Filters of `GET /api/failures`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct FailuresQuery {
    pub(crate) flow: Option<String>,
    /// A system on either side of the flow.
    pub(crate) system: Option<String>,
    /// Text the error or the key contains (any case).
    pub(crate) q: Option<String>,
    /// Only failures last seen at least this long ago.
    pub(crate) min_age_secs: Option<i64>,
}

fn failure_matches(d: &Daemon, f: &Failure, q: &FailuresQuery) -> bool {
    let engine = d.engine();
    if let Some(flow) = q.flow.as_deref().filter(|s| !s.is_empty())
        && f.flow != flow
    {
        return false;
    }
    if let Some(sys) = q.system.as_deref().filter(|s| !s.is_empty()) {
        let touches = engine
            .project
            .flow(&f.flow)
            .is_some_and(|fl| fl.from == sys || fl.to == sys);
        if !touches {
            return false;
        }
    }
    if let Some(text) = q.q.as_deref().filter(|s| !s.is_empty()) {
        let text = text.to_lowercase();
        if !f.error.to_lowercase().contains(&text) && !f.key.to_lowercase().contains(&text) {
            return false;
        }
    }
    if let Some(secs) = q.min_age_secs.filter(|s| *s > 0) {
        let age = d.clock().now() - f.updated_at;
        if age.num_seconds() < secs {
            return false;
        }
    }
    true
}

/// `GET /api/failures`: in id order.
pub(crate) async fn failures(d: &Daemon, q: &FailuresQuery) -> ApiResult {
    let list = d
        .store()
        .failures
        .failures(None)
        .await
        .map_err(ApiError::internal)?;
    let list: Vec<_> = list
        .into_iter()
        .filter(|f| failure_matches(d, f, q))
        .collect();
    Ok(json!({"failures": to_json(&list)}))
}

/// `GET /api/failures/{id}`.
pub(crate) async fn failure(d: &Daemon, id: i64) -> ApiResult {
    match d
        .store()
        .failures
        .failure(id)
        .await
        .map_err(ApiError::internal)?
    {
        Some(f) => Ok(to_json(&f)),
        None => Err(ApiError::not_found(format!("no failure with id {id}"))),
    }
}

/// `POST /api/failures/retry`: the records of these failures synced again, one keyed run
/// per flow (queued behind a run going on).
pub(crate) async fn retry(d: &Arc<Daemon>, ids: &[i64]) -> ApiResult {
    if ids.is_empty() {
        return Err(ApiError::bad("no failure selected"));
    }
    let mut by_flow: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for id in ids {
        let f = d
            .store()
            .failures
            .failure(*id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found(format!("no failure with id {id}")))?;
        by_flow.entry(f.flow).or_default().insert(f.key);
    }
    let mut out = Vec::new();
    for (flow, keys) in by_flow {
        let keys: Vec<String> = keys.into_iter().collect();
        let t = d
            .trigger(&flow, RunOptions::retry(keys.clone()), Cause::Retry)
            .await
            .map_err(refused)?;
        out.push(json!({"flow": flow, "keys": keys, "outcome": t}));
    }
    Ok(json!({"retried": out}))
}

/// `POST /api/failures/discard`: forgets these failures (the records are not retried).
pub(crate) async fn discard(d: &Daemon, ids: &[i64]) -> ApiResult {
    if ids.is_empty() {
        return Err(ApiError::bad("no failure selected"));
    }
    let mut done = Vec::new();
    for id in ids {
        if d.store()
            .failures
            .discard_failure(*id)
            .await
            .map_err(ApiError::internal)?
        {
            tracing::info!(failure = id, "failure discarded");
            done.push(*id);
        }
    }
    if done.is_empty() {
        return Err(ApiError::not_found("none of these failures exists"));
    }
    Ok(json!({"discarded": done}))
}

/// `GET /api/pending`: writes of unknown outcome, oldest first.
pub(crate) async fn pending(d: &Daemon, flow: Option<&str>) -> ApiResult {
    let flow = flow.filter(|f| !f.is_empty());
    let list = d
        .store()
        .journal
        .journal_pending(flow.map(FlowName::new))
        .await
        .map_err(ApiError::internal)?;
    Ok(json!({"pending": to_json(&list)}))
}

/// Body of `POST /api/pending/settle`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettleRequest {
    pub(crate) flow: String,
    pub(crate) key: String,
    /// The record arrived, with this id in the target.
    #[serde(default)]
    pub(crate) target_id: Option<String>,
    /// The record was not sent: forget the write so the next run sends it.
    #[serde(default)]
    pub(crate) not_sent: bool,
}

/// `POST /api/pending/settle`: a person's word on a write no run can settle.
pub(crate) async fn settle(d: &Daemon, req: &SettleRequest) -> ApiResult {
    let settlement = match (req.target_id.as_deref().map(str::trim), req.not_sent) {
        (Some(id), false) if !id.is_empty() => Settlement::Sent {
            target_id: id.to_string(),
        },
        (None, true) => Settlement::NotSent,
        (Some(""), true) => Settlement::NotSent,
        _ => {
            return Err(ApiError::bad(
                "give either `target_id` (it arrived) or `not_sent: true`",
            ));
        }
    };
    let engine = d.engine();
    let now = d.clock().now();
    match settle_pending(
        &engine.project,
        d.store(),
        now,
        &req.flow,
        &req.key,
        &settlement,
    )
    .await
    {
        Ok(entries) => {
            tracing::info!(flow = %req.flow, key = %req.key, arrived = matches!(settlement, Settlement::Sent { .. }), "write settled by hand");
            Ok(json!({
                "flow": req.flow,
                "key": req.key,
                "settled": entries.len(),
                "arrived": matches!(settlement, Settlement::Sent { .. }),
            }))
        }
        Err(
            e @ (PendingSettleError::UnknownFlow(_) | PendingSettleError::NothingPending { .. }),
        ) => Err(ApiError::not_found(e.to_string())),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// `GET /api/records/{key}`: what erpsync knows of one record key: its bindings on each
/// pair of systems, journal entries, failures and the runs that touched it.
pub(crate) async fn record(d: &Daemon, key: &str) -> ApiResult {
    let key = key.trim();
    if key.is_empty() {
        return Err(ApiError::bad("give a record key"));
    }
    let engine = d.engine();
    let store = d.store();
    let mut keys = BTreeSet::from([key.to_string()]);
    let mut bindings = Vec::new();
    let mut scopes = BTreeSet::new();
    for f in &engine.project.flows {
        let k = normalize(key, &f.normalize);
        keys.insert(k.clone());
        let scope = Scope::new(&f.entity, &f.from, &f.to);
        if !scopes.insert((
            scope.entity.clone(),
            scope.a.clone(),
            scope.b.clone(),
            k.clone(),
        )) {
            continue;
        }
        let found = store
            .bindings
            .bindings(&scope, &[RecordKey::new(&k)])
            .await
            .map_err(ApiError::internal)?;
        if let Some(b) = found.get(&k) {
            bindings.push(json!({
                "entity": scope.entity,
                "a": scope.a,
                "b": scope.b,
                "binding": to_json(b),
            }));
        }
    }
    let mut journal = Vec::new();
    let mut runs = Vec::new();
    for k in &keys {
        journal.extend(
            store
                .journal
                .journal_of_key(RecordKey::new(k))
                .await
                .map_err(ApiError::internal)?,
        );
        runs.extend(
            store
                .runs
                .run_lines_of_key(RecordKey::new(k), 50)
                .await
                .map_err(ApiError::internal)?,
        );
    }
    runs.sort_by_key(|l| std::cmp::Reverse(l.run_id));
    let failures: Vec<_> = store
        .failures
        .failures(None)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .filter(|f| keys.contains(&f.key))
        .collect();
    Ok(json!({
        "key": key,
        "bindings": bindings,
        "journal": to_json(&journal),
        "failures": to_json(&failures),
        "runs": to_json(&runs),
    }))
}

/// Equality whose time does not depend on where the inputs differ: both sides are hashed
/// first, so even the length of the token does not leak.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// The role a token gives, if any.
pub(crate) fn role_of(d: &Daemon, token: &str) -> Option<Role> {
    let token = token.trim();
    if token.is_empty() {
        return None;
    }
    if d.admin_token().is_some_and(|t| same_secret(token, &t)) {
        return Some(Role::Operator);
    }
    if d.viewer_token().is_some_and(|t| same_secret(token, &t)) {
        return Some(Role::Viewer);
    }
    None
}
