//! Running the daemon until it is told to stop: the scheduler, the flow-file watcher and the
//! HTTP server, then an orderly shutdown. The stop request is a future, so the CLI passes
//! SIGTERM/SIGINT and tests pass a channel.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::core::Daemon;
use super::reload::FileWatch;

/// How often the daemon looks for systems that are down and due for a probe.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// What runs besides the runs themselves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Fire cron schedules and check the notification rules every half minute (tests drive
    /// `Daemon::tick` and `Daemon::notify_check` by hand instead).
    pub scheduler: bool,
    /// Check the flow files for changes this often, and reload when they changed.
    pub watch_every: Option<Duration>,
    /// What the HTTP server allows its clients.
    pub http: HttpLimits,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            scheduler: true,
            watch_every: Some(Duration::from_secs(2)),
            http: HttpLimits::default(),
        }
    }
}

/// Limits of the HTTP server (webhooks, admin API, metrics), so slow or numerous clients
/// cannot hold it: a client that has not sent a request's headers within `header_timeout`,
/// or its body within `body_timeout`, is cut off; connections beyond `max_connections` are
/// closed as soon as they are accepted.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    /// The largest body taken, in bytes.
    pub body_limit: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 256,
            body_limit: 2 * 1024 * 1024,
        }
    }
}

/// How the daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaemonExit {
    /// Every run that was going on finished within the grace period.
    pub drained: bool,
}

/// Serves until `stop` completes, then stops taking work and lets the runs going on finish
/// (each persists its cursor and journal as it ends) within `daemon.shutdown_grace_secs`.
pub async fn serve(
    daemon: Arc<Daemon>,
    listener: Option<TcpListener>,
    opts: ServeOptions,
    stop: impl Future<Output = ()>,
) -> DaemonExit {
    let (stopped_tx, stopped_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    if opts.scheduler {
        tasks.push(tokio::spawn(daemon.clone().run_scheduler()));
        // Notification rules that depend on time alone (writes in doubt, flows without
        // success) are checked with the schedules.
        tasks.push(tokio::spawn(super::notify::run(
            daemon.clone(),
            Duration::from_secs(30),
        )));
    }
    if let Some(every) = opts.watch_every {
        let d = daemon.clone();
        let mut stopped = stopped_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut watch = FileWatch::new(d.paths.clone());
            loop {
                tokio::select! {
                    _ = d.clock.sleep(every) => {}
                    _ = stopped.changed() => return,
                }
                if watch.changed() {
                    tracing::info!("flow files changed; reloading");
                    let _ = d.reload().await;
                }
            }
        }));
    }
    {
        // Systems taken as down are probed again, each when its pause has run out; what is
        // seen is kept in the state for `erpsync status`.
        let d = daemon.clone();
        let mut stopped = stopped_rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(PROBE_EVERY) => {}
                    _ = stopped.changed() => return,
                }
                d.probe_systems().await;
            }
        }));
    }
    let http = listener.map(|l| {
        let limits = opts.http;
        let app = super::admin::router(daemon.clone()).layer(axum::middleware::from_fn_with_state(
            limits,
            read_body_in_time,
        ));
        tokio::spawn(serve_http(l, app, limits, stopped_rx.clone()))
    });
    stop.await;
    daemon.shutdown();
    let _ = stopped_tx.send(true);
    let grace = daemon.grace();
    let drained = daemon.drain(grace).await;
    if drained {
        tracing::info!("every run finished; bye");
    } else {
        // What was sent is journaled: the next start settles writes left in doubt.
        tracing::warn!(
            in_flight = daemon.in_flight(),
            grace_secs = grace.as_secs(),
            "runs still going at the end of the grace period are abandoned"
        );
    }
    for t in tasks {
        t.abort();
    }
    if let Some(h) = http {
        let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
    }
    DaemonExit { drained }
}

/// Accepts connections until `stopped`, each served over HTTP/1.1 with the header timeout,
/// at most `max_connections` at once; then lets the connections finish their requests.
async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    mut stopped: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, typically: let some connections end first.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = limits.max_connections, "too many connections; this one is closed");
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut stopped = stopped.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stopped.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    while connections.join_next().await.is_some() {}
}

/// Reads a request's whole body within `body_timeout` (and `body_limit`) before any handler
/// sees it: 408 for a body that does not arrive in time, 413 for one too large.
async fn read_body_in_time(
    axum::extract::State(limits): axum::extract::State<HttpLimits>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let (parts, body) = req.into_parts();
    let read = axum::body::to_bytes(body, limits.body_limit);
    let refuse = |status: axum::http::StatusCode, message: String| {
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
    };
    match tokio::time::timeout(limits.body_timeout, read).await {
        Err(_) => {
            tracing::warn!(path = %parts.uri.path(), "request body not received in time");
            refuse(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} s",
                    limits.body_timeout.as_secs_f64()
                ),
            )
        }
        Ok(Err(_)) => refuse(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is larger than {} bytes, or broken",
                limits.body_limit
            ),
        ),
        Ok(Ok(bytes)) => {
            next.run(axum::extract::Request::from_parts(
                parts,
                axum::body::Body::from(bytes),
            ))
            .await
        }
    }
}
