//! The long-running daemon (`erpsync run FLOWS`): flows on their cron and reconcile
//! schedules, chained flows, incoming webhooks, the admin API, Prometheus metrics, hot reload
//! of the flow files and graceful shutdown. `Daemon` is the core every entry point drives.

mod admin;
pub(crate) mod api;
mod console;
mod core;
mod health;
mod metrics;
mod notify;
mod reload;
mod scheduler;
mod serve;
mod switches;
mod webhook;

pub use core::{
    Cause, ConfigReloadError, Daemon, DaemonEvent, DaemonStartError, FlowStatus, LastRun,
    TriggerRefusedError, Triggered,
};
pub use health::SystemDown;
pub use metrics::Metrics;
pub use notify::Notification;
pub use reload::{FileWatch, ReloadChanges};
pub use serve::{DaemonExit, HttpLimits, ServeOptions, serve};
