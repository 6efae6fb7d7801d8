//! `erpsync run FLOWS` without `--once`: starts the daemon and maps process signals onto it
//! (SIGTERM/SIGINT: graceful shutdown; SIGHUP: reload).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::common::{load_project, open_state};
use super::run::RunArgs;
use erpsync::clock::SystemClock;
use erpsync::daemon::{Daemon, ServeOptions, serve};

/// Where the daemon listens unless told otherwise: loopback, as the admin API is powerful.
const DEFAULT_LISTEN: &str = "127.0.0.1:8700";

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if !args.flows.is_empty()
        || args.reconcile
        || args.full
        || !args.keys.is_empty()
        || args.format.is_json()
    {
        return Err(super::common::usage(
            "`--flow`, `--key`, `--reconcile`, `--full` and `--format json` go with `--once`",
        ));
    }
    let paths = args.project.paths.clone();
    let project = load_project(&paths)?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listen = args
        .listen
        .clone()
        .or_else(|| project.daemon.as_ref().and_then(|d| d.listen.clone()))
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let store = open_state(&args.project, &project).await?;
        let daemon = Daemon::new(
            paths,
            project,
            store,
            Arc::new(SystemClock),
            args.admin_token.clone(),
        ).await?;
        daemon.set_index_memory(args.index_memory.bytes());
        if daemon.admin_token().is_none() {
            tracing::warn!("no admin token: the admin API answers 401 to everything");
        }
        for hook in daemon.engine().project.webhooks.values().filter(|h| h.secret.is_empty()) {
            tracing::warn!(webhook = %hook.name, path = %hook.path, "webhook without a secret: every delivery is refused (503) until its `secret` is set");
        }
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("listening on `{listen}`"))?;
        tracing::info!(
            listen = %listen,
            flows = daemon.engine().project.flows.len(),
            "daemon started"
        );
        spawn_reload_on_hangup(daemon.clone())?;
        let opts = ServeOptions {
            scheduler: true,
            watch_every: (!args.no_watch).then(|| Duration::from_secs(2)),
            ..ServeOptions::default()
        };
        let exit = serve(daemon, Some(listener), opts, stop_signal()?).await;
        Ok(if exit.drained {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(super::EXIT_FAILED)
        })
    })
}

#[cfg(unix)]
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = which, "stop requested");
    })
}

#[cfg(not(unix))]
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

#[cfg(unix)]
fn spawn_reload_on_hangup(daemon: Arc<Daemon>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the flow files");
            // Rejections are logged with their diagnostics by `reload`.
            let _ = daemon.reload().await;
        }
    });
    Ok(())
}

#[cfg(not(unix))]
fn spawn_reload_on_hangup(_daemon: Arc<Daemon>) -> anyhow::Result<()> {
    Ok(())
}
