//! A daemon over a project on disk, its HTTP server on a free port, and waiting for what it
//! reports.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use erpsync::clock::ManualClock;
use erpsync::daemon::{Daemon, DaemonEvent, ServeOptions, serve};
use erpsync::state::Store;
use tokio::sync::{broadcast, oneshot};

/// A daemon over the flow files at `paths` (which must be valid), on `clock` and `store`,
/// with `admin_token` for its admin API. The scheduler is not started: tests call `tick`.
pub async fn start(
    paths: Vec<PathBuf>,
    clock: &ManualClock,
    store: Store,
    admin_token: Option<&str>,
) -> Arc<Daemon> {
    super::install_tls_provider();
    let (compiled, diags) = erpsync::compile::project::check(&paths);
    let compiled =
        compiled.unwrap_or_else(|| panic!("{}", erpsync::config::diagnostic::render_text(&diags)));
    Daemon::new(
        paths,
        Arc::new(compiled),
        store,
        Arc::new(clock.clone()),
        admin_token.map(str::to_owned),
    )
    .await
    .unwrap()
}

/// Serves the daemon's HTTP (webhooks, admin API, console, metrics) on a free port, without
/// the scheduler or the file watch: its URL, a sender that stops it, and the task, which
/// ends with whether the runs drained.
pub async fn serve_http(
    d: &Arc<Daemon>,
) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let opts = ServeOptions {
        scheduler: false,
        watch_every: None,
        ..ServeOptions::default()
    };
    let d = d.clone();
    let task = tokio::spawn(async move {
        serve(d, Some(listener), opts, async {
            let _ = rx.await;
        })
        .await
        .drained
    });
    (url, tx, task)
}

/// Waits, `within` at most, for the event `pick` accepts.
pub async fn wait_for(
    rx: &mut broadcast::Receiver<DaemonEvent>,
    within: Duration,
    pick: impl Fn(&DaemonEvent) -> bool,
) -> DaemonEvent {
    tokio::time::timeout(within, async {
        loop {
            let e = rx.recv().await.expect("event stream open");
            if pick(&e) {
                return e;
            }
        }
    })
    .await
    .expect("the awaited daemon event")
}

/// Accepts the end of a run of `flow`.
pub fn finished(flow: &str) -> impl Fn(&DaemonEvent) -> bool + '_ {
    move |e| matches!(e, DaemonEvent::RunFinished { flow: f, .. } if f == flow)
}
