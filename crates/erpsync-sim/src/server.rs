//! What both simulators share: serving on loopback, counting and fault injection in front of
//! every API route, error bodies in each API's own shape, and the `/__sim/` control routes for
//! counters and faults.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use tokio::task::JoinHandle;

use super::counters::Counters;
use super::faults::{Decision, FailRule, FaultControl, Faults, Injected};
use super::table::{Page, Record, Since, Table, stamp};
use erpsync_clock::SharedClock;

/// Which API's error shape to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// `{"error":{"name","message"}}`
    Shop,
    /// `{"status","statusMessage"}`
    Erp,
    /// WordPress REST: `{"code","message","data":{"status"}}`
    Woo,
}

/// State every simulator has.
#[derive(Debug)]
pub(crate) struct Core {
    pub counters: Arc<Counters>,
    pub faults: FaultControl,
    pub clock: SharedClock,
    pub flavor: Flavor,
    /// `http://127.0.0.1:PORT`: links and document addresses the simulator hands out are
    /// absolute.
    pub base_url: String,
}

impl Core {
    /// The state of a simulator that will serve on `listener`.
    pub fn new(
        flavor: Flavor,
        listener: &tokio::net::TcpListener,
        faults: Faults,
        seed: u64,
        clock: SharedClock,
    ) -> anyhow::Result<Arc<Core>> {
        let addr = listener.local_addr()?;
        Ok(Arc::new(Core {
            counters: Arc::new(Counters::default()),
            faults: FaultControl::new(faults, seed),
            clock,
            flavor,
            base_url: format!("http://{addr}"),
        }))
    }

    /// The stamp a change made now gets.
    pub fn now(&self) -> DateTime<Utc> {
        stamp(self.clock.now())
    }

    /// The served page's first record changes before the next page is read (fault
    /// `page_drift`).
    pub fn drift<T: Record>(&self, table: &mut Table<T>, first: Option<u64>) {
        if let Some(key) = first
            && self.faults.get().page_drift
        {
            table.bump_to_end(key, self.now());
        }
    }
}

/// An error answer in the simulator's own shape.
pub(crate) fn error_response(
    flavor: Flavor,
    status: u16,
    name: &str,
    message: &str,
    retry_after: Option<u64>,
) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match flavor {
        Flavor::Shop => json!({"error": {"name": name, "message": message}}),
        Flavor::Erp => json!({"status": status.as_u16(), "statusMessage": message}),
        Flavor::Woo => {
            json!({"code": name, "message": message, "data": {"status": status.as_u16()}})
        }
    };
    let mut resp = (status, Json(body)).into_response();
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert("Retry-After", HeaderValue::from(secs));
    }
    resp
}

fn injected_response(flavor: Flavor, i: &Injected) -> Response {
    if let Some(body) = &i.body {
        let mut resp = Response::new(axum::body::Body::from(body.clone()));
        *resp.status_mut() = StatusCode::from_u16(i.status).unwrap_or(StatusCode::OK);
        let kind = if serde_json::from_str::<serde::de::IgnoredAny>(body).is_ok() {
            "application/json"
        } else {
            "text/html; charset=utf-8"
        };
        resp.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static(kind),
        );
        return resp;
    }
    let (name, message) = match i.status {
        429 => ("TooManyRequests", "too many requests (injected)"),
        504 => ("GatewayTimeout", "upstream timed out (injected)"),
        _ => ("ServerError", "internal server error (injected)"),
    };
    error_response(flavor, i.status, name, message, i.retry_after)
}

/// Counts the request by its route template, then applies the fault decision.
async fn common_layer(State(core): State<Arc<Core>>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| path.clone());
    let query = req.uri().query().unwrap_or("").to_owned();
    let ticket = core.counters.hit(&method, &route, &query);
    let resp = match core.faults.decide(&method, &path, &query) {
        Decision::Answer(injected) => {
            // Holding uses real time on purpose: it exists to trip a client's real timeout.
            if let Some(hold) = injected.hold {
                tokio::time::sleep(hold).await;
            }
            injected_response(core.flavor, &injected)
        }
        Decision::Handle { latency, lost } => {
            if let Some(latency) = latency {
                tokio::time::sleep(latency).await;
            }
            let resp = next.run(req).await;
            match lost {
                None => resp,
                Some(injected) => {
                    if let Some(hold) = injected.hold {
                        tokio::time::sleep(hold).await;
                    }
                    injected_response(core.flavor, &injected)
                }
            }
        }
    };
    core.counters.answered(ticket, resp.status().as_u16());
    resp
}

/// The `/__sim/` routes both simulators have: counters and faults.
fn control_routes(core: Arc<Core>) -> Router {
    Router::new()
        .route(
            "/__sim/counters",
            get(|State(core): State<Arc<Core>>| async move {
                Json(json!({
                    "total": core.counters.total(),
                    "writes": core.counters.writes(),
                    "routes": core.counters.snapshot(),
                }))
            }),
        )
        .route(
            "/__sim/counters/reset",
            post(|State(core): State<Arc<Core>>| async move {
                core.counters.reset();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/__sim/faults",
            get(|State(core): State<Arc<Core>>| async move { Json(core.faults.get()) }).post(
                |State(core): State<Arc<Core>>, Json(faults): Json<Faults>| async move {
                    core.faults.set(faults);
                    Json(core.faults.get())
                },
            ),
        )
        .route(
            "/__sim/faults/fail-next",
            post(
                |State(core): State<Arc<Core>>, Json(rule): Json<FailRule>| async move {
                    core.faults.fail_next(rule);
                    Json(core.faults.get())
                },
            ),
        )
        .with_state(core)
}

/// Serves `api` behind counting and fault injection, with the control routes beside it.
pub(crate) fn serve(
    listener: tokio::net::TcpListener,
    core: Arc<Core>,
    api: Router,
    control: Router,
) -> anyhow::Result<Server> {
    // Every request to the API's address goes through the faults, also one to a path it
    // does not serve: a server that stops answering does not pick which requests it drops.
    let router = api
        .fallback(|| async { axum::http::StatusCode::NOT_FOUND })
        .layer(axum::middleware::from_fn_with_state(
            core.clone(),
            common_layer,
        ))
        .merge(control_routes(core))
        .merge(control);
    Server::start(listener, router)
}

/// A running server; dropping it stops the server.
#[derive(Debug)]
pub(crate) struct Server {
    pub addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves `router` on a listener bound beforehand (the simulator needs its own address to
    /// build absolute links before it has a router).
    pub fn start(listener: tokio::net::TcpListener, router: Router) -> anyhow::Result<Server> {
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, router).await {
                tracing::error!(%err, "simulator server stopped");
            }
        });
        Ok(Server {
            addr,
            task: Some(task),
        })
    }

    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Serves until the task ends (used by the command-line runner).
    pub async fn wait(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Aborting rather than draining: a test that ends must not wait for held responses.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Reads the query string into pairs, keeping their order (next links repeat them).
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

pub(crate) fn query_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A list request as both APIs read it, each from its own parameters: the query, the rows to
/// skip and to take, and from when.
pub(crate) struct ListQuery {
    pub pairs: Vec<(String, String)>,
    pub offset: usize,
    pub limit: usize,
    pub since: Since,
}

impl ListQuery {
    pub fn get(&self, key: &str) -> Option<&str> {
        query_get(&self.pairs, key)
    }

    /// The rows of `table` the request asks for, among those `keep` accepts.
    pub fn page<'t, T: Record>(
        &self,
        table: &'t Table<T>,
        keep: impl Fn(&T) -> bool,
    ) -> Page<'t, T> {
        table.page(
            self.since,
            &filter_key(&self.pairs),
            self.offset,
            self.limit,
            keep,
        )
    }
}

/// What a list query filters on: every parameter except paging and projection, so two page
/// requests of one listing share it.
pub(crate) fn filter_key(pairs: &[(String, String)]) -> String {
    const PAGING: &[&str] = &[
        "page",
        "offset",
        "limit",
        "limitPerPage",
        "fields",
        "include",
    ];
    let mut key: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| !PAGING.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    key.sort();
    key.join("&")
}

/// Rounds money to cents.
pub(crate) fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A page's records written as a JSON array as each is rendered, straight from the simulator's
/// own types: no `serde_json::Value` is built per record on the way to the wire, so a list is
/// served at the speed of a real API rather than of a tree copy.
#[derive(Debug, Default)]
pub(crate) struct JsonList {
    text: Vec<u8>,
    len: usize,
}

impl JsonList {
    /// Appends one record.
    pub(crate) fn push(&mut self, record: &impl Serialize) {
        self.text.push(if self.len == 0 { b'[' } else { b',' });
        serde_json::to_writer(&mut self.text, record).expect("records serialize");
        self.len += 1;
    }

    /// The array's text.
    fn finish(mut self) -> Vec<u8> {
        if self.len == 0 {
            self.text.push(b'[');
        }
        self.text.push(b']');
        self.text
    }
}

/// A 200 answer whose JSON body is `head`, the list's array, then `tail`: an envelope written
/// around the records (`{"data":` … `}`).
pub(crate) fn list_answer(head: &str, list: JsonList, tail: &[u8]) -> Response {
    let records = list.finish();
    let mut body = Vec::with_capacity(head.len() + records.len() + tail.len());
    body.extend_from_slice(head.as_bytes());
    body.extend_from_slice(&records);
    body.extend_from_slice(tail);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}
