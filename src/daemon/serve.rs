//! Running the daemon until it is told to stop: the scheduler, the flow-file watcher and the
//! HTTP server, then an orderly shutdown. The stop request is a future, so the CLI passes
//! SIGTERM/SIGINT and tests pass a channel.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::core::Daemon;
use super::reload::FileWatch;

/// What runs besides the runs themselves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Fire cron schedules and check the notification rules every half minute (tests drive
    /// `Daemon::tick` and `Daemon::notify_check` by hand instead).
    pub scheduler: bool,
    /// Check the flow files for changes this often, and reload when they changed.
    pub watch_every: Option<Duration>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            scheduler: true,
            watch_every: Some(Duration::from_secs(2)),
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
                    let _ = d.reload();
                }
            }
        }));
    }
    let http = listener.map(|l| {
        let mut stopped = stopped_rx.clone();
        let app = super::admin::router(daemon.clone());
        tokio::spawn(async move {
            let graceful = async move {
                let _ = stopped.changed().await;
            };
            if let Err(e) = axum::serve(l, app).with_graceful_shutdown(graceful).await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        })
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
